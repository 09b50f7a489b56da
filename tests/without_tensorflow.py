"""Run a module or script as if TensorFlow were not installed (a managed GPU image):

    python tests/without_tensorflow.py adcl.train --config ...
    python tests/without_tensorflow.py benchmarks/step_time.py ...

A None entry in sys.modules makes `import tensorflow` raise ImportError.
"""

import runpy
import sys

for name in ("tensorflow", "tensorflow_datasets"):
  sys.modules[name] = None
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
  sys.path.insert(0, ".")
  runpy.run_path(target, run_name="__main__")
else:
  runpy.run_module(target, run_name="__main__", alter_sys=True)
