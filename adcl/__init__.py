"""adcl: Contrastive Learning with Adversarial Examples (Ho & Vasconcelos, 2020) in JAX/Flax."""

from adcl import xla_cpu

# Before anything imports jax's backends: XLA reads XLA_FLAGS once, when it starts.
xla_cpu.apply_defaults()

__version__ = "0.1.0"
