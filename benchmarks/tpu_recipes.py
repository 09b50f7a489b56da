"""Every recipe in configs/ compiled for TPU slices (adcl.compile, no TPU needed): whether it
fits, per-chip HBM, FLOPs, the step-time bound and the largest batch that fits.

    python benchmarks/tpu_recipes.py                       # all recipes x v4-8 v4-32 v5e-8 v6e-8
    python benchmarks/tpu_recipes.py --recipes configs/cifar10_simclr.py:clae --slices v4-8

Appends one JSON line per compile to --records (resumable: a line already there is not
compiled again) and writes the tables of --markdown from every line there. Compiles are the
preflight's quick ones (adcl.compile.QUICK_OPTIONS). libtpu can kill the process while it
compiles: the compile under way is announced in RECORDS.inflight, and the next run records it
as a crash and goes on (`until python benchmarks/tpu_recipes.py; do :; done` runs it through).
A largest-batch search keeps each compile's answer there as it comes, and a run stopped in it
(by a crash or by hand) goes on from them; it is a crash only if it dies again before its next
answer.

What is compiled, and why so few compiles answer for all of it:
- Each recipe at its own global batch on each slice.
- The largest batch (`adcl.compile.max_batch`) of each CLAE recipe once per chip generation,
  on its smallest slice here: with the batch split over chips, what one chip holds depends on
  its share of the batch, not on the slice (the gradient's all-reduce adds buffers of the size
  of the parameters, which the state already has). v4-32's is v4-8's per-chip batch x 16,
  confirmed by one compile there (a failure there is searched again). A baseline fits wherever
  its CLAE recipe fits, with room to spare (the attack adds a forward and a backward pass).
- A recipe whose step is the same program as one compiled already (the same HLO but for
  constants: CIFAR-100 as CIFAR-10, ImageNet-1k as ImageNet-100) takes that one's figures; the
  table says so.
"""

import argparse
import functools
import hashlib
import json
import os
import re
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from adcl import tpu

say = functools.partial(print, flush=True)
SLICES = ("v4-8", "v4-32", "v5e-8", "v6e-8")
PAPER = [f"configs/{data}_{method}.py:{variant}"
         for data in ("cifar10", "cifar100", "tiny_imagenet")
         for method in ("plain", "uel", "simclr") for variant in ("clae", "baseline")]
RECIPES = (["configs/quickstart.py"] + PAPER
           + [f"configs/{name}_simclr.py:{variant}" for name in ("imagenet100", "imagenet1k")
              for variant in ("clae", "baseline")])
# The order of the work (the table keeps RECIPES' order): the recipes the docs launch first, so
# that a run stopped early has answered them.
FIRST = ("configs/imagenet100_simclr.py:clae", "configs/cifar10_simclr.py:clae")
# Not searched for a largest batch: the CPU quickstart (its 20 px step fits any batch a TPU
# user would give it) and the baselines (see above).
NO_MAX_BATCH = ("configs/quickstart.py",)
# The searches stop once the largest batch is known to within this fraction: a survey of ~20
# searches at a minute or more a compile, where the last few percent would double the compiles.
RESOLUTION = 1 / 16


def load(recipe: str):
  from adcl.study import spec
  return spec.load_config_file(recipe)


