"""TrainState and the compiled CLAE step (docs/method.md §2-3): where losses, attack and model meet.

All math is single-device math on the global batch. The step is jitted once with the state
donated; batches arrive as global arrays sharded over the mesh axis `data`, so XLA inserts
the collectives: the loss sees every negative, batch-norm statistics are global, and the FGSM
gradient of each image accounts for every image of the global batch.
"""

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adcl import adversarial, losses
from adcl.models.batchnorm import ADV_MOMENTUM


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh, axis `data`, over `devices` (default: all devices of all processes).

  Axis type Auto: the math stays single-device math and XLA (GSPMD) inserts the
  collectives; Explicit sharding would make every op spell out its output sharding.
  """
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


class TrainState(struct.PyTreeNode):
  """Everything a step changes. `rng` is raw key data (uint32[2]) so Orbax saves it as is."""

  step: jax.Array  # int32 scalar.
  params: Any
  batch_stats: Any  # Both BN sets: {..., 'clean': {mean, var}, 'adv': {mean, var}}.
  opt_state: Any
  rng: jax.Array


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, seed: int,
             image_shape: tuple[int, int, int]) -> Callable[[], TrainState]:
  def init():
    init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_key, jnp.zeros((2, *image_shape), jnp.float32), train=True)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables["batch_stats"],
                      opt_state=tx.init(variables["params"]), rng=state_key)
  return init


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
                       image_shape: tuple[int, int, int], sharding=None,
                       compiler_options: Optional[dict] = None) -> TrainState:
  """Initialise parameters, both BN sets and the optimiser. image_shape: (H, W, C).

  One compiled program (placed on `sharding` if given): op by op, every initialiser shape
  would be a compilation of its own. `compiler_options`: XLA options for that one program
  (adcl.xla_cpu.init_compiler_options).
  """
  lowered = jax.jit(_init_fn(model, tx, seed, image_shape), out_shardings=sharding).lower()
  return lowered.compile(compiler_options=compiler_options)()


def train_state_shapes(model: nn.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, int, int]) -> TrainState:
  """The TrainState's shapes and dtypes (jax.ShapeDtypeStruct leaves), computing nothing."""
  return jax.eval_shape(_init_fn(model, tx, 0, image_shape))


@dataclasses.dataclass(frozen=True)
class Attack:
  """How the step makes and weighs the adversarial view (docs/method.md §2-3).

  Every radius is in the step's input units (normalised pixels), one value per channel;
  adcl.build.attack converts a config's (which may be in pixel units).
  """

  eps: np.ndarray  # [C] radius.
  alpha: float = 1.0  # Weight of the adversarial term.
  method: str = "fgsm"  # 'fgsm' (the paper) or 'pgd'.
  shared_delta: bool = False  # FGSM: one perturbation for the whole batch.
  gen_bn_updates: int = 2  # FGSM: adversarial-BN running-stat updates by the generation.
  pgd_steps: int = 7
  pgd_step_size: Optional[np.ndarray] = None  # [C].
  pgd_random_start: bool = True
  clip: Optional[tuple] = None  # PGD: ([C], [C]) valid pixel range the iterates stay in.
  # Share of the global batch that gets an adversarial view (1.0: every image, the paper).
  fraction: float = 1.0


def attacked_rows(x1: jax.Array, fraction: float) -> jax.Array:
  """The rows of the first view that get an adversarial view: [round(fraction * N), ...].

  The first rows of the global batch: the batch is already shuffled, and the global batch is
  the same for every device and process count, so the choice is too. A fraction below 1
  attacks (and trains the adversarial term on) a smaller batch, with its own negatives: the
  attack's cost falls with it (adv.fraction, docs/method.md §6).
  """
  rows = int(round(fraction * x1.shape[0]))
  return x1 if rows >= x1.shape[0] else x1[:rows]


def repeat_bn_update(old, new, times: int, momentum: float = ADV_MOMENTUM):
  """Running statistics after `times` EMA updates with the batch moments that took `old` to `new`.

  One update gives new = m*old + (1-m)*b; k updates give m^k*old + (1-m^k)/(1-m)*(new - m*old).
  Leaves that did not change (the clean set, during generation) stay as they are.
  """
  if times == 0:
    return old
  scale = (1 - momentum**times) / (1 - momentum)
  return jax.tree.map(lambda o, n: momentum**times * o + scale * (n - momentum * o), old, new)


def make_forward(model: nn.Module):
  """`forward(params, batch_stats, x, use_adv_bn) -> (z, new_batch_stats)`, training mode."""

  def forward(params, batch_stats, x, use_adv_bn: bool):
    (_, z), updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                  train=True, adv=use_adv_bn, mutable=["batch_stats"])
    return z, updates["batch_stats"]

  return forward


