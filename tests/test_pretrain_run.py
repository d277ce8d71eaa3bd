"""Whole pretraining runs: exact resume after a crash, SIGTERM, a corrupt checkpoint, warm start,
the NaN stop, and the demo config through the real entry point (then exported to Hugging Face)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One process, one device: the runs here are about the loop, not sharding.
ENV = dict(os.environ, XLA_FLAGS=xla_env.xla_flags(1), JAX_PLATFORMS="cpu")


def driver(workdir, records, *extra, check=True):
  cmd = [sys.executable, "-m", "tests.pretrain_driver", str(workdir), str(records / "*.tfrecord"),
         *extra]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO)
  if check and proc.returncode != 0:
    raise AssertionError(f"driver failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return proc


def losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def params_at(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.StandardCheckpointer().restore(path)["params"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, static_records):
  workdir = tmp_path_factory.mktemp("straight")
  driver(workdir, static_records)
  return workdir


def test_resume_after_sigkill_is_exact(tmp_path, static_records, straight):
  killed = driver(tmp_path, static_records, "--kill_after=3", check=False)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert sorted(losses(tmp_path)) == [1, 2, 3]
  with open(tmp_path / "metrics.jsonl", "a") as f:  # as if step 4 was logged before the crash
    f.write(json.dumps({"step": 4, "train/loss": -1.0}) + "\n")
  driver(tmp_path, static_records)
  ref, got = losses(straight), losses(tmp_path)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]  # no step twice
  assert [got[s] for s in range(1, 7)] == [ref[s] for s in range(1, 7)]
  jax.tree.map(np.testing.assert_array_equal, params_at(tmp_path, 6), params_at(straight, 6))


def test_sigterm_saves_and_exits_cleanly(tmp_path, static_records):
  cmd = [sys.executable, "-m", "tests.pretrain_driver", str(tmp_path),
         str(static_records / "*.tfrecord"), "--set", "training.total_steps=100000",
         "--set", "training.checkpoint_every_steps=100000"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                          cwd=REPO)
  for line in proc.stdout:
    if line.startswith("step 5/"):
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  result = json.loads(out.split("RESULT ", 1)[1])
  assert 5 <= result["step"] < 100000
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints", str(result["step"])))
  assert os.path.isdir(os.path.join(tmp_path, "data_positions", str(result["step"])))


def test_corrupt_latest_checkpoint_falls_back(tmp_path, static_records, straight):
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  state_dir = workdir / "checkpoints" / "6" / "state"
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  proc = driver(workdir, static_records)
  assert "falling back" in proc.stderr
  assert os.listdir(workdir / "corrupt_checkpoints")
  # Resumed from step 3: steps 4..6 repeat the straight run exactly, and replace its rows.
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  redo = [r["train/loss"] for r in rows if r["step"] in (4, 5, 6) and "train/loss" in r]
  ref = losses(straight)
  assert redo == [ref[4], ref[5], ref[6]]
  jax.tree.map(np.testing.assert_array_equal, params_at(workdir, 6), params_at(straight, 6))


def test_truncated_data_position_falls_back(tmp_path, static_records, straight):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  position = workdir / "data_positions" / "6"
  data = next(position.glob("data_position_00000.data-*"))
  data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
  proc = driver(workdir, static_records)
  assert "falling back" in proc.stderr and "data_position_00000" in proc.stderr
  # Resumed exactly from step 3, its reader position intact.
  jax.tree.map(np.testing.assert_array_equal, params_at(workdir, 6), params_at(straight, 6))


def driver_command_without_root_override(cmd):
  """`cmd` as it must run for a read-only directory to stop its writes: root overrides file modes
  (CAP_DAC_OVERRIDE), so as root it runs without that capability where capsh exists (elsewhere the
  driver refuses the writes itself, see pretrain_driver.make_read_only)."""
  import shlex  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  if os.geteuid() != 0 or shutil.which("capsh") is None:
    return cmd
  return ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", shlex.join(cmd)]


def test_unwritable_checkpoint_directory_stops_the_run_promptly(tmp_path, static_records,
                                                                straight):
  cmd = [sys.executable, "-m", "tests.pretrain_driver", str(tmp_path),
         str(static_records / "*.tfrecord"), "--read_only_after=3"]
  try:
    proc = subprocess.run(driver_command_without_root_override(cmd), capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=240)
  finally:
    os.chmod(tmp_path / "checkpoints", 0o755)
  assert proc.returncode not in (0, None), proc.stdout
  assert "cannot write checkpoint step 6" in proc.stderr, proc.stderr[-3000:]
  assert "PermissionError" in proc.stderr and "step 3, is kept" in proc.stderr
  assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5, 6]
  # The last good checkpoint is intact: it restores, and equals the straight run's step 3.
  jax.tree.map(np.testing.assert_array_equal, params_at(tmp_path, 3), params_at(straight, 3))
  assert not os.path.exists(tmp_path / "checkpoints" / "6")


def test_resume_with_other_reader_settings_restarts_the_readers(tmp_path, static_records):
  driver(tmp_path, static_records, "--set", "training.total_steps=3")
  readers = tmp_path / "data_positions" / "3" / "readers.json"
  settings = json.loads(readers.read_text())
  assert (settings["process_count"], settings["batch_size_per_host"]) == (1, 8)
  readers.write_text(json.dumps(dict(settings, process_count=2)))  # as if saved by 2 hosts
  proc = driver(tmp_path, static_records, "--set", "training.total_steps=4")
  assert "(process_count 2 -> 1)" in proc.stderr and "readers restart" in proc.stderr
  # A larger batch: the saved position is for batches of 8 (restoring it fails in tf.data).
  proc = driver(tmp_path, static_records, "--set", "training.total_steps=5",
                "--set", "training.global_batch_size=16")
  assert "(batch_size_per_host 8 -> 16)" in proc.stderr
  assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5]


def test_warm_start_from_another_run(tmp_path, static_records, straight):
  # lr(0) = 0, so one step leaves the warm-started parameters unchanged.
  driver(tmp_path, static_records, "--set", f'init_from.path="{straight}"',
         "--set", "training.total_steps=2", "--set", "training.checkpoint_every_steps=1")
  jax.tree.map(np.testing.assert_array_equal, params_at(tmp_path, 1), params_at(straight, 6))


def test_warm_start_skips_an_unreadable_latest_checkpoint(tmp_path, straight):
  import shutil  # pylint: disable=g-import-not-at-top
  from albert_jax.train import warm_start  # pylint: disable=g-import-not-at-top
  source = tmp_path / "source"
  shutil.copytree(straight, source)
  for root, _, files in os.walk(source / "checkpoints" / "6" / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  init_from = warm_start.default_config()
  init_from.path = str(source)
  _, params = warm_start.read_source(init_from)
  jax.tree.map(np.testing.assert_array_equal, params, params_at(straight, 3))


def test_a_failed_evaluation_keeps_the_steps_checkpoint(tmp_path, static_records):
  proc = driver(tmp_path, static_records, "--fail_eval", "--set", "training.eval_every_steps=3",
                check=False)
  assert proc.returncode != 0 and "evaluation failed" in proc.stderr
  assert os.path.isdir(tmp_path / "checkpoints" / "3")  # saved before the evaluation ran
  # A final evaluation that failed is made when the finished run is launched again.
  final = tmp_path / "final"
  proc = driver(final, static_records, "--fail_eval", "--set", "training.eval_every_steps=100",
                check=False)
  assert proc.returncode != 0 and os.path.isdir(final / "checkpoints" / "6")
  eval_files = json.dumps(str(static_records / "*.tfrecord"))
  proc = driver(final, static_records, "--set", f"data.eval_files={eval_files}",
                "--set", "training.eval_every_steps=100")
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert result["step"] == 6 and "mlm_accuracy" in result["eval"]


def test_nonfinite_losses_stop_the_run(tmp_path, static_records):
  proc = driver(tmp_path, static_records, "--set", "optimizer.learning_rate=1e30",
                "--set", "optimizer.weight_decay=0.0", "--set", "training.total_steps=20",
                "--set", "training.max_nonfinite_steps=2", check=False)
  assert proc.returncode != 0
  assert "non-finite" in proc.stderr and "training.max_nonfinite_steps" in proc.stderr


def test_nonfinite_streak_between_log_steps_stops_the_run(tmp_path, static_records):
  # Steps 2-4 are non-finite and step 5 is fine again; logs only at 6: the streak is still seen.
  proc = driver(tmp_path, static_records, "--nan_steps=2,3,4", "--set", "training.total_steps=8",
                "--set", "training.log_every_steps=6", "--set", "training.checkpoint_every_steps=6",
                "--set", "training.max_nonfinite_steps=3", check=False)
  assert proc.returncode != 0
  assert "3 consecutive steps up to step 4" in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / "checkpoints" / "6")


def test_demo_config_through_main(tmp_path):
  corpus = os.path.join(REPO, "data", "corpus")
  cmd = [sys.executable, "-m", "albert_jax.main", "--config=configs/demo.py",
         f"--workdir={tmp_path}", "--config.training.total_steps=4",
         f"--config.data.corpus={corpus}/tutorial.txt",
         f"--config.data.eval_corpus={corpus}/faq.txt",
         "--config.training.log_every_steps=2", "--config.training.eval_every_steps=4",
         "--config.training.checkpoint_every_steps=4", "--config.data.spm_vocab_size=1000",
         "--config.model.vocab_size=1000", "--config.optimizer.warmup_steps=1",
         # Smaller batches and data: this test is about the entry point, not the learning.
         "--config.data.dupe_factor=1", "--config.training.global_batch_size=8",
         "--config.training.eval_batch_size=8", "--config.training.eval_max_batches=2"]
  start = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  assert "final eval: MLM accuracy" in proc.stdout and "step 4/4" in proc.stdout
  # The input-blind baselines of the same eval batches, beside the model's accuracies.
  final = next(l for l in proc.stdout.splitlines() if l.startswith("final eval:"))
  assert re.fullmatch(r"final eval: MLM accuracy \d+\.\d% \(unigram baseline \d+\.\d%\), "
                      r"SOP accuracy \d+\.\d% \(majority \d+\.\d%\)", final), final
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r for r in rows if "eval/mlm_accuracy" in r]
  assert evals and all(0 < r["eval/mlm_unigram_baseline"] < 1
                       and 0.5 <= r["eval/sop_majority_baseline"] <= 1 for r in evals)
  assert "mlm_unigram_baseline" in proc.stdout  # in the eval log lines too
  assert os.path.isdir(tmp_path / "checkpoints" / "4")
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))
  assert time.time() - start < 300

  # The Quickstart's next step: the workdir exported to Hugging Face, as it is, loads in
  # transformers and computes what the run's own parameters do.
  transformers = pytest.importorskip("transformers")
  from tests.test_hf_parity import hf_outputs, inputs, our_outputs  # pylint: disable=g-import-not-at-top
  from albert_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  out = tmp_path / "hf"
  proc = subprocess.run([sys.executable, "-m", "albert_jax.convert", f"--checkpoint={tmp_path}",
                         f"--out_hf={out}"], capture_output=True, text=True, env=ENV, cwd=REPO)
  assert proc.returncode == 0 and "wrote Hugging Face AlbertForPreTraining" in proc.stdout, (
      proc.stderr)
  hf, info = transformers.AlbertForPreTraining.from_pretrained(
      str(out), output_loading_info=True, attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  config = ModelConfig.from_any(json.load(open(tmp_path / "model_config.json")))
  assert config.vocab_size == 1000 and config.hidden_size == 128  # the demo's, as overridden
  ids, mask, types = inputs(seed=4, vocab=config.vocab_size)
  ours = our_outputs(config, params_at(tmp_path, 4), ids, mask, types)
  ref = hf_outputs(hf.eval(), ids, mask, types)
  for key in ("sequence_output", "mlm_logits", "sop_logits"):
    np.testing.assert_allclose(ours[key], ref[key], atol=1e-4, rtol=0, err_msg=key)
