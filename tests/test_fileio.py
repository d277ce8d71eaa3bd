"""Fine-tuning files on a non-local file system: TensorFlow's `ram://` stands in for gs:// (both
are served by tf.io.gfile). Orbax does not accept ram://, so checkpoints are left to the local
end-to-end tests; everything else a run reads or writes is checked here."""

import json
import os
import pathlib
import uuid

import ml_collections
import numpy as np
import pytest

from albert_jax import fileio
from albert_jax.train import finetune_files
from albert_jax import tasks as tasks_lib
from albert_jax.data import tokenization
from albert_jax.tasks import glue
from albert_jax.tasks import race
from albert_jax.tasks import squad
from albert_jax.tasks import tagging

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
NER = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@pytest.fixture
def root():
  """A fresh ram:// directory (the file system lives as long as the process)."""
  return f"ram://test-{uuid.uuid4().hex}"


def upload(local: pathlib.Path, uri: str) -> str:
  """Copies a local file or folder tree to `uri`; returns `uri`."""
  if local.is_file():
    fileio.copy(str(local), uri)
    return uri
  for path in local.rglob("*"):
    if path.is_file():
      fileio.copy(str(path), f"{uri}/{path.relative_to(local).as_posix()}")
  return uri


def glue_task(data_dir, **overrides):
  c = ml_collections.ConfigDict(dict(
      family="glue", name="mnli", source="files", data_dir=data_dir, ax_file="",
      tfds_data_dir="", max_train_examples=0, max_eval_examples=0))
  c.update(overrides)
  return c


def test_helpers(root, tmp_path):
  assert fileio.absolute("gs://bucket/run") == "gs://bucket/run"  # never made "<cwd>/gs:/..."
  assert fileio.absolute("run") == os.path.join(os.getcwd(), "run")
  path = f"{root}/a/b/value.json"
  fileio.write_json(path, {"x": 1, "when": np.float32(2.5)})  # creates the folders
  assert fileio.read_json(path) == {"x": 1, "when": "2.5"}
  assert fileio.isdir(f"{root}/a/b") and fileio.isfile(path) and not fileio.isfile(f"{root}/a")
  first = fileio.fingerprint(path)
  fileio.write_text(path, '{"x": 22}')  # replaced, and no temporary file left beside it
  assert fileio.read_json(path) == {"x": 22} and fileio.listdir(f"{root}/a/b") == ["value.json"]
  assert fileio.fingerprint(path)["size"] != first["size"]
  assert first["path"] == path
  fileio.write_bytes(f"{root}/a/c.bin", b"\x00\x01")
  assert fileio.glob(f"{root}/a/*") == [f"{root}/a/b", f"{root}/a/c.bin"]
  local = tmp_path / "d" / "x.txt"
  fileio.write_text(str(local), "héllo\n")  # local paths go through the same calls
  assert local.read_text(encoding="utf-8") == "héllo\n"
  assert fileio.fingerprint(str(local))["mtime"] == pytest.approx(local.stat().st_mtime)


def test_task_inputs_from_the_bucket(root, spm_model):
  tok = tokenization.SentencePieceTokenizer(upload(pathlib.Path(spm_model), f"{root}/spm.model"))
  local_tok = tokenization.SentencePieceTokenizer(spm_model)
  assert tok.encode("the film was charming") == local_tok.encode("the film was charming")
  glue_dir = upload(FIXTURES / "glue", f"{root}/glue")
  bucket, local = glue_task(f"{glue_dir}/MNLI"), glue_task(str(FIXTURES / "glue" / "MNLI"))
  for split in ("train", "validation_matched", "test_mismatched", "ax"):
    assert glue.read_examples(bucket, split) == glue.read_examples(local, split), split
  assert glue.ax_file(bucket) == f"{glue_dir}/diagnostic/diagnostic.tsv"
  with pytest.raises(FileNotFoundError, match=r"ram://.*/dev.tsv not found"):
    glue.read_examples(glue_task(f"{glue_dir}/MNLI", name="rte"), "validation")

  squad_file = upload(FIXTURES / "squad" / "dev-v2.0.json", f"{root}/squad/dev-v2.0.json")
  assert squad.read_json(squad_file, False) == squad.read_json(
      str(FIXTURES / "squad" / "dev-v2.0.json"), False)
  race_dir = upload(FIXTURES / "race", f"{root}/race")  # data_dir/RACE/<split>/<level>/*.txt
  assert race.read_files(race_dir, "dev", ["middle", "high"], tok) == race.read_files(
      str(FIXTURES / "race"), "dev", ["middle", "high"], local_tok)
  conll_dir = upload(FIXTURES / "conll2003", f"{root}/conll2003")
  found = tagging.find_split_file(conll_dir, "dev")  # valid.txt, by the CoNLL-2003 alias
  assert found == f"{conll_dir}/valid.txt"
  assert tagging.read_file(found, NER) == tagging.read_file(
      str(FIXTURES / "conll2003" / "valid.txt"), NER)


