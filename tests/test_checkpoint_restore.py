"""Checkpointer.restore_latest: a config mismatch is an error (checkpoints kept), corrupt steps are
set aside and the previous one is tried, and all-corrupt is an error rather than a fresh start."""

import gc
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.train.checkpoints import Checkpointer


# A failed orbax restore leaves its other array reads un-awaited; their "exception ignored" reports
# are expected here. Tests using this collect them (gc) before ending, not in a later test.
quiet_failed_reads = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_state(width=4, extra=False):
  # The embedding is big and incompressible enough (16 KiB) for orbax's OCDBT store to keep its data
  # in a file of its own, apart from the index and metadata: see garble().
  state = {"params": {"dense": {"kernel": jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width),
                                "bias": jnp.zeros((width,), jnp.float32)},
                      "embedding": jax.random.normal(jax.random.PRNGKey(0), (64, 64))},
           "step": jnp.array(0, jnp.int32)}
  if extra:
    state["params"]["norm"] = {"scale": jnp.ones((2,), jnp.float32)}
  return state


def saved_workdir(tmp_path, steps=(1, 2)):
  """A workdir with checkpoints of make_state() at `steps` (state "step" leaf = step)."""
  ckpt = Checkpointer(str(tmp_path), every_steps=1, keep=5)
  for step in steps:
    ckpt.save(step, dict(make_state(), step=jnp.array(step, jnp.int32)))
  ckpt.close()
  return tmp_path


def garble(tmp_path, step, keep_metadata):
  """Corrupts a step: deletes only the embedding's data (its metadata still reads and matches, the
  restore fails) or overwrites every file (the metadata cannot be read)."""
  state_dir = tmp_path / "checkpoints" / str(step) / "state"
  hit = 0
  for root, _, files in os.walk(state_dir):
    for name in files:
      path = os.path.join(root, name)
      if keep_metadata:
        if os.path.getsize(path) > 4096:  # the embedding's chunk; everything else is < 1 KiB
          os.remove(path)
          hit += 1
      else:
        with open(path, "wb") as f:
          f.write(b"garbage")
        hit += 1
  assert hit


def steps_on_disk(tmp_path):
  return sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit())


def set_aside(tmp_path):
  aside = tmp_path / "corrupt_checkpoints"
  return sorted(int(n.split("-")[0]) for n in os.listdir(aside)) if aside.exists() else []


def test_restores_latest(tmp_path):
  saved_workdir(tmp_path)
  step, state, position = Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state())
  assert step == 2 and int(state["step"]) == 2 and position is None
  jax.tree.map(np.testing.assert_array_equal, state["params"], make_state()["params"])


def test_shape_mismatch_raises_and_keeps_checkpoints(tmp_path):
  saved_workdir(tmp_path)
  with pytest.raises(ValueError) as e:
    Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state(width=8))
  msg = str(e.value)
  assert "params/dense/kernel" in msg and "(2, 4)" in msg and "(2, 8)" in msg
  assert "step 2" in msg and str(tmp_path / "checkpoints") in msg
  assert "config" in msg and "init_from" in msg
  assert steps_on_disk(tmp_path) == [1, 2] and set_aside(tmp_path) == []


def test_dtype_mismatch_raises(tmp_path):
  saved_workdir(tmp_path)
  state = make_state()
  state["params"]["dense"]["bias"] = state["params"]["dense"]["bias"].astype(jnp.bfloat16)
  with pytest.raises(ValueError, match=r"params/dense/bias: stored \(4,\) float32, expected "
                                       r"\(4,\) bfloat16"):
    Checkpointer(str(tmp_path), 1, 5).restore_latest(state)
  assert steps_on_disk(tmp_path) == [1, 2]


def test_extra_leaf_in_state_raises(tmp_path):
  saved_workdir(tmp_path)
  with pytest.raises(ValueError, match="params/norm/scale: missing from the checkpoint"):
    Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state(extra=True))
  assert steps_on_disk(tmp_path) == [1, 2] and set_aside(tmp_path) == []


