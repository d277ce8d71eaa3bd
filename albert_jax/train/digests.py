"""Integrity digests of a train state: written with each checkpoint, verified when it is restored.

Orbax stores arrays without checksums, so bytes overwritten inside a checkpoint's array data (the
file keeps its size and still parses) restore silently, e.g. as NaN in the optimizer state.
`of_tree` gives every array a 64-bit digest of its exact bits; `Checkpointer.save` writes them in
the step's own metadata (orbax `custom_metadata`) and a restore compares the restored arrays with
them (`mismatches`), so a damaged step is unreadable and the fallback rule
(`checkpoints.newest_readable`) takes the previous one.

The digest is computed on the devices, inside one jit, as two sums modulo 2**32 over the
elements, of (bits * odd hash of the element's flat index) and hash(bits ^ hash of the index).
Integer sums are exact and order-free, so the digest of an array does not depend on its sharding
(a state saved on 8 devices verifies when restored on 1) and costs one pass over the state, on
every process alike. Any change of a single element changes the first sum (the multiplier is odd);
it detects accidental damage, not tampering (it is not a cryptographic hash).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

DIGEST_KEY = "array_digests"  # the key of the digests in a step's custom metadata


def _mix(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer (uint32 arithmetic wraps modulo 2**32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _bits(x: jax.Array) -> jax.Array:
  """The elements' bit patterns as uint32 (8-byte elements as two words on a trailing axis)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  size = np.dtype(x.dtype).itemsize
  if x.dtype == jnp.bool_ or size == 1:
    return x.astype(jnp.uint32)
  if size == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
  return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _leaf_digest(x: jax.Array) -> jax.Array:
  bits = _bits(jnp.asarray(x))
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(bits.ndim)):  # the row-major flat index, wrapping past 2**32
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(
        stride % 2**32)
    stride *= bits.shape[axis]
  weight = _mix(index)
  first = jnp.sum(bits * (weight | jnp.uint32(1)), dtype=jnp.uint32)
  second = jnp.sum(_mix(bits ^ weight), dtype=jnp.uint32)
  return jnp.stack([first, second])


@jax.jit
def _digest_arrays(tree: Any) -> Any:
  return jax.tree.map(_leaf_digest, tree)


def of_tree(tree: Any, path_name: Callable[[tuple[Any, ...]], str]) -> dict[str, str]:
  """{leaf path (as `path_name` writes it): 16 hex digits} of every array of `tree`.

  Collective: on several processes every one calls it (the arrays may be sharded across them).
  """
  digests = _digest_arrays(tree)
  out = {}
  for path, value in jax.tree_util.tree_leaves_with_path(digests):
    # Replicated result: this process's copy is the value.
    words = np.asarray(value.addressable_data(0) if isinstance(value, jax.Array) else value)
    out[path_name(path)] = f"{int(words[0]):08x}{int(words[1]):08x}"
  return out


def mismatches(tree: Any, saved: Mapping[str, str],
               path_name: Callable[[tuple[Any, ...]], str]) -> list[str]:
  """The leaves of `tree` whose digest differs from `saved` (leaves absent from it are not
  checked: `saved` may digest a larger tree, e.g. a whole state when `tree` is its params)."""
  return sorted(path for path, digest in of_tree(tree, path_name).items()
                if path in saved and saved[path] != digest)
