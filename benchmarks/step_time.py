"""Time the compiled train step with and without the attack, side by side in one process.

    python benchmarks/step_time.py --model resnet18 --image-size 32 --channels 3 --batch 64
    python benchmarks/step_time.py --model quickstart
    python benchmarks/step_time.py --model quickstart --fractions 0.5,0.25   # adv.fraction
    python benchmarks/step_time.py --model quickstart --width 32 --fractions 0.25  # the study's
    python benchmarks/step_time.py --model resnet50 --image-size 224 --batch 256 \
        --dtype bfloat16 --views device --count-only     # GFLOP per step, nothing compiled

Random inputs (the step's cost does not depend on pixel values); each variant is compiled,
warmed up, then timed over --steps steps, alternating plain and CLAE rounds so that machine
noise hits both alike. An image is one source image (one pair of views). The last line printed
is one JSON object: plain_images_per_s, clae_images_per_s, clae_over_plain_time, compile_s,
the step's GFLOP (XLA's cost analysis), the measured matmul peak (benchmarks/peak.py) and the
MFU = GFLOP/s achieved / peak. With --fractions, CLAE is also timed with adv.fraction at each
value (the attack on that share of the batch): clae_fraction_F_images_per_s and
clae_fraction_F_over_plain_time.
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

from adcl import build, cli, configs, step as step_lib


def build_config(args):
  if args.model == "quickstart":
    import quickstart  # configs/quickstart.py
    c = quickstart.get_config()
    args.image_size, args.channels = c.data.image_size, 1
    args.batch = args.batch or c.train.batch_size
    c.model.width = args.width or c.model.width  # A study's wider quickstart: --width 32.
  else:
    c = configs.paper_recipe("cifar10", args.loss)
    c.model.architecture = args.model
    c.model.width = args.width
    c.data.image_size = args.image_size
    c.model.stem = "cifar" if args.image_size <= 32 else "imagenet"
  c.train.batch_size = args.batch
  c.model.dtype = args.dtype
  return c


def time_variant(config, adv_enabled, channels, mesh, batch, fraction=1.0):
  """Returns (compile seconds, a function that times n steps and returns seconds)."""
  config = config.copy_and_resolve_references()
  config.adv.enabled = adv_enabled
  config.adv.fraction = fraction
  shape = (config.data.image_size, config.data.image_size, channels)
  trainer = build.trainer(config, shape, steps_per_epoch=1000, total_steps=100000, mesh=mesh)
  state = trainer.init_state()
  start = time.perf_counter()
  lowered = trainer.train_step.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state, "flops": step_flops(lowered)}

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


def step_flops(lowered) -> float:
  """XLA's FLOP count of one step (all devices), from the program before backend passes: the
  compiled program's count leaves out the convolutions a GPU hands to cuDNN as custom calls,
  and so undercounts a ResNet step there by 50x."""
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older jax: one per device.
  return float(cost.get("flops", 0.0))


def count_only(config, args, mesh) -> dict:
  """GFLOP per step of plain and CLAE from shapes alone (nothing initialised, compiled or
  run): what a plan for an accelerator needs, on any machine."""
  shape = (args.image_size, args.image_size, args.channels)
  if args.views == "device":
    batch = {"images": jax.ShapeDtypeStruct((args.batch,) + shape, np.uint8)}
  else:
    batch = {k: jax.ShapeDtypeStruct((args.batch,) + shape, np.float32)
             for k in ("view1", "view2")}
  result = {"model": args.model, "image_size": args.image_size, "batch": args.batch,
            "dtype": args.dtype, "views": args.views}
  for name, adv in (("plain", False), ("clae", True)):
    variant = config.copy_and_resolve_references()
    variant.adv.enabled = adv
    trainer = build.trainer(variant, shape, steps_per_epoch=1000, total_steps=100000, mesh=mesh)
    gflop = step_flops(trainer.train_step.lower(trainer.abstract_state(), batch)) / 1e9
    result[f"{name}_gflop_per_step"] = round(gflop, 2)
    result[f"{name}_gflop_per_image"] = round(gflop / args.batch, 3)
  return result


def parse_model_arguments(description: str):
  """The benchmarks' shared flags (model, sizes, timing); batch defaults to 64 (ResNets) or
  the quickstart's."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--model", default="resnet18", help="architecture, or 'quickstart'")
  parser.add_argument("--width", type=int, default=0,
                      help="model.width (default 64, or the quickstart's own)")
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--batch", type=int, default=0, help="global batch (default 64)")
  parser.add_argument("--loss", default="simclr", choices=["plain", "simclr", "uel"])
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--views", default="host", choices=["host", "device"],
                      help="host: the step gets views drawn beforehand (the step alone); "
                      "device: it gets uint8 images and draws the views itself, as in "
                      "training (adcl/data/views.py)")
  parser.add_argument("--fractions", default="",
                      help="comma-separated adv.fraction values below 1 to time CLAE at too")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--count-only", action="store_true",
                      help="print the GFLOP per step of plain and CLAE from shapes alone "
                      "(no compilation, no timing)")
  args = parser.parse_args()
  if args.model != "quickstart":
    args.batch = args.batch or 64
    args.width = args.width or 64
  return args


