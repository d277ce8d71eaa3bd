"""Loading a checkpoint of any kind for inference: weights, architecture, task and tokenizer.

`load(path)` takes every kind of checkpoint that train/checkpoint_kinds.py reads (a fine-tuning
workdir is read as its `best/`, a pretraining workdir as its newest readable step), and adds what
predicting needs: the task (task.json, else the run's metrics.json, else the given config) and the
SentencePiece model. See albert_jax.predict, which runs the loaded checkpoint on raw text. Our
checkpoints and workdirs may be in a bucket (gs://).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

import ml_collections

from albert_jax import config_utils
from albert_jax import fileio
from albert_jax.tasks import InputError
from albert_jax.data import tokenization
from albert_jax.model.config import ModelConfig
from albert_jax.train import checkpoint_kinds
from albert_jax.train import checkpoints

# SentencePiece models looked for beside a checkpoint (and beside its parent directory).
_SPM_NEAR = ("data/spm.model", "spm.model", "spiece.model", "30k-clean.model")


# Fields of the fine-tuning `data` section that runs before the pretraining names were shared kept
# in their `task` section (read from such a run's task.json).
_DATA_FIELDS = ("spm_model", "spm_corpus", "do_lower_case", "max_seq_length")


@dataclasses.dataclass
class Loaded:
  """A checkpoint ready to predict: weights, architecture, task and tokenizer."""

  path: str
  model_config: ModelConfig
  params: dict
  task: Optional[ml_collections.ConfigDict]   # None: not a fine-tuned checkpoint
  data: Optional[ml_collections.ConfigDict]   # the fine-tuning `data` section (with `task`)
  tokenizer: tokenization.SentencePieceTokenizer
  best_metrics: dict                          # best_step.json metrics (SQuAD v2 threshold)


def load_config_file(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`FILE[:ARG]` -> its get_config(ARG), with "dotted.field=json" overrides applied."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise InputError(f"--config: config file {path!r} not found")
  module = config_utils.load_sibling(path, os.path.splitext(os.path.basename(path))[0])
  config = module.get_config(arg or None)
  for item in overrides:
    key, eq, value = item.partition("=")
    if not eq:
      raise InputError(f"--set {item!r}: expected dotted.field=value")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    try:
      node[leaf] = json.loads(value)
    except json.JSONDecodeError:
      node[leaf] = value  # a bare string
  return config


def _read_json(path: str) -> Optional[dict]:
  return fileio.read_json(path) if fileio.isfile(path) else None


def _find_task(source: checkpoint_kinds.Source, config) -> tuple[
    Optional[ml_collections.ConfigDict], Optional[ml_collections.ConfigDict]]:
  """(task, data) sections of a fine-tuned checkpoint: those saved beside it (task.json), else the
  run's metrics.json or `config`; (None, None) for other checkpoints."""
  saved = {"task": source.task, "data": source.data} if source.task is not None else None
  for d in (source.directory, os.path.dirname(source.directory)):  # the run's config
    metrics = _read_json(os.path.join(d, "metrics.json")) if saved is None else None
    if metrics and "task" in metrics.get("config", {}):
      saved = metrics["config"]
  if saved is None and config is not None and "task" in config:
    saved = config.to_dict()
  if not saved:
    return None, None
  task = dict(saved["task"])
  data = dict(saved.get("data") or {k: task[k] for k in _DATA_FIELDS if k in task})
  return ml_collections.ConfigDict(task), ml_collections.ConfigDict(data)


def _find_spm(spm_model: str, data, config, directory: str) -> str:
  candidates = [spm_model, data.get("spm_model") if data else None,
                config.get("data", {}).get("spm_model") if config is not None else None]
  candidates += [os.path.join(d, name) for d in (directory, os.path.dirname(directory))
                 for name in _SPM_NEAR]
  for path in filter(None, candidates):
    if fileio.isfile(path):
      return path
  raise InputError(f"no SentencePiece model found for {directory}: pass --spm_model (the model "
                   "the checkpoint was trained with, e.g. 30k-clean.model or spiece.model)")


def load(path: str, *, config: Optional[ml_collections.ConfigDict] = None, spm_model: str = "",
         albert_config: str = "", text_options: Optional[dict] = None) -> Loaded:
  """A checkpoint of any supported kind (see the module docstring), with its tokenizer.

  The tokenizer's text options (tokenization.text_options) are those the checkpoint's run recorded
  (its `data` section, else `config`'s), each replaced by `text_options`' entry where it has one.
  """
  path = fileio.absolute(path)  # local or a bucket (gs://): orbax wants absolute paths
  if not fileio.exists(path) and not fileio.exists(path + ".index"):
    raise InputError(f"--checkpoint {path!r} does not exist")
  try:
    source = checkpoint_kinds.read(path, albert_config=albert_config, field="--checkpoint")
  except checkpoint_kinds.CheckpointError as e:
    raise InputError(str(e)) from None
  model_config = source.model_config
  if model_config is None:  # a workdir from before model_config.json: its config says
    if config is None:
      raise InputError(f"--checkpoint {path} is a training workdir without a saved model config "
                       f"({checkpoints.MODEL_CONFIG_FILE}): pass --config=<the run's config "
                       "file> (e.g. configs/demo.py)")
    model_config = ModelConfig.from_any(config.model)
  directory = source.directory
  task, data = _find_task(source, config)
  recorded = data if data else (config.get("data", {}) if config is not None else {})
  tokenizer = tokenization.SentencePieceTokenizer(
      _find_spm(spm_model, data, config, directory),
      **{**tokenization.text_options(recorded), **(text_options or {})})
  if tokenizer.vocab_size != model_config.vocab_size:
    raise InputError(f"vocabulary mismatch: the SentencePiece model {tokenizer.model_file} has "
                     f"{tokenizer.vocab_size} pieces but the checkpoint {source.path} has "
                     f"vocab_size {model_config.vocab_size}; pass the checkpoint's --spm_model")
  best_step = _read_json(os.path.join(directory, "best_step.json")) or {}
  return Loaded(source.path, model_config, source.params, task, data, tokenizer,
                best_step.get("metrics", {}))
