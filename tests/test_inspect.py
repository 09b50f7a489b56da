"""The notebook API, the figures, adcl.compare and the notebook itself, on tiny trained runs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from adcl import compare, evaluate, figures, inspect, train
from conftest import cli_env, tiny_config, write_idx_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two 4-step runs of the tiny config (checkpoints 2 and 4): the SimCLR baseline and CLAE,
  both evaluated; and the config they trained with. Shared by every test of this file (tests
  that change a run work on a copy)."""
  config = tiny_config(write_idx_dataset(tmp_path_factory.mktemp("idx")))
  root = tmp_path_factory.mktemp("runs")
  workdirs = {}
  for name, adversarial in (("baseline", False), ("clae", True)):
    c = config.copy_and_resolve_references()
    c.adv.enabled = adversarial
    workdirs[name] = str(root / name)
    train.run(c, workdirs[name])
    evaluate.evaluate_workdir(workdirs[name], robust_examples=16, figures=False)
  return workdirs, config


@pytest.fixture
def runs(trained):
  return trained[0]


def test_embed_counts_every_image_once(runs):
  run = inspect.load(runs["clae"])
  images, labels = run.load_split("test")
  assert run.step == 4 and len(images) == 40  # 40 = 2.5 eval batches of 16.
  together = run.embed(images)
  one_by_one = np.concatenate([run.embed(images[i:i + 1]) for i in range(len(images))])
  assert together.shape == (40, 4 * 2)  # resnet_tiny width 4: 2 x width pooled channels.
  np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)
  z = run.embed(images, "embedding")
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
  train_images, train_labels = run.load_split("train")
  knn = run.knn(run.embed(train_images), train_labels, together, labels)
  assert knn == pytest.approx(json.load(open(os.path.join(runs["clae"], "eval.json")))
                              ["knn_top1_backbone"])


def test_adversarial_views_stay_within_eps_and_change_the_image(runs):
  run = inspect.load(runs["clae"])
  images, _ = run.load_split("test", limit=6)
  view1, x_adv = run.adversarial_views(images)
  eps_pixels = run.config.adv.eps * run.config.data.std[0]  # eps is in normalised units.
  delta = np.abs(x_adv - view1)
  assert view1.shape == (6, 8, 8, 1)
  assert delta.max() <= eps_pixels * (1 + 1e-4)
  assert np.mean(np.isclose(delta, eps_pixels, rtol=1e-3)) > 0.9  # FGSM: a sign step.


def test_figures_are_written_and_not_blank(runs):
  run = inspect.load(runs["clae"])
  images, labels = run.load_split("test")
  paths = run.write_figures(images, labels)
  assert [os.path.basename(p) for p in paths] == [
      "training_curves.png", "adversarial_views.png", "embedding_pca.png"]
  for path in paths:
    assert os.path.dirname(path) == os.path.join(runs["clae"], "figures")
    pixels = mpimg.imread(path)
    assert os.path.getsize(path) > 5000 and pixels.shape[0] > 200 and pixels.std() > 0.05, path


def test_load_refuses_bad_input(runs, tmp_path):
  with pytest.raises(ValueError, match="no such checkpoint directory"):
    inspect.load(str(tmp_path / "nothing"))
  with pytest.raises(ValueError, match=r"no checkpoint at step 3; steps: \[2, 4\]"):
    inspect.load(runs["clae"], step=3)
  # A checkpoint whose saved config names another model (a copied or edited workdir).
  other = tmp_path / "other"
  shutil.copytree(runs["clae"], other)
  config_file = other / "checkpoints" / "4" / "config" / "metadata"
  saved = json.load(open(config_file))
  saved["model"]["width"] = 8
  config_file.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"does not fit its saved config \(model resnet_tiny "
                     r"width 8.*Conv_0.*has shape \(3, 3, 4, 4\), the model wants \(3, 3, 8, 8\)"):
    inspect.load(str(other))


