"""Checkpoint interop: Hugging Face and official TF1 ALBERT checkpoints <-> albert_jax parameters.

    config, params = load_hf(hf_dir)                      # config.json + safetensors / .bin
    config, params = load_tf(ckpt_prefix, albert_config_json)
    save_hf(config, params, out_dir)                      # from_pretrained(out_dir) of the class
    save_checkpoint(config, params, dir) / load_checkpoint(dir)   # our own (orbax) format

`params` is the AlbertForPreTraining tree (see modeling.py) or the tree of a fine-tuning model.
Loading is strict: every missing, unexpected or mis-shaped tensor is listed in one error. Heads
absent from a source (HF hub checkpoints have no SOP head; AlbertModel/AlbertForMaskedLM layouts
lack others) are errors unless `allow_missing_heads=True`, in which case they are freshly
initialized and reported. A fine-tuned HF model (AlbertForSequenceClassification,
-TokenClassification, -MultipleChoice, -QuestionAnswering) loads as the tree of our matching task
model: its `classifier` / `qa_outputs` becomes ours, and the pretraining heads it lacks are not
expected.

Exporting writes the transformers class that holds the tree (`hf_classes.hf_architecture`): the
pretraining heads as AlbertForPreTraining, a fine-tuning head as its HF class, with num_labels,
id2label and problem_type from the fine-tuning task (`best/task.json`). The SQuAD v2.0 head has no
HF class: it is an error, unless only the encoder is exported (`encoder_only`, AlbertModel).
Nothing is left out silently: a tensor the class has no place for is named in a warning, an
unknown one is an error.

Config fields missing from a config.json / albert_config.json take the source's own defaults (both
AlbertConfigs default to the xxlarge shape), as transformers and the official code do.

CLI:
    python -m albert_jax.convert --hf_dir=DIR --out_checkpoint=OUT
    python -m albert_jax.convert --tf_checkpoint=PREFIX --albert_config=JSON --out_hf=OUT
    python -m albert_jax.convert --checkpoint=DIR --out_hf=OUT [--encoder_only]

--checkpoint takes every kind of checkpoint (albert_jax.train.checkpoint_kinds): a pretraining
workdir (its newest readable step), a fine-tuning workdir (its best/), our own checkpoint, a Hugging
Face directory, an official TF checkpoint or TF-Hub module (with the albert_config.json beside it or
--albert_config).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Optional, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
import flax.linen as nn

from albert_jax import command_line
from albert_jax import fileio
from albert_jax.command_line import InputError
from albert_jax.interop import names
from albert_jax.interop import hf_classes
from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig
# Our own format lives with the other orbax checkpoints; these names are this module's API too.
from albert_jax.train.checkpoints import (load_checkpoint, read_task, restore_tree,  # noqa: F401
                                          save_checkpoint)

Params = dict[str, Any]

# HF hidden_act -> ours. HF "gelu" is the exact erf form; the official "gelu" is the tanh form.
_HF_ACT_TO_OURS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
                   "gelu_fast": "gelu", "relu": "relu", "tanh": "tanh", "silu": "silu",
                   "swish": "silu"}
_OURS_ACT_TO_HF = {"gelu": "gelu_new", "gelu_new": "gelu_new", "gelu_exact": "gelu",
                   "relu": "relu", "tanh": "tanh", "silu": "silu"}
# Fields shared by name by the official AlbertConfig, HF's AlbertConfig and ours.
_COMMON_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
                  "num_hidden_groups", "num_attention_heads", "intermediate_size",
                  "inner_group_num", "hidden_dropout_prob", "attention_probs_dropout_prob",
                  "max_position_embeddings", "type_vocab_size", "initializer_range")
# transformers' AlbertConfig defaults (configuration_albert.py, the same in 4.x and 5.x: the
# xxlarge shape). transformers fills a field missing from config.json with these, so we must too:
# ModelConfig's defaults are ALBERT-base's, and a model read with them computes something else.
_HF_DEFAULTS = dict(vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                    num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384,
                    inner_group_num=1, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, max_position_embeddings=512,
                    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
                    classifier_dropout_prob=0.1)
# The official AlbertConfig's constructor defaults (google-research/albert `modeling.py`: xxlarge);
# vocab_size has none. It has no layer_norm_eps field: its layer_norm uses TF's 1e-12, which is
# ModelConfig's default, and its classifier dropout is the hard-coded 0.1, also ours.
_OFFICIAL_DEFAULTS = dict(embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                          num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384,
                          inner_group_num=1, hidden_act="gelu", hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, max_position_embeddings=512,
                          type_vocab_size=2, initializer_range=0.02)


# ------------------------------------------------------------------------------------------------
# Tensor dict (HF keys, PyTorch layout) <-> our tree
# ------------------------------------------------------------------------------------------------

def abstract_params(cfg: ModelConfig) -> Params:
  """Shapes and dtypes of the AlbertForPreTraining tree, without allocating it."""
  model = modeling.AlbertForPreTraining(cfg)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
  return nn.unbox(shapes["params"])


def params_from_hf_tensors(cfg: ModelConfig, tensors: Mapping[str, np.ndarray], *,
                           allow_missing_heads: bool = False, strict: bool = True,
                           seed: int = 0, source: str = "checkpoint",
                           task_trees: Optional[Mapping[str, Params]] = None) -> Params:
  """Builds our tree from HF-keyed arrays in PyTorch layout; see the module docstring.

  A source with a fine-tuning head (`classifier.*`, `qa_outputs.*`, or a head HF has no key for,
  given in our layout as `task_trees`: {top-level tree: its checked arrays}) gives the tree of
  our task model: the head under its name, and without the pretraining heads the source lacks
  (they are initialized, as for any source, with `allow_missing_heads=True`).
  """
  task_trees = dict(task_trees or {})
  abstract = traverse_util.flatten_dict(abstract_params(cfg))
  flat = {path: np.zeros(a.shape, a.dtype) for path, a in abstract.items()}
  missing, shape_errors, missing_heads = [], [], set()
  expected = list(names.tensors(cfg))
  for t in expected:
    if t.hf_key not in tensors:
      (missing_heads.add(t.head) if t.head else missing.append(t.hf_key))
      continue
    value = np.asarray(tensors[t.hf_key])
    if t.transpose:
      value = value.T
    target_shape = abstract[t.path].shape[len(t.index):]
    if value.shape != target_shape:
      shape_errors.append(f"{t.hf_key}: {source} has {value.shape}"
                          f"{' (transposed)' if t.transpose else ''}, model expects {target_shape}")
      continue
    flat[t.path][t.index] = value
  task_heads = [tree for tree in names.TASK_HEADS
                if any(t.hf_key in tensors for t in names.task_head_tensors(tree))]
  for tree in task_heads:
    head_tensors = list(names.task_head_tensors(tree))
    expected += head_tensors
    missing += [t.hf_key for t in head_tensors if t.hf_key not in tensors]
    if any(t.hf_key not in tensors for t in head_tensors):
      continue
    weight, bias = (np.asarray(tensors[t.hf_key]) for t in head_tensors)
    # The output count is the head's own (num_labels); only the input side is fixed by the model.
    outputs = 2 if tree == "qa_outputs" else weight.shape[0]
    if weight.shape != (outputs, cfg.hidden_size) or bias.shape != (outputs,):
      shape_errors.append(f"{head_tensors[0].hf_key} / .bias: {source} has {weight.shape} / "
                          f"{bias.shape}, model expects ({outputs}, {cfg.hidden_size}) / "
                          f"({outputs},)")
      continue
    dtype = jnp.dtype(cfg.param_dtype)
    flat[head_tensors[0].path] = weight.T.astype(dtype)
    flat[head_tensors[1].path] = bias.astype(dtype)
  for tree, value in task_trees.items():
    flat.update({(tree,) + path: leaf for path, leaf in traverse_util.flatten_dict(value).items()})
  task_heads += list(task_trees)
  for alias, target in names.HF_TIED_ALIASES.items():
    if alias in tensors and target in tensors and not np.array_equal(tensors[alias],
                                                                     tensors[target]):
      shape_errors.append(f"{alias} differs from {target}: untied weights are not supported")
  known = {t.hf_key for t in expected} | set(names.HF_IGNORED) | set(names.HF_TIED_ALIASES)
  unexpected = sorted(k for k in tensors if k not in known)
  # A fine-tuned source lacks the pretraining heads by design: not an error, they are left out
  # (but a head it has part of is incomplete, as in any source).
  partial = {t.head for t in expected if t.head in missing_heads and t.hf_key in tensors}
  if missing_heads and not allow_missing_heads:
    missing += [t.hf_key for t in expected if t.head in (partial if task_heads else missing_heads)
                and t.hf_key not in tensors]
  problems = ([f"missing: {k}" for k in missing] + [f"shape mismatch: {e}" for e in shape_errors]
              + ([f"unexpected: {k}" for k in unexpected] if strict else []))
  if problems:
    hint = (" (pass allow_missing_heads=True to initialize absent heads)"
            if missing_heads and not allow_missing_heads and not task_heads else "")
    raise ValueError(f"{source} does not fit the model config{hint}:\n  " + "\n  ".join(problems))
  if unexpected:
    logging.warning("ignored %d tensors of %s not used by the model: %s", len(unexpected), source,
                    unexpected)
  head_paths = {t.path for t in expected if t.head in missing_heads}
  if missing_heads and allow_missing_heads:
    fresh = traverse_util.flatten_dict(init_params(cfg, seed))
    for path in head_paths:
      flat[path] = np.asarray(fresh[path])
    logging.warning("%s has no %s head(s): initialized them randomly (seed %d): %s", source,
                    sorted(missing_heads), seed, sorted("/".join(p) for p in head_paths))
  elif missing_heads:
    for path in head_paths:
      del flat[path]
  if task_heads:
    logging.info("%s is a fine-tuned model: loaded its %s head(s)%s", source, task_heads,
                 f" without the {sorted(missing_heads)} head(s) it lacks"
                 if missing_heads and not allow_missing_heads else "")
  return traverse_util.unflatten_dict(flat)


def hf_tensors_from_params(cfg: ModelConfig, params: Params,
                           arch: Optional[hf_classes.HfArchitecture] = None
                           ) -> dict[str, np.ndarray]:
  """Our tree -> HF-keyed arrays in PyTorch layout for the class `arch` (default: inferred).

  The encoder and a fine-tuning head are required; the pooler too where the class applies it
  to a head. The pretraining heads are written when present (an absent one is left to
  transformers, which reports it). Every leaf of `params` is written, or named in a warning when
  `arch` has no place for it (pretraining heads of a fine-tuned model, heads with encoder_only);
  a leaf no HF tensor corresponds to is an error.
  """
  params = nn.unbox(params)
  arch = arch or hf_classes.hf_architecture(params)
  flat = traverse_util.flatten_dict(params)
  wanted = {"pooler": arch.pooler, "mlm": arch.pretraining, "sop": arch.pretraining}
  expected = [t for t in names.tensors(cfg) if t.head is None or wanted[t.head]]
  if arch.head:
    expected += list(names.task_head_tensors(arch.head))
  out, written = {}, set()
  for t in expected:
    if t.path not in flat:
      if t.head is None or t.head == arch.head or (t.head == "pooler" and arch.head):
        raise ValueError(f"params lack {'/'.join(t.path)}, which {arch.name} needs "
                         f"(HF {t.hf_key})")
      continue
    value = np.asarray(jax.device_get(flat[t.path]))[t.index]
    out[t.hf_key] = np.ascontiguousarray(value.T if t.transpose else value)
    written.add(t.path)
  if not cfg.has_embedding_projection:
    # HF always applies the E -> H projection; the official E == H model has none: identity.
    h = cfg.hidden_size
    out["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(h, dtype=np.float32)
    out["albert.encoder.embedding_hidden_mapping_in.bias"] = np.zeros(h, np.float32)

  def held(path):  # whether `arch` has a place for the tree of this leaf
    if path[0] == "albert":
      return arch.pooler or path[1] != "pooler"
    return path[0] == arch.head or (arch.pretraining and path[0] in hf_classes.PRETRAINING_TREES)

  left = sorted("/".join(p) for p in flat if p not in written and held(p))
  if left:
    raise ValueError(f"params have leaves that no Hugging Face {arch.name} tensor holds: {left}")
  dropped = sorted("/".join(p) for p in flat if not held(p))
  if dropped:
    logging.warning("%s has no place for %d tensor(s) of the checkpoint, not exported: %s",
                    arch.name, len(dropped), dropped)
  return out


def init_params(cfg: Any, seed: int = 0) -> Params:
  """Fresh AlbertForPreTraining parameters (unboxed)."""
  model = modeling.AlbertForPreTraining(cfg)
  variables = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 2), jnp.int32))
  return nn.unbox(variables["params"])


# ------------------------------------------------------------------------------------------------
# Hugging Face
# ------------------------------------------------------------------------------------------------

def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
  """Our config of an HF config.json: transformers' AlbertConfig defaults overlaid with the JSON."""
  # null in the JSON (e.g. classifier_dropout_prob) means "not set": the default applies.
  merged = dict(_HF_DEFAULTS, **{k: v for k, v in hf_config.items()
                                 if k in _HF_DEFAULTS and v is not None})
  act = merged["hidden_act"]
  if act not in _HF_ACT_TO_OURS:
    raise ValueError(f"config.json field 'hidden_act'={act!r} is not supported; "
                     f"allowed: {sorted(_HF_ACT_TO_OURS)}")
  cfg = ModelConfig(**{k: merged[k] for k in _COMMON_FIELDS}, hidden_act=_HF_ACT_TO_OURS[act],
                    layer_norm_eps=merged["layer_norm_eps"],
                    classifier_dropout_prob=merged["classifier_dropout_prob"],
                    # HF always has the E -> H projection, even when E == H.
                    use_embedding_projection=True, layer_sharing="all")
  names.check_hf_groups(cfg, "config.json")
  return cfg


