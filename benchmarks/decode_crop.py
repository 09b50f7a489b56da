"""Host images/s per core of the decode-and-crop for encoded images, side by side in one run.

    python benchmarks/decode_crop.py                      # 200 JPEGs, ImageNet-like sizes
    python benchmarks/decode_crop.py --images 40 --rounds 1   # a quick look
    python benchmarks/decode_crop.py --sizes 500x375          # ImageNet's typical size only

Makes JPEGs of mixed sizes (--sizes, by default 500x375 and 1600x1200 in turn; smooth content
with noise, quality 90), then times on one core, alternating rounds so that machine noise hits
all alike, the host's share of two 224 px RandomResizedCrops per image:
  full_decode      Pillow decodes the whole image (the reference: what a full decode costs)
  pillow_draft     adcl's path: one decode, reduced by Pillow's draft as far as the crops allow,
                   both crop regions cut from it, box-reduced below 2x the output size
                   (adcl/data/decode_crop.py); the step resizes them on the device
  pillow_full      the same from a full-size decode (no draft)
  pillow_resize    pillow_draft, then each region resized to 224 px by Pillow's bilinear
                   filter on the host: what resizing on the device takes off the host
  tf_decode_crop   tf.image.decode_and_crop_jpeg once per crop (TensorFlow's way: decodes only
                   the crop's rows and columns, twice), left at its decoded size
  step_batches     the whole of adcl's host path for a step: the JPEGs written as records,
                   read by adcl.data.records.StepBatches in batches of --batch (seeded order,
                   ArrayRecord reads, pillow_draft, the batch written)
  grain_threads    the same as training reads it (adcl.data.records.step_batches), each batch
                   decoded by --threads threads (0: one per core): images per CPU second; its
                   images/s by the clock is printed too (threads scale with the cores)
  grain_workers    the same in --workers Grain worker processes, one thread each, received by
                   this one: images per CPU second of the whole process tree, so the copies
                   between processes count; the copy to the device does not
Printed: images/s per core of each (an image is one source image, two crops), each over
full_decode (the goal is >= 0.8: two crops for at most 1.25 full decodes), and the cores it
takes to feed the target: by default one H200 running the ResNet-50 224 px CLAE step at 40%
of its measured bfloat16 peak, from that step's FLOPs (benchmarks/records/
h200_resnet50_224.jsonl: 87.3 GFLOP an image, peak 787 TFLOP/s: 3,603 images/s). Last line:
one JSON object.
"""

import argparse
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np

from adcl.data import decode_crop, records

SIZES = ((500, 375), (1600, 1200))


def parse_sizes(text: str) -> tuple:
  """'500x375,1600x1200' -> ((500, 375), (1600, 1200)): width x height, taken in turn."""
  try:
    sizes = tuple(tuple(int(n) for n in size.split("x")) for size in text.split(","))
  except ValueError:
    sizes = ()
  if not sizes or any(len(size) != 2 or min(size) < 1 for size in sizes):
    raise SystemExit(f"--sizes {text!r}: expected WIDTHxHEIGHT[,WIDTHxHEIGHT...], e.g. 500x375")
  return sizes


def make_jpegs(count: int, seed: int = 0, sizes: tuple = SIZES) -> list:
  from PIL import Image

  rng = np.random.default_rng(seed)
  jpegs = []
  for i in range(count):
    w, h = sizes[i % len(sizes)]
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    phase = rng.uniform(0, 6, 3)
    smooth = np.stack([np.sin(7 * x + phase[0]), np.cos(5 * y + phase[1]),
                       np.sin(4 * (x + y) + phase[2])], -1) * 90 + 128
    pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    jpegs.append(buffer.getvalue())
  return jpegs


def full_decode(data, rng, size, scale):
  from PIL import Image

  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def pillow_crops(draft):
  return lambda data, rng, size, scale: decode_crop.decode_crops(data, rng, 2, size, scale,
                                                                  draft=draft)


def pillow_resize(data, rng, size, scale):
  from PIL import Image

  canvases, crop_sizes = decode_crop.decode_crops(data, rng, 2, size, scale)
  return [np.asarray(Image.fromarray(canvas[:h, :w]).resize((size, size), Image.BILINEAR))
          for canvas, (h, w) in zip(canvases, crop_sizes)]


def tf_decode_crop(data, rng, size, scale):
  import tensorflow as tf

  height, width = tf.image.extract_jpeg_shape(data).numpy()[:2]
  crops = []
  for _ in range(2):
    top, left, h, w = decode_crop.crop_box(rng, int(height), int(width), scale)
    crops.append(tf.image.decode_and_crop_jpeg(data, [top, left, h, w], channels=3).numpy())
  return crops


