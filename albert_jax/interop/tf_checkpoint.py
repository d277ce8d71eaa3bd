"""Official TF1 ALBERT checkpoints (tar releases, TF-Hub exports, fine-tuned run_classifier /
run_squad / run_race models), local or in a bucket, read into our tree through their HF names.

    config, params = load_tf(ckpt_prefix, albert_config_json)
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from albert_jax import fileio
from albert_jax.interop import names
from albert_jax.interop.tensors import Params, params_from_hf_tensors
from albert_jax.model.config import ModelConfig

# The official AlbertConfig's constructor defaults (google-research/albert `modeling.py`: xxlarge);
# vocab_size has none. It has no layer_norm_eps field: its layer_norm uses TF's 1e-12, which is
# ModelConfig's default, and its classifier dropout is the hard-coded 0.1, also ours.
_OFFICIAL_DEFAULTS = dict(embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                          num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384,
                          inner_group_num=1, hidden_act="gelu", hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, max_position_embeddings=512,
                          type_vocab_size=2, initializer_range=0.02)

_TF_SKIP = ("adam_m", "adam_v", "lamb_m", "lamb_v", "AdamWeightDecayOptimizer", "global_step")


def config_from_official(official: Mapping[str, Any]) -> ModelConfig:
  """Our config of an official albert_config.json: the official defaults overlaid with the JSON."""
  if "vocab_size" not in official:
    raise ValueError("albert_config.json has no field 'vocab_size' (the official AlbertConfig "
                     "requires it)")
  merged = dict(_OFFICIAL_DEFAULTS, **{k: v for k, v in official.items()
                                       if k in names.CONFIG_FIELDS or k == "hidden_act"})
  # Official "gelu" is the tanh approximation, which is also our "gelu".
  acts = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "swish": "silu"}
  act = merged["hidden_act"]
  if act not in acts:
    raise ValueError(f"albert_config.json field 'hidden_act'={act!r} is not supported; "
                     f"allowed: {sorted(acts)}")
  return ModelConfig(**{k: merged[k] for k in names.CONFIG_FIELDS}, hidden_act=acts[act],
                     layer_sharing="all")


def _resolve_tf_checkpoint(path: str) -> str:
  """Accepts a checkpoint prefix, a directory with a `checkpoint` file, or a TF-Hub module dir
  (local or in a bucket: gs://...)."""
  if fileio.exists(path + ".index"):  # a prefix (tested first: in buckets, prefixes list as dirs)
    return path
  if fileio.isdir(path):
    hub_variables = os.path.join(path, "variables", "variables")
    if fileio.exists(hub_variables + ".index"):
      return hub_variables
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    latest = tf.train.latest_checkpoint(path)
    if latest is not None:
      return latest
    raise FileNotFoundError(f"{path} holds no TF checkpoint (no 'checkpoint' file and no "
                            "TF-Hub variables/variables.index)")
  raise FileNotFoundError(f"TF checkpoint {path}.index not found")


def _squad_v2_tree(cfg: ModelConfig, found: Mapping[tuple[str, ...], np.ndarray],
                   source: str) -> dict[str, Params]:
  """{"squad": the head} of the official SQuAD v2.0 variables `found` (none: {}); an incomplete
  or mis-shaped head is an error naming what is there and what is missing."""
  if not found:
    return {}
  leaves = list(names.squad_v2_tf_leaves(cfg))
  missing = [tf_name for tf_name, path, _ in leaves if path not in found]
  wrong = [f"{tf_name}: {source} has {found[path].shape}, model expects {shape}"
           for tf_name, path, shape in leaves if path in found and found[path].shape != shape]
  if missing or wrong:
    have = sorted(tf_name for tf_name, path, _ in leaves if path in found)
    raise ValueError(f"{source} has an incomplete official SQuAD v2.0 head: it has {have}"
                     + "".join(f"\n  missing: {m}" for m in missing)
                     + "".join(f"\n  shape mismatch: {w}" for w in wrong))
  dtype = jnp.dtype(cfg.param_dtype)
  tree = traverse_util.unflatten_dict({path[1:]: np.asarray(v, dtype) for path, v in found.items()})
  return {names.SQUAD_V2_TREE: tree}


def load_tf(ckpt_prefix: str, albert_config_json: str, *, allow_missing_heads: bool = False,
            strict: bool = True, seed: int = 0) -> tuple[ml_collections.ConfigDict, Params]:
  """Loads an official TF1 ALBERT checkpoint (optimizer slots and global_step are ignored), local
  or in a bucket (gs://). A fine-tuned one gives the tree of our task model: run_classifier's and
  run_race's `output_weights` / `output_bias` become `classifier`, run_squad_v1's cls/squad/ head
  `qa_outputs`, run_squad_v2's start_logits/, end_logits/ and answer_class/ the `squad` head."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cfg = config_from_official(fileio.read_json(albert_config_json))
  prefix = _resolve_tf_checkpoint(ckpt_prefix)
  # The reader itself: tf.train.load_checkpoint takes a prefix that lists as a directory in a
  # bucket for one, and looks for a 'checkpoint' file in it.
  reader = tf.compat.v1.train.NewCheckpointReader(prefix)
  by_tf_name = {names.tf_name(t.hf_key): t.hf_key for t in names.tensors(cfg)}
  by_tf_name.update(names.TF_TASK_HEAD_KEYS)
  squad_v2 = {tf_name: path for tf_name, path, _ in names.squad_v2_tf_leaves(cfg)}
  tensors, unexpected, squad_found = {}, {}, {}
  for var in reader.get_variable_to_shape_map():
    name = var[len("module/"):] if var.startswith("module/") else var
    if any(part in _TF_SKIP for part in name.split("/")):
      continue
    value = reader.get_tensor(var)
    if name in squad_v2:
      squad_found[squad_v2[name]] = value
    elif name in by_tf_name:
      hf_key = by_tf_name[name]
      tensors[hf_key] = value.T if hf_key not in names.TF_TASK_HEAD_KEYS.values() and (
          names.tf_transpose(hf_key)) else value
    else:
      unexpected["tf:" + name] = value
  tensors.update(unexpected)  # reported as unexpected by the strict check
  params = params_from_hf_tensors(cfg, tensors, allow_missing_heads=allow_missing_heads,
                                  strict=strict, seed=seed, source=prefix,
                                  task_trees=_squad_v2_tree(cfg, squad_found, prefix))
  return cfg.to_config_dict(), params
