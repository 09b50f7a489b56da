"""CLAE with the simclr loss on cifar10, the official script's recipe (docs/method.md §4).

    python -m adcl.train --config configs/cifar10_simclr.py --workdir workdirs/cifar10_simclr
    python -m adcl.train --config configs/cifar10_simclr.py:baseline --workdir workdirs/cifar10_simclr_baseline
"""

from adcl import configs


def get_config(variant: str = "clae"):
  """variant: 'clae' (with the attack) or 'baseline' (the same recipe without it)."""
  return configs.paper_recipe("cifar10", "simclr", adversarial=configs.parse_variant(variant))
