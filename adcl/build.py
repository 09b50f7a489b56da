"""The one place a config becomes what a run needs: model, optimiser, state, compiled step.

    trainer = build.trainer(config, image_shape=(32, 32, 3), steps_per_epoch=390,
                            total_steps=39_000)
    state = trainer.init_state()            # or restore into trainer.abstract_state()
    state, metrics = trainer.train_step(state, batch)
    h, z = trainer.embed_fn("both")(state.params, state.batch_stats, x)

    restored = build.restore("workdirs/quickstart")   # a checkpoint, for inference
    restored.model, restored.variables, restored.config, restored.step

`adcl.train`, the evaluation, the notebook API, the benchmarks and the tests all build here.
Below this module no ConfigDict travels: the step, the attack and the objective take the values
they use (the loss function and its tau, an `adcl.step.Attack` with eps per channel).
"""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adcl import checkpoints, losses, optim, paths, step as step_lib, xla_cpu
from adcl.data import normalize, views as data_views
from adcl.models import ContrastiveModel


def model(model_config: ml_collections.ConfigDict) -> ContrastiveModel:
  """The encoder + projector of `config.model`."""
  return ContrastiveModel(
      architecture=model_config.architecture, width=model_config.width,
      stem=model_config.stem, projector=tuple(model_config.projector),
      dtype=jnp.dtype(model_config.dtype), remat=bool(model_config.remat))


def attack(config: ml_collections.ConfigDict, channels: int) -> Optional[step_lib.Attack]:
  """The step's attack from `config.adv` (None when adv.enabled is False), every radius
  converted to normalised units per channel (adv.eps_units 'pixel' divides by data.std)."""
  if not config.adv.enabled:
    return None
  adv = config.adv
  mean, std = normalize.normalization(config.data, channels)
  scale = 1 / std if adv.eps_units == "pixel" else np.ones(channels, np.float32)
  return step_lib.Attack(
      eps=(adv.eps * scale).astype(np.float32), alpha=float(adv.alpha), method=adv.method,
      shared_delta=bool(adv.shared_delta), gen_bn_updates=adv.gen_bn_updates,
      pgd_steps=adv.pgd_steps, pgd_step_size=(adv.pgd_step_size * scale).astype(np.float32),
      pgd_random_start=adv.pgd_random_start,
      clip=normalize.pixel_range(mean, std) if adv.clip_to_pixel_range else None,
      fraction=float(adv.fraction))


@dataclasses.dataclass
class Trainer:
  """Everything a training run needs, built once from a config (`trainer()`)."""

  model: ContrastiveModel
  tx: optax.GradientTransformation
  mesh: Mesh
  image_shape: tuple  # (H, W, C) of the step's input.
  seed: int
  train_step: Callable  # Jitted, state donated: (TrainState, batch) -> (TrainState, metrics).
  features: str  # What embed_fn() returns by default: 'embedding' or 'backbone'.
  learning_rate: Callable  # optax schedule: update count (0 for step 1) -> rate.
  _embed_fns: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def data_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))

  def init_state(self) -> step_lib.TrainState:
    """Fresh parameters, both BN sets and optimiser state, replicated over the mesh."""
    return step_lib.create_train_state(self.model, self.tx, self.seed, self.image_shape,
                                       self.replicated, xla_cpu.init_compiler_options())

  def abstract_state(self) -> step_lib.TrainState:
    """The state's shapes with their shardings (jax.ShapeDtypeStruct leaves): the target a
    checkpoint is restored into. Computes nothing."""
    shapes = step_lib.train_state_shapes(self.model, self.tx, self.image_shape)
    return checkpoints.abstract_like(shapes, self.replicated)

  def embed_fn(self, features: Optional[str] = None) -> Callable:
    """Jitted `embed(params, batch_stats, x)` (adcl.step.make_embed_fn), one per kind."""
    features = features or self.features
    if features not in self._embed_fns:
      self._embed_fns[features] = step_lib.make_embed_fn(self.model, features, self.mesh)
    return self._embed_fns[features]


