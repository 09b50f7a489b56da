"""Does CLAE beat SimCLR on Fashion-MNIST, and how do width, eps, alpha and a shared
perturbation change that? The CPU study of docs/study_fashion_mnist/ (about 1.5-2 h on 2 cores).

    python -m adcl.study --spec configs/studies/fashion_mnist.py --workdir workdirs/study_fmnist

Every run is the quickstart (configs/quickstart.py: ResNet-small width 16, SimCLR loss, Adam)
shortened to one epoch (937 steps at batch 64), so that the whole grid fits in one sitting;
the runner resumes if it does not. Settings are listed in the order they run, most important
first: the main pair over 3 seeds, then the open questions, then width.
"""

import ml_collections


def setting(seeds=None, baseline=None, **overrides):
  return ml_collections.ConfigDict(
      {"overrides": overrides, "seeds": seeds, "baseline": baseline}, type_safe=False)


def get_config():
  spec = ml_collections.ConfigDict()
  spec.title = "CLAE vs SimCLR on Fashion-MNIST (2-core CPU, 1 epoch per run)"
  spec.config = "configs/quickstart.py"
  # Its report was made with the views drawn on the host (tf.data), since retired: a rerun
  # draws them in the step, which trains alike (docs/studies.md) but not bit for bit.
  spec.common = {"train": {"num_epochs": 1, "log_every": 100, "checkpoint_every": 300}}
  spec.seeds = (0, 1, 2)
  one = (0,)
  s = spec.settings = ml_collections.ConfigDict(sort_keys=False)  # Run in this order.
  s.simclr = setting(adv={"enabled": False})
  # The quickstart's attack: FGSM eps 0.03 in normalised units (2.7/255 pixels), alpha 1.
  s.clae = setting(baseline="simclr", adv={"enabled": True})
  # The open question: one perturbation per image (the official code) or one per batch?
  s.clae_shared = setting(baseline="simclr", adv={"enabled": True, "shared_delta": True})
  s.clae_eps_0_01 = setting(one, "simclr", adv={"enabled": True, "eps": 0.01})
  s.clae_eps_0_1 = setting(one, "simclr", adv={"enabled": True, "eps": 0.1})
  s.clae_alpha_0_5 = setting(one, "simclr", adv={"enabled": True, "alpha": 0.5})
  s.clae_alpha_2 = setting(one, "simclr", adv={"enabled": True, "alpha": 2.0})
  # Half and double width: one seed each (3 for half width did not fit the sitting).
  s.simclr_w8 = setting(one, model={"width": 8}, adv={"enabled": False})
  s.clae_w8 = setting(one, "simclr_w8", model={"width": 8}, adv={"enabled": True})
  s.simclr_w32 = setting(one, model={"width": 32}, adv={"enabled": False})
  s.clae_w32 = setting(one, "simclr_w32", model={"width": 32}, adv={"enabled": True})
  spec.sweeps = {
      "eps": {"key": "adv.eps", "settings": ("clae_eps_0_01", "clae", "clae_eps_0_1")},
      "alpha": {"key": "adv.alpha", "settings": ("clae_alpha_0_5", "clae", "clae_alpha_2")},
      "width": {"key": "model.width", "settings": ("clae_w8", "clae", "clae_w32")},
      "perturbation": {"key": "adv.shared_delta", "settings": ("clae", "clae_shared")},
  }
  # Accuracy only: the attacks of adcl.evaluate would add ~2 min per run.
  spec.evaluate = {"robust_examples": 0, "figures": False}
  return spec
