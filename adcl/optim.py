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


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """The learning rate of `config.optim` as a function of the update count (0 for the first
  update): the step decay for sgd, constant or cosine to 0 for adam, warm-up then cosine for
  lars."""
  o = config.optim
  if o.name == "sgd":
    return step_decay_schedule(o.lr, o.decay_epochs, o.decay_factors, steps_per_epoch)
  if o.name == "adam":
    if o.schedule == "cosine":
      return optax.cosine_decay_schedule(o.lr, max(total_steps, 1))
    return optax.constant_schedule(o.lr)
  if o.name == "lars":
    warmup = min(int(o.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(total_steps, 1))
  raise ValueError(f"config.optim.name={o.name!r}; choose 'sgd', 'adam' or 'lars'")


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   total_steps: int) -> optax.GradientTransformation:
  """The optimiser of `config.optim`, at the rate of `learning_rate()`.

  sgd: momentum SGD, weight decay added to the gradient (PyTorch's coupled L2). adam: Adam
  with coupled L2 (the official SimCLR recipe at a constant rate). lars: LARS for large TPU
  batches (weight decay inside LARS, BN and bias parameters excluded from it).
  """
  o = config.optim
  schedule = learning_rate(config, steps_per_epoch, total_steps)
  if o.name == "sgd":
    return optax.chain(optax.add_decayed_weights(o.weight_decay),
                       optax.sgd(schedule, momentum=o.momentum))
  if o.name == "adam":
    # A constant rate as a number: a schedule would add a step count to the optimiser state.
    rate = o.lr if o.schedule == "constant" else schedule
    return optax.chain(optax.add_decayed_weights(o.weight_decay), optax.adam(rate))
  return optax.lars(schedule, weight_decay=o.weight_decay, momentum=o.momentum,
                    weight_decay_mask=_matrices_only, trust_ratio_mask=_matrices_only)


def _matrices_only(params):
  """True for kernels (ndim > 1): LARS convention, no decay or trust ratio on BN and biases."""
  return jax.tree.map(lambda p: p.ndim > 1, params)
