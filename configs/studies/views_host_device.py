"""Do the device views train as well as the host views? The quickstart with its views drawn on
the host (tf.data) and on the device (jax, inside the compiled step), paired by seed.

    python -m adcl.study --spec configs/studies/views_host_device.py \
        --workdir workdirs/study_views

The two paths apply the same draws with the same arithmetic (tests/test_views.py feeds both
the same draws); they draw from different random generators, so a seed gives each path other
views, and the paired difference over seeds measures whether either path's views train better.
8 seeds of the quickstart: about 16 x 6 minutes of a 2-core CPU; the runner resumes across
sittings.
"""

import ml_collections


def get_config():
  spec = ml_collections.ConfigDict()
  spec.title = "Host vs device views on the quickstart (Fashion-MNIST, 2 epochs, 2-core CPU)"
  spec.config = "configs/quickstart.py"
  spec.common = {}
  spec.seeds = tuple(range(8))
  s = spec.settings = ml_collections.ConfigDict(sort_keys=False)  # Run in this order.
  s.host = ml_collections.ConfigDict({"overrides": {"data": {"views_on": "host"}}})
  s.device = ml_collections.ConfigDict(
      {"overrides": {"data": {"views_on": "device"}}, "baseline": "host"})
  spec.evaluate = {"robust_examples": 0, "figures": False}
  return spec
