"""Step batches read from converted shards (adcl/data/shards.py) with Grain, in bounded memory.

The batch of step t is the data order's (adcl/data/order.py), as for sources read whole: a
function of (seed, t) alone, each process reading only its rows of each global batch. So
resuming at any step, on any number of processes, needs no iterator state, and any number of
shards serves any number of hosts.

One Grain element is one step's local batch: the records of a batch are read in one call and
decoded in one place, which keeps Grain's per-element overhead out of the per-image cost.
Worker processes (started by spawn) each make whole batches; the order of batches does not
depend on their number.

What a batch holds: records of raw pixels (converted IDX / NPZ) whole, stacked as uint8, for
the device views to crop; records of encoded JPEG/PNG as two crop regions per image, decoded
once and only as far as the crops need and at most twice the training size a side
(adcl/data/decode_crop.py), for the device to resize and to do the rest of the views.
"""

import concurrent.futures
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from adcl.data import decode_crop, order, shards

VIEWS = 2  # Crops per encoded image: the two views of the contrastive pair.


def usable_cores() -> int:
  """The cores this process may run on: its CPU affinity where the system has one (Linux),
  else every core (macOS has no sched_getaffinity)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


class StepBatches:
  """step -> this process's batch of that step: {'labels': int32 [B / P], 'indices': int64
  [B / P] (the records read), and 'images': uint8 [B / P, H, W, C] for raw records, or for
  encoded ones 'crops': uint8 [B / P, 2, 2 * size, 2 * size, C], each image's two crop regions
  (adcl.data.decode_crop.decode_crops), and 'crop_sizes': int32 [B / P, 2, 2]}. Picklable
  (Grain's workers get a copy and open the shards themselves).

  `crop` (size, (min, max) area fraction) is required for encoded records. `threads` decode a
  batch's encoded images side by side (0: one per core this process may run on): Pillow and
  numpy release Python's lock while they decode and copy, so they scale with the cores, and
  a batch is still the same bytes."""

  def __init__(self, directory: str, split: str, seed: int, global_batch: int,
               process_index: int = 0, process_count: int = 1,
               crop: Optional[tuple[int, Sequence[float]]] = None, threads: int = 1):
    if global_batch % process_count:
      raise ValueError(f"config.train.batch_size={global_batch} is not a multiple of the "
                       f"{process_count} processes")
    self.directory, self.split, self.seed = directory, split, seed
    self.global_batch = global_batch
    local = global_batch // process_count
    self.rows = range(process_index * local, (process_index + 1) * local)
    self._records = None
    self.threads = threads or usable_cores()
    self._pool = self._decode_threads()
    manifest = shards.read_manifest(directory, split)  # Fails here, before any step runs.
    self.encoded, self.crop = manifest["encoding"] == "encoded", crop
    if self.encoded and not crop:
      raise ValueError(f"{shards.manifest_path(directory, split)}: encoded images are cropped "
                       "on the host; give the crop (size, scale)")
    self.num_records = manifest["records"]
    order.steps_per_epoch(self.num_records, global_batch)  # A batch larger than the split.

  def _decode_threads(self) -> Optional[concurrent.futures.ThreadPoolExecutor]:
    """One pool for every batch of this process (Grain's threads make two at a time)."""
    return concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None

  def __getstate__(self):
    # Each process opens its own readers and threads.
    return {**self.__dict__, "_records": None, "_pool": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._pool = self._decode_threads()

  def __call__(self, step: int) -> dict:
    if self._records is None:
      self._records = shards.Split(self.directory, self.split)
    indices = order.batch_indices(self.seed, int(step), self.global_batch, self.num_records,
                                  self.rows)
    read = self._records.read(indices)
    batch = {"labels": np.array([r[0] for r in read], np.int32), "indices": indices}
    if self.encoded:
      size, scale = self.crop
      channels = self._records.manifest["channels"]
      batch["crops"] = np.zeros((len(read), VIEWS, 2 * size, 2 * size, channels), np.uint8)
      batch["crop_sizes"] = np.zeros((len(read), VIEWS, 2), np.int32)

      def crop(k, row, i, name, pixels):  # Image k of the batch, into its own rows.
        self._records.crops(name, pixels, int(i), decode_crop.view_generator(
            self.seed, int(step), row), VIEWS, size, scale,
            out=(batch["crops"][k], batch["crop_sizes"][k]))

      jobs = [(k, row, i, name, pixels)
              for k, (row, i, (_, name, pixels)) in enumerate(zip(self.rows, indices, read))]
      run = map if self._pool is None else self._pool.map  # Both raise what a decode raised.
      list(run(lambda job: crop(*job), jobs))
    else:
      batch["images"] = np.stack([self._records.decode(name, pixels, int(i))
                                  for i, (_, name, pixels) in zip(indices, read)])
    return batch


def step_batches(batches: StepBatches, start_step: int, num_steps: int, workers: int = 0,
                 prefetch: int = 2) -> Iterator[dict]:
  """The batches of steps [start_step, num_steps) in order, made `prefetch` at a time ahead of
  their use, in this process or, with `workers`, in each of that many Grain worker processes
  (each batch's images decoded by `batches.threads` threads)."""
  import grain.python as grain

  dataset = grain.MapDataset.range(start_step, num_steps).map(batches)
  read_options = grain.ReadOptions(num_threads=max(1, prefetch), prefetch_buffer_size=prefetch)
  stream = dataset.to_iter_dataset(read_options)
  if workers:
    use_grain_flag_defaults()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(stream)


def use_grain_flag_defaults() -> None:
  """Grain's worker processes read Grain's absl flags, which outside an absl program (a
  notebook, a test) are unparsed: each of Grain's own flags is marked as given (at its
  default, unless set) so that they read; every other flag, and whether the program's flags
  are parsed, is left as it was."""
  from absl import flags

  if flags.FLAGS.is_parsed():
    return
  for name in list(flags.FLAGS):
    if name.startswith("grain_"):
      flags.FLAGS[name].present = True


def train_batches(config, start_step: int, num_steps: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """data.source 'records': this process's part of the batches of steps [start_step,
  num_steps) for the device views, as adcl.data.memory.train_images is for in-memory data:
  {'images'} uint8 [B / P, H, W, C] of raw records or {'crops', 'crop_sizes'} of encoded ones
  (StepBatches'), made ahead of the step, each by data.threads threads (in data.workers Grain
  worker processes, if any)."""
  data = config.data
  batches = StepBatches(data.data_dir, data.train_split, config.seed, config.train.batch_size,
                        process_index, process_count,
                        crop=(data.image_size, tuple(data.views.crop_scale)),
                        threads=data.threads)
  for batch in step_batches(batches, start_step, num_steps, workers=data.workers):
    yield {key: batch[key] for key in ("images", "crops", "crop_sizes") if key in batch}


class EvalSplit:
  """A split of records as evaluation reads it (adcl.evaluation.splits' interface), at
  `size` px: never whole unless asked (`head`); its fingerprint is the manifest's."""

  in_memory = False
  HEAD_CHUNK = 1024  # Records read at a time by `head`.

  def __init__(self, directory: str, split: str, size: int):
    self.directory, self.split, self.size = directory, split, size
    manifest = shards.read_manifest(directory, split)  # Fails now, not mid-evaluation.
    self.fingerprint, self.records = manifest["fingerprint"], manifest["records"]
    self.channels = manifest["channels"]

  def __len__(self) -> int:
    return self.records

  def chunks(self, rows: int, limit: Optional[int] = None
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The first `limit` records (default: all) once, in order, `rows` at a time: (uint8
    [n, H, W, C] images (shards.Split.eval_image), int32 [n] labels), n <= rows. Memory is one
    chunk's, whatever the split's size."""
    source = shards.Split(self.directory, self.split)
    end = len(source) if limit is None else min(limit, len(source))
    for start in range(0, end, rows):
      indices = range(start, min(start + rows, end))
      read = source.read(indices)
      images = np.stack([source.eval_image(name, pixels, i, self.size)
                         for i, (_, name, pixels) in zip(indices, read)])
      yield images, np.array([label for label, _, _ in read], np.int32)

  def head(self, count: int) -> tuple[np.ndarray, np.ndarray]:
    parts = list(self.chunks(self.HEAD_CHUNK, count))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