def test_compare_table_and_chart(runs, tmp_path):
  output = tmp_path / "cmp"
  table = compare.compare([runs["baseline"], runs["clae"]], output=str(output))
  baseline, clae = (json.load(open(os.path.join(runs[n], "eval.json"))) for n in runs)
  row = next(l for l in table.splitlines() if l.startswith("| linear_top1 |"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells == ["linear_top1", f"{baseline['linear_top1']:.2f}", f"{clae['linear_top1']:.2f}",
                   f"{clae['linear_top1'] - baseline['linear_top1']:+.2f}"]
  assert table.splitlines()[0] == "| metric | baseline | clae | clae − baseline |"
  assert "| images_per_s |" in table and "| step | 4 | 4 | +0 |" in table
  assert (output / "compare.md").read_text() == table
  assert mpimg.imread(output / "compare.png").std() > 0.05
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cli = lambda *a: subprocess.run([sys.executable, "-m", "adcl.compare", *a], capture_output=True,
                                  text=True, cwd=REPO, env=env, timeout=300)
  alone = cli(runs["clae"])
  assert alone.returncode == 2 and "two or more workdirs" in alone.stderr
  missing = cli(runs["clae"], str(tmp_path / "nothing"), "--output", str(tmp_path / "x"))
  assert missing.returncode == 1 and "neither eval.json nor metrics.jsonl" in missing.stderr
  assert not (tmp_path / "x").exists()


def test_compare_draws_knn_curves_with_the_pixel_reference(runs, tmp_path):
  copies = []
  for name in ("baseline", "clae"):
    copy = tmp_path / name
    shutil.copytree(runs[name], copy)
    with open(copy / "metrics.jsonl", "a") as f:  # kNN at two steps, as eval.every logs it.
      f.write(json.dumps({"step": 2, "knn_top1": 20.0}) + "\n")
    copies.append(str(copy))
  assert compare.knn_series(copies[0])[0] == [2, 4]
  compare.compare(copies, output=str(tmp_path / "cmp"))
  assert mpimg.imread(tmp_path / "cmp" / "compare_knn.png").std() > 0.05
  pixel_knn = json.load(open(os.path.join(runs["clae"], "eval.json")))["pixels_knn_top1"]
  figure = figures.knn_curves(["a"], [([2, 4], [20.0, 30.0])], pixel_knn)
  assert [tuple(l.get_ydata()) for l in figure.axes[0].lines] == [(20.0, 30.0),
                                                                    (pixel_knn, pixel_knn)]


def test_notebook_runs_top_to_bottom(runs):
  import nbclient
  import nbformat
  notebook = nbformat.read(os.path.join(REPO, "notebooks", "inspect_checkpoint.ipynb"), 4)
  os.environ["ADCL_WORKDIR"] = runs["clae"]  # The kernel inherits the test's environment.
  try:
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
  finally:
    del os.environ["ADCL_WORKDIR"]
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs)
  assert "clae @ step 4" in text and "kNN top-1 on backbone features" in text
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # Curves, views, PCA.


def test_incompatible_checkpoint_is_refused_and_kept(trained, tmp_path):
  runs, config = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(runs["clae"], workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints", "4")))
  steps_before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  metrics_before = open(os.path.join(workdir, "metrics.jsonl")).read()
  changed = config.copy_and_resolve_references()
  changed.model.width = 8
  changed.train.num_steps = 6
  with pytest.raises(ValueError, match=r"model.width \(checkpoint 4, config 8\)"):
    train.run(changed, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "4"))) == before
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == steps_before == ["2", "4"]
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == metrics_before


def test_evaluate_cli_writes_eval_json_and_refuses_bad_input(runs, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(runs["clae"], workdir)
  os.remove(workdir / "eval.json")
  env = cli_env(devices=8)  # The devices the fixture evaluated on: the same numbers.
  evaluate_cli = lambda *a: subprocess.run([sys.executable, "-m", "adcl.evaluate", *a],
                                           capture_output=True, text=True, cwd=REPO, env=env,
                                           timeout=600)
  result = evaluate_cli("--workdir", str(workdir), "--robust_examples", "16")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(workdir / "eval.json"))
  for key in ("knn_top1_backbone", "knn_top1_embedding", "linear_top1",
              "linear_official_best_test_epoch_top1", "robust_pgd20_eps8.00_top1"):
    assert 0 <= report[key] <= 100, key
  assert report["test_images"] == 40 and report["step"] == 4
  assert report["robust_pgd20_eps8.00_top1"] <= 100
  # The raw-pixel baseline at the run's input size, and the encoder's margin over it.
  assert report["pixels_features"] == 8 * 8 * 1
  for key, pixel_key in (("knn_top1_backbone", "pixels_knn_top1"),
                         ("knn_top1_embedding", "pixels_knn_top1"),
                         ("linear_top1", "pixels_linear_top1")):
    assert 0 <= report[pixel_key] <= 100
    assert report[f"{key}_minus_pixels"] == pytest.approx(report[key] - report[pixel_key])
  # The command and the in-process evaluation (what the fixture wrote) are the same numbers.
  assert report == json.load(open(os.path.join(runs["clae"], "eval.json")))
  # No library's warning wall (the linear probe once printed XLA's constant-folding warnings).
  assert "Constant folding" not in result.stderr and len(result.stderr.splitlines()) < 10
  missing_step = evaluate_cli("--workdir", str(workdir), "--checkpoint", "7")
  assert missing_step.returncode == 1
  assert "no checkpoint at step 7; steps: [2, 4]" in missing_step.stderr.strip().splitlines()[-1]
  empty = evaluate_cli("--workdir", str(tmp_path / "nothing"))
  assert empty.returncode == 1 and "no such checkpoint directory" in empty.stderr
  assert not (tmp_path / "nothing").exists()
  # A checkpoint whose saved config names another model.
  config_file = workdir / "checkpoints" / "4" / "config" / "metadata"
  saved = json.load(open(config_file))
  saved["model"]["projector"] = [16, 4]
  config_file.write_text(json.dumps(saved))
  figures_before = sorted(os.listdir(workdir / "figures"))
  other_model = evaluate_cli("--workdir", str(workdir))
  assert other_model.returncode == 1
  assert "does not fit its saved config" in other_model.stderr.strip().splitlines()[-1]
  assert json.load(open(workdir / "eval.json")) == report  # Nothing written over.
  assert sorted(os.listdir(workdir / "figures")) == figures_before == [
      "adversarial_views.png", "embedding_pca.png", "training_curves.png"]


