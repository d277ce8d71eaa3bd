"""Orbax checkpoints: the train state of a workdir (resume), our own parameter format, and THE
fallback rule for steps. Which kinds of checkpoint exist, how a workdir is laid out and how each
kind is read: see checkpoint_kinds.py.

Saves of the train state are asynchronous and happen every `checkpoint_every_steps`; the newest
`keep_checkpoints` are kept. On start the latest checkpoint is restored:

* Its stored tree (paths, shapes, dtypes, from orbax's metadata) is first compared with the state
  the current config builds. A mismatch means the config changed since the checkpoint was written
  (e.g. `model.intermediate_size`): that is a ValueError listing the differing leaves, and nothing
  is moved. Use a new workdir, with `config.init_from.path` pointing at the old one to warm-start.
* Otherwise the fallback rule (`newest_readable`, the same for every reader of a workdir's steps):
  the newest step that can be read is used; a step that cannot be read (metadata unreadable, or a
  failed restore of matching metadata: corrupt, partial files) is skipped with a warning, and the
  skipped steps are counted in one report. On resume a skipped step is also moved aside to
  `corrupt_checkpoints/` so that it is not retried. If steps exist but none can be read, that is
  an error (never a silent restart from step 0); an empty workdir restores nothing.
* A step is unreadable too when its arrays differ from the integrity digests written with it
  (digests.py: bytes overwritten inside the array data, which orbax itself restores silently), or
  when the job's `check_position` refuses the reader position beside it (a truncated file).

A save that cannot be written (the checkpoint directory became unwritable, or is a file now) stops
the run with CheckpointWriteError naming the directory and the last step saved, which is left
intact. The directory is probed before each save, since orbax's own failure to create a step's
directory leaves its background threads waiting forever (the process would never exit); every
process learns the others' probe results, so that all stop when one host cannot write.

Every process makes the same decisions: the metadata is read from the shared checkpoint directory.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any, Callable, Mapping, Optional, TypeVar

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
import tensorflow as tf
from etils import epath

from albert_jax import fileio
from albert_jax.model.config import ModelConfig
from albert_jax.train import digests

T = TypeVar("T")

# Names in a workdir and in our checkpoint format (checkpoint_kinds.py describes the layouts).
CHECKPOINTS_DIR = "checkpoints"          # <workdir>/checkpoints/<step>/<STATE_ITEM>
POSITIONS_DIR = "data_positions"         # <workdir>/data_positions/<step>/
CORRUPT_DIR = "corrupt_checkpoints"      # steps set aside on resume
STATE_ITEM = "state"                     # the orbax item of a step: the train state
PARAMS_ITEM = "params"                   # the orbax tree of our format (save_checkpoint)
MODEL_CONFIG_FILE = "model_config.json"  # the ModelConfig, beside params/ and in a workdir
TASK_FILE = "task.json"                  # a fine-tuned checkpoint's task (best/task.json)
BEST_DIR = "best"                        # a fine-tuning workdir's best parameters (our format)


# ------------------------------------------------------------------------------------------------
# The fallback rule
# ------------------------------------------------------------------------------------------------

class Unreadable(Exception):
  """Raised by a step reader for a step that cannot be read; its message says why."""


class StateMismatch(ValueError):
  """A step that reads but does not fit the state the config builds: never fallen back over."""


class NoReadableStep(RuntimeError):
  """Steps exist but the fallback rule could read none of them."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written; the message names the directory and the last step kept."""


def step_numbers(directory: str) -> list[int]:
  """The steps saved under `directory` (a workdir's checkpoints/), oldest first."""
  if not fileio.isdir(directory):
    return []
  return sorted(int(name) for name in fileio.listdir(directory) if name.isdigit())


