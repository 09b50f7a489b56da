"""adcl: Contrastive Learning with Adversarial Examples (Ho & Vasconcelos, 2020) in JAX/Flax.

Importing adcl, or any of its modules, changes nothing global. The commands apply adcl's
XLA:CPU defaults when they start (adcl/cli.py); a notebook or script that wants them calls
`adcl.xla_cpu.apply_defaults()` before its first jax computation.
"""

__version__ = "0.1.0"
