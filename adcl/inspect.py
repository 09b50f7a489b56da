"""The notebook API: a checkpoint as an object with the encoder, kNN and the figures.

    import adcl.xla_cpu; adcl.xla_cpu.apply_defaults()     # optional: adcl's CPU speed-ups
    run = adcl.inspect.load("workdirs/quickstart")          # latest step; step=N for another
    images, labels = run.load_split("test", limit=2000)     # uint8 [N, H, W, C], int [N]
    features = run.embed(images)                           # np.ndarray [N, D]
    run.evaluate()                                         # eval.json's metrics, computed here
    run.figure_curves(); run.figure_adversarial(images[:8]); run.figure_embedding(images, labels)
    run.write_figures(images, labels)                      # PNGs in workdir/figures/

The checkpoint is restored onto the local default device whatever topology wrote it (a TPU
pod's checkpoint opens on a laptop CPU), and the model is rebuilt from the config saved with it
(adcl.build.restore). Only the config's data *source* is read (load_split); the training input
pipeline is not. Metrics come from adcl.evaluation, the same code as `python -m adcl.evaluate`.
"""

import dataclasses
import functools
import logging
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from adcl import build, errors, figures, losses, paths, step as step_lib
from adcl.data import normalize
from adcl.evaluation import knn as knn_lib, protocol, splits