def newest_readable(directory: str, steps: list[int], read: Callable[[int], T],
                    on_skip: Optional[Callable[[int, str], None]] = None,
                    hint: str = "") -> Optional[tuple[int, T]]:
  """THE fallback rule: (step, read(step)) of the newest step of `steps` that `read` can read.

  A step whose read raises (anything but StateMismatch, which propagates) is skipped with a
  warning naming it and why, and `on_skip(step, why)` is called; when a step is read after some
  were skipped, one warning counts them. None when `steps` is empty; NoReadableStep (naming every
  step, then `hint`) when none can be read.
  """
  skipped = []
  for step in sorted(steps, reverse=True):
    try:
      value = read(step)
    except StateMismatch:
      raise
    except Exception as e:  # pylint: disable=broad-except
      why = str(e) if isinstance(e, Unreadable) else f"{type(e).__name__}: {e}"
      logging.warning("checkpoint step %d in %s cannot be read (%s); falling back to the "
                      "previous step", step, directory, why)
      if on_skip is not None:
        on_skip(step, why)
      skipped.append(step)
      continue
    if skipped:
      logging.warning("read checkpoint step %d in %s after skipping %d unreadable newer step(s): "
                      "%s", step, directory, len(skipped), skipped)
    return step, value
  if skipped:
    raise NoReadableStep(f"no checkpoint in {directory} can be read: steps {skipped} are "
                         f"unreadable{'. ' + hint if hint else ''}")
  return None


# ------------------------------------------------------------------------------------------------
# The train state of a workdir
# ------------------------------------------------------------------------------------------------

