"""The notebook API: a checkpoint as an object with the encoder, kNN and the figures.

    run = adcl.inspect.load("workdirs/quickstart")          # latest step; step=N for another
    images, labels = run.load_split("test", limit=2000)     # uint8 [N, H, W, C], int [N]
    features = run.embed(images)                           # np.ndarray [N, D]
    run.figure_curves(); run.figure_adversarial(images[:8]); run.figure_embedding(images, labels)
    run.write_figures(images, labels)                      # PNGs in workdir/figures/

The checkpoint is restored onto the local default device whatever topology wrote it (a TPU
pod's checkpoint opens on a laptop CPU), and the model is rebuilt from the config saved with it.
Only the config's data *source* is read (load_split); the training input pipeline is not.
"""

import dataclasses
import functools
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from adcl import checkpoints, evaluate, figures, models, paths, step as step_lib
from adcl.data import pipeline


@dataclasses.dataclass
class Run:
  """One checkpoint of one workdir: its config, step and frozen variables."""

  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model: models.ContrastiveModel
  params: dict
  batch_stats: dict  # Both BN sets; inference uses the clean one.
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  # ---- Data and features.

  def load_split(self, split: str = "test", limit: Optional[int] = None):
    """Images (uint8 [N, H, W, C]) and labels ([N]) of `split` from the config's data source;
    the first `limit` of them if given."""
    from adcl.data import sources
    images, labels = sources.load(self.config.data, split)
    return (images, labels) if limit is None else (images[:limit], labels[:limit])

  def normalize(self, images: np.ndarray) -> np.ndarray:
    """uint8 pixels [N, H, W, C] (or [N, H, W]) -> the encoder's float32 input [N, S, S, C]."""
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C] or [N, H, W]; got shape {images.shape}")
    return pipeline.eval_images(images, self.config.data)

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
    return evaluate.embed_all(self._embed_fn(kind), self.params, self.batch_stats, x,
                              self.config.eval.batch_size, NamedSharding(self._mesh, P("data")))

  def knn(self, train_features, train_labels, test_features, test_labels,
          k: Optional[int] = None, sigma: Optional[float] = None) -> float:
    """Weighted kNN top-1 (percent, REFERENCE §5); k and sigma default to the run's config."""
    sigma = sigma or self.config.eval.knn_sigma or self.config.loss.temperature
    return evaluate.knn_accuracy(np.asarray(train_features), np.asarray(train_labels),
                                 np.asarray(test_features), np.asarray(test_labels),
                                 k or self.config.eval.knn_k, sigma)

  def adversarial_views(self, images: np.ndarray, seed: int = 0):
    """The training step's first view of each image and its adversarial view, in pixels.

    images: uint8 [n, H, W, C]. The views are drawn by the training augmentation (seeded),
    the attack is the config's (adv.*, with the adversarial BN in training mode, exactly as in
    the step), also for a baseline run, which trained without it.
    Returns (view1, x_adv): float32 [n, S, S, C] in [0, 1].
    """
    import tensorflow as tf
    from adcl.data import augment

    images = np.asarray(images)
    images = images[..., None] if images.ndim == 3 else images
    channels = images.shape[-1]
    mean, std = pipeline.normalization(self.config.data, channels)
    view1, _ = augment.two_views(tf.constant(images), tf.constant([seed, 0], tf.int32),
                                 self.config.data, mean, std)
    x1 = jnp.asarray(view1.numpy())
    x_adv = self._attack(x1, jax.random.PRNGKey(seed), channels)
    to_pixels = lambda x: np.asarray(x) * std + mean
    return to_pixels(x1), to_pixels(x_adv)

  def _attack(self, x1, key, channels):
    if "attack" not in self._compiled:
      forward = step_lib.make_forward(self.model)
      self._compiled["attack"] = jax.jit(lambda p, s, x, k: step_lib.adversarial_view(
          forward, p, s, x, k, self.config, channels)[0])
    return self._compiled["attack"](self.params, self.batch_stats, x1, key)

  # ---- Logs and figures.

  def metrics(self) -> list[dict]:
    """metrics.jsonl as records, one per step (a step logged again after a resume: the last)."""
    by_step = {r["step"]: r for r in paths.read_jsonl(paths.resolve(self.workdir) / "metrics.jsonl")}
    return [by_step[s] for s in sorted(by_step)]

  @property
  def name(self) -> str:
    return f"{os.path.basename(os.path.normpath(self.workdir))} @ step {self.step}"

  def figure_curves(self):
    return figures.training_curves(self.metrics(), title=self.name)

  def figure_adversarial(self, images: np.ndarray, seed: int = 0):
    """Clean first views, adversarial views and the perturbation, for uint8 images [n, ...]."""
    view1, x_adv = self.adversarial_views(images, seed)
    eps, _, _ = step_lib.attack_bounds(self.config, view1.shape[-1])
    _, std = pipeline.normalization(self.config.data, view1.shape[-1])
    eps_pixels = eps * std
    return figures.adversarial_grid(
        view1, x_adv, eps_pixels,
        title=f"{self.name}: {self.config.adv.method} eps = {float(eps_pixels[0]) * 255:.2f}/255")

  def figure_embedding(self, images: np.ndarray, labels: np.ndarray, kind: str = "embedding"):
    """2-D PCA of the features of `images`, coloured by `labels`."""
    points = figures.pca_2d(self.embed(images, kind))
    return figures.embedding_projection(points, np.asarray(labels),
                                        title=f"{self.name}: {kind} (PCA)")

  def write_figures(self, images: np.ndarray, labels: np.ndarray, num_adversarial: int = 8) -> list:
    """training_curves.png, adversarial_views.png and embedding_pca.png in workdir/figures/."""
    directory = paths.resolve(self.workdir) / "figures"
    drawn = {"training_curves.png": self.figure_curves(),
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
  ckpt = checkpoints.Checkpoints(workdir, read_only=True)
  available = list(ckpt.manager.all_steps())
  if not available:
    raise ValueError(f"{ckpt.directory}: no checkpoint to load")
  step = available[-1] if step is None else int(step)
  if step not in available:
    raise ValueError(f"{ckpt.directory}: no checkpoint at step {step}; steps: {available}")
  config = ml_collections.ConfigDict(ckpt.saved_config(step))
  state = ckpt.restore_raw(step)
  ckpt.close()
  model = models.from_config(config.model)
  _check_fits(model, config, state, str(ckpt.directory / str(step)))
  return Run(str(paths.resolve(workdir)), step, config, model, state["params"],
             state["batch_stats"])


def _check_fits(model, config, state: dict, where: str) -> None:
  """Raise ValueError naming the first parameter whose shape differs from the model's."""
  kernel = state["params"].get("encoder", {}).get("stem_conv", {}).get("kernel")
  channels = kernel.shape[2] if kernel is not None else 3
  size = config.data.image_size
  expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((2, size, size, channels)), train=True))
  describe = (f"model {config.model.architecture} width {config.model.width} projector "
              f"{tuple(config.model.projector)}")
  for collection in ("params", "batch_stats"):
    want = dict(jax.tree_util.tree_leaves_with_path(expected[collection]))
    have = dict(jax.tree_util.tree_leaves_with_path(state[collection]))
    for path in sorted(set(want) | set(have), key=str):
      name = collection + jax.tree_util.keystr(path)
      if path not in have or path not in want:
        raise ValueError(f"{where} does not fit its saved config ({describe}): {name} is "
                         f"{'missing' if path not in have else 'not in that model'}")
      if tuple(want[path].shape) != tuple(have[path].shape):
        raise ValueError(f"{where} does not fit its saved config ({describe}): {name} has shape "
                         f"{tuple(have[path].shape)}, the model wants {tuple(want[path].shape)}")
