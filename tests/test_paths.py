"""Workdir files through etils.epath: the code path that gs:// workdirs take, on a local path."""

import os

from adcl import paths


def test_write_atomic_creates_parents_replaces_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "a" / "b" / "eval.json"
  paths.write_atomic(str(target), '{"x": 1}')
  paths.write_atomic(target, b'{"x": 2}')
  assert target.read_text() == '{"x": 2}'
  assert os.listdir(target.parent) == ["eval.json"]


def test_read_jsonl_and_resolve(tmp_path, monkeypatch):
  assert paths.read_jsonl(tmp_path / "none.jsonl") == []
  paths.write_atomic(tmp_path / "m.jsonl", '{"step": 1}\n\n{"step": 2}\n')
  assert paths.read_jsonl(tmp_path / "m.jsonl") == [{"step": 1}, {"step": 2}]
  monkeypatch.chdir(tmp_path)
  assert str(paths.resolve("run")) == str(tmp_path / "run")  # Relative: made absolute.
  bucket = paths.resolve("gs://bucket/run") / "checkpoints"
  assert str(bucket) == "gs://bucket/run/checkpoints"  # Remote: kept as a URL, not a local path.
