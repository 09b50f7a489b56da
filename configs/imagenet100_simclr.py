"""CLAE with the simclr loss on ImageNet-100 (configs/imagenet100_classes.txt: CMC's and solo-learn's
100 classes): ResNet-50, 224 px, LARS at batch 4096, bfloat16
(adcl.configs.imagenet_recipe). On a TPU pod slice or a GPU cluster: launch/tpu_vm.sh,
launch/slurm_gpu.sh (docs/launching.md). Its val split must be in class folders, as train is
(docs/data.md).

    python -m adcl.data.convert --source folder --data_dir /path/to/ILSVRC2012 --splits train,val \
        --classes configs/imagenet100_classes.txt --out data/imagenet100_records
    python -m adcl.train --config configs/imagenet100_simclr.py --workdir workdirs/imagenet100_clae
    python -m adcl.train --config configs/imagenet100_simclr.py:baseline --workdir workdirs/imagenet100_simclr
"""

from adcl import configs


def get_config(variant: str = "clae"):
  """variant: 'clae' (with the attack) or 'baseline' (the same recipe without it)."""
  return configs.imagenet_recipe("imagenet100", adversarial=configs.parse_variant(variant))
