"""The package's shape: nothing global changes on import, no import cycle, one build path."""

import ast
import contextlib
import gc
import os
import pkgutil
import subprocess
import sys

import pytest

from conftest import REPO

ADCL = os.path.join(REPO, "adcl")


def adcl_modules() -> list[str]:
  import adcl
  return ["adcl"] + [m.name for m in pkgutil.walk_packages(adcl.__path__, "adcl.")]


def test_importing_every_module_leaves_the_environment_alone():
  """`import adcl` and each submodule: XLA_FLAGS (and every other variable) untouched.

  The libraries adcl imports come first (TensorFlow sets variables of its own on import), so
  what is compared is what adcl's own code does."""
  code = ("import importlib, json, os, sys\n"
          "import jax, flax, optax, orbax.checkpoint, tensorflow, tensorflow_datasets, matplotlib\n"
          "xla_flags = os.environ['XLA_FLAGS']\n"
          "before = dict(os.environ)\n"
          "for name in sys.argv[1:]:\n"
          "  importlib.import_module(name)\n"
          "after = dict(os.environ)\n"
          "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
          " if before.get(k) != after.get(k)}))\n"
          "assert os.environ['XLA_FLAGS'] == xla_flags\n")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  modules = adcl_modules()
  assert {"adcl.build", "adcl.cli", "adcl.evaluation.protocol", "adcl.train"} <= set(modules)
  result = subprocess.run([sys.executable, "-c", code, *modules], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == "{}"


@contextlib.contextmanager
def _collector_held():
  """The garbage collector off while the block parses sources.

  CPython 3.11 keeps the AST converter's recursion count in state the whole interpreter shares
  (CPython gh-106905): a collection that runs a finalizer in the middle of a conversion (the
  suite leaves TensorStore and file objects to the collector) lets other Python code run, and
  another parse from there fails this one with "AST constructor recursion depth mismatch". It
  failed CI once. With the collector off no Python code runs inside a conversion. Held once
  for all the files, not per file: a worker's heap is large after the tests before this one,
  and a full collection per file cost seconds each."""
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


def _parse(path: str) -> ast.Module:
  with open(path) as f:
    return ast.parse(f.read(), filename=path)


def _imports(path: str, module: str) -> set[str]:
  """adcl modules that `path` imports anywhere (top level or inside functions)."""
  found = set()
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  for node in ast.walk(_parse(path)):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("adcl")}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # Relative import.
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                        ([base] if base else []))
      if not base.startswith("adcl"):
        continue
      for alias in node.names:  # `from adcl.x import y`: y is a module or a name in x.
        child = f"{base}.{alias.name}"
        found.add(child if os.path.exists(_file_of(child)) or os.path.isdir(_dir_of(child))
                  else base)
  return found - {module}


def _dir_of(module: str) -> str:
  return os.path.join(REPO, *module.split("."))


def _file_of(module: str) -> str:
  return _dir_of(module) + ".py"


def test_no_import_cycle_among_adcl_modules():
  graph = {}
  with _collector_held():
    for module in adcl_modules():
      path = (os.path.join(_dir_of(module), "__init__.py") if os.path.isdir(_dir_of(module))
              else _file_of(module))
      graph[module] = _imports(path, module)
  # Importing adcl.a.b runs adcl/a/__init__.py first: that edge is Python's, not a dependency.
  state = {}

  def visit(module, trail):
    if state.get(module) == "done":
      return
    if state.get(module) == "open":
      cycle = trail[trail.index(module):] + [module]
      pytest.fail("import cycle: " + " -> ".join(cycle))
    state[module] = "open"
    for target in sorted(graph.get(module, ())):
      if not module.startswith(target + "."):
        visit(target, trail + [module])
    state[module] = "done"

  for module in graph:
    visit(module, [])
  assert "adcl.build" in graph["adcl.train"] and "adcl.inspect" not in graph[
      "adcl.evaluation.protocol"]


@pytest.mark.parametrize("call, allowed", [
    ("make_train_step(", {"adcl/step.py", "adcl/build.py"}),
    # benchmarks/init_time.py times this one call with and without its compiler options.
    ("create_train_state(", {"adcl/step.py", "adcl/build.py", "benchmarks/init_time.py"}),
    ("make_optimizer(", {"adcl/optim.py", "adcl/build.py", "tests/test_optim.py"}),
])
def test_the_build_sequence_is_written_once(call, allowed):
  """A config becomes model, optimiser, state and step in adcl/build.py only: the commands,
  the notebook API, the benchmarks and the tests all call it."""
  users = set()
  for folder in ("adcl", "benchmarks", "tests", "notebooks"):
    for root, _, names in os.walk(os.path.join(REPO, folder)):
      for name in names:
        if name.endswith((".py", ".ipynb")) and name != "test_structure.py":
          path = os.path.join(root, name)
          if call in open(path).read():
            users.add(os.path.relpath(path, REPO))
  assert users <= allowed, sorted(users - allowed)


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "study"])
def test_every_command_runs_through_the_shared_wrapper(command):
  path = os.path.join(ADCL, f"{command}.py")
  source = open(path if os.path.exists(path) else os.path.join(ADCL, command, "__main__.py")).read()
  assert f'cli.run(main, "adcl.{command}")' in source
  assert "sys.exit" not in source and "app.run" not in source  # No error path of its own.
