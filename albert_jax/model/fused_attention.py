"""`attention_impl="fused_tpu"`: attention of whole sequences in one Pallas TPU kernel.

ALBERT's sequences are at most 512 tokens, so the [T, T] scores of a head fit in a TPU core's
VMEM: each grid step reads one sequence's q, k and v for a 128-lane group of heads straight from
the projections' [B, T, heads * head_dim] layout, and computes the softmax over the whole row at
once (no flash tiling, so no running max, no log-sum-exp residual and no transposes to a
kernel-specific layout). The backward kernel recomputes the probabilities from q and k. What
crosses HBM is q, k, v and the output forward, and q, k, v, the output gradient and dq, dk, dv
backward; the splash kernel also writes a lane-replicated float32 log-sum-exp per query and head,
and needs q, k and v transposed to a sequence-minor layout (docs/performance.md).

The arithmetic is the `xla` reference's: float32 scores divided by sqrt(head_dim) plus the
official additive mask ((1 - mask) * -10000, so an all-padding row attends to every key as the
official model does), a float32 softmax, probabilities cast to the compute dtype for the product
with v. No dropout on the probabilities (model_config refuses the combination). On a CPU the
kernels run in Pallas interpret mode (the tests).
"""

from __future__ import annotations

import functools
import math

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp

from albert_jax.model.attention import MASK_BIAS

Array = jax.Array

MAX_SEQ_LEN = 512  # the scores of a head stay in VMEM up to here (ALBERT's position table)
_LANES = 128
_X_YT = (((1,), (1,)), ((), ()))  # dot_general dimensions of x @ y^T
_XT_Y = (((0,), (0,)), ((), ()))  # x^T @ y


def heads_per_block(heads: int, head_dim: int) -> int:
  """Heads per grid step: the fewest whose lanes fill multiples of 128 (all heads otherwise,
  which Pallas allows as the array's full last dimension)."""
  return next((n for n in range(1, heads + 1)
               if heads % n == 0 and n * head_dim % _LANES == 0), heads)


def supports(seq_len: int) -> bool:
  """Whether the TPU kernel takes sequences of `seq_len` (interpret mode takes any length)."""
  return seq_len <= MAX_SEQ_LEN and seq_len % _LANES == 0


def _probs(q: Array, k: Array, bias: Array, scale: float) -> Array:
  """Float32 softmax of one head's [T, T] scores (the xla reference's arithmetic)."""
  s = jax.lax.dot_general(q, k, _X_YT, preferred_element_type=jnp.float32)
  s = s / scale + bias
  e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
  return e / jnp.sum(e, axis=-1, keepdims=True)


def _bias(mask_ref) -> Array:
  return (1.0 - mask_ref[...].astype(jnp.float32)) * MASK_BIAS  # [1, T] over the keys


def _forward_kernel(mask_ref, q_ref, k_ref, v_ref, o_ref, *, head_dim: int):
  bias, scale = _bias(mask_ref), math.sqrt(head_dim)
  for start in range(0, q_ref.shape[-1], head_dim):
    head = slice(start, start + head_dim)
    v = v_ref[:, head]
    p = _probs(q_ref[:, head], k_ref[:, head], bias, scale)
    o_ref[:, head] = jnp.dot(p.astype(v.dtype), v,
                             preferred_element_type=jnp.float32).astype(o_ref.dtype)


def _backward_kernel(mask_ref, q_ref, k_ref, v_ref, do_ref, dq_ref, dk_ref, dv_ref, *,
                     head_dim: int):
  bias, scale = _bias(mask_ref), math.sqrt(head_dim)
  for start in range(0, q_ref.shape[-1], head_dim):
    head = slice(start, start + head_dim)
    q, k, v, do = q_ref[:, head], k_ref[:, head], v_ref[:, head], do_ref[:, head]
    p = _probs(q, k, bias, scale)
    dv_ref[:, head] = jax.lax.dot_general(p.astype(do.dtype), do, _XT_Y,
                                          preferred_element_type=jnp.float32).astype(dv_ref.dtype)
    dp = jax.lax.dot_general(do, v, _X_YT, preferred_element_type=jnp.float32)
    ds = (p * (dp - jnp.sum(p * dp, axis=-1, keepdims=True)) / scale).astype(q.dtype)
    dq_ref[:, head] = jnp.dot(ds, k, preferred_element_type=jnp.float32).astype(dq_ref.dtype)
    dk_ref[:, head] = jax.lax.dot_general(ds, q, _XT_Y,
                                          preferred_element_type=jnp.float32).astype(dk_ref.dtype)


def _call(kernel, name: str, mask: Array, arrays: tuple[Array, ...], outputs: int, heads: int,
          interpret: bool) -> tuple[Array, ...]:
  """Runs `kernel` over (sequence, head group) on [B, T, heads * head_dim] arrays."""
  b, t, width = arrays[0].shape
  head_dim = width // heads
  lanes = heads_per_block(heads, head_dim) * head_dim
  block = pl.BlockSpec((None, t, lanes), lambda i, j: (i, 0, j))
  return pl.pallas_call(
      functools.partial(kernel, head_dim=head_dim),
      grid=(b, width // lanes),
      in_specs=[pl.BlockSpec((None, 1, t), lambda i, j: (i, 0, 0))] + [block] * len(arrays),
      out_specs=[block] * outputs,
      out_shape=[jax.ShapeDtypeStruct(arrays[0].shape, arrays[0].dtype)] * outputs,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
      interpret=interpret,
      name=name,
  )(mask[:, None, :], *arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q: Array, k: Array, v: Array, mask: Array, heads: int, interpret: bool) -> Array:
  return _call(_forward_kernel, "albert_fused_attention_fwd", mask, (q, k, v), 1, heads,
               interpret)[0]


def _attention_fwd(q, k, v, mask, heads, interpret):
  return _attention(q, k, v, mask, heads, interpret), (q, k, v, mask)


def _attention_bwd(heads, interpret, residuals, do):
  q, k, v, mask = residuals
  dq, dk, dv = _call(_backward_kernel, "albert_fused_attention_bwd", mask, (q, k, v, do), 3,
                     heads, interpret)
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def fused_attention(q: Array, k: Array, v: Array, attention_mask: Array,
                    interpret: bool) -> Array:
  """Attention of [b, T, heads, head_dim] q, k, v with a [b, T] 1/0 key mask, on one shard."""
  b, t, heads, head_dim = q.shape
  flat = lambda x: x.reshape(b, t, heads * head_dim)
  out = _attention(flat(q), flat(k), flat(v), attention_mask.astype(jnp.int32), heads, interpret)
  return out.reshape(q.shape)
