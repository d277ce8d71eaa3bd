"""Warm starts (`config.init_from`): parameters from another run or a converted checkpoint.

Sources (`init_from.kind`, "auto" detects them): every kind checkpoint_kinds.py reads, with its
fallback rule: an albert_jax checkpoint directory (save_checkpoint), another run's workdir (a
fine-tuning run's best/, a pretraining run's newest readable step), a Hugging Face directory, or an
official TF1 checkpoint or TF-Hub module (`init_from.albert_config`, else the albert_config.json
beside it).

`init_from.group0=True` is the paper's "init from group 0" (official `--init_from_group0`): every
group (and, for unshared layers, every layer) of the new model starts from the first group/layer of
the source. With all-shared layers the tree does not depend on depth, so a 6-layer model initializes
a 12-layer one even without it (how ALBERT-xxlarge was trained). Anything else that does not fit is
an error listing every mismatch.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import ml_collections
import numpy as np
from flax import traverse_util

from albert_jax.model.config import ModelConfig
from albert_jax.train import checkpoint_kinds

# Encoder leaves carry stacked leading axes (groups[, layers]); group0 broadcasts their first entry.
_STACKED_PREFIX = ("albert", "encoder", "groups")
# Fields that must agree between the source and the new model (depth and grouping may differ).
_SHAPE_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.path = ""                 # empty: no warm start
  c.kind = "auto"             # auto | checkpoint | workdir | hf | tf
  c.albert_config = ""        # official albert_config.json (kind tf; empty: the one beside it)
  c.group0 = False            # broadcast the source's first group/layer to every group/layer
  return c


def read_source(init_from: ml_collections.ConfigDict) -> tuple[Optional[ModelConfig], dict]:
  """(source model config, or None for a workdir without one; source params) of `init_from`."""
  source = checkpoint_kinds.read(init_from.path, kind=init_from.kind,
                                 albert_config=init_from.albert_config,
                                 field="config field 'init_from.path'",
                                 albert_config_field="config field 'init_from.albert_config'")
  return source.model_config, source.params


def fit_params(source: dict, target: dict, group0: bool) -> dict:
  """Source params shaped like `target` (a tree of arrays or shape structs); strict."""
  src = traverse_util.flatten_dict(source)
  out, problems = {}, []
  for path, t in traverse_util.flatten_dict(target).items():
    if path not in src:
      problems.append(f"missing in source: {'/'.join(path)}")
      continue
    value = np.asarray(src[path])
    if group0 and path[:3] == _STACKED_PREFIX:
      # Leading stacked axes (groups[, layers]) sit before the layer's own 2-D kernel or 1-D
      # vector: take the source's first group/layer and repeat it over the model's, also when
      # the source has as many groups as the model (official --init_from_group0 semantics).
      core = 2 if path[-1] == "kernel" else 1
      first = value[(0,) * (value.ndim - core)]
      if first.shape == tuple(t.shape[len(t.shape) - core:]):
        value = np.broadcast_to(first, t.shape).copy()
    if value.shape != tuple(t.shape):
      problems.append(f"shape mismatch: {'/'.join(path)} source {value.shape}, model {t.shape}")
      continue
    out[path] = value.astype(t.dtype)
  if problems:
    raise ValueError("config field 'init_from': the source does not fit the model"
                     f"{'' if group0 else ' (init_from.group0=True broadcasts group 0)'}:\n  "
                     + "\n  ".join(problems))
  return traverse_util.unflatten_dict(out)


def load_params(init_from: ml_collections.ConfigDict, model_cfg: ModelConfig,
                target_params: Any) -> dict:
  """Parameters for `model_cfg` warm-started from `init_from` (see module docstring)."""
  source_cfg, source = read_source(init_from)
  if source_cfg is not None:
    diff = [f"{k}: source {getattr(source_cfg, k)}, model {getattr(model_cfg, k)}"
            for k in _SHAPE_FIELDS if getattr(source_cfg, k) != getattr(model_cfg, k)]
    if diff:
      raise ValueError("config field 'init_from': the source model has another shape:\n  "
                       + "\n  ".join(diff))
  params = fit_params(source, target_params, init_from.group0)
  logging.info("warm start from %s (%s)", init_from.path, init_from.kind)
  return params