def config_to_hf(cfg: ModelConfig,
                 arch: Optional[hf_classes.HfArchitecture] = None) -> dict[str, Any]:
  """The config.json of `cfg` for the class `arch` (default AlbertForPreTraining)."""
  arch = arch or hf_classes.HfArchitecture("AlbertForPreTraining")
  names.check_hf_groups(cfg, "export to Hugging Face")
  groups, inner = names.hf_layout(cfg)
  out = {k: getattr(cfg, k) for k in _COMMON_FIELDS}
  out.update(num_hidden_groups=groups, inner_group_num=inner,
             hidden_act=_OURS_ACT_TO_HF[cfg.hidden_act], layer_norm_eps=cfg.layer_norm_eps,
             classifier_dropout_prob=cfg.classifier_dropout_prob, model_type="albert",
             architectures=[arch.name], pad_token_id=0, bos_token_id=2,
             eos_token_id=3, tie_word_embeddings=True)
  if arch.num_labels is not None:
    # transformers derives num_labels from id2label (LABEL_i is its own name for unnamed labels).
    labels = arch.labels or tuple(f"LABEL_{i}" for i in range(arch.num_labels))
    out.update(num_labels=arch.num_labels, id2label={str(i): l for i, l in enumerate(labels)},
               label2id={l: i for i, l in enumerate(labels)})
  if arch.problem_type:
    out["problem_type"] = arch.problem_type
  return out


