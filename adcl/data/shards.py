"""adcl's on-disk dataset format: ArrayRecord shards of one split, with a manifest.

A split converted by `python -m adcl.data.convert` is a folder holding

    SPLIT-00000-of-000NN.array_record ...   the records, in source order
    SPLIT.manifest.json                     what the shards hold, written last

ArrayRecord (the `array_record` package, also TFDS's random-access format) gives O(1) reads of
any record by index, which is what lets a loader build step t's batch from (seed, t) alone
without holding the split in memory. Shards are written with `group_size:1`, the option for
random access (each record its own chunk), and uncompressed when they hold JPEG/PNG bytes
(writer_options).

A record is one image: its label, the name of the file it came from (for error messages), and
its pixels. `encoding` in the manifest says what the pixels are: 'encoded' (the source's own
JPEG/PNG/... bytes, copied and never re-encoded; images may differ in size) or 'raw' (uint8
[H, W, C] of the manifest's `shape`, for sources stored as pixels: IDX, NPZ). `channels` (1 or
3) is what every image decodes to: ImageNet's few grayscale and CMYK JPEGs become RGB.

The manifest's `fingerprint` is a SHA-256 over every record's bytes in order; a checkpoint that
keeps it can refuse to resume on other data. The manifest is written only once every shard is
closed, so a conversion that was cut off leaves no manifest and is not mistaken for data.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import struct
from typing import Iterable, Optional, Sequence

import numpy as np

FORMAT = "adcl-records"
VERSION = 1
ENCODINGS = ("encoded", "raw")
# Each shard holds at most this many records by default: ImageNet's 1.28M images in ~1,250
# shards of ~110 MB, and more shards than hosts for any pod slice.
RECORDS_PER_SHARD = 1024
_HEADER = struct.Struct("<iH")  # label (int32), length of the file name in bytes (uint16)


def encode_record(label: int, name: str, pixels: bytes) -> bytes:
  """One record's bytes: label, source file name (may be ''), pixels."""
  name_bytes = name.encode("utf-8")[:65535]
  return _HEADER.pack(label, len(name_bytes)) + name_bytes + pixels


def decode_record(record: bytes) -> tuple[int, str, bytes]:
  """(label, source file name, pixels) of one record's bytes."""
  label, name_length = _HEADER.unpack_from(record)
  start = _HEADER.size + name_length
  return label, record[_HEADER.size:start].decode("utf-8"), record[start:]


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def manifest_path(directory: str, split: str) -> str:
  return os.path.join(directory, f"{split}.manifest.json")


@dataclasses.dataclass
class Example:
  """One record to write: its label, source file name ('' if none) and pixel bytes."""
  label: int
  name: str
  pixels: bytes


def writer_options(encoding: str) -> str:
  """ArrayRecord's options for a split's shards: one record per chunk (random access reads
  only its record), compressed (zstd, ArrayRecord's default) for raw pixels, which shrink,
  and not for JPEG/PNG bytes, which do not and whose decompression would cost a reader as much
  as a memory copy of them (twice the read time of 690 KB records)."""
  return "group_size:1" + (",uncompressed" if encoding == "encoded" else "")


