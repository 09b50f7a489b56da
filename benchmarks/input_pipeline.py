"""Images/s of the input pipeline alone and of the CLAE train step alone, for one setting.

    python benchmarks/input_pipeline.py --setting quickstart
    python benchmarks/input_pipeline.py --setting cifar10_resnet18

The host's part: the in-memory epoch order and uint8 gather (memory.train_images, one
thread), and the same read from raw-pixel records on disk (adcl.data.records.StepBatches, one
thread: what data.source='records' does for converted IDX / NPZ), over random uint8 images of
the setting's shape. The device's part: the views alone (adcl.data.views.two_views, jitted),
and the compiled CLAE step fed ready views and fed uint8 images (it then draws the views, as
in training). Encoded (JPEG) records: benchmarks/decode_crop.py. A pipeline keeps up when its
images/s >= the step's (`*_over_step` >= 1). Last line: one JSON object.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from adcl import cli, configs, step as step_lib
from adcl.data import memory, views
import step_time


def setting_config(name):
  """(config, source image shape) of a named setting."""
  if name == "quickstart":
    import quickstart
    return quickstart.get_config(), (28, 28, 1)
  if name == "cifar10_resnet18":
    c = configs.paper_recipe("cifar10", "simclr")
    c.train.batch_size = 64
    return c, (32, 32, 3)
  raise SystemExit(f"unknown --setting {name!r}; choose quickstart or cifar10_resnet18")


def pipeline_images_per_s(source, images, config, steps):
  """Images/s of `source` (memory.train_images) on the host."""
  batches = source(images, config, 0, steps + 3)
  for _ in range(3):  # Warm-up: graph tracing and the first prefetches.
    next(batches)
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * config.train.batch_size / (time.perf_counter() - start)


def raw_records_images_per_s(images, config, steps):
  """Images/s, on one thread, of the records path's host part for raw pixels
  (adcl.data.records.StepBatches: seeded indices, one ArrayRecord read per batch, decode and
  stack) over `images` written as raw records to a temporary folder."""
  import tempfile

  from adcl.data import records, shards

  with tempfile.TemporaryDirectory() as directory:
    shards.write_split((shards.Example(0, "", image.tobytes()) for image in images),
                        directory, "train", "raw", classes=["all"], shape=images.shape[1:])
    batches = records.StepBatches(directory, "train", config.seed, config.train.batch_size)
    for step in range(3):  # Warm-up: opening the shards.
      batches(step)
    start = time.perf_counter()
    for step in range(3, steps + 3):
      batches(step)
    return steps * config.train.batch_size / (time.perf_counter() - start)


def device_views_images_per_s(images, config, steps):
  """Images/s of the views alone, drawn by the jitted adcl.data.views.two_views."""
  recipe = views.recipe(config.data, images.shape[-1])
  draw = jax.jit(lambda x, key: views.two_views(x, key, recipe))
  batch = jnp.asarray(images[:config.train.batch_size])
  jax.block_until_ready(draw(batch, jax.random.PRNGKey(0)))
  start = time.perf_counter()
  for step in range(steps):
    out = draw(batch, jax.random.PRNGKey(step))
  jax.block_until_ready(out)
  return steps * config.train.batch_size / (time.perf_counter() - start)


def step_images_per_s(config, image_shape, steps, views):
  """The CLAE step's images/s, fed ready views ('given') or uint8 images ('drawn': it draws
  them)."""
  config = config.copy_and_resolve_references()
  mesh = step_lib.data_mesh()
  size, batch_size, channels = config.data.image_size, config.train.batch_size, image_shape[-1]
  rng = np.random.default_rng(0)
  if views == "drawn":
    batch = {"images": rng.integers(0, 256, (batch_size, *image_shape), dtype=np.uint8)}
  else:
    batch = {k: rng.normal(size=(batch_size, size, size, channels)).astype(np.float32)
             for k in ("view1", "view2")}
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  _, run = step_time.time_variant(config, True, channels, mesh, batch)
  return steps * batch_size / run(steps)


def main():
  cli.prepare_jax()  # As the commands do, before jax starts.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--setting", default="quickstart")
  parser.add_argument("--pipeline-steps", type=int, default=50)
  parser.add_argument("--step-steps", type=int, default=5)
  parser.add_argument("--num-images", type=int, default=10000)
  args = parser.parse_args()
  config, image_shape = setting_config(args.setting)
  images = np.random.default_rng(0).integers(0, 256, (args.num_images, *image_shape),
                                             dtype=np.uint8)
  result = {"setting": args.setting, "batch": config.train.batch_size,
            "image_size": config.data.image_size}
  gather = pipeline_images_per_s(memory.train_images, images, config, args.pipeline_steps)
  from_records = raw_records_images_per_s(images, config, args.pipeline_steps)
  drawn = device_views_images_per_s(images, config, args.pipeline_steps)
  result.update(uint8_gather_images_per_s_per_core=round(gather, 1),
                raw_records_images_per_s_per_core=round(from_records, 1),
                raw_records_over_gather=round(from_records / gather, 3),
                device_views_images_per_s=round(drawn, 1))
  print(f"uint8 gather: {gather:.0f} images/s; raw records: {from_records:.0f} images/s "
        f"({from_records / gather:.2f}x); views on the device: {drawn:.0f} images/s",
        file=sys.stderr)
  for views in ("given", "drawn"):
    rate = step_images_per_s(config, image_shape, args.step_steps, views)
    result[f"step_with_{views}_views_images_per_s"] = round(rate, 2)
    print(f"CLAE step, views {views}: {rate:.1f} images/s", file=sys.stderr)
  for name, rate in (("gather", gather), ("raw_records", from_records)):
    result[f"{name}_over_step"] = round(rate / result["step_with_drawn_views_images_per_s"], 2)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
