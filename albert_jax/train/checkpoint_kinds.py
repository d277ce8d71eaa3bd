"""Every kind of checkpoint albert_jax reads, detected and read in one place; the workdir layouts.

`read(path)` gives a `Source` (model config, parameters, the fine-tuning task saved beside them)
for each kind below; `kind="auto"` detects it in this order. Every tool that reads a checkpoint
goes through it: `python -m albert_jax.convert --checkpoint`, `python -m albert_jax.predict
--checkpoint`, and the warm starts of pretraining and fine-tuning (`config.init_from`).

kind "workdir": a run's workdir (`python -m albert_jax.main`, `python -m albert_jax.finetune`),
local or in a bucket (gs://):

    model_config.json        the run's model config, written with its first checkpoint
    checkpoints/<step>/state/    orbax train state (params, optimizer state, step, counters)
    data_positions/<step>/   (pretraining) one tf.data reader position per process (exact resume)
    corrupt_checkpoints/     steps that could not be restored, set aside on resume
    metrics.jsonl, tensorboard/  logged scalars (train/metrics.py)
    data/                    (the demo) the records and SentencePiece model it made (data/spm.model)
  and in a fine-tuning workdir also
    best/                    the best parameters by `task.selection_metric`: a "checkpoint" (below)
                             with best_step.json (its evaluation) and task.json (the task config)
    metrics.json             the run's summary (what `finetune.run` returns, with the config)
    eval_history.json        every evaluation so far, with the selection metric (read on resume)
    outputs/                 the task's prediction files (GLUE TSVs, SQuAD JSON, ...)
    features/                the cache of featurized splits

  A fine-tuning workdir is read as its best/. Otherwise the parameters are those of a step in
  checkpoints/, chosen by THE fallback rule (`checkpoints.newest_readable`, also the rule of a
  run's own resume): the newest step that can be read; each unreadable step is skipped with a
  warning naming it, the skipped steps are counted in one report, and if none can be read that is
  an error. A workdir written before model_config.json existed reads without a model config
  (`Source.model_config` None): predict then needs the run's --config, convert refuses it.

kind "checkpoint": our own format (`checkpoints.save_checkpoint`; a fine-tuning run's best/),
    model_config.json and params/ (the orbax tree), with task.json beside a fine-tuned one.

kind "hf": a Hugging Face directory: config.json with model.safetensors or pytorch_model.bin (or
    a sharded index of them), as `save_pretrained` writes it (convert.load_hf).

kind "tf": an official TF1 checkpoint (google-research/albert): a prefix PREFIX (PREFIX.index and
    PREFIX.data-*, e.g. a release's model.ckpt-best), a directory with a `checkpoint` file, or a
    TF-Hub module directory (variables/variables.index). It needs the official albert_config.json:
    given, or found beside it (the prefix's directory, the module directory or its assets/).

HF checkpoints are read from local disk, TF checkpoints from local disk or a bucket (gs://); heads
they lack are initialized with a warning unless `allow_missing_heads=False`
(convert.params_from_hf_tensors). A fine-tuned official checkpoint reads as the tree of our task
model (convert.load_tf).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

from albert_jax import fileio
from albert_jax.interop import convert
from albert_jax.model.config import ModelConfig
from albert_jax.train import checkpoints

KINDS = ("checkpoint", "workdir", "hf", "tf")  # and "auto": detect
HF_CONFIG_FILE = "config.json"    # a Hugging Face directory's config
ALBERT_CONFIG_FILE = "albert_config.json"  # an official checkpoint's config


class CheckpointError(ValueError):
  """A path that is not a checkpoint of the kind asked for, or that cannot be read; the message
  names the field or flag that gave the path."""


@dataclasses.dataclass
class Source:
  """A checkpoint that was read, of any kind."""

  kind: str                            # one of KINDS
  path: str                            # what was read (a fine-tuning workdir's best/)
  model_config: Optional[ModelConfig]  # None: a workdir from before model_config.json existed
  params: dict                         # the tree of AlbertForPreTraining or of a task model
  task: Optional[dict]                 # the fine-tuning task saved beside (task.json), or None
  directory: str                       # where files beside it are (spm.model, best_step.json)
  step: Optional[int] = None           # the step read from a workdir's checkpoints/
  data: Optional[dict] = None          # the fine-tuning data section saved with the task, or None


def detect(path: str, field: str = "checkpoint") -> str:
  """The kind of the checkpoint at `path` (see the module docstring), or CheckpointError."""
  join = lambda *names: os.path.join(path, *names)
  # A workdir first: it holds a model_config.json too (the one of its run).
  if fileio.isdir(join(checkpoints.CHECKPOINTS_DIR)) or fileio.exists(
      join(checkpoints.BEST_DIR, checkpoints.MODEL_CONFIG_FILE)):
    return "workdir"
  if fileio.exists(join(checkpoints.MODEL_CONFIG_FILE)):
    return "checkpoint"
  if fileio.exists(join(HF_CONFIG_FILE)):
    return "hf"
  if (fileio.exists(path + ".index") or fileio.isdir(join("variables"))
      or fileio.exists(join("checkpoint"))):
    return "tf"
  if not fileio.exists(path):
    raise CheckpointError(f"{field}={path!r} does not exist")
  raise CheckpointError(
      f"{field}={path!r}: not a run's workdir (checkpoints/ or best/), an albert_jax checkpoint "
      f"(model_config.json), a Hugging Face directory (config.json) or an official TF checkpoint "
      "(PREFIX.index, a 'checkpoint' file, TF-Hub variables/)")


def read(path: str, *, kind: str = "auto", albert_config: str = "",
         allow_missing_heads: bool = True, field: str = "checkpoint",
         albert_config_field: str = "albert_config") -> Source:
  """The checkpoint at `path` of `kind` ("auto": detected), read (see the module docstring).

  `albert_config`: the official albert_config.json of a TF checkpoint (else looked for beside it).
  `field` and `albert_config_field` name where the paths came from in error messages (a flag or a
  config field). Every failure is a CheckpointError.
  """
  path = fileio.absolute(path)
  if kind == "auto":
    kind = detect(path, field)
  readers = {"checkpoint": _read_own, "workdir": _read_workdir, "hf": _read_hf, "tf": _read_tf}
  if kind not in readers:
    raise CheckpointError(f"kind {kind!r} of {field}={path!r}: allowed auto, {', '.join(KINDS)}")
  try:
    source = readers[kind](path, albert_config=albert_config, field=field,
                           albert_config_field=albert_config_field,
                           allow_missing_heads=allow_missing_heads)
  except CheckpointError:
    raise
  except (OSError, ValueError, checkpoints.NoReadableStep) as e:  # the loaders' own errors
    raise CheckpointError(f"{field}={path!r} ({kind}): {e}") from e
  logging.info("read %s checkpoint %s%s", kind, source.path,
               "" if source.step is None else f" (step {source.step})")
  return source


def _read_own(path: str, **_: Any) -> Source:
  config, params = checkpoints.load_checkpoint(path)
  saved = checkpoints.read_task_file(path) or {}
  return Source("checkpoint", path, ModelConfig.from_any(config), params, saved.get("task"), path,
                data=saved.get("data"))


def _read_workdir(path: str, *, field: str, **_: Any) -> Source:
  best = os.path.join(path, checkpoints.BEST_DIR)
  if fileio.exists(os.path.join(best, checkpoints.MODEL_CONFIG_FILE)):  # a fine-tuning run
    return dataclasses.replace(_read_own(best), kind="workdir")
  found = checkpoints.read_step_params(path)
  if found is None:
    raise CheckpointError(f"{field}={path!r}: its {checkpoints.CHECKPOINTS_DIR}/ holds no "
                          "checkpoint yet")
  step, params = found
  return Source("workdir", path, checkpoints.read_model_config(path), params, None, path, step)


def _read_hf(path: str, *, allow_missing_heads: bool, **_: Any) -> Source:
  config, params = convert.load_hf(path, allow_missing_heads=allow_missing_heads)
  return Source("hf", path, ModelConfig.from_any(config), params, None, path)


def _is_tf_directory(path: str) -> bool:
  """A TF-Hub module or checkpoint directory, not a prefix (which a bucket lists as a directory
  when files start with it)."""
  return not fileio.exists(path + ".index") and fileio.isdir(path)


def albert_config_beside(path: str) -> str:
  """The official albert_config.json next to a TF checkpoint prefix or in a TF-Hub module
  directory (or its assets/), or "" when there is none."""
  if _is_tf_directory(path):
    candidates = [os.path.join(path, ALBERT_CONFIG_FILE),
                  os.path.join(path, "assets", ALBERT_CONFIG_FILE)]
  else:
    candidates = [os.path.join(os.path.dirname(path), ALBERT_CONFIG_FILE)]
  return next((c for c in candidates if fileio.isfile(c)), "")


def _read_tf(path: str, *, albert_config: str, field: str, albert_config_field: str,
             allow_missing_heads: bool) -> Source:
  albert_config = albert_config or albert_config_beside(path)
  if not albert_config:
    raise CheckpointError(f"{field}={path!r} is an official TF checkpoint: give its "
                          f"{ALBERT_CONFIG_FILE} with {albert_config_field} (none is beside it)")
  config, params = convert.load_tf(path, albert_config, allow_missing_heads=allow_missing_heads)
  directory = path if _is_tf_directory(path) else os.path.dirname(path)
  return Source("tf", path, ModelConfig.from_any(config), params, None, directory)