@dataclasses.dataclass
class Run:
  """One checkpoint of one workdir: its config, step and frozen variables."""

  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model: object  # adcl.models.ContrastiveModel.
  variables: dict  # {'params', 'batch_stats'}; both BN sets, inference uses the clean one.
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def params(self) -> dict:
    return self.variables["params"]

  @property
  def batch_stats(self) -> dict:
    return self.variables["batch_stats"]

  # ---- Data and features.

  def load_split(self, split: str = "test", limit: Optional[int] = None):
    """Images (uint8 [N, H, W, C]) and labels ([N]) of `split` from the config's data source;
    the first `limit` of them if given (records: read only those)."""
    data = splits.load_split(self.config, split)
    return data.head(len(data) if limit is None else limit)

  def normalize(self, images: np.ndarray) -> np.ndarray:
    """uint8 pixels [N, H, W, C] (or [N, H, W]) -> the encoder's float32 input [N, S, S, C]."""
    return normalize.eval_images(images, self.config.data)

  def embed(self, images: np.ndarray, kind: str = "backbone") -> np.ndarray:
    """Features of uint8 `images` [N, H, W(, C)] with the clean BN in inference mode.

    kind: 'backbone' (pooled trunk, [N, C]) or 'embedding' (unit projector output, [N, D]).
    Every image is embedded exactly once (the last batch is padded, then cut).
    """
    return self.embed_normalized(self.normalize(images), kind)

  def embed_normalized(self, x: np.ndarray, kind: str = "backbone") -> np.ndarray:
    """As `embed`, for inputs already normalised ([N, S, S, C] float32); kind 'both' gives
    (backbone, embedding) from one forward pass."""
    if kind not in ("backbone", "embedding", "both"):
      raise ValueError(f"kind={kind!r}; choose 'backbone', 'embedding' or 'both'")
    return protocol.embed(self._embed_fn(kind), self.variables, x, self.config.eval.batch_size,
                          self._mesh)

  def knn(self, train_features, train_labels, test_features, test_labels,
          k: Optional[int] = None, sigma: Optional[float] = None) -> float:
    """Weighted kNN top-1 (percent, docs/method.md §5); k and sigma default to the config's."""
    default_k, default_sigma = protocol.knn_settings(self.config)
    return knn_lib.knn_accuracy(np.asarray(train_features), np.asarray(train_labels),
                                np.asarray(test_features), np.asarray(test_labels),
                                k or default_k, sigma or default_sigma)

  def evaluate(self, robust_examples: int = 1000, limit: Optional[int] = None) -> dict:
    """The metrics `python -m adcl.evaluate` writes to eval.json (adcl.evaluation.protocol),
    on the first `limit` images of each split if given, without writing anything."""
    data = {}
    for split in ("train", "test"):
      whole = splits.load_split(self.config, split)  # Records: read a chunk at a time.
      data[split] = whole if limit is None else splits.ArraySplit(*whole.head(limit))
    return {"step": self.step, **protocol.evaluate(self.model, self.variables, self.config, data,
                                                   robust_examples, mesh=self._mesh)}

  def adversarial_views(self, images: np.ndarray, seed: int = 0):
    """The training step's first view of each image and its adversarial view, in pixels.

    images: uint8 [n, H, W, C]. The views are drawn by the training augmentation (the jax one
    of adcl/data/views.py, seeded), the attack is the config's (adv.*, with the adversarial BN
    in training mode, exactly as in the step), also for a baseline run, which trained without
    it. No TensorFlow.
    Returns (view1, x_adv): float32 [n, S, S, C] in [0, 1].
    """
    from adcl.data import views

    images = np.asarray(images)
    images = images[..., None] if images.ndim == 3 else images
    channels = images.shape[-1]
    mean, std = normalize.normalization(self.config.data, channels)
    name = f"views{channels}"
    if name not in self._compiled:  # Compiled: op by op, the views are hundreds of compiles.
      recipe = views.recipe(self.config.data, channels)
      self._compiled[name] = jax.jit(lambda x, key: views.two_views(x, key, recipe)[0])
    x1 = self._compiled[name](jnp.asarray(images), jax.random.PRNGKey(seed))
    x_adv = self._attack(x1, jax.random.PRNGKey(seed), channels)
    to_pixels = lambda x: np.asarray(x) * std + mean
    return to_pixels(x1), to_pixels(x_adv)

  def _attack(self, x1, key, channels):
    if "attack" not in self._compiled:
      forward = step_lib.make_forward(self.model)
      attack = self._attack_settings(channels)
      loss_fn, tau = losses.get(self.config.loss.name), self.config.loss.temperature
      self._compiled["attack"] = jax.jit(lambda p, s, x, k: step_lib.adversarial_view(
          forward, p, s, x, k, attack, loss_fn, tau)[0])
    return self._compiled["attack"](self.params, self.batch_stats, x1, key)

  def _attack_settings(self, channels: int) -> step_lib.Attack:
    """The config's attack, also for a baseline run (which trained without it)."""
    config = self.config.copy_and_resolve_references()
    config.adv.enabled = True
    return build.attack(config, channels)

  # ---- Logs and figures.

  def metrics(self) -> list[dict]:
    """metrics.jsonl as records, one per step (a step logged again after a resume: the last)."""
    by_step = {r["step"]: r for r in paths.read_jsonl(paths.resolve(self.workdir) / "metrics.jsonl")
               if "step" in r}
    return [by_step[s] for s in sorted(by_step)]

  @property
  def name(self) -> str:
    return f"{os.path.basename(os.path.normpath(self.workdir))} @ step {self.step}"

  def figure_curves(self, pixel_knn: Optional[float] = None):
    """Loss, kNN and images/s against the step; the kNN panel's reference line is `pixel_knn`,
    else the raw-pixel kNN of the workdir's eval.json (if `adcl.evaluate` wrote one)."""
    if pixel_knn is None:
      try:
        evaluated = paths.read_json_object(paths.resolve(self.workdir) / "eval.json") or {}
      except errors.DamagedFile as error:  # The curves do not need it: drawn without the line.
        logging.getLogger("absl").warning("%s; the curves are drawn without the pixel line", error)
        evaluated = {}
      pixel_knn = evaluated.get("pixels_knn_top1")
    return figures.training_curves(self.metrics(), title=self.name, pixel_knn=pixel_knn)

  def figure_adversarial(self, images: np.ndarray, seed: int = 0):
    """Clean first views, adversarial views and the perturbation, for uint8 images [n, ...]."""
    view1, x_adv = self.adversarial_views(images, seed)
    channels = view1.shape[-1]
    _, std = normalize.normalization(self.config.data, channels)
    eps_pixels = self._attack_settings(channels).eps * std
    return figures.adversarial_grid(
        view1, x_adv, eps_pixels,
        title=f"{self.name}: {self.config.adv.method} eps = {float(eps_pixels[0]) * 255:.2f}/255")

  def figure_embedding(self, images: np.ndarray, labels: np.ndarray, kind: str = "embedding"):
    """2-D PCA of the features of `images`, coloured by `labels`."""
    points = figures.pca_2d(self.embed(images, kind))
    return figures.embedding_projection(points, np.asarray(labels),
                                        title=f"{self.name}: {kind} (PCA)")

  def write_figures(self, images: np.ndarray, labels: np.ndarray, num_adversarial: int = 8,
                    pixel_knn: Optional[float] = None) -> list:
    """training_curves.png, adversarial_views.png and embedding_pca.png in workdir/figures/."""
    directory = paths.resolve(self.workdir) / "figures"
    drawn = {"training_curves.png": self.figure_curves(pixel_knn),
             "adversarial_views.png": self.figure_adversarial(images[:num_adversarial]),
             "embedding_pca.png": self.figure_embedding(images, labels)}
    return [figures.save(figure, directory / name) for name, figure in drawn.items()]

  # ---- Compiled pieces, built once per Run.

  @functools.cached_property
  def _mesh(self):
    return step_lib.data_mesh()

  def _embed_fn(self, kind: str):
    if kind not in self._compiled:
      self._compiled[kind] = step_lib.make_embed_fn(self.model, kind, self._mesh)
    return self._compiled[kind]


def load(workdir: str, step: Optional[int] = None) -> Run:
  """The checkpoint `step` (default: the latest) of `workdir` as a Run.

  Raises ValueError (one line, naming the directory) if there is no checkpoint, no such step,
  or the saved parameters do not fit the model of the saved config.
  """
  restored = build.restore(workdir, step)
  return Run(restored.workdir, restored.step, restored.config, restored.model,
             restored.variables)
