"""RACE readers (official folder, tfds), the "_" rule and the official truncation."""

import json
import pathlib

import ml_collections
import numpy as np
import pytest

from albert_jax.data import tokenization
from albert_jax.tasks import race

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "race"


@pytest.fixture(scope="module")
def tok(spm_model):
  return tokenization.SentencePieceTokenizer(spm_model)


MAX_LEN = 48  # data.max_seq_length


def task_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      family="race", source="files", data_dir=str(FIXTURES), tfds_data_dir="",
      levels="middle,high", max_qa_length=16, max_train_examples=0,
      max_eval_examples=0))
  c.update(overrides)
  return c


ARTICLE = {"id": "high9.txt", "article": "Tom  lives in Paris.",
           "questions": ["Tom lives in _ .", "Where does Tom live?"],
           "options": [["Rome", "Paris", "Oslo", "Bern"], ["Rome", "Paris", "Oslo", "Bern"]],
           "answers": ["B", "B"]}


def test_underscore_rule(tok):
  first, second = race.examples_from_article(ARTICLE, "high", tok, "x")
  assert first.endings[1] == "tom lives in paris ."  # "_" replaced by the option
  assert second.endings[0] == "where does tom live? rome"  # otherwise question + " " + option
  assert first.context == "tom lives in paris."
  assert (first.label, first.level, first.question_index) == (1, "high", 0)


def test_read_official_folder(tok):
  train = race.read_examples(task_config(), "train", tok)
  assert len(train) == 24 and {e.level for e in train} == {"middle", "high"}
  high = race.read_examples(task_config(levels="high"), "dev", tok)
  assert len(high) == 6 and {e.level for e in high} == {"high"}
  # The parent of RACE/ and RACE/ itself both work.
  assert len(race.read_examples(task_config(data_dir=str(FIXTURES / "RACE")), "test", tok)) == 12


def test_featurize_truncation(tok):
  long = dict(ARTICLE, article=" ".join(["Tom lives in Paris with his sister."] * 20),
              questions=["What " + "very " * 30 + "_ ?"], answers=["A"],
              options=[["Rome", "Paris", "Oslo", "Bern"]])
  (ex,) = race.examples_from_article(long, "middle", tok, "x")
  arrays, truncated = race.featurize([ex], tok, 48, 16)
  assert arrays["input_ids"].shape == (1, 4, 48) and truncated == 1
  context = tok.encode(ex.context)
  for c in range(4):
    qa = tok.encode(ex.endings[c])[-16:]   # the LAST max_qa_length pieces
    keep = 48 - 3 - len(qa)                # the article is cut from its end
    ids = [tok.cls_id] + context[:keep] + [tok.sep_id] + qa + [tok.sep_id]
    assert arrays["input_ids"][0, c].tolist() == ids
    assert arrays["segment_ids"][0, c].tolist() == [0] * (keep + 2) + [1] * (len(qa) + 1)
    assert arrays["input_mask"][0, c].all()
  short, truncated = race.featurize(race.examples_from_article(ARTICLE, "high", tok, "x"), tok,
                                    48, 16)
  assert truncated == 0 and short["label"].tolist() == [1, 1]
  assert not short["input_ids"][:, :, -1].any()  # padded with 0
  with pytest.raises(ValueError, match="task.max_qa_length"):
    race.featurize([ex], tok, 16, 16)


def test_malformed_articles_fail_clearly(tmp_path, tok):
  folder = tmp_path / "RACE" / "train" / "middle"
  folder.mkdir(parents=True)
  bad = dict(ARTICLE, options=[["Rome", "Paris"], ARTICLE["options"][1]])
  (folder / "1.txt").write_text(json.dumps(bad) + "\n")
  with pytest.raises(ValueError, match=r"1.txt:1: question 0 has 2 options, RACE needs 4"):
    race.read_files(str(tmp_path), "train", ["middle"], tok)
  (folder / "1.txt").write_text(json.dumps(dict(ARTICLE, answers=["B", "E"])) + "\n")
  with pytest.raises(ValueError, match=r"question 1 has answer 'E'"):
    race.read_files(str(tmp_path), "train", ["middle"], tok)
  (folder / "1.txt").write_text("{broken\n")
  with pytest.raises(ValueError, match=r"1.txt:1: not a JSON article"):
    race.read_files(str(tmp_path), "train", ["middle"], tok)
  with pytest.raises(FileNotFoundError, match=r"no .txt files in .*high"):
    race.read_files(str(tmp_path), "train", ["high"], tok)
  with pytest.raises(ValueError, match="task.levels"):
    race.read_examples(task_config(levels="college"), "train", tok)


def test_tfds_source_and_scoring(tok, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def as_dataset(self, split, **kwargs):
    del split, kwargs
    row = {"example_id": ARTICLE["id"], "article": ARTICLE["article"],
           "questions": ARTICLE["questions"], "options": ARTICLE["options"],
           "answers": ARTICLE["answers"]}
    return tf.data.Dataset.from_generator(lambda: iter([row]),
                                          output_types=self.info.features.dtype,
                                          output_shapes=self.info.features.shape)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    split = race.load_split(task_config(source="tfds"), tok, "test", False, MAX_LEN)
  assert [e.level for e in split.meta] == ["middle", "middle", "high", "high"]
  assert split.meta[0].example_id == "high9.txt"
  logits = np.array([[0, 3, 0, 0], [2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float32)
  metrics, preds = race.evaluate(task_config(), split, {"logits": logits})
  assert metrics == {"accuracy": 0.5, "accuracy_middle": 0.5, "accuracy_high": 0.5}
  assert race.metric_names(task_config(), split) == set(metrics)
  (path,) = race.write_outputs(task_config(), split, preds, str(tmp_path))
  first = json.loads(open(path).readline())
  assert (first["prediction"], first["label"], first["question_index"]) == ("B", "B", 0)
