"""The attention core, softmax(Q K^T / sqrt(d) + mask) V, in four implementations.

`model.attention_impl` picks one:

  xla                    einsum attention, float32 scores and softmax (the numerical reference,
                         the official model's arithmetic); materializes [B, heads, T, T].
  dot_product_attention  `jax.nn.dot_product_attention`; on NVIDIA GPUs with
                         implementation="cudnn" (cuDNN flash attention), elsewhere XLA's.
  splash                 the Pallas TPU splash (flash) attention kernel that ships with jax
                         (jax.experimental.pallas.ops.tpu.splash_attention), run per shard under
                         the mesh by shard_map over batch and heads; interpret mode on a CPU.
  fused_tpu              our Pallas TPU kernel for sequences of up to 512 tokens: a whole row of
                         scores in VMEM, no log-sum-exp residual, no layout transposes
                         (albert_jax/model/fused_attention.py); per shard like splash.
  auto                   the platform's fused kernel where the config and the shapes allow it
                         (see `resolve`), else xla.

Padding has the official semantics in all of them: a key whose mask is 0 gets probability 0. A
sequence whose mask is all 0 (an all-padding row of a padded eval batch) keeps the official
result: -10000 added to every score is no mask at all, so splash and cuDNN see every key as
valid there (they would otherwise divide by a zero sum); fused_tpu adds the official bias itself.
The fused kernels have no attention-probability dropout: model_config refuses an explicit fused
choice with `attention_probs_dropout_prob` > 0, and `auto` uses xla whenever that dropout is active.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec as P
import numpy as np

from albert_jax.model.config import ATTENTION_IMPLS

Array = jax.Array

# Official ALBERT adds (1 - mask) * -10000 to the attention scores. Scores and softmax are always
# computed in float32 here, where -10000 drives masked probabilities to exactly 0 for any realistic
# score, so the official constant is also dtype-safe (a finfo.min would overflow to -inf on addition).
MASK_BIAS = -10000.0
# Splash tiles the sequence in blocks of these sizes (the largest that divides T); the TPU kernel
# needs multiples of 128.
_SPLASH_BLOCKS = (512, 256, 128)
_CUDNN_DTYPES = ("bfloat16", "float16")


def mask_bias(attention_mask: Array) -> Array:
  """[B, T] 1/0 mask -> additive [B, 1, 1, T] float32 bias on the keys (official semantics)."""
  return (1.0 - attention_mask.astype(jnp.float32))[:, None, None, :] * MASK_BIAS


def valid_keys(attention_mask: Array) -> Array:
  """[B, T] bool: the keys a fused kernel may attend to (every key of an all-padding row)."""
  valid = attention_mask > 0
  return valid | ~valid.any(axis=-1, keepdims=True)


def _target_device() -> Any:
  """The kind of device the computation is compiled for (its `platform` and `device_kind`): the
  mesh's, also a compile-only TPU topology planned from a CPU host, else the default device's."""
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.abstract_device is not None:
    return mesh.abstract_device
  return jax.devices()[0]


def _is_nvidia(device: Any) -> bool:
  return device.platform == "gpu" and "nvidia" in device.device_kind.lower()


def resolve(impl: str, *, dtype: str, seq_len: int, dropout_active: bool,
            device: Optional[Any] = None) -> str:
  """The implementation `impl` runs as: `auto` becomes fused_tpu on a TPU (T a multiple of 128,
  at most 512; splash for longer T), dot_product_attention on an NVIDIA GPU (bf16/fp16, the
  dtypes cuDNN's flash kernel takes) and xla elsewhere or while attention dropout is active; an
  explicit choice stays."""
  if impl != "auto":
    return impl
  device = _target_device() if device is None else device
  if dropout_active:
    return "xla"
  if device.platform == "tpu" and seq_len % 128 == 0:
    from albert_jax.model import fused_attention  # pylint: disable=g-import-not-at-top
    return "fused_tpu" if fused_attention.supports(seq_len) else "splash"
  if _is_nvidia(device) and dtype in _CUDNN_DTYPES:
    return "dot_product_attention"
  return "xla"


def xla_attention(q: Array, k: Array, v: Array, attention_mask: Array,
                  dropout: Callable[[Array], Array], dtype: Any) -> Array:
  """Einsum attention of [B, T, heads, head_dim] q, k, v -> context of the same shape.

  Scores and softmax in float32 with the official additive mask; `dropout` acts on the
  probabilities, which are then cast to the compute `dtype`.
  """
  scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
  scores = scores / jnp.sqrt(jnp.float32(q.shape[-1])) + mask_bias(attention_mask)
  probs = dropout(jax.nn.softmax(scores, axis=-1))
  probs = checkpoint_name(probs.astype(dtype), "attention_probs")
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)


def _check_right_padded(attention_mask: Array) -> None:
  """cuDNN takes padding as key lengths, which is exact for right-padded masks (every albert_jax
  featurizer and the official data pad on the right). Checked where the mask is concrete."""
  if isinstance(attention_mask, jax.core.Tracer):
    return
  mask = np.asarray(attention_mask) > 0
  lengths = mask.sum(-1, keepdims=True)
  if (mask != (np.arange(mask.shape[-1]) < lengths)).any():
    raise ValueError("model config field 'attention_impl'='dot_product_attention' on a GPU takes "
                     "right-padded attention masks only (ones, then zeros); use 'xla' for others")


def dot_product_attention(q: Array, k: Array, v: Array, attention_mask: Array,
                          device: Optional[Any] = None) -> Array:
  """`jax.nn.dot_product_attention`: cuDNN flash attention on an NVIDIA GPU (padding as key
  lengths), XLA's implementation with a boolean key mask elsewhere."""
  valid = valid_keys(attention_mask)
  if _is_nvidia(_target_device() if device is None else device):
    _check_right_padded(attention_mask)
    lengths = valid.sum(-1).astype(jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                        implementation="cudnn")
  return jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :])


