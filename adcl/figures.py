"""The pictures of a run, as matplotlib Figures drawn from plain arrays and records.

Nothing here loads a model or a checkpoint (adcl.inspect does): each function takes numbers
and returns a `matplotlib.figure.Figure`, which notebooks display and `save` writes as PNG.
Figures are built without pyplot, so no global figure state leaks between calls.
"""

import io
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

LOSS_TERMS = ("loss", "loss_clean", "loss_adv", "loss_gen")


def save(figure: Figure, path, dpi: int = 100) -> str:
  """Write `figure` as PNG at `path`, local or gs:// (parents created; written whole, then
  renamed, so a crash leaves the previous file)."""
  from adcl import paths
  png = io.BytesIO()
  figure.savefig(png, format="png", dpi=dpi, bbox_inches="tight")
  return str(paths.write_atomic(path, png.getvalue()))


def training_curves(records: Sequence[dict], title: str = "",
                    pixel_knn: Optional[float] = None) -> Figure:
  """Loss terms, kNN top-1, images/s and the learning rate against the step.

  records: metrics.jsonl lines ({'step': int, 'loss': float, ...}); a key missing from a
  record (kNN is logged only at evaluation steps) is simply not drawn at that step.
  pixel_knn: the kNN top-1 of the raw input pixels, drawn as the reference line the encoder
  has to clear.
  """
  figure = Figure(figsize=(17, 3.6), layout="constrained")
  losses, knn, speed, rate = figure.subplots(1, 4)
  for key in LOSS_TERMS:
    steps, values = _series(records, key)
    if len(values) and np.any(values != 0):  # A baseline's adversarial terms are all zero.
      losses.plot(steps, values, label=key, marker="." if len(values) < 30 else None)
  losses.set(xlabel="step", ylabel="loss", title="loss terms")
  losses.legend(fontsize=8)
  for axes, key, label in ((knn, "knn_top1", "kNN top-1 (%)"), (speed, "images_per_s", "images/s"),
                           (rate, "learning_rate", "learning rate")):
    steps, values = _series(records, key)
    axes.plot(steps, values, marker="o" if len(values) < 30 else None)
    axes.set(xlabel="step", ylabel=label, title=label)
    if key == "knn_top1" and pixel_knn is not None:
      axes.axhline(pixel_knn, color="grey", linestyle="--", label=f"raw pixels {pixel_knn:.2f}")
      axes.legend(fontsize=8)
    if not len(values):
      axes.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=axes.transAxes)
  if title:
    figure.suptitle(title)
  return figure


def _series(records: Sequence[dict], key: str):
  """(steps, values) of the records that hold `key`, as float arrays."""
  pairs = [(r["step"], r[key]) for r in records if key in r]
  return (np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float))


def adversarial_grid(clean: np.ndarray, adversarial: np.ndarray, eps: np.ndarray,
                     title: str = "") -> Figure:
  """Rows: clean first views, their adversarial views, and the perturbation magnified.

  clean, adversarial: [n, H, W, C] pixels in [0, 1]; eps: [C] the attack's bound in pixels.
  The perturbation row maps -eps..+eps to black..white (grey is zero), per channel.
  """
  delta = (adversarial - clean) / (2 * np.asarray(eps, np.float32)) + 0.5
  rows = (("clean view", clean), ("adversarial", adversarial), ("perturbation\n(±eps)", delta))
  n = len(clean)
  figure = Figure(figsize=(max(4.0, 1.3 * n), 4.3), layout="constrained")
  axes = figure.subplots(3, n, squeeze=False)
  for r, (label, images) in enumerate(rows):
    for c in range(n):
      image = np.clip(images[c], 0, 1)
      axes[r, c].imshow(image[..., 0] if image.shape[-1] == 1 else image,
                        cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
      axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(label, fontsize=7)
  if title:
    figure.suptitle(title)
  return figure


def pca_2d(features: np.ndarray) -> np.ndarray:
  """The 2-D principal-component projection of features [N, D] -> [N, 2] (centred).

  PCA rather than t-SNE/UMAP: deterministic, needs nothing beyond numpy, and distances along
  its axes mean what they say.
  """
  centred = np.asarray(features, np.float64) - np.mean(features, axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:2].T


def embedding_projection(points: np.ndarray, labels: np.ndarray,
                         class_names: Optional[Sequence[str]] = None, title: str = "") -> Figure:
  """Scatter of 2-D points [N, 2] coloured by class labels [N]."""
  figure = Figure(figsize=(6.5, 5.5), layout="constrained")
  axes = figure.subplots()
  classes = np.unique(labels)
  colours = _class_colours(len(classes))
  for colour, label in zip(colours, classes):
    chosen = labels == label
    name = class_names[label] if class_names is not None else str(label)
    axes.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colour, label=name, alpha=0.7)
  axes.legend(fontsize=7, markerscale=2, loc="best")
  axes.set(xlabel="PC 1", ylabel="PC 2", title=title or "test embeddings (PCA)")
  return figure


def _class_colours(n: int):
  from matplotlib import colormaps
  return colormaps["tab10" if n <= 10 else "tab20"](np.arange(n) % 20)


def comparison(names: Sequence[str], metrics: dict, title: str = "") -> Figure:
  """Grouped bars: one group per metric, one bar per run, each bar labelled with its value.

  metrics: {metric name: [value per run, in the order of `names`]} (percentages).
  """
  keys = list(metrics)
  figure = Figure(figsize=(max(6.0, 0.8 * len(keys) * max(2, len(names))), 4.5),
                  layout="constrained")
  axes = figure.subplots()
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    x = np.arange(len(keys)) + (i - (len(names) - 1) / 2) * width
    values = [metrics[k][i] for k in keys]
    bars = axes.bar(x, values, width, label=name)
    axes.bar_label(bars, fmt="%.1f", fontsize=7)
  axes.set_xticks(np.arange(len(keys)), keys, rotation=20, ha="right", fontsize=8)
  axes.set(ylabel="top-1 (%)", title=title or "runs compared")
  axes.legend(fontsize=8)
  return figure


