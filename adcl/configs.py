"""The config schema: defaults, the paper's recipes (docs/method.md §4), and validation.

Config files under `configs/` start from `base()` (or `paper_recipe()`) and change a few
fields. `validate()` runs before anything is built or compiled, so an impossible value fails
in a second with a message that names the key.
"""

import math
import os

import ml_collections

from adcl import losses
from adcl.models.resnet import ARCHITECTURES

# Per-recipe normalisation (the eps space of docs/method.md §2): CIFAR statistics for Plain/UEL,
# 0.5/0.5 for SimCLR; Fashion-MNIST statistics for the quickstart.
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "half": ((0.5,), (0.5,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    # Tiny ImageNet: ImageNet's statistics (its images are ImageNet's, downsized).
    "tiny_imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# Where the paper's datasets come from: TFDS for CIFAR; tiny ImageNet as the unzipped
# tiny-imagenet-200 folder (not in TFDS), its labelled val split as the test set.
TINY_IMAGENET_DIR = "data/tiny-imagenet-200"
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "tiny_imagenet": 100_000,
                "fashion_mnist": 60_000, "imagenet100": 126_689, "imagenet2012": 1_281_167}
# (H, W, C) of the images the fixed-size datasets hold (ImageNet's vary: they are cropped on
# the host); what the TPU preflight compiles for when the data is not at hand.
IMAGE_SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "tiny_imagenet": (64, 64, 3),
                "fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1)}
# ImageNet as converted records (python -m adcl.data.convert; docs/data.md): where the
# recipes look by default. ImageNet-100 is the 100 classes of configs/imagenet100_classes.txt.
IMAGENET_RECORDS = {"imagenet100": "data/imagenet100_records",
                    "imagenet2012": "data/imagenet_records"}

# View recipes of the official scripts (docs/method.md §4).  jitter = (brightness, contrast,
# saturation, hue) strengths as in torchvision's ColorJitter.
VIEW_RECIPES = {
    "simclr": dict(crop_scale=(0.08, 1.0), flip=True, jitter=(0.8, 0.8, 0.8, 0.2),
                   jitter_prob=0.8, gray_prob=0.2, blur_prob=0.0),
    "uel": dict(crop_scale=(0.2, 1.0), flip=True, jitter=(0.4, 0.4, 0.4, 0.4),
                jitter_prob=1.0, gray_prob=0.2, blur_prob=0.0),
    # SimCLR's ImageNet recipe for >= 64 px inputs: the CIFAR one plus Gaussian blur
    # (p 0.5, kernel 10% of the side, sigma 0.1-2.0).
    "simclr_blur": dict(crop_scale=(0.08, 1.0), flip=True, jitter=(0.8, 0.8, 0.8, 0.2),
                        jitter_prob=0.8, gray_prob=0.2, blur_prob=0.5),
}

OPTIMIZERS = ("sgd", "adam", "lars")
SOURCES = ("tfds", "idx", "npz", "folder", "records")


def base() -> ml_collections.ConfigDict:
  """Every key with its default. The comments are the key reference (docs/training.md)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameters, data order, views and attack randomness.

  c.data = ml_collections.ConfigDict()
  # 'tfds' (any TFDS builder by name), 'idx' (MNIST-format files), 'npz' (DIR/SPLIT.npz with
  # x, y) or 'folder' (DIR/SPLIT/<class>/..., or tiny ImageNet's val/val_annotations.txt): read
  # whole into host memory. 'records': ArrayRecord shards written by `python -m
  # adcl.data.convert` in DIR, read a batch at a time (data larger than memory; docs/data.md).
  c.data.source = "tfds"
  c.data.name = "cifar10"  # TFDS builder name, or a label for a local source.
  c.data.data_dir = ""  # TFDS data_dir, or the local source's folder; '' = TFDS default.
  c.data.train_split = "train"  # Split names (TFDS splits, NPZ file stems, folder names).
  c.data.test_split = "test"
  c.data.load_size = 0  # 'folder', 'tfds': resize images to this side on loading (0 = keep).
  # Held-out validation split carved from train (seeded); 0 = none, train uses every image.
  c.data.val_fraction = 0.0
  c.data.val_seed = 0
  c.data.image_size = 32  # Side of the crops fed to the encoder.
  c.data.mean = NORMALIZATION["cifar10"][0]  # Per-channel normalisation, in [0, 1] units.
  c.data.std = NORMALIZATION["cifar10"][1]
  c.data.views = ml_collections.ConfigDict(VIEW_RECIPES["uel"])  # Two-view augmentation.
  # 'records' only: threads that decode each batch's encoded images side by side, in the
  # training process (or in each worker process); 0: one per core this process may run on.
  # Pillow and numpy release Python's lock while they decode and copy, so threads scale with
  # the cores, and they pass batches without the copies between processes, which cost as much
  # CPU as the decode itself for 224 px crop regions (docs/data_design.md).
  c.data.threads = 1
  # 'records' only: Grain worker processes making batches ahead of the step, each with
  # data.threads threads (0: none; the training process makes them, two ahead). For hosts
  # whose one process's threads do not keep up (they share the lock between decodes).
  c.data.workers = 0
  # 'records' only, set by adcl.train from the training split's manifest and saved with every
  # checkpoint: a run resumes only on the records it was trained on.
  c.data.fingerprint = ""

  c.model = ml_collections.ConfigDict()
  c.model.architecture = "resnet18"  # A name of ARCHITECTURES, adcl/models/resnet.py.
  c.model.width = 64  # Channels of the first stage (width multiplier x 64).
  c.model.stem = "cifar"  # 'cifar' (3x3, stride 1, no max-pool) or 'imagenet' (7x7/2 + pool).
  c.model.projector = (128,)  # Head widths: (128,) linear (Plain/UEL), (512, 64) SimCLR MLP.
  c.model.dtype = "float32"  # Compute dtype of convolutions ('bfloat16' on TPU).
  # Recompute each ResNet block in the backward pass (jax.checkpoint) instead of storing its
  # activations: for batches that do not fit in accelerator memory otherwise. Same values.
  c.model.remat = False

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "uel"  # plain | simclr | uel.
  c.loss.temperature = 0.1

  c.adv = ml_collections.ConfigDict()
  c.adv.enabled = True  # False: the plain baseline from the same code.
  c.adv.method = "fgsm"  # 'fgsm' (the paper) or 'pgd'.
  c.adv.eps = 0.03  # Attack radius, in normalised units (official) or pixel units, see next.
  c.adv.eps_units = "normalized"  # 'normalized' (official parity) or 'pixel' ([0, 1] pixels).
  c.adv.alpha = 1.0  # Weight of the adversarial term L(f(x1), f_adv(x_adv)).
  # FGSM only. False: one perturbation per image (the official code). True: one for the whole
  # batch, the per-pixel sign of the batch mean of the images' gradient signs (same radius).
  c.adv.shared_delta = False
  # Running-stat updates of the adversarial BN by the FGSM generation pass: 2 reproduces the
  # two training-mode forwards of the official gen_adv from our single forward; 0 = none.
  c.adv.gen_bn_updates = 2
  c.adv.pgd_steps = 7  # PGD only.
  c.adv.pgd_step_size = 0.01  # PGD only, same units as eps.
  c.adv.pgd_random_start = True  # PGD only.
  c.adv.clip_to_pixel_range = False  # PGD only: keep x_adv inside valid pixels.
  # Share of each global batch (its first rows) that gets an adversarial view and the
  # adversarial term, with its own negatives; 1.0 = every image (the paper). Below 1 the attack
  # costs less (docs/method.md §6).
  c.adv.fraction = 1.0

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"  # sgd | adam | lars.
  c.optim.lr = 0.03
  c.optim.momentum = 0.9  # SGD and LARS.
  c.optim.weight_decay = 5e-4  # Coupled L2 (as PyTorch's weight_decay) for sgd/adam.
  # SGD step decay: lr = lr * factor from each epoch on (absolute factors, as the official
  # adjust_learning_rate). Empty: constant.
  c.optim.decay_epochs = (120, 160, 200)
  c.optim.decay_factors = (0.1, 0.05, 0.01)
  c.optim.warmup_epochs = 10  # LARS only: linear warm-up, then cosine to 0.
  c.optim.schedule = "constant"  # Adam only: 'constant' (official) or 'cosine' (to 0 at the end).

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # Global batch (source images; each gives two views).
  c.train.num_epochs = 301
  c.train.num_steps = 0  # > 0 overrides num_epochs.
  c.train.log_every = 50  # Steps between metric lines (the only host syncs of the loop).
  c.train.checkpoint_every = 1000  # Steps between checkpoints (and one at the end).
  c.train.keep_checkpoints = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 5000  # Steps between kNN evaluations (and one at the end); 0 = end only.
  c.eval.knn_k = 200
  c.eval.knn_sigma = 0.0  # 0 = the training temperature (docs/method.md §5).
  c.eval.features = "embedding"  # 'embedding' (projector output, official) or 'backbone'.
  c.eval.batch_size = 512  # A multiple of every usual device count.
  return c


def paper_recipe(dataset: str, method: str, adversarial: bool = True) -> ml_collections.ConfigDict:
  """The official script's recipe for `dataset` and `method` (docs/method.md §4).

  Args:
    dataset: 'cifar10', 'cifar100' (TFDS) or 'tiny_imagenet' (an image folder at
      TINY_IMAGENET_DIR, 64 px, ImageNet stem; override data.data_dir).
    method: 'plain', 'uel' or 'simclr'.
    adversarial: CLAE (True) or the baseline (False).
  """
  c = base()
  c.data.name = dataset
  c.loss.name = method
  c.loss.temperature = losses.DEFAULT_TEMPERATURE[method]
  c.adv.enabled = adversarial
  if dataset == "tiny_imagenet":
    c.data.source = "folder"
    c.data.data_dir = TINY_IMAGENET_DIR
    c.data.test_split = "val"
    c.data.image_size = 64
    c.model.stem = "imagenet"
  if method == "simclr":
    c.data.mean, c.data.std = NORMALIZATION["half"]
    recipe = "simclr_blur" if c.data.image_size >= 64 else "simclr"
    c.data.views = ml_collections.ConfigDict(VIEW_RECIPES[recipe])
    c.model.projector = (512, 64)
    c.optim.name = "adam"
    c.optim.lr = 3e-4
    c.optim.weight_decay = 1e-6
    c.optim.decay_epochs = ()
    c.optim.decay_factors = ()
    c.train.batch_size = 256
    c.train.num_epochs = 100
  else:
    c.data.mean, c.data.std = NORMALIZATION[dataset]
  return c


def imagenet_recipe(dataset: str, adversarial: bool = True) -> ml_collections.ConfigDict:
  """SimCLR (or CLAE on it) at ImageNet scale: ResNet-50 at 224 px, SimCLR's views with blur,
  tau 0.1, LARS at batch 4096 (lr 0.3 x batch / 256, 10 warm-up epochs, cosine), bfloat16, from
  converted records (IMAGENET_RECORDS) read a batch at a time. The attack is the paper's
  (FGSM, eps 0.03 in the 0.5 / 0.5 normalisation of its SimCLR recipe).

  dataset: 'imagenet100' (200 epochs) or 'imagenet2012' (ImageNet-1k, 100 epochs).
  """
  if dataset not in IMAGENET_RECORDS:
    raise ValueError(f"dataset {dataset!r}; choose one of {tuple(IMAGENET_RECORDS)}")
  c = paper_recipe("cifar10", "simclr", adversarial)  # SimCLR's loss, projector, normalisation.
  c.data.name = dataset
  c.data.source = "records"
  c.data.data_dir = IMAGENET_RECORDS[dataset]
  c.data.test_split = "val"
  c.data.image_size = 224
  c.data.threads = 0  # A thread per core this process may run on (docs/data.md).
  c.data.views = ml_collections.ConfigDict(VIEW_RECIPES["simclr_blur"])
  c.model.architecture = "resnet50"
  c.model.stem = "imagenet"
  c.model.projector = (2048, 128)  # SimCLR's ImageNet head.
  c.loss.temperature = 0.1  # SimCLR's at batch 4096 (the CIFAR recipe's 0.5 is for batch 256).
  c.model.dtype = "bfloat16"
  c.optim.name = "lars"
  c.train.batch_size = 4096
  c.optim.lr = 0.3 * c.train.batch_size / 256
  c.optim.weight_decay = 1e-6
  c.optim.warmup_epochs = 10
  c.train.num_epochs = 200 if dataset == "imagenet100" else 100
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.eval.every = 0  # kNN at the end only: an evaluation reads both splits.
  c.eval.batch_size = 1024
  return c


def parse_variant(variant: str) -> bool:
  """'clae' -> True (attack on), 'baseline' -> False; anything else is an error."""
  if variant not in ("clae", "baseline"):
    raise ValueError(f"config variant {variant!r}; use FILE.py, FILE.py:clae or FILE.py:baseline")
  return variant == "clae"


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


# The domain of every config value that has one, as (what it must be, test). validate() checks
# them all before anything is built, so a bad value fails in a second, naming its key.
_POSITIVE = ("> 0", lambda v: _number(v) and v > 0)
_NON_NEGATIVE = (">= 0", lambda v: _number(v) and v >= 0)
_POSITIVE_INT = ("a positive integer", lambda v: _integer(v) and v > 0)
_NON_NEGATIVE_INT = ("an integer >= 0", lambda v: _integer(v) and v >= 0)
_PROBABILITY = ("a probability in [0, 1]", lambda v: _number(v) and 0 <= v <= 1)


def _one_of(*choices):
  return (f"one of {choices}", lambda v: v in choices)


DOMAINS = {
    "seed": ("an integer", _integer),
    "data.source": _one_of(*SOURCES),
    "data.load_size": _NON_NEGATIVE_INT,
    "data.val_fraction": ("in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "data.image_size": _POSITIVE_INT,
    "data.workers": _NON_NEGATIVE_INT,
    "data.threads": _NON_NEGATIVE_INT,
    "data.views.jitter_prob": _PROBABILITY,
    "data.views.gray_prob": _PROBABILITY,
    "data.views.blur_prob": _PROBABILITY,
    "model.architecture": _one_of(*ARCHITECTURES),
    "model.width": _POSITIVE_INT,
    "model.stem": _one_of("cifar", "imagenet"),
    "model.dtype": _one_of("float32", "bfloat16", "float16"),
    "loss.name": _one_of(*losses.LOSSES),
    "loss.temperature": _POSITIVE,
    "adv.method": _one_of("fgsm", "pgd"),
    "adv.eps": _NON_NEGATIVE,
    "adv.eps_units": _one_of("normalized", "pixel"),
    "adv.alpha": _NON_NEGATIVE,
    "adv.gen_bn_updates": _one_of(0, 1, 2),
    "adv.pgd_steps": _POSITIVE_INT,
    "adv.pgd_step_size": _POSITIVE,
    "adv.fraction": ("in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    "optim.name": _one_of(*OPTIMIZERS),
    "optim.lr": _POSITIVE,
    "optim.momentum": ("in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.warmup_epochs": _NON_NEGATIVE,
    "optim.schedule": _one_of("constant", "cosine"),
    "train.batch_size": _POSITIVE_INT,
    "train.num_epochs": _NON_NEGATIVE_INT,
    "train.num_steps": _NON_NEGATIVE_INT,
    "train.log_every": _POSITIVE_INT,
    "train.checkpoint_every": _POSITIVE_INT,
    "train.keep_checkpoints": _POSITIVE_INT,
    "eval.every": _NON_NEGATIVE_INT,
    "eval.knn_k": _POSITIVE_INT,
    "eval.knn_sigma": _NON_NEGATIVE,
    "eval.features": _one_of("embedding", "backbone"),
    "eval.batch_size": _POSITIVE_INT,
}


def lookup(config, dotted: str):
  """The value at a dotted key of a ConfigDict or nested dict; KeyError if it is missing."""
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def set_value(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Set the existing key `dotted` of `config`: KeyError if it has no such key (or a value
  where a section is named), TypeError if `value` does not fit the key's type."""
  section, _, name = dotted.rpartition(".")
  try:
    parent = lookup(config, section) if section else config
  except (KeyError, TypeError):  # A missing section, or a value where a section is named.
    raise KeyError(dotted) from None
  if not isinstance(parent, ml_collections.ConfigDict) or name not in parent:
    raise KeyError(dotted)
  setattr(parent, name, value)


def flatten(nested, prefix: str = "") -> dict:
  """{dotted key: value} of every leaf of a nested ConfigDict or dict, in its order."""
  flat = {}
  for key, value in dict(nested).items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def validate(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1,
             check_data: bool = True) -> None:
  """Raise ValueError naming the key for any value that cannot run. Builds nothing.

  Every key of DOMAINS is checked against its domain; then the rules that tie keys together
  (shapes, divisibility, files) follow. `check_data` False skips whether the data's folders
  exist (the TPU preflight compiles a recipe where its data is not).
  """

  def fail(key, message):
    raise ValueError(f"config.{key}: {message}")

  for key, (expected, test) in DOMAINS.items():
    value = lookup(config, key)
    if not test(value):
      fail(key, f"must be {expected}, got {value!r}")
  if check_data and config.data.source == "idx" and not os.path.isdir(config.data.data_dir):
    fail("data.data_dir", f"IDX directory {config.data.data_dir!r} does not exist "
         "(Debian: apt-get install dataset-fashion-mnist; or use --config.data.source=tfds)")
  if config.data.source == "records" and config.data.val_fraction:
    fail("data.val_fraction", "a 'val' split of records is converted as a split of its own; "
         "set data.test_split to it")
  for key, note in RETIRED.items():
    parent, _, name = key.rpartition(".")
    if name in lookup(config, parent):
      fail(key, f"retired: {note}; delete it from the config")
  if check_data and config.data.source in ("npz", "folder", "records") and not os.path.isdir(
      config.data.data_dir):
    fail("data.data_dir", f"{config.data.source} directory {config.data.data_dir!r} does not exist")
  if check_data and config.data.source == "tfds" and config.data.data_dir and not (
      config.data.data_dir.startswith("gs://") or os.path.isdir(config.data.data_dir)):
    fail("data.data_dir", f"TFDS data directory {config.data.data_dir!r} does not exist")
  if len(config.data.mean) != len(config.data.std):
    fail("data.std", f"has {len(config.data.std)} channels but data.mean has {len(config.data.mean)}")
  if min(config.data.std) <= 0 or not all(map(_number, config.data.std)):
    fail("data.std", f"must be positive, got {tuple(config.data.std)}")
  low, high = config.data.views.crop_scale
  if not 0 < low <= high <= 1:
    fail("data.views.crop_scale", f"needs 0 < low <= high <= 1, got {(low, high)}")
  if config.adv.shared_delta and config.adv.method != "fgsm":
    fail("adv.shared_delta", f"is for FGSM only; adv.method is {config.adv.method!r}")
  if config.optim.schedule != "constant" and config.optim.name != "adam":
    fail("optim.schedule", f"is for Adam only; optim.name is {config.optim.name!r}")
  if config.adv.enabled and round(config.adv.fraction * config.train.batch_size) < 2:
    fail("adv.fraction", f"{config.adv.fraction} of train.batch_size {config.train.batch_size} "
         "leaves fewer than 2 images: the adversarial term needs a negative")
  if len(config.optim.decay_epochs) != len(config.optim.decay_factors):
    fail("optim.decay_factors", "needs one factor per entry of optim.decay_epochs")
  if config.train.num_steps == 0 and config.train.num_epochs == 0:
    fail("train.num_epochs", "and train.num_steps are both 0: nothing to train")
  if config.train.batch_size % num_processes:
    fail("train.batch_size", f"{config.train.batch_size} does not divide among the "
         f"{num_processes} processes (each reads an equal share of every global batch)")
  if config.train.batch_size % num_devices:
    fail("train.batch_size", f"{config.train.batch_size} is not a positive multiple of the "
         f"{num_devices} devices")
  if config.eval.batch_size % num_devices:
    fail("eval.batch_size", f"{config.eval.batch_size} is not a multiple of the "
         f"{num_devices} devices")


def validate_dataset_name(config: ml_collections.ConfigDict) -> None:
  """Unknown TFDS names fail here, before any download or compilation."""
  if config.data.source != "tfds":
    return
  from adcl import errors
  errors.import_tensorflow("data.source='tfds'")
  import tensorflow_datasets as tfds  # Heavy import, only where needed.
  name = config.data.name.split(":")[0].split("/")[0]
  if name not in tfds.list_builders():
    raise ValueError(f"config.data.name: {config.data.name!r} is not a TFDS dataset "
                     "(see tfds.list_builders()), nor is data.source='idx' set")
  # A given data_dir is meant to be used as is (often offline): a dataset missing there would
  # otherwise start a download that fails late and obscurely.
  if config.data.data_dir and not tfds.builder(config.data.name,
                                               data_dir=config.data.data_dir).is_prepared():
    raise ValueError(f"config.data.data_dir: {config.data.name!r} is not prepared in "
                     f"{config.data.data_dir!r} (prepare it there with `tfds build "
                     f"{name} --data_dir=...` where there is internet, or drop data_dir)")


# Keys a saved config may hold that today's schema has retired, and what took their place.
RETIRED = {
    "data.views_on": "the views are drawn on the device (adcl/data/views.py, in the compiled "
                     "step) on every backend; the tf.data host views were retired after the "
                     "two were shown to train alike (docs/studies.md)",
}


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by a run (a checkpoint's config JSON, a study record) read into today's
  schema: its values over `base()`. A key added since that run takes its default, which
  keeps the behaviour the run had; a key since retired is dropped, with a log line for those
  of RETIRED (a run resumed from it goes on as today's code runs)."""
  from absl import logging

  config = base()
  for dotted, value in flatten(saved).items():
    try:
      set_value(config, dotted, value)
    except KeyError:
      if dotted in RETIRED:
        logging.info("The saved config's %s=%r is retired: %s.", dotted, value, RETIRED[dotted])
  return config


# Keys whose change makes an existing checkpoint unusable (other keys may change on resume).
ARCHITECTURE_KEYS = ("model.architecture", "model.width", "model.stem", "model.projector",
                     "optim.name", "data.image_size")


def incompatible_keys(saved: ml_collections.ConfigDict,
                      config: ml_collections.ConfigDict) -> list[str]:
  """`ARCHITECTURE_KEYS` whose value in the saved config (from_saved) differs from `config`."""
  differ = []
  for key in ARCHITECTURE_KEYS:
    old, new = lookup(saved, key), lookup(config, key)
    if old != new:
      differ.append(f"{key} (checkpoint {old!r}, config {new!r})")
  return differ
