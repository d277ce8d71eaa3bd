"""Synthetic batches for the benchmarks, and parts of the pretraining step timed on their own
(for `bench_train speed --breakdown`).

The loss's forward pass and forward + backward use the real model, parameters, batch and mesh.
The dense matmuls and the attention core "alone" reproduce only those operations of the encoder,
at the step's shapes on one device, to show how fast the device runs them with nothing else around.
Each `*_alone` returns (jitted gradient function, its arguments, the FLOPs it does).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax.model import attention
from albert_jax.train import partitioning
from albert_jax.model.config import ModelConfig


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0,
                    padded_predictions: float = 0.0) -> dict[str, np.ndarray]:
  """A random global batch of the config's shapes, with the official feature names.

  The second segment starts mid-sequence, and about a `padded_predictions` fraction of the
  prediction slots are padding (weight 0). The tests' batches are these too
  (tests/trainer_fixtures.py).
  """
  rng = np.random.default_rng(seed)
  b, s = config.training.global_batch_size, config.data.max_seq_length
  p, vocab = config.data.max_predictions_per_seq, config.model.vocab_size
  weights = (rng.random((b, p)) >= padded_predictions).astype(np.float32)
  return {"input_ids": rng.integers(5, vocab, (b, s)).astype(np.int32),
          "input_mask": np.ones((b, s), np.int32),
          "segment_ids": (np.arange(s)[None] > s // 2).astype(np.int32).repeat(b, 0),
          "masked_lm_positions": rng.integers(1, s, (b, p)).astype(np.int32),
          "masked_lm_ids": rng.integers(5, vocab, (b, p)).astype(np.int32),
          "masked_lm_weights": weights,
          "next_sentence_labels": rng.integers(0, 2, (b,)).astype(np.int32)}


def best_seconds(fn: Callable[..., Any], *args: Any, repeats: int = 3) -> float:
  """Best wall time of `fn(*args)` over `repeats` calls, after one warm-up (compiling) call."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def loss_seconds(config, job) -> dict[str, float]:
  """Best seconds of the pretraining loss's forward pass and of its forward + backward (the step
  without the optimizer update), with the step's parameters, batch, dropout and mesh."""
  state, _ = job.create_state()
  batch = partitioning.global_batch(synthetic_batch(config, 0), job.mesh)
  objective = job.objective

  def loss(params, batch, rng):
    outputs = objective.forward(params, batch, rng, False)
    return objective.loss_and_sums(outputs, batch, objective.normalizers(batch))[0]

  with jax.set_mesh(job.mesh), nn.logical_axis_rules(partitioning.rules_tuple(job.rules)):
    return {"forward": best_seconds(jax.jit(loss), state.params, batch, job.rng),
            "forward + backward": best_seconds(jax.jit(jax.grad(loss)), state.params, batch,
                                               job.rng)}


def _depth(cfg: ModelConfig) -> int:
  return cfg.num_hidden_layers * cfg.inner_group_num


def _depth_scan_loss(layer: Callable[[Any], Any], x: Any, cfg: ModelConfig) -> Any:
  """A scalar loss: `layer` applied L times under a scan (like the encoder's), summed."""
  out, _ = jax.lax.scan(lambda h, _: (layer(h), None), x, None, length=_depth(cfg))
  return jnp.sum(out.astype(jnp.float32))


def dense_matmuls_alone(cfg: ModelConfig, rows: int):
  """(fn, args, FLOPs): the encoder's dense matmuls alone, forward + backward, on one device.

  L layers of x [rows, H] -> query + key + value projections -> output projection -> the two FFN
  matmuls, with shared weights: every dense matmul of the real step (x @ W forward, dy @ W^T and
  x^T @ dy backward) and nothing in between.
  """
  h, i = cfg.hidden_size, cfg.intermediate_size
  keys = jax.random.split(jax.random.PRNGKey(0), 7)
  # Scaled so that activations keep unit size through any depth (3 projections are summed).
  fan_in = [3 * h, 3 * h, 3 * h, h, h, i]
  shapes = [(h, h)] * 4 + [(h, i), (i, h)]
  weights = [(jax.random.normal(k, s) / fan ** 0.5).astype(cfg.dtype)
             for k, s, fan in zip(keys, shapes, fan_in)]
  x = jax.random.normal(keys[6], (rows, h)).astype(cfg.dtype)

  def loss(weights, x):
    wq, wk, wv, wo, w1, w2 = weights
    return _depth_scan_loss(lambda h: (((h @ wq + h @ wk + h @ wv) @ wo) @ w1) @ w2, x, cfg)

  flops = 3 * 2 * rows * (4 * h * h + 2 * h * i) * _depth(cfg)
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (weights, x), flops


def attention_core_alone(cfg: ModelConfig, batch: int, seq: int):
  """(fn, args, FLOPs): `attention.xla_attention` alone (QK^T, mask, softmax, PV) for L layers,
  forward + backward, on one device at the step's per-device shapes."""
  shape = (batch, seq, cfg.num_attention_heads, cfg.head_dim)
  x = jax.random.normal(jax.random.PRNGKey(0), shape).astype(cfg.dtype)
  mask = jnp.ones((batch, seq), jnp.int32)

  def loss(x):
    return _depth_scan_loss(
        lambda h: attention.xla_attention(h, h, h, mask, lambda p: p, cfg.dtype), x, cfg)

  flops = 3 * 2 * 2 * batch * seq * seq * cfg.hidden_size * _depth(cfg)
  return jax.jit(jax.grad(loss)), (x,), flops
