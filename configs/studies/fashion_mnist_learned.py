"""Does CLAE help an encoder that has learned? SimCLR vs CLAE on Fashion-MNIST in a regime where
SimCLR beats the raw pixels of its input, at two widths, and what adv.fraction 0.25 keeps.

    python -m adcl.study --spec configs/studies/fashion_mnist_learned.py \
        --workdir workdirs/study_fmnist_learned

The regime (docs/study_fashion_mnist_learned/README.md has the tuning runs that chose it): the
quickstart's data, views, loss and tau (configs/quickstart.py), a ResNet-small of width 32
(256 backbone features), Adam decayed to 0 by a cosine over 12 epochs. The grid is sized to
about 10 hours of a 2-core CPU; the runner resumes across sittings. Settings run in order of
importance: the main pair and the cheap attack at 3 seeds, then the double width at 1 seed
(exploratory: 3 seeds of it do not fit the 10 hours).

`--spec=configs/studies/fashion_mnist_learned.py:width` is the width pair alone, both widths at
3 seeds with the views drawn on the device, for one accelerator: every pair then shares one
machine, and a GPU runs the 12 runs in minutes (docs/study_fashion_mnist_width/).
"""

import ml_collections

WIDTH, EPOCHS = 32, 12


def setting(seeds=None, baseline=None, **overrides):
  return ml_collections.ConfigDict(
      {"overrides": overrides, "seeds": seeds, "baseline": baseline}, type_safe=False)


def get_config(variant: str = "cpu"):
  if variant not in ("cpu", "width"):
    raise ValueError(f"fashion_mnist_learned.py:{variant}: the variants are 'cpu' and 'width'")
  spec = ml_collections.ConfigDict()
  spec.title = (f"CLAE vs SimCLR on Fashion-MNIST, a learned regime (width {WIDTH}, "
                f"{EPOCHS} epochs, 2-core CPU)")
  spec.config = "configs/quickstart.py"
  spec.common = {"model": {"width": WIDTH},
                 "optim": {"schedule": "cosine"},
                 # Its runs were made with the views drawn on the host (tf.data), since
                 # retired: a rerun draws them in the step (docs/studies.md).
                 # kNN every 3 epochs: the curves of the report's runs.
                 "train": {"num_epochs": EPOCHS, "log_every": 200, "checkpoint_every": 937},
                 "eval": {"every": 3 * 937}}
  spec.seeds = (0, 1, 2)
  one = (0,)
  s = spec.settings = ml_collections.ConfigDict(sort_keys=False)  # Run in this order.
  s.simclr = setting(adv={"enabled": False})
  s.clae = setting(baseline="simclr", adv={"enabled": True})
  # The cheaper attack: an adversarial view for a quarter of each batch.
  s.clae_fraction_0_25 = setting(baseline="simclr", adv={"enabled": True, "fraction": 0.25})
  # Double width: does the gain grow with the encoder (the paper's claim)? One seed.
  s.simclr_w64 = setting(one, model={"width": 2 * WIDTH}, adv={"enabled": False})
  s.clae_w64 = setting(one, "simclr_w64", model={"width": 2 * WIDTH}, adv={"enabled": True})
  # The report's extra paired row: what the cheap attack gives up against the full one.
  spec.comparisons = (("clae_fraction_0_25", "clae"),)
  spec.sweeps = {
      "width": {"key": "model.width", "settings": ("clae", "clae_w64")},
      "fraction": {"key": "adv.fraction", "settings": ("clae_fraction_0_25", "clae")},
  }
  spec.evaluate = {"robust_examples": 0, "figures": False}
  if variant == "width":
    return width_pair(spec)
  return spec


def width_pair(spec):
  """The two widths at every seed and nothing else; views drawn inside the step, as on any
  accelerator."""
  spec.title = (f"CLAE vs SimCLR at widths {WIDTH} and {2 * WIDTH} on Fashion-MNIST "
                f"({EPOCHS} epochs, device views, one accelerator)")
  del spec.settings["clae_fraction_0_25"]
  spec.settings.simclr_w64.seeds = None
  spec.settings.clae_w64.seeds = None
  spec.comparisons = ()
  del spec.sweeps["fraction"]
  return spec
