"""experiments/: sweeps, parameter table, launcher (with a whole Table 4 rehearsal), collection."""

import csv
import json
import os
import shlex
import subprocess
import sys

import pytest

from experiments import params_table
from experiments import sweeps
from tests import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENV = dict(os.environ, XLA_FLAGS=xla_env.xla_flags(1), JAX_PLATFORMS="cpu")


def test_every_sweep_builds_valid_configs():
  from albert_jax.model.config import ModelConfig
  assert set(sweeps.SWEEPS) == {"table2", "table3", "table4", "table5", "table7", "table8",
                                "depth", "width"}
  for sweep in sweeps.SWEEPS.values():
    names = [r.name for r in sweep.runs]
    assert len(names) == len(set(names)), sweep.name
    for run in sweep.runs:
      for runlocal in (False, True):
        config = sweeps.run_config(run, runlocal)
        ModelConfig.from_any(config.model)
        assert set(sweeps.PAPER_COLUMNS) <= set(run.paper), run.name
  depth = sweeps.get_sweep("depth")
  assert [r.init_from_run for r in depth.runs] == ["", "L1", "L3", "L6", "L12", "L24"]
  data_flags = {(s.name, r.name): sweeps.data_flags(r) for s in sweeps.SWEEPS.values()
                for r in s.runs}
  assert data_flags.pop(("table5", "nsp")) == ["nsp_data"]
  assert data_flags.pop(("table7", "additional_data")) == ["data", "extra_data"]
  assert all(flags == ["data"] for flags in data_flags.values())


def test_parameter_table_agrees_with_the_paper():
  rows = params_table.rows()
  assert len(rows) == sum(len(s.runs) for s in sweeps.SWEEPS.values())
  for r in rows:
    assert r["agrees"] or r["note"], r  # every disagreement is explained
  by_name = {(r["sweep"], r["run"]): r["ours"] for r in rows}
  assert by_name[("table4", "E768_attention")] == pytest.approx(83.1e6, abs=0.05e6)
  assert by_name[("table4", "E128_ffn")] == pytest.approx(37.7e6, abs=0.05e6)
  assert by_name[("table3", "all_shared_E64")] == pytest.approx(9.7e6, abs=0.05e6)
  assert by_name[("width", "H4096")] == 222_595_584


def launch_in_process(capsys, *args) -> tuple[int, str, str]:
  """(exit status, stdout, stderr) of `python -m experiments.launch ARGS`, called in process."""
  from experiments import launch  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  try:
    status = launch.main(list(args))
  except SystemExit as e:
    status = e.code
  out = capsys.readouterr()
  return status, out.out, out.err


def test_launcher_prints_pod_and_slurm_commands(tmp_path, capsys):
  def run(*a):
    status, out, err = launch_in_process(capsys, *a)
    assert status == 0, err
    return out
  out = run("--sweep=depth", f"--root={tmp_path}", "--mode=tpu", "--data=gs://b/train/*",
            "--spm_model=gs://b/spm.model", "--tpu=v3-512", "--zone=z")
  lines = out.strip().splitlines()
  assert len(lines) == 6 and all("--worker=all" in l for l in lines)
  assert f"--config.init_from.path={tmp_path}/depth/L24" in lines[-1]
  assert "--config.model.num_hidden_layers=48" in lines[-1]
  out = run("--sweep=table4", f"--root={tmp_path}", "--mode=slurm", "--data=/d/*")
  assert len([l for l in out.splitlines() if l.startswith("sbatch ")]) == 8
  script = open(tmp_path / "table4" / "E768_attention.sbatch").read()
  assert "srun" in script and "--config.model.layer_sharing=attention" in script