# Damage as a user meets it: a copy cut mid-line, a file that is not JSON, an emptied file.
DAMAGES = {"cut": lambda text: text[:len(text) // 2], "not_json": lambda text: "<html>oops",
           "empty": lambda text: ""}


def _damage(path, how):
  text = open(path).read()
  with open(path, "w") as f:
    f.write(DAMAGES[how](text))


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_a_damaged_eval_json_is_named_in_one_line(runs, tmp_path, how):
  workdir = tmp_path / "run"
  shutil.copytree(runs["clae"], workdir)
  _damage(workdir / "eval.json", how)
  with pytest.raises(ValueError) as error:
    compare.summarize(str(workdir))
  message = str(error.value)
  assert "\n" not in message and f"{workdir / 'eval.json'} is damaged (" in message
  assert ("empty" if how == "empty" else "not JSON") in message
  assert "python -m adcl.evaluate --workdir" in message
  # The notebook's curves need it only for a reference line: drawn without it.
  run = inspect.load(str(workdir))
  assert len(run.figure_curves().axes) == 4
  assert (workdir / "eval.json").exists()  # Nothing deleted.


def test_a_damaged_eval_json_is_one_line_from_the_compare_command(runs, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(runs["clae"], workdir)
  _damage(workdir / "eval.json", "cut")
  result = subprocess.run([sys.executable, "-m", "adcl.compare", runs["baseline"], str(workdir),
                           "--output", str(tmp_path / "out")], cwd=REPO, env=cli_env(devices=1),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("adcl.compare: error: ") and "eval.json is damaged (not JSON" in last


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_a_damaged_metrics_jsonl_is_read_around_and_training_goes_on(trained, tmp_path, how):
  runs, config = trained
  workdir = tmp_path / "run"
  shutil.copytree(runs["clae"], workdir)
  lines = open(workdir / "metrics.jsonl").read().splitlines()
  _damage(workdir / "metrics.jsonl", how)
  readable = {"cut": 1, "not_json": 0, "empty": 0}[how]  # Lines that still parse.
  assert len(inspect.load(str(workdir)).metrics()) == readable < len(lines)
  assert compare.summarize(str(workdir))["linear_top1"] >= 0
  c = config.copy_and_resolve_references()
  c.adv.enabled, c.train.num_steps = True, 6
  train.run(c, str(workdir))  # Resumes at step 4; the damaged file is kept as a copy.
  steps = [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl")]
  assert steps[-1] == 6 and len(steps) == readable + 1  # The tiny config logs every 2 steps.
  copies = [n for n in os.listdir(workdir) if n.startswith("metrics.jsonl.damaged-")]
  assert len(copies) == (how != "empty")  # An empty file has no damaged line to keep.


def test_a_damaged_checkpoint_config_is_named_and_set_aside_on_resume(trained, tmp_path):
  runs, config = trained
  workdir = tmp_path / "run"
  shutil.copytree(runs["clae"], workdir)
  _damage(workdir / "checkpoints" / "4" / "config" / "metadata", "cut")
  with pytest.raises(ValueError, match=r"checkpoints/4/config is damaged \(") as error:
    inspect.load(str(workdir))
  assert "\n" not in str(error.value)
  assert inspect.load(str(workdir), step=2).step == 2  # The one before still loads.
  c = config.copy_and_resolve_references()
  c.adv.enabled, c.train.num_steps = True, 6
  train.run(c, str(workdir))  # Sets checkpoint 4 aside, resumes from 2.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
  assert [n.split("-")[0] for n in os.listdir(workdir / "damaged_checkpoints")] == ["4"]


def test_a_checkpoint_from_before_a_key_existed_still_loads(runs, tmp_path):
  """A saved config is read into today's schema: a key added since takes its default, a key
  since retired is dropped."""
  workdir = tmp_path / "run"
  shutil.copytree(runs["clae"], workdir)
  for step in ("2", "4"):
    path = workdir / "checkpoints" / step / "config" / "metadata"
    saved = json.loads(path.read_text())
    del saved["adv"]["fraction"], saved["model"]["remat"], saved["optim"]["schedule"]
    saved["model"]["retired_switch"] = "auto"  # A key adcl no longer has.
    path.write_text(json.dumps(saved))
  run = inspect.load(str(workdir))
  assert run.config.adv.fraction == 1.0 and run.config.optim.schedule == "constant"
  assert "retired_switch" not in run.config.model
  assert run.evaluate(robust_examples=0, limit=32)["knn_top1_backbone"] >= 0
