"""CLAE with the plain loss on cifar100, the official script's recipe (docs/method.md §4).

    python -m adcl.train --config configs/cifar100_plain.py --workdir workdirs/cifar100_plain
    python -m adcl.train --config configs/cifar100_plain.py:baseline --workdir workdirs/cifar100_plain_baseline
"""

from adcl import configs


def get_config(variant: str = "clae"):
  """variant: 'clae' (with the attack) or 'baseline' (the same recipe without it)."""
  return configs.paper_recipe("cifar100", "plain", adversarial=configs.parse_variant(variant))
