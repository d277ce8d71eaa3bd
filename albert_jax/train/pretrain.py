"""Builds the pretraining job from a config and runs it: data, model, LAMB, sharded train loop.

    result = pretrain.run(config, workdir)

The loop: restore (or warm start, or initialize) a sharded train state; read per-host batches and
make them global arrays; run the ahead-of-time compiled step; every `log_every_steps` print and
write metrics (read one report late, so the host never waits on the step it just dispatched);
evaluate every `eval_every_steps`; save every `checkpoint_every_steps` and on SIGTERM/SIGINT
(finish the step, save, exit cleanly). Non-finite steps are skipped; after
`training.max_nonfinite_steps` in a row the run stops with the last good checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from albert_jax.train import checkpoints
from albert_jax.train import distributed
from albert_jax import fileio
from albert_jax.train import metrics as metrics_lib
from albert_jax.model import modeling
from albert_jax.train import objectives
from albert_jax.train import optim
from albert_jax.train import partitioning
from albert_jax.train import step as trainer
from albert_jax.train import warm_start
from albert_jax.data import pipeline
from albert_jax.model.config import ModelConfig


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag that the loop checks after each step."""

  def __init__(self):
    self.received: Optional[int] = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: finishing the current step, then saving", signum)
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def should_stop(self, step: int) -> bool:
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    # All hosts must stop at the same step: agree on the flag (and on preemption notices, which
    # need the distributed client: multihost.mode=off on a pod runs without them).
    any_host = bool(np.asarray(multihost_utils.process_allgather(np.array([local]))).any())
    return any_host or (jax.distributed.is_initialized()
                        and multihost_utils.reached_preemption_sync_point(step))


