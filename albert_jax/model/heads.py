"""Output heads on top of AlbertModel: MLM, SOP/NSP, classification, SQuAD v1 and v2 span heads.

Names match the official/Hugging Face checkpoints where a counterpart exists (`predictions`,
`sop_classifier`, `classifier`, `qa_outputs`); logits are always returned in float32.
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax.model import layers
from albert_jax.model.config import ModelConfig

Array = jax.Array


def gather_positions(sequence: Array, positions: Array) -> Array:
  """sequence [B, T, H], positions [B, P] -> [B, P, H] (official `gather_indexes`)."""
  return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


class MaskedLMHead(nn.Module):
  """dense(H -> E, act) -> LayerNorm(E) -> logits against the tied word embeddings + bias[V]."""

  config: ModelConfig

  @nn.compact
  def __call__(self, sequence_output: Array, attend: Callable[[Array], Array],
               masked_positions: Optional[Array] = None) -> Array:
    cfg = self.config
    h = sequence_output
    if masked_positions is not None:
      h = gather_positions(h, masked_positions)
    h = layers.activation(cfg.hidden_act)(layers.dense(cfg, cfg.embedding_size, ("hidden", "embed"),
                                               "dense")(h))
    h = layers.layer_norm(cfg, "embed", "LayerNorm")(h).astype(cfg.dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           ("vocab",)),
                      (cfg.vocab_size,), cfg.param_dtype)
    return attend(h).astype(jnp.float32) + bias.astype(jnp.float32)


class SentenceOrderHead(nn.Module):
  """2-way logits on the pooled output; official: no dropout before it (HF adds 0.1)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, pooled_output: Array) -> Array:
    logits = layers.dense(self.config, 2, ("hidden", "classes"), "classifier")(pooled_output)
    return logits.astype(jnp.float32)


class ClassificationHead(nn.Module):
  """Dropout (`classifier_dropout_prob`, official 0.1) on the pooled output, then a linear layer."""

  config: ModelConfig
  num_labels: int

  @nn.compact
  def __call__(self, pooled_output: Array, deterministic: bool) -> Array:
    x = nn.Dropout(self.config.classifier_dropout_prob)(pooled_output, deterministic=deterministic)
    return layers.dense(self.config, self.num_labels, ("hidden", "classes"), "classifier")(x).astype(
        jnp.float32)


class SpanHead(nn.Module):
  """SQuAD v1.1: one H -> 2 projection of every token, split into start and end logits."""

  config: ModelConfig

  @nn.compact
  def __call__(self, sequence_output: Array) -> dict[str, Array]:
    logits = layers.dense(self.config, 2, ("hidden", "classes"), "dense")(sequence_output)
    logits = logits.astype(jnp.float32)
    return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


def _masked_log_softmax(logits: Array, p_mask: Array) -> Array:
  # Official: logits * (1 - p_mask) - 1e30 * p_mask, then log_softmax over the sequence.
  return jax.nn.log_softmax(logits * (1.0 - p_mask) - 1e30 * p_mask, axis=-1)


class SquadV2Head(nn.Module):
  """The official SQuAD v2.0 head (XLNet-style): google-research/albert `squad_utils.py` (v2 model).

  Training (start_positions given): teacher-forced end logits conditioned on the gold start;
  returns start_log_probs [B,T], end_log_probs [B,T] and cls_logits [B].
  Inference: beam of `start_n_top` starts x `end_n_top` ends; returns start_top_log_probs,
  start_top_index [B,Ks], end_top_log_probs, end_top_index [B,Ks,Ke] and cls_logits [B].
  """

  config: ModelConfig
  start_n_top: int = 5
  end_n_top: int = 5

  @nn.compact
  def __call__(self, sequence_output: Array, p_mask: Array,
               start_positions: Optional[Array] = None, deterministic: bool = True):
    cfg = self.config
    hidden = cfg.hidden_size
    h = sequence_output.astype(jnp.float32)
    p_mask = p_mask.astype(jnp.float32)
    start_logits = layers.dense(cfg, 1, ("hidden", "classes"), "start_dense")(h)[..., 0]
    start_log_probs = _masked_log_softmax(start_logits.astype(jnp.float32), p_mask)

    end_hidden = layers.dense(cfg, hidden, ("hidden2", "hidden"), "end_dense_0")
    end_norm = layers.layer_norm(cfg, "hidden", "end_LayerNorm")
    end_out = layers.dense(cfg, 1, ("hidden", "classes"), "end_dense_1")

    def end_logits_given(start_features):  # start_features broadcastable to h
      x = jnp.concatenate([h, jnp.broadcast_to(start_features, h.shape)], axis=-1)
      return end_out(end_norm(jnp.tanh(end_hidden(x))))[..., 0].astype(jnp.float32)

    out = {"start_logits": start_logits.astype(jnp.float32)}
    if start_positions is not None:
      start_features = gather_positions(h, start_positions[:, None])  # [B, 1, H]
      out["start_log_probs"] = start_log_probs
      out["end_log_probs"] = _masked_log_softmax(end_logits_given(start_features), p_mask)
    else:
      start_top_log_probs, start_top_index = jax.lax.top_k(start_log_probs, self.start_n_top)
      # [B, Ks, 1, H] against tokens [B, 1, T, H] -> end logits [B, Ks, T].
      start_features = gather_positions(h, start_top_index)[:, :, None, :]
      x = jnp.concatenate([jnp.broadcast_to(h[:, None], start_features.shape[:2] + h.shape[1:]),
                           jnp.broadcast_to(start_features, start_features.shape[:2]
                                            + h.shape[1:])], axis=-1)
      end_logits = end_out(end_norm(jnp.tanh(end_hidden(x))))[..., 0].astype(jnp.float32)
      end_log_probs = _masked_log_softmax(end_logits, p_mask[:, None, :])
      end_top_log_probs, end_top_index = jax.lax.top_k(end_log_probs, self.end_n_top)
      out.update(start_top_log_probs=start_top_log_probs, start_top_index=start_top_index,
                 end_top_log_probs=end_top_log_probs, end_top_index=end_top_index)

    # Answerability: [CLS] feature and the start-probability-weighted token feature.
    start_probs = jnp.exp(start_log_probs)
    start_feature = jnp.einsum("bt,bth->bh", start_probs, h)
    x = jnp.concatenate([start_feature, h[:, 0]], axis=-1)
    x = jnp.tanh(layers.dense(cfg, hidden, ("hidden2", "hidden"), "answer_class_dense_0")(x))
    x = nn.Dropout(cfg.classifier_dropout_prob)(x, deterministic=deterministic)
    cls_logits = layers.dense(cfg, 1, ("hidden", "classes"), "answer_class_dense_1",
                          use_bias=False)(x)[..., 0]
    out["cls_logits"] = cls_logits.astype(jnp.float32)
    return out