def write_split(examples: Iterable[Example], directory: str, split: str, encoding: str,
                classes: Sequence[str], shape: Optional[Sequence[int]] = None,
                channels: int = 3, records_per_shard: int = RECORDS_PER_SHARD,
                progress=None) -> dict:
  """Write `examples` as the shards of `split` in `directory`, then its manifest; returns the
  manifest. Streams: one shard is open at a time and nothing else is kept. `shape` ([H, W, C])
  is required for encoding 'raw' (and sets the channels); `channels` is what encoded images
  decode to. `progress(records written)` is called after each shard."""
  from array_record.python.array_record_module import ArrayRecordWriter

  if encoding not in ENCODINGS:
    raise ValueError(f"encoding {encoding!r}; choose one of {ENCODINGS}")
  if encoding == "raw" and not shape:
    raise ValueError("encoding 'raw' needs the images' shape [H, W, C]")
  channels = int(shape[-1]) if shape else channels
  if channels not in (1, 3):
    raise ValueError(f"images of {channels} channels; adcl reads 1 (grey) or 3 (RGB)")
  os.makedirs(directory, exist_ok=True)
  # A split written again: its old manifest goes first, so a rewrite cut off half-way leaves
  # no manifest rather than one naming shards that have changed.
  if os.path.exists(manifest_path(directory, split)):
    os.remove(manifest_path(directory, split))
  fingerprint = hashlib.sha256()
  counts, writer, count, raw_size = [], None, 0, int(np.prod(shape)) if shape else 0
  for example in examples:
    if encoding == "raw" and len(example.pixels) != raw_size:
      raise ValueError(f"{example.name or 'record ' + str(sum(counts) + count)}: "
                       f"{len(example.pixels)} bytes of pixels, not {raw_size} ({list(shape)})")
    if writer is None:
      writer = ArrayRecordWriter(os.path.join(directory, f"{split}.part-{len(counts):05d}"),
                                 writer_options(encoding))
    record = encode_record(example.label, example.name, example.pixels)
    fingerprint.update(struct.pack("<I", len(record)) + record)
    writer.write(record)
    count += 1
    if count == records_per_shard:
      writer.close()
      counts.append(count)
      writer, count = None, 0
      if progress:
        progress(sum(counts))
  if writer is not None:
    writer.close()
    counts.append(count)
  if not counts:
    raise ValueError(f"{split}: the source holds no images")
  # Shards get their final names once their number is known.
  shards = []
  for index, records in enumerate(counts):
    name = shard_name(split, index, len(counts))
    os.replace(os.path.join(directory, f"{split}.part-{index:05d}"), os.path.join(directory, name))
    shards.append({"file": name, "records": records,
                   "bytes": os.path.getsize(os.path.join(directory, name))})
  manifest = {"format": FORMAT, "version": VERSION, "split": split, "records": sum(counts),
              "encoding": encoding, "shape": list(map(int, shape)) if shape else None,
              "channels": channels,
              "classes": list(classes), "shards": shards,
              "fingerprint": fingerprint.hexdigest()}
  path = manifest_path(directory, split)
  with open(path + ".tmp", "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(path + ".tmp", path)
  return manifest


def read_manifest(directory: str, split: str) -> dict:
  """The manifest of `split`, checked against its shards (each present, of the size and record
  count it names); every problem is a ValueError of one line naming the file."""
  path = manifest_path(directory, split)
  if not os.path.exists(path):
    found = sorted(f for f in os.listdir(directory)
                   if f.startswith((f"{split}-", f"{split}.part-")))[:2] if (
        os.path.isdir(directory)) else []
    raise FileNotFoundError(
        f"{path}: no manifest" + (f" (the folder holds {found}...: a conversion that did not "
                                  "finish? run it again)" if found else
                                  "; make one with python -m adcl.data.convert"))
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"{path}: not a readable manifest ({error})") from None
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise ValueError(f"{path}: not an {FORMAT} manifest of version {VERSION}")
  if manifest["encoding"] not in ENCODINGS:
    raise ValueError(f"{path}: encoding {manifest['encoding']!r} is none of {ENCODINGS}")
  if not manifest["shards"] or manifest["records"] == 0:
    raise ValueError(f"{path}: the split holds no records")
  if sum(s["records"] for s in manifest["shards"]) != manifest["records"]:
    raise ValueError(f"{path}: its shards hold {sum(s['records'] for s in manifest['shards'])} "
                     f"records, not the {manifest['records']} it names")
  for shard in manifest["shards"]:
    shard_path = os.path.join(directory, shard["file"])
    if not os.path.exists(shard_path):
      raise FileNotFoundError(f"{shard_path}: shard missing (named by {path})")
    size = os.path.getsize(shard_path)
    if size != shard["bytes"]:
      raise ValueError(f"{shard_path}: {size} bytes, but {path} names {shard['bytes']} "
                       "(truncated or rewritten)")
  return manifest


class Split:
  """Random access to the records of one converted split: `len(split)`, `split.read(indices)`
  -> [(label, name, pixels bytes)], and its checked `manifest`."""

  def __init__(self, directory: str, split: str):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    self.directory, self.split = directory, split
    self.manifest = read_manifest(directory, split)
    paths = [os.path.join(directory, s["file"]) for s in self.manifest["shards"]]
    self._source = ArrayRecordDataSource(paths)
    if len(self._source) != self.manifest["records"]:
      raise ValueError(f"{manifest_path(directory, split)}: names {self.manifest['records']} "
                       f"records but its shards hold {len(self._source)}")

  def __len__(self) -> int:
    return self.manifest["records"]

  def read(self, indices: Sequence[int]) -> list:
    """[(label, source file name, pixels bytes)] of the records at `indices`, in that order."""
    return [decode_record(r) for r in self._source.__getitems__(list(map(int, indices)))]

  def decode(self, name: str, pixels: bytes, index: int) -> np.ndarray:
    """uint8 [H, W, C] pixels of one record, C the manifest's channels; a record that does not
    decode is a ValueError naming its index, split and source file."""
    if self.manifest["encoding"] == "raw":
      return np.frombuffer(pixels, np.uint8).reshape(self.manifest["shape"])
    with self._naming(name, index):
      from PIL import Image

      with Image.open(io.BytesIO(pixels)) as image:
        grey = self.manifest["channels"] == 1
        pixels = np.asarray(image.convert("L" if grey else "RGB"), np.uint8)
        return pixels[..., None] if grey else pixels

  def crops(self, name: str, pixels: bytes, index: int, rng: np.random.Generator, views: int,
            size: int, scale: Sequence[float], out=None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [views, 2 * size, 2 * size, C] regions, int32 [views, 2] their sizes): the
    RandomResizedCrops of one encoded record from one decode, for the device to resize
    (adcl.data.decode_crop.decode_crops, `out` as there); errors as `decode`'s."""
    from adcl.data import decode_crop

    with self._naming(name, index):
      return decode_crop.decode_crops(pixels, rng, views, size, scale, self.manifest["channels"],
                                      out=out)

  def eval_image(self, name: str, pixels: bytes, index: int, size: int) -> np.ndarray:
    """uint8 [H, W, C] un-augmented image of one record for evaluation: raw pixels as they
    are (normalize.eval_images resizes them), encoded ones decoded to their centre crop at
    `size` (decode_crop.decode_center); errors as `decode`'s."""
    if self.manifest["encoding"] == "raw":
      return self.decode(name, pixels, index)
    from adcl.data import decode_crop

    with self._naming(name, index):
      return decode_crop.decode_center(pixels, size, self.manifest["channels"])

  @contextlib.contextmanager
  def _naming(self, name: str, index: int):
    from PIL import UnidentifiedImageError

    try:
      yield
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
      raise ValueError(f"record {index} of {self.directory}/{self.split} ({name or 'no file'}): "
                       f"not a readable image ({error})") from None