def _config_of_command(line: str):
  """The config `albert_jax.main` builds from a printed command line (its config flags)."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  args = [a.replace("--config=configs/", f"--config={REPO}/configs/")
          for a in shlex.split(line) if a.startswith("--config")]
  flag_values = absl_flags.FlagValues()
  # config_flags finds the override flags in sys_argv when the flag is defined, as main's does.
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values,
                                  sys_argv=["main"] + args)
  flag_values(["main"] + args)
  return flag_values.config


@pytest.mark.parametrize("runlocal", [False, True])
def test_printed_commands_give_each_runs_config(tmp_path, runlocal, capsys):
  data = ["--data=gs://b/train/*", "--nsp_data=gs://b/nsp/*", "--extra_data=gs://b/extra/*"]
  for sweep in sweeps.SWEEPS.values():
    status, out, err = launch_in_process(
        capsys, f"--sweep={sweep.name}", f"--root={tmp_path}", "--mode=print",
        *([] if runlocal else data), *(["--runlocal"] if runlocal else []))
    assert status == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(sweep.runs)
    for run, line in zip(sweep.runs, lines):
      got, want = _config_of_command(line), sweeps.run_config(run, runlocal)
      for section in ("model", "training", "optimizer"):
        assert got[section].to_dict() == want[section].to_dict(), (sweep.name, run.name)
      if not runlocal:
        want_files = {"nsp": "gs://b/nsp/*", "additional_data": "gs://b/train/*,gs://b/extra/*"}
        assert got.data.train_files == want_files.get(run.name, "gs://b/train/*"), run.name


def test_launcher_refuses_runs_without_their_data(tmp_path, capsys):
  for sweep, given, missing in (("table5", "--data=/d/*", "--nsp_data"),
                                ("table7", "--data=/d/*", "--extra_data"),
                                ("table4", "--eval_data=/e/*", "--data")):
    status, _, err = launch_in_process(capsys, f"--sweep={sweep}", f"--root={tmp_path}",
                                       "--mode=print", given)
    assert status == 2 and f"give {missing}" in err and len(err.splitlines()) == 1, err
  status, _, err = launch_in_process(capsys, "--sweep=table4", f"--root={tmp_path}", "--only=E1")
  assert status == 2 and "--only: unknown runs ['E1']" in err and len(err.splitlines()) == 1


def test_an_interrupted_local_run_is_not_marked_done(tmp_path, monkeypatch):
  from experiments import launch  # pylint: disable=g-import-not-at-top
  from albert_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  sweep = sweeps.get_sweep("table4")
  run = sweep.runs[0]
  config = sweeps.run_config(run, runlocal=True)
  config.training.total_steps = 10
  result = {"step": 4, "train": {}, "eval": {}}
  monkeypatch.setattr(pretrain, "run", lambda config, wd: result)
  assert not launch.run_local(sweep, run, config, str(tmp_path))  # stopped by a signal at step 4
  assert not (tmp_path / "DONE.json").exists()
  result["step"] = 10
  assert launch.run_local(sweep, run, config, str(tmp_path))
  assert (tmp_path / "DONE.json").exists()


def test_table4_rehearsal_launch_collect_table_plot(tmp_path, capsys):
  corpus = os.path.join(REPO, "data", "corpus")
  sets = ["training.total_steps=4", "training.log_every_steps=2", "training.eval_every_steps=4",
          "training.checkpoint_every_steps=4", "optimizer.warmup_steps=1",
          "data.spm_vocab_size=1000", "model.vocab_size=1000",
          f"data.corpus={corpus}/tutorial.txt", f"data.eval_corpus={corpus}/faq.txt",
          # Short sequences and batches: the 8 runs' steps and evaluations cost little.
          "data.max_seq_length=32", "data.max_predictions_per_seq=5",
          "training.global_batch_size=4", "training.eval_batch_size=4",
          "training.eval_max_batches=1"]
  args = ["--sweep=table4", f"--root={tmp_path}", "--runlocal"] + [f"--set={s}" for s in sets]
  first = subprocess.run([sys.executable, "-m", "experiments.launch", *args], cwd=REPO,
                         capture_output=True, text=True, env=ENV)
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout.count("training in") == 8
  # Launched again (in process: the first launch was the real entry point), every run is skipped.
  status, out, err = launch_in_process(capsys, *args)
  assert status == 0, err
  assert out.count("finished earlier: skipped") == 8

  # Fine-tuning scores: the SQuAD scripts report percentages, accuracies are fractions.
  for task, metrics in (("squad_v1.1", {"validation/f1": 0.9, "validation/exact_match": 0.0}),
                        ("mnli", {"validation_matched/accuracy": 0.845})):
    (tmp_path / "table4" / "E128_all" / "finetune" / task).mkdir(parents=True)
    (tmp_path / "table4" / "E128_all" / "finetune" / task / "metrics.json").write_text(
        json.dumps({"best": {"metrics": metrics}}))
  out = subprocess.run([sys.executable, "-m", "experiments.collect", "--sweep=table4",
                        f"--root={tmp_path}"], cwd=REPO, capture_output=True, text=True, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  table = open(tmp_path / "table4" / "table4.md").read()
  assert table.count("| E") == 8 and "83M" in table
  rows = list(csv.DictReader(open(tmp_path / "table4" / "table4.csv")))
  assert len(rows) == 8 and all(float(r["mlm_accuracy"]) >= 0 for r in rows)
  assert all(r["steps"] == "4" for r in rows)
  scored = next(r for r in rows if r["run"] == "E128_all")
  assert (scored["squad11"], scored["mnli"]) == ("0.9/0.0", "84.5")
  for name in ("table4_curves.png", "table4_params.png"):
    assert open(tmp_path / "table4" / name, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_speedup_smoke():
  out = subprocess.run([sys.executable, "-m", "experiments.speedup", "--runlocal", "--seq=32",
                        "--batch=4", "--timed_steps=1", "--models=bert_large,albert_base"],
                       cwd=REPO, capture_output=True, text=True, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| bert_large |" in out.stdout and "| 1.00x | 1.0x |" in out.stdout


def test_bench_train_speed_breakdown_on_a_two_device_mesh():
  out = subprocess.run([sys.executable, "-m", "experiments.bench_train", "speed",
                        "--config=configs/pretrain.py:size=base,runlocal", "--steps=1",
                        "--breakdown"], cwd=REPO, capture_output=True, text=True,
                       env=dict(ENV, XLA_FLAGS=xla_env.xla_flags(2)))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "device: cpu x2" in out.stdout and "-> MFU" in out.stdout
  for part in ("train step", "forward + backward", "| forward |", "dense matmuls alone",
               "attention core alone"):
    assert part in out.stdout, out.stdout


def test_bench_train_speed_has_a_row_per_attention_implementation():
  out = subprocess.run([sys.executable, "-m", "experiments.bench_train", "speed",
                        "--config=configs/pretrain.py:size=tiny,runlocal", "--steps=1",
                        "--attention_impls=auto,dot_product_attention"], cwd=REPO,
                       capture_output=True, text=True, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "== model.attention_impl=auto (runs as xla)" in out.stdout
  rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
  assert rows[0].startswith("| attention_impl | runs as | compile s | step ms")
  assert rows[1].startswith("| auto | xla |") and rows[2].startswith(
      "| dot_product_attention | dot_product_attention |"), rows


def test_step_parts_count_the_encoders_flops():
  from experiments import step_parts  # pylint: disable=g-import-not-at-top
  from albert_jax.train import metrics  # pylint: disable=g-import-not-at-top
  from albert_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top

  def model(layers):
    return ModelConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=layers,
                       num_attention_heads=2, intermediate_size=24, max_position_embeddings=16)

  batch, seq = 2, 8
  _, _, dense = step_parts.dense_matmuls_alone(model(3), batch * seq)
  grad_fn, args, attention = step_parts.attention_core_alone(model(3), batch, seq)
  per_layer = (metrics.pretraining_flops_per_example(model(3), seq, 3)
               - metrics.pretraining_flops_per_example(model(2), seq, 3))
  assert dense + attention == batch * 3 * per_layer
  assert grad_fn(*args).shape == (batch, seq, 2, 8)
