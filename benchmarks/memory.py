"""Peak memory of training and evaluating on records at N and at 10N images: it must not grow.

    python benchmarks/memory.py                      # N = 2,000: 2,000 and 20,000 JPEGs
    python benchmarks/memory.py --images 200 --small 64,48 --large 200,150   # toy size

Makes a folder of JPEGs (half --small, half --large pixels, smooth content so that they
compress as photographs do), converts its first N and all 10N images to records with `python
-m adcl.data.convert`, and runs `python -m adcl.train` on each (--steps steps of a small
ResNet on --crop px crops, Grain workers reading ahead, then the kNN evaluation over the whole
training split and a fixed test split). A sampler reads the resident memory (VmRSS) of the
training process and all its descendants, Grain's workers included, every 50 ms; the peak of
that sum is the figure. Last line: one JSON object with both peaks and their difference (MB).

What still grows with N: the labels (the features of records go to a temporary folder and
are read back a block at a time) and what ArrayRecord keeps per open shard (about 0.4 MB in
each process that reads it); the images never. --dir reuses the images of an earlier run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import process_tree  # benchmarks/process_tree.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 10


def write_jpegs(folder: str, count: int, sizes, seed: int = 0) -> None:
  """folder/<class>/<i>.jpg for i < count, alternating between `sizes` ((w, h) pairs):
  a random 8 x 6 colour field upsampled (smooth, so it compresses like a photograph)."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  for i in range(count):
    label = i % CLASSES
    os.makedirs(os.path.join(folder, f"c{label}"), exist_ok=True)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    path = os.path.join(folder, f"c{label}", f"{i:06d}.jpg")
    if not os.path.exists(path):  # A --dir of an earlier run: the same images.
      field.resize(sizes[i % len(sizes)], Image.BICUBIC).save(path, quality=90)


def link_first(source: str, target: str, count: int) -> None:
  """target/<class>/... hard links to the first `count` images of source (in index order)."""
  for name in sorted(os.listdir(source)):
    os.makedirs(os.path.join(target, name), exist_ok=True)
  for i in range(count):
    name = f"c{i % CLASSES}/{i:06d}.jpg"
    if not os.path.exists(os.path.join(target, name)):
      os.link(os.path.join(source, name), os.path.join(target, name))


def peak_rss_mb(command: list, env: dict) -> tuple[float, float]:
  """Run `command`; (the peak of its process tree's resident memory in MB, seconds)."""
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  peak = [0.0]

  def sample():
    while process.poll() is None:
      peak[0] = max(peak[0], process_tree.rss_mb(process.pid))
      time.sleep(0.05)

  sampler = threading.Thread(target=sample)
  sampler.start()
  _, stderr = process.communicate()
  sampler.join()
  if process.returncode:
    raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
  return peak[0], time.perf_counter() - start


CONFIG = """
from adcl import configs

def get_config():
  c = configs.base()
  c.data.source, c.data.name, c.data.data_dir = "records", "generated", {data_dir!r}
  c.data.image_size, c.data.mean, c.data.std = {crop}, (0.5,) * 3, (0.25,) * 3
  c.data.views.update(configs.VIEW_RECIPES["simclr_blur"])
  c.data.workers = {workers}
  c.model.architecture, c.model.width, c.model.stem = {architecture!r}, 8, "imagenet"
  c.model.projector = (32, 8)
  c.loss.name, c.loss.temperature = "simclr", 0.5
  c.train.batch_size, c.train.num_steps = {batch}, {steps}
  c.train.log_every = c.train.checkpoint_every = {steps}
  c.eval.every, c.eval.knn_k, c.eval.batch_size = 0, 20, 64
  return c
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=2000, help="N (the larger run has 10N)")
  parser.add_argument("--factor", type=int, default=10)
  parser.add_argument("--test-images", type=int, default=200)
  parser.add_argument("--small", default="500,375")
  parser.add_argument("--large", default="1600,1200")
  parser.add_argument("--crop", type=int, default=64)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--architecture", default="resnet_small",
                      help="the encoder (the tests' resnet_tiny compiles faster)")
  parser.add_argument("--dir", default="", help="working folder (default: a temporary one)")
  args = parser.parse_args()
  sizes = [tuple(map(int, s.split(","))) for s in (args.small, args.large)]
  root = args.dir or tempfile.mkdtemp(prefix="adcl_memory_")
  # Without a persistent compilation cache: with one, the first run would compile (the
  # compiler's memory in its peak) and the second load the executable, a bias of tens of MB
  # in the second run's favour that is not about the data.
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
  counts = (args.images, args.images * args.factor)

  start = time.perf_counter()
  write_jpegs(os.path.join(root, "all", "train"), counts[1], sizes)
  write_jpegs(os.path.join(root, "all", "test"), args.test_images, sizes, seed=1)
  print(f"wrote {counts[1] + args.test_images} JPEGs in {time.perf_counter() - start:.0f}s",
        file=sys.stderr)
  result = {"images": list(counts), "sizes": sizes, "crop": args.crop, "steps": args.steps,
            "architecture": args.architecture,
            "workers": args.workers}
  for count in counts:
    source = os.path.join(root, f"jpeg_{count}")
    link_first(os.path.join(root, "all", "train"), os.path.join(source, "train"), count)
    link_first(os.path.join(root, "all", "test"), os.path.join(source, "test"),
               args.test_images)
    records = os.path.join(root, f"records_{count}")
    subprocess.run([sys.executable, "-m", "adcl.data.convert", "--source", "folder",
                    "--data_dir", source, "--out", records, "--splits", "train,test"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    config = os.path.join(root, f"config_{count}.py")
    with open(config, "w") as f:
      f.write(CONFIG.format(data_dir=records, crop=args.crop, workers=args.workers,
                            batch=args.batch, steps=args.steps,
                            architecture=args.architecture))
    workdir = os.path.join(root, f"run_{count}")
    shutil.rmtree(workdir, ignore_errors=True)  # Train afresh, not resume.
    peak, seconds = peak_rss_mb([sys.executable, "-m", "adcl.train", "--config", config,
                                 "--workdir", workdir], env)
    print(f"{count} images: peak {peak:.0f} MB over the process tree, {seconds:.0f}s",
          file=sys.stderr)
    result[f"peak_rss_mb_{count}"] = round(peak, 1)
  result["difference_mb"] = round(result[f"peak_rss_mb_{counts[1]}"]
                                  - result[f"peak_rss_mb_{counts[0]}"], 1)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
