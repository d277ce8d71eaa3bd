"""THE training loop, shared by pretraining (train/pretrain.py) and fine-tuning
(train/finetune.py); it knows no task: the job passes its data, evaluation and what to keep as
`Hooks`.

    result = loop.train(job, hooks, workdir)

1. Restore the workdir's latest checkpoint (then `hooks.restored` repositions the data and reads
   what the job kept), else warm start (`hooks.warm_start`), else the freshly initialized state.
2. Compile the train step ahead of time and print its memory line (process 0).
3. Every step: dispatch the next step, then read the metrics of the one before (logging never makes
   the host wait on the step it just queued); every `training.log_every_steps` print and write the
   train metrics with throughput (steps/s, tokens/s, TFLOP/s per device, MFU, ETA).
4. Save every `training.checkpoint_every_steps`, at the last step and on SIGTERM/SIGINT (finish the
   step, save, stop), with the data position beside each checkpoint (`hooks.save_position`).
   Saves come before evaluations: an evaluation that fails must not cost the step's checkpoint.
   A save that cannot be written stops the run (checkpoints.CheckpointWriteError), the last
   checkpoint written intact.
5. Evaluate every `training.eval_every_steps` and at the last step (`hooks.evaluate`), write the
   values and call `hooks.after_evaluation` (fine-tuning keeps its best parameters there). A run
   resumed at its last step whose last evaluation is missing evaluates then.
6. Non-finite steps are skipped by the step; after `training.max_nonfinite_steps` in a row the run
   stops (NonFiniteLossError) with the last good checkpoint intact.

Logs (process 0): WORKDIR/metrics.jsonl (`train/<key>` and `eval/<key>` per step) and
WORKDIR/tensorboard/, as metrics.Writer writes them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from albert_jax.train import checkpoints
from albert_jax.train import metrics as metrics_lib
from albert_jax.train import step as trainer
from albert_jax.train.job import Job


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


def _no_evaluation_kept(step: int, position: Optional[str]) -> Optional[int]:
  del step, position
  return None


@dataclasses.dataclass
class Hooks:
  """What a job adds to the loop.

  batch(step) -> the global train batch of optimizer step `step` (0-based; called in order from
      the first step this process runs).
  evaluate(params) -> ({name: value}, extra): held-out metrics, and whatever `after_evaluation`
      needs of the evaluation (e.g. predictions); None: the job does not evaluate.
  after_evaluation(step, values, extra, params): called after each evaluation was logged (e.g. to
      keep the best parameters).
  save_position(directory): writes this process's data position beside a checkpoint.
  check_position(directory): raises when the data position saved in `directory` cannot be read
      (e.g. a truncated file); the step is then treated as a damaged checkpoint (the fallback rule
      takes the previous one). None: positions are not checked.
  restored(step, position directory or None) -> the step of the latest evaluation the job kept up to
      `step` (None: none): called once a checkpoint was restored, before any batch is read.
  warm_start(params) -> params: for a run that starts fresh (no checkpoint); None: keep the
      initialized parameters.
  checkpoint_at_evaluations: also save at every evaluation step (what the job keeps at an
      evaluation then has a train state to resume from).
  """

  batch: Callable[[int], Mapping[str, jax.Array]]
  evaluate: Optional[Callable[[Any], tuple[dict[str, float], Any]]] = None
  after_evaluation: Optional[Callable[[int, dict[str, float], Any, Any], None]] = None
  save_position: Optional[Callable[[str], None]] = None
  check_position: Optional[Callable[[str], None]] = None
  restored: Callable[[int, Optional[str]], Optional[int]] = _no_evaluation_kept
  warm_start: Optional[Callable[[Any], Any]] = None
  checkpoint_at_evaluations: bool = False


@dataclasses.dataclass
class Result:
  """Where the loop ended: `step` < training.total_steps when a signal stopped it."""

  step: int
  state: trainer.TrainState
  state_shardings: Any
  train: dict[str, float]       # the last logged train metrics ({}: none in this process)
  eval: dict[str, float]        # the last evaluation's values ({}: none in this process)
  checkpoints: str
  tensorboard: str


def _restore_or_initialize(job: Job, hooks: Hooks, ckpt: checkpoints.Checkpointer):
  """(state, state shardings, step, step of the last evaluation kept)."""
  state, shardings = job.create_state()
  restored = ckpt.restore_latest(state, hooks.check_position)
  if restored is not None:
    step, state, position = restored
    last_eval = hooks.restored(step, position)
    logging.info("resumed from step %d", step)
    return jax.device_put(state, shardings), shardings, step, last_eval
  if hooks.warm_start is not None:
    params = hooks.warm_start(state.params)
    state = state.replace(params=jax.device_put(params, shardings.params))
  return state, shardings, 0, None


class _Reports:
  """Train metrics read one report late: `later` holds a step's metrics, `flush` reads, prints
  and writes them (with the throughput since the previous report)."""

  def __init__(self, job: Job, writer: metrics_lib.Writer, start_step: int):
    t = job.config.training
    self.total_steps = t.total_steps
    self.writer = writer
    self.progress = metrics_lib.Progress(
        t.total_steps, start_step, t.global_batch_size * job.tokens_per_example,
        t.global_batch_size * job.flops_per_example, jax.device_count(),
        metrics_lib.peak_flops_per_device(jax.devices()[0], job.model_config.dtype))
    self.last: dict[str, float] = {}
    self._pending = None

  def later(self, step_metrics: Mapping[str, jax.Array], step: int) -> None:
    self._pending = (step_metrics, step)

  def flush(self) -> None:
    if self._pending is None:
      return
    step_metrics, step = self._pending
    self._pending = None
    values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
    values.update(self.progress.report(step))
    if jax.process_index() == 0:
      print(metrics_lib.format_line(step, self.total_steps, values), flush=True)
    self.writer.scalars(step, {f"train/{k}": v for k, v in values.items()})
    self.last = values


def _evaluate(hooks: Hooks, writer: metrics_lib.Writer, state, step: int) -> dict[str, float]:
  values, extra = hooks.evaluate(state.params)
  writer.scalars(step, {f"eval/{k}": v for k, v in values.items()})
  if jax.process_index() == 0:
    print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()),
          flush=True)
  if hooks.after_evaluation is not None:
    hooks.after_evaluation(step, values, extra, state.params)
  return values


def _compile(job: Job, shardings: Any, state: trainer.TrainState, batch: Mapping[str, jax.Array]):
  """The train step compiled ahead of time for these arguments; its memory line (process 0)."""
  compiled = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                                  batch, job.rng)
  if jax.process_index() == 0:
    print(trainer.describe_memory(compiled), flush=True)
  return compiled


def train(job: Job, hooks: Hooks, workdir: str) -> Result:
  """Runs (or resumes) the job's training in `workdir` (local or gs://) to
  `training.total_steps`, or until a signal stops it."""
  t = job.config.training
  ckpt = checkpoints.Checkpointer(workdir, t.checkpoint_every_steps, t.keep_checkpoints,
                                  model_config=job.model_config)
  state, shardings, step, last_eval_step = _restore_or_initialize(job, hooks, ckpt)
  writer = metrics_lib.Writer(os.path.join(ckpt.workdir, "tensorboard"),
                              os.path.join(ckpt.workdir, "metrics.jsonl"), resumed_at=step)
  reports = _Reports(job, writer, step)
  last_eval: dict[str, float] = {}
  with StopSignal() as stop:
    try:
      if step < t.total_steps:  # a finished run that is resumed compiles nothing
        batch = hooks.batch(step)
        train_step = _compile(job, shardings, state, batch)
      start_step = step
      guard = trainer.NonFiniteGuard(t.max_nonfinite_steps)
      while step < t.total_steps:
        state, step_metrics = train_step(state, batch, job.rng)
        step += 1
        if step == start_step + 1:
          reports.progress.start(step)  # the first step's time is not a steady-state step's
        guard.after_step(step_metrics, step)
        reports.flush()  # the previous report, now that this step is queued
        if step % t.log_every_steps == 0 or step == t.total_steps:
          reports.later(step_metrics, step)
        stopping = stop.should_stop(step)
        evaluating = hooks.evaluate is not None and (step % t.eval_every_steps == 0
                                                     or step == t.total_steps)
        if (ckpt.should_save(step) or stopping or step == t.total_steps
            or (evaluating and hooks.checkpoint_at_evaluations)):
          guard.check(step_metrics, step)  # never save a state that should stop the run
          reports.flush()  # the log is complete up to every checkpoint
          ckpt.save(step, state, hooks.save_position, force=True)
        # A signal (e.g. a preemption notice) leaves no time for a mid-run evaluation.
        if evaluating and not (stopping and step < t.total_steps):
          last_eval, last_eval_step = _evaluate(hooks, writer, state, step), step
        if stopping:
          logging.warning("stopped by signal at step %d; checkpoint saved", step)
          break
        if step < t.total_steps:
          batch = hooks.batch(step)
      reports.flush()
      if hooks.evaluate is not None and step == t.total_steps and last_eval_step != step:
        # Resumed at the end (the checkpoint is saved before the final evaluation, which then
        # failed or was cut short): evaluate the final parameters now.
        last_eval = _evaluate(hooks, writer, state, step)
    finally:
      ckpt.close()
      writer.close()
  return Result(step=step, state=state, state_shardings=shardings, train=reports.last,
                eval=last_eval, checkpoints=ckpt.directory, tensorboard=writer.logdir)