def _splash_block(seq_len: int) -> int:
  block = next((b for b in _SPLASH_BLOCKS if seq_len % b == 0), None)
  if block is None:
    raise ValueError(f"model config field 'attention_impl'='splash' needs a sequence length that "
                     f"is a multiple of 128, got {seq_len}; use 'auto' or 'xla'")
  return block


def _splash_kernel(heads: int, seq_len: int, block: int, interpret: bool):
  """A splash MHA kernel for [heads, T, head_dim] inputs of one sequence. Built in each trace
  (not cached): it holds its mask tables as arrays, which must belong to the trace using them."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # pylint: disable=g-import-not-at-top
  mask = splash.MultiHeadMask([splash.FullMask((seq_len, seq_len))] * heads)
  # Sequence-minor q, k, v: TPU tiles pad a minor dimension to 128 lanes, which would double
  # the bytes of every [heads, T, 64] operand; T (a multiple of 128) needs no padding.
  seq_minor = splash.QKVLayout.SEQ_MINOR
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            use_fused_bwd_kernel=True, q_layout=seq_minor, k_layout=seq_minor,
                            v_layout=seq_minor)
  return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)


def _splash_local(q: Array, k: Array, v: Array, valid: Array, interpret: bool) -> Array:
  """Splash on one shard: [b, T, n, d] q, k, v and [b, T] valid keys -> [b, T, n, d]."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # pylint: disable=g-import-not-at-top
  _, seq_len, heads, head_dim = q.shape
  if interpret and seq_len % 128:
    block = seq_len  # interpret mode (CPU tests) takes any tile; the TPU kernel does not
  else:
    block = _splash_block(seq_len)
  kernel = _splash_kernel(heads, seq_len, block, interpret)
  # Splash does not scale: fold 1/sqrt(d) into q (exact in any dtype for d = 64 or 256).
  q = q * jnp.asarray(1.0 / math.sqrt(head_dim), q.dtype)
  to_heads = lambda x: jnp.swapaxes(x, 1, 2)  # [b, T, n, d] -> [b, n, T, d]
  # Every query is in segment 1; keys are in segment 1 when valid and 0 when padding.
  segments = jax.vmap(lambda kv: splash.SegmentIds(q=jnp.ones_like(kv), kv=kv))(
      valid.astype(jnp.int32))
  out = jax.vmap(kernel)(to_heads(q), to_heads(k), to_heads(v), segments)
  return to_heads(out)


