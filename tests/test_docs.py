"""The documentation: links that resolve, commands that parse, and code comments that do not
date (measurements live in docs/performance.md)."""

import ast
import decimal
import io
import itertools
import os
import re
import shlex
import subprocess
import tokenize

import pytest
from absl import flags

from conftest import REPO

PAGES = ["README.md"] + sorted(
    os.path.join(root, name)[len(REPO) + 1:]
    for root, _, names in os.walk(os.path.join(REPO, "docs")) for name in names
    if name.endswith(".md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set:
  """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
  return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
          for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
  text = open(os.path.join(REPO, page)).read()
  for target in LINK.findall(text):
    if re.match(r"[a-z]+:", target):
      continue  # A URL.
    path, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)) if path else (
        os.path.join(REPO, page))
    assert os.path.exists(resolved), f"{page}: {target} does not exist"
    if anchor and resolved.endswith(".md"):
      assert anchor in _anchors(open(resolved).read()), f"{page}: no heading for #{anchor}"


# A repository path as the docs and docstrings write one: a top folder, then a name.
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])((?:adcl|configs|benchmarks|docs|launch|tests|notebooks)/[\w./-]*[\w/])")


def _named_paths(text: str) -> set:
  """Repository paths named in `text`, less placeholders: a name in capitals (configs/X.py,
  launch/SCRIPT.sh), the stem of a brace list or glob (configs/cifar100_{plain,uel}.py)."""
  found = set()
  for match in REPOSITORY_PATH.finditer(text):
    path = match.group(1).rstrip(".")
    if text[match.end():match.end() + 1] in ("{", "*") or re.search(r"/[A-Z][A-Z_]*(\.|/|$)", path):
      continue
    found.add(path)
  return found


def test_every_repository_path_named_in_the_docs_configs_and_code_exists():
  sources = PAGES + ["launch/README.md"] + sorted(
      os.path.join(root, name)[len(REPO) + 1:]
      for top in ("adcl", "configs", "benchmarks")
      for root, _, names in os.walk(os.path.join(REPO, top)) for name in names
      if name.endswith(".py"))
  missing = sorted(f"{source}: {path}" for source in sources
                   for path in _named_paths(open(os.path.join(REPO, source)).read())
                   if not os.path.exists(os.path.join(REPO, path)))
  assert not missing, missing
  assert _named_paths("see configs/X.py, configs/tiny_imagenet_{plain,uel}.py and adcl/step.py."
                      ) == {"adcl/step.py"}


def test_the_readme_is_short():
  assert len(open(os.path.join(REPO, "README.md")).read().splitlines()) <= 220


def _shown_commands(page: str) -> list:
  """The command lines of a page's ```bash blocks, comments dropped."""
  blocks = re.findall(r"```bash\n(.*?)```", open(os.path.join(REPO, page)).read(), re.S)
  blocks = [block.replace("\\\n", " ") for block in blocks]  # One command over several lines.
  return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()
          if line.strip() and not line.startswith("#")]


def _parse(module_name: str, args: list) -> None:
  """Parse `args` with the command's own flags, as its main would get them (config
  overrides, `--config.KEY=VALUE`, are found in sys.argv by ml_collections)."""
  import importlib
  import sys
  module = importlib.import_module(module_name)
  flag_values = flags.FlagValues()
  module.define_flags(flag_values)
  argv, sys.argv = sys.argv, [module_name, *args]
  try:
    flag_values(sys.argv)
  finally:
    sys.argv = argv


def test_every_command_the_readme_shows_parses(monkeypatch):
  monkeypatch.chdir(REPO)  # Config paths are relative to the repository, as users run them.
  commands = _shown_commands("README.md")
  assert len(commands) >= 6
  for command in commands:
    for part in command.split(" && "):
      words = shlex.split(part)
      if words[0] == "bash":  # A script: it exists and bash can parse it.
        result = subprocess.run(["bash", "-n", words[1]], capture_output=True, text=True)
        assert result.returncode == 0, f"{command}: {result.stderr}"
      elif words[0].endswith("python") and words[1] == "-m" and words[2].startswith("adcl."):
        module = words[2] + (".__main__" if words[2] == "adcl.study" else "")
        _parse(module, words[3:])
      else:
        pytest.fail(f"README command of an unknown kind: {command}")


def test_a_bad_flag_in_a_shown_command_would_be_caught():
  with pytest.raises(flags.Error):
    _parse("adcl.evaluate", ["--workdir", "w", "--robust_exampels", "3"])
  with pytest.raises((flags.Error, KeyError, AttributeError)):
    _parse("adcl.train", ["--config", "configs/quickstart.py", "--workdir", "w",
                          "--config.train.batch_sise=3"])


# A measured figure: a number with a unit of time, speed or work.
FIGURE = re.compile(r"\d[\d.]*\s?(img/s|images/s|ms\b|s\b|sec\b|seconds|min\b|minutes|hours|"
                    r"GFLOP|TFLOP)|GFLOP|img/s")


def _comments_and_docstrings(path: str):
  source = open(path).read()
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      yield token.start[0], token.string
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      docstring = ast.get_docstring(node, clean=False)
      if docstring:
        for offset, line in enumerate(docstring.splitlines()):
          yield node.body[0].lineno + offset, line


def test_no_comment_or_docstring_in_adcl_holds_a_measured_figure():
  found = []
  for root, _, names in os.walk(os.path.join(REPO, "adcl")):
    for name in sorted(n for n in names if n.endswith(".py")):
      path = os.path.join(root, name)
      found += [f"{os.path.relpath(path, REPO)}:{line}: {text.strip()}"
                for line, text in _comments_and_docstrings(path) if FIGURE.search(text)]
  assert not found, "measurements belong in docs/performance.md:\n" + "\n".join(found)
  assert FIGURE.search("takes 6.5 s on 8 devices") and FIGURE.search("plain 14.3 img/s")


# A figure with a unit and at least 4 significant digits, as the pages write them.
STATED_FIGURE = re.compile(r"(?<![\w.,/+-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?"
                           r"(%|GFLOP|img/s|images/s|GiB|GB|MB|ms|s|h|minutes)(?!\w)")
# Figures that differ from another page's by one in the last digit and are other measurements.
OTHER_MEASUREMENTS = {
    ("docs/studies.md", "84.40%"): "the pixel probe computed on the H200; the CPU's is 84.39%",
}


def _stated_figures(text: str):
  for match in STATED_FIGURE.finditer(text):
    value = decimal.Decimal(match.group(1).replace(",", ""))
    if len(value.as_tuple().digits) >= 4:
      yield value, match.group(2), match.group(0)


def _rounded_apart(a: decimal.Decimal, b: decimal.Decimal) -> bool:
  """Two figures written to the same place that differ by one there: one quantity rounded
  twice, or one page's copy left behind when the other was remeasured."""
  exponent = a.as_tuple().exponent
  return (exponent == b.as_tuple().exponent and a != b
          and abs(a - b) <= decimal.Decimal(1).scaleb(exponent))


def figures_that_drifted(pages: dict) -> list:
  """'page: figure ~ page: figure' for each pair of pages ({path: text}) that state figures of
  one unit differing by one in their last digit (other than OTHER_MEASUREMENTS)."""
  stated = {page: [f for f in _stated_figures(text) if (page, f[2]) not in OTHER_MEASUREMENTS]
            for page, text in pages.items()}
  return [f"{a}: {text_a} ~ {b}: {text_b}"
          for a, b in itertools.combinations(sorted(stated), 2)
          for value_a, unit_a, text_a in stated[a] for value_b, unit_b, text_b in stated[b]
          if unit_a == unit_b and _rounded_apart(value_a, value_b)]


def test_a_figure_two_pages_state_is_the_same_figure():
  """README and the guide's pages (docs/*.md). Left out: a study's folder, which records that
  study's runs on its machine, and docs/tpu_recipes.md, a table benchmarks/tpu_recipes.py
  writes."""
  pages = {}
  for page in [p for p in PAGES if os.path.dirname(p) in ("", "docs")
               and p != "docs/tpu_recipes.md"]:
    with open(os.path.join(REPO, page)) as f:
      pages[page] = f.read()
  drifted = figures_that_drifted(pages)
  assert not drifted, ("state a figure once and link to it, or make the copies equal:\n" +
                       "\n".join(drifted))
  # What it catches, and what it leaves: the same probe rounded twice, 1,383 vs 1,384 MB; a
  # figure restated with fewer digits, and different quantities.
  assert len(figures_that_drifted({"a.md": "probe 84.39%; peak 1,383 MB",
                                   "b.md": "probe 84.40%, peak 1,384 MB"})) == 2
  assert not figures_that_drifted({"a.md": "84.39% and 683.3 GFLOP", "b.md": "84.4%, 690 GFLOP"})
