"""demo_data.prepare: the workdir's data is reused only when it was made with the same settings."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

tf = pytest.importorskip("tensorflow")

from albert_jax import config_utils
from albert_jax.data import demo_data  # noqa: E402
from albert_jax.data import create_pretraining_data, pipeline, tokenization  # noqa: E402
from tests.data_fixtures import CORPUS, REPO  # noqa: E402


@pytest.fixture
def config():
  """The runlocal preset, shrunk: one small corpus file, a small vocabulary, short records."""
  c = config_utils.load_sibling(str(REPO / "configs" / "x.py"), "pretrain").get_config("runlocal")
  c.data.corpus = str(CORPUS / "tutorial.txt")
  c.data.eval_corpus = ""
  c.data.spm_vocab_size = 500
  c.data.max_seq_length = 64
  c.data.max_predictions_per_seq = 10
  return c


def _seq_length(files_pattern: str) -> int:
  first = pipeline.list_files(files_pattern)[0]
  example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(first).take(1))).numpy())
  return len(example.features.feature["input_ids"].int64_list.value)


def _mtimes(folder: pathlib.Path) -> dict[str, int]:
  return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _forbid_creation(monkeypatch) -> None:
  def fail(*args, **kwargs):
    raise AssertionError("prepare remade data made with the same settings")
  monkeypatch.setattr(create_pretraining_data, "main", fail)
  monkeypatch.setattr(tokenization, "train_model", fail)


def test_same_settings_reuse_the_data(tmp_path, config, monkeypatch, capsys):
  config.data.eval_corpus = str(CORPUS / "faq.txt")
  first = demo_data.prepare(config, str(tmp_path))
  assert _seq_length(first.data.train_files) == _seq_length(first.data.eval_files) == 64
  before = _mtimes(tmp_path / "data")
  capsys.readouterr()
  _forbid_creation(monkeypatch)
  # A resumed run passes a config equal to the first one (here a fresh copy, as after a restart).
  again = demo_data.prepare(type(config)(config.to_dict()), str(tmp_path))
  assert again.to_dict() == first.to_dict()
  assert _mtimes(tmp_path / "data") == before
  assert "recreating" not in capsys.readouterr().out


def test_changed_max_seq_length_recreates_the_records(tmp_path, config, capsys):
  config.data.max_seq_length = 128  # as in the report: a run with another length, then the preset
  demo_data.prepare(config, str(tmp_path))
  spm_mtime = (tmp_path / "data" / "spm.model").stat().st_mtime_ns
  capsys.readouterr()
  config.data.max_seq_length = 64
  prepared = demo_data.prepare(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "recreating the records in" in out and "data.max_seq_length 128 -> 64" in out
  assert "SentencePiece" not in out  # the model does not depend on the record length
  assert _seq_length(prepared.data.train_files) == 64
  assert (tmp_path / "data" / "spm.model").stat().st_mtime_ns == spm_mtime
  pipeline.check_record_file(pipeline.list_files(prepared.data.train_files)[0], 64,
                             config.data.max_predictions_per_seq, token_only=False)
  summary = json.loads((tmp_path / "data" / "train" / "summary.json").read_text())
  assert summary["settings"]["instance"]["max_seq_length"] == 64


def test_masking_mode_and_vocabulary_changes_recreate(tmp_path, config, capsys):
  demo_data.prepare(config, str(tmp_path))
  capsys.readouterr()
  config.data.dynamic_masking = True
  prepared = demo_data.prepare(config, str(tmp_path))
  assert "data.dynamic_masking False -> True" in capsys.readouterr().out
  first = pipeline.list_files(prepared.data.train_files)[0]
  pipeline.check_record_file(first, 64, 10, token_only=True)  # token-only records now

  config.data.spm_vocab_size = 400
  prepared = demo_data.prepare(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "recreating the SentencePiece model" in out and "data.spm_vocab_size 500 -> 400" in out
  assert "data.spm_model (other files" in out  # records of the old vocabulary are remade too
  assert tokenization.load_sentencepiece(prepared.data.spm_model).get_piece_size() == 400


def test_text_preprocessing_reaches_the_vocabulary_and_the_records(tmp_path, config, capsys):
  demo_data.prepare(config, str(tmp_path))
  capsys.readouterr()
  config.data.preprocessing = "huggingface"
  demo_data.prepare(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "recreating the SentencePiece model" in out
  assert "data.preprocessing 'official' -> 'huggingface'" in out
  summary = json.loads((tmp_path / "data" / "train" / "summary.json").read_text())
  assert summary["settings"]["preprocessing"] == "huggingface"
  config.data.preprocessing = "xlnet"
  with pytest.raises(ValueError, match=r"config field 'data.preprocessing'='xlnet': allowed"):
    demo_data.prepare(config, str(tmp_path))


def test_single_segment_negatives_reaches_the_generator(tmp_path, config, capsys):
  """The config field is the generator's flag: "skip" leaves no random-document pair, a change
  remakes the records, and a value the generator lacks is one error naming the field."""
  assert config.data.single_segment_negatives == "random_document"  # the official default
  demo_data.prepare(config, str(tmp_path))
  summary = json.loads((tmp_path / "data" / "train" / "summary.json").read_text())
  assert summary["instance_kinds"].get("random_document", 0) > 0
  capsys.readouterr()
  config.data.single_segment_negatives = "skip"
  demo_data.prepare(config, str(tmp_path))
  assert ("data.single_segment_negatives 'random_document' -> 'skip'"
          in capsys.readouterr().out)
  summary = json.loads((tmp_path / "data" / "train" / "summary.json").read_text())
  assert summary["settings"]["instance"]["single_segment_negatives"] == "skip"
  assert summary["instance_kinds"].get("random_document", 0) == 0
  config.data.single_segment_negatives = "nsp"
  with pytest.raises(ValueError, match=r"'data.single_segment_negatives'='nsp'; allowed: "
                                       r"random_document\|skip"):
    demo_data.prepare(config, str(tmp_path))


def test_data_without_a_settings_record_is_recreated(tmp_path, config, capsys):
  """Data made before the records were kept (or a run stopped before writing one) is remade."""
  demo_data.prepare(config, str(tmp_path))
  os.remove(tmp_path / "data" / "train" / demo_data.SETTINGS_FILE)
  capsys.readouterr()
  demo_data.prepare(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "recreating the records" in out and "no record of the settings" in out
  assert (tmp_path / "data" / "train" / demo_data.SETTINGS_FILE).exists()


def test_failed_creation_keeps_the_old_data_and_retries(tmp_path, config, monkeypatch):
  demo_data.prepare(config, str(tmp_path))
  config.data.dupe_factor = 2
  monkeypatch.setattr(create_pretraining_data, "main", lambda argv: 1)
  with pytest.raises(RuntimeError, match="data.corpus"):
    demo_data.prepare(config, str(tmp_path))
  summary = json.loads((tmp_path / "data" / "train" / "summary.json").read_text())
  assert summary["settings"]["dupe_factor"] == 1  # the old data is still there
  monkeypatch.undo()
  demo_data.prepare(config, str(tmp_path))
  summary = json.loads((tmp_path / "data" / "train" / "summary.json").read_text())
  assert summary["settings"]["dupe_factor"] == 2


def test_other_processes_wait_and_create_nothing(tmp_path, config, monkeypatch):
  monkeypatch.setattr(demo_data.jax, "process_index", lambda: 1)
  _forbid_creation(monkeypatch)
  config.data.spm_model = str(tmp_path / "missing.model")
  with pytest.raises(FileNotFoundError, match="data.spm_model"):  # not a wait at the barrier
    demo_data.prepare(config, str(tmp_path))
  config.data.spm_model = ""
  prepared = demo_data.prepare(config, str(tmp_path))
  assert not (tmp_path / "data").exists()
  assert prepared.data.train_files == str(tmp_path / "data" / "train" / "*.tfrecord")


def test_given_spm_model_is_used_and_a_missing_one_is_named(tmp_path, config, spm_model, capsys):
  config.data.spm_model = str(tmp_path / "missing.model")
  with pytest.raises(FileNotFoundError, match="data.spm_model"):
    demo_data.prepare(config, str(tmp_path))
  config.data.spm_model = spm_model
  prepared = demo_data.prepare(config, str(tmp_path))
  assert prepared.data.spm_model == spm_model and not (tmp_path / "data" / "spm.model").exists()
  capsys.readouterr()
  demo_data.prepare(config, str(tmp_path))
  assert "recreating" not in capsys.readouterr().out
