"""`python -m albert_jax.predict` and `from albert_jax import predict`, kept: the inference code is
albert_jax/inference/predict.py (this name is the same module object)."""

import sys

from albert_jax.inference import predict as _module

if __name__ == "__main__":
  _module.cli()
else:
  sys.modules[__name__] = _module
