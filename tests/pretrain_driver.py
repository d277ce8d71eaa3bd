"""Runs `pretrain.run` on a tiny config in a subprocess, optionally dying by SIGKILL right after a
checkpoint is written (a hard crash at a known point, for the resume tests), or with a NaN loss on
chosen steps (for the non-finite guard).

    python tests/pretrain_driver.py WORKDIR TRAIN_FILES [--kill_after=STEP] [--nan_steps=2,3]
        [--fail_eval] [--set key=value ...]

`--fail_eval` makes every held-out evaluation raise (eval_files defaults to the train files).
"""

import argparse
import json
import os
import signal
import sys

import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
# This checkout's package (and the test fixtures), whatever else is installed.
sys.path[:0] = [os.path.dirname(HERE), HERE]

from albert_jax.train import checkpoints
from albert_jax.train import pretrain
from albert_jax.train import step as trainer  # noqa: E402
from trainer_fixtures import tiny_config  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("train_files")
  parser.add_argument("--kill_after", type=int, default=0)
  parser.add_argument("--nan_steps", default="", help="1-based steps whose loss is NaN")
  parser.add_argument("--fail_eval", action="store_true")
  parser.add_argument("--set", action="append", default=[], help="dotted.key=json_value")
  args = parser.parse_args()
  config = tiny_config(args.train_files)
  for item in args.set:
    key, value = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = json.loads(value)

  if args.kill_after:
    save = checkpoints.Checkpointer.save

    def save_then_die(self, step, *a, **k):
      save(self, step, *a, **k)
      if step == args.kill_after:
        self.wait()
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.Checkpointer.save = save_then_die
  if args.nan_steps:
    nan_steps = jnp.array([int(s) for s in args.nan_steps.split(",")])
    make_train_step = trainer.make_train_step

    def make_nan_train_step(*a, **k):
      step_fn = make_train_step(*a, **k)

      def nan_on_some_steps(state, batch, rng):
        bad = jnp.any(nan_steps == state.step + 1)
        weights = jnp.where(bad, jnp.nan, batch["masked_lm_weights"])
        return step_fn(state, dict(batch, masked_lm_weights=weights), rng)

      return nan_on_some_steps

    trainer.make_train_step = make_nan_train_step
  if args.fail_eval:
    config.data.eval_files = config.data.eval_files or args.train_files

    def failing_evaluate(*a, **k):
      raise RuntimeError("evaluation failed (pretrain_driver --fail_eval)")

    pretrain.evaluate = failing_evaluate
  result = pretrain.run(config, args.workdir)
  print("RESULT " + json.dumps({"step": result["step"], "eval": result["eval"]}), flush=True)


if __name__ == "__main__":
  main()
