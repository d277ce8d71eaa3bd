"""Builds the pretraining job from a config and runs it in the shared loop (train/loop.py).

    result = pretrain.run(config, workdir)

What is pretraining's own: the masked-LM + sentence-order objective and its batches (official
feature names), the per-host tf.data readers whose positions are saved beside every checkpoint
(exact resume; a position that cannot be read makes its checkpoint fall back to the previous one), the held-out evaluation over `data.eval_files` and the warm start from
`init_from`. Restore, compilation, logging, saves, signals and the non-finite stop are the loop's.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from albert_jax import fileio
from albert_jax.data import pipeline
from albert_jax.data import tokenization
from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig
from albert_jax.train import distributed
from albert_jax.train import job as job_lib
from albert_jax.train import loop
from albert_jax.train import metrics as metrics_lib
from albert_jax.train import objectives
from albert_jax.train import partitioning
from albert_jax.train import step as trainer
from albert_jax.train import warm_start


def validate(config: ml_collections.ConfigDict, num_processes: int) -> None:
  """Fails before compiling on configs that cannot work, naming the field."""
  t = config.training
  mesh = job_lib.validate_training(config, num_processes,
                                   evaluates_batches=bool(config.data.eval_files))
  if t.eval_max_batches < 0:
    raise ValueError(f"config field 'training.eval_max_batches'={t.eval_max_batches} must be >= 0 "
                     "(0: the whole eval split)")
  if partitioning.processes_share_rows(mesh, t.global_batch_size):
    raise ValueError(f"config field 'partitioning.mesh'={dict(config.partitioning.mesh)} puts the "
                     "same batch rows on devices of several processes (an axis other than data/"
                     "fsdp spans hosts); pretraining readers give every process rows of its own: "
                     "keep 'tensor' within a host")
  if t.inter_sentence_loss not in objectives.INTER_SENTENCE_LOSSES:
    raise ValueError(f"config field 'training.inter_sentence_loss'={t.inter_sentence_loss!r}; "
                     f"allowed: {objectives.INTER_SENTENCE_LOSSES}")
  from albert_jax.data import demo_data  # pylint: disable=g-import-not-at-top
  demo_data.check_fields(config)  # data-creation fields: wrong even when records are given
  if config.data.max_seq_length > config.model.max_position_embeddings:
    raise ValueError(f"config field 'data.max_seq_length'={config.data.max_seq_length} exceeds "
                     f"'model.max_position_embeddings'={config.model.max_position_embeddings}")
  for field in ("train_files", "eval_files"):
    pattern = config.data[field]
    if field == "train_files" and not pattern:
      raise ValueError("config field 'data.train_files' is empty: give record files "
                       "(create_pretraining_data) or a text corpus in 'data.corpus'")
    if pattern:
      try:
        files = pipeline.list_files(pattern)
      except FileNotFoundError as e:
        raise ValueError(f"config field 'data.{field}': {e}") from e
      if field == "train_files" and len(files) >= num_processes:  # else host_files says why
        files = pipeline.host_files(files, jax.process_index(), num_processes)
      # Before the model is built: a damaged, empty or mismatched record file fails in seconds.
      pipeline.check_records(files, config.data.max_seq_length,
                             config.data.max_predictions_per_seq, bool(config.data.dynamic_masking),
                             what=f"config field 'data.{field}'")
  if config.data.spm_model:
    try:
      size = tokenization.load_sentencepiece(config.data.spm_model).get_piece_size()
    except tokenization.TokenizerError as e:
      raise ValueError(f"config field 'data.spm_model': {e}") from e
    if size > config.model.vocab_size:
      raise ValueError(f"config field 'model.vocab_size'={config.model.vocab_size} is smaller than "
                       f"the tokenizer's {size} pieces ({config.data.spm_model})")


def batch_spec(config: ml_collections.ConfigDict) -> job_lib.BatchSpec:
  """Shapes (without the batch axis) and dtypes of a pretraining batch (official feature names)."""
  s, p = (config.data.max_seq_length,), (config.data.max_predictions_per_seq,)
  return {"input_ids": (s, jnp.int32), "input_mask": (s, jnp.int32),
          "segment_ids": (s, jnp.int32), "masked_lm_positions": (p, jnp.int32),
          "masked_lm_ids": (p, jnp.int32), "masked_lm_weights": (p, jnp.float32),
          "next_sentence_labels": ((), jnp.int32)}


def build_objective(config: ml_collections.ConfigDict) -> tuple[nn.Module, trainer.Objective]:
  model = modeling.AlbertForPreTraining(config.model)

  def forward(params, batch, rng, deterministic):
    rngs = {} if rng is None else {"dropout": rng}
    return model.apply({"params": params}, batch["input_ids"], batch["input_mask"],
                       batch["segment_ids"], batch["masked_lm_positions"],
                       deterministic=deterministic, rngs=rngs)

  def loss_and_sums(outputs, batch, normalizers):
    loss, metrics = objectives.pretraining_loss(outputs, batch,
                                                config.training.inter_sentence_loss, normalizers)
    return loss, {k: metrics[k] for k in objectives.SUM_KEYS}

  return model, trainer.Objective(forward=forward, normalizers=objectives.loss_normalizers,
                                  loss_and_sums=loss_and_sums,
                                  metrics=objectives.metrics_from_sums)


def build_job(config: ml_collections.ConfigDict,
              devices: Optional[Sequence[Any]] = None) -> job_lib.Job:
  """The Job of a pretraining config on `devices` (default: all of this run's devices)."""
  model, objective = build_objective(config)
  flops = metrics_lib.pretraining_flops_per_example(
      ModelConfig.from_any(config.model), config.data.max_seq_length,
      config.data.max_predictions_per_seq)
  return job_lib.build(config, model, objective, batch_spec(config), flops, devices=devices)


def _train_data(config, files, process_index, process_count):
  per_host = config.training.global_batch_size // process_count
  ds = pipeline.train_dataset(
      files, batch_size_per_host=per_host, seed=config.seed,
      max_seq_length=config.data.max_seq_length,
      max_predictions_per_seq=config.data.max_predictions_per_seq, process_index=process_index,
      process_count=process_count, shuffle_buffer_size=config.data.shuffle_buffer_size,
      dynamic_masking=_dynamic_masking(config))
  return pipeline.DataIterator(ds, pipeline.host_files(pipeline.list_files(files), process_index,
                                                       process_count))


def _dynamic_masking(config):
  if not config.data.dynamic_masking:
    return None
  return pipeline.DynamicMasking.from_spm(
      config.data.spm_model, max_predictions_per_seq=config.data.max_predictions_per_seq)


def evaluate(config, eval_step, params, mesh, rules) -> dict[str, float]:
  """Runs the whole held-out split once (every host the same number of batches); the values
  include the input-blind baselines of the same batches (objectives.BASELINE_KEYS)."""
  per_host = config.training.eval_batch_size // jax.process_count()
  ds, num_batches = pipeline.eval_dataset(
      config.data.eval_files, batch_size_per_host=per_host,
      max_seq_length=config.data.max_seq_length,
      max_predictions_per_seq=config.data.max_predictions_per_seq,
      process_index=jax.process_index(), process_count=jax.process_count(),
      dynamic_masking=_dynamic_masking(config), seed=config.seed)
  total = counts = None
  limit = config.training.eval_max_batches or num_batches
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules_tuple(rules)):
    for i, host_batch in enumerate(ds.as_numpy_iterator()):
      if i >= limit:
        break
      stats = eval_step(params, partitioning.global_batch(host_batch, mesh))
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
      batch_counts = objectives.baseline_counts(host_batch, config.model.vocab_size)
      counts = batch_counts if counts is None else jax.tree.map(np.add, counts, batch_counts)
  if total is None:
    raise ValueError(f"config field 'data.eval_files'={config.data.eval_files!r}: no eval batch "
                     f"of {per_host} rows per host")
  if jax.process_count() > 1:  # each host counted its own rows; the metrics cover all of them
    counts = jax.tree.map(lambda c: np.asarray(multihost_utils.process_allgather(c)).sum(0),
                          counts)
  values = {k: float(v) for k, v in objectives.metrics_from_sums(total).items()
            if k not in objectives.SUM_KEYS}
  return {**values, **objectives.baselines_from_counts(counts)}


