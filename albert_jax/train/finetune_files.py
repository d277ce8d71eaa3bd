"""The files of a fine-tuning run in its workdir, which may be local or a bucket (gs://...); the
layout is described with the other workdirs' in checkpoint_kinds.py.

On several processes, process 0 writes the files and every process reads them; orbax saves and
restores of `best/` are collective, so every process calls `save_best` and `restore_best`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import ml_collections

from albert_jax import fileio
from albert_jax import tasks as tasks_lib
from albert_jax.train import checkpoints


class RunFiles:
  """Paths of a run's files and the reads and (process 0) writes of them."""

  def __init__(self, workdir: str):
    self.workdir = fileio.absolute(workdir)  # never abspath a URI
    self.is_chief = jax.process_index() == 0
    join = lambda name: os.path.join(self.workdir, name)
    self.history_path, self.metrics_path = join("eval_history.json"), join("metrics.json")
    self.best_dir, self.out_dir = join(checkpoints.BEST_DIR), join("outputs")
    self.features_dir, self.tensorboard_dir = join("features"), join("tensorboard")
    self.jsonl_path = join("metrics.jsonl")
    fileio.makedirs(self.workdir)

  def _write_json(self, path: str, value: Any) -> None:
    if self.is_chief:
      fileio.write_json(path, value)

  def read_history(self, step: int, head_init: str) -> tuple[list[dict], str]:
    """(the evaluations up to `step`, the head's origin) saved by an earlier run of this workdir
    (`head_init` when there is none)."""
    if not fileio.exists(self.history_path):
      return [], head_init
    saved = fileio.read_json(self.history_path)
    return [h for h in saved["history"] if h["step"] <= step], saved.get("head_init", head_init)

  def write_history(self, metric: str, head_init: str, history: list[dict]) -> None:
    self._write_json(self.history_path, {"metric": metric, "head_init": head_init,
                                         "history": history})

  def save_best(self, config: ml_collections.ConfigDict, params: Any, entry: dict) -> None:
    """The new best parameters with their history entry and the task config (collective)."""
    checkpoints.save_checkpoint(config.model, params, self.best_dir)
    self._write_json(os.path.join(self.best_dir, "best_step.json"), entry)
    # The task beside the weights: `albert_jax.predict` featurizes (data: the tokenizer and the
    # sequence length) and decodes (task) with it.
    saved = {"task": config.task.to_dict(), "model_name": config.model_name}
    if "data" in config:
      saved["data"] = config.data.to_dict()
    self._write_json(os.path.join(self.best_dir, checkpoints.TASK_FILE), saved)

  def restore_best(self, like: Any, shardings: Any) -> Any:
    """The best parameters, restored with the shapes of `like` onto `shardings` (collective)."""
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          like, shardings)
    return checkpoints.restore_params(self.best_dir, target)

  def write_outputs(self, write: Callable[..., list[str]], task: ml_collections.ConfigDict,
                    split: tasks_lib.Split, predictions: Any) -> None:
    """The task family's prediction files of `split` (its `write_outputs`), from process 0."""
    if self.is_chief:
      write(task, split, predictions, self.out_dir)

  def list_outputs(self) -> list[str]:
    """Every file in outputs/, once process 0 has written them (a barrier: every process returns
    the same list, and none finishes before the outputs exist)."""
    multihost_utils.sync_global_devices("fine-tuning outputs written")
    if not fileio.isdir(self.out_dir):
      return []
    return [os.path.join(self.out_dir, name) for name in fileio.listdir(self.out_dir)]

  def write_metrics(self, result: dict) -> None:
    self._write_json(self.metrics_path, result)
