"""CLAE with the plain loss on tiny ImageNet, the official script's recipe (docs/method.md §4).

    python -m adcl.train --config configs/tiny_imagenet_plain.py --workdir workdirs/tiny_imagenet_plain
    python -m adcl.train --config configs/tiny_imagenet_plain.py:baseline --workdir workdirs/tiny_imagenet_plain_baseline

Reads tiny-imagenet-200.zip (cs231n.stanford.edu) unzipped at data/tiny-imagenet-200, or
wherever --config.data.data_dir points; 64 px images, ImageNet stem, its val split as test.
"""

from adcl import configs


def get_config(variant: str = "clae"):
  """variant: 'clae' (with the attack) or 'baseline' (the same recipe without it)."""
  return configs.paper_recipe("tiny_imagenet", "plain", adversarial=configs.parse_variant(variant))
