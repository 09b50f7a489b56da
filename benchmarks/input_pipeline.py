"""Images/s of the input pipeline alone and of the CLAE train step alone, for one setting.

    python benchmarks/input_pipeline.py --setting quickstart
    python benchmarks/input_pipeline.py --setting cifar10_resnet18

The pipeline is the real one (adcl.data.pipeline.train_batches: epoch order, two augmented
views, normalisation) over random uint8 images of the setting's shape; the step is the
compiled CLAE step on random views (benchmarks/step_time.py). The pipeline keeps up when
pipeline_images_per_s >= step_images_per_s. Last line: one JSON object.
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

from adcl import configs, step as step_lib, xla_cpu
from adcl.data import pipeline
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


def pipeline_images_per_s(config, image_shape, steps, num_images):
  images = np.random.default_rng(0).integers(0, 256, (num_images, *image_shape), dtype=np.uint8)
  batches = pipeline.train_batches(images, config, 0, steps + 3)
  for _ in range(3):  # Warm-up: graph tracing and the first prefetches.
    next(batches)
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * config.train.batch_size / (time.perf_counter() - start)


def step_images_per_s(config, channels, steps):
  mesh = step_lib.data_mesh()
  size, batch_size = config.data.image_size, config.train.batch_size
  rng = np.random.default_rng(0)
  batch = jax.device_put({k: jnp.asarray(rng.normal(size=(batch_size, size, size, channels)),
                                         jnp.float32) for k in ("view1", "view2")},
                         NamedSharding(mesh, P("data")))
  _, run = step_time.time_variant(config, True, channels, mesh, batch)
  return steps * batch_size / run(steps)


def main():
  xla_cpu.apply_defaults()  # As the commands do (adcl/cli.py), before jax starts.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--setting", default="quickstart")
  parser.add_argument("--pipeline-steps", type=int, default=50)
  parser.add_argument("--step-steps", type=int, default=5)
  parser.add_argument("--num-images", type=int, default=10000)
  args = parser.parse_args()
  config, image_shape = setting_config(args.setting)
  pipeline_rate = pipeline_images_per_s(config, image_shape, args.pipeline_steps, args.num_images)
  print(f"pipeline: {pipeline_rate:.0f} images/s", file=sys.stderr)
  step_rate = step_images_per_s(config, image_shape[-1], args.step_steps)
  print(f"CLAE step: {step_rate:.1f} images/s", file=sys.stderr)
  print(json.dumps({"setting": args.setting, "batch": config.train.batch_size,
                    "image_size": config.data.image_size,
                    "pipeline_images_per_s": round(pipeline_rate, 1),
                    "step_images_per_s": round(step_rate, 2),
                    "pipeline_over_step": round(pipeline_rate / step_rate, 2)}))


if __name__ == "__main__":
  main()