def _shard_spec(mesh, names: tuple[Optional[str], ...], shape: tuple[int, ...]) -> P:
  """The mesh axes of logical `names` (the config's rules), dropped for a dimension they do not
  divide (e.g. the batch of 1 that initialization traces)."""
  axes = nn.logical_to_mesh_axes(names)
  out = []
  for size, axis in zip(shape, axes):
    parts = (axis,) if isinstance(axis, str) else tuple(axis or ())
    out.append(axis if parts and size % math.prod(mesh.shape[a] for a in parts) == 0 else None)
  return P(*out)


def _per_shard(local: Callable[..., Array], q: Array, k: Array, v: Array, mask: Array) -> Array:
  """`local(q, k, v, mask)` of [B, T, heads, head_dim] q, k, v and a [B, T] mask; under a mesh,
  per (batch, heads) shard (a Pallas kernel sees only its shard)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return local(q, k, v, mask)
  qkv_spec = _shard_spec(mesh, ("act_batch", None, "heads", None), q.shape)
  mask_spec = P(qkv_spec[0], None)
  return jax.shard_map(local, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, mask_spec),
                       out_specs=qkv_spec, check_vma=False)(q, k, v, mask)


def splash_attention(q: Array, k: Array, v: Array, attention_mask: Array,
                     device: Optional[Any] = None) -> Array:
  """Splash attention of [B, T, heads, head_dim] q, k, v; under a mesh, per (batch, heads) shard."""
  device = _target_device() if device is None else device
  local = functools.partial(_splash_local, interpret=device.platform != "tpu")
  return _per_shard(local, q, k, v, valid_keys(attention_mask))


def fused_tpu_attention(q: Array, k: Array, v: Array, attention_mask: Array,
                        device: Optional[Any] = None) -> Array:
  """fused_attention's kernel on [B, T, heads, head_dim] q, k, v; per (batch, heads) shard."""
  from albert_jax.model import fused_attention  # pylint: disable=g-import-not-at-top
  device = _target_device() if device is None else device
  interpret = device.platform != "tpu"
  if not interpret and not fused_attention.supports(q.shape[1]):
    raise ValueError(f"model config field 'attention_impl'='fused_tpu' takes sequence lengths "
                     f"that are multiples of 128 up to {fused_attention.MAX_SEQ_LEN}, got "
                     f"{q.shape[1]}; use 'auto' or 'splash'")
  local = functools.partial(fused_attention.fused_attention, interpret=interpret)
  return _per_shard(local, q, k, v, attention_mask)


def attend(impl: str, q: Array, k: Array, v: Array, attention_mask: Array,
           dropout: Callable[[Array], Array], dtype: Any) -> Array:
  """The attention core of an already resolved implementation (see `resolve`)."""
  if impl == "xla":
    return xla_attention(q, k, v, attention_mask, dropout, dtype)
  if impl == "dot_product_attention":
    return dot_product_attention(q, k, v, attention_mask)
  if impl == "splash":
    return splash_attention(q, k, v, attention_mask)
  if impl == "fused_tpu":
    return fused_tpu_attention(q, k, v, attention_mask)
  raise ValueError(f"model config field 'attention_impl'={impl!r}; allowed: {ATTENTION_IMPLS}")