def _read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  files = [f for f in ("model.safetensors.index.json", "model.safetensors",
                       "pytorch_model.bin.index.json", "pytorch_model.bin")
           if os.path.exists(os.path.join(hf_dir, f))]
  if not files:
    raise FileNotFoundError(f"{hf_dir} has no model.safetensors or pytorch_model.bin "
                            "(nor a sharded index of them)")
  path = os.path.join(hf_dir, files[0])
  if path.endswith(".index.json"):
    shards = sorted(set(fileio.read_json(path)["weight_map"].values()))
    paths = [os.path.join(hf_dir, s) for s in shards]
  else:
    paths = [path]
  tensors = {}
  for p in paths:
    if p.endswith(".safetensors"):
      try:
        tensors.update(load_file(p))
      except Exception as e:  # pylint: disable=broad-except  (safetensors' own error types)
        raise InputError(f"{p}: not a readable safetensors file ({e})") from None
    else:
      try:
        import torch  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError(f"reading {p} needs torch (pip install torch); safetensors "
                          "checkpoints need only the safetensors package") from e
      state = torch.load(p, map_location="cpu", weights_only=True)
      tensors.update({k: v.float().numpy() if v.is_floating_point() else v.numpy()
                      for k, v in state.items()})
  # AlbertModel.save_pretrained writes keys without the "albert." prefix.
  if not any(k.startswith("albert.") for k in tensors):
    tensors = {("albert." + k if k.split(".")[0] in ("embeddings", "encoder", "pooler") else k): v
               for k, v in tensors.items()}
  return tensors


