"""Forward, input-gradient and filter-gradient time of ResNet-18's 3x3 convolutions.

    python benchmarks/conv_layers.py              # XLA:CPU with and without YNNPACK convolutions
    python benchmarks/conv_layers.py --one        # only this process's XLA_FLAGS

Each layer is jitted on its own and timed (best of --reps) at batch --batch. By default it
runs itself twice, in fresh processes (XLA reads XLA_FLAGS once per process): with adcl's CPU
default (`--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce`, adcl/xla_cpu.py) and with
jaxlib 0.10's own (`individual_dot,reduce,individual_convolution`), then prints both side by side
with the ratio. The last line is JSON with every number. This is the measurement behind
adcl/xla_cpu.py.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# (input pixels, input channels, output channels, stride) of ResNet-18's 3x3 layers, CIFAR stem.
LAYERS = [(32, 64, 64, 1), (32, 64, 128, 2), (16, 128, 128, 1), (16, 128, 256, 2),
          (8, 256, 256, 1), (8, 256, 512, 2), (4, 512, 512, 1)]
SETTINGS = {"adcl default (Eigen convolutions)": "individual_dot,reduce",
            "jaxlib default (YNNPACK convolutions)": "individual_dot,reduce,individual_convolution"}


def best_ms(fn, args, reps: int) -> float:
  fn(*args).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    fn(*args).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return best * 1e3


def time_layers(batch: int, reps: int) -> list:
  """[{layer, gflop, forward_ms, input_grad_ms, filter_grad_ms}] in this process."""
  import jax
  from jax import lax

  rows = []
  for size, cin, cout, stride in LAYERS:
    def conv(x, w, stride=stride):
      return lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jax.random.normal(jax.random.key(0), (batch, size, size, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.05
    dy = jax.numpy.ones(jax.eval_shape(conv, x, w).shape)
    passes = {
        "forward_ms": jax.jit(conv),
        "input_grad_ms": jax.jit(lambda x, w, dy: jax.vjp(lambda v: conv(v, w), x)[1](dy)[0]),
        "filter_grad_ms": jax.jit(lambda x, w, dy: jax.vjp(lambda v: conv(x, v), w)[1](dy)[0]),
    }
    row = {"layer": f"{size}px {cin}->{cout} s{stride}",
           "gflop": 2 * batch * dy.shape[1] * dy.shape[2] * 9 * cin * cout / 1e9}
    for name, fn in passes.items():
      row[name] = round(best_ms(fn, (x, w) if name == "forward_ms" else (x, w, dy), reps), 1)
    print(json.dumps(row), file=sys.stderr, flush=True)
    rows.append(row)
  return rows


def run_setting(ynn_types: str, args) -> list:
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if "xla_cpu_experimental_ynn_fusion_type" not in f]
  env = dict(os.environ, XLA_FLAGS=" ".join(
      flags + [f"--xla_cpu_experimental_ynn_fusion_type={ynn_types}"]))
  result = subprocess.run([sys.executable, __file__, "--one", "--batch", str(args.batch),
                           "--reps", str(args.reps)], env=env, stdout=subprocess.PIPE, text=True)
  if result.returncode:
    sys.exit(f"conv_layers.py: the run with ynn_fusion_type={ynn_types} failed "
             f"(exit {result.returncode})")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--one", action="store_true", help="time this process's XLA_FLAGS only")
  args = parser.parse_args()
  if args.one:
    print(json.dumps(time_layers(args.batch, args.reps)))
    return
  results = {name: run_setting(types, args) for name, types in SETTINGS.items()}
  (fast_name, fast), (slow_name, slow) = results.items()
  print(f"ms per pass, batch {args.batch}: {fast_name} / {slow_name} (ratio)")
  print("| layer | forward | input gradient | filter gradient |")
  print("|---|---|---|---|")
  totals = {k: [0.0, 0.0] for k in ("forward_ms", "input_grad_ms", "filter_grad_ms")}
  for a, b in zip(fast, slow):
    cells = []
    for key, total in totals.items():
      total[0] += a[key]
      total[1] += b[key]
      cells.append(f"{a[key]:.0f} / {b[key]:.0f} ({b[key] / a[key]:.1f}x)")
    print(f"| {a['layer']} | " + " | ".join(cells) + " |")
  print("| all | " + " | ".join(f"{a:.0f} / {b:.0f} ({b / a:.1f}x)" for a, b in totals.values())
        + " |")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
