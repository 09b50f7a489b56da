"""Time the compiled train step with and without the attack, side by side in one process.

    python benchmarks/step_time.py --model resnet18 --image-size 32 --channels 3 --batch 64
    python benchmarks/step_time.py --model quickstart

Random inputs (the step's cost does not depend on pixel values); each variant is compiled,
warmed up, then timed over --steps steps, alternating plain and CLAE rounds so that machine
noise hits both alike. An image is one source image (one pair of views). The last line printed
is one JSON object: plain_images_per_s, clae_images_per_s, clae_over_plain_time, compile_s,
the step's GFLOP (XLA's cost analysis), the measured matmul peak (benchmarks/peak.py) and the
MFU = GFLOP/s achieved / peak.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # peak.py

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from adcl import configs, models, optim, step as step_lib


def build_config(args):
  if args.model == "quickstart":
    import quickstart  # configs/quickstart.py
    c = quickstart.get_config()
    args.image_size, args.channels = c.data.image_size, 1
    args.batch = args.batch or c.train.batch_size
  else:
    c = configs.paper_recipe("cifar10", args.loss)
    c.model.architecture = args.model
    c.model.width = args.width
    c.data.image_size = args.image_size
    c.model.stem = "cifar" if args.image_size <= 32 else "imagenet"
  c.train.batch_size = args.batch
  c.model.dtype = args.dtype
  c.model.conv_impl = args.conv_impl
  return c


def time_variant(config, adv_enabled, channels, mesh, batch):
  """Returns (compile seconds, a function that times n steps and returns seconds)."""
  config = config.copy_and_resolve_references()
  config.adv.enabled = adv_enabled
  model = models.from_config(config.model)
  tx = optim.make_optimizer(config, 1000, 100000)
  shape = (config.data.image_size, config.data.image_size, channels)
  state = step_lib.create_train_state(model, tx, 0, shape, NamedSharding(mesh, P()))
  train_step = step_lib.make_train_step(model, tx, config, channels, mesh)
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older jax: one per device.
  holder = {"state": state, "flops": float(cost.get("flops", 0.0))}

  def run(n):
    state = holder["state"]
    start = time.perf_counter()
    for _ in range(n):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    holder["state"] = state
    return time.perf_counter() - start

  run(2)  # Warm-up: first executions allocate buffers.
  run.flops = holder["flops"]  # XLA's count for one step (all devices).
  return compile_s, run


def parse_model_arguments(description: str):
  """The benchmarks' shared flags (model, sizes, timing); batch defaults to 64 (ResNets) or
  the quickstart's."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--model", default="resnet18", help="architecture, or 'quickstart'")
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--batch", type=int, default=0, help="global batch (default 64)")
  parser.add_argument("--loss", default="simclr", choices=["plain", "simclr", "uel"])
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--conv-impl", default="auto", choices=["auto", "xla", "shifted"],
                      help="model.conv_impl: the convolution backward (adcl.models.conv)")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  if args.model != "quickstart":
    args.batch = args.batch or 64
  return args


def main():
  args = parse_model_arguments(__doc__.splitlines()[0])
  config = build_config(args)
  mesh = step_lib.data_mesh()
  rng = np.random.default_rng(0)
  shape = (args.batch, args.image_size, args.image_size, args.channels)
  batch = jax.device_put({k: jnp.asarray(rng.normal(size=shape), jnp.float32)
                          for k in ("view1", "view2")}, NamedSharding(mesh, P("data")))
  compile_plain, run_plain = time_variant(config, False, args.channels, mesh, batch)
  compile_clae, run_clae = time_variant(config, True, args.channels, mesh, batch)
  seconds = {"plain": 0.0, "clae": 0.0}
  for round_index in range(args.rounds):
    seconds["plain"] += run_plain(args.steps)
    seconds["clae"] += run_clae(args.steps)
    print(f"round {round_index + 1}/{args.rounds}: plain {seconds['plain']:.2f}s, "
          f"clae {seconds['clae']:.2f}s so far", file=sys.stderr)
  steps = args.steps * args.rounds
  import peak  # benchmarks/peak.py
  peak_gflops = peak.measure(dtype=args.dtype)
  step_gflop = {k: f.flops / 1e9 for k, f in (("plain", run_plain), ("clae", run_clae))}
  mfu = {k: step_gflop[k] * steps / seconds[k] / peak_gflops for k in seconds}
  result = {
      "model": args.model, "width": config.model.width, "conv_impl": args.conv_impl, "image_size": args.image_size,
      "channels": args.channels, "batch": args.batch, "loss": config.loss.name,
      "devices": jax.device_count(), "platform": jax.devices()[0].platform,
      "timed_steps": steps,
      "plain_images_per_s": round(steps * args.batch / seconds["plain"], 2),
      "clae_images_per_s": round(steps * args.batch / seconds["clae"], 2),
      "clae_over_plain_time": round(seconds["clae"] / seconds["plain"], 3),
      "compile_s": round(compile_plain + compile_clae, 2),
      "compile_plain_s": round(compile_plain, 2), "compile_clae_s": round(compile_clae, 2),
      "plain_gflop_per_step": round(step_gflop["plain"], 2),
      "clae_gflop_per_step": round(step_gflop["clae"], 2),
      "peak_gflop_per_s": round(peak_gflops, 1),
      "plain_mfu": round(mfu["plain"], 4), "clae_mfu": round(mfu["clae"], 4),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
