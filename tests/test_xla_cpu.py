"""adcl's XLA:CPU defaults: the flag string, who wins, and their effect on a compiled conv."""

import os
import subprocess
import sys

import pytest

from adcl import xla_cpu
from conftest import cli_env

FLAG = xla_cpu.YNN_FUSION_FLAG
OURS = "individual_dot,reduce"  # jaxlib 0.10's default without convolutions.
JAXLIB = "individual_dot,reduce,individual_convolution"  # jaxlib 0.10's default.


def test_defaults_are_appended_and_a_users_flag_is_kept():
  assert xla_cpu.with_defaults("") == f"--{FLAG}={OURS}"
  assert xla_cpu.with_defaults("--xla_force_host_platform_device_count=2") == (
      f"--xla_force_host_platform_device_count=2 --{FLAG}={OURS}")
  mine = f"--{FLAG}={JAXLIB} --xla_cpu_enable_fast_math=false"
  assert xla_cpu.with_defaults(mine) == mine
  assert xla_cpu.named_flags(f"--a=1 --b --{FLAG}=") == {"a": "1", "b": "", FLAG: ""}


def test_apply_defaults_edits_only_the_given_environment(monkeypatch):
  monkeypatch.setattr(xla_cpu, "_jax_started", lambda: False)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_cpu.apply_defaults(environ)
  assert environ["XLA_FLAGS"].endswith(f"--{FLAG}={OURS}")
  assert not xla_cpu.apply_defaults(environ)  # Already there: nothing to add.
  off = {"ADCL_XLA_DEFAULTS": "0"}
  assert not xla_cpu.apply_defaults(off) and "XLA_FLAGS" not in off


def test_apply_defaults_warns_and_leaves_flags_once_jax_has_started(monkeypatch):
  monkeypatch.setattr(xla_cpu, "_jax_started", lambda: True)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  with pytest.warns(UserWarning, match=f"called after jax started.*{FLAG}={OURS}"):
    assert not xla_cpu.apply_defaults(environ)
  assert environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


# A command as adcl's commands are made (adcl.cli.run around a main), whose main compiles a
# convolution and says whether XLA gave it to YNNPACK.
PROBE = """
import os, sys
{before}
import jax, jax.numpy as jnp
from adcl import cli

def main(argv):
  x, w = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 32))  # YNNPACK takes >= 32 channels.
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  print(os.environ.get("XLA_FLAGS", ""))
  print("__ynn_fusion" in jax.jit(conv).lower(x, w).compile().as_text())

cli.run(main, "probe")
"""


def _probe(xla_flags, before=""):
  env = {k: v for k, v in cli_env(compilation_cache=False).items()
         if k not in ("ADCL_XLA_DEFAULTS", "XLA_FLAGS")}  # A user's fresh process.
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  result = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  flags, uses_ynn = result.stdout.rstrip("\n").split("\n")[-2:]
  return flags, uses_ynn == "True", result.stderr


def test_commands_take_convolutions_off_ynnpack_in_a_fresh_process():
  flags, uses_ynn, _ = _probe(None)
  assert flags == f"--{FLAG}={OURS}" and not uses_ynn
  # The user's own choice wins, and it is what makes the difference (jaxlib 0.10's default).
  flags, uses_ynn, _ = _probe(f"--{FLAG}={JAXLIB}")
  assert flags == f"--{FLAG}={JAXLIB}" and uses_ynn
  # jax started first: the flags can no longer change, and the command says so.
  flags, uses_ynn, stderr = _probe(None, before="import jax; jax.numpy.zeros(1)")
  assert flags == "" and uses_ynn and "called after jax started" in stderr
