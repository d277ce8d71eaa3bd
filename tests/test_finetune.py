"""Fine-tuning end to end on tiny data (8 fake devices): every task family, a run that learns,
resume, warm starts, outputs, and clear failures on bad input."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from albert_jax import config_utils
from albert_jax.interop import convert
from albert_jax.train import finetune
from albert_jax.train import metrics as metrics_lib
from albert_jax.model import config as model_config
from albert_jax.tasks import metrics as task_metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 4000  # the session SentencePiece fixture's size


def load_config(name, arg, spm_model, **overrides):
  """configs/<name>.py:arg for the session tokenizer; overrides as section__field=value."""
  c = config_utils.load_sibling(str(REPO / "configs" / "x.py"), name).get_config(arg)
  c.data.spm_model = spm_model
  c.model.vocab_size = VOCAB
  for key, value in overrides.items():
    section, field = key.split("__")
    c[section][field] = value
  return c


def read_tsv(path):
  return [line.split("\t") for line in open(path, encoding="utf-8").read().splitlines()]


def test_glue_learns_resumes_and_warm_starts(tmp_path, spm_model):
  """One run (kept in a single test so that parallel workers never repeat it)."""
  config = load_config("finetune_glue", "task=sst2,runlocal", spm_model,
                       training__total_steps=60, training__eval_every_steps=30)
  workdir = str(tmp_path / "sst2")
  result = finetune.run(config, workdir)
  dev = read_tsv(REPO / "tests/fixtures/glue/SST-2/dev.tsv")[1:]
  labels = [int(r[1]) for r in dev]
  majority = max(labels.count(0), labels.count(1)) / len(labels)
  assert result["metric"] == "validation/accuracy"
  assert result["best"]["value"] >= majority + 0.25, result["history"]
  assert [h["step"] for h in result["history"]] == [30, 60]
  assert result["head_init"] == "fresh" and result["data"]["train"]["examples"] == 200
  submission = read_tsv(os.path.join(workdir, "outputs", "SST-2.tsv"))
  assert submission[0] == ["index", "prediction"] and len(submission) == 11
  assert {r[1] for r in submission[1:]} <= {"0", "1"}
  dev_preds = read_tsv(os.path.join(workdir, "outputs", "validation_predictions.tsv"))
  accuracy = np.mean([p == l for _, p, l in dev_preds[1:]])
  assert accuracy == pytest.approx(result["best"]["value"])  # the best step's predictions
  saved = json.load(open(os.path.join(workdir, "metrics.json")))
  assert saved["best"] == result["best"]
  assert json.load(open(os.path.join(workdir, "eval_history.json")))["history"] == saved["history"]
  assert json.load(open(os.path.join(workdir, "best", "best_step.json")))["step"] == saved[
      "best"]["step"]
  assert "| sst2 | tiny |" in task_metrics.markdown_table([saved])

  first = result
  again = finetune.run(config, workdir)  # finished: restores, trains nothing, same best
  assert again["best"] == first["best"] and again["history"] == first["history"]
  warm = load_config("finetune_glue", "task=sst2,runlocal", spm_model, training__total_steps=2,
                     training__eval_every_steps=2, optimizer__warmup_steps=0,
                     optimizer__learning_rate=1e-6)
  warm.init_from.path = os.path.join(workdir, "best")
  result = finetune.run(warm, str(tmp_path / "warm"))
  assert result["head_init"] == "source"
  assert result["best"]["value"] >= first["best"]["value"] - 0.05


def test_the_shared_loop_compiles_ahead_logs_throughput_and_saves_before_evaluating(
    tmp_path, spm_model, capsys, monkeypatch):
  """Fine-tuning runs pretraining's loop: the memory line of the step compiled ahead of time,
  throughput in every train row, and the step's checkpoint saved before its evaluation (which
  here fails; the relaunched finished run then evaluates it)."""
  config = load_config("finetune_glue", "task=sst2,runlocal", spm_model, training__total_steps=4,
                       training__eval_every_steps=4, training__log_every_steps=2,
                       optimizer__warmup_steps=1)
  workdir = tmp_path / "run"

  def failing_evaluate(*args, **kwargs):
    raise RuntimeError("evaluation failed (test)")

  monkeypatch.setattr(finetune, "evaluate", failing_evaluate)
  with pytest.raises(RuntimeError, match="evaluation failed"):
    finetune.run(config, str(workdir))
  out = capsys.readouterr().out
  assert out.count("train step memory per device: arguments") == 1, out
  assert "step 2/4" in out and "steps/s" in out and "tok/s" in out
  assert os.path.isdir(workdir / "checkpoints" / "4")  # saved before the evaluation ran
  assert not (workdir / "eval_history.json").exists()

  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4]
  batch, seq = config.training.global_batch_size, config.data.max_seq_length
  flops = batch * metrics_lib.finetuning_flops_per_example(
      model_config.ModelConfig.from_any(config.model), seq)
  for row in rows:
    speed = row["train/steps_per_sec"]
    assert speed > 0 and row["train/tokens_per_sec"] == pytest.approx(speed * batch * seq)
    assert row["train/tflops_per_device"] * 1e12 == pytest.approx(
        speed * flops / jax.device_count())

  monkeypatch.undo()
  result = finetune.run(config, str(workdir))  # restores step 4, trains nothing, evaluates it
  assert [h["step"] for h in result["history"]] == [4] and result["best"]["step"] == 4
  assert "train step memory" not in capsys.readouterr().out  # nothing left to compile
  assert os.path.exists(workdir / "outputs" / "SST-2.tsv")


def test_stsb_from_hugging_face_checkpoint(tmp_path, spm_model):
  # A pretrained model as distributed (Hugging Face AlbertForPreTraining directory), with an
  # architecture of its own.
  cfg = model_config.ModelConfig.from_any(dict(model_config.preset("tiny").to_dict(),
                                               vocab_size=VOCAB, hidden_size=48,
                                               intermediate_size=96))
  convert.save_hf(cfg, convert.init_params(cfg), str(tmp_path / "pretrained"))
  config = load_config("finetune_glue", "task=stsb,runlocal", spm_model,
                       training__total_steps=8, training__eval_every_steps=8)
  config.init_from.path = str(tmp_path / "pretrained")
  result = finetune.run(config, str(tmp_path / "run"))
  assert result["head_init"] == "fresh"
  assert result["config"]["model"]["hidden_size"] == 48  # architecture from the checkpoint
  assert result["config"]["model"]["hidden_dropout_prob"] == 0.0  # dropout from the recipe
  assert set(result["best"]["metrics"]) == {"validation/pearson", "validation/spearman",
                                            "validation/mse"}
  rows = read_tsv(tmp_path / "run" / "outputs" / "STS-B.tsv")
  assert len(rows) == 7 and all(float(r[1]) == round(float(r[1]), 3) for r in rows[1:])

  # The same checkpoint with another vocabulary than the tokenizer: refused before training.
  small = model_config.ModelConfig.from_any(dict(cfg.to_config_dict(), vocab_size=3000))
  convert.save_checkpoint(small, convert.init_params(small), str(tmp_path / "other_vocab"))
  config.init_from.path = str(tmp_path / "other_vocab")
  with pytest.raises(ValueError, match=r"vocabulary mismatch.*4000 pieces.*other_vocab.*3000"):
    finetune.run(config, str(tmp_path / "bad"))


def test_mnli_from_tfds(tmp_path, spm_model):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config("finetune_glue", "task=mnli,runlocal", spm_model, task__source="tfds",
                       training__total_steps=4, training__eval_every_steps=4,
                       optimizer__warmup_steps=1)
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    result = finetune.run(config, str(tmp_path))
  assert {"validation_matched/accuracy", "validation_mismatched/accuracy"} <= set(
      result["best"]["metrics"])
  for name in ("MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"):  # AX: the diagnostic set, tfds glue/ax
    rows = read_tsv(tmp_path / "outputs" / name)
    assert len(rows) == 25 and {r[1] for r in rows[1:]} <= {"entailment", "neutral",
                                                            "contradiction"}


def test_mnli_files_predicts_the_diagnostic_set(tmp_path, spm_model):
  config = load_config("finetune_glue", "task=mnli,runlocal", spm_model, training__total_steps=2,
                       training__eval_every_steps=2, optimizer__warmup_steps=1)
  assert config.task.predict_splits == "test_matched,test_mismatched,ax"
  result = finetune.run(config, str(tmp_path))
  # Read from diagnostic/diagnostic.tsv beside the MNLI folder (the official GLUE layout).
  diagnostic = read_tsv(REPO / "tests/fixtures/glue/diagnostic/diagnostic.tsv")
  rows = read_tsv(tmp_path / "outputs" / "AX.tsv")
  assert rows[0] == ["index", "prediction"]
  assert [r[0] for r in rows[1:]] == [r[0] for r in diagnostic[1:]]
  assert {r[1] for r in rows[1:]} <= {"entailment", "neutral", "contradiction"}
  assert result["predict"]["ax"] == {} and result["data"]["ax"]["examples"] == 8
  assert str(tmp_path / "outputs" / "AX.tsv") in result["outputs"]


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_squad(tmp_path, spm_model, version):
  config = load_config("finetune_squad", f"version={version},runlocal", spm_model,
                       training__total_steps=6, training__eval_every_steps=6)
  result = finetune.run(config, str(tmp_path))
  dev = json.load(open(REPO / f"tests/fixtures/squad/dev-v{version}.json"))["data"]
  ids = {qa["id"] for a in dev for p in a["paragraphs"] for qa in p["qas"]}
  predictions = json.load(open(tmp_path / "outputs" / "predictions.json"))
  assert set(predictions) == ids
  nbest = json.load(open(tmp_path / "outputs" / "nbest_predictions.json"))
  assert all(1 <= len(v) <= config.task.n_best_size for v in nbest.values())
  metrics = result["best"]["metrics"]
  if version == "1.1":
    assert set(metrics) == {"validation/exact_match", "validation/f1"}
  else:
    null_odds = json.load(open(tmp_path / "outputs" / "null_odds.json"))
    assert set(null_odds) == ids
    for key in ("HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh", "null_score_diff_threshold"):
      assert f"validation/{key}" in metrics
    threshold = metrics["validation/null_score_diff_threshold"]
    assert all((predictions[q] == "") == (null_odds[q] >= threshold) or not nbest[q][0]["text"]
               for q in ids)


def test_race(tmp_path, spm_model):
  config = load_config("finetune_race", "runlocal", spm_model, training__total_steps=6,
                       training__eval_every_steps=6)
  result = finetune.run(config, str(tmp_path))
  assert set(result["best"]["metrics"]) == {"dev/accuracy", "dev/accuracy_middle",
                                            "dev/accuracy_high"}
  assert set(result["predict"]["test"]) == {"test/accuracy", "test/accuracy_middle",
                                            "test/accuracy_high"}
  lines = open(tmp_path / "outputs" / "race_test_predictions.jsonl").read().splitlines()
  assert len(lines) == 12 and json.loads(lines[0])["prediction"] in "ABCD"


def test_bad_input_fails_clearly(tmp_path, spm_model):
  with pytest.raises(ValueError, match=r"task='squad'.*allowed"):
    load_config("finetune_glue", "task=squad", spm_model)
  config = load_config("finetune_glue", "task=rte,runlocal", spm_model)
  config.task.family = "translation"
  with pytest.raises(ValueError, match=r"'task.family'='translation'.*allowed"):
    finetune.run(config, str(tmp_path / "a"))
  bad = tmp_path / "RTE"
  bad.mkdir()
  (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tonly two\n")
  config = load_config("finetune_glue", "task=rte,runlocal", spm_model, task__data_dir=str(bad))
  with pytest.raises(ValueError, match=r"RTE/train.tsv:2: expected 4 tab-separated fields"):
    finetune.run(config, str(tmp_path / "b"))
  config = load_config("finetune_glue", "task=rte,runlocal", spm_model,
                       task__selection_metric="test/accuracy")
  with pytest.raises(ValueError, match=r"'task.selection_metric'='test/accuracy'"):
    finetune.run(config, str(tmp_path / "c"))
  config = load_config("finetune_glue", "task=stsb,runlocal", spm_model,
                       task__selection_metric="validation/mse")
  with pytest.raises(ValueError, match=r"'task.selection_metric'='validation/mse'.*lower is better"):
    finetune.run(config, str(tmp_path / "e"))
  config = load_config("finetune_glue", "task=stsb,runlocal", spm_model,
                       task__selection_metric="validation/accuracy")
  with pytest.raises(ValueError, match=r"no metric 'accuracy'; it reports \['mse', 'pearson', "
                                       r"'spearman'\]"):
    finetune.run(config, str(tmp_path / "f"))
  config = load_config("finetune_glue", "task=rte,runlocal", spm_model, data__spm_model="")
  config.data.spm_corpus = ""
  with pytest.raises(ValueError, match="'data.spm_model' is empty"):
    finetune.run(config, str(tmp_path / "d"))


def test_command_line_rejects_unknown_task(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "albert_jax.finetune", "--config=configs/finetune_glue.py:task=nope",
       f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode != 0
  assert "config argument task='nope'" in proc.stderr


def test_command_line_loads_a_config_by_path_from_any_directory(tmp_path):
  # The config file imports configs/common.py by its path, wherever the command runs.
  config = REPO / "configs" / "finetune_tagging.py"
  proc = subprocess.run(
      [sys.executable, "-m", "albert_jax.finetune", f"--config={config}:task=nope",
       f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO)))
  assert proc.returncode != 0
  assert "config argument task='nope'" in proc.stderr
  assert "common" not in proc.stderr
