"""Orbax checkpoints of the train state, the data readers' positions, and warm starts.

Layout of a workdir:

    checkpoints/<step>/          orbax: train state (params, optimizer state, step, counters)
    data_positions/<step>/       one tf.data reader position per process (exact resume)

Saves are asynchronous and happen every `checkpoint_every_steps`; the newest `keep_checkpoints` are
kept. On start the latest checkpoint is restored:

* Its stored tree (paths, shapes, dtypes, from orbax's metadata) is first compared with the state
  the current config builds. A mismatch means the config changed since the checkpoint was written
  (e.g. `model.intermediate_size`): that is a ValueError listing the differing leaves, and nothing
  is moved. Use a new workdir, with `config.init_from.path` pointing at the old one to warm-start.
* A step whose metadata cannot be read, or that fails to restore although its metadata matches
  (corrupt, partial files), is moved aside to `corrupt_checkpoints/` with a warning and the previous
  step is tried. If steps exist but none can be restored, that is a RuntimeError (never a silent
  restart from step 0); an empty workdir restores nothing.

Every process makes the same decisions: the metadata is read from the shared checkpoint directory.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
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
    # A registered handler (not just the item name) lets metadata() read steps this process has
    # not saved or restored yet (otherwise the item's metadata is None).
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_handlers={"state": ocp.StandardCheckpointHandler()})

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
    """(step, state, reader-position directory or None) of the newest restorable checkpoint.

    None if there are no checkpoints. Raises ValueError if the newest readable step does not match
    `abstract_state` (config changed) and RuntimeError if every step was corrupt.
    """
    set_aside = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        stored = self._manager.metadata(step).item_metadata["state"]
        if stored is None:
          raise ValueError("no metadata for item 'state'")
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, f"its metadata cannot be read ({type(e).__name__}: {e})")
        set_aside.append(step)
        continue
      # A mismatch is the config's fault, not the checkpoint's: stop rather than discard it.
      differences = tree_differences(stored, abstract_state)
      if differences:
        shown = "\n  ".join(differences[:_SHOWN_DIFFERENCES])
        more = len(differences) - _SHOWN_DIFFERENCES
        raise ValueError(
            f"checkpoint step {step} in {self.directory} does not match the state built from the "
            f"current config ({len(differences)} differing leaves):\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "") +
            "\nThe config probably changed since this checkpoint was written. Use a new workdir "
            "for the new config; to warm-start it from this run, set "
            f"config.init_from.path={self.workdir!r}.")
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, f"it cannot be restored ({type(e).__name__}: {e})")
        set_aside.append(step)
        continue
      position = os.path.join(self.positions, str(step))
      return step, restored["state"], position if tf.io.gfile.isdir(position) else None
    if set_aside:
      raise RuntimeError(
          f"no checkpoint in {self.directory} can be restored: steps {set_aside} were corrupt and "
          f"moved to {os.path.join(self.workdir, 'corrupt_checkpoints')}. Not starting from "
          "scratch over them: remove the checkpoints directory (or use a new workdir) to do so.")
    return None

  def _set_aside(self, step: int, why: str) -> None:
    """Moves a broken step out of orbax's sight (kept for inspection) so it is not retried."""
    logging.warning("checkpoint at step %d is set aside as corrupt: %s; falling back to the "
                    "previous one", step, why)
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


_SHOWN_DIFFERENCES = 5  # differing leaves named in the mismatch error


def _path_names(path: tuple[Any, ...]) -> str:
  """'opt_state/1/0/mu/w': the same for a dataclass field or namedtuple attribute (GetAttrKey) as
  for the dict key orbax stores it under (DictKey)."""
  names = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
  return "/".join(str(n) for n in names)


def _leaf_spec(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
  """(shape, dtype) of an array, ShapeDtypeStruct, orbax Array/ScalarMetadata or Python scalar."""
  shape = getattr(leaf, "shape", None)
  dtype = getattr(leaf, "dtype", None)
  return (tuple(np.shape(leaf)) if shape is None else tuple(shape),
          np.result_type(leaf) if dtype is None else np.dtype(dtype))


def tree_differences(stored: Any, expected: Any) -> list[str]:
  """Leaves whose path, shape or dtype differ between checkpoint metadata and a (abstract) state."""
  def specs(tree):
    return {_path_names(p): _leaf_spec(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}

  def show(spec):
    return f"{spec[0]} {spec[1]}"

  have, want = specs(stored), specs(expected)
  out = []
  # In the state's own leaf order (a TrainState's params before its optimizer state).
  for path in [*want, *(p for p in have if p not in want)]:
    if path not in want:
      out.append(f"{path}: stored {show(have[path])}, not in the current state")
    elif path not in have:
      out.append(f"{path}: missing from the checkpoint, expected {show(want[path])}")
    elif have[path] != want[path]:
      out.append(f"{path}: stored {show(have[path])}, expected {show(want[path])}")
  return out
