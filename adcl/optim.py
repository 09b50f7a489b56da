"""Optimisers of the recipes (docs/method.md §4) as optax transformations."""

import jax
import ml_collections
import optax


def step_decay_schedule(lr: float, decay_epochs, decay_factors, steps_per_epoch: int):
  """`lr * factor` from each decay epoch on; factors are absolute, as the official
  `adjust_learning_rate` (x0.1 at 120, x0.05 at 160, x0.01 at 200), not cumulative."""
  boundaries, previous = {}, 1.0
  for epoch, factor in zip(decay_epochs, decay_factors):
    boundaries[int(epoch * steps_per_epoch)] = factor / previous
    previous = factor
  return optax.piecewise_constant_schedule(lr, boundaries)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   total_steps: int) -> optax.GradientTransformation:
  """The optimiser of `config.optim`.

  sgd: momentum SGD with the step decay, weight decay added to the gradient (PyTorch's coupled
  L2). adam: Adam with coupled L2, at a constant rate (the official SimCLR recipe) or, with
  `optim.schedule='cosine'`, decayed to 0 over the run (the usual SimCLR schedule). lars: LARS with linear warm-up and cosine decay, for large
  TPU batches (weight decay inside LARS, BN and bias parameters excluded from it).
  """
  o = config.optim
  if o.name == "sgd":
    schedule = step_decay_schedule(o.lr, o.decay_epochs, o.decay_factors, steps_per_epoch)
    return optax.chain(optax.add_decayed_weights(o.weight_decay),
                       optax.sgd(schedule, momentum=o.momentum))
  if o.name == "adam":
    lr = o.lr
    if o.get("schedule", "constant") == "cosine":
      lr = optax.cosine_decay_schedule(o.lr, max(total_steps, 1))
    return optax.chain(optax.add_decayed_weights(o.weight_decay), optax.adam(lr))
  if o.name == "lars":
    warmup = min(int(o.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(total_steps, 1))
    return optax.lars(schedule, weight_decay=o.weight_decay, momentum=o.momentum,
                      weight_decay_mask=_matrices_only, trust_ratio_mask=_matrices_only)
  raise ValueError(f"config.optim.name={o.name!r}; choose 'sgd', 'adam' or 'lars'")


def _matrices_only(params):
  """True for kernels (ndim > 1): LARS convention, no decay or trust ratio on BN and biases."""
  return jax.tree.map(lambda p: p.ndim > 1, params)
