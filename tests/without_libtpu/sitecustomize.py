"""With this folder on PYTHONPATH, every Python process started runs as if libtpu (the TPU
compiler of adcl's tpu-compile extra) were not installed: a None entry in sys.modules makes
`import libtpu` raise ImportError and importlib's find_spec return None."""

import sys

sys.modules["libtpu"] = None