def trainer(config: ml_collections.ConfigDict, image_shape: tuple, steps_per_epoch: int,
            total_steps: int, mesh: Optional[Mesh] = None) -> Trainer:
  """Model, optimiser (its schedule needs the epoch length and the run's length) and the
  compiled step of `config`, on `mesh` (default: every device, axis `data`).

  image_shape: (H, W, C) of the step's input (data.image_size and the source's channels).
  """
  mesh = step_lib.data_mesh() if mesh is None else mesh
  built = model(config.model)
  tx = optim.make_optimizer(config, steps_per_epoch, total_steps)
  train_step = step_lib.make_train_step(
      built, tx, mesh, losses.get(config.loss.name), float(config.loss.temperature),
      attack(config, image_shape[-1]), device_views(config, image_shape[-1]))
  return Trainer(built, tx, mesh, tuple(image_shape), int(config.seed), train_step,
                 config.eval.features,
                 # Compiled once: op by op, each schedule op would be a compilation of its own.
                 jax.jit(optim.learning_rate(config, steps_per_epoch, total_steps)))


def device_views(config: ml_collections.ConfigDict, channels: int) -> Callable:
  """`views(batch, key) -> (view1, view2)` of config.data, for the compiled step: from
  batch['images'] (uint8 [N, H, W, C]: the whole views, adcl.data.views.two_views) or
  batch['crops'] and batch['crop_sizes'] (uint8 [N, 2, R, R, C] regions cut on the host from
  encoded records, and their int32 [N, 2, 2] sizes: adcl.data.views.views_of_crops). Which
  one is fixed when the step is traced."""
  recipe = data_views.recipe(config.data, channels)

  def views(batch: dict, key: jax.Array):
    if "crops" in batch:
      return data_views.views_of_crops(batch["crops"], batch["crop_sizes"], key, recipe)
    return data_views.two_views(batch["images"], key, recipe)

  return views


def step_batch_shapes(config: ml_collections.ConfigDict, source_shape: tuple, batch_size: int,
                      sharding, encoded: bool = False) -> dict:
  """The global batch the compiled step takes (make_train_step's `batch`), as
  jax.ShapeDtypeStructs on `sharding`: what to lower the step with when no data is at hand.

  source_shape: (H, W, C) of the source's images (only C counts for `encoded` records, whose
    images the host cuts into crop regions of at most twice data.image_size a side).
  Returns {'images'} uint8 [B, H, W, C], or with `encoded` {'crops'} uint8 [B, 2, 2S, 2S, C]
  and {'crop_sizes'} int32 [B, 2, 2] (adcl.data.records.StepBatches).
  """
  size, channels = config.data.image_size, source_shape[-1]
  shape = lambda dims, dtype: jax.ShapeDtypeStruct((batch_size, *dims), dtype, sharding=sharding)
  if encoded:
    return {"crops": shape((2, 2 * size, 2 * size, channels), jnp.uint8),
            "crop_sizes": shape((2, 2), jnp.int32)}
  return {"images": shape(tuple(source_shape), jnp.uint8)}


@dataclasses.dataclass
class Restored:
  """One checkpoint of a workdir, for inference: its config, model and frozen variables."""

  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model: ContrastiveModel
  variables: dict  # {'params', 'batch_stats'} (both BN sets; inference uses the clean one).


def restore(workdir: str, step: Optional[int] = None) -> Restored:
  """Checkpoint `step` (default: the latest) of `workdir` on the local default device,
  whatever topology wrote it, with the model rebuilt from the config saved with it.

  Raises ValueError (one line, naming the directory) if there is no checkpoint, no such step,
  or the saved parameters do not fit the model of the saved config.
  """
  ckpt = checkpoints.Checkpoints(workdir, read_only=True)
  try:
    available = list(ckpt.manager.all_steps())
    if not available:
      raise ValueError(f"{ckpt.directory}: no checkpoint to load")
    step = available[-1] if step is None else int(step)
    if step not in available:
      raise ValueError(f"{ckpt.directory}: no checkpoint at step {step}; steps: {available}")
    config = ckpt.saved_config(step)
    state = ckpt.restore_raw(step)
  finally:
    ckpt.close()
  built = model(config.model)
  _check_fits(built, config, state, str(ckpt.directory / str(step)))
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return Restored(str(paths.resolve(workdir)), step, config, built, variables)


def _check_fits(built: ContrastiveModel, config, state: dict, where: str) -> None:
  """Raise ValueError naming the first parameter whose shape differs from the model's."""
  kernel = state["params"].get("encoder", {}).get("stem_conv", {}).get("kernel")
  channels = kernel.shape[2] if kernel is not None else 3
  size = config.data.image_size
  expected = jax.eval_shape(lambda: built.init(jax.random.PRNGKey(0),
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