def load_hf(hf_dir: str, *, allow_missing_heads: bool = False, strict: bool = True,
            seed: int = 0) -> tuple[ml_collections.ConfigDict, Params]:
  """Loads a Hugging Face ALBERT directory: AlbertForPreTraining/AlbertModel/AlbertForMaskedLM,
  or a fine-tuned AlbertFor{Sequence,Token}Classification/MultipleChoice/QuestionAnswering (the
  tree of our matching task model, see params_from_hf_tensors)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: not a Hugging Face model directory")
  cfg = config_from_hf(fileio.read_json(config_path))
  params = params_from_hf_tensors(cfg, _read_hf_tensors(hf_dir),
                                  allow_missing_heads=allow_missing_heads, strict=strict,
                                  seed=seed, source=hf_dir)
  return cfg.to_config_dict(), params


def save_hf(config: Any, params: Params, out_dir: str, *,
            task: Optional[Mapping[str, Any]] = None,
            encoder_only: bool = False) -> hf_classes.HfArchitecture:
  """Writes config.json + model.safetensors loadable by the transformers class that holds `params`.

  `task`: the fine-tuning task section (best/task.json's "task"), for the class and labels of a
  `classifier` head (see hf_classes.hf_architecture). `encoder_only`: write the encoder alone, as
  AlbertModel.
  Returns the class written.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg = ModelConfig.from_any(config)
  arch = hf_classes.hf_architecture(params, task, encoder_only=encoder_only)
  tensors = hf_tensors_from_params(cfg, params, arch)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config_to_hf(cfg, arch), f, indent=2, sort_keys=True)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  return arch


