"""`python -m albert_jax.predict`: fill-mask, generate and score on a tiny pretrained model (from
its workdir, a converted checkpoint and a Hugging Face directory), every task mode on tiny
fine-tuned models (with the training featurization: predictions equal the fine-tuning run's own),
and clear failures."""

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
from albert_jax.inference import generate, loading, predict, score
from albert_jax.inference.mlm import MaskedLM, join_pieces
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


def usage_error(capsys, *argv):
  """stderr of a command line that ends in a usage error (exit status 2, raised in process)."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    predict.main([str(a) for a in argv])
  assert exit_info.value.code == 2
  return capsys.readouterr().err


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
  loaded = loading.load(str(root / "workdir"), config=loading.load_config_file(str(config_file)),
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
# generate and score (the masked LM).
# ----------------------------------------------------------------------------------------------

INFILL = "the [MASK*3] returns a new list of [MASK] ."
CONTINUE = {"prompt": "the function", "max_new_pieces": 4, "suffix": "."}


def kinds(pretrained, spm_model):
  """The --checkpoint arguments of each kind of the same pretrained model."""
  return {"workdir": ["--checkpoint", pretrained["workdir"], "--config", pretrained["config"],
                      "--spm_model", spm_model],
          **{k: ["--checkpoint", pretrained[k], "--spm_model", spm_model]
             for k in ("checkpoint", "hf")}}


def test_generate_infills_and_continues_as_the_api_does(capsys, pretrained, spm_model):
  args = kinds(pretrained, spm_model)
  code, out, err = run(capsys, "generate", INFILL, json.dumps(CONTINUE), *args["checkpoint"],
                       "--seed", 3, "--iterations", 3, "--top_k", 50, "--format", "jsonl")
  assert code == 0, err
  results = jsonl(out)
  assert [r["input"] for r in results] == [{"text": INFILL}, CONTINUE]
  lm = MaskedLM.from_loaded(loading.load(str(pretrained["checkpoint"]), spm_model=spm_model))
  expected = generate.infill(lm, [INFILL, "the function [MASK*4] ."],
                             generate.DecodeSettings(seed=3, iterations=3, top_k=50))
  assert [{k: v for k, v in r.items() if k != "input"} for r in results] == [
      g.to_json() for g in expected]
  assert [[len(s["pieces"]) for s in r["slots"]] for r in results] == [[3, 1], [4]]
  for r in results:
    assert "[MASK]" not in r["text"] and r["text"] == join_pieces(r["pieces"])
    for s in r["slots"]:
      assert r["pieces"][s["position"]:s["position"] + len(s["pieces"])] == s["pieces"]
      assert all(0 < p <= 1 for p in s["probabilities"])
  assert results[1]["pieces"][:2] == ["▁the", "▁function"] and results[1]["pieces"][-1] == "."
  # --max_new_pieces makes plain inputs prompts; --suffix is their default suffix.
  code, flagged, err = run(capsys, "generate", "the function", *args["checkpoint"], "--seed", 3,
                           "--iterations", 3, "--top_k", 50, "--max_new_pieces", 4,
                           "--suffix", ".", "--format", "jsonl")
  assert code == 0, err
  [continued] = generate.continue_text(lm, ["the function"], 4, ["."],
                                       generate.DecodeSettings(seed=3, iterations=3, top_k=50))
  assert jsonl(flagged)[0]["slots"] == continued.to_json()["slots"]


def test_generate_is_the_same_on_every_checkpoint_kind(capsys, pretrained, spm_model):
  outputs = {}
  for kind, args in kinds(pretrained, spm_model).items():
    code, out, err = run(capsys, "generate", INFILL, *args, "--strategy", "gibbs", "--greedy",
                         "--iterations", 2, "--format", "jsonl")
    assert code == 0, (kind, err)
    outputs[kind] = jsonl(out)[0]
  for kind, result in outputs.items():
    assert [s["ids"] for s in result["slots"]] == [s["ids"] for s in outputs["workdir"]["slots"]]
    np.testing.assert_allclose([p for s in result["slots"] for p in s["probabilities"]],
                               [p for s in outputs["workdir"]["slots"] for p in
                                s["probabilities"]], rtol=1e-4, err_msg=kind)
  code, text, _ = run(capsys, "generate", INFILL, *kinds(pretrained, spm_model)["hf"],
                      "--strategy", "gibbs", "--greedy", "--iterations", 2)
  lines = text.splitlines()  # the completed text, then one line per slot
  slots = outputs["hf"]["slots"]
  assert code == 0 and lines[0] == outputs["hf"]["text"] and len(lines) == 3
  assert lines[1] == (f"  slot 1: {slots[0]['text']} (" + ", ".join(
      f"{piece} {p:.3f}" for piece, p in zip(slots[0]["pieces"], slots[0]["probabilities"])) + ")")


def test_score_per_piece_and_corpus_pseudo_perplexity(capsys, pretrained, spm_model, tmp_path):
  texts = ["the function returns a new list .", "a dictionary maps keys to values .", "hello"]
  lines = tmp_path / "sentences.txt"
  lines.write_text(texts[0] + "\n\n" + json.dumps({"text": texts[1]}) + "\n" + texts[2] + "\n")
  outputs = {}
  for kind, args in kinds(pretrained, spm_model).items():
    code, out, err = run(capsys, "score", "--input", lines, *args, "--batch_size", 4,
                         "--format", "jsonl")
    assert code == 0, (kind, err)
    outputs[kind] = (jsonl(out), err)
  results, err = outputs["checkpoint"]
  lm = MaskedLM.from_loaded(loading.load(str(pretrained["checkpoint"]), spm_model=spm_model))
  expected = score.score(lm, texts, batch_size=4)
  assert [r["input"] for r in results] == [{"text": t} for t in texts]
  for r, e in zip(results, expected):
    assert r["text"] == e.text and r["pieces"] == e.pieces == lm.tokenizer.tokenize(e.text)
    np.testing.assert_allclose(r["log_probs"], e.log_probs, rtol=1e-5, atol=1e-6)
    assert r["pll"] == pytest.approx(sum(r["log_probs"]))
    assert r["pseudo_perplexity"] == pytest.approx(np.exp(-r["pll"] / len(r["pieces"])))
  corpus = score.corpus_pseudo_perplexity(expected)
  pieces = sum(len(e.pieces) for e in expected)
  assert err.strip() == (f"corpus pseudo-perplexity {corpus:.4f} over 3 texts ({pieces} pieces, "
                         f"PLL {sum(e.pll for e in expected):.4f})")
  for kind, (other, _) in outputs.items():
    np.testing.assert_allclose([r["pll"] for r in other], [r["pll"] for r in results],
                               rtol=1e-4, err_msg=kind)
  code, text, err = run(capsys, "score", *texts, *kinds(pretrained, spm_model)["hf"])
  fields = [line.split("\t") for line in text.splitlines()]
  assert code == 0 and [f[3] for f in fields] == texts and err.startswith("corpus ")
  assert [int(f[2]) for f in fields] == [len(e.pieces) for e in expected]
  np.testing.assert_allclose([float(f[0]) for f in fields],
                             [e.pseudo_perplexity for e in expected], rtol=1e-3)


def test_generate_and_score_bad_input_fails_clearly(capsys, pretrained, rte, spm_model):
  pre = ["--checkpoint", pretrained["checkpoint"], "--spm_model", spm_model]
  cases = [
      (["generate", "no mask here", *pre],
       r"argument 1: no \[MASK\] slot in 'no mask here': .* or pass --max_new_pieces=N"),
      (["generate", "", *pre], r"argument 1: empty or missing 'text' \(or 'prompt'\)"),
      (["generate", '{"prompt": "  ", "max_new_pieces": 2}', *pre], r"empty or missing 'text'"),
      (["generate", "the [MASK*200] .", *pre],
       r"argument 1: \d+ pieces .* exceed the model's max_position_embeddings=128"),
      (["generate", "the", "--max_new_pieces", 130, *pre],
       r"argument 1: \d+ pieces .* exceed the model's max_position_embeddings=128"),
      (["generate", "a [MASK] .", "--suffix", "b", *pre], r"a suffix needs --max_new_pieces"),
      (["generate", '{"text": "a [MASK]", "label": 1}', *pre], r"unknown field\(s\) \['label'\]"),
      (["generate", '{"prompt": "a", "max_new_pieces": 0}', *pre],
       r"'max_new_pieces' must be an integer >= 1, got 0"),
      (["generate", "a [MASK] .", "--temperature", 0, *pre], r"temperature=0.0: must be > 0"),
      (["generate", "a [MASK] .", "--checkpoint", rte],
       r"is fine-tuned for glue \(no MLM head\): generation and scoring need a pretraining"),
      (["score", "a fine text .", "--checkpoint", rte], r"is fine-tuned for glue \(no MLM head\)"),
      (["score", " ", *pre], r"argument 1: empty or missing 'text'"),
      (["score", "word " * 200, *pre],
       r"argument 1: \d+ pieces .* exceed the model's max_position_embeddings=128"),
  ]
  for argv, message in cases:
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, (argv, err)
    assert re.search(message, err), (message, err)
  usage = [
      (["score", "a b", "--greedy", *pre], r"--greedy is a `generate` flag"),
      (["generate", "a [MASK]", "--greedy", "--top_p", 0.5, *pre], r"--top_p \(sampling\)"),
      (["generate", "a [MASK]", "--order", "random", *pre], r"--order is a gibbs setting"),
      (["generate", "a [MASK]", "--max_new_pieces", -1, *pre], r"--max_new_pieces=-1"),
      (["fill-mask", "a [MASK]", "--top_k", 0, *pre], r"--top_k=0: must be >= 1"),
  ]
  for argv, message in usage:
    err = usage_error(capsys, *argv)
    assert len(err.splitlines()) == 1 and re.search(message, err), (message, err)


def test_generate_command_line_reads_stdin_jsonl(pretrained, spm_model):
  proc = subprocess.run(
      [sys.executable, "-m", "albert_jax.predict", "generate", "--format=jsonl", "--greedy",
       f"--checkpoint={pretrained['checkpoint']}", f"--spm_model={spm_model}"],
      input=json.dumps(CONTINUE) + "\n\n" + INFILL + "\n", text=True, capture_output=True,
      cwd=REPO, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr
  results = jsonl(proc.stdout)
  assert [r["input"] for r in results] == [CONTINUE, {"text": INFILL}]
  assert [[len(s["ids"]) for s in r["slots"]] for r in results] == [[4], [3, 1]]


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


def test_text_preprocessing_from_the_run_or_the_flag(capsys, rte, tmp_path):
  """The tokenizer normalizes text as the checkpoint's run did (data.preprocessing), unless
  --preprocessing says otherwise; "huggingface" reads `` and '' as "."""
  assert loading.load(str(rte / "best")).tokenizer.preprocessing == "official"
  hf_run = tmp_path / "best"
  shutil.copytree(rte / "best", hf_run)
  saved = json.loads((hf_run / "task.json").read_text())
  saved["data"]["preprocessing"] = "huggingface"
  (hf_run / "task.json").write_text(json.dumps(saved))
  assert loading.load(str(hf_run)).tokenizer.preprocessing == "huggingface"
  assert loading.load(str(hf_run), text_options={"preprocessing": "official"}
                      ).tokenizer.preprocessing == "official"
  latex, plain = "he said ``great'' .", 'he said "great" .'
  _, hf_out, _ = run(capsys, "classify", "--checkpoint", rte / "best", latex, plain,
                     "--preprocessing", "huggingface", "--format", "jsonl")
  probabilities = lambda out: [r["probabilities"] for r in jsonl(out)]
  assert probabilities(hf_out)[0] == probabilities(hf_out)[1]
  _, recorded_out, _ = run(capsys, "classify", "--checkpoint", hf_run, latex, plain,
                           "--format", "jsonl")
  assert probabilities(recorded_out) == probabilities(hf_out)
  _, official_out, _ = run(capsys, "classify", "--checkpoint", rte / "best", latex, plain,
                           "--format", "jsonl")
  assert probabilities(official_out)[0] != probabilities(official_out)[1]  # other pieces


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
