"""Quickstart: CLAE (SimCLR loss + FGSM) on Fashion-MNIST with a small ResNet, on a CPU.

    python -m adcl.train --config configs/quickstart.py --workdir workdirs/quickstart

Reads the IDX files of Debian's `dataset-fashion-mnist` package (offline); with internet
instead, add `--config.data.source=tfds`. A few minutes on 2 CPU cores (docs/performance.md).
"""

from adcl import configs
from adcl.data.sources import DEBIAN_FASHION_MNIST


def get_config():
  c = configs.base()
  c.data.source = "idx"
  c.data.name = "fashion_mnist"
  c.data.data_dir = DEBIAN_FASHION_MNIST
  # 20 px crops (the 28 px images resized): a CPU trains on them much faster than on 28 px.
  c.data.image_size = 20
  c.data.mean, c.data.std = configs.NORMALIZATION["fashion_mnist"]
  # Milder crops than SimCLR's 0.08: a 28 px garment cropped to 8% keeps little of it.
  c.data.views.crop_scale = (0.4, 1.0)
  c.data.views.jitter = (0.4, 0.4, 0.0, 0.0)  # Saturation and hue do nothing on grey images.
  c.data.views.jitter_prob = 0.8
  c.model.architecture = "resnet_small"
  c.model.width = 16
  c.model.projector = (128, 64)
  c.loss.name = "simclr"
  # tau 0.2 and lr 2e-3 at batch 64, chosen by two one-epoch runs (docs/training.md).
  c.loss.temperature = 0.2
  c.optim.name = "adam"
  c.optim.lr = 2e-3
  c.optim.weight_decay = 1e-6
  c.optim.decay_epochs = ()
  c.optim.decay_factors = ()
  c.train.batch_size = 64  # More updates per epoch; images/s is the same as at 128 here.
  c.train.num_epochs = 2
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.eval.every = 0
  # Pooled trunk features: the projector is trained to be invariant to what kNN needs.
  c.eval.features = "backbone"
  c.eval.knn_sigma = 0.1
  return c
