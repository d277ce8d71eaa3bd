"""Tiny pretraining configs and synthetic batches for the trainer tests."""

from __future__ import annotations

import os

import numpy as np

from albert_jax import config_utils
from experiments import step_parts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pretrain_config = config_utils.load_sibling(os.path.join(REPO, "configs", "x.py"), "pretrain")


def tiny_config(train_files: str = "", **training):
  """A 2-layer ALBERT on 128-token records (the data fixtures' format), 6 steps of batch 8."""
  c = pretrain_config.get_config("size=tiny")
  c.model.vocab_size = 4000
  c.model.hidden_size = 32
  c.model.embedding_size = 16
  c.model.intermediate_size = 64
  c.model.num_attention_heads = 4
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_probs_dropout_prob = 0.0
  c.data.train_files = train_files
  c.data.max_seq_length = 128
  c.data.max_predictions_per_seq = 20
  c.data.shuffle_buffer_size = 64
  c.training.global_batch_size = 8
  c.training.total_steps = 6
  c.training.log_every_steps = 1
  c.training.checkpoint_every_steps = 3
  c.training.eval_batch_size = 8
  c.training.eval_max_batches = 2
  c.optimizer.learning_rate = 1e-2
  c.optimizer.warmup_steps = 2
  for key, value in training.items():
    c.training[key] = value
  return c


def synthetic_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  """A random global batch with the official feature names and about 20% padded predictions."""
  return step_parts.synthetic_batch(config, seed, padded_predictions=0.2)
