"""`python -m albert_jax.predict`: fill-mask on a tiny pretrained model (from its workdir, a
converted checkpoint and a Hugging Face directory), every task mode on tiny fine-tuned models (with
the training featurization: predictions equal the fine-tuning run's own), and clear failures."""

import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from albert_jax.interop import convert
from albert_jax.train import finetune
from albert_jax.inference import predict
from albert_jax.train import pretrain

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
VOCAB = 4000  # the session SentencePiece fixture's size
SENTENCE = "the [MASK] returns a new list of [MASK] ."


def run(capsys, *argv):
  """(exit code, stdout, stderr) of the command line, in process."""
  capsys.readouterr()  # drop what came before (a fine-tuning run's progress)
  code = predict.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def jsonl(text):
  return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, static_records, spm_model):
  """A tiny model pretrained for a few steps: its workdir, its config file, a converted copy."""
  from tests.trainer_fixtures import tiny_config  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("pretrained")
  config = tiny_config(str(static_records / "*.tfrecord"), total_steps=4,
                       checkpoint_every_steps=4)
  pretrain.run(config, str(root / "workdir"))
  config_file = root / "tiny.py"
  config_file.write_text("from tests.trainer_fixtures import tiny_config\n\n\n"
                         "def get_config(arg=None):\n  return tiny_config()\n")
  loaded = predict.load(str(root / "workdir"), config=predict.load_config_file(str(config_file)),
                        spm_model=spm_model)
  convert.save_checkpoint(loaded.model_config, loaded.params, str(root / "checkpoint"))
  convert.save_hf(loaded.model_config, loaded.params, str(root / "hf"))
  return {"workdir": root / "workdir", "config": config_file, "checkpoint": root / "checkpoint",
          "hf": root / "hf"}


def finetuned(tmp_path_factory, spm_model, name, arg, steps=2):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.data.spm_model = spm_model
  config.model.vocab_size = VOCAB
  config.training.total_steps = steps
  config.training.eval_every_steps = steps
  config.optimizer.warmup_steps = 1
  workdir = tmp_path_factory.mktemp(name)
  finetune.run(config, str(workdir))
  return workdir


@pytest.fixture(scope="module")
def rte(tmp_path_factory, spm_model):
  return finetuned(tmp_path_factory, spm_model, "finetune_glue", "task=rte,runlocal")


@pytest.fixture(scope="module")
def ner(tmp_path_factory, spm_model):
  return finetuned(tmp_path_factory, spm_model, "finetune_tagging", "task=conll2003,runlocal",
                   steps=20)


# ----------------------------------------------------------------------------------------------
# fill-mask.
# ----------------------------------------------------------------------------------------------


def test_fill_mask_returns_k_ranked_candidates_per_mask(capsys, pretrained, spm_model):
  code, out, err = run(capsys, "fill-mask", SENTENCE, "[MASK] is a function .",
                       "--checkpoint", pretrained["workdir"], "--config", pretrained["config"],
                       "--spm_model", spm_model, "--top_k", 4, "--format", "jsonl")
  assert code == 0, err
  results = jsonl(out)
  assert [len(r["masks"]) for r in results] == [2, 1]
  for r in results:
    assert "[MASK]" not in r["filled"]
    for m in r["masks"]:
      probs = [c["probability"] for c in m["candidates"]]
      assert [c["rank"] for c in m["candidates"]] == [1, 2, 3, 4]
      assert probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] <= 1
      assert all(c["word"] for c in m["candidates"])
  # The same model as an albert_jax checkpoint and as a Hugging Face directory.
  for source in ("checkpoint", "hf"):
    code, again, err = run(capsys, "fill-mask", SENTENCE, "[MASK] is a function .",
                           "--checkpoint", pretrained[source], "--spm_model", spm_model,
                           "--top_k", 4, "--format", "jsonl")
    assert code == 0, err
    for a, b in zip(results, jsonl(again)):
      for ma, mb in zip(a["masks"], b["masks"]):
        assert [c["id"] for c in ma["candidates"]] == [c["id"] for c in mb["candidates"]]
        np.testing.assert_allclose([c["probability"] for c in ma["candidates"]],
                                   [c["probability"] for c in mb["candidates"]], rtol=1e-4)
  code, text, _ = run(capsys, "fill-mask", SENTENCE, "--checkpoint", pretrained["checkpoint"],
                      "--spm_model", spm_model, "--top_k", 3)
  lines = text.splitlines()  # the text, then one line of candidates per mask
  assert len(lines) == 3 and lines[0] == SENTENCE and lines[1].startswith("  [MASK] 1: ")
  assert lines[2].count(" | ") == 2


