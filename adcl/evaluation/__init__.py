"""Evaluation of a frozen encoder (docs/method.md §5), in layers that point one way:

  batched.py   run a function over a dataset in fixed-size batches (pad, shard, gather, unpad)
  knn.py       the paper's weighted kNN on feature arrays
  linear.py    the linear probe on feature arrays (honest selection, and the official number)
  robust.py    accuracy of encoder + probe under FGSM / PGD
  protocol.py  `evaluate(model, variables, config, data)`: all of the above for one encoder

The kernels take arrays and know nothing of configs, checkpoints or files; `protocol.evaluate`
is what `python -m adcl.evaluate`, `adcl.inspect.Run` and the study runner call.
"""
