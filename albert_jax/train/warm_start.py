"""Warm starts (`config.init_from`): parameters from another run or a converted checkpoint.

Sources (`init_from.kind`, "auto" detects them): an albert_jax checkpoint directory
(convert.save_checkpoint), another run's workdir (its latest train state), a Hugging Face directory,
or an official TF1 checkpoint (needs `init_from.albert_config`).

`init_from.group0=True` is the paper's "init from group 0" (official `--init_from_group0`): every
group (and, for unshared layers, every layer) of the new model starts from the first group/layer of
the source. With all-shared layers the tree does not depend on depth, so a 6-layer model initializes
a 12-layer one even without it (how ALBERT-xxlarge was trained). Anything else that does not fit is
an error listing every mismatch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections
import numpy as np
from flax import traverse_util

from albert_jax.interop import convert
from albert_jax.model.config import ModelConfig

# Encoder leaves carry stacked leading axes (groups[, layers]); group0 broadcasts their first entry.
_STACKED_PREFIX = ("albert", "encoder", "groups")
# Fields that must agree between the source and the new model (depth and grouping may differ).
_SHAPE_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.path = ""                 # empty: no warm start
  c.kind = "auto"             # auto | checkpoint | workdir | hf | tf
  c.albert_config = ""        # official albert_config.json (kind tf)
  c.group0 = False            # broadcast the source's first group/layer to every group/layer
  return c


def _detect(path: str) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  exists = tf.io.gfile.exists  # also for buckets (gs://)
  if exists(os.path.join(path, "model_config.json")):
    return "checkpoint"
  if exists(os.path.join(path, "checkpoints")):
    return "workdir"
  if exists(os.path.join(path, "config.json")):
    return "hf"
  if exists(path + ".index") or exists(os.path.join(path, "variables")):
    return "tf"
  raise FileNotFoundError(f"config field 'init_from.path'={path!r}: not an albert_jax checkpoint, "
                          "a run's workdir, a Hugging Face directory or a TF checkpoint")


def _latest_workdir_params(workdir: str) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, "checkpoints")
  steps = sorted(int(s.rstrip("/")) for s in tf.io.gfile.listdir(directory)
                 if s.rstrip("/").isdigit())
  if not steps:
    raise FileNotFoundError(f"config field 'init_from.path': {directory} holds no checkpoint")
  for step in reversed(steps):  # newest first; an unreadable one falls back, as on resume
    try:
      return convert.restore_tree(os.path.join(directory, str(step), "state"))["params"]
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("init_from: checkpoint %d of %s cannot be read (%s: %s); trying the "
                      "previous one", step, workdir, type(e).__name__, e)
  raise ValueError(f"config field 'init_from.path': no checkpoint in {directory} can be read "
                   f"(steps {steps})")


def read_source(init_from: ml_collections.ConfigDict) -> tuple[Any, dict]:
  """(source model config or None, source params) from `init_from`."""
  kind = init_from.kind if init_from.kind != "auto" else _detect(init_from.path)
  if kind == "checkpoint":
    cfg, params = convert.load_checkpoint(init_from.path)
  elif kind == "workdir":
    return None, _latest_workdir_params(init_from.path)
  elif kind == "hf":
    cfg, params = convert.load_hf(init_from.path, allow_missing_heads=True)
  elif kind == "tf":
    if not init_from.albert_config:
      raise ValueError("config field 'init_from.albert_config' is needed for a TF checkpoint")
    cfg, params = convert.load_tf(init_from.path, init_from.albert_config,
                                  allow_missing_heads=True)
  else:
    raise ValueError(f"config field 'init_from.kind'={kind!r}: allowed auto, checkpoint, "
                     "workdir, hf, tf")
  return ModelConfig.from_any(cfg), params


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
