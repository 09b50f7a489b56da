"""The GPU check of adcl, in one call: step speed on the paper's and ImageNet's workloads,
PyTorch beside it, a real run.

    bash benchmarks/gpu_check.sh OUT_DIR            # on the GPU host (installs carried wheels)
    python benchmarks/gpu_check.py --out OUT_DIR    # where ml-collections and dm-pix are installed
    python benchmarks/gpu_check.py --out /tmp/g --toy --fmnist DIR   # tiny, on CPU (the tests)

What it runs, each part a subprocess with its own time limit, in order of importance:
  1. benchmarks/step_time.py: the paper's workload, ResNet-18 on 32 px CIFAR-shaped batches,
     views drawn in the step from uint8 images (as in training), at batch 512 and
     1024, bfloat16 and float32: the SimCLR step and CLAE on it side by side; in bfloat16 also
     the Plain loss's step and its CLAE; at bfloat16 and batch 1024 also CLAE with adv.fraction
     0.5 and 0.25. Images/s, compile time, MFU against a matmul peak measured there
     (benchmarks/peak.py), and the 100 CIFAR-10 epochs (5M images) each step's speed implies.
  2. ResNet-50 at 224 px (ImageNet's step, bfloat16, views in the step), the SimCLR step and
     CLAE, at batch 256 and 512.
  3. benchmarks/torch_reference.py --device cuda: the official-style PyTorch step at part 1's
     sizes and ResNet-50's batch 256, with bf16 autocast, channels_last and torch.compile.
  4. The quickstart (configs/quickstart.py) trained for --epochs on the carried
     Fashion-MNIST IDX files, end to end through `python -m adcl.train`: wall time, images/s and
     the kNN after each epoch.
A part that fails or runs out of time is recorded as such; the others still run.

Output, in OUT_DIR: gpu_check.json ({'device', 'steps': [step_time.py records], 'torch':
[torch_reference.py records], 'quickstart': {...}, 'failures': [...]}), gpu_check.md (the
same as tables) and records.jsonl (one line per measurement, each with the machine and the
versions: what benchmarks/records/ keeps); all rewritten after every part, so a cut-off call
still leaves them.

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
# Each step_time part: (label, its flags, whether the cheaper attack is timed too).
RESNET18 = ["--model", "resnet18", "--image-size", "32"]
RESNET50 = ["--model", "resnet50", "--image-size", "224", "--dtype", "bfloat16"]
FULL = {
    "steps": [(f"resnet18 {loss} {dtype} batch {batch}",
               [*RESNET18, "--loss", loss, "--dtype", dtype, "--batch", str(batch)],
               (loss, dtype, batch) == ("simclr", "bfloat16", 1024))
              for loss, dtypes in (("simclr", ("bfloat16", "float32")), ("plain", ("bfloat16",)))
              for dtype in dtypes for batch in (512, 1024)]
    + [(f"resnet50 224 px bfloat16 batch {batch}", [*RESNET50, "--batch", str(batch)], False)
       for batch in (256, 512)],
    # With what a PyTorch user would use for speed: bf16 autocast, NHWC, torch.compile.
    "torch": [[*RESNET18, "--dtype", dtype, "--batch", str(batch), "--channels-last",
               "--compile"] for dtype in ("bfloat16", "float32") for batch in (512, 1024)]
    + [["--model", "resnet50", "--image-size", "224", "--dtype", "bfloat16", "--batch", "256",
        "--channels-last", "--compile"]],
    "timing": ["--steps", "10", "--rounds", "2"], "fractions": "0.5,0.25", "epochs": 3}
# Tiny sizes that finish in seconds on a CPU: the suite runs these to keep the script working.
# 32 px, as CIFAR: the 100-epoch projection runs too. Grey images: the colour jitter's
# saturation and hue would only add compile time to a check that measures nothing.
TOY_MODEL = ["--model", "resnet_tiny", "--width", "4", "--image-size", "32", "--channels", "1"]
TOY = {"steps": [("toy bfloat16 batch 8", [*TOY_MODEL, "--dtype", "bfloat16", "--batch", "8"],
                  True)],
       "torch": [[*TOY_MODEL, "--dtype", "bfloat16", "--batch", "8"]],
       "timing": ["--steps", "1", "--rounds", "1"], "fractions": "0.5", "epochs": 0}
CIFAR10_EPOCHS_IMAGES = 100 * 50_000  # What the paper trains on: 100 epochs of CIFAR-10.


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
  """Train the quickstart; wall time, images/s and kNN per evaluation."""
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
          "knn_top1": [(r["step"], r["knn_top1"]) for r in records if "knn_top1" in r]}


def markdown(report: dict) -> str:
  lines = [f"# adcl GPU check: {report['device']}", "", "## The steps (views drawn in the step; "
           "the baseline is the same loss without the attack)", "",
           "| model | px | loss | dtype | batch | baseline img/s | CLAE img/s | CLAE/baseline "
           "time | 100 CIFAR-10 epochs of CLAE | compile s (both) | baseline MFU | CLAE MFU | "
           "peak GFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in report["steps"]:
    epochs = r.get("clae_cifar10_100_epochs_min")
    lines.append(f"| {r['architecture']} | {r['image_size']} | {r['loss']} | {r['dtype']} | "
                 f"{r['batch']} | {r['plain_images_per_s']} | {r['clae_images_per_s']} | "
                 f"{r['clae_over_plain_time']} | {f'{epochs} min' if epochs else '–'} | "
                 f"{r['compile_s']} | {r['plain_mfu']} | {r['clae_mfu']} | "
                 f"{r['peak_gflop_per_s']} |")
  lines += ["", "## PyTorch reference step (random inputs, no views), and adcl's speed over it",
            "", "| model | px | dtype | batch | NHWC, compiled | baseline img/s | CLAE img/s | "
            "CLAE/baseline time | adcl over PyTorch, baseline | adcl over PyTorch, CLAE |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  for r in report["torch"]:
    ours = next((a for a in report["steps"] if a["loss"] == "simclr" and
                 (a["architecture"], a["image_size"], a["dtype"], a["batch"])
                 == (r["model"], r["image_size"], r["dtype"], r["batch"])), None)
    ratio = lambda k: f"{ours[k] / r[k]:.2f}x" if ours else "–"
    lines.append(f"| {r['model']} | {r['image_size']} | {r['dtype']} | {r['batch']} | "
                 f"{r.get('channels_last', False)}, {r.get('compiled', False)} | "
                 f"{r['plain_images_per_s']} | {r['clae_images_per_s']} | "
                 f"{r['clae_over_plain_time']} | {ratio('plain_images_per_s')} | "
                 f"{ratio('clae_images_per_s')} |")
  for r in report["steps"]:
    cheap = sorted(k[len("clae_fraction_"):-len("_over_plain_time")] for k in r
                   if k.startswith("clae_fraction_") and k.endswith("_over_plain_time"))
    if cheap:
      lines += ["", f"adv.fraction at {r['dtype']}, batch {r['batch']}: step time / plain "
                + ", ".join(f"{f}: {r[f'clae_fraction_{f}_over_plain_time']}" for f in cheap)
                + f" (1.0: {r['clae_over_plain_time']})."]
  q = report.get("quickstart")
  if q:
    lines += ["", "## Quickstart end to end", "",
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
  device = run_json([sys.executable, "-c", "import jax, jaxlib, json; print(json.dumps({'kind': "
                     "jax.devices()[0].device_kind, 'backend': jax.default_backend(), "
                     "'jax': jax.__version__, 'jaxlib': jaxlib.__version__}))"], 120)
  report = {"device": f"{device['kind']} ({device['backend']}), jax {device['jax']}",
            "steps": [], "torch": [], "failures": []}

  def save():
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
      json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
      f.write(markdown(report))

  torch_device = "cuda" if device["backend"] == "gpu" else "cpu"
  machine = {"device": report["device"], "jax": device["jax"], "jaxlib": device["jaxlib"],
             "date": time.strftime("%Y-%m-%d")}
  records = open(os.path.join(args.out, "records.jsonl"), "w")

  def keep(part: str, record: dict) -> None:
    """One measurement: with the machine, and the 100 CIFAR-10 epochs of a 32 px step."""
    if record.get("image_size") == 32:
      for variant in ("plain", "clae"):
        if record.get(f"{variant}_images_per_s"):
          record[f"{variant}_cifar10_100_epochs_min"] = round(
              CIFAR10_EPOCHS_IMAGES / record[f"{variant}_images_per_s"] / 60, 2)
    records.write(json.dumps({"part": part, **machine, **record}) + "\n")
    records.flush()

  # The quickstart last, with what is left (at least a third of the budget).
  for label, flags, cheaper in sizes["steps"]:
    fractions = ["--fractions", sizes["fractions"]] if cheaper else []
    try:
      record = run_json([sys.executable, "benchmarks/step_time.py", *flags, "--views", "device",
                         *fractions, *sizes["timing"]], left() * 0.4)
      keep(f"step_time {label}", record)
      report["steps"].append(record)
    except (RuntimeError, ValueError) as error:
      report["failures"].append(f"step_time {label}: {error}")
    save()
    print(f"step_time {label}: done", file=sys.stderr, flush=True)
  for flags in sizes["torch"]:
    label = "torch_reference " + " ".join(f for f in flags if not f.startswith("--"))
    try:
      if importlib.util.find_spec("torch") is None:
        raise ImportError("torch")
      record = run_json([sys.executable, "benchmarks/torch_reference.py", *flags, "--device",
                         torch_device, *sizes["timing"]], left() * 0.3)
      keep(label, record)
      report["torch"].append(record)
    except ImportError:
      report["failures"].append(f"{label}: PyTorch is not installed here")
    except (RuntimeError, ValueError) as error:
      report["failures"].append(f"{label}: {error}")
    save()
  try:
    report["quickstart"] = quickstart(args.out, args.fmnist, sizes["epochs"], args.toy, left())
    keep("quickstart", dict(report["quickstart"]))
  except (RuntimeError, OSError, ValueError) as error:
    report["failures"].append(f"quickstart: {error}")
  save()
  records.close()
  print(markdown(report))


if __name__ == "__main__":
  main()
