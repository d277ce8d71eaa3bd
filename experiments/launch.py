"""Launches a sweep: locally one run after another (resumable), or prints pod / SLURM commands.

    # on this machine, every run in ROOT/<sweep>/<run>; finished runs are skipped, interrupted
    # ones resume from their last checkpoint when launched again
    python -m experiments.launch --sweep=table4 --root=/tmp/sweeps --runlocal
    python -m experiments.launch --sweep=table4 --root=gs://bucket/sweeps \\
        --data='gs://bucket/data/train/*.tfrecord' --eval_data='gs://bucket/data/eval/*.tfrecord' \\
        --spm_model=gs://bucket/30k-clean.model --mode=tpu --tpu=my-v3-512 --zone=europe-west4-a
    python -m experiments.launch --sweep=depth ... --mode=slurm --slurm_nodes=4  # sbatch files

A run is finished when its workdir has DONE.json, written once it reached training.total_steps.
A local sweep stopped by SIGINT/SIGTERM saves the current run and stops; launching it again resumes
that run. `--set field=value` adds overrides to every run (e.g. `--set training.total_steps=10` for
a rehearsal). Runs that warm-start from an earlier run of the sweep (the depth sweep) point
`init_from.path` at that run's workdir, so they must run in order.

Every run needs the data flags its `train_files` names: --data, plus --nsp_data for Table 5's NSP
run and --extra_data for Table 7's additional-data run. With --runlocal, a run whose flags are not
all given trains on records made from the bundled corpus (NSP records for the NSP run).
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from absl import app
from absl import flags
import ml_collections

from albert_jax import command_line
from experiments import sweeps

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The launcher's flags (defined only when run as a program, so importing defines none)."""
  flags.DEFINE_string("sweep", None, f"one of {sorted(sweeps.SWEEPS)}")
  flags.DEFINE_string("root", None, "directory holding one workdir per run")
  flags.DEFINE_enum("mode", "local", ["local", "print", "tpu", "slurm"], "how to launch")
  flags.DEFINE_bool("runlocal", False, "laptop-sized runs on the bundled corpus")
  flags.DEFINE_list("only", [], "run only these run names")
  flags.DEFINE_multi_string("set", [], "field=value overrides for every run (JSON values)")
  flags.DEFINE_string("data", "", "training records (data.train_files)")
  flags.DEFINE_string("eval_data", "", "held-out records (data.eval_files)")
  flags.DEFINE_string("extra_data", "", "the additional data's records, added to "
                       "--data in Table 7's additional_data run")
  flags.DEFINE_string("nsp_data", "", "NSP records for Table 5's NSP run "
                      "(create_pretraining_data --random_next_sentence)")
  flags.DEFINE_string("spm_model", "", "SentencePiece model (data.spm_model)")
  flags.DEFINE_string("tpu", "$TPU", "TPU VM name (--mode=tpu)")
  flags.DEFINE_string("zone", "$ZONE", "TPU zone (--mode=tpu)")
  flags.DEFINE_integer("slurm_nodes", 1, "nodes per run (--mode=slurm)")
  flags.DEFINE_integer("slurm_gpus_per_node", 8, "GPUs per node (--mode=slurm)")
  flags.mark_flags_as_required(["sweep", "root"])


def workdir(root: str, sweep: sweeps.Sweep, run: sweeps.Run) -> str:
  return os.path.join(root, sweep.name, run.name)


def data_flag_values() -> dict[str, str]:
  return {"data": FLAGS.data, "extra_data": FLAGS.extra_data, "nsp_data": FLAGS.nsp_data}


def missing_data_flags(run: sweeps.Run) -> list[str]:
  return [name for name in sweeps.data_flags(run) if not data_flag_values()[name]]


def overrides(sweep: sweeps.Sweep, run: sweeps.Run, root: str, runlocal: bool,
              extra: dict) -> ml_collections.ConfigDict:
  """The run's full config: sweep overrides, data flags, warm start, then --set."""
  config = sweeps.run_config(run, runlocal)
  if not missing_data_flags(run):
    config.data.train_files = run.train_files.format(**data_flag_values())
  for key, value in (("eval_files", FLAGS.eval_data), ("spm_model", FLAGS.spm_model)):
    if value:
      config.data[key] = value
  if run.init_from_run:
    config.init_from.path = os.path.join(root, sweep.name, run.init_from_run)
  for key, value in extra.items():
    sweeps._set(config, key, value)  # pylint: disable=protected-access
  return config


