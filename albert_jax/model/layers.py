"""Small building blocks shared by the encoder and the heads: activations, Dense, LayerNorm.

They carry the official numerics (truncated-normal init with `initializer_range`, zero biases,
float32 LayerNorm with `layer_norm_eps`) and logical axis names on every parameter.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax.model.config import ModelConfig

Array = jax.Array


# The GELUs are rematerialized: differentiating the tanh form would otherwise keep five
# [B, T, intermediate_size] intermediates per layer for the backward pass (stacked over depth by
# the scan); recomputing them from the input is cheaper than writing and reading them back.
# prevent_cse=False: the default optimization barrier around the recomputation kept XLA from
# folding the GELU derivative into the backward matmul of `ffn_output`, which cost two extra HBM
# passes over [B, T, I] (on a TPU v5e, 11% of the ALBERT-base train step's bytes).
_GELU_TANH = jax.checkpoint(functools.partial(jax.nn.gelu, approximate=True), prevent_cse=False)
_GELU_ERF = jax.checkpoint(functools.partial(jax.nn.gelu, approximate=False), prevent_cse=False)


def activation(name: str) -> Callable[[Array], Array]:
  """Maps `hidden_act` to a function ("gelu" is the official tanh approximation)."""
  return {
      "gelu": _GELU_TANH,
      "gelu_new": _GELU_TANH,
      "gelu_exact": _GELU_ERF,
      "relu": jax.nn.relu,
      "tanh": jnp.tanh,
      "silu": jax.nn.silu,
  }[name]


def dense(cfg: ModelConfig, features: int, axes: tuple[str, str], name: str,
          use_bias: bool = True, init_salt: Optional[Array] = None) -> nn.Dense:
  """A Dense with the official truncated-normal init and logical axis names on its parameters.

  `init_salt` (an integer, possibly traced) is folded into the kernel's init key: the depth scan
  gives every step the same 'params' key (so that broadcast, shared weights do not depend on the
  step) and the step index is folded in here to draw distinct weights for unshared layers.
  """
  kernel_init = nn.initializers.truncated_normal(cfg.initializer_range)
  if init_salt is not None:
    base_init = kernel_init
    kernel_init = lambda key, *a: base_init(jax.random.fold_in(key, init_salt), *a)
  return nn.Dense(
      features, use_bias=use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]))


def layer_norm(cfg: ModelConfig, axis_name: str, name: str) -> nn.LayerNorm:
  """LayerNorm computed in float32 (eps 1e-12 by default) whatever the compute dtype.

  With a narrower compute dtype it is rematerialized like the GELUs: the backward pass keeps
  only its input, in the compute dtype, instead of the float32 centred and normalized copies
  that the depth scan would otherwise stack per layer (ALBERT-base in bf16 on a TPU v5e: 2.9 GiB
  of the rolled train step's temporaries). In float32 the input is no smaller than those copies,
  and the float32 (CPU, parity) numerics stay bit for bit those of a plain LayerNorm.
  """
  module = nn.LayerNorm if cfg.dtype == "float32" else nn.remat(nn.LayerNorm, prevent_cse=False)
  return module(
      epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=cfg.param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)))


def constrain(x: Array, names: tuple[str, ...]) -> Array:
  """Sharding constraint by logical names (a no-op outside a mesh + axis-rules context)."""
  return nn.with_logical_constraint(x, names)
