"""GLUE readers (official TSVs and tfds), featurization and output files."""

import os
import pathlib

import ml_collections
import numpy as np
import pytest

from albert_jax.data import tokenization
from albert_jax.tasks import glue

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "glue"
DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
        "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


MAX_LEN = 32  # data.max_seq_length


def task_config(name, **overrides):
  c = ml_collections.ConfigDict(dict(
      family="glue", name=name, source="files", data_dir=str(FIXTURES / DIRS[name]),
      tfds_data_dir="", max_train_examples=0, max_eval_examples=0))
  c.update(overrides)
  return c


@pytest.mark.parametrize("name", sorted(DIRS))
def test_every_task_reads_official_tsvs(name):
  c = task_config(name)
  spec = glue.get_task(name)
  train_split = "train"
  dev = "validation_matched" if name == "mnli" else "validation"
  test = "test_matched" if name == "mnli" else "test"
  train, evals, tests = (glue.read_examples(c, s) for s in (train_split, dev, test))
  assert len(train) == 24 if name != "sst2" else len(train) == 200  # QQP: 1 malformed row skipped
  assert all(e.label is not None for e in train + evals)
  assert all(e.label is None for e in tests)
  pair = len(spec.tfds_keys) == 2
  assert all((e.text_b is not None) == pair for e in train)
  if spec.labels is None:
    assert all(isinstance(e.label, float) for e in train)
  else:
    assert {e.label for e in train} == set(range(len(spec.labels))) or name == "cola"


def test_skipped_qqp_rows_are_counted_and_named(caplog):
  glue.read_examples(task_config("qqp"), "train")
  path = FIXTURES / "QQP" / "train.tsv"
  assert f"GLUE qqp: {path}: skipped 1 row(s) without the header's 6 tab-separated" in caplog.text


def test_label_mapping_follows_tfds_order():
  mnli = glue.read_examples(task_config("mnli"), "validation_matched")
  # Fixture rows cycle entailment, neutral, contradiction = tfds indices 0, 1, 2.
  assert [e.label for e in mnli[:3]] == [0, 1, 2]
  wnli = glue.read_examples(task_config("wnli"), "train")
  assert [e.label for e in wnli[:2]] == [0, 1]  # "0"/"1" are indices (1 = entailment)
  rte = glue.read_examples(task_config("rte"), "train")
  assert [e.label for e in rte[:2]] == [0, 1]  # entailment, not_entailment
  test = glue.read_examples(task_config("qqp"), "test")
  assert [e.guid for e in test[:2]] == ["0", "1"]  # the id column is written back


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  c = task_config("mnli", source="tfds")
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    dev = glue.read_examples(c, "validation_mismatched")
    stsb = glue.read_examples(task_config("stsb", source="tfds"), "train")
  assert len(dev) == 5 and all(0 <= e.label < 3 and e.text_b is not None for e in dev)
  assert len(stsb) == 5 and all(isinstance(e.label, float) for e in stsb)


def test_ax_diagnostic_split(tmp_path, spm_model):
  """The GLUE diagnostic set: split `ax` of MNLI, unlabelled, written as AX.tsv."""
  tok = tokenization.SentencePieceTokenizer(spm_model)
  c = task_config("mnli")  # the official layout: glue_data/MNLI beside glue_data/diagnostic
  assert glue.ax_file(c) == str(FIXTURES / "diagnostic" / "diagnostic.tsv")
  split = glue.load_split(c, tok, "ax", False, MAX_LEN)
  assert not split.has_labels and split.num_rows == 8
  assert [e.guid for e in split.meta] == [str(i) for i in range(8)]
  assert split.meta[0].text_b == "the film was not charming"
  assert glue.evaluate(c, split, {"logits": np.zeros((8, 3))}) == ({}, [0] * 8)
  (path,) = glue.write_outputs(c, split, [0, 1, 2, 0, 1, 2, 0, 1], str(tmp_path / "out"))
  assert os.path.basename(path) == "AX.tsv"
  rows = [line.split("\t") for line in open(path).read().splitlines()]
  assert rows[0] == ["index", "prediction"] and len(rows) == 9
  assert [r[1] for r in rows[1:4]] == ["entailment", "neutral", "contradiction"]
  # GLUE's AX.tsv (same columns) named by task.ax_file.
  (tmp_path / "AX.tsv").write_text("index\tsentence1\tsentence2\n7\ta b\tc d\n")
  (ex,) = glue.read_examples(task_config("mnli", ax_file=str(tmp_path / "AX.tsv")), "ax")
  assert (ex.guid, ex.text_a, ex.text_b, ex.label) == ("7", "a b", "c d", None)
  with pytest.raises(FileNotFoundError, match=r"nope.tsv not found \(config field 'task.ax_file'\)"):
    glue.read_examples(task_config("mnli", ax_file=str(tmp_path / "nope.tsv")), "ax")
  with pytest.raises(ValueError, match=r"split 'ax' .* 'task.name'='mnli'"):
    glue.read_examples(task_config("rte"), "ax")