# ------------------------------------------------------------------------------------------------
# Official TF1 checkpoints (tar releases and TF-Hub exports)
# ------------------------------------------------------------------------------------------------

_TF_SKIP = ("adam_m", "adam_v", "lamb_m", "lamb_v", "AdamWeightDecayOptimizer", "global_step")


def config_from_official(official: Mapping[str, Any]) -> ModelConfig:
  """Our config of an official albert_config.json: the official defaults overlaid with the JSON."""
  if "vocab_size" not in official:
    raise ValueError("albert_config.json has no field 'vocab_size' (the official AlbertConfig "
                     "requires it)")
  merged = dict(_OFFICIAL_DEFAULTS, **{k: v for k, v in official.items()
                                       if k in _COMMON_FIELDS or k == "hidden_act"})
  # Official "gelu" is the tanh approximation, which is also our "gelu".
  acts = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "swish": "silu"}
  act = merged["hidden_act"]
  if act not in acts:
    raise ValueError(f"albert_config.json field 'hidden_act'={act!r} is not supported; "
                     f"allowed: {sorted(acts)}")
  return ModelConfig(**{k: merged[k] for k in _COMMON_FIELDS}, hidden_act=acts[act],
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


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def check_weights_fit(config: Any, params: Params, source: str) -> None:
  """Fails, naming `source` and a leaf, when the encoder weights do not have the shapes that the
  model config gives (a model_config.json that disagrees with the weights beside it)."""
  cfg = ModelConfig.from_any(config)
  abstract = nn.unbox(jax.eval_shape(modeling.AlbertModel(cfg).init, jax.random.PRNGKey(0),
                                     jnp.zeros((1, 2), jnp.int32))["params"])
  have = traverse_util.flatten_dict(nn.unbox(params).get("albert", {}))
  for path, want in traverse_util.flatten_dict(abstract).items():
    got = have.get(path)
    if got is not None and tuple(np.shape(got)) != tuple(want.shape):
      raise InputError(f"{source}: its model config disagrees with its weights: albert/"
                       f"{'/'.join(path)} is {tuple(np.shape(got))}, the config (hidden_size="
                       f"{cfg.hidden_size}, embedding_size={cfg.embedding_size}, vocab_size="
                       f"{cfg.vocab_size}, ...) gives {tuple(want.shape)}")


def _read_any(path: str, albert_config: Optional[str], allow_missing_heads: bool
              ) -> tuple[ModelConfig, Params, Optional[dict[str, Any]]]:
  """(model config, params, fine-tuning task or None) of --checkpoint, a checkpoint of any kind."""
  # Imported here: checkpoint_kinds reads Hugging Face and TF checkpoints through this module.
  from albert_jax.train import checkpoint_kinds  # pylint: disable=g-import-not-at-top
  source = checkpoint_kinds.read(path, albert_config=albert_config or "",
                                 allow_missing_heads=allow_missing_heads, field="--checkpoint")
  if source.model_config is None:
    raise checkpoint_kinds.CheckpointError(
        f"--checkpoint={path!r} is a workdir from before runs saved their model config: write the "
        "run's config.model to its model_config.json (albert_jax.train.checkpoints."
        "write_model_config) and convert again")
  check_weights_fit(source.model_config, source.params,
                    f"--checkpoint={path} (model_config.json and its weights)")
  # A fine-tuned best/ has its task beside it: which HF class a `classifier` is, its labels.
  return source.model_config, source.params, source.task


PROG = "python -m albert_jax.convert"
_SOURCES = ("hf_dir", "tf_checkpoint", "checkpoint")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (defined only when it is parsed: `command_line.parse`)."""
  for name, help_text in (
      ("hf_dir", "Hugging Face ALBERT directory"),
      ("tf_checkpoint", "official TF1 checkpoint prefix or TF-Hub module dir"),
      ("checkpoint", "a checkpoint of any kind: a pretraining or fine-tuning workdir, an "
                     "albert_jax checkpoint, a Hugging Face directory, an official TF checkpoint "
                     "or TF-Hub module (see albert_jax.train.checkpoint_kinds)"),
      ("albert_config", "albert_config.json (with --tf_checkpoint, or --checkpoint of an "
                        "official TF checkpoint without one beside it)"),
      ("out_hf", "write a Hugging Face directory here"),
      ("out_checkpoint", "write an albert_jax checkpoint here")):
    flags.DEFINE_string(name, None, help_text, flag_values=flag_values)
  flags.DEFINE_bool("allow_missing_heads", False, "initialize heads absent from the source "
                    "instead of failing", flag_values=flag_values)
  flags.DEFINE_bool("encoder_only", False, "with --out_hf: write only the encoder (AlbertModel), "
                    "e.g. for the SQuAD v2.0 head, which Hugging Face has no class for",
                    flag_values=flag_values)


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> None:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  command_line.no_positional(positional, PROG)
  given = [f"--{name}" for name in _SOURCES if args[name].value]
  if len(given) != 1:
    command_line.usage_error("give exactly one of --hf_dir, --tf_checkpoint and --checkpoint"
                             + (f" (got {' and '.join(given)})" if given else ""))
  if not (args.out_hf or args.out_checkpoint):
    command_line.usage_error("give --out_hf and/or --out_checkpoint")
  if args.tf_checkpoint and not args.albert_config:
    command_line.usage_error("--tf_checkpoint needs --albert_config")
  if args.encoder_only and not args.out_hf:
    command_line.usage_error("--encoder_only applies to --out_hf")
  task = None
  if args.hf_dir:
    config, params = load_hf(args.hf_dir, allow_missing_heads=args.allow_missing_heads)
  elif args.tf_checkpoint:
    config, params = load_tf(args.tf_checkpoint, args.albert_config,
                             allow_missing_heads=args.allow_missing_heads)
  else:
    config, params, task = _read_any(args.checkpoint, args.albert_config,
                                     args.allow_missing_heads)
  if args.out_hf:
    arch = save_hf(config, params, args.out_hf, task=task, encoder_only=args.encoder_only)
    print(f"wrote Hugging Face {arch.name} to {args.out_hf}")
  if args.out_checkpoint:
    save_checkpoint(config, params, args.out_checkpoint)
    print(f"wrote albert_jax checkpoint to {args.out_checkpoint}")


def cli() -> None:
  """The command line (also reached through the top-level module of the same name)."""
  command_line.run(main)


if __name__ == "__main__":
  cli()
