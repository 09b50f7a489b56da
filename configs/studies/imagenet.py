"""CLAE against SimCLR at ImageNet scale: ImageNet-100 and ImageNet-1k, ResNet-50 at 224 px,
LARS at batch 4096, bfloat16 (configs/imagenet100_simclr.py, configs/imagenet1k_simclr.py),
one seed. For TPU pod slices and GPU clusters (docs/launching.md); the records are converted first
(docs/data.md).

    python -m adcl.study --spec configs/studies/imagenet.py --workdir gs://BUCKET/imagenet
    python -m adcl.study --spec configs/studies/imagenet.py --workdir DIR --plan \\
        --step_times=benchmarks/records/h200_resnet50_224.jsonl

The committed step time is one H200's (batch 256, bfloat16, docs/performance.md); --plan scales
a record at batch b to the recipe's 4096 as 4096 / b such devices in data parallel, an upper
bound on the speed (it leaves out the gradient all-reduce). Time your own accelerator with
benchmarks/step_time.py and plan with that record instead. --spec.settings narrows the grid.
"""

import ml_collections


def get_config():
  spec = ml_collections.ConfigDict()
  spec.title = "CLAE and SimCLR on ImageNet-100 and ImageNet-1k (ResNet-50, 224 px, one seed)"
  spec.config = ""  # Every setting names its own config file.
  spec.common = {}
  spec.seeds = (0,)
  settings = spec.settings = ml_collections.ConfigDict(sort_keys=False)
  for dataset in ("imagenet100", "imagenet1k"):
    for variant in ("baseline", "clae"):
      settings[f"{dataset}_{variant}"] = ml_collections.ConfigDict({
          "config": f"configs/{dataset}_simclr.py:{variant}",
          "overrides": {},
          "baseline": f"{dataset}_baseline" if variant == "clae" else None,
          "seeds": None}, type_safe=False)
  # The robustness attacks at 224 px cost as much as a fraction of an epoch: left to
  # `python -m adcl.evaluate` on the finished checkpoints.
  spec.evaluate = {"robust_examples": 0, "figures": True}
  return spec
