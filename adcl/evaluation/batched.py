"""Run a function over a whole dataset in batches of one fixed size: one compilation.

Every place that applies a model (or an attack, or a kNN vote) to a dataset goes through
`batched_apply`: the last batch is padded to the batch size and the padding cut from the
result, so each row is processed exactly once and the function sees one shape.
"""

from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
  """`array` ([n, ...], n <= rows) with zero rows appended up to `rows`."""
  return np.pad(array, ((0, rows - len(array)),) + ((0, 0),) * (array.ndim - 1))


def batched_apply(fn: Callable, arrays: Sequence[np.ndarray], batch_size: int,
                  sharding: Optional[NamedSharding] = None):
  """`fn(*batch)` over every batch of rows of `arrays`, results concatenated: [N, ...] leaves.

  Args:
    fn: maps one batch of each array ([batch_size, ...] each) to a pytree of [batch_size, ...].
    arrays: equal-length numpy arrays [N, ...], the same full arrays on every process.
    batch_size: rows per call (global); the last batch is zero-padded, its padding cut.
    sharding: a NamedSharding over the batch axis: each process passes its slice of every
      batch to a global array and the result is gathered to every host (multi-process
      evaluation embeds each image once). None: plain host arrays, one device.
  Returns:
    fn's pytree with its leaves concatenated over the batches, [N, ...] numpy arrays.
  """
  count = len(arrays[0])
  process_count, process_index = jax.process_count(), jax.process_index()
  local = batch_size // process_count
  outputs = []
  for start in range(0, count, batch_size):
    batch = [pad_rows(a[start:start + batch_size], batch_size) for a in arrays]
    if sharding is not None:
      batch = [jax.make_array_from_process_local_data(
          sharding, b[process_index * local:(process_index + 1) * local]) for b in batch]
    result = fn(*batch)
    outputs.append(multihost_utils.process_allgather(result, tiled=True)
                   if sharding is not None and process_count > 1
                   else jax.tree.map(np.asarray, result))
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:count], *outputs)