_READERS_FILE = "readers.json"  # beside the reader positions: the settings of their readers


def reader_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a saved reader position depends on. Each process reads its own subset of the files,
  in batches of its own size and shape, so a position saved under other settings describes
  other readers (restoring it fails in tf.data, or silently reads the wrong records)."""
  d = config.data
  return {"process_count": jax.process_count(),
          "batch_size_per_host": config.training.global_batch_size // jax.process_count(),
          # A digest of the absolute file list: it may hold thousands of files, and the same
          # files reached through a relative glob from another directory are the same readers.
          "train_files": hashlib.sha256("\n".join(
              os.path.abspath(f) if "://" not in f else f
              for f in pipeline.list_files(d.train_files)).encode()).hexdigest(),
          "max_seq_length": d.max_seq_length,
          "max_predictions_per_seq": d.max_predictions_per_seq,
          "dynamic_masking": bool(d.dynamic_masking), "shuffle_buffer_size": d.shuffle_buffer_size,
          "seed": config.seed}


def _save_position(train_iter, settings: dict[str, Any], directory: str) -> None:
  train_iter.save(pipeline.position_path(directory, jax.process_index()))
  if jax.process_index() == 0:
    fileio.write_json(os.path.join(directory, _READERS_FILE), settings)


def check_position(directory: str) -> None:
  """Raises (naming the file) when this process's reader position in `directory`, or the readers
  file beside it, cannot be read: the loop then falls back to the previous checkpoint."""
  path = pipeline.position_path(directory, jax.process_index())
  settings = os.path.join(directory, _READERS_FILE)
  try:
    if fileio.exists(settings):
      fileio.read_json(settings)
    # Every tensor is read as the iterator's restore reads it (RestoreV2, which checks the
    # bundle's checksums): a truncated or damaged file fails here, not in that restore.
    dtypes = tf.train.load_checkpoint(path).get_variable_to_dtype_map()
    names = sorted(dtypes)
    tf.raw_ops.RestoreV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names),
                         dtypes=[dtypes[n] for n in names])
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"reader position {path} (or {settings}) cannot be read: "
                     f"{type(e).__name__}: {e}") from e


def _changed_reader_settings(directory: str, settings: dict[str, Any]) -> list[str]:
  """The settings that differ from those the positions in `directory` were saved with (an older
  checkpoint records only process_count; one without the file records nothing)."""
  path = os.path.join(directory, _READERS_FILE)
  saved = fileio.read_json(path) if fileio.exists(path) else {}
  return [f"{k} {saved[k]} -> {v}" if k != "train_files" else "train_files"
          for k, v in settings.items() if k in saved and saved[k] != v]


def _hooks(config: ml_collections.ConfigDict, job: job_lib.Job) -> loop.Hooks:
  """The data readers (with their saved positions), the held-out evaluation and the warm start."""
  train_iter = _train_data(config, config.data.train_files, jax.process_index(),
                           jax.process_count())
  readers = reader_settings(config)

  def restored(step, position):
    if position is None:
      logging.warning("checkpoint %d has no saved reader position: data restart from the "
                      "beginning", step)
    elif changed := _changed_reader_settings(position, readers):
      logging.warning("checkpoint %d's reader positions were saved with other data settings "
                      "(%s): the data readers restart from the beginning of their files", step,
                      ", ".join(changed))
    else:
      train_iter.restore(pipeline.position_path(position, jax.process_index()))
    return None  # the evaluations are not kept: a run resumed at its end evaluates again

  eval_fn = None
  if config.data.eval_files:
    eval_step = jax.jit(trainer.make_eval_step(job.objective))
    # `evaluate` is looked up when called (tests replace it with one that fails).
    eval_fn = lambda params: (evaluate(config, eval_step, params, job.mesh, job.rules), None)
  warm = None
  if config.init_from.path:
    warm = lambda params: warm_start.load_params(config.init_from, job.model_config, params)
  return loop.Hooks(
      batch=lambda step: partitioning.global_batch(next(train_iter), job.mesh),
      evaluate=eval_fn, save_position=lambda d: _save_position(train_iter, readers, d),
      check_position=check_position, restored=restored, warm_start=warm)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) pretraining in `workdir`; returns the last train and eval metrics."""
  distributed.maybe_initialize(config.multihost)
  if config.data.get("corpus") and not config.data.train_files:
    from albert_jax.data import demo_data  # pylint: disable=g-import-not-at-top
    demo_data.check_fields(config)  # before the workdir is made: a bad value leaves nothing
    tf.io.gfile.makedirs(workdir)  # the demo data are made inside it
    config = demo_data.prepare(config, workdir)
  validate(config, jax.process_count())
  tf.io.gfile.makedirs(workdir)  # local or a bucket (gs://); only once the config checks pass
  job = build_job(config)
  result = loop.train(job, _hooks(config, job), workdir)
  return {"step": result.step, "train": result.train, "eval": result.eval,
          "checkpoints": result.checkpoints, "tensorboard": result.tensorboard}
