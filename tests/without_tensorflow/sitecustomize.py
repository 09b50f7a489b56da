"""With this folder on PYTHONPATH, every Python process started (and each one it starts) runs
as if TensorFlow and TFDS were not installed, as on a managed GPU image: a None entry in
sys.modules makes `import tensorflow` raise ImportError."""

import sys

for name in ("tensorflow", "tensorflow_datasets"):
  sys.modules[name] = None
