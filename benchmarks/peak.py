"""The machine's measured matmul peak, the denominator of the step's MFU.

    python benchmarks/peak.py [--size 2048] [--dtype float32]

Times a jitted [size, size] x [size, size] matmul on the default device until `--seconds`
have passed and prints one JSON line: peak_gflop_per_s (2 * size**3 flops per product).
benchmarks/step_time.py calls `measure` itself to report MFU.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp


def measure(size: int = 2048, dtype: str = "float32", seconds: float = 2.0) -> float:
  """GFLOP/s of a size x size matmul, the best of repeated timings."""
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best, deadline = float("inf"), time.perf_counter() + seconds
  while time.perf_counter() < deadline:
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=2048)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--seconds", type=float, default=2.0)
  args = parser.parse_args()
  print(json.dumps({"platform": jax.devices()[0].platform, "size": args.size, "dtype": args.dtype,
                    "peak_gflop_per_s": round(measure(args.size, args.dtype, args.seconds), 1)}))


if __name__ == "__main__":
  main()
