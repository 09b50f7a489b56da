"""The launch scripts: dry runs print the commands they would run; shellcheck finds nothing."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = {"PROJECT": "my-project", "ZONE": "us-central2-b", "TPU_NAME": "adcl-v4",
       "ACCELERATOR_TYPE": "v4-32", "WORKDIR": "gs://bucket/runs/c10",
       "CONFIG": "configs/cifar10_simclr.py", "CONFIG_ARG": "clae",
       "TFDS_DATA_DIR": "gs://bucket/tfds"}


def launch(script, *args, **variables):
  env = {k: v for k, v in os.environ.items() if k not in TPU and k != "DRY_RUN"}
  env.update({"DRY_RUN": "1", **variables})
  return subprocess.run(["bash", os.path.join(REPO, "launch", script), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def test_shellcheck_is_clean():
  scripts = sorted(os.path.join(REPO, "launch", f) for f in os.listdir(os.path.join(REPO, "launch"))
                   if f.endswith(".sh"))
  shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
  assert len(scripts) >= 4 and result.returncode == 0, result.stdout


def test_tpu_vm_dry_run_prints_every_step():
  result = launch("tpu_vm.sh", "all", "logs", "copy", "delete", SPOT="1", **TPU)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  preflight, create, archive, scp, install, train, logs, mkdir, copy, delete = lines
  assert preflight.endswith(" -m adcl.compile --config=configs/cifar10_simclr.py:clae "
                            "--topology=v4-32")  # Once, before anything is paid for.
  assert create.startswith("gcloud compute tpus tpu-vm create adcl-v4 ")
  for part in ("--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
               "--project=my-project", "--zone=us-central2-b"):
    assert part in create
  assert archive.startswith(f"git -C {REPO} archive") and "HEAD" in archive
  assert scp.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in scp
  assert "--worker=all" in install and "launch/setup.sh\\ tpu" in install
  assert "--worker=all" in train
  for part in ("-m\\ adcl.train", "--config=configs/cifar10_simclr.py:clae",
               "--workdir=gs://bucket/runs/c10", "--distributed",
               "--config.data.data_dir=gs://bucket/tfds", "nohup"):
    assert part in train, part
  assert "--worker=0" in logs and "train.log" in logs
  assert copy.startswith("gcloud storage rsync --recursive") and copy.endswith(
      "gs://bucket/runs/c10 results/adcl-v4")
  assert delete.startswith("gcloud compute tpus tpu-vm delete adcl-v4 --quiet")


def test_tpu_vm_stops_before_creating_a_slice_its_preflight_refuses():
  """Not a dry run: the preflight (adcl.compile) really runs and refuses the slice name, so
  the script stops with its line and never reaches gcloud; SKIP_PREFLIGHT=1 goes on."""
  refused = launch("tpu_vm.sh", "create", **{**TPU, "ACCELERATOR_TYPE": "v4-6", "DRY_RUN": "0"})
  lines = refused.stderr.strip().splitlines()
  assert refused.returncode == 2 and "gcloud" not in refused.stderr, refused.stderr
  assert "adcl.compile: error: unknown TPU slice 'v4-6'" in lines[-2]
  assert lines[-1].startswith("tpu_vm.sh: error: the preflight for v4-6 failed")
  skipped = launch("tpu_vm.sh", "create", **{**TPU, "SKIP_PREFLIGHT": "1"})
  assert skipped.returncode == 0 and skipped.stdout.startswith("gcloud compute tpus tpu-vm create")


@pytest.mark.parametrize("missing", ["PROJECT", "ZONE", "TPU_NAME", "WORKDIR", "CONFIG"])
def test_tpu_vm_names_a_missing_variable(missing):
  variables = {k: v for k, v in TPU.items() if k != missing}
  result = launch("tpu_vm.sh", "train", **variables)
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip() == f"tpu_vm.sh: error: set {missing} (see the top of launch/tpu_vm.sh)"


def test_tpu_vm_refuses_a_local_workdir_and_unknown_steps():
  local = launch("tpu_vm.sh", "train", **{**TPU, "WORKDIR": "/tmp/run"})
  assert local.returncode == 2 and "must be a gs:// path" in local.stderr
  unknown = launch("tpu_vm.sh", "launch", **TPU)
  assert unknown.returncode == 2 and "unknown step 'launch'" in unknown.stderr


def test_gpu_dry_run_and_missing_variables():
  result = launch("gpu.sh", CONFIG="configs/cifar10_simclr.py", CONFIG_ARG="baseline",
                  WORKDIR="workdirs/c10", GPUS="0,1", EXTRA_FLAGS="--config.seed=1")
  assert result.returncode == 0, result.stderr
  setup, train = result.stdout.splitlines()
  assert setup == f"bash {REPO}/launch/setup.sh cuda"
  assert train == (f"env CUDA_VISIBLE_DEVICES=0\\,1 {REPO}/.venv/bin/python -m adcl.train "
                   "--config=configs/cifar10_simclr.py:baseline --workdir=workdirs/c10 "
                   "--config.seed=1")
  missing = launch("gpu.sh", CONFIG="configs/cifar10_simclr.py")
  assert missing.returncode == 2 and "set WORKDIR" in missing.stderr
  no_file = launch("gpu.sh", CONFIG="configs/nope.py", WORKDIR="w")
  assert no_file.returncode == 2 and "CONFIG=configs/nope.py: no such file" in no_file.stderr


def test_slurm_dry_run_starts_one_process_per_gpu_that_detects_the_cluster():
  result = launch("slurm_gpu.sh", CONFIG="configs/cifar10_simclr.py", CONFIG_ARG="clae",
                  WORKDIR="/shared/runs/c10", TFDS_DATA_DIR="/shared/tfds",
                  EXTRA_FLAGS="--config.seed=2", SLURM_SUBMIT_DIR=REPO)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f"srun --kill-on-bad-exit=1 {REPO}/.venv/bin/python -m adcl.train "
      "--config=configs/cifar10_simclr.py:clae --workdir=/shared/runs/c10 "
      "--config.data.data_dir=/shared/tfds --config.seed=2 --distributed"]
  script = open(os.path.join(REPO, "launch", "slurm_gpu.sh")).read()
  for directive in ("#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                    "#SBATCH --signal=TERM@120", "#SBATCH --requeue"):
    assert directive in script
  missing = launch("slurm_gpu.sh", CONFIG="configs/cifar10_simclr.py")
  assert missing.returncode == 2 and missing.stderr.strip() == (
      "slurm_gpu.sh: error: set WORKDIR (see the top of launch/slurm_gpu.sh)")
  outside = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm_gpu.sh")],
                           capture_output=True, text=True, cwd=REPO, timeout=60,
                           env={"PATH": os.environ["PATH"], "CONFIG": "configs/cifar10_simclr.py",
                                "WORKDIR": "w"})
  assert outside.returncode == 2 and "not inside a SLURM job" in outside.stderr


def test_imagenet_recipes_launch_with_their_records_on_slurm_and_a_tpu_slice():
  """docs/launching.md's ImageNet commands: DATA_DIR points the recipe at converted records."""
  result = launch("slurm_gpu.sh", CONFIG="configs/imagenet100_simclr.py", CONFIG_ARG="baseline",
                  WORKDIR="/shared/runs/in100", DATA_DIR="/shared/imagenet100_records",
                  EXTRA_FLAGS="--config.data.workers=7", SLURM_SUBMIT_DIR=REPO)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f"srun --kill-on-bad-exit=1 {REPO}/.venv/bin/python -m adcl.train "
      "--config=configs/imagenet100_simclr.py:baseline --workdir=/shared/runs/in100 "
      "--config.data.data_dir=/shared/imagenet100_records --config.data.workers=7 "
      "--distributed"]
  tpu = dict(TPU, CONFIG="configs/imagenet1k_simclr.py", DATA_DIR="/mnt/disks/imagenet_records",
             EXTRA_FLAGS="--config.data.workers=15")
  del tpu["TFDS_DATA_DIR"]
  result = launch("tpu_vm.sh", "train", **tpu)
  assert result.returncode == 0, result.stderr
  assert ("--config=configs/imagenet1k_simclr.py:clae\\ --workdir=gs://bucket/runs/c10\\ "
          "--distributed\\ --config.data.data_dir=/mnt/disks/imagenet_records\\ "
          "--config.data.workers=15") in result.stdout
