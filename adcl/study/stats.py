"""The statistics of a study report, as pure functions of numbers.

A difference between two settings is paired by seed: the same seed gives both runs the same
initialisation and data order, so the seed-to-seed spread cancels in the difference. Its
interval is the paired t interval over seeds; k intervals read together are checked again at
the Bonferroni level 1 - 0.05 / k.
"""

from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple:
  """(mean, sample std (ddof 1; nan for one value), n)."""
  values = np.asarray(values, float)
  if not len(values):
    return float("nan"), float("nan"), 0
  std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
  return float(np.mean(values)), std, len(values)


def paired_values(runs: dict, setting: str, other: str, key: str) -> list:
  """`setting`'s value of `key` minus `other`'s, for each seed both have.
  runs: {setting: {seed: {key: value}}}."""
  return list(_paired_by_seed(runs, setting, other, key).values())


def _paired_by_seed(runs: dict, setting: str, other: str, key: str) -> dict:
  ours, theirs = runs.get(setting, {}), runs.get(other, {})
  return {s: ours[s][key] - theirs[s][key] for s in sorted(set(ours) & set(theirs))}


def gain_differences(runs: dict, pair: tuple, other_pair: tuple, key: str) -> list:
  """How much one paired gain exceeds another, seed by seed: (pair[0] − pair[1]) −
  (other_pair[0] − other_pair[1]) of `key`, for each seed all four settings have. Whether a gain
  grows with a swept value (CLAE − SimCLR at width 64 against the same at width 32) is then a
  paired difference with its own interval."""
  gain, other_gain = (_paired_by_seed(runs, *p, key) for p in (pair, other_pair))
  return [gain[s] - other_gain[s] for s in sorted(set(gain) & set(other_gain))]


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple:
  """(mean, half-width, n) of the paired t interval of the mean difference over seeds:
  mean ± t(confidence, n - 1) * std / sqrt(n). Half-width nan below 2 seeds."""
  from scipy import stats

  mean, std, n = mean_std(differences)
  if n < 2:
    return mean, float("nan"), n
  return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)), n


def verdict(interval) -> str:
  """'gain' / 'loss' when the interval excludes 0, else 'within noise' ('1 seed' alone)."""
  mean, half, n = interval
  if n < 2 or not np.isfinite(half):
    return f"{n} seed" if n else "–"
  return "gain" if mean - half > 0 else "loss" if mean + half < 0 else "within noise"


def bonferroni_confidence(intervals: int, alpha: float = 0.05) -> float:
  """The confidence of each of `intervals` intervals that keeps the chance of any false
  verdict among them below `alpha`."""
  return 1 - alpha / intervals


def sampling_noise(accuracy: float, test_images: int) -> float:
  """Binomial std (percentage points) of one accuracy measured on `test_images` images."""
  p = accuracy / 100
  return 100 * float(np.sqrt(p * (1 - p) / test_images))
