"""`from albert_jax import modeling`, kept: the model is albert_jax/model/modeling.py (this name is
the same module object)."""

import sys

from albert_jax.model import modeling as _module

sys.modules[__name__] = _module
