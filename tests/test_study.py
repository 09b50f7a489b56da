"""The study runner: the grid it plans, bad specs, resuming a killed grid, the report."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from adcl import machine
from adcl.study import __main__ as command, cost, report as report_lib, runner, spec as spec_lib, stats
from conftest import REPO, cli_env, write_config


def tiny_spec(config_path: str, **fields) -> ml_collections.ConfigDict:
  spec = ml_collections.ConfigDict()
  spec.title = "tiny"
  spec.config = config_path
  spec.common = {"train": {"num_steps": 4}}
  spec.seeds = (0, 1)
  spec.settings = ml_collections.ConfigDict()
  spec.settings.baseline = {"overrides": {"adv": {"enabled": False}}}
  spec.settings.clae = {"overrides": {"adv": {"enabled": True, "eps": 0.05}},
                        "baseline": "baseline"}
  spec.sweeps = {"eps": {"key": "adv.eps", "settings": ("clae",)}}
  spec.evaluate = {"robust_examples": 0, "figures": False}
  for key, value in fields.items():
    spec[key] = value
  return spec


def load_study(path: str) -> spec_lib.Study:
  return spec_lib.parse(spec_lib.load_config_file(path))


def write_spec(tmp_path, config_path: str) -> str:
  path = tmp_path / "spec.py"
  path.write_text("import sys\n"
                  f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
                  "from test_study import tiny_spec\n"
                  f"def get_config():\n  return tiny_spec({config_path!r})\n")
  return str(path)


def test_plan_resolves_every_setting_and_seed(tmp_path, idx_dir):
  runs = spec_lib.plan(spec_lib.parse(tiny_spec(write_config(tmp_path, idx_dir))),
                       str(tmp_path / "study"))
  assert [(r.setting, r.seed) for r in runs] == [("baseline", 0), ("baseline", 1),
                                                  ("clae", 0), ("clae", 1)]
  clae = runs[2].config
  assert clae.adv.eps == 0.05 and clae.train.num_steps == 4 and clae.seed == 0
  assert not runs[0].config.adv.enabled and runs[0].config.adv.eps == 0.03
  assert runs[3].workdir.endswith(os.path.join("runs", "clae", "seed_1"))


@pytest.mark.parametrize("change, message", [
    ({"common": {"train": {"num_stepz": 3}}}, "spec.common: 'train.num_stepz' is not a config key"),
    ({"common": {"train": {"num_steps": "six"}}}, "spec.common: train.num_steps = 'six'"),
    ({"settings": {"a": {"baseline": "nope"}}}, "spec.settings.a.baseline: 'nope' is not a setting"),
    ({"settings": {"a": {"overide": {}}}},
     "spec.settings.a.overide: unknown field; did you mean 'overrides'?"),
    ({"sweep": {}}, "spec.sweep: unknown field; did you mean 'sweeps'?"),
    ({"evaluate": {"robust": 5}}, "spec.evaluate.robust: unknown field; did you mean "
     "'robust_examples'?"),
    ({"settings": {"a": {"colour": 1}}}, "spec.settings.a.colour: unknown field; the fields "
     "are ['overrides', 'seeds', 'baseline', 'config']"),
    ({"config": "configs/missing.py"}, "spec.config: config file 'configs/missing.py' not found"),
    ({"sweeps": {"s": {"key": "adv.eps", "settings": ("b",)}}}, "spec.sweeps.s.settings: 'b'"),
    ({"comparisons": (("clae", "nope"),)},
     "spec.comparisons[0]: ('clae', 'nope') is not a (setting, setting) pair"),
])
def test_bad_specs_name_the_key(tmp_path, idx_dir, change, message):
  spec = tiny_spec(write_config(tmp_path, idx_dir), **change)
  with pytest.raises(ValueError, match=re.escape(message)):
    spec_lib.plan(spec_lib.parse(spec), str(tmp_path / "study"))


def test_killed_grid_resumes_without_redoing_finished_runs(tmp_path, idx_dir):
  spec_path = write_spec(tmp_path, write_config(tmp_path, idx_dir))
  workdir = tmp_path / "study"
  command = [sys.executable, "-m", "adcl.study", f"--spec={spec_path}", f"--workdir={workdir}"]
  runs = workdir / "runs"
  first_record = runs / "baseline" / "seed_0" / "study_run.json"
  second_checkpoint = runs / "baseline" / "seed_1" / "checkpoints" / "2"
  process = subprocess.Popen(command, cwd=REPO, env=cli_env(devices=2), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  # Kill it (no chance to clean up) once the first run is finished and the second has
  # checkpointed part of its training.
  while not second_checkpoint.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  process.send_signal(signal.SIGKILL)
  first_output = process.communicate()[0]
  assert second_checkpoint.exists(), first_output
  first = json.loads(first_record.read_text())
  assert first["evaluated"] and first["train_segments"] == 1
  assert first["machines"] == [machine.identity()]  # What decides its float rounding.
  evaluated_at = os.stat(runs / "baseline" / "seed_0" / "eval.json").st_mtime_ns
  killed = json.loads((runs / "baseline" / "seed_1" / "study_run.json").read_text())
  assert not killed.get("evaluated")

  # A sitting of two runs: the killed one and the next; the fourth is not started.
  sitting = subprocess.run(command + ["--max_runs=2"], cwd=REPO, env=cli_env(devices=2),
                           capture_output=True, text=True, timeout=600)
  assert sitting.returncode == 0, sitting.stderr[-3000:]
  assert "[4/4] clae seed 1: not started (--max_runs=2 runs done in this sitting)" in sitting.stdout
  assert not (runs / "clae" / "seed_1").exists()
  partial = (workdir / "report.md").read_text()
  assert "Finished runs: 3 of 4. The grid is not finished" in partial
  assert "--max_runs" not in partial  # The report names the command of the whole grid.
  # --plan marks what this workdir has finished.
  planned = spec_lib.plan(load_study(spec_path), str(workdir))
  table = report_lib.plan_table(planned, [], [r for r in planned if runner.is_finished(r)])
  assert "| baseline seed 0 (done) |" in table and "| clae seed 1 |" in table

  rerun = subprocess.run(command, cwd=REPO, env=cli_env(devices=2), capture_output=True,
                         text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "[1/4] baseline seed 0: finished earlier" in rerun.stdout
  assert "[3/4] clae seed 0: finished earlier" in rerun.stdout
  # The finished run was neither retrained nor re-evaluated.
  assert os.stat(runs / "baseline" / "seed_0" / "eval.json").st_mtime_ns == evaluated_at
  assert json.loads(first_record.read_text())["train_segments"] == 1
  # The killed run continued from its latest checkpoint (>= 2): step 2 was not trained again.
  resumed = json.loads((runs / "baseline" / "seed_1" / "study_run.json").read_text())
  assert resumed["evaluated"] and resumed["interrupted_segments"] == 1
  steps = [json.loads(l)["step"] for l in
           (runs / "baseline" / "seed_1" / "metrics.jsonl").read_text().splitlines()]
  assert steps.count(2) == 1 and steps[-1] == 4
  for setting in ("baseline", "clae"):
    for seed in (0, 1):
      result = json.loads((runs / setting / f"seed_{seed}" / "eval.json").read_text())
      assert result["step"] == 4 and 0 <= result["linear_top1"] <= 100

  report = (workdir / "report.md").read_text()
  assert "Finished runs: 4 of 4." in report
  assert "| clae | baseline | 2 |" in report  # Paired over both seeds.
  assert f"Machines: M1 {machine.label(machine.identity())}." in report
  assert report.count("| baseline | 0 | 4 |") == 1 and "| clae | 1 | 4 |" in report
  assert "(resumed; killed segment not timed)" in report
  assert "Raw pixels (64 features, the runs' normalised input): kNN " in report
  assert "Test-set sampling noise: an accuracy near" in report
  clae_row = next(l for l in report.splitlines() if l.startswith("| clae | baseline | 2 |"))
  assert clae_row.count("[") == 3  # Each metric's 95% interval over the 2 paired seeds.
  for name in ("settings.png", "sweep_eps.png", "cost.png"):
    assert (workdir / "figures" / name).stat().st_size > 5000
    assert f"[{name}](figures/{name})" in report

  # The records exported (no checkpoints) resume the grid in another workdir, all finished.
  spec = load_study(spec_path)
  exported = tmp_path / "exported"
  copied = runner.export(spec_lib.plan(spec, str(workdir)), str(workdir), str(exported))
  assert len(copied) == 1 + 3 + 4 * len(runner.RECORD_FILES)  # Report, figures, 4 runs.
  assert not any("checkpoints" in c for c in copied)
  assert (exported / "report.md").read_text() == report
  shutil.copytree(exported / "runs", tmp_path / "moved" / "runs")
  log = []
  runner.run_study(spec, str(tmp_path / "moved"), "the command", log=log.append)
  assert sum(line.endswith(": finished earlier") for line in log) == 4
  assert "Finished runs: 4 of 4." in (tmp_path / "moved" / "report.md").read_text()

  # A changed spec does not silently continue the runs made with the old one.
  changed = subprocess.run(command + ["--spec.settings.clae.overrides.adv.eps=0.1"], cwd=REPO,
                           env=cli_env(devices=2), capture_output=True, text=True, timeout=300)
  assert changed.returncode == 1
  assert "was made with another config (adv.eps 0.05 -> 0.1)" in changed.stderr
  assert (workdir / "report.md").read_text() == report

  # Step times of benchmarks/step_time.py (another model's record is not used): the ratio
  # column, and the cost figure's axis.
  planned = spec_lib.plan(spec, str(workdir))
  c = planned[0].config
  timed = {"architecture": c.model.architecture, "width": c.model.width, "batch": c.train.batch_size,
           "image_size": c.data.image_size, "dtype": c.model.dtype,
           "plain_images_per_s": 100.0, "clae_images_per_s": 40.0}
  lines = [dict(timed, width=c.model.width * 2, clae_images_per_s=10.0), timed]
  (tmp_path / "step_time.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
  step_times = cost.read_step_times(str(tmp_path / "step_time.jsonl"))
  assert cost.step_time_ratios(spec, planned, step_times) == {("clae", "baseline"): 2.5}
  runner.write_report(spec, planned, str(workdir), "the command", step_times)
  clae_row = next(l for l in (workdir / "report.md").read_text().splitlines()
                  if l.startswith("| clae | baseline | 2 |"))
  assert clae_row.endswith("| 2.50x |")
  assert (workdir / "figures" / "cost.png").stat().st_size > 5000


def test_step_time_files_that_are_not_the_benchmarks_are_named(tmp_path):
  with pytest.raises(ValueError, match=r"--step_times: .*missing.jsonl: No such file"):
    cost.read_step_times(str(tmp_path / "missing.jsonl"))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"plain_images_per_s": 1.0}\n\nround 1/2: plain 0.3s\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:3 is not a JSON line of benchmarks/step_time"):
    cost.read_step_times(f"{bad},")


def test_paper_grid_spec_plans_36_recipes_and_their_cost(tmp_path):
  spec = load_study(os.path.join(REPO, "configs", "studies", "paper_grid.py"))
  runs = spec_lib.plan(spec, str(tmp_path))
  assert len(runs) == 3 * 3 * 2 * 2
  by_name = {r.setting: r.config for r in runs}
  simclr = by_name["cifar100_simclr_resnet50_clae"]
  assert (simclr.model.architecture, simclr.optim.name, simclr.train.batch_size) == (
      "resnet50", "adam", 256)
  assert simclr.adv.enabled and not by_name["cifar100_simclr_resnet50_baseline"].adv.enabled
  tiny = by_name["tiny_imagenet_uel_resnet18_clae"]
  assert (tiny.data.source, tiny.data.image_size, tiny.model.stem, tiny.data.test_split) == (
      "folder", 64, "imagenet", "val")
  assert spec.settings["cifar10_uel_resnet18_clae"].baseline == "cifar10_uel_resnet18_baseline"
  # 100 epochs of the 195 full batches of 256 that CIFAR's 50,000 images give.
  assert cost.run_images(by_name["cifar10_simclr_resnet18_clae"]) == 100 * 195 * 256
  # --plan's hours come from a benchmarks/step_time.py record of the same model and batch.
  c = by_name["cifar10_simclr_resnet18_clae"]
  record = {"architecture": "resnet18", "width": c.model.width, "image_size": 32,
            "batch": 256, "dtype": c.model.dtype, "plain_images_per_s": 2000.0,
            "clae_images_per_s": 1000.0}
  table = report_lib.plan_table(runs, [record, dict(record, batch=128, clae_images_per_s=1.0)])
  row = next(l for l in table.splitlines() if l.startswith("| cifar10_simclr_resnet18_clae "))
  assert f" resnet18 {c.model.width} 32 256 {c.model.dtype} clae |" in row
  assert row.endswith(f"| 1000.0 | {100 * 195 * 256 / 1000 / 3600:.1f} |")
  row = next(l for l in table.splitlines() if l.startswith("| cifar10_simclr_resnet50_clae "))
  assert row.endswith("| 100 | 5.0 | – | – |")  # No record timed ResNet-50.
  # The records time CIFAR's ResNet-18 (batch 256 or 128): 12 of the 36 runs.
  assert table.splitlines()[-1].endswith("(+24 runs not timed) |")


def test_fashion_mnist_study_spec_is_the_issue_grid(tmp_path):
  spec = load_study(os.path.join(REPO, "configs", "studies", "fashion_mnist.py"))
  runs = spec_lib.plan(spec, str(tmp_path))
  seeds = {}
  for r in runs:
    seeds.setdefault(r.setting, []).append(r.seed)
  assert seeds["simclr"] == seeds["clae"] == seeds["clae_shared"] == [0, 1, 2]
  assert list(seeds)[:2] == ["simclr", "clae"]  # The main pair runs first.
  config = {r.setting: r.config for r in runs if r.seed == 0}
  assert all(c.train.num_epochs == 1 and c.model.architecture == "resnet_small"
             for c in config.values())
  assert [config[s].adv.eps for s in spec.sweeps["eps"].settings] == [0.01, 0.03, 0.1]
  assert [config[s].adv.alpha for s in spec.sweeps["alpha"].settings] == [0.5, 1.0, 2.0]
  assert [config[s].model.width for s in spec.sweeps["width"].settings] == [8, 16, 32]
  assert config["clae_shared"].adv.shared_delta and not config["clae"].adv.shared_delta
  assert not config["simclr"].adv.enabled and config["clae_w32"].adv.enabled
  assert spec.settings["clae_w32"].baseline == "simclr_w32"


def test_learned_regime_study_spec_is_the_issue_grid(tmp_path):
  spec = load_study(
      os.path.join(REPO, "configs", "studies", "fashion_mnist_learned.py"))
  runs = spec_lib.plan(spec, str(tmp_path))
  seeds = {}
  for r in runs:
    seeds.setdefault(r.setting, []).append(r.seed)
  assert seeds == {"simclr": [0, 1, 2], "clae": [0, 1, 2], "clae_fraction_0_25": [0, 1, 2],
                   "simclr_w64": [0], "clae_w64": [0]}
  config = {r.setting: r.config for r in runs if r.seed == 0}
  assert all(c.optim.schedule == "cosine" and c.train.num_epochs == 12 for c in config.values())
  assert [config[s].model.width for s in spec.sweeps["width"].settings] == [32, 64]
  assert config["clae_fraction_0_25"].adv.fraction == 0.25 and config["clae"].adv.fraction == 1.0
  assert not config["simclr"].adv.enabled and not config["simclr_w64"].adv.enabled
  assert {spec.settings[s].baseline for s in ("clae", "clae_fraction_0_25")} == {"simclr"}
  assert spec.settings["clae_w64"].baseline == "simclr_w64"
  # The cheap attack against the full one, beside each setting against its baseline.
  assert spec_lib.comparisons(spec) == [("clae", "simclr"), ("clae_fraction_0_25", "simclr"),
                                     ("clae_w64", "simclr_w64"), ("clae_fraction_0_25", "clae")]


def test_width_variant_is_the_width_pair_at_every_seed(tmp_path):
  spec = load_study("configs/studies/fashion_mnist_learned.py:width")
  runs = spec_lib.plan(spec, str(tmp_path))
  assert [(r.setting, r.seed) for r in runs] == [
      (name, seed) for name in ("simclr", "clae", "simclr_w64", "clae_w64") for seed in (0, 1, 2)]
  assert {r.config.model.width for r in runs if r.setting.endswith("w64")} == {64}
  assert spec_lib.comparisons(spec) == [("clae", "simclr"), ("clae_w64", "simclr_w64")]
  with pytest.raises(ValueError, match="fashion_mnist_learned.py:wide: the variants are"):
    spec_lib.load_config_file("configs/studies/fashion_mnist_learned.py:wide")


def test_the_gain_at_each_width_is_paired_against_the_gain_at_the_first():
  """(clae_w64 − simclr_w64) − (clae − simclr) seed by seed: gains of 0.5, 0.6, 0.4 at width 64
  against 0.0, 0.1, -0.1 at 32 grow by 0.5 ± 0 (a gain); a setting that shares the first one's
  baseline gets no row (its difference of gains is a plain paired difference)."""
  spec = ml_collections.ConfigDict({"config": "c.py", "common": {}})
  spec.settings = ml_collections.ConfigDict(sort_keys=False)
  spec.settings.simclr = {"overrides": {}}
  spec.settings.clae = {"overrides": {}, "baseline": "simclr"}
  spec.settings.cheap = {"overrides": {}, "baseline": "simclr"}
  spec.settings.simclr_w64 = {"overrides": {}}
  spec.settings.clae_w64 = {"overrides": {}, "baseline": "simclr_w64"}
  spec.sweeps = {"width": {"key": "model.width", "settings": ("clae", "cheap", "clae_w64")}}
  gains = {"simclr": (0.0, 0.0, 0.0), "clae": (0.0, 0.1, -0.1), "cheap": (0.0, 0.0, 0.0),
           "simclr_w64": (2.0, 2.0, 2.0), "clae_w64": (2.5, 2.6, 2.4)}
  summaries = [{"setting": name, "seed": seed, "train_seconds": 1.0, "eval_seconds": 1.0,
                "interrupted": False, "machines": ["This CPU"],
                **{m: 80.0 + gain[seed] for m in report_lib.METRICS}}
               for name, gain in gains.items() for seed in range(3)]
  spec = spec_lib.parse(spec)
  runs = report_lib.aggregate(spec, summaries)
  assert stats.gain_differences(runs, ("clae_w64", "simclr_w64"), ("clae", "simclr"),
                                "linear_top1") == pytest.approx([0.5, 0.5, 0.5])
  # Only the seeds where all four finished.
  del runs["simclr"][1]
  assert len(stats.gain_differences(runs, ("clae_w64", "simclr_w64"), ("clae", "simclr"),
                                    "linear_top1")) == 2
  planned = [spec_lib.PlannedRun(name, seed, ml_collections.ConfigDict(
      {"model": {"width": 64 if name.endswith("w64") else 32}}), "w") for name in gains
      for seed in range(3)]
  text = report_lib.report_markdown(spec, planned, summaries, "cmd", "t")
  rows = [line for line in text.splitlines() if line.startswith("| (")]
  assert rows == ["| (clae_w64 − simclr_w64) − (clae − simclr) | 3 | "
                  + "+0.50 [+0.50, +0.50] (gain) | " * 3 + "one |"]


def test_report_pairs_the_comparisons_and_checks_the_family_of_intervals():
  """spec.comparisons rows beside the baselines', and the Bonferroni check over all of them:
  a difference of 1.0 +- 0.1 over 3 seeds survives it, one of 0.57 +- 0.21 does not."""
  spec = ml_collections.ConfigDict({"config": "c.py", "common": {}, "comparisons": (("a", "b"),)})
  spec.settings = ml_collections.ConfigDict(sort_keys=False)
  spec.settings.base = {"overrides": {}}
  spec.settings.a = {"overrides": {"adv": {"enabled": True}}, "baseline": "base"}
  spec.settings.b = {"overrides": {"adv": {"fraction": 0.5}}, "baseline": "base"}
  noise = (0.1, -0.1, 0.0)
  margins = {"base": {m: (0.0, 0.0, 0.0) for m in report_lib.METRICS},
             "a": {"knn_top1_backbone": (1.0, 1.1, 0.9), "knn_top1_embedding": (0.5, 0.8, 0.4),
                   "linear_top1": noise},
             "b": {m: noise for m in report_lib.METRICS}}
  # a's seed 2 ran on another machine; b's records name none (made before records did).
  machines = lambda name, seed: ([] if name == "b" else
                                 ["Other CPU"] if (name, seed) == ("a", 2) else ["This CPU"])
  summaries = [{"setting": name, "seed": seed, "train_seconds": 10.0, "eval_seconds": 1.0,
                "interrupted": False, "machines": machines(name, seed),
                **{m: 80.0 + margin[m][seed] for m in report_lib.METRICS}}
               for name, margin in margins.items() for seed in range(3)]
  text = report_lib.report_markdown(spec_lib.parse(spec), [None] * 9, summaries, "cmd", "t")
  rows = {tuple(line.split(" | ")[:2]): line for line in text.splitlines()
          if line.startswith(("| a |", "| b |"))}
  assert set(rows) >= {("| a", "base"), ("| b", "base"), ("| a", "b")}
  assert "+1.00 [+0.75, +1.25] (gain)" in rows["| a", "base"]
  assert "+0.57 [+0.05, +1.08] (gain)" in rows["| a", "base"]
  assert "(gain)" in rows["| a", "b"] and "(gain)" not in rows["| b", "base"]
  assert "; then the spec's comparisons, setting − the other)" in text
  family = next(line for line in text.splitlines() if line.startswith("9 intervals"))
  # At 99.44% each, t(2) = 13.4: 1.00 +- 0.77 still excludes 0, 0.57 +- 2.78 does not.
  assert "a − base kNN (backbone): +1.00 [+0.23, +1.77]" in family
  assert "a − base kNN (projector)" not in family
  # Pairs that cross machines are named in their row, and every run names its machine.
  assert "| cross: seeds 2 |" in rows["| a", "base"]
  assert "| unrecorded: seeds 0, 1, 2 |" in rows["| b", "base"]
  assert "| unrecorded: seeds 0, 1, 2 |" in rows["| a", "b"]
  assert "Machines: M1 This CPU; M2 Other CPU." in text
  assert text.count("| M1 |") == 5 and "| M2 |" in text and text.count("| – |") >= 3


def test_the_report_command_leaves_out_the_sitting_options():
  args = ["--spec=s.py", "--max_runs", "2", "--workdir", "w", "--export=d", "--spec.seeds=0"]
  assert command.without_options(args, ("--max_runs", "--export")) == [
      "--spec=s.py", "--workdir", "w", "--spec.seeds=0"]


def test_paired_interval_is_the_paired_t_interval():
  mean, half, n = stats.paired_interval([1.0, 2.0, 3.0])
  # mean 2, sample std 1, t(0.975, 2 dof) = 4.3027.
  assert (mean, n) == (2.0, 3) and half == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-4)
  assert stats.verdict((mean, half, n)) == "within noise"
  assert stats.verdict(stats.paired_interval([1.0, 1.2, 0.9])) == "gain"
  assert stats.verdict(stats.paired_interval([-1.0, -1.2, -0.9])) == "loss"
  assert stats.verdict(stats.paired_interval([0.5])) == "1 seed"
  # One accuracy of 85% on 10,000 images: a binomial std of 0.357 points.
  assert stats.sampling_noise(85.0, 10_000) == pytest.approx(0.3571, rel=1e-3)


def test_time_left_weighs_the_runs_left_by_their_step_times(tmp_path):
  spec = load_study(
      os.path.join(REPO, "configs", "studies", "fashion_mnist_learned.py"))
  planned = spec_lib.plan(spec, str(tmp_path))
  *width_32, simclr_w64, clae_w64 = planned
  docs = os.path.join(REPO, "docs", "study_fashion_mnist_learned")
  step_times = cost.read_step_times(
      f"{docs}/step_time_w32.jsonl,{docs}/step_time_w64.jsonl")
  # The last width-32 run finished in this sitting, in 1.1x its step hours.
  last_hours = cost.step_hours(width_32[-1], step_times)
  left = [simclr_w64, clae_w64]
  text = cost.time_left(left, width_32[-1:], 1.1 * last_hours * 3600, step_times)
  hours_left = cost.step_hours(simclr_w64, step_times) + cost.step_hours(clae_w64, step_times)
  assert text.startswith(f"2 runs left, about {1.1 * hours_left * 60:.0f} min (")
  assert "x 1.10" in text
  # The width-64 pair takes over 6x the sitting's run, not 2x.
  assert hours_left > 6 * last_hours
  # Without a record of the runs left: this sitting's mean per run.
  text = cost.time_left(left, width_32[-1:], 600.0, step_times[:1])
  assert text == "2 runs left, about 20 min (this sitting's mean per run)"
  assert cost.time_left([], width_32[-1:], 600.0, step_times) == "no runs left"


def test_stats_against_textbook_values():
  # Student's t, 2-sided 95%: t(0.975, 4) = 2.7764; differences 1..5: mean 3, std sqrt(2.5).
  mean, half, n = stats.paired_interval([1.0, 2.0, 3.0, 4.0, 5.0])
  assert (mean, n) == (3.0, 5) and half == pytest.approx(2.7764 * 2.5 ** 0.5 / 5 ** 0.5, rel=1e-4)
  # 99% with 1 degree of freedom: t(0.995, 1) = 63.657.
  assert stats.paired_interval([0.0, 2.0], 0.99)[1] == pytest.approx(63.657, rel=1e-4)
  assert stats.mean_std([2.0, 4.0, 6.0]) == (4.0, 2.0, 3)
  assert stats.bonferroni_confidence(9) == pytest.approx(1 - 0.05 / 9)
  runs = {"a": {0: {"m": 3.0}, 1: {"m": 5.0}, 2: {"m": 1.0}}, "b": {0: {"m": 1.0}, 2: {"m": 2.0}}}
  assert stats.paired_values(runs, "a", "b", "m") == [2.0, -1.0]  # Seeds both have, by seed.


@pytest.mark.parametrize("study", ["study_fashion_mnist_learned", "study_fashion_mnist_width"])
def test_a_committed_study_report_regenerates_byte_for_byte(tmp_path, monkeypatch, study):
  """The report of docs/STUDY from its committed run records, with the command it names: the
  records still read (their configs in today's schema) and the report code is unchanged in
  effect."""
  docs = os.path.join(REPO, "docs", study)
  expected = open(os.path.join(docs, "report.md")).read()
  command = re.search(r"Produced by `(.*)`\.", expected).group(1)
  args = shlex.split(command)[3:]
  options = dict(a.split("=", 1) if "=" in a else (a, None) for a in args if a.startswith("--"))
  value = lambda name: options.get(name) or args[args.index(name) + 1]
  workdir = value("--workdir")
  monkeypatch.chdir(tmp_path)
  shutil.copytree(os.path.join(docs, "runs"), tmp_path / workdir / "runs")
  os.symlink(os.path.join(REPO, "docs"), tmp_path / "docs")
  os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")
  spec = load_study(value("--spec"))
  planned = spec_lib.plan(spec, workdir)
  for run in planned:
    runner.check_same_config(run, runner.read_record(run))
  step_times = cost.read_step_times(options.get("--step_times") or "")
  summaries = runner.summaries(planned)
  figure_names = re.findall(r"\[([\w.]+\.png)\]", expected)
  assert figure_names and report_lib.report_markdown(
      spec, planned, summaries, command, spec_lib.title_of(spec, workdir), figure_names,
      cost.step_time_ratios(spec, planned, step_times)) == expected


def test_damaged_run_records_are_set_aside_and_the_grid_goes_on(tmp_path, idx_dir):
  spec = spec_lib.parse(tiny_spec(write_config(tmp_path, idx_dir)))
  run = spec_lib.plan(spec, str(tmp_path / "study"))[0]
  os.makedirs(run.workdir)
  record = os.path.join(run.workdir, "study_run.json")
  for damage in ('{"evaluated": tr', "", "[1, 2]"):
    with open(record, "w") as f:
      f.write(damage)
    assert runner.read_record(run) == {"interrupted_segments": 1}  # Its time is lost.
    assert not os.path.exists(record)
  assert len([n for n in os.listdir(run.workdir) if n.startswith("study_run.json.damaged-")]) >= 1
  # A finished run whose eval.json is damaged is evaluated again; the damaged file is kept.
  runner.write_record(run, {"evaluated": True, "trained": True, "train_seconds": 1.0})
  with open(os.path.join(run.workdir, "eval.json"), "w") as f:
    f.write('{"knn_top1_backbone": 8')
  log = []
  runner._check_evaluation(run, log.append)
  assert "eval.json is damaged (not JSON: " in log[0] and log[0].endswith("evaluating it again")
  assert not runner.is_finished(run) and runner.read_record(run)["trained"]
  assert any(n.startswith("eval.json.damaged-") for n in os.listdir(run.workdir))


def test_imagenet_spec_plans_from_one_accelerators_step_time(tmp_path):
  """The ImageNet recipes (ResNet-50, 224 px, LARS 4096, bf16, records) and --plan's hours
  from the committed one-H200 record at batch 256, scaled to 16 such devices."""
  spec = load_study(os.path.join(REPO, "configs", "studies", "imagenet.py"))
  runs = spec_lib.plan(spec, str(tmp_path))
  by_name = {r.setting: r.config for r in runs}
  assert sorted(by_name) == ["imagenet100_baseline", "imagenet100_clae", "imagenet1k_baseline",
                             "imagenet1k_clae"]
  c = by_name["imagenet1k_clae"]
  assert (c.data.source, c.data.image_size, c.model.architecture, c.optim.name,
          c.train.batch_size, c.model.dtype, c.data.views.blur_prob) == (
              "records", 224, "resnet50", "lars", 4096, "bfloat16", 0.5)
  assert c.adv.enabled and not by_name["imagenet1k_baseline"].adv.enabled
  records = cost.read_step_times(os.path.join(REPO, "benchmarks", "records",
                                              "h200_resnet50_224.jsonl"))
  speed, copies = cost.measured_speed(records, c)
  assert copies == 16 and speed == pytest.approx(16 * records[0]["clae_images_per_s"])
  table = report_lib.plan_table(runs, records)
  row = next(l for l in table.splitlines() if l.startswith("| imagenet1k_clae "))
  hours = 100 * (1_281_167 // 4096) * 4096 / speed / 3600
  assert row.endswith(f"| {speed} (x16) | {hours:.1f} |")