class Checkpointer:
  """Periodic async saves with keep-K, resume with fallback, reader positions beside each step."""

  def __init__(self, workdir: str, every_steps: int, keep: int,
               model_config: Optional[Any] = None):
    """`model_config`: written to the workdir's model_config.json (process 0) with the first
    save, so that the workdir reads as a checkpoint without the run's config (checkpoint_kinds.py);
    not before, so that a run refused for a changed config leaves the old one in place."""
    # tf.io.gfile: workdirs may be buckets (gs://...) on TPU pods.
    self.workdir = fileio.absolute(workdir)
    self.directory = os.path.join(self.workdir, CHECKPOINTS_DIR)
    self.positions = os.path.join(self.workdir, POSITIONS_DIR)
    self.every_steps = every_steps
    self._manager = self._new_manager(keep)
    self._keep = keep
    self._model_config = model_config
    self._failed = False  # a save failed: close() does not report it again
    self._pending_step = -1  # the step of the latest save started

  def _new_manager(self, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=True)
    # A registered handler (not just the item name) lets metadata() read steps this process has
    # not saved or restored yet (otherwise the item's metadata is None).
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler()})

  def should_save(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: Any, save_position: Optional[Callable[[str], Any]] = None,
           force: bool = False) -> None:
    """Starts an async save of `state` at `step` (with its digests) and writes this host's reader
    position; CheckpointWriteError when the checkpoint cannot be written."""
    self.wait()  # a failed earlier save is reported before a new one starts
    try:
      self._probe()
      if save_position is not None:
        save_position(os.path.join(self.positions, str(step)))
      if self._model_config is not None and jax.process_index() == 0:
        write_model_config(self.workdir, self._model_config)
      self._model_config = None  # written once
      args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state)})
      self._pending_step = step
      self._manager.save(step, args=args, force=force,
                         custom_metadata={digests.DIGEST_KEY: digests.of_tree(state, _path_names)})
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(step, e) from e
    self._prune_positions()

  def _probe(self) -> None:
    """Creates and removes a directory where orbax will create the step's (through its own path
    layer, etils.epath): raises the OSError that orbax would meet in a background thread.

    With several processes all of them raise when any one fails (each names the processes that
    failed): a process that went on alone would wait forever in orbax's barriers.
    """
    error = None
    try:
      probe = epath.Path(self.directory) / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
      probe.mkdir(parents=True)
      probe.rmdir()
    except OSError as e:
      error = e
    if jax.process_count() > 1:
      failed = np.flatnonzero(multihost_utils.process_allgather(np.array([error is not None])))
      if error is None and failed.size:
        raise OSError(f"process(es) {failed.tolist()} of {jax.process_count()} cannot write there")
      if error is not None:
        raise OSError(f"process {jax.process_index()}: {type(error).__name__}: {error} "
                      f"(process(es) {failed.tolist()} of {jax.process_count()} failed)") from error
    if error is not None:
      raise error

  def _write_error(self, step: int, error: Exception) -> CheckpointWriteError:
    self._failed = True
    kept = [s for s in self._manager.all_steps() if s != step]
    last = f"the last checkpoint saved, step {max(kept)}, is kept" if kept else "no step was saved"
    return CheckpointWriteError(f"cannot write checkpoint step {step} in {self.directory} "
                                f"({type(error).__name__}: {error}); stopping: {last}")

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
    """Waits for the pending save; CheckpointWriteError when it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(self._pending_step, e) from e

  def restore_latest(self, abstract_state: Any,
                     check_position: Optional[Callable[[str], None]] = None
                     ) -> Optional[tuple[int, Any, Optional[str]]]:
    """(step, state, reader-position directory or None) of the newest restorable checkpoint.

    None if there are no checkpoints. Raises ValueError if the newest readable step does not match
    `abstract_state` (config changed) and RuntimeError if every step was corrupt. A step whose
    arrays differ from their digests is corrupt, and so is one whose reader position
    `check_position(directory)` raises for (on any process: every process falls back alike).
    """
    def read(step):
      try:
        metadata = self._manager.metadata(step)
        stored = metadata.item_metadata[STATE_ITEM]
        if stored is None:
          raise ValueError(f"no metadata for item {STATE_ITEM!r}")
      except Exception as e:  # pylint: disable=broad-except
        raise Unreadable(f"its metadata cannot be read ({type(e).__name__}: {e})") from e
      # A mismatch is the config's fault, not the checkpoint's: stop rather than discard it.
      self._check_fits(step, stored, abstract_state)
      try:
        args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state)})
        state = self._manager.restore(step, args=args)[STATE_ITEM]
      except Exception as e:  # pylint: disable=broad-except
        raise Unreadable(f"it cannot be restored ({type(e).__name__}: {e})") from e
      verify_digests(state, metadata.custom_metadata, step)
      if check_position is not None:
        self._check_position(step, check_position)
      return state

    found = newest_readable(
        self.directory, list(self._manager.all_steps()), read, on_skip=self._set_aside,
        hint=f"They were moved to {os.path.join(self.workdir, CORRUPT_DIR)}. Not starting from "
        "scratch over them: remove the checkpoints directory (or use a new workdir) to do so.")
    if found is None:
      return None
    step, state = found
    position = os.path.join(self.positions, str(step))
    return step, state, position if tf.io.gfile.isdir(position) else None

  def _check_position(self, step: int, check: Callable[[str], None]) -> None:
    position = os.path.join(self.positions, str(step))
    why = ""
    if tf.io.gfile.isdir(position):  # a step without positions restarts the readers (the job's)
      try:
        check(position)
      except Exception as e:  # pylint: disable=broad-except
        why = f"{type(e).__name__}: {e}"
    damaged = bool(why)
    if jax.process_count() > 1:  # one host's damaged position is every host's fallback
      damaged = bool(np.asarray(multihost_utils.process_allgather(np.array([damaged]))).any())
    if damaged:
      why = why or "on another process"
      raise Unreadable(f"its data position in {position} cannot be read ({why})")

  def _check_fits(self, step: int, stored: Any, abstract_state: Any) -> None:
    differences = tree_differences(stored, abstract_state)
    if not differences:
      return
    shown = "\n  ".join(differences[:_SHOWN_DIFFERENCES])
    more = len(differences) - _SHOWN_DIFFERENCES
    raise StateMismatch(
        f"checkpoint step {step} in {self.directory} does not match the state built from the "
        f"current config ({len(differences)} differing leaves):\n  {shown}"
        + (f"\n  ... and {more} more" if more > 0 else "") +
        "\nThe config probably changed since this checkpoint was written. Use a new workdir "
        "for the new config; to warm-start it from this run, set "
        f"config.init_from.path={self.workdir!r}.")

  def _set_aside(self, step: int, why: str) -> None:
    """Moves a broken step out of orbax's sight (kept for inspection) so it is not retried."""
    logging.warning("checkpoint at step %d is set aside as corrupt: %s", step, why)
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, CORRUPT_DIR, f"{step}-{int(time.time())}")
      tf.io.gfile.makedirs(os.path.dirname(aside))
      tf.io.gfile.rename(os.path.join(self.directory, str(step)), aside)
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self._manager.close()
    self._manager = self._new_manager(self._keep)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def close(self) -> None:
    """Waits for the pending save and releases orbax (CheckpointWriteError when that save failed,
    unless a failed save was reported already: the run is stopping for it)."""
    reported = self._failed
    try:
      self.wait()
    except CheckpointWriteError:
      if not reported:
        raise
    finally:
      self._manager.close()


def verify_digests(state: Any, custom_metadata: Optional[Mapping[str, Any]], step: int) -> None:
  """Raises Unreadable when arrays of `state` (a train state, or {"params": ...} of one) differ
  from the digests saved with step `step`; a step saved before digests existed is not checked."""
  saved = (custom_metadata or {}).get(digests.DIGEST_KEY)
  if not saved:
    logging.warning("checkpoint step %d has no array digests (saved by an older version): its "
                    "arrays are not verified", step)
    return
  damaged = digests.mismatches(state, saved, _path_names)
  if damaged:
    raise Unreadable(f"{len(damaged)} array(s) differ from the digests written at save, its data "
                     f"is damaged: {damaged[:_SHOWN_DIFFERENCES]}")


