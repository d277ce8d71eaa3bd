"""Orbax checkpoints of the train state, the data readers' positions, and warm starts.

Layout of a workdir:

    checkpoints/<step>/          orbax: train state (params, optimizer state, step, counters)
    data_positions/<step>/       one tf.data reader position per process (exact resume)

Saves are asynchronous and happen every `checkpoint_every_steps`; the newest `keep_checkpoints` are
kept. On start the latest checkpoint is restored; one that fails to restore (corrupt, partial) is
moved aside to `corrupt_checkpoints/` with a warning and the previous one is tried.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
import tensorflow as tf

from albert_jax import fileio


class Checkpointer:
  """Periodic async saves with keep-K, resume with fallback, reader positions beside each step."""

  def __init__(self, workdir: str, every_steps: int, keep: int):
    # tf.io.gfile: workdirs may be buckets (gs://...) on TPU pods.
    self.workdir = fileio.absolute(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.positions = os.path.join(self.workdir, "data_positions")
    self.every_steps = every_steps
    self._manager = self._new_manager(keep)
    self._keep = keep

  def _new_manager(self, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(self.directory, options=options, item_names=("state",))

  def should_save(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: Any, save_position: Optional[Callable[[str], Any]] = None,
           force: bool = False) -> None:
    """Starts an async save of `state` at `step` and writes this host's reader position."""
    if save_position is not None:
      save_position(os.path.join(self.positions, str(step)))
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                       force=force)
    self._prune_positions()

  def _prune_positions(self) -> None:
    """Deletes reader positions older than the oldest checkpoint kept."""
    steps = self._manager.all_steps()
    if jax.process_index() != 0 or not steps or not tf.io.gfile.isdir(self.positions):
      return
    for name in tf.io.gfile.listdir(self.positions):
      name = name.rstrip("/")
      if name.isdigit() and int(name) < min(steps):
        tf.io.gfile.rmtree(os.path.join(self.positions, name))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state: Any) -> Optional[tuple[int, Any, Optional[str]]]:
    """(step, state, reader-position directory or None) of the newest restorable checkpoint."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("checkpoint at step %d cannot be restored (%s: %s); falling back to the "
                        "previous one", step, type(e).__name__, e)
        self._set_aside(step)
        continue
      position = os.path.join(self.positions, str(step))
      return step, restored["state"], position if tf.io.gfile.isdir(position) else None
    return None

  def _set_aside(self, step: int) -> None:
    """Moves a broken step out of orbax's sight (kept for inspection) so it is not retried."""
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, "corrupt_checkpoints", f"{step}-{int(time.time())}")
      tf.io.gfile.makedirs(os.path.dirname(aside))
      tf.io.gfile.rename(os.path.join(self.directory, str(step)), aside)
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self._manager.close()
    self._manager = self._new_manager(self._keep)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