def test_leaf_missing_from_state_raises(tmp_path):
  ckpt = Checkpointer(str(tmp_path), 1, 5)
  ckpt.save(1, make_state(extra=True))
  ckpt.close()
  with pytest.raises(ValueError, match="params/norm/scale: stored .* not in the current state"):
    Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state())
  assert steps_on_disk(tmp_path) == [1]


@quiet_failed_reads
@pytest.mark.parametrize("keep_metadata", [True, False], ids=["data", "all-files"])
def test_corrupt_latest_falls_back(tmp_path, keep_metadata, caplog):
  saved_workdir(tmp_path)
  garble(tmp_path, 2, keep_metadata)
  step, state, _ = Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state())
  assert step == 1 and int(state["step"]) == 1
  assert steps_on_disk(tmp_path) == [1] and set_aside(tmp_path) == [2]
  assert "falling back" in caplog.text
  why = "it cannot be restored" if keep_metadata else "its metadata cannot be read"
  assert f"step 2 is set aside as corrupt: {why}" in caplog.text
  gc.collect()


@quiet_failed_reads
def test_all_corrupt_raises(tmp_path):
  saved_workdir(tmp_path)
  garble(tmp_path, 1, keep_metadata=True)
  garble(tmp_path, 2, keep_metadata=False)
  with pytest.raises(RuntimeError, match=r"steps \[2, 1\]") as e:
    Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state())
  assert str(tmp_path / "checkpoints") in str(e.value)
  assert steps_on_disk(tmp_path) == [] and set_aside(tmp_path) == [1, 2]
  gc.collect()


def test_empty_workdir_restores_nothing(tmp_path):
  assert Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state()) is None


def overwrite_array_bytes(tmp_path, step):
  """Overwrites bytes in the middle of the embedding's data (same size: the file still parses)."""
  state_dir = tmp_path / "checkpoints" / str(step) / "state"
  big = [os.path.join(root, n) for root, _, names in os.walk(state_dir) for n in names
         if os.path.getsize(os.path.join(root, n)) > 4096]
  assert len(big) == 1
  size = os.path.getsize(big[0])
  with open(big[0], "r+b") as f:
    f.seek(size // 2)
    f.write(b"\xff" * 64)
  assert os.path.getsize(big[0]) == size


def test_overwritten_array_data_fails_its_digest_and_falls_back(tmp_path, caplog):
  saved_workdir(tmp_path)
  overwrite_array_bytes(tmp_path, 2)
  step, state, _ = Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state())
  assert step == 1 and int(state["step"]) == 1
  jax.tree.map(np.testing.assert_array_equal, state["params"], make_state()["params"])
  assert steps_on_disk(tmp_path) == [1] and set_aside(tmp_path) == [2]
  assert "differ from the digests written at save" in caplog.text
  assert "params/embedding" in caplog.text


def test_warm_start_reader_verifies_digests(tmp_path, caplog):
  from albert_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  saved_workdir(tmp_path)
  overwrite_array_bytes(tmp_path, 2)
  step, params = checkpoints.read_step_params(str(tmp_path))
  assert step == 1 and "params/embedding" in caplog.text
  np.testing.assert_array_equal(params["embedding"], make_state()["params"]["embedding"])
  assert steps_on_disk(tmp_path) == [1, 2]  # another run's workdir: nothing is moved


def test_unreadable_data_position_falls_back(tmp_path, caplog):
  saved_workdir(tmp_path)
  for step in (1, 2):
    (tmp_path / "data_positions" / str(step)).mkdir(parents=True)

  def check(directory):
    if directory.endswith("2"):
      raise ValueError(f"{directory}/data_position_00000 is truncated")

  step, _, position = Checkpointer(str(tmp_path), 1, 5).restore_latest(make_state(), check)
  assert step == 1 and position == str(tmp_path / "data_positions" / "1")
  assert "data position in" in caplog.text and "is truncated" in caplog.text
  assert set_aside(tmp_path) == [2]