def knn_curves(names: Sequence[str], series: Sequence[tuple], pixel_knn: Optional[float] = None,
               title: str = "") -> Figure:
  """kNN top-1 during training, one line per run, and the raw-pixel kNN as a reference.

  series: per run, (steps [n], kNN top-1 [n]) as logged in metrics.jsonl.
  """
  figure = Figure(figsize=(7, 4.2), layout="constrained")
  axes = figure.subplots()
  for name, (steps, values) in zip(names, series):
    axes.plot(steps, values, marker="o" if len(values) < 30 else None, label=name)
  if pixel_knn is not None:
    axes.axhline(pixel_knn, color="grey", linestyle="--", label=f"raw pixels {pixel_knn:.2f}")
  axes.set(xlabel="step", ylabel="kNN top-1 (%)", title=title or "kNN during training")
  axes.legend(fontsize=8)
  return figure


def study_settings(names: Sequence[str], values: dict, seconds: Sequence[Sequence[float]],
                   title: str = "") -> Figure:
  """One panel per metric and one of training wall time: a horizontal bar per setting at the
  mean over seeds, its sample std as an error bar, and every seed as a dot.

  values: {metric label: [[value per seed] per setting]}; seconds: [[s per seed] per setting].
  """
  panels = {**values, "train wall time (s)": seconds}
  figure = Figure(figsize=(3.6 * len(panels), 0.32 * len(names) + 1.6), layout="constrained")
  axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
  y = np.arange(len(names))
  for ax, (label, per_setting) in zip(axes, panels.items()):
    means = np.array([np.mean(v) if len(v) else np.nan for v in per_setting])
    stds = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_setting])
    ax.barh(y, means, xerr=stds, color="#9ecae1", ecolor="#333333", capsize=3)
    for row, seeds in enumerate(per_setting):
      ax.scatter(seeds, np.full(len(seeds), row), s=10, color="#08519c", zorder=3)
    finite = np.concatenate([np.asarray(v, float) for v in per_setting if len(v)])
    if label != "train wall time (s)" and finite.size:  # Accuracies: zoom onto the spread.
      span = max(finite.max() - finite.min(), 0.5)
      ax.set_xlim(finite.min() - 0.6 * span, finite.max() + 0.4 * span)
    ax.set(xlabel=label)
  axes[0].set_yticks(y, names, fontsize=8)
  axes[0].invert_yaxis()
  if title:
    figure.suptitle(title)
  return figure


def study_sweep(key: str, rows: Sequence[dict], metrics: Sequence[str], labels: dict,
                title: str = "") -> Figure:
  """Left: each metric (mean ± std over seeds) against the swept value; right: the first
  metric's difference to each setting's baseline (paired by seed).

  rows: {'x': value, metric: (mean, std, n), 'delta': (mean, std, n)} in sweep order.
  """
  figure = Figure(figsize=(10, 3.8), layout="constrained")
  values_ax, delta_ax = figure.subplots(1, 2)
  numeric = all(isinstance(r["x"], (int, float)) and not isinstance(r["x"], bool) for r in rows)
  x = np.array([r["x"] for r in rows], float) if numeric else np.arange(len(rows))
  for metric in metrics:
    mean = np.array([r[metric][0] for r in rows])
    std = np.nan_to_num(np.array([r[metric][1] for r in rows]))
    values_ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=labels[metric])
  values_ax.set(xlabel=key, ylabel="top-1 (%)", title="accuracy")
  values_ax.legend(fontsize=8)
  delta = np.array([r["delta"][0] for r in rows])
  delta_std = np.nan_to_num(np.array([r["delta"][1] for r in rows]))
  delta_ax.errorbar(x, delta, yerr=delta_std, marker="o", capsize=3, color="#d62728")
  delta_ax.axhline(0, color="grey", lw=1, ls="--")
  delta_ax.set(xlabel=key, ylabel="Δ top-1 (pp)", title=f"{labels[metrics[0]]}: − baseline")
  for ax in (values_ax, delta_ax):
    if numeric and np.all(x > 0) and x.max() / x.min() >= 8:
      ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(x, [str(r["x"]) for r in rows])
  if title:
    figure.suptitle(title)
  return figure


def study_cost(points: Sequence[dict], metrics: Sequence[str], labels: dict,
               title: str = "", cost_label: str = "train wall time / baseline's") -> Figure:
  """One panel per metric: each setting's paired difference to its baseline (mean and 95%
  interval over seeds) against its cost relative to the baseline (`cost_label`).

  points: {'setting': name, 'cost': ratio, metric: (mean, half-width, n)} per setting.
  """
  figure = Figure(figsize=(4.2 * len(metrics), 3.8), layout="constrained")
  axes = figure.subplots(1, len(metrics), squeeze=False)[0]
  for ax, metric in zip(axes, metrics):
    for point in points:
      mean, half, n = point[metric]
      ax.errorbar([point["cost"]], [mean], yerr=[[0 if np.isnan(half) else half]] * 2,
                  marker="o" if n > 1 else "x", capsize=3)
      ax.annotate(f"{point['setting']} ({n})", (point["cost"], mean), fontsize=7,
                  xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set(xlabel=cost_label, ylabel="Δ top-1 (pp)",
           title=f"{labels[metric]}: − baseline")
  if title:
    figure.suptitle(title)
  return figure
