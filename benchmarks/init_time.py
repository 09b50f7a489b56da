"""Time the program that makes a run's initial state, compiled with XLA's default options and
with adcl.xla_cpu.init_compiler_options() (no LLVM optimisation on CPU), side by side.

    python benchmarks/init_time.py --model quickstart
    python benchmarks/init_time.py --model resnet18 --rounds 3

Each round compiles and runs both versions afresh (a new model each time, so no compilation
cache helps either). The last line is one JSON object: the median seconds of each
(compile + run), their ratio, and the largest difference between the two states' parameters
in units in the last place.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # step_time.py

import jax
import numpy as np

from adcl import build, cli, step as step_lib, xla_cpu
from step_time import build_config, parse_model_arguments


def init_seconds(config, shape, options) -> tuple:
  """(seconds to compile and run the initial state's program, its parameters)."""
  trainer = build.trainer(config, shape, steps_per_epoch=1000, total_steps=100000)
  start = time.perf_counter()
  state = step_lib.create_train_state(trainer.model, trainer.tx, trainer.seed, shape,
                                      trainer.replicated, options)
  params = jax.block_until_ready(state.params)
  return time.perf_counter() - start, params


def main():
  cli.prepare_jax()  # As the commands do, before jax starts.
  args = parse_model_arguments(__doc__.splitlines()[0])
  config = build_config(args)
  shape = (args.image_size, args.image_size, args.channels)
  options = xla_cpu.init_compiler_options()
  times = {"default": [], "unoptimised": []}
  for round_index in range(args.rounds):
    config.seed = round_index  # Another program text: no in-process cache hit.
    seconds, default = init_seconds(config, shape, None)
    times["default"].append(seconds)
    seconds, unoptimised = init_seconds(config, shape, options)
    times["unoptimised"].append(seconds)
    print(f"round {round_index + 1}/{args.rounds}: default {times['default'][-1]:.2f}s, "
          f"unoptimised {seconds:.2f}s", file=sys.stderr)
  ulps = max(float(np.max(np.abs(a - b) / np.spacing(np.maximum(np.abs(a), np.abs(b)))))
             for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(unoptimised)))
  median = {k: float(np.median(v)) for k, v in times.items()}
  print(json.dumps({"model": args.model, "architecture": config.model.architecture,
                    "width": config.model.width, "platform": jax.devices()[0].platform,
                    "compiler_options": options, "rounds": args.rounds,
                    "default_s": round(median["default"], 3),
                    "unoptimised_s": round(median["unoptimised"], 3),
                    "speedup": round(median["default"] / median["unoptimised"], 2),
                    "max_ulp_difference": ulps}))


if __name__ == "__main__":
  main()