# ----------------------------------------------------------------------------------------------
# Task modes.
# ----------------------------------------------------------------------------------------------


def test_classify_matches_the_fine_tuning_predictions(capsys, rte, tmp_path):
  dev = [line.split("\t") for line in
         (REPO / "tests/fixtures/glue/RTE/dev.tsv").read_text().splitlines()[1:]]
  pairs = tmp_path / "pairs.jsonl"
  pairs.write_text("".join(json.dumps({"text_a": a, "text_b": b}) + "\n\n" for _, a, b, _ in dev))
  code, out, err = run(capsys, "classify", "--checkpoint", rte, "--input", pairs,
                       "--format", "jsonl", "--batch_size", 3)
  assert code == 0, err
  results = jsonl(out)
  expected = [line.split("\t")[1] for line in
              (rte / "outputs" / "validation_predictions.tsv").read_text().splitlines()[1:]]
  assert [r["label"] for r in results] == expected
  assert all(sum(r["probabilities"].values()) == pytest.approx(1.0) for r in results)
  code, text, _ = run(capsys, "classify", "--checkpoint", rte / "best", "the plot was great .")
  assert code == 0 and text.split("\t")[0] in ("entailment", "not_entailment")


def test_classify_reads_a_task_json_from_before_the_data_section(capsys, rte, tmp_path):
  # Runs before data.* kept the tokenizer and length settings in their task section.
  old = tmp_path / "best"
  shutil.copytree(rte / "best", old)
  saved = json.loads((old / "task.json").read_text())
  saved["task"].update(saved.pop("data"))
  (old / "task.json").write_text(json.dumps(saved))
  texts = ("the plot was great .", "a dull film .")
  outputs = [run(capsys, "classify", "--checkpoint", path, *texts, "--format", "jsonl")
             for path in (rte / "best", old)]
  assert outputs[0][0] == outputs[1][0] == 0
  assert jsonl(outputs[1][1]) == jsonl(outputs[0][1])


def test_tag_matches_the_fine_tuning_predictions(capsys, ner, tmp_path):
  blocks = (ner / "outputs" / "dev_predictions.conll").read_text().strip().split("\n\n")
  sentences = [[line.split() for line in block.splitlines()] for block in blocks]
  text = tmp_path / "dev.txt"
  text.write_text("".join(" ".join(w for w, _, _ in s) + "\n" for s in sentences))
  code, out, err = run(capsys, "tag", "--checkpoint", ner, "--input", text, "--format", "jsonl")
  assert code == 0, err
  results = jsonl(out)
  assert [r["tags"] for r in results] == [[p for _, _, p in s] for s in sentences]
  assert any(len(r["words"]) > 20 for r in results)  # longer than one 32-piece window
  for r in results:
    for e in r["entities"]:
      assert e["text"] == " ".join(r["words"][e["start"]:e["end"] + 1])
  code, out, _ = run(capsys, "tag", "--checkpoint", ner, "Anna visited Oslo .")
  assert code == 0 and [t.rsplit("/", 1)[0] for t in out.split()] == ["Anna", "visited", "Oslo",
                                                                       "."]


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_qa(capsys, tmp_path_factory, spm_model, version):
  workdir = finetuned(tmp_path_factory, spm_model, "finetune_squad", f"version={version},runlocal")
  context = ("Paris is the capital of France. The famous tower of Paris was completed in 1889 and "
             "was designed by Gustave Eiffel. ") * 4  # longer than one 64-piece window
  questions = [{"question": "When was the tower completed?", "context": context},
               {"question": "Who designed the tower?", "context": context}]
  code, out, err = run(capsys, "qa", *map(json.dumps, questions), "--checkpoint", workdir,
                       "--format", "jsonl")
  assert code == 0, err
  results = jsonl(out)
  assert len(results) == 2
  for r in results:
    assert (r["answer"] in context or r["answer"] == "empty") and len(r["nbest"]) >= 1
    if version == "2.0":
      best = json.loads((workdir / "best" / "best_step.json").read_text())["metrics"]
      assert r["null_threshold"] == best["validation/null_score_diff_threshold"]
      assert r["has_answer"] == (r["answer"] != "")
  if version == "2.0":  # every null score beats this threshold: no answer
    code, out, _ = run(capsys, "qa", json.dumps(questions[0]), "--checkpoint", workdir,
                       "--null_threshold=-1e9")
    assert code == 0 and out == "<no answer>\n"


