"""`python -m albert_jax.finetune` and `from albert_jax import finetune`, kept: the fine-tuning code is
albert_jax/train/finetune.py (this name is the same module object)."""

import sys

from albert_jax.train import finetune as _module

if __name__ == "__main__":
  _module.cli()
else:
  sys.modules[__name__] = _module
