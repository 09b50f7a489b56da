"""adcl: Contrastive Learning with Adversarial Examples (Ho & Vasconcelos, 2020) in JAX/Flax."""

__version__ = "0.1.0"
