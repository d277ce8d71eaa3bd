"""Runs `pretrain.run` on a tiny config in a subprocess, optionally dying by SIGKILL right after a
checkpoint is written (a hard crash at a known point, for the resume tests), or with a NaN loss on
chosen steps (for the non-finite guard).

    python -m tests.pretrain_driver WORKDIR TRAIN_FILES [--kill_after=STEP] [--nan_steps=2,3]
        [--fail_eval] [--read_only_after=STEP] [--set key=value ...]   # from the repository root

`--fail_eval` makes every held-out evaluation raise (eval_files defaults to the train files).
`--read_only_after` makes the checkpoint directory read-only (mode 0555) once that step is saved.
"""

import errno
import json
import os
import signal
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax.numpy as jnp

from albert_jax.train import checkpoints
from albert_jax.train import pretrain
from albert_jax.train import step as trainer
from tests.trainer_fixtures import tiny_config

_KILL_AFTER = flags.DEFINE_integer("kill_after", 0, "SIGKILL right after saving this step")
_NAN_STEPS = flags.DEFINE_string("nan_steps", "", "1-based steps whose loss is NaN")
_FAIL_EVAL = flags.DEFINE_bool("fail_eval", False, "every held-out evaluation raises")
_READ_ONLY_AFTER = flags.DEFINE_integer("read_only_after", 0, "make the checkpoint directory "
                                        "read-only right after saving this step")
_SET = flags.DEFINE_multi_string("set", [], "dotted.key=json_value")


def make_read_only(directory):
  """chmod 0555; where that does not stop this process (root), refuse creating entries in it as
  the kernel does for other users (os.mkdir is what orbax and the checkpoint probe call)."""
  os.chmod(directory, 0o555)
  try:
    os.rmdir(tempfile.mkdtemp(dir=directory))
  except PermissionError:
    return
  mkdir = os.mkdir

  def refusing_mkdir(path, *args, **kwargs):
    if os.path.dirname(os.path.abspath(path)) == directory:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return mkdir(path, *args, **kwargs)

  os.mkdir = refusing_mkdir


def after_saving(step, action):
  """Runs `action(checkpointer)` once the save of `step` is written."""
  save = checkpoints.Checkpointer.save

  def save_then_act(self, saved_step, *a, **k):
    save(self, saved_step, *a, **k)
    if saved_step == step:
      self.wait()
      action(self)

  checkpoints.Checkpointer.save = save_then_act


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: WORKDIR TRAIN_FILES [flags]")
  workdir, train_files = argv[1:]
  logging.set_verbosity(logging.WARNING)  # as albert_jax.main: no library INFO logs
  config = tiny_config(train_files)
  for item in _SET.value:
    key, value = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = json.loads(value)

  if _KILL_AFTER.value:
    after_saving(_KILL_AFTER.value, lambda ckpt: os.kill(os.getpid(), signal.SIGKILL))
  if _READ_ONLY_AFTER.value:
    after_saving(_READ_ONLY_AFTER.value, lambda ckpt: make_read_only(ckpt.directory))
  if _NAN_STEPS.value:
    nan_steps = jnp.array([int(s) for s in _NAN_STEPS.value.split(",")])
    make_train_step = trainer.make_train_step

    def make_nan_train_step(*a, **k):
      step_fn = make_train_step(*a, **k)

      def nan_on_some_steps(state, batch, rng):
        bad = jnp.any(nan_steps == state.step + 1)
        weights = jnp.where(bad, jnp.nan, batch["masked_lm_weights"])
        return step_fn(state, dict(batch, masked_lm_weights=weights), rng)

      return nan_on_some_steps

    trainer.make_train_step = make_nan_train_step
  if _FAIL_EVAL.value:
    config.data.eval_files = config.data.eval_files or train_files

    def failing_evaluate(*a, **k):
      raise RuntimeError("evaluation failed (pretrain_driver --fail_eval)")

    pretrain.evaluate = failing_evaluate
  result = pretrain.run(config, workdir)
  print("RESULT " + json.dumps({"step": result["step"], "eval": result["eval"]}), flush=True)


if __name__ == "__main__":
  app.run(main)
