"""HF-keyed arrays (PyTorch layout) <-> our parameter tree: the core of every checkpoint import
and export (Hugging Face directly, official TF1 through its HF names; see convert.py).

Loading is strict: every missing, unexpected or mis-shaped tensor is listed in one error. Heads
absent from a source are errors unless `allow_missing_heads=True` (then freshly initialized and
reported); a fine-tuned source gives the tree of our matching task model.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
import flax.linen as nn

from albert_jax.command_line import InputError
from albert_jax.interop import hf_classes
from albert_jax.interop import names
from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig

Params = dict[str, Any]


def abstract_params(cfg: ModelConfig) -> Params:
  """Shapes and dtypes of the AlbertForPreTraining tree, without allocating it."""
  model = modeling.AlbertForPreTraining(cfg)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
  return nn.unbox(shapes["params"])


def _place_model_tensors(expected, tensors, abstract, flat, source):
  """Writes the encoder's and pretraining heads' tensors into `flat`; (missing keys, shape
  errors, heads with a tensor missing)."""
  missing, shape_errors, missing_heads = [], [], set()
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
  return missing, shape_errors, missing_heads


def _place_task_head(cfg, tree, head_tensors, tensors, flat, source) -> list[str]:
  """Writes one fine-tuning head (weight, bias) into `flat`; its shape errors."""
  if any(t.hf_key not in tensors for t in head_tensors):
    return []  # reported as missing
  weight, bias = (np.asarray(tensors[t.hf_key]) for t in head_tensors)
  # The output count is the head's own (num_labels); only the input side is fixed by the model.
  outputs = 2 if tree == "qa_outputs" else weight.shape[0]
  if weight.shape != (outputs, cfg.hidden_size) or bias.shape != (outputs,):
    return [f"{head_tensors[0].hf_key} / .bias: {source} has {weight.shape} / {bias.shape}, "
            f"model expects ({outputs}, {cfg.hidden_size}) / ({outputs},)"]
  dtype = jnp.dtype(cfg.param_dtype)
  flat[head_tensors[0].path] = weight.T.astype(dtype)
  flat[head_tensors[1].path] = bias.astype(dtype)
  return []


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
  expected = list(names.tensors(cfg))
  missing, shape_errors, missing_heads = _place_model_tensors(expected, tensors, abstract, flat,
                                                              source)
  task_heads = [tree for tree in names.TASK_HEADS
                if any(t.hf_key in tensors for t in names.task_head_tensors(tree))]
  for tree in task_heads:
    head_tensors = list(names.task_head_tensors(tree))
    expected += head_tensors
    missing += [t.hf_key for t in head_tensors if t.hf_key not in tensors]
    shape_errors += _place_task_head(cfg, tree, head_tensors, tensors, flat, source)
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
