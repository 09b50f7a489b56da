"""Workdir paths that may be local or remote (gs://, and whatever else etils.epath reads).

Every file adcl writes or reads in a workdir (checkpoints through Orbax, metrics, eval.json,
figures, compare output) goes through these, so a local path takes the same code path as a
bucket. Writes are whole-file and atomic (write a temporary name, then rename): object stores
cannot append, and a crash must leave the previous file.

The JSON files adcl reads back are read here: a file that does not parse is an
`errors.DamagedFile` naming it (read_json), or its unreadable lines are skipped with one
warning (read_jsonl); whoever can go on without it sets it aside (set_aside), never deletes it.
"""

import json
import logging
import os
import time
from typing import Any, Optional

from etils import epath

from adcl import errors


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


def read_json(path, advice: str = "") -> Optional[Any]:
  """The JSON value in `path`; None if it does not exist. A file that is empty or does not
  parse is an errors.DamagedFile naming it (with `advice`: what the user can do)."""
  path = resolve(path)
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise errors.DamagedFile(path, _reason(error), advice) from None


def read_json_object(path, advice: str = "") -> Optional[dict]:
  """read_json, for a file that must hold a JSON object."""
  value = read_json(path, advice)
  if value is not None and not isinstance(value, dict):
    raise errors.DamagedFile(resolve(path), f"a JSON {type(value).__name__}, not an object",
                             advice)
  return value


def read_jsonl(path, keep_copy: bool = False) -> list:
  """The JSON objects of a JSON-lines file, [] if it does not exist. A line that is not one
  (cut mid-line, edited by hand) is skipped with one warning naming the file and its lines;
  with `keep_copy` (a caller about to rewrite the file) the damaged file is copied aside
  first (set_aside)."""
  path = resolve(path)
  if not path.exists():
    return []
  lines = parse_jsonl(path.read_bytes().decode(errors="replace"))
  records = [record for _, record in lines if isinstance(record, dict)]
  damaged = [number for number, record in lines if not isinstance(record, dict)]
  if damaged:
    copy = f"; a copy of it is in {set_aside(path, copy=True)}" if keep_copy else ""
    logging.getLogger("absl").warning(
        "%s is damaged: line(s) %s are not JSON objects and are skipped%s", path,
        ", ".join(map(str, damaged[:10])) + (" ..." if len(damaged) > 10 else ""), copy)
  return records


def parse_jsonl(text: str) -> list:
  """[(line number, its JSON value or None where it does not parse)] of the non-blank lines."""
  parsed = []
  for number, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        parsed.append((number, json.loads(line)))
      except json.JSONDecodeError:
        parsed.append((number, None))
  return parsed


def set_aside(path, copy: bool = False) -> epath.Path:
  """Move (or copy) a damaged file to NAME.damaged-TIME[-N] beside it; returns where."""
  path = resolve(path)
  stem = f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
  target, count = path.parent / stem, 1
  while target.exists():  # Never over an earlier copy.
    target, count = path.parent / f"{stem}-{count}", count + 1
  if copy:
    path.copy(target, overwrite=True)
  else:
    path.rename(target)
  return target


def _reason(error: json.JSONDecodeError | UnicodeDecodeError) -> str:
  if isinstance(error, UnicodeDecodeError):
    return "not text"
  if not error.doc.strip():
    return "empty"
  return f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
