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
`init_from.path` at that run's workdir, so they must run in order. `--seeds=1,2` repeats every run
once per seed (runs `<run>_s<seed>`, config field `seed` set; the data are the same for all seeds),
so a table can show the noise between seeds.

Every run needs the data flags its `train_files` names: --data, plus --nsp_data for Table 5's NSP
run and --extra_data for Table 7's additional-data run. With --runlocal, a run whose flags are not
all given trains on records made from the bundled corpus (NSP records for the NSP run).
"""

from __future__ import annotations

import json
import os
import shlex

from typing import Optional, Sequence

from absl import flags
import ml_collections

from albert_jax import command_line
from experiments import sweeps

PROG = "python -m experiments.launch"


def define_flags(flag_values: flags.FlagValues) -> None:
  """The launcher's flags (in a FlagValues of its own: `main` can be called in process)."""
  string = lambda name, default, help_: flags.DEFINE_string(name, default, help_,
                                                          flag_values=flag_values)
  integer = lambda name, default, help_: flags.DEFINE_integer(name, default, help_,
                                                            flag_values=flag_values)
  string("sweep", None, f"one of {sorted(sweeps.SWEEPS)}")
  string("root", None, "directory holding one workdir per run")
  flags.DEFINE_enum("mode", "local", ["local", "print", "tpu", "slurm"], "how to launch",
                    flag_values=flag_values)
  flags.DEFINE_bool("runlocal", False, "laptop-sized runs on the bundled corpus",
                    flag_values=flag_values)
  flags.DEFINE_list("only", [], "run only these run names (with --seeds: the sweep's run names "
                    "or the seeded ones, e.g. sop or sop_s2)", flag_values=flag_values)
  flags.DEFINE_list("seeds", [], "repeat every run once per seed (integers): runs <run>_s<seed> "
                    "with config field seed set", flag_values=flag_values)
  flags.DEFINE_multi_string("set", [], "field=value overrides for every run (JSON values)",
                            flag_values=flag_values)
  string("data", "", "training records (data.train_files)")
  string("eval_data", "", "held-out records (data.eval_files)")
  string("extra_data", "", "the additional data's records, added to --data in Table 7's "
         "additional_data run")
  string("nsp_data", "", "NSP records for Table 5's NSP run (create_pretraining_data "
         "--random_next_sentence)")
  string("spm_model", "", "SentencePiece model (data.spm_model)")
  string("tpu", "$TPU", "TPU VM name (--mode=tpu)")
  string("zone", "$ZONE", "TPU zone (--mode=tpu)")
  integer("slurm_nodes", 1, "nodes per run (--mode=slurm)")
  integer("slurm_gpus_per_node", 8, "GPUs per node (--mode=slurm)")
  flags.mark_flags_as_required(["sweep", "root"], flag_values=flag_values)


def workdir(root: str, sweep: sweeps.Sweep, run: sweeps.Run) -> str:
  return os.path.join(root, sweep.name, run.name)


def data_flag_values(args: flags.FlagValues) -> dict[str, str]:
  return {"data": args.data, "extra_data": args.extra_data, "nsp_data": args.nsp_data}


def missing_data_flags(run: sweeps.Run, args: flags.FlagValues) -> list[str]:
  return [name for name in sweeps.data_flags(run) if not data_flag_values(args)[name]]


def overrides(sweep: sweeps.Sweep, run: sweeps.Run, args: flags.FlagValues,
              extra: dict) -> ml_collections.ConfigDict:
  """The run's full config: sweep overrides, data flags, warm start, then --set."""
  config = sweeps.run_config(run, args.runlocal)
  if not missing_data_flags(run, args):
    config.data.train_files = run.train_files.format(**data_flag_values(args))
  for key, value in (("eval_files", args.eval_data), ("spm_model", args.spm_model)):
    if value:
      config.data[key] = value
  if run.init_from_run:
    config.init_from.path = os.path.join(args.root, sweep.name, run.init_from_run)
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
  words = ["python", "-m", "albert_jax.main",
           f"--config=configs/pretrain.py:{sweeps.preset_arg(run, runlocal)}", f"--workdir={wd}"]
  flat_base = _flatten(base.to_dict())
  for key, value in _flatten(config.to_dict()).items():
    if flat_base.get(key) != value:
      words.append(f"--config.{key}={_flag_value(value)}")
  return " ".join(shlex.quote(a) for a in words)


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


