"""The laptop rehearsal of a paper table: the launcher's --seeds, the data every run shares, the
cross-evaluation and the one command's table, CSV, JSON and plot (a few steps, a tiny model)."""

import csv
import json
import os
import subprocess
import sys

from experiments import launch
from experiments import rehearse
from experiments import sweeps
from tests.test_experiments import ENV, REPO, launch_in_process

CORPUS = os.path.join(REPO, "data", "corpus")
# A tiny model and corpus on top of the rehearsal's recipe: a few seconds per run.
TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.embedding_size=16",
        "model.num_hidden_layers=1", "data.max_seq_length=32", "data.max_predictions_per_seq=5",
        "data.dupe_factor=1", "training.global_batch_size=8", "training.eval_batch_size=64",
        "training.total_steps=2", "training.eval_every_steps=2", "training.log_every_steps=1",
        "training.checkpoint_every_steps=2", "optimizer.warmup_steps=1",
        "data.spm_vocab_size=1000", "model.vocab_size=1000",
        f"data.corpus={CORPUS}/tutorial.txt", f"data.eval_corpus={CORPUS}/faq.txt"]


def run_names(lines):
  """The run names of the launcher's printed commands (their workdir's last part)."""
  return [line.split("--workdir=")[1].split()[0].rsplit("/", 1)[1] for line in lines]


def test_seeds_repeat_every_run_with_its_seed(tmp_path, capsys):
  status, out, _ = launch_in_process(capsys, "--sweep=table5", f"--root={tmp_path}", "--runlocal",
                                     "--mode=print", "--seeds=3,1")
  lines = out.splitlines()
  assert status == 0 and len(lines) == 6
  # Seed-major: every run of seed 3, then seed 1's.
  assert run_names(lines) == ["none_s3", "nsp_s3", "sop_s3", "none_s1", "nsp_s1", "sop_s1"]
  assert all(f"--config.seed={n[-1]}" in line for n, line in zip(run_names(lines), lines))
  assert "--config.seed" not in launch_in_process(
      capsys, "--sweep=table5", f"--root={tmp_path}", "--runlocal", "--mode=print")[1]
  status, out, _ = launch_in_process(capsys, "--sweep=table5", f"--root={tmp_path}", "--runlocal",
                                     "--mode=print", "--seeds=1,2", "--only=sop,nsp_s2")
  assert status == 0 and run_names(out.splitlines()) == ["sop_s1", "nsp_s2", "sop_s2"]
  for bad, why in (("1,x", "give distinct integers"), ("2,2", "give distinct integers")):
    status, _, err = launch_in_process(capsys, "--sweep=table5", f"--root={tmp_path}",
                                       "--mode=print", "--runlocal", f"--seeds={bad}")
    assert status == 2 and err.startswith(f"error: --seeds={bad}: {why}"), err
    assert len(err.splitlines()) == 1
  depth = sweeps.with_seeds(sweeps.get_sweep("depth"), [5])
  assert [r.init_from_run for r in depth.runs][:3] == ["", "L1_s5", "L3_s5"]
  assert sweeps.arm_name("E128_all_s12") == "E128_all"
  assert sweeps.arm_name("not_shared_E64") == "not_shared_E64"


def test_table4_rehearsal_compares_sharing_at_equal_embedding_size(tmp_path, capsys):
  argv = rehearse.launch_argv("table4", rehearse.REHEARSALS["table4"],
                              rehearse.REHEARSALS["table4"].runs, str(tmp_path), ["1", "2"], [])
  status, out, _ = launch_in_process(capsys, *argv, "--mode=print")
  lines = out.splitlines()
  assert status == 0 and len(lines) == 4
  assert sum("--config.model.layer_sharing=none" in line for line in lines) == 2
  assert all("--config.model.embedding_size=64" in line and "--config.model.hidden_size=128"
             in line for line in lines)


def test_runlocal_data_are_shared_by_seeds_and_settings(tmp_path):
  run = sweeps.get_sweep("table5").runs[1]  # nsp
  config = sweeps.run_config(run, runlocal=True)
  for key, value in launch.parse_sets(TINY).items():
    sweeps._set(config, key, value)  # pylint: disable=protected-access
  nsp = launch.shared_local_data(str(tmp_path), config)
  summary = tmp_path / "_data" / "nsp" / "data" / "train" / "summary.json"
  made = summary.stat().st_mtime_ns
  config.seed = 7
  again = launch.shared_local_data(str(tmp_path), config)
  assert summary.stat().st_mtime_ns == made  # the same records for another seed
  assert again.seed == 7 and again.data.train_files == nsp.data.train_files
  assert nsp.data.spm_model == str(tmp_path / "_data" / "sop" / "data" / "spm.model")
  settings = json.loads(summary.read_text())["settings"]
  assert settings["instance"]["random_next_sentence"] and settings["random_seed"] == 42


def test_rehearsal_one_command_cross_evaluates_and_writes_table_csv_json_plot(tmp_path, capsys):
  cmd = [sys.executable, "-m", "experiments.rehearse", "--sweep=table5", f"--root={tmp_path}",
         "--only=sop", "--seeds=1,2"] + [f"--set={s}" for s in TINY]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  table = (tmp_path / "table5" / "table5_rehearsal.md").read_text()
  row = next(line for line in table.splitlines() if line.startswith("| sop |"))
  assert "| 1,2 |" in row and "| 86.5 |" in row and "| 78.9 |" in row  # beside the paper's
  rows = list(csv.DictReader(open(tmp_path / "table5" / "table5_rehearsal.csv")))
  assert [(r["run"], r["seed"], r["step"]) for r in rows] == [("sop_s1", "1", "2"),
                                                                ("sop_s2", "2", "2")]
  for r in rows:
    assert all(0 <= float(r[m]) <= 1 for m in rehearse.METRICS), r
    saved = json.load(open(tmp_path / "table5" / r["run"] / "cross_eval.json"))
    assert set(saved["heldout"]) == {"sop", "nsp", "sop_order"} and saved["step"] == 2
  results = json.load(open(tmp_path / "table5" / "table5_rehearsal.json"))
  assert set(results["majority_share"]) == {"sop", "nsp", "sop_order"}
  assert all(0.5 <= v <= 1 for v in results["majority_share"].values())
  arm = results["arms"][0]
  assert arm["seeds"] == [1, 2] and arm["paper_sop"] == 86.5
  assert arm["sop"] == (100 * float(rows[0]["sop"]) + 100 * float(rows[1]["sop"])) / 2
  assert open(tmp_path / "table5" / "table5_rehearsal.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  # The order-only held-out set has no random-document pairs.
  order = json.load(open(tmp_path / "_data" / "sop_order" / "eval" / "summary.json"))
  assert order["instance_kinds"].get("random_document", 0) == 0 and order["instances"] > 0

  for argv, message in (
      (["--seeds=1"], "--seeds=1: give at least two seeds"),
      (["--only=sop_x"], "--only: unknown runs ['sop_x'] in sweep table5"),
      (["--seeds=1,b"], "--seeds=1,b: give distinct integers")):
    capsys.readouterr()
    try:
      status = rehearse.main(["--sweep=table5", f"--root={tmp_path}/other", *argv])
    except SystemExit as e:
      status = e.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not os.path.exists(f"{tmp_path}/other")  # nothing trained, nothing written