def fingerprint(config, tpu_slice) -> str:
  """The lowered step's text with its literal values masked: equal for two configs whose
  steps differ only in constants (normalisation, learning rate, epochs)."""
  from adcl import build, compile as preflight, step

  config = config.copy_and_resolve_references()
  shape, encoded = preflight.source_shape(config)
  size = config.data.image_size
  mesh = step.data_mesh(tpu.devices(tpu_slice))
  trainer = build.trainer(config, (size, size, shape[-1]), 100, 1000, mesh=mesh)
  batch = build.step_batch_shapes(config, shape, config.train.batch_size, trainer.data_sharding,
                                  encoded)
  text = trainer.train_step.lower(trainer.abstract_state(), batch).as_text()
  text = re.sub(r"dense<[^>]*>", "dense<>", text)
  text = re.sub(r"[-+]?\d+\.\d*(e[-+]?\d+)?", "F", text)
  text = re.sub(r"loc\([^)]*\)", "", text)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_records(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def append(path: str, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


# libtpu can crash the process while compiling (a segfault, not an error): each compile is
# announced in RECORDS.inflight first, so that the next run records the crash and moves on.
def inflight_path(records_path: str) -> str:
  return records_path + ".inflight"


def announce(records_path: str, record: dict) -> None:
  with open(inflight_path(records_path), "w") as f:
    json.dump(record, f)


def settle(records_path: str) -> None:
  """Forget the announced compile (it finished); called after each record is written."""
  if os.path.exists(inflight_path(records_path)):
    os.remove(inflight_path(records_path))


def record_crash(records_path: str) -> dict:
  """A compile announced but never settled: the process died in it. Recorded as a crash, but
  for a largest-batch search that had answered some compiles since it last started: it is
  returned, {(kind, recipe, slice): its announcement}, to be resumed from them (a process
  stopped by hand looks the same). One that dies again before its next answer is a crash."""
  if not os.path.exists(inflight_path(records_path)):
    return {}
  with open(inflight_path(records_path)) as f:
    record = json.load(f)
  if record["kind"] == "max_batch" and record.get("tried") and not record.get("resumed"):
    record["resumed"] = True  # Until its next answer.
    announce(records_path, record)
    return {(record["kind"], record["recipe"], record["slice"]): record}
  record = {k: v for k, v in record.items() if k not in ("tried", "resumed")}
  record.update(fits=False, crashed=True, batch=record.get("batch"),
                error="the process died compiling it (libtpu crashed)")
  append(records_path, record)
  settle(records_path)
  return {}


def same_program(recipe: str, slices, records_path: str, done: dict):
  """The recipe listed before it whose step is the same program, if any (fingerprinted once)."""
  if ("fingerprint", recipe) not in done:
    config = load(recipe)
    record = {"kind": "fingerprint", "recipe": recipe,
              "fingerprint": fingerprint(config, tpu.get_slice(slices[0]))}
    append(records_path, record)
    done[("fingerprint", recipe)] = record
  mine = done[("fingerprint", recipe)]["fingerprint"]
  return next((r["recipe"] for key, r in done.items() if key[0] == "fingerprint"
               and r["fingerprint"] == mine and r["recipe"] != recipe
               and RECIPES.index(r["recipe"]) < RECIPES.index(recipe)), None)


def at_recipe_batch(recipe: str, slices, records_path: str, done: dict) -> None:
  """A report of the recipe at its own global batch on each slice."""
  from adcl import compile as preflight

  config = load(recipe)
  for name in slices:
    key = ("recipe_batch", recipe, name)
    if key in done:
      continue
    record = {"kind": "recipe_batch", "recipe": recipe, "slice": name,
              "batch": config.train.batch_size}
    announce(records_path, record)
    try:
      record.update(preflight.compile_program(config, tpu.get_slice(name)).as_dict())
    except preflight.DoesNotFit as error:
      record.update(fits=False, needed_bytes=error.needed_bytes, error=str(error),
                    compiler_message=error.compiler_message)
    append(records_path, record)
    settle(records_path)
    done[key] = record
    say(f"{recipe} on {name}: batch {record['batch']} "
        f"{'fits' if record['fits'] else 'does not fit'}")


def largest_batches(recipe: str, slices, records_path: str, done: dict,
                    resume: dict) -> None:
  """The recipe's largest batch on each slice: searched on the first slice of each chip
  generation, confirmed by one compile on the others. A search in `resume` (record_crash's)
  goes on from the compiles it had answered."""
  from adcl import compile as preflight

  config = load(recipe)
  per_chip = {}
  for name in slices:
    tpu_slice = tpu.get_slice(name)
    key = ("max_batch", recipe, name)
    family = tpu_slice.generation.topology
    if key in done:
      if not done[key].get("crashed"):
        per_chip.setdefault(family, done[key]["batch"] // tpu_slice.chips)
      continue
    start = time.perf_counter()
    record = {"kind": "max_batch", "recipe": recipe, "slice": name}
    earlier = resume.get(key, {})
    earlier_seconds = earlier.get("seconds", 0.0)
    tried = {int(b): tuple(answer) for b, answer in earlier.get("tried", {}).items()}
    announce(records_path, {**record, **{k: earlier[k] for k in ("tried", "resumed", "seconds")
                                         if k in earlier}})
    if family in per_chip:  # A slice of a generation searched already: confirm.
      batch = per_chip[family] * tpu_slice.chips
      try:
        preflight.compile_program(config, tpu_slice, batch)
        record.update(batch=batch, tried=[[batch, True, None]], confirmed_from=True)
      except preflight.DoesNotFit:
        record["confirmed_from"] = False
    if "batch" not in record:
      if tried:
        say(f"{recipe} on {name}: resuming the search from {len(tried)} compiles")

      def answered(message, *args):  # Each compile's answer, shown and kept as it comes.
        say("  " + message % args)
        announce(records_path, {**record, "tried": tried,
                                "seconds": earlier_seconds + time.perf_counter() - start})

      largest, history = preflight.max_batch(config, tpu_slice, progress=answered,
                                             resolution=RESOLUTION, tried=tried)
      record.update(batch=largest, tried=[list(h) for h in history])
      per_chip.setdefault(family, largest // tpu_slice.chips)
    record["seconds"] = earlier_seconds + time.perf_counter() - start
    append(records_path, record)
    settle(records_path)
    done[key] = record
    say(f"{recipe} on {name}: the largest batch that fits is {record['batch']} "
        f"({len(record['tried'])} compiles, {record['seconds']:.0f} s)")


def markdown(records: list, slices) -> str:
  """The tables of docs/tpu_recipes.md from the records."""
  done = {(r["kind"], r["recipe"]) + ((r["slice"],) if "slice" in r else ()): r
          for r in records}
  fingerprints = {r["recipe"]: r["fingerprint"] for r in records if r["kind"] == "fingerprint"}
  lines = [
      "# Every recipe compiled for TPU slices",
      "",
      "Made by `python benchmarks/tpu_recipes.py` (the preflight's quick compiles, on a CPU "
      "host with libtpu; [launching.md](launching.md#preflight-a-tpu-slice-before-paying-for-it) "
      "says what each column means); the records are "
      "[benchmarks/records/tpu_recipes.jsonl](../benchmarks/records/tpu_recipes.jsonl). "
      "Each cell: whether the recipe's own global batch fits, the HBM one chip then holds, "
      "and the images/s bound at the chip's bfloat16 peak (or the compiler's estimate where "
      "slower); below it, the largest global batch that fits, found to within 1/16 (CLAE "
      "recipes; a baseline fits wherever its CLAE recipe does). A refusal gives what a chip needs: after '>' where the "
      "compiler gave up (its count, a lower bound), else a quick compile's need above 92% of "
      "the chip's HBM (`--full_compile` decides those). 'libtpu crashed': the TPU compiler "
      "died (a segfault) compiling it, which says nothing about its memory. A recipe whose "
      "step is the same "
      "program as another's but for constants names it.",
      "",
      "| recipe | batch | " + " | ".join(slices) + " |",
      "|---|---|" + "---|" * len(slices),
  ]
  for recipe in RECIPES:
    if recipe not in fingerprints:
      continue
    same = next((r for r in RECIPES[:RECIPES.index(recipe)]
                 if fingerprints.get(r) == fingerprints[recipe]), None)
    shown = same or recipe
    cells = []
    for name in slices:
      row = done.get(("recipe_batch", shown, name))
      if row is None:
        cells.append("–")
        continue
      if row.get("crashed"):
        cells.append("**libtpu crashed** compiling it")
        continue
      if not row["fits"]:
        need = row.get("needed_bytes")
        # The compiler's own count (it gave up: more than the chip has) is a lower bound; a
        # compiled program's need (over the quick compile's margin) is exact.
        said = row.get("compiler_message") or "more than" in row.get("error", "")
        bound = ">" if said or need > tpu.get_slice(name).hbm_bytes else ""
        cell = "**no**" + (f": needs {bound}{need / 2**30:.1f} GiB"
                           if need else "")
      else:
        cell = (f"yes, {row['in_use_bytes'] / 2**30:.2f} / {row['hbm_bytes'] / 2**30:.0f} GiB, "
                f"≤ {row['images_per_s_bound']:,.0f} img/s")
      largest = done.get(("max_batch", shown, name))
      if largest is not None and largest.get("crashed"):
        cell += "<br>max: libtpu crashed in the search"
      elif largest is not None:
        cell += f"<br>max {largest['batch']:,}"
      cells.append(cell)
    label = f"`{recipe.removeprefix('configs/')}`" + (
        f" (same program as `{same.removeprefix('configs/')}`)" if same else "")
    batch = load(recipe).train.batch_size
    lines.append(f"| {label} | {batch} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--recipes", default=",".join(RECIPES))
  parser.add_argument("--slices", default=",".join(SLICES))
  parser.add_argument("--records", default=os.path.join(REPO, "benchmarks", "records",
                                                        "tpu_recipes.jsonl"))
  parser.add_argument("--markdown", default=os.path.join(REPO, "docs", "tpu_recipes.md"))
  args = parser.parse_args()
  from adcl import cli
  cli.prepare_jax()  # As the commands do, before jax starts.
  slices = args.slices.split(",")
  resume = record_crash(args.records)
  done = {}
  for r in read_records(args.records):
    done[(r["kind"], r["recipe"]) + ((r["slice"],) if "slice" in r else ())] = r
  chosen = args.recipes.split(",")
  chosen = [r for r in FIRST if r in chosen] + [r for r in chosen if r not in FIRST]

  def write_table():
    with open(args.markdown, "w") as f:
      f.write(markdown(read_records(args.records), slices))

  distinct = []
  for recipe in chosen:
    same = same_program(recipe, slices, args.records, done)
    if same:
      say(f"{recipe}: the same program as {same}")
    else:
      distinct.append(recipe)
  # Every recipe at its own batch (FIRST first), then the searches, the ResNet-50 ones (minutes
  # a compile) last.
  work = [(r, at_recipe_batch) for r in distinct]
  work += sorted(((r, largest_batches) for r in distinct),
                 key=lambda item: load(item[0]).model.architecture == "resnet50")
  for recipe, step in work:
    if step is at_recipe_batch:
      at_recipe_batch(recipe, slices, args.records, done)
    elif recipe not in NO_MAX_BATCH and load(recipe).adv.enabled:
      largest_batches(recipe, slices, args.records, done, resume)
    write_table()
  print(f"wrote {args.markdown}")


if __name__ == "__main__":
  main()