DATA_SEED = 42  # the runlocal records' generator seed, whatever the run's `seed`


def shared_local_data(root: str, config) -> ml_collections.ConfigDict:
  """Creates the runlocal data once per data setting under ROOT/_data and points config at it.

  Every setting (SOP records in ROOT/_data/sop, NSP records in ROOT/_data/nsp) is tokenized with
  the one SentencePiece model of ROOT/_data/sop, so a model trained on one can be evaluated on the
  other's held-out records; the records are made with DATA_SEED, so runs that differ only in
  `seed` train on the same data."""
  from albert_jax.data import demo_data  # pylint: disable=g-import-not-at-top
  made = ml_collections.ConfigDict(config.to_dict())
  made.seed = DATA_SEED
  if made.data.random_next_sentence and not made.data.spm_model:
    sop = ml_collections.ConfigDict(made.to_dict())
    sop.data.random_next_sentence = False
    made.data.spm_model = shared_local_data(root, sop).data.spm_model
  name = "nsp" if made.data.random_next_sentence else "sop"
  made = demo_data.prepare(made, os.path.join(root, "_data", name))
  config = ml_collections.ConfigDict(config.to_dict())
  for key in ("spm_model", "train_files", "eval_files"):
    config.data[key] = made.data[key]
  return config


def seeds_flag(items: list[str]) -> list[int]:
  """--seeds as integers (one line naming the flag otherwise)."""
  try:
    seeds = [int(s) for s in items]
  except ValueError:
    seeds = []
  if len(seeds) != len(items) or len(set(seeds)) != len(seeds):
    command_line.usage_error(f"--seeds={','.join(items)}: give distinct integers, e.g. "
                             "--seeds=1,2")
  return seeds


def select_runs(sweep: sweeps.Sweep, only: list[str]) -> list[sweeps.Run]:
  """The runs --only names (a seeded run by its own name or its sweep run's); all without it."""
  names = {r.name for r in sweep.runs} | {sweeps.arm_name(r.name) for r in sweep.runs}
  unknown = set(only) - names
  if unknown:
    command_line.usage_error(f"--only: unknown runs {sorted(unknown)} in sweep {sweep.name}; "
                             f"its runs: {[r.name for r in sweep.runs]}")
  return [r for r in sweep.runs
          if not only or r.name in only or sweeps.arm_name(r.name) in only]


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  command_line.no_positional(positional, PROG)
  sweep = sweeps.with_seeds(sweeps.get_sweep(args.sweep), seeds_flag(args.seeds))
  extra = parse_sets(args.set)
  runs = select_runs(sweep, args.only)
  for run in runs:
    missing = missing_data_flags(run, args)
    if missing and not args.runlocal:
      command_line.usage_error(f"run {sweep.name}/{run.name} trains on {run.train_files}: give "
                               + " and ".join(f"--{m}" for m in missing)
                               + (f" ({run.note})" if run.note else ""))
  lines = []
  for run in runs:
    wd = workdir(args.root, sweep, run)
    config = overrides(sweep, run, args, extra)
    if args.mode == "local":
      if missing_data_flags(run, args):  # runlocal: records made from the bundled corpus
        config = shared_local_data(args.root, config)
      if not run_local(sweep, run, config, wd):
        return 0
      continue
    cmd = command(run, config, wd, args.runlocal)
    if args.mode == "tpu":
      cmd = (f"gcloud compute tpus tpu-vm ssh {args.tpu} --zone={args.zone} --worker=all "
             f"--command={shlex.quote('cd albert_jax && ' + cmd)}")
    elif args.mode == "slurm":
      path = os.path.join(args.root, sweep.name, f"{run.name}.sbatch")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(f"#!/bin/bash\n#SBATCH --job-name={sweep.name}-{run.name}\n"
                f"#SBATCH --nodes={args.slurm_nodes}\n#SBATCH --ntasks-per-node=1\n"
                f"#SBATCH --gpus-per-node={args.slurm_gpus_per_node}\n"
                f"srun {cmd}\n")
      cmd = f"sbatch {path}" + (f"  # after {run.init_from_run} finishes" if run.init_from_run
                                else "")
    lines.append(cmd)
  if lines:
    print("\n".join(lines))
  return 0


if __name__ == "__main__":
  command_line.run(main)