def validate(config: ml_collections.ConfigDict, num_processes: int) -> None:
  """Fails before compiling on configs that cannot work, naming the field."""
  t = config.training
  trainer.check_loop_fields(t)
  if t.eval_max_batches < 0:
    raise ValueError(f"config field 'training.eval_max_batches'={t.eval_max_batches} must be >= 0 "
                     "(0: the whole eval split)")
  mesh = partitioning.create_mesh(config.partitioning.mesh)
  dp = partitioning.data_parallel_size(mesh)
  if t.global_batch_size % dp:
    raise ValueError(f"config field 'training.global_batch_size'={t.global_batch_size} is not "
                     f"divisible by the data-parallel size {dp} (mesh data x fsdp)")
  if t.global_batch_size % num_processes:
    raise ValueError(f"config field 'training.global_batch_size'={t.global_batch_size} is not "
                     f"divisible by the number of processes {num_processes}")
  if t.global_batch_size % t.microbatches or (t.global_batch_size // t.microbatches) % dp:
    raise ValueError(f"config field 'training.microbatches'={t.microbatches}: each microbatch "
                     f"of a {t.global_batch_size} batch must split over {dp} data-parallel devices")
  if partitioning.processes_share_rows(mesh, t.global_batch_size):
    raise ValueError(f"config field 'partitioning.mesh'={dict(config.partitioning.mesh)} puts the "
                     "same batch rows on devices of several processes (an axis other than data/"
                     "fsdp spans hosts); pretraining readers give every process rows of its own: "
                     "keep 'tensor' within a host")
  if config.data.eval_files and (t.eval_batch_size % dp or t.eval_batch_size % num_processes):
    raise ValueError(f"config field 'training.eval_batch_size'={t.eval_batch_size} is not "
                     f"divisible by the data-parallel size {dp} and the number of processes "
                     f"{num_processes}")
  if t.inter_sentence_loss not in objectives.INTER_SENTENCE_LOSSES:
    raise ValueError(f"config field 'training.inter_sentence_loss'={t.inter_sentence_loss!r}; "
                     f"allowed: {objectives.INTER_SENTENCE_LOSSES}")
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
        pipeline.list_files(pattern)
      except FileNotFoundError as e:
        raise ValueError(f"config field 'data.{field}': {e}") from e
  if config.data.spm_model:
    from albert_jax.data import tokenization  # pylint: disable=g-import-not-at-top
    try:
      size = tokenization.load_sentencepiece(config.data.spm_model).get_piece_size()
    except tokenization.TokenizerError as e:
      raise ValueError(f"config field 'data.spm_model': {e}") from e
    if size > config.model.vocab_size:
      raise ValueError(f"config field 'model.vocab_size'={config.model.vocab_size} is smaller than "
                       f"the tokenizer's {size} pieces ({config.data.spm_model})")


def _batch_shapes(config: ml_collections.ConfigDict, batch: int) -> dict[str, tuple]:
  s, p = config.data.max_seq_length, config.data.max_predictions_per_seq
  return {"input_ids": (batch, s), "input_mask": (batch, s), "segment_ids": (batch, s),
          "masked_lm_positions": (batch, p), "masked_lm_ids": (batch, p),
          "masked_lm_weights": (batch, p), "next_sentence_labels": (batch,)}


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


@dataclasses.dataclass
class Job:
  """Everything that defines the compiled train step, built from the config alone (no data).

  Training and `albert_jax.plan` (ahead-of-time compilation for other devices) use the same Job,
  so the program compiled for planning is the one that trains.
  """

  config: ml_collections.ConfigDict
  model_config: ModelConfig
  mesh: Any
  rules: Any
  objective: trainer.Objective
  init_params: Any
  tx: Any
  learning_rate_fn: Any
  rng: Any

  def abstract_state(self):
    return trainer.abstract_train_state(self.init_params, self.tx, self.mesh, self.rules,
                                        jax.random.fold_in(self.rng, 0))

  def create_state(self):
    return trainer.create_train_state(self.init_params, self.tx, self.mesh, self.rules,
                                      jax.random.fold_in(self.rng, 0))

  def abstract_step_args(self):
    """(state shardings, abstract state, batch, rng): the train step's arguments as shapes with
    shardings, for compiling it ahead of time."""
    abstract, shardings = self.abstract_state()
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         abstract, shardings)
    return (shardings, state, self.abstract_batch(),
            jax.ShapeDtypeStruct(self.rng.shape, self.rng.dtype))

  def jitted_train_step(self, state_shardings, unroll: bool = False):
    """The jitted step; `unroll`: the microbatch loop unrolled (for cost analysis, see
    trainer.make_train_step)."""
    step = trainer.make_train_step(self.objective, self.tx, self.learning_rate_fn,
                                   self.config.training.microbatches, unroll=unroll)
    return trainer.jit_train_step(step, state_shardings, self.mesh)

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch as the step sees it (shapes, dtypes and sharding)."""
    sharding = partitioning.batch_sharding(self.mesh)
    dtypes = {"masked_lm_weights": jnp.float32}
    return {k: jax.ShapeDtypeStruct(shape, dtypes.get(k, jnp.int32), sharding=sharding)
            for k, shape in _batch_shapes(self.config, self.config.training.global_batch_size)
            .items()}


def build_job(config: ml_collections.ConfigDict, devices: Optional[Sequence[Any]] = None) -> Job:
  """The Job of a pretraining config on `devices` (default: all of this run's devices)."""
  t = config.training
  mesh = partitioning.create_mesh(config.partitioning.mesh, devices)
  model, objective = build_objective(config)
  init_ids = jnp.zeros((1, config.data.max_seq_length), jnp.int32)
  init_params = lambda rng: model.init(rng, init_ids)["params"]
  boxed_shapes = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  tx = optim.make_optimizer(config.optimizer, total_steps=t.total_steps,
                            stacked_axes=optim.stacked_axes_from_params(boxed_shapes))
  return Job(config=config, model_config=ModelConfig.from_any(config.model), mesh=mesh,
             rules=config.partitioning.rules, objective=objective, init_params=init_params, tx=tx,
             learning_rate_fn=optim.make_schedule(config.optimizer, t.total_steps),
             rng=jax.random.PRNGKey(config.seed))


def _train_data(config, files, process_index, process_count):
  per_host = config.training.global_batch_size // process_count
  ds = pipeline.train_dataset(
      files, batch_size_per_host=per_host, seed=config.seed,
      max_seq_length=config.data.max_seq_length,
      max_predictions_per_seq=config.data.max_predictions_per_seq, process_index=process_index,
      process_count=process_count, shuffle_buffer_size=config.data.shuffle_buffer_size,
      dynamic_masking=_dynamic_masking(config))
  return pipeline.DataIterator(ds)


def _dynamic_masking(config):
  if not config.data.dynamic_masking:
    return None
  return pipeline.DynamicMasking.from_spm(
      config.data.spm_model, max_predictions_per_seq=config.data.max_predictions_per_seq)


def evaluate(config, eval_step, params, mesh, rules) -> dict[str, float]:
  """Runs the whole held-out split once (every host the same number of batches)."""
  per_host = config.training.eval_batch_size // jax.process_count()
  ds, num_batches = pipeline.eval_dataset(
      config.data.eval_files, batch_size_per_host=per_host,
      max_seq_length=config.data.max_seq_length,
      max_predictions_per_seq=config.data.max_predictions_per_seq,
      process_index=jax.process_index(), process_count=jax.process_count(),
      dynamic_masking=_dynamic_masking(config), seed=config.seed)
  total = None
  limit = config.training.eval_max_batches or num_batches
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules_tuple(rules)):
    for i, host_batch in enumerate(ds.as_numpy_iterator()):
      if i >= limit:
        break
      stats = eval_step(params, partitioning.global_batch(host_batch, mesh))
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  if total is None:
    raise ValueError(f"config field 'data.eval_files'={config.data.eval_files!r}: no eval batch "
                     f"of {per_host} rows per host")
  return {k: float(v) for k, v in objectives.metrics_from_sums(total).items()
          if k not in objectives.SUM_KEYS}


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