def test_ax_from_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  read = []

  def as_dataset(builder, split, **kwargs):
    """glue/ax as tfds serves it: premise, hypothesis, idx and label -1 (unlabelled)."""
    del kwargs
    read.append((builder.name, builder.builder_config.name, str(split)))
    return tf.data.Dataset.from_tensor_slices({
        "premise": ["the film was charming", "no one came"],
        "hypothesis": ["the film was not charming", "someone came"],
        "idx": np.array([0, 1], np.int32), "label": np.array([-1, -1], np.int64)})

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
    ax = glue.read_examples(task_config("mnli", source="tfds"), "ax")
  assert read == [("glue", "ax", "test")]
  assert [(e.guid, e.text_a, e.text_b, e.label) for e in ax] == [
      ("0", "the film was charming", "the film was not charming", None),
      ("1", "no one came", "someone came", None)]


def test_truncate_pair_pops_from_the_longer_text():
  a, b = [1, 2, 3, 4, 5], [6, 7]
  glue.truncate_pair(a, b, 5)
  assert (a, b) == ([1, 2, 3], [6, 7])
  a, b = [1, 2, 3], [4, 5, 6]
  glue.truncate_pair(a, b, 4)  # equal: pop b; then a is longer: pop a
  assert (a, b) == ([1, 2], [4, 5])


def test_featurize_layout(spm_model):
  tok = tokenization.SentencePieceTokenizer(spm_model)
  a_text, b_text = "the film was wonderful", "a dull and boring mess"
  a, b = tok.encode(a_text), tok.encode(b_text)
  ex = [glue.Example("0", a_text, b_text, 1), glue.Example("1", a_text, None, 0)]
  arrays, truncated = glue.featurize(ex, tok, 32, regression=False)
  n = len(a) + len(b) + 3
  assert arrays["input_ids"][0, :n].tolist() == [tok.cls_id] + a + [tok.sep_id] + b + [tok.sep_id]
  assert arrays["segment_ids"][0, :n].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
  assert arrays["input_mask"][0].tolist() == [1] * n + [0] * (32 - n)
  assert not arrays["input_ids"][0, n:].any() and not arrays["segment_ids"][0, n:].any()
  assert arrays["input_ids"][1, :len(a) + 2].tolist() == [tok.cls_id] + a + [tok.sep_id]
  assert not arrays["segment_ids"][1].any()
  assert arrays["label"].tolist() == [1, 0] and truncated == 0
  # Truncation: total pieces capped at max_seq_length - 3 for pairs, - 2 for single texts.
  short, truncated = glue.featurize(ex, tok, 8, regression=False)
  assert short["input_mask"].sum(-1).tolist() == [8, min(8, len(a) + 2)] and truncated >= 1
  reg, _ = glue.featurize([glue.Example("0", a_text, b_text, 3.5)], tok, 16, regression=True)
  assert reg["label"].dtype == np.float32 and reg["label"][0] == 3.5


