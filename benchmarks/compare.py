"""adcl's step against the PyTorch reference step, side by side, at the same settings.

    python benchmarks/compare.py                      # ResNet-18 32 px batch 64, and quickstart
    python benchmarks/compare.py --settings quickstart --steps 20

Runs benchmarks/step_time.py and benchmarks/torch_reference.py one after the other for each
setting (each in its own process, so neither warms the other's caches or threads), prints a
markdown table of images/s with the adcl / PyTorch ratio and each side's CLAE / plain time,
and, last, one JSON line with every number. PyTorch must be installed (pip install
torch==2.13.0); adcl does not depend on it.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {
    "resnet18": ["--model", "resnet18", "--image-size", "32", "--channels", "3", "--batch", "64"],
    "quickstart": ["--model", "quickstart"],
}


def run(script: str, args: list) -> dict:
  """The JSON last line of `script`; its progress lines pass through to stderr."""
  result = subprocess.run([sys.executable, os.path.join(HERE, script), *args],
                          stdout=subprocess.PIPE, text=True)
  if result.returncode:
    sys.exit(f"compare.py: {script} {' '.join(args)} failed with exit {result.returncode}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--adcl-args", default="", help="extra step_time.py flags, e.g. "
                      "'--dtype bfloat16'")
  args = parser.parse_args()
  timing = ["--steps", str(args.steps), "--rounds", str(args.rounds)]
  rows = []
  for name in args.settings:
    adcl = run("step_time.py", SETTINGS[name] + timing + args.adcl_args.split())
    torch = run("torch_reference.py", SETTINGS[name] + timing)
    rows.append({"setting": name, "adcl": adcl, "torch": torch,
                 "plain_ratio": round(adcl["plain_images_per_s"] / torch["plain_images_per_s"], 3),
                 "clae_ratio": round(adcl["clae_images_per_s"] / torch["clae_images_per_s"], 3)})
  print("| setting | step | adcl img/s | PyTorch img/s | adcl / PyTorch |")
  print("|---|---|---|---|---|")
  for row in rows:
    for step in ("plain", "clae"):
      print(f"| {row['setting']} | {step} | {row['adcl'][f'{step}_images_per_s']:.2f} | "
            f"{row['torch'][f'{step}_images_per_s']:.2f} | {row[f'{step}_ratio']:.2f}x |")
    print(f"| {row['setting']} | CLAE / plain time | {row['adcl']['clae_over_plain_time']:.2f}x | "
          f"{row['torch']['clae_over_plain_time']:.2f}x | |")
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
