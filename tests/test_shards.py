"""The on-disk format (adcl/data/shards.py) and its converter (python -m adcl.data.convert):
records equal their source, encoded bytes copied as they are, bad shards named in one line,
conversion memory independent of the source's size."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from adcl.data import convert, shards, sources
from conftest import REPO, cli_env


def write_image_folder(root, count_per_class: int, classes=("cat", "dog"), seed: int = 0,
                       sizes=((50, 38), (160, 120))) -> list:
  """root/train/<class>/<i>.jpg (and one PNG per class): images of alternating sizes."""
  rng = np.random.default_rng(seed)
  written = []
  for name in classes:
    folder = os.path.join(root, "train", name)
    os.makedirs(folder, exist_ok=True)
    for i in range(count_per_class):
      w, h = sizes[i % len(sizes)]
      pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
      path = os.path.join(folder, f"{i:05d}.{'png' if i == 0 else 'jpg'}")
      Image.fromarray(pixels).save(path)
      written.append(path)
  return written


def test_idx_round_trip_is_exact_and_in_source_order(idx_dir, tmp_path):
  manifest = convert.convert_split("idx", idx_dir, "train", str(tmp_path), records_per_shard=10)
  images, labels = sources.load_idx(idx_dir, "train")
  split = shards.Split(str(tmp_path), "train")
  assert len(split) == manifest["records"] == len(images)
  assert len(manifest["shards"]) == -(-len(images) // 10) and split.manifest["encoding"] == "raw"
  assert manifest["shape"] == list(images.shape[1:]) and manifest["channels"] == 1
  order = np.random.default_rng(0).permutation(len(images))  # Random access, any order.
  for i, (label, name, pixels) in zip(order, split.read(order)):
    assert label == labels[i] and name.endswith(f"train[{i}]")
    np.testing.assert_array_equal(split.decode(name, pixels, i), images[i])
  # A rewrite that fails half-way (a raw record of the wrong size) leaves no manifest.
  bad = [shards.Example(0, "a", bytes(144)), shards.Example(0, "b", bytes(3))]
  with pytest.raises(ValueError, match="b: 3 bytes of pixels, not 144"):
    shards.write_split(iter(bad), str(tmp_path), "train", "raw", ["0"], (12, 12, 1),
                        records_per_shard=1)
  with pytest.raises(FileNotFoundError, match="no manifest"):
    shards.Split(str(tmp_path), "train")
  manifest = convert.convert_split("idx", idx_dir, "train", str(tmp_path), records_per_shard=10)
  # The same source converted again: the same fingerprint; other data: another.
  again = convert.convert_split("idx", idx_dir, "train", str(tmp_path / "again"))
  assert again["fingerprint"] == manifest["fingerprint"]
  test = convert.convert_split("idx", idx_dir, "test", str(tmp_path))
  assert test["fingerprint"] != manifest["fingerprint"]


def test_folder_records_hold_the_files_bytes_unchanged(tmp_path):
  written = write_image_folder(tmp_path / "src", 5)
  manifest = convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"),
                                   records_per_shard=4)
  split = shards.Split(str(tmp_path / "ar"), "train")
  assert manifest["encoding"] == "encoded" and split.manifest["classes"] == ["cat", "dog"]
  got = split.read(range(len(split)))
  assert len(got) == len(written) == 10
  for (label, name, pixels), path in zip(got, sorted(written)):
    assert pixels == open(path, "rb").read()  # Copied, not re-encoded.
    assert name == os.path.relpath(path, tmp_path / "src")
    assert label == ["cat", "dog"].index(os.path.basename(os.path.dirname(path)))
    with Image.open(path) as image:
      np.testing.assert_array_equal(split.decode(name, pixels, 0),
                                    np.asarray(image.convert("RGB")))


def test_tfds_conversion_keeps_the_encoded_images(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    manifest = convert.convert_split("tfds", "", "train", str(tmp_path), "fashion_mnist")
  split = shards.Split(str(tmp_path), "train")
  label, name, pixels = split.read([3])[0]
  assert manifest["records"] == 6 and manifest["channels"] == 1 and 0 <= label < 10
  assert pixels.startswith(b"\x89PNG") and split.decode(name, pixels, 3).shape == (28, 28, 1)
  assert split.manifest["classes"][0] == "T-shirt/top"


def test_bad_shards_and_manifests_fail_in_one_line_naming_the_file(idx_dir, tmp_path):
  out = str(tmp_path / "ar")
  convert.convert_split("idx", idx_dir, "train", out, records_per_shard=16)
  shard = os.path.join(out, shards.shard_name("train", 1, 4))
  manifest_file = shards.manifest_path(out, "train")
  original = open(shard, "rb").read()

  def error_of():
    with pytest.raises((ValueError, OSError)) as caught:
      shards.Split(out, "train")
    message = str(caught.value)
    assert "\n" not in message
    return message

  open(shard, "wb").write(original[:len(original) // 2])
  assert error_of().startswith(f"{shard}: ") and "truncated" in error_of()
  os.remove(shard)
  assert error_of() == f"{shard}: shard missing (named by {manifest_file})"
  open(shard, "wb").write(original)
  manifest = json.load(open(manifest_file))
  manifest["records"] += 1
  json.dump(manifest, open(manifest_file, "w"))
  assert "its shards hold 64 records, not the 65 it names" in error_of()
  os.remove(manifest_file)  # As a conversion cut off before its manifest leaves it.
  assert error_of().startswith(f"{manifest_file}: no manifest (the folder holds")
  # An empty source writes nothing.
  os.makedirs(tmp_path / "empty" / "train" / "cat")
  with pytest.raises(ValueError, match="no images"):
    convert.convert_split("folder", str(tmp_path / "empty"), "train", str(tmp_path / "e"))
  assert not os.path.exists(tmp_path / "e")


def test_a_corrupt_image_is_named_by_record_and_file(tmp_path):
  write_image_folder(tmp_path / "src", 3)
  bad = tmp_path / "src" / "train" / "dog" / "00001.jpg"
  bad.write_bytes(bad.read_bytes()[:200])  # A JPEG cut short: its header and nothing else.
  convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"))
  split = shards.Split(str(tmp_path / "ar"), "train")
  label, name, pixels = split.read([4])[0]
  with pytest.raises(ValueError) as caught:
    split.decode(name, pixels, 4)
  assert str(caught.value).startswith(
      f"record 4 of {tmp_path / 'ar'}/train (train/dog/00001.jpg): not a readable image")


def test_the_command_converts_and_its_memory_does_not_grow_with_the_source(tmp_path):
  """Peak memory of `python -m adcl.data.convert` on folders of 40 and 400 JPEGs (about 2.5 and
  25 MB of files): within 5 MB of each other, so the files are streamed, not held."""
  peaks = {}
  for count in (20, 200):
    source = tmp_path / f"src{count}"
    write_image_folder(source, count, sizes=((500, 375), (200, 150)))
    script = ("import resource, runpy, sys\n"
              "sys.argv = ['convert'] + sys.argv[1:]\n"
              "try:\n  runpy.run_module('adcl.data.convert', run_name='__main__')\n"
              "finally:\n  print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    result = subprocess.run(
        [sys.executable, "-c", script, "--source=folder", f"--data_dir={source}",
         f"--out={tmp_path / f'ar{count}'}", "--splits=train", "--records_per_shard=16"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"train: {2 * count} images, {-(-2 * count // 16)} shards" in result.stdout
    peaks[count] = int(result.stdout.split("peak_kb")[-1]) / 1024
  source_mb = sum(f.stat().st_size for f in (tmp_path / "src200").rglob("*.jpg")) / 2**20
  assert source_mb > 20 and abs(peaks[200] - peaks[20]) < 5, (peaks, source_mb)


def test_a_class_list_converts_a_subset_such_as_imagenet100(tmp_path):
  write_image_folder(tmp_path / "src", 2, classes=("ant", "bee", "cat"))
  listing = tmp_path / "classes.txt"
  listing.write_text("# two of three\ncat\nant\n")
  only = convert.read_class_list(str(listing))
  manifest = convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "ar"),
                                   only=only)
  split = shards.Split(str(tmp_path / "ar"), "train")
  assert manifest["classes"] == ["ant", "cat"] and manifest["records"] == 4
  assert [(label, name.split("/")[1]) for label, name, _ in split.read(range(4))] == [
      (0, "ant"), (0, "ant"), (1, "cat"), (1, "cat")]
  listing.write_text("cat dog\n")
  with pytest.raises(ValueError, match=r"no folder for class 'dog' \(1 of the 2 classes"):
    convert.convert_split("folder", str(tmp_path / "src"), "train", str(tmp_path / "x"),
                          only=convert.read_class_list(str(listing)))
  imagenet100 = convert.read_class_list(os.path.join(REPO, "configs", "imagenet100_classes.txt"))
  assert len(set(imagenet100)) == 100 and all(n.startswith("n") and len(n) == 9
                                              for n in imagenet100)
