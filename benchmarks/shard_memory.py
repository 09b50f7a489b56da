"""Memory an open ArrayRecord shard keeps in a reading process, by record size.

    python benchmarks/shard_memory.py                 # 100 KB records (ImageNet's), 1,024 a shard
    python benchmarks/shard_memory.py --record-kb 3,100 --records 256   # by record size

For each `--record-kb`, writes the larger of `--shards` shards of `--records` incompressible
records each (adcl.data.shards, as the converter does), and a second manifest naming only the
first (smaller count) of them. A fresh process per (size, count) reads its split through
adcl.data.shards_lib.Split as training does (batches of random indices) and reads its anonymous
resident memory (RssAnon: the heap, not the page cache of the files) after opening, after one
batch that touches every shard, and after `--batches` more. What one more shard costs is the
difference between the two counts over the difference of shards, so the reader's fixed cost
(thread pools, imports) drops out. Last line: one JSON object. What it is for: a split's
memory in each reading process grows with its shard count (ImageNet-1k: 1,252 shards of 1,024
records), so this sizes `records_per_shard` and the workers. Disk: the larger count's shards.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np


def rss_anon_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def write_shards(directory: str, counts: list, records: int, record_bytes: int) -> None:
  """Split 'train' of max(counts) shards, and 'first{count}' naming the first `count` of them
  for each count."""
  from adcl.data import shards as shards_lib

  rng = np.random.default_rng(0)
  examples = (shards_lib.Example(0, "", rng.bytes(record_bytes))
              for _ in range(max(counts) * records))
  manifest = shards_lib.write_split(examples, directory, "train", "encoded", classes=["all"],
                                     records_per_shard=records)
  for count in counts:
    subset = dict(manifest, split=f"first{count}", shards=manifest["shards"][:count],
                  records=count * records)
    with open(shards_lib.manifest_path(directory, f"first{count}"), "w") as f:
      json.dump(subset, f)


def measure(directory: str, split_name: str, batches: int, batch: int) -> dict:
  """Anonymous RSS (MB) of this process before and after opening and reading the split."""
  from adcl.data import shards as shards_lib

  before = rss_anon_mb()
  split = shards_lib.Split(directory, split_name)
  opened = rss_anon_mb()
  shards = len(split.manifest["shards"])
  per_shard = split.manifest["shards"][0]["records"]
  split.read([s * per_shard for s in range(shards)])  # One record of every shard.
  touched = rss_anon_mb()
  rng = np.random.default_rng(0)
  for _ in range(batches):
    split.read(rng.integers(0, len(split), batch))
  return {"shards": shards, "before_mb": before, "opened_mb": opened, "touched_mb": touched,
          "read_mb": rss_anon_mb()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--record-kb", default="100", help="record sizes in KB, comma-separated")
  parser.add_argument("--shards", default="10,40", help="two shard counts, comma-separated")
  parser.add_argument("--records", type=int, default=1024, help="records per shard")
  parser.add_argument("--batches", type=int, default=100)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # A child: folder, split.
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(measure(*args.measure, args.batches, args.batch)))
    return
  counts = sorted(int(c) for c in args.shards.split(","))
  if len(counts) != 2 or counts[0] < 1 or counts[0] == counts[1]:
    raise SystemExit(f"--shards {args.shards!r}: expected two different counts, e.g. 10,40")
  result = {"shards": counts, "records_per_shard": args.records, "batches": args.batches,
            "batch": args.batch, "mb": {}, "mb_per_shard": {}}
  for kb in [float(k) for k in args.record_kb.split(",")]:
    with tempfile.TemporaryDirectory() as directory:
      write_shards(directory, counts, args.records, int(kb * 1024))
      grew = {}
      for count in counts:
        child = subprocess.run([sys.executable, __file__, "--measure", directory,
                                f"first{count}", "--batches", str(args.batches), "--batch",
                                str(args.batch)], capture_output=True, text=True, check=True)
        m = json.loads(child.stdout.strip().splitlines()[-1])
        grew[count] = {point: round(m[f"{point}_mb"] - m["before_mb"], 1)
                       for point in ("opened", "touched", "read")}
    per_shard = {point: round((grew[counts[1]][point] - grew[counts[0]][point]) /
                              (counts[1] - counts[0]), 3) for point in grew[counts[0]]}
    result["mb"][f"{kb:g}"], result["mb_per_shard"][f"{kb:g}"] = grew, per_shard
    print(f"{kb:g} KB records, {args.records} a shard: {grew} MB grown at {counts} shards; "
          f"one more shard: {per_shard['opened']:.3f} MB opened, {per_shard['touched']:.3f} "
          f"after one read each, {per_shard['read']:.3f} after {args.batches} batches of "
          f"{args.batch}", file=sys.stderr)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