def adversarial_view(forward, params, batch_stats, x1: jax.Array, rng: jax.Array,
                     attack: Attack, loss_fn: losses.LossFn, temperature: float):
  """The adversarial view of `x1` ([N, H, W, C]) with the adversarial BN (docs/method.md §2).

  Returns (x_adv [N, H, W, C], loss at generation, batch_stats after generation).
  """

  def attack_loss(x):
    # Fused form: at delta = 0 the anchor f_adv(x1) and the perturbed f_adv(x1 + delta) are
    # the same forward, so one pass and a stop_gradient anchor give the official gradient.
    z, stats = forward(params, batch_stats, x, True)
    value = loss_fn(jax.lax.stop_gradient(z), z, temperature)
    return value, (value, stats)

  if attack.method == "fgsm":
    x_adv, (gen_loss, stats) = adversarial.fgsm(attack_loss, x1, attack.eps, has_aux=True,
                                                  shared=attack.shared_delta)
    return x_adv, gen_loss, repeat_bn_update(batch_stats, stats, attack.gen_bn_updates)
  # PGD: the iterates' statistics are not the training distribution; no BN update.
  x_adv = adversarial.pgd(lambda x: attack_loss(x)[0], x1, attack.eps, attack.pgd_steps,
                          attack.pgd_step_size, attack.pgd_random_start, rng, attack.clip)
  return x_adv, attack_loss(x_adv)[0], batch_stats


def make_objective(forward, loss_fn: losses.LossFn, temperature: float, alpha: float = 1.0):
  """`objective(params, batch_stats, x1, x2, x_adv) -> (loss, (batch_stats, clean, adv))`.

  L(f(x1), f(x2)) + alpha * L(f(x1), f_adv(x_adv)), each view its own BN batch; x_adv None
  gives the plain objective. x_adv may hold only the first M rows of x1 (adv.fraction): the
  adversarial term then pairs those M rows, each with the other M as its negatives.
  Differentiated with respect to params by the step.
  """

  def objective(params, batch_stats, x1, x2, x_adv):
    z1, batch_stats = forward(params, batch_stats, x1, False)
    z2, batch_stats = forward(params, batch_stats, x2, False)
    clean = loss_fn(z1, z2, temperature)
    if x_adv is None:
      return clean, (batch_stats, clean, jnp.zeros_like(clean))
    z_adv, batch_stats = forward(params, batch_stats, x_adv, True)
    anchor = z1 if x_adv.shape[0] == x1.shape[0] else z1[:x_adv.shape[0]]
    adv_term = loss_fn(anchor, z_adv, temperature)
    return clean + alpha * adv_term, (batch_stats, clean, adv_term)

  return objective


# The view key of a step is fold_in(the step's key, VIEW_STREAM): the attack keeps the step's
# key itself, so its draws do not depend on whether the step draws the views.
VIEW_STREAM = 1


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                    loss_fn: losses.LossFn, temperature: float, attack: Optional[Attack],
                    views: Optional[Callable] = None
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The jitted `train_step(state, batch) -> (state, metrics)`, state donated.

  loss_fn, temperature: the contrastive loss (adcl.losses) and its tau.
  attack: the adversarial view and its weight; None trains the plain baseline.
  views: `views(batch, key) -> (view1, view2)` (adcl.build.device_views, what
    adcl.build.trainer passes) draws
    them here, and batch is {'images'}: the global batch's uint8 [N, H, W, C] images, or
    {'crops', 'crop_sizes'}: uint8 [N, 2, R, R, C] and int32 [N, 2, 2], each image's two
    crop regions cut on the host and their sizes (the views resize them).
    A batch of {'view1', 'view2'}, [N, S, S, C] float32 normalised views the caller drew
    (fixed inputs: the tests'), is used as it is (the form is fixed when the step is traced).
    Every form is sharded on `data`.
  metrics: scalars (replicated): loss, loss_clean, loss_adv, loss_gen, grad_norm, param_norm.
  """
  forward = make_forward(model)
  objective = make_objective(forward, loss_fn, temperature, attack.alpha if attack else 1.0)

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    if "view1" in batch or views is None:
      x1, x2 = batch["view1"], batch["view2"]
    else:
      x1, x2 = views(batch, jax.random.fold_in(rng, VIEW_STREAM))
    batch_stats, x_adv, gen_loss = state.batch_stats, None, jnp.zeros(())
    if attack is not None:
      x_adv, gen_loss, batch_stats = adversarial_view(
          forward, state.params, batch_stats, attacked_rows(x1, attack.fraction), rng, attack,
          loss_fn, temperature)
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (loss, (batch_stats, clean, adv_term)), grads = grad_fn(
        state.params, batch_stats, x1, x2, x_adv)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, loss_clean=clean, loss_adv=adv_term, loss_gen=gen_loss,
                   grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(params))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  replicated = NamedSharding(mesh, P())
  return jax.jit(train_step, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def make_embed_fn(model: nn.Module, features: str, mesh: Mesh):
  """Jitted `embed(params, batch_stats, x) -> [N, D]` with the clean BN in inference mode.

  features: 'embedding' (L2-normalised projector output), 'backbone' (pooled trunk), or
    'both' ((backbone, embedding) from one forward pass).
  """

  def embed(params, batch_stats, x):
    h, z = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False, adv=False)
    return {"embedding": z, "backbone": h, "both": (h, z)}[features]

  replicated = NamedSharding(mesh, P())
  return jax.jit(embed, in_shardings=(replicated, replicated, NamedSharding(mesh, P("data"))),
                 out_shardings=NamedSharding(mesh, P("data")))