def parse_sets(items: list[str]) -> dict:
  out = {}
  for item in items:
    key, _, value = item.partition("=")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def command(run: sweeps.Run, config: ml_collections.ConfigDict, wd: str, runlocal: bool) -> str:
  """The `albert_jax.main` command line of a run (every field that differs from the preset)."""
  base = sweeps.preset_config(run, runlocal)  # what the --config argument below gives
  args = [sys.executable if FLAGS.mode == "local" else "python", "-m", "albert_jax.main",
          f"--config=configs/pretrain.py:{sweeps.preset_arg(run, runlocal)}", f"--workdir={wd}"]
  flat_base = _flatten(base.to_dict())
  for key, value in _flatten(config.to_dict()).items():
    if flat_base.get(key) != value:
      args.append(f"--config.{key}={_flag_value(value)}")
  return " ".join(shlex.quote(a) for a in args)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def _flag_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return json.dumps(value)
  return str(value)


def run_local(sweep: sweeps.Sweep, run: sweeps.Run, config, wd: str) -> bool:
  """Trains the run to the end (True), or until a signal stopped it (False)."""
  from albert_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  done = os.path.join(wd, "DONE.json")
  if os.path.exists(done):
    print(f"[{sweep.name}/{run.name}] finished earlier: skipped", flush=True)
    return True
  os.makedirs(wd, exist_ok=True)
  with open(os.path.join(wd, "run.json"), "w") as f:
    json.dump({"sweep": sweep.name, "run": run.name, "config": config.to_dict()}, f, indent=2,
              default=str)
  print(f"[{sweep.name}/{run.name}] training in {wd}", flush=True)
  result = pretrain.run(config, wd)
  if result["step"] < config.training.total_steps:  # SIGINT/SIGTERM: saved, not finished
    print(f"[{sweep.name}/{run.name}] stopped at step {result['step']} of "
          f"{config.training.total_steps}; launch the sweep again to resume", flush=True)
    return False
  with open(done, "w") as f:
    json.dump({"step": result["step"], "train": result["train"], "eval": result["eval"]}, f,
              indent=2)
  return True


def shared_local_data(root: str, config) -> ml_collections.ConfigDict:
  """Creates the runlocal data once per data setting under ROOT/_data and points config at it."""
  from albert_jax.data import demo_data  # pylint: disable=g-import-not-at-top
  name = "nsp" if config.data.random_next_sentence else "sop"
  return demo_data.prepare(config, os.path.join(root, "_data", name))


def main(argv):
  del argv
  sweep = sweeps.get_sweep(FLAGS.sweep)
  extra = parse_sets(FLAGS.set)
  runs = [r for r in sweep.runs if not FLAGS.only or r.name in FLAGS.only]
  unknown = set(FLAGS.only) - {r.name for r in sweep.runs}
  if unknown:
    raise app.UsageError(f"--only: unknown runs {sorted(unknown)} in sweep {sweep.name}")
  for run in runs:
    missing = missing_data_flags(run)
    if missing and not FLAGS.runlocal:
      raise app.UsageError(f"run {sweep.name}/{run.name} trains on {run.train_files}: give "
                           + " and ".join(f"--{m}" for m in missing)
                           + (f" ({run.note})" if run.note else ""))
  lines = []
  for run in runs:
    wd = workdir(FLAGS.root, sweep, run)
    config = overrides(sweep, run, FLAGS.root, FLAGS.runlocal, extra)
    if FLAGS.mode == "local":
      if missing_data_flags(run):  # runlocal: records made from the bundled corpus
        config = shared_local_data(FLAGS.root, config)
      if not run_local(sweep, run, config, wd):
        return
      continue
    cmd = command(run, config, wd, FLAGS.runlocal)
    if FLAGS.mode == "tpu":
      cmd = (f"gcloud compute tpus tpu-vm ssh {FLAGS.tpu} --zone={FLAGS.zone} --worker=all "
             f"--command={shlex.quote('cd albert_jax && ' + cmd)}")
    elif FLAGS.mode == "slurm":
      path = os.path.join(FLAGS.root, sweep.name, f"{run.name}.sbatch")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(f"#!/bin/bash\n#SBATCH --job-name={sweep.name}-{run.name}\n"
                f"#SBATCH --nodes={FLAGS.slurm_nodes}\n#SBATCH --ntasks-per-node=1\n"
                f"#SBATCH --gpus-per-node={FLAGS.slurm_gpus_per_node}\n"
                f"srun {cmd}\n")
      cmd = f"sbatch {path}" + (f"  # after {run.init_from_run} finishes" if run.init_from_run
                                else "")
    lines.append(cmd)
  if lines:
    print("\n".join(lines))


if __name__ == "__main__":
  define_flags()
  app.run(command_line.boundary(main))
