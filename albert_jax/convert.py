"""`python -m albert_jax.convert` and `from albert_jax import convert`, kept: the checkpoint conversion code is
albert_jax/interop/convert.py (this name is the same module object)."""

import sys

from albert_jax.interop import convert as _module

if __name__ == "__main__":
  _module.cli()
else:
  sys.modules[__name__] = _module
