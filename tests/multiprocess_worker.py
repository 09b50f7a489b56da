"""One of several local processes of tests/test_multiprocess.py (gloo CPU collectives).

argv: process_id num_processes port result_path. Each process has 2 CPU devices.
"""

import json
import os
import sys

process_id, num_processes, port, result_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +  # The test's, then 2 devices.
                          " --xla_force_host_platform_device_count=2")

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=num_processes, process_id=process_id)

import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from adcl import step as step_lib
from adcl.evaluation import protocol

mesh = step_lib.data_mesh()
sharding = NamedSharding(mesh, P("data"))

# Evaluation: 37 test images in batches of 8 (the last one padded): every process runs the same
# 5 batches, and the gathered features hold each image exactly once, in order.
images = np.arange(37 * 4, dtype=np.float32).reshape(37, 2, 2, 1)
image_ids = jax.jit(lambda params, stats, x: x.reshape(x.shape[0], -1)[:, :1] / 4 + 0 * params,
                    out_shardings=sharding)
features = protocol.embed(image_ids, {"params": jnp.zeros(()), "batch_stats": None}, images, 8,
                          mesh)

# Training batches: each process's slice becomes one global array sharded over all devices.
local = np.full((4, 3), float(process_id), np.float32)
global_batch = jax.make_array_from_process_local_data(sharding, local)
gathered = multihost_utils.process_allgather(global_batch, tiled=True)

# Device views (adcl/data/views.py) of a global batch whose rows come from both processes.
from test_views import VIEW_IMAGES, draw_views  # noqa: E402  (after jax.distributed)

rows = slice(process_id * 4, process_id * 4 + 4)
view_images = jax.make_array_from_process_local_data(sharding, VIEW_IMAGES[rows])
views = multihost_utils.process_allgather(draw_views(view_images, sharding), tiled=True)

with open(result_path, "w") as f:
  json.dump({"process_count": jax.process_count(), "device_count": jax.device_count(),
             "image_ids": features[:, 0].tolist(), "global_shape": list(global_batch.shape),
             "rows_by_process": gathered[:, 0].tolist(), "views": np.asarray(views).tolist()}, f)