def test_malformed_files_fail_clearly(tmp_path):
  bad = tmp_path / "RTE"
  bad.mkdir()
  (bad / "train.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
  with pytest.raises(ValueError, match=r"train.tsv has no column\(s\) \['sentence2'\]"):
    glue.read_examples(task_config("rte", data_dir=str(bad)), "train")
  (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\n")
  with pytest.raises(ValueError, match=r"train.tsv:2: expected 4 tab-separated fields"):
    glue.read_examples(task_config("rte", data_dir=str(bad)), "train")
  (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
  with pytest.raises(ValueError, match=r"train.tsv:2: label 'maybe' is not one of"):
    glue.read_examples(task_config("rte", data_dir=str(bad)), "train")
  with pytest.raises(FileNotFoundError, match="dev.tsv not found"):
    glue.read_examples(task_config("rte", data_dir=str(bad)), "validation")
  with pytest.raises(ValueError, match="unknown GLUE task"):
    glue.get_task("squad")


def test_outputs(tmp_path, spm_model):
  tok = tokenization.SentencePieceTokenizer(spm_model)
  for name, split, preds, want_file, want in (
      ("mnli", "test_mismatched", [2, 0], "MNLI-mm.tsv", ["contradiction", "entailment"]),
      ("stsb", "test", [4.12345, 0.5], "STS-B.tsv", ["4.123", "0.500"]),
      ("cola", "test", [1, 0], "CoLA.tsv", ["1", "0"])):
    split_data = glue.load_split(task_config(name, max_eval_examples=2), tok, split, False,
                                 MAX_LEN)
    assert not split_data.has_labels
    metrics, _ = glue.evaluate(task_config(name), split_data, {"logits": np.zeros((2, 3))})
    assert metrics == {} and glue.metric_names(task_config(name), split_data) == set()
    (path,) = glue.write_outputs(task_config(name), split_data, preds, str(tmp_path))
    assert os.path.basename(path) == want_file
    rows = [line.split("\t") for line in open(path).read().splitlines()]
    assert rows[0] == ["index", "prediction"] and [r[1] for r in rows[1:]] == want
  dev = glue.load_split(task_config("mrpc"), tok, "validation", False, MAX_LEN)
  logits = np.stack([1 - dev.arrays["label"], dev.arrays["label"]], -1).astype(np.float32)
  metrics, preds = glue.evaluate(task_config("mrpc"), dev, {"logits": logits})
  assert metrics == {"accuracy": 1.0, "f1": 1.0}
  assert glue.metric_names(task_config("mrpc"), dev) == set(metrics)
  (path,) = glue.write_outputs(task_config("mrpc"), dev, preds, str(tmp_path))
  assert open(path).readline().strip() == "index\tprediction\tlabel"


def test_batching_is_a_function_of_the_step():
  from albert_jax import tasks  # pylint: disable=g-import-not-at-top
  arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
  epoch = [tasks.train_batch(arrays, s, 4, seed=3)["x"] for s in range(2)]  # 2 batches/epoch
  assert len(set(np.concatenate(epoch).tolist())) == 8  # no repeats within an epoch
  assert np.array_equal(tasks.train_batch(arrays, 1, 4, seed=3)["x"], epoch[1])  # resumable
  assert not np.array_equal(tasks.train_batch(arrays, 2, 4, seed=3)["x"], epoch[0])  # new epoch
  hosts = [tasks.train_batch(arrays, 1, 4, seed=3, host_rows=np.array(rows))["x"]
           for rows in ([0, 1], [2, 3])]
  assert np.array_equal(np.concatenate(hosts), epoch[1])
  batch = tasks.train_batch(arrays, 0, 4, seed=3)
  assert np.array_equal(batch["y"], batch["x"] * 2)
  with pytest.raises(ValueError, match="fewer than config field 'training.global_batch_size'"):
    tasks.train_batch(arrays, 0, 16, seed=0)
  evals = list(tasks.eval_batches(arrays, 4))
  assert [b["row"].tolist() for b in evals] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]]
  host1 = list(tasks.eval_batches(arrays, 4, host_rows=np.array([2, 3])))
  assert [b["row"].tolist() for b in host1] == [[2, 3], [6, 7], [-1, -1]]


def test_host_rows_follow_the_mesh():
  import jax  # pylint: disable=g-import-not-at-top
  from albert_jax.train import partitioning  # pylint: disable=g-import-not-at-top
  if jax.device_count() < 8:
    pytest.skip("needs the 8 fake devices of conftest.py")
  # One process holds every device: all rows, whatever the mesh (a tensor axis replicates them).
  for mesh in ({"data": -1}, {"data": 2, "fsdp": 2, "tensor": 2}):
    rows = partitioning.host_rows(partitioning.create_mesh(mesh), 16)
    assert rows.tolist() == list(range(16))


def test_stsb_test_split_from_tfds_is_unlabelled():
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def as_dataset(builder, split, **kwargs):
    """glue/stsb test as tfds serves it: label -1.0, which is also a possible score."""
    del builder, split, kwargs
    return tf.data.Dataset.from_tensor_slices({
        "sentence1": ["a man plays", "a dog runs"], "sentence2": ["a man sings", "a cat runs"],
        "idx": np.array([0, 1], np.int32), "label": np.array([-1.0, -1.0], np.float32)})

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
    test = glue.read_examples(task_config("stsb", source="tfds"), "test")
  assert [e.label for e in test] == [None, None]
