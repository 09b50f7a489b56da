"""`python -m adcl.data.convert --source folder|idx|npz|tfds --data_dir DIR --out OUT`.

Writes each split of a source as ArrayRecord shards with a manifest (adcl/data/shards.py), in
bounded memory: an image folder or a TFDS dataset is read one image at a time, and its JPEG/PNG
bytes are copied as they are (never decoded or re-encoded), so ImageNet converts at the speed
of the disk. IDX and NPZ sources are pixel arrays and become 'raw' records of their shape;
they are small by nature and are read whole.

    python -m adcl.data.convert --source folder --data_dir ~/imagenet --out ~/imagenet100_ar \\
        --splits train,val --classes configs/imagenet100_classes.txt     # ImageNet-100
    python -m adcl.data.convert --source idx --data_dir /usr/share/datasets/fashion-mnist \\
        --out fmnist_ar
    python -m adcl.data.convert --source tfds --name imagenette/320px --out imagenette_ar \\
        --splits train,validation

Progress goes to the log after each shard; a conversion that is stopped leaves no manifest for
the split it was writing (rerun it), and the splits finished before it stay valid.
"""

import os
import time
from typing import Iterator, Optional, Sequence

import numpy as np
from absl import flags, logging

from adcl import cli, errors
from adcl.data import shards, sources

SOURCES = ("folder", "idx", "npz", "tfds")


def folder_examples(directory: str, split: str, only: Optional[Sequence[str]] = None
                    ) -> tuple[Iterator[shards.Example], list, int]:
  """(examples, class names, count) of an image folder's split (sources.folder_listing's
  layouts, restricted to the classes `only` if given); each example holds its file's bytes,
  read when the iterator reaches it."""
  paths, labels, classes = sources.folder_listing(directory, split, only)

  def examples():
    for path, label in zip(paths, labels):
      with open(path, "rb") as f:
        yield shards.Example(label, os.path.relpath(path, directory), f.read())

  return examples(), classes, len(paths)


def array_examples(images: np.ndarray, labels: np.ndarray,
                   name: str) -> Iterator[shards.Example]:
  """'raw' examples of uint8 [N, H, W, C] images, named 'NAME[i]'."""
  for i, (image, label) in enumerate(zip(images, labels)):
    yield shards.Example(int(label), f"{name}[{i}]", np.ascontiguousarray(image).tobytes())


def tfds_examples(name: str, split: str, data_dir: Optional[str]
                  ) -> tuple[Iterator[shards.Example], list, Optional[int], int]:
  """(examples, class names, count or None, channels) of a TFDS split, its images' encoded
  bytes as stored."""
  errors.import_tensorflow("--source=tfds")
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir or None)
  image_key, label_key = builder.info.supervised_keys
  dataset = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
  try:
    count = builder.info.splits[split].num_examples
  except KeyError:  # Split sizes unknown (e.g. tfds.testing.mock_data): progress without a total.
    count = None
  classes = list(builder.info.features[label_key].names)
  channels = builder.info.features[image_key].shape[-1] or 3

  def examples():
    for i, example in enumerate(tfds.as_numpy(dataset)):
      yield shards.Example(int(example[label_key]), f"{name}/{split}[{i}]",
                            bytes(example[image_key]))

  return examples(), classes, count, channels


def read_class_list(path: str) -> list:
  """The class names of a file, one per line or separated by spaces ('#' starts a comment)."""
  try:
    with open(path) as f:
      names = [n for line in f for n in line.split("#")[0].split()]
  except OSError as error:
    raise OSError(f"--classes: {path}: {error.strerror or error}") from None
  if not names:
    raise ValueError(f"--classes: {path} names no class")
  return names


def convert_split(source: str, data_dir: str, split: str, out: str, name: str = "",
                  records_per_shard: int = shards.RECORDS_PER_SHARD,
                  only: Optional[Sequence[str]] = None) -> dict:
  """Convert one split (of an image folder, only the classes `only` if given); returns its
  manifest."""
  if only is not None and source != "folder":
    raise errors.UsageError("--classes selects the class folders of --source=folder")
  shape, channels = None, 3
  if source == "folder":
    examples, classes, count = folder_examples(data_dir, split, only)
    encoding = "encoded"
  elif source == "tfds":
    examples, classes, count, channels = tfds_examples(name, split, data_dir)
    encoding = "encoded"
  elif source in ("idx", "npz"):
    if source == "idx":
      images, labels = sources.load_idx(data_dir, split)
      where = os.path.join(data_dir, split)
    else:
      where = os.path.join(data_dir, f"{split}.npz")
      images, labels = sources.load_npz(where)
    examples, count = array_examples(images, labels, where), len(images)
    encoding, shape = "raw", images.shape[1:]
    classes = [str(c) for c in range(int(labels.max()) + 1)] if len(labels) else []
  else:
    raise errors.UsageError(f"--source={source!r}; choose one of {', '.join(SOURCES)}")
  started = time.monotonic()

  def progress(done):
    rate = done / max(time.monotonic() - started, 1e-9)
    left = (", " + time.strftime("%H:%M:%S", time.gmtime((count - done) / max(rate, 1e-9)))
            + " left") if count else ""
    logging.info("%s: %d / %s images (%.0f images/s%s)", split, done, count or "?", rate, left)

  manifest = shards.write_split(examples, out, split, encoding, classes, shape, channels,
                                 records_per_shard, progress)
  logging.info("%s: %d images in %d shards, %.1f MB, in %s", split, manifest["records"],
               len(manifest["shards"]), sum(s["bytes"] for s in manifest["shards"]) / 1e6, out)
  return manifest


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  if f.source != "tfds" and not f.data_dir:
    raise errors.UsageError(f"--source={f.source} needs --data_dir")
  if f.source == "tfds" and not f.name:
    raise errors.UsageError("--source=tfds needs --name (a TFDS dataset name)")
  only = read_class_list(f.classes) if f.classes else None
  for split in filter(None, (s.strip() for s in f.splits.split(","))):
    manifest = convert_split(f.source, f.data_dir, split, f.out, f.name, f.records_per_shard,
                             only)
    print(f"{split}: {manifest['records']} images, {len(manifest['shards'])} shards -> "
          f"{shards.manifest_path(f.out, split)}")


def define_flags(flag_values=None) -> None:
  """The command's flags, on `flag_values` (default: absl's global FLAGS)."""
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_enum("source", None, SOURCES, "Where the images are.", required=True,
                    flag_values=fv)
  flags.DEFINE_string("data_dir", "", "The source's folder (for tfds: TFDS's data_dir).",
                      flag_values=fv)
  flags.DEFINE_string("name", "", "TFDS dataset name (--source=tfds).", flag_values=fv)
  flags.DEFINE_string("out", None, "Folder to write the shards and manifests to.",
                      required=True, flag_values=fv)
  flags.DEFINE_string("splits", "train,test", "Comma-separated splits to convert.",
                      flag_values=fv)
  flags.DEFINE_integer("records_per_shard", shards.RECORDS_PER_SHARD,
                       "Images per shard.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("classes", "", "A file of class folder names to keep (--source=folder), "
                      "e.g. configs/imagenet100_classes.txt for ImageNet-100.", flag_values=fv)


if __name__ == "__main__":
  define_flags()
  cli.run(main, "adcl.data.convert")
