"""The paper's grid for users with accelerators: {CIFAR-10, CIFAR-100, tiny ImageNet} x
{Plain, UEL, SimCLR} x {baseline, CLAE} x {ResNet-18, ResNet-50}, each with the official
script's recipe (docs/method.md §4; configs/DATASET_METHOD.py), one seed.

    python -m adcl.study --spec configs/studies/paper_grid.py --workdir gs://BUCKET/paper_grid
    python benchmarks/step_time.py --model resnet18 --batch 256 | tail -1 >> step_times.jsonl
    python -m adcl.study --spec configs/studies/paper_grid.py --workdir DIR --plan \\
        --step_times=step_times.jsonl

--plan prints every run, the model its speed depends on (architecture, width, input, batch,
dtype, attack), the images it trains on and, for each model a record of
benchmarks/step_time.py timed on your machine, its hours. Narrow the grid from the command line,
e.g. --spec.seeds=0,1,2 for three seeds. Tiny ImageNet runs read data/tiny-imagenet-200
(see configs/tiny_imagenet_*.py).
"""

import ml_collections

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
METHODS = ("plain", "uel", "simclr")
ARCHITECTURES = ("resnet18", "resnet50")


def get_config():
  spec = ml_collections.ConfigDict()
  spec.title = "The CLAE paper's grid (official recipes, one seed)"
  spec.config = ""  # Every setting names its own config file.
  spec.common = {"eval": {"every": 0}}
  spec.seeds = (0,)
  settings = spec.settings = ml_collections.ConfigDict(sort_keys=False)
  for dataset in DATASETS:
    for method in METHODS:
      for architecture in ARCHITECTURES:
        name = f"{dataset}_{method}_{architecture}"
        for variant in ("baseline", "clae"):
          settings[f"{name}_{variant}"] = ml_collections.ConfigDict({
              "config": f"configs/{dataset}_{method}.py:{variant}",
              "overrides": {"model": {"architecture": architecture}},
              "baseline": f"{name}_baseline" if variant == "clae" else None,
              "seeds": None}, type_safe=False)
  spec.evaluate = {"robust_examples": 1000, "figures": True}
  return spec