def main():
  cli.prepare_jax()  # As the commands do, before jax starts.
  args = parse_model_arguments(__doc__.splitlines()[0])
  config = build_config(args)  # Also sets the quickstart's image size and channels.
  mesh = step_lib.data_mesh()
  if args.count_only:
    print(json.dumps(count_only(config, args, mesh)))
    return
  rng = np.random.default_rng(0)
  shape = (args.batch, args.image_size, args.image_size, args.channels)
  if args.views == "device":  # Source images at the crop size, as CIFAR's 32 px.
    batch = {"images": rng.integers(0, 256, shape, dtype=np.uint8)}
  else:
    batch = {k: rng.normal(size=shape).astype(np.float32) for k in ("view1", "view2")}
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  variants = [("plain", False, 1.0), ("clae", True, 1.0)] + [
      (f"clae_fraction_{float(f)}", True, float(f)) for f in args.fractions.split(",") if f]
  runs, compile_s = {}, {}
  for name, adv, fraction in variants:
    compile_s[name], runs[name] = time_variant(config, adv, args.channels, mesh, batch, fraction)
  seconds = {key: 0.0 for key in runs}
  for round_index in range(args.rounds):
    for key, run in runs.items():  # Alternating, so that machine noise hits all alike.
      seconds[key] += run(args.steps)
    print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
        f"{key} {s:.2f}s" for key, s in seconds.items()) + " so far", file=sys.stderr)
  steps = args.steps * args.rounds
  import peak  # benchmarks/peak.py
  # 2048 saturates a CPU; an accelerator's matmul units need larger products to reach peak.
  peak_gflops = peak.measure(size=2048 if jax.default_backend() == "cpu" else 8192,
                             dtype=args.dtype)
  print(json.dumps(result_of(args, config, steps, peak_gflops, seconds,
                             {k: run.flops / 1e9 for k, run in runs.items()}, compile_s)))


def result_of(args, config, steps, peak_gflops, seconds, step_gflop, compile_s):
  """The JSON record: images/s, CLAE/plain time, compile time, FLOPs, MFU."""
  mfu = {k: step_gflop[k] * steps / seconds[k] / peak_gflops for k in seconds}
  fractions = {}
  for name in seconds:
    if name.startswith("clae_fraction_"):
      fractions[f"{name}_images_per_s"] = round(steps * args.batch / seconds[name], 2)
      fractions[f"{name}_over_plain_time"] = round(seconds[name] / seconds["plain"], 3)
      fractions[f"{name}_gflop_per_step"] = round(step_gflop[name], 4)
  return {
      "model": args.model, "architecture": config.model.architecture,
      "width": config.model.width, "views": args.views,
      "dtype": args.dtype,
      "image_size": args.image_size,
      "channels": args.channels, "batch": args.batch, "loss": config.loss.name,
      "devices": jax.device_count(), "platform": jax.devices()[0].platform,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "timed_steps": steps,
      "plain_images_per_s": round(steps * args.batch / seconds["plain"], 2),
      "clae_images_per_s": round(steps * args.batch / seconds["clae"], 2),
      "clae_over_plain_time": round(seconds["clae"] / seconds["plain"], 3),
      "compile_s": round(compile_s["plain"] + compile_s["clae"], 2),
      "compile_plain_s": round(compile_s["plain"], 2), "compile_clae_s": round(compile_s["clae"], 2),
      "plain_gflop_per_step": round(step_gflop["plain"], 4),
      "clae_gflop_per_step": round(step_gflop["clae"], 4),
      "peak_gflop_per_s": round(peak_gflops, 1),
      "plain_mfu": round(mfu["plain"], 4), "clae_mfu": round(mfu["clae"], 4),
      **fractions,
  }


if __name__ == "__main__":
  main()
