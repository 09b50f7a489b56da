"""Workdir paths that may be local or remote (gs://, and whatever else etils.epath reads).

Every file adcl writes or reads in a workdir (checkpoints through Orbax, metrics, eval.json,
figures, compare output) goes through these, so a local path takes the same code path as a
bucket. Writes are whole-file and atomic (write a temporary name, then rename): object stores
cannot append, and a crash must leave the previous file.
"""

import os

from etils import epath


def resolve(path) -> epath.Path:
  """An epath.Path; a local path made absolute (a relative one would move with the cwd)."""
  text = os.fspath(path)
  return epath.Path(text if "://" in text else os.path.abspath(text))


def write_atomic(path, data) -> epath.Path:
  """Write `data` (str or bytes) to `path` whole, creating its parent folders."""
  path = resolve(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp"
  if isinstance(data, str):
    tmp.write_text(data)
  else:
    tmp.write_bytes(data)
  tmp.replace(path)
  return path


def read_jsonl(path) -> list:
  """The JSON objects of a JSON-lines file, [] if it does not exist."""
  import json
  path = resolve(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