def step_batches_rates(jpegs: list, size: int, scale, batch: int, rounds: int, threads: int,
                       workers: int) -> dict:
  """Images per CPU second of StepBatches reading `jpegs` (as encoded records in a temporary
  folder) in batches of `batch`: 'step_batches', in this thread, the best of `rounds` rounds
  of a whole number of batches; 'grain_threads' and 'grain_workers', by adcl.data.records.
  step_batches over as many steps with `threads` threads or `workers` worker processes (CPU of
  this process and its workers together); and 'grain_threads_wall', images/s by the clock."""
  import tempfile

  import process_tree  # benchmarks/process_tree.py
  from adcl.data import records, shards

  rates = {}
  with tempfile.TemporaryDirectory() as directory:
    shards.write_split((shards.Example(0, f"{i}.jpg", data) for i, data in enumerate(jpegs)),
                        directory, "train", "encoded", classes=["all"])
    batches = records.StepBatches(directory, "train", 0, batch, crop=(size, scale))
    steps = len(jpegs) // batch
    batches(0)  # Warm up: opening the shards.
    seconds = []
    for round_index in range(rounds):
      start = time.process_time()
      for step in range(round_index * steps, (round_index + 1) * steps):
        batches(step)
      seconds.append(time.process_time() - start)
    rates["step_batches"] = steps * batch / min(seconds)
    warm_up, timed = 2, rounds * steps
    threaded = records.StepBatches(directory, "train", 0, batch, crop=(size, scale),
                                  threads=threads)
    for name, source, options in (("grain_threads", threaded, {}),
                                  ("grain_workers", batches, {"workers": workers})):
      made = records.step_batches(source, 0, warm_up + timed, **options)
      for _ in range(warm_up):  # The threads or workers started and running ahead.
        next(made)
      cpu, wall = process_tree.cpu_s(os.getpid()), time.perf_counter()
      for _ in range(timed):
        next(made)
      # /proc counts CPU in clock ticks: a toy run may take less than one.
      tick = 1 / os.sysconf("SC_CLK_TCK")
      rates[name] = timed * batch / max(process_tree.cpu_s(os.getpid()) - cpu, tick)
      if name == "grain_threads":
        rates["grain_threads_wall"] = timed * batch / (time.perf_counter() - wall)
      del made
  return rates


def target_images_per_s(step_record: str, peak_fraction: float) -> float:
  """Source images/s of the CLAE step of `step_record` run at `peak_fraction` of the peak it
  measured: peak x fraction / GFLOP per image."""
  with open(step_record) as f:
    record = json.loads(f.readline())
  gflop_per_image = record["clae_gflop_per_step"] / record["batch"]
  return peak_fraction * record["peak_gflop_per_s"] / gflop_per_image


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=200)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--sizes", default="500x375,1600x1200",
                      help="source JPEG sizes, WIDTHxHEIGHT, taken in turn")
  parser.add_argument("--target_images_per_s", type=float, default=0.0,
                      help="images/s the step consumes (default: from --step_record)")
  parser.add_argument("--step_record", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "records", "h200_resnet50_224.jsonl"),
                      help="a benchmarks/step_time.py record (its GFLOP per step from "
                      "--count-only, its measured peak): the target is the CLAE step at "
                      "--peak_fraction of that peak")
  parser.add_argument("--peak_fraction", type=float, default=0.4)
  parser.add_argument("--batch", type=int, default=50, help="step_batches' batch")
  parser.add_argument("--threads", type=int, default=0,
                      help="grain_threads' threads (0: one per core)")
  parser.add_argument("--workers", type=int, default=1, help="grain_workers' workers")
  args = parser.parse_args()
  if not args.target_images_per_s:
    args.target_images_per_s = target_images_per_s(args.step_record, args.peak_fraction)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(1)  # One core, as the others.
  tf.config.threading.set_inter_op_parallelism_threads(1)
  sizes = parse_sizes(args.sizes)
  jpegs = make_jpegs(args.images, sizes=sizes)
  scale = (0.08, 1.0)  # The SimCLR / ImageNet recipe's crops.
  ways = {"full_decode": full_decode, "pillow_draft": pillow_crops(True),
          "pillow_full": pillow_crops(False), "pillow_resize": pillow_resize,
          "tf_decode_crop": tf_decode_crop}
  for way in ways.values():  # Warm up (imports, TensorFlow's first call).
    way(jpegs[0], np.random.default_rng(0), args.size, scale)
  seconds = {name: [] for name in ways}
  for round_index in range(args.rounds):
    for name, way in ways.items():
      rng = np.random.default_rng(round_index)
      start = time.process_time()
      for data in jpegs:
        way(data, rng, args.size, scale)
      seconds[name].append(time.process_time() - start)
  per_core = {name: args.images / min(s) for name, s in seconds.items()}
  streamed = step_batches_rates(jpegs, args.size, scale, min(args.batch, args.images),
                                args.rounds, args.threads, args.workers)
  threads_wall = streamed.pop("grain_threads_wall")
  per_core.update(streamed)
  result = {"images": args.images, "sizes": [list(s) for s in sizes], "size": args.size,
            "images_per_s_per_core": {k: round(v, 1) for k, v in per_core.items()},
            "over_full_decode": {k: round(v / per_core["full_decode"], 3)
                                 for k, v in per_core.items()},
            "target_images_per_s": args.target_images_per_s,
            "cores_for_target": {k: round(args.target_images_per_s / v, 1)
                                 for k, v in per_core.items()},
            "grain_threads_wall_images_per_s": round(threads_wall, 1),
            "cores": records.usable_cores()}
  for name in per_core:
    print(f"{name:15s} {per_core[name]:8.1f} images/s per core  "
          f"{result['over_full_decode'][name]:.2f}x a full decode  "
          f"{result['cores_for_target'][name]:6.1f} cores for {args.target_images_per_s:.0f}/s")
  print(f"grain_threads by the clock: {threads_wall:.1f} images/s on {result['cores']} cores")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