def test_feature_cache_in_the_bucket(root, spm_model):
  spm = upload(pathlib.Path(spm_model), f"{root}/spm.model")
  data_dir = upload(FIXTURES / "glue" / "RTE", f"{root}/RTE")
  task = glue_task(data_dir, name="rte")
  data = ml_collections.ConfigDict(dict(spm_model=spm, max_seq_length=32))
  tok = tokenization.SentencePieceTokenizer(spm)
  cache = f"{root}/run/features"
  # Process > 0 (write_cache=False) featurizes but leaves the cache to process 0.
  built = tasks_lib.load_split(task, data, tok, "validation", False, cache,
                               write_cache=False)
  assert not fileio.exists(cache)
  built = tasks_lib.load_split(task, data, tok, "validation", False, cache)
  (name,) = fileio.listdir(cache)
  assert name.startswith("validation-") and name.endswith(".pkl")
  calls = []
  key = {"task": task.to_dict(), "data": data.to_dict(), "split": "validation",
         "is_training": False, "spm": fileio.fingerprint(spm)}
  cached = tasks_lib.cached_split(cache, key, lambda: calls.append(1))
  assert not calls and cached.meta == built.meta
  np.testing.assert_array_equal(cached.arrays["input_ids"], built.arrays["input_ids"])
  # Another tokenizer file (path, size or time) is another key: the features are built anew.
  fileio.write_text(f"{root}/other.model", "x")
  changed = dict(key, spm=fileio.fingerprint(f"{root}/other.model"))
  tasks_lib.cached_split(cache, changed, lambda: calls.append(1) or built)
  assert calls == [1] and len(fileio.listdir(cache)) == 2


def test_output_writers_write_to_the_bucket(root, spm_model):
  out = f"{root}/run/outputs"
  tok = tokenization.SentencePieceTokenizer(spm_model)
  mnli = glue_task(str(FIXTURES / "glue" / "MNLI"))
  ax = glue.load_split(mnli, tok, "ax", False, 32)
  (path,) = glue.write_outputs(mnli, ax, [0, 1, 2] * 2 + [0, 1], out)
  assert path == f"{out}/AX.tsv"
  assert fileio.read_text(path).splitlines()[:3] == ["index\tprediction", "0\tentailment",
                                                     "1\tneutral"]
  split = tasks_lib.Split("validation", {}, None, True, {})
  paths = squad.write_outputs(None, split, {"predictions": {"q1": "Paris é"},
                                            "null_odds": {"q1": -1.5}}, out)
  assert paths == [f"{out}/predictions.json", f"{out}/null_odds.json"]
  assert fileio.read_json(paths[0]) == {"q1": "Paris é"}
  example = race.Example("high1.txt", 0, "high", "ctx", ("a", "b", "c", "d"), 1)
  (path,) = race.write_outputs(None, tasks_lib.Split("test", {}, [example], True, {}),
                               [(1, [0.1, 0.7, 0.1, 0.1])], out)
  assert json.loads(fileio.read_text(path))["prediction"] == "B"
  sentence = tagging.Example("valid.txt:3", ("Lake", "Geneva"), (5, 6))
  task = ml_collections.ConfigDict(dict(labels=NER, scoring="entity"))
  (path,) = tagging.write_outputs(task, tasks_lib.Split("dev", {}, ([sentence], None), True, {}),
                                  [[5, 0]], out)
  assert fileio.read_text(path) == "Lake B-LOC B-LOC\nGeneva I-LOC O\n\n"
  assert fileio.listdir(out) == ["AX.tsv", "dev_predictions.conll", "null_odds.json",
                                 "predictions.json", "race_test_predictions.jsonl"]


def test_run_files_in_the_bucket(root):
  files = finetune_files.RunFiles(f"{root}/run")
  assert files.workdir == f"{root}/run" and fileio.isdir(files.workdir)
  assert files.read_history(10, "fresh") == ([], "fresh")
  history = [{"step": 5, "metrics": {"validation/accuracy": 0.5}},
             {"step": 10, "metrics": {"validation/accuracy": 0.75}}]
  files.write_history("validation/accuracy", "source", history)
  assert files.read_history(10, "fresh") == (history, "source")
  assert files.read_history(7, "fresh") == (history[:1], "source")  # resumed from step 7
  assert files.list_outputs() == []
  task = glue_task(str(FIXTURES / "glue" / "MNLI"))
  split = tasks_lib.Split("validation_matched", {}, [glue.Example("0", "a", "b", 1)], True, {})
  files.write_outputs(glue.write_outputs, task, split, [1])
  assert files.list_outputs() == [f"{root}/run/outputs/validation_matched_predictions.tsv"]
  files.write_metrics({"best": history[-1]})
  assert fileio.read_json(files.metrics_path) == {"best": history[-1]}


def test_tokenizer_trained_into_the_bucket(root, corpus_files):
  data = ml_collections.ConfigDict(dict(spm_corpus=",".join(corpus_files[:1])))
  path = tasks_lib.train_tokenizer(data, 300, f"{root}/run")
  assert path == f"{root}/run/spm.model"
  assert fileio.listdir(f"{root}/run") == ["spm.model", "spm.vocab"]
  assert tokenization.SentencePieceTokenizer(path).vocab_size == 300
  stamp = fileio.fingerprint(path)
  assert tasks_lib.train_tokenizer(data, 300, f"{root}/run") == path  # reused, not retrained
  assert fileio.fingerprint(path) == stamp
