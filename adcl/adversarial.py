"""Adversarial inputs from a loss-of-input function (docs/method.md §2). Knows nothing of models.

`loss_fn: x -> scalar` is the loss of the whole batch `x` ([N, H, W, C]); because the
contrastive loss couples all images of the batch, each image's perturbation depends on
every other image. Results are under `stop_gradient`: the adversarial batch is an input
of the training loss, not a function of the parameters.
"""

from typing import Callable, Optional, Tuple, Union

import jax
import jax.numpy as jnp

ArrayLike = Union[jax.Array, float]
Clip = Optional[Tuple[ArrayLike, ArrayLike]]


def fgsm(loss_fn: Callable, x: jax.Array, eps: ArrayLike, has_aux: bool = False,
         shared: bool = False):
  """One signed-gradient step that raises the loss: `x + eps * sign(grad loss_fn(x))`.

  As in the official `gen_adv`: no random start, no projection, no clamp.

  Args:
    loss_fn: maps a batch like `x` to a scalar (to `(scalar, aux)` if `has_aux`).
    x: [N, ...] input batch (normalised pixels).
    eps: step size in the units of `x`: a scalar or an array broadcastable to `x`
      (e.g. [C], one radius per channel).
    has_aux: also return the aux output of `loss_fn` at `x` (the step takes its BN statistics
      from it, so the generation forward is not run twice).
    shared: one perturbation for the whole batch instead of one per image: the per-pixel
      majority vote `sign(mean_i sign(grad_i))` of the images' signs, times eps. Taking the
      sign of the mean keeps the perturbation on the same L-inf sphere as the per-image one
      (a plain mean would shrink it), so the two variants differ only in sharing.
      Pixels where the vote ties are left unperturbed.
  Returns:
    [N, ...] perturbed batch, same dtype as `x`; `(batch, aux)` if `has_aux`.
  """
  grad, aux = jax.grad(loss_fn, has_aux=True)(x) if has_aux else (jax.grad(loss_fn)(x), None)
  direction = jnp.sign(grad)
  if shared:  # [1, ...], broadcast to every image.
    direction = jnp.sign(jnp.mean(direction, axis=0, keepdims=True))
  x_adv = jax.lax.stop_gradient(x + (eps * direction).astype(x.dtype))
  return (x_adv, aux) if has_aux else x_adv


def pgd(
    loss_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    eps: ArrayLike,
    steps: int,
    step_size: ArrayLike,
    random_start: bool = False,
    key: Optional[jax.Array] = None,
    clip: Clip = None,
) -> jax.Array:
  """Projected gradient ascent in the L-infinity ball of radius `eps` around `x`.

  Args:
    loss_fn: maps a batch like `x` to a scalar.
    x: [N, ...] clean batch.
    eps: radius of the ball (units of `x`).
    steps: number of signed-gradient steps (static).
    step_size: size of each step.
    random_start: start from a uniform point of the ball (needs `key`).
    key: PRNG key for the random start.
    clip: optional `(low, high)`, scalars or arrays broadcastable to `x` (per-channel bounds of
      the valid pixel range in normalised space); each iterate is clamped into it.
  Returns:
    [N, ...] perturbed batch within `eps` of `x` (and inside `clip` if given).
  """
  if random_start and key is None:
    raise ValueError("pgd(random_start=True) needs a PRNG key")

  def project(x_adv):
    x_adv = x + jnp.clip(x_adv - x, -eps, eps)
    if clip is not None:
      x_adv = jnp.clip(x_adv, clip[0], clip[1])
    return x_adv

  x_adv = x
  if random_start:
    x_adv = project(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps))

  def body(_, x_adv):
    grad = jax.grad(loss_fn)(x_adv)
    return project(x_adv + (step_size * jnp.sign(grad)).astype(x.dtype))

  x_adv = jax.lax.fori_loop(0, steps, body, x_adv)
  return jax.lax.stop_gradient(x_adv)