def _changed_reader_settings(directory: str, settings: dict[str, Any]) -> list[str]:
  """The settings that differ from those the positions in `directory` were saved with (an older
  checkpoint records only process_count; one without the file records nothing)."""
  path = os.path.join(directory, _READERS_FILE)
  saved = fileio.read_json(path) if fileio.exists(path) else {}
  return [f"{k} {saved[k]} -> {v}" if k != "train_files" else "train_files"
          for k, v in settings.items() if k in saved and saved[k] != v]


def _restore_or_initialize(config, job, ckpt, train_iter, reader_settings_now, state,
                           state_shardings):
  """(state, step): the workdir's latest checkpoint with its reader position, else a warm start
  from `config.init_from`, else the fresh `state`."""
  restored = ckpt.restore_latest(state)
  if restored is not None:
    step, state, position = restored
    if position is None:
      logging.warning("checkpoint %d has no saved reader position: data restart from the "
                      "beginning", step)
    elif changed := _changed_reader_settings(position, reader_settings_now):
      logging.warning("checkpoint %d's reader positions were saved with other data settings "
                      "(%s): the data readers restart from the beginning of their files", step,
                      ", ".join(changed))
    else:
      train_iter.restore(pipeline.position_path(position, jax.process_index()))
    logging.info("resumed from step %d", step)
    return jax.device_put(state, state_shardings), step
  if config.init_from.path:
    params = warm_start.load_params(config.init_from, job.model_config, state.params)
    state = state.replace(params=jax.device_put(params, state_shardings.params))
  return state, 0


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) pretraining in `workdir`; returns the last train and eval metrics."""
  distributed.maybe_initialize(config.multihost)
  tf.io.gfile.makedirs(workdir)  # local or a bucket (gs://)
  if config.data.get("corpus") and not config.data.train_files:
    from albert_jax.data import demo_data  # pylint: disable=g-import-not-at-top
    config = demo_data.prepare(config, workdir)
  validate(config, jax.process_count())
  is_chief = jax.process_index() == 0
  t = config.training
  job = build_job(config)
  mesh, rules, rng, model_cfg = job.mesh, job.rules, job.rng, job.model_config
  state, state_shardings = job.create_state()

  ckpt = checkpoints.Checkpointer(workdir, t.checkpoint_every_steps, t.keep_checkpoints,
                                  model_config=model_cfg)
  train_iter = _train_data(config, config.data.train_files, jax.process_index(),
                           jax.process_count())
  readers = reader_settings(config)
  state, start_step = _restore_or_initialize(config, job, ckpt, train_iter, readers, state,
                                             state_shardings)
  local_batch = next(train_iter)
  global_batch = partitioning.global_batch(local_batch, mesh)
  train_step = trainer.compile_step(job.jitted_train_step(state_shardings), mesh, rules, state,
                                    global_batch, rng)
  if is_chief:
    print(trainer.describe_memory(train_step), flush=True)
  eval_step = None
  if config.data.eval_files:
    eval_step = jax.jit(trainer.make_eval_step(job.objective))

  writer = metrics_lib.Writer(os.path.join(workdir, "tensorboard"),
                              os.path.join(workdir, "metrics.jsonl"), resumed_at=start_step)
  tokens = t.global_batch_size * config.data.max_seq_length
  flops = t.global_batch_size * metrics_lib.pretraining_flops_per_example(
      model_cfg, config.data.max_seq_length, config.data.max_predictions_per_seq)
  progress = metrics_lib.Progress(t.total_steps, start_step, tokens, flops, jax.device_count(),
                                  metrics_lib.peak_flops_per_device(jax.devices()[0],
                                                                    model_cfg.dtype))
  last_train, last_eval, pending = {}, {}, None
  step = start_step
  save_position = lambda directory: _save_position(train_iter, readers, directory)

  guard = trainer.NonFiniteGuard(t.max_nonfinite_steps)

  def run_eval(at_step):
    values = evaluate(config, eval_step, state.params, mesh, rules)
    writer.scalars(at_step, {f"eval/{k}": v for k, v in values.items()})
    if is_chief:
      print(f"eval at step {at_step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()),
            flush=True)
    return values

  def report(step_metrics, at_step):
    values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
    values.update(progress.report(at_step))
    if is_chief:
      print(metrics_lib.format_line(at_step, t.total_steps, values), flush=True)
    writer.scalars(at_step, {f"train/{k}": v for k, v in values.items()})
    return values

  with StopSignal() as stop:
    try:
      while step < t.total_steps:
        state, step_metrics = train_step(state, global_batch, rng)
        step += 1
        if step == start_step + 1:
          progress.start(step)  # the first step included compilation
        guard.after_step(step_metrics, step)
        if pending is not None:   # read the previous report now that this step is queued
          last_train = report(*pending)
          pending = None
        if step % t.log_every_steps == 0 or step == t.total_steps:
          pending = (step_metrics, step)
        stopping = stop.should_stop(step)
        # Save before evaluating: an evaluation that fails must not cost the step's checkpoint.
        if ckpt.should_save(step) or stopping or step == t.total_steps:
          guard.check(step_metrics, step)  # never save a state that should stop the run
          if pending is not None:  # the log is complete up to every checkpoint
            last_train = report(*pending)
            pending = None
          ckpt.save(step, state, save_position, force=True)
        # A signal (e.g. a preemption notice) leaves no time for a mid-run evaluation.
        if (eval_step is not None and (step % t.eval_every_steps == 0 or step == t.total_steps)
            and not (stopping and step < t.total_steps)):
          last_eval = run_eval(step)
        if stopping:
          logging.warning("stopped by signal at step %d; checkpoint saved", step)
          break
        if step < t.total_steps:
          global_batch = partitioning.global_batch(next(train_iter), mesh)
      if pending is not None:
        last_train = report(*pending)
      if eval_step is not None and step == t.total_steps and not last_eval:
        # Resumed at the end (the checkpoint is saved before the final evaluation, which then
        # failed or was cut short): evaluate the final parameters now.
        last_eval = run_eval(step)
    finally:
      ckpt.close()
      writer.close()
  return {"step": step, "train": last_train, "eval": last_eval,
          "checkpoints": ckpt.directory, "tensorboard": writer.logdir}
