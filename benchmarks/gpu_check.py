"""The first check of adcl on a GPU host, in one call: step speed, PyTorch beside it, a real run.

    bash benchmarks/gpu_check.sh OUT_DIR            # on the GPU host (installs carried wheels)
    python benchmarks/gpu_check.py --out OUT_DIR    # where ml-collections and dm-pix are installed
    python benchmarks/gpu_check.py --out /tmp/g --toy --fmnist DIR   # tiny, on CPU (the tests)

What it runs, each part a subprocess with its own time limit, in order of importance:
  1. benchmarks/step_time.py: the ResNet-18 32 px step, plain and CLAE, views drawn in the step
     from uint8 images (data.views_on 'device'), at batch 256 and 1024, float32 and bfloat16:
     images/s, compile time, MFU against a matmul peak measured there (benchmarks/peak.py);
     at bfloat16 and batch 1024 also CLAE with adv.fraction 0.5 and 0.25.
  2. benchmarks/torch_reference.py --device cuda: the official-style PyTorch step, same sizes.
  3. The quickstart (configs/quickstart.py, data.views_on 'auto': the device on a GPU, and on
     a CPU without TensorFlow) trained for --epochs on the carried
     Fashion-MNIST IDX files, end to end through `python -m adcl.train`: wall time, images/s and
     the kNN after each epoch.
A part that fails or runs out of time is recorded as such; the others still run.

Output, in OUT_DIR: gpu_check.json ({'device', 'steps': [step_time.py records], 'torch':
[torch_reference.py records], 'quickstart': {...}, 'failures': [...]}) and gpu_check.md (the
same as tables); both are rewritten after every part, so a cut-off call still leaves them.

Needs only what a managed jax-CUDA image has (jax, flax, optax, orbax-checkpoint, chex,
PyTorch) plus two small wheels, ml-collections and dm-pix: no TensorFlow, no network.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = {"model": ["--model", "resnet18"], "batches": (256, 1024), "dtypes": ("bfloat16", "float32"),
        "steps": ["--steps", "10", "--rounds", "2"], "fractions": "0.5,0.25", "epochs": 3}
# Tiny sizes that finish in seconds on a CPU: the suite runs these to keep the script working.
TOY = {"model": ["--model", "resnet_small", "--width", "4", "--image-size", "8"],
       "batches": (8,), "dtypes": ("bfloat16",), "steps": ["--steps", "1", "--rounds", "1"],
       "fractions": "0.5", "epochs": 0}


def run_json(command: list, timeout: float) -> dict:
  """The last stdout line of `command` as JSON; raises RuntimeError with its stderr's tail."""
  try:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    raise RuntimeError(f"timed out after {timeout:.0f} s") from None
  if result.returncode != 0:
    raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip()
                       else f"exit code {result.returncode}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def quickstart(out: str, fmnist: str, epochs: int, toy: bool, timeout: float) -> dict:
  """Train the quickstart (views where 'auto' puts them); wall time, images/s, kNN per
  evaluation and where the views were drawn."""
  workdir = os.path.join(out, "quickstart_workdir")
  flags = [f"--config.data.data_dir={fmnist}",
           "--config.eval.every=937", "--config.train.checkpoint_every=100000"]
  if toy:  # The tests' tiny IDX set: 8 px crops, a 4-channel net, 4 steps.
    flags += ["--config.data.image_size=8", "--config.model.width=4", "--config.train.num_steps=4",
              "--config.train.batch_size=16", "--config.eval.batch_size=16",
              "--config.eval.knn_k=10", "--config.train.log_every=2"]
  else:
    flags += [f"--config.train.num_epochs={epochs}"]
  start = time.perf_counter()
  try:
    result = subprocess.run([sys.executable, "-m", "adcl.train", "--config",
                             "configs/quickstart.py", "--workdir", workdir, *flags],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    raise RuntimeError(f"timed out after {timeout:.0f} s") from None
  if result.returncode != 0:
    raise RuntimeError(result.stderr.strip().splitlines()[-1])
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  speeds = [r["images_per_s"] for r in records[1:] if "images_per_s" in r]
  return {"wall_s": round(time.perf_counter() - start, 1), "steps": records[-1]["step"],
          "median_images_per_s": round(sorted(speeds)[len(speeds) // 2], 1) if speeds else None,
          "knn_top1": [(r["step"], r["knn_top1"]) for r in records if "knn_top1" in r],
          "views_on": "device" if "views drawn on the device" in result.stderr else "host"}


def markdown(report: dict) -> str:
  lines = [f"# adcl GPU check: {report['device']}", "", "## The ResNet-18 step (views drawn in "
           "the step)", "", "| dtype | batch | plain img/s | CLAE img/s | CLAE/plain time | "
           "compile s (plain + CLAE) | plain MFU | CLAE MFU | peak GFLOP/s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in report["steps"]:
    lines.append(f"| {r['dtype']} | {r['batch']} | {r['plain_images_per_s']} | "
                 f"{r['clae_images_per_s']} | {r['clae_over_plain_time']} | {r['compile_s']} | "
                 f"{r['plain_mfu']} | {r['clae_mfu']} | {r['peak_gflop_per_s']} |")
  lines += ["", "## PyTorch reference step (random inputs, no views)", "",
            "| dtype | batch | plain img/s | CLAE img/s | CLAE/plain time |", "|---|---|---|---|---|"]
  for r in report["torch"]:
    lines.append(f"| {r['dtype']} | {r['batch']} | {r['plain_images_per_s']} | "
                 f"{r['clae_images_per_s']} | {r['clae_over_plain_time']} |")
  for r in report["steps"]:
    cheap = sorted(k[len("clae_fraction_"):-len("_over_plain_time")] for k in r
                   if k.startswith("clae_fraction_") and k.endswith("_over_plain_time"))
    if cheap:
      lines += ["", f"adv.fraction at {r['dtype']}, batch {r['batch']}: step time / plain "
                + ", ".join(f"{f}: {r[f'clae_fraction_{f}_over_plain_time']}" for f in cheap)
                + f" (1.0: {r['clae_over_plain_time']})."]
  q = report.get("quickstart")
  if q:
    lines += ["", f"## Quickstart end to end ({q['views_on']} views)", "",
              f"{q['steps']} steps in {q['wall_s']} s (compilation and evaluation included), "
              f"median {q['median_images_per_s']} images/s; kNN top-1 by step: "
              + ", ".join(f"{step}: {knn:.2f}%" for step, knn in q["knn_top1"]) + "."]
  if report["failures"]:
    lines += ["", "## Parts that did not finish", ""] + [f"- {f}" for f in report["failures"]]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
  parser.add_argument("--fmnist", default="data/fashion-mnist",
                      help="folder of the Fashion-MNIST IDX files (carried with the checkout)")
  parser.add_argument("--toy", action="store_true", help="tiny sizes (a CPU check of the script)")
  parser.add_argument("--budget", type=float, default=420, help="seconds for all parts")
  args = parser.parse_args()
  sizes = TOY if args.toy else FULL
  os.makedirs(args.out, exist_ok=True)
  deadline = time.perf_counter() + args.budget
  left = lambda: max(10.0, deadline - time.perf_counter())
  # Asked in a subprocess: this process must not hold the accelerator the parts need.
  device = run_json([sys.executable, "-c", "import jax, json; print(json.dumps({'kind': "
                     "jax.devices()[0].device_kind, 'backend': jax.default_backend(), "
                     "'jax': jax.__version__}))"], 120)
  report = {"device": f"{device['kind']} ({device['backend']}), jax {device['jax']}",
            "steps": [], "torch": [], "failures": []}

  def save():
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
      json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
      f.write(markdown(report))

  torch_device = "cuda" if device["backend"] == "gpu" else "cpu"
  # The quickstart last, with what is left (at least a third of the budget).
  for dtype in sizes["dtypes"]:
    for batch in sizes["batches"]:
      label = f"step_time {dtype} batch {batch}"
      # The cheaper attack where it matters most: the largest batch at the fast dtype.
      largest = (dtype, batch) == (sizes["dtypes"][0], sizes["batches"][-1])
      fractions = ["--fractions", sizes["fractions"]] if largest else []
      try:
        report["steps"].append(run_json(
            [sys.executable, "benchmarks/step_time.py", *sizes["model"], "--batch", str(batch),
             "--dtype", dtype, "--views", "device", *fractions, *sizes["steps"]], left() * 0.5))
      except (RuntimeError, ValueError) as error:
        report["failures"].append(f"{label}: {error}")
      save()
      print(f"{label}: done", file=sys.stderr, flush=True)
  for dtype in sizes["dtypes"]:
    for batch in sizes["batches"]:
      label = f"torch_reference {dtype} batch {batch}"
      try:
        if importlib.util.find_spec("torch") is None:
          raise ImportError("torch")
        report["torch"].append(run_json(
            [sys.executable, "benchmarks/torch_reference.py", *sizes["model"], "--batch",
             str(batch), "--dtype", dtype, "--device", torch_device, *sizes["steps"]],
            left() * 0.3))
      except ImportError:
        report["failures"].append(f"{label}: PyTorch is not installed here")
      except (RuntimeError, ValueError) as error:
        report["failures"].append(f"{label}: {error}")
      save()
  try:
    report["quickstart"] = quickstart(args.out, args.fmnist, sizes["epochs"], args.toy, left())
  except (RuntimeError, OSError, ValueError) as error:
    report["failures"].append(f"quickstart: {error}")
  save()
  print(markdown(report))


if __name__ == "__main__":
  main()
