"""CLAE with the simclr loss on ImageNet-1k (ILSVRC 2012): ResNet-50, 224 px, LARS at batch 4096, bfloat16
(adcl.configs.imagenet_recipe). On a TPU pod slice or a GPU cluster: launch/tpu_vm.sh,
launch/slurm_gpu.sh (docs/launching.md). Its val split must be in class folders, as train is
(docs/data.md).

    python -m adcl.data.convert --source folder --data_dir /path/to/ILSVRC2012 --splits train,val \
        --out data/imagenet_records
    python -m adcl.train --config configs/imagenet1k_simclr.py --workdir workdirs/imagenet1k_clae
    python -m adcl.train --config configs/imagenet1k_simclr.py:baseline --workdir workdirs/imagenet1k_simclr
"""

from adcl import configs


def get_config(variant: str = "clae"):
  """variant: 'clae' (with the attack) or 'baseline' (the same recipe without it)."""
  return configs.imagenet_recipe("imagenet2012", adversarial=configs.parse_variant(variant))