def read_step_params(workdir: str) -> Optional[tuple[int, Any]]:
  """(step, params) of the newest readable train state in `workdir`'s checkpoints/, by the
  fallback rule, with their digests verified (nothing is moved: the workdir may be another
  run's); None without steps."""
  directory = os.path.join(fileio.absolute(workdir), CHECKPOINTS_DIR)
  steps = step_numbers(directory)
  if not steps:
    return None
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                                  item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler()})

  def read(step):
    params = restore_tree(os.path.join(directory, str(step), STATE_ITEM))["params"]
    verify_digests({"params": params}, manager.metadata(step).custom_metadata, step)
    return params

  try:
    return newest_readable(directory, steps, read)
  finally:
    manager.close()


# ------------------------------------------------------------------------------------------------
# Our own format: the orbax tree of the parameters + the model config as JSON
# ------------------------------------------------------------------------------------------------

def write_model_config(directory: str, config: Any) -> None:
  """`directory`/model_config.json of a ModelConfig (or a config section of one)."""
  fileio.write_json(os.path.join(directory, MODEL_CONFIG_FILE),
                    ModelConfig.from_any(config).to_config_dict().to_dict(), sort_keys=True)


def read_model_config(directory: str) -> Optional[ModelConfig]:
  """The ModelConfig in `directory`/model_config.json, or None when there is none."""
  path = os.path.join(directory, MODEL_CONFIG_FILE)
  return ModelConfig.from_any(fileio.read_json(path)) if fileio.exists(path) else None


def save_checkpoint(config: Any, params: Any, directory: str) -> None:
  """`directory` (local or a bucket): model_config.json and the orbax `params` tree. Every
  process calls it (orbax saves collectively); process 0 writes the config."""
  directory = fileio.absolute(directory)
  if jax.process_index() == 0:
    write_model_config(directory, config)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, PARAMS_ITEM), nn.unbox(params), force=True)
  checkpointer.wait_until_finished()


def restore_tree(path: str) -> Any:
  """An orbax tree restored onto this process's first device.

  Restoring without a target fails when the tree was saved from another device topology (a run
  on 8 devices, a TPU pod), so the target is built from the saved metadata.
  """
  checkpointer = ocp.StandardCheckpointer()
  meta = checkpointer.metadata(path)
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", None) or meta
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  return checkpointer.restore(path, target)


def load_checkpoint(directory: str) -> tuple[Any, Any]:
  """(model config as a ConfigDict, params) of a `save_checkpoint` directory."""
  directory = fileio.absolute(directory)
  cfg = read_model_config(directory)
  if cfg is None:
    raise FileNotFoundError(f"{os.path.join(directory, MODEL_CONFIG_FILE)} not found: not an "
                            "albert_jax checkpoint directory")
  return cfg.to_config_dict(), restore_tree(os.path.join(directory, PARAMS_ITEM))


def restore_params(directory: str, target: Any) -> Any:
  """The params of a `save_checkpoint` directory restored onto `target`'s shapes and shardings
  (a tree of jax.ShapeDtypeStruct; collective on several processes)."""
  return ocp.StandardCheckpointer().restore(os.path.join(directory, PARAMS_ITEM), target)


def read_task_file(directory: str) -> Optional[dict[str, Any]]:
  """What fine-tuning saved beside a checkpoint (`task.json` in best/): its "task" section and,
  from runs since fine-tuning had one, its "data" section; None when there is no such file."""
  path = os.path.join(fileio.absolute(directory), TASK_FILE)
  if not fileio.exists(path):
    return None
  saved = fileio.read_json(path)
  if not isinstance(saved, Mapping) or not isinstance(saved.get("task"), Mapping):
    raise ValueError(f"{path} has no 'task' section (expected {{\"task\": {{\"family\": ...}}}})")
  return dict(saved)


def read_task(directory: str) -> Optional[dict[str, Any]]:
  """The fine-tuning task saved beside a checkpoint (read_task_file's "task"), or None."""
  saved = read_task_file(directory)
  return None if saved is None else dict(saved["task"])


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