def test_choice(capsys, tmp_path_factory, spm_model):
  workdir = finetuned(tmp_path_factory, spm_model, "finetune_race", "runlocal")
  question = {"article": "Tom lives in Paris. He walks to school with his sister.",
              "question": "Tom lives in _ .", "options": ["Tokyo", "Paris", "Rome", "Oslo"]}
  code, out, err = run(capsys, "choice", json.dumps(question), "--checkpoint", workdir,
                       "--format", "jsonl")
  assert code == 0, err
  (result,) = jsonl(out)
  assert result["answer"] in "ABCD" and result["option"] == question["options"][
      "ABCD".index(result["answer"])]
  assert sum(result["probabilities"]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# Failures.
# ----------------------------------------------------------------------------------------------


def test_bad_input_fails_clearly(capsys, monkeypatch, pretrained, rte, ner, spm_model):
  pre = ["--checkpoint", pretrained["checkpoint"], "--spm_model", spm_model]
  cases = [
      (["fill-mask", "no mask here", *pre], r"argument 1: no \[MASK\] in the text"),
      (["fill-mask", "", *pre], r"argument 1: empty or missing 'text'"),
      (["fill-mask", "word " * 200 + "[MASK]", *pre],
       r"argument 1: \d+ pieces .* exceed the model's maximum length 128 \(model config "
       r"'max_position_embeddings'\)"),
      (["qa", "just text", "--checkpoint", rte], r"`qa` needs a JSON object"),
      (["qa", '{"question": " ", "context": "x"}', "--checkpoint", rte],
       r"empty or missing 'question'"),
      (["classify", "fine .", "--checkpoint", ner],
       r"was fine-tuned for tagging \(conll2003\); use `predict tag`, not `predict classify`"),
      (["fill-mask", "a [MASK] .", "--checkpoint", rte], r"fine-tuned for glue.*pretraining"),
      (["tag", "a b", *pre], r"is a pretraining checkpoint: `tag` needs a model fine-tuned on a "
                             r"tagging task"),
      (["classify", "great " * 70, "--checkpoint", rte],
       r"argument 1: \d+ pieces .* exceed the model's maximum length 64 \(the task's "
       r"max_seq_length\); shorten the text or pass --truncate"),
      (["tag", "a", "--checkpoint", "/nonexistent"], r"--checkpoint '/nonexistent' does not"),
  ]
  for argv, message in cases:
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: "), (argv, err)
    assert re.search(message, err), (message, err)
  code, out, _ = run(capsys, "classify", "great " * 70, "--truncate", "--checkpoint", rte)
  assert code == 0 and out.strip()
  monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
  code, _, err = run(capsys, "tag", "--checkpoint", ner)
  assert code == 2 and "no examples in stdin" in err


def test_command_line_reads_stdin(ner):
  proc = subprocess.run([sys.executable, "-m", "albert_jax.predict", "tag", f"--checkpoint={ner}"],
                        input="Anna visited Oslo .\n\nTom works for Siemens .\n", text=True,
                        capture_output=True, cwd=REPO, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert len(lines) == 2 and lines[1].split()[0].startswith("Tom/")
