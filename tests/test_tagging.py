"""Sequence labelling: the conlleval entity metric on hand-computed cases, first-piece label
alignment and the stride split + merge on hand-made sentences, the CoNLL / CoNLL-U readers, and
fine-tuning end to end from tfds mock data and from CoNLL-U files."""

import ml_collections
import numpy as np
import pytest

from albert_jax.train import finetune
from albert_jax.tasks import seqeval as sm
from albert_jax import tasks as tasks_lib
from albert_jax.tasks import tagging
from tests import test_finetune

NER = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def load_config(arg, spm_model, **overrides):
  return test_finetune.load_config("finetune_tagging", arg, spm_model, **overrides)


# ----------------------------------------------------------------------------------------------
# Metric.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tags,entities", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["I-PER", "I-PER", "O"], [("PER", 0, 1)]),                  # I- without B- starts one
    (["O", "I-LOC"], [("LOC", 1, 1)]),
    (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),        # a type change splits
    (["I-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),  # IOB1 adjacent entities
    (["B-PER", "I-PER", "B-PER"], [("PER", 0, 1), ("PER", 2, 2)]),
    (["S-LOC", "B-PER", "E-PER", "I-PER"], [("LOC", 0, 0), ("PER", 1, 2), ("PER", 3, 3)]),
    (["O", "O"], []),
])
def test_entities_follow_conlleval_rules(tags, entities):
  assert sm.get_entities(tags) == entities


def test_entity_scores_hand_computed():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "I-ORG", "I-ORG", "O", "O"]]
  # gold: PER(0-1) LOC(3) | ORG(0-2) MISC(4); predicted: PER(0-1) ORG(3) | ORG(0-2) (I- opens it)
  s = sm.entity_scores(gold, pred)
  assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 4)
  assert s["f1"] == pytest.approx(4 / 7)
  assert (s["precision_PER"], s["recall_PER"], s["f1_PER"]) == (1.0, 1.0, 1.0)
  assert (s["precision_ORG"], s["recall_ORG"]) == (0.5, 1.0)
  assert s["f1_ORG"] == pytest.approx(2 / 3)
  assert (s["precision_LOC"], s["recall_LOC"], s["f1_LOC"]) == (0.0, 0.0, 0.0)
  assert s["f1_MISC"] == 0.0
  assert s["accuracy"] == pytest.approx(6 / 9)
  assert sm.token_accuracy([["A", "B"]], [["A", "C"]]) == 0.5


def test_metric_rejects_bad_input():
  with pytest.raises(ValueError, match="tag 'PER' is not 'O' or"):
    sm.get_entities(["PER"])
  with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
    sm.entity_scores([["O", "O"]], [["O"]])


# ----------------------------------------------------------------------------------------------
# Alignment, windows and merge (a tokenizer with hand-checkable pieces: 3 characters each).
# ----------------------------------------------------------------------------------------------


class ThreeCharTokenizer:
  pad_id, unk_id, cls_id, sep_id = 0, 1, 2, 3

  def encode_batch(self, words):
    return [[10 + len(w[i:i + 3]) for i in range(0, len(w.strip()), 3)] for w in words]


def test_first_piece_alignment():
  # EU | rej ect s | Ger man | cal l ; "  " has no piece: it gets <unk>.
  ex = tagging.Example("s", ("EU", "rejects", "German", "  ", "call"), (3, 0, 7, 0, 0))
  arrays, metas, stats = tagging.featurize([ex], ThreeCharTokenizer(), 16, 8)
  assert arrays["input_ids"][0].tolist() == [2, 12, 13, 13, 11, 13, 13, 1, 13, 11, 3] + [0] * 5
  assert arrays["label"][0].tolist() == [-1, 3, 0, -1, -1, 7, -1, 0, 0, -1, -1] + [-1] * 5
  assert arrays["input_mask"][0].sum() == 11 and not arrays["segment_ids"].any()
  assert metas[0].word_indices.tolist() == [0, 1, 2, 3, 4]
  assert metas[0].positions.tolist() == [1, 2, 5, 7, 8]
  assert stats == {"examples": 1, "words": 5, "empty_words": 1, "split_sentences": 0, "rows": 1}


def test_stride_split_reads_every_word_once():
  # 8 pieces, windows of 4 every 2: [0-3] [2-5] [4-7]; first pieces at 0, 1, 4, 6.
  ex = tagging.Example("s", ("EU", "rejects", "German", "call"), (3, 0, 7, 0))
  arrays, metas, stats = tagging.featurize([ex], ThreeCharTokenizer(), 6, 2)
  assert stats["rows"] == 3 and stats["split_sentences"] == 1
  # Training labels: every first piece inside a window.
  assert arrays["label"].tolist() == [[-1, 3, 0, -1, -1, -1], [-1, -1, -1, 7, -1, -1],
                                      [-1, 7, -1, 0, -1, -1]]
  # Reading: each word from its max-context window (German: centred in window 1, not 2).
  assert [(m.word_indices.tolist(), m.positions.tolist()) for m in metas] == [
      ([0, 1], [1, 2]), ([2], [3]), ([3], [3])]
  row_of = tagging.merge([4], metas, np.repeat(np.arange(3)[:, None], 6, 1))
  assert row_of == [[0, 0, 1, 2]]


def _split_with_logits(examples, max_len, stride, predicted_labels):
  """A Split and the logits of a model that predicts `predicted_labels` (per word)."""
  arrays, metas, _ = tagging.featurize(examples, ThreeCharTokenizer(), max_len, stride)
  logits = np.zeros(arrays["input_ids"].shape + (len(NER),), np.float32)
  for row, meta in enumerate(metas):
    for w, p in zip(meta.word_indices, meta.positions):
      logits[row, p, predicted_labels[meta.example_index][w]] = 1.0
  split = tasks_lib.Split("dev", arrays, (examples, metas), True, {})
  return split, logits, metas


def test_entity_cut_by_the_split_is_scored_whole():
  task = ml_collections.ConfigDict({"labels": NER, "scoring": "entity"})
  # Joh n | van | Dij k | arr ive d: the PER entity's words are read from windows 0, 0 and 1.
  ex = tagging.Example("s", ("John", "van", "Dijk", "arrived"), (1, 2, 2, 0))
  split, logits, metas = _split_with_logits([ex], 6, 2, [[1, 2, 2, 0]])
  assert tagging.merge([4], metas, np.repeat(np.arange(3)[:, None], 6, 1)) == [[0, 0, 1, 2]]
  metrics, predicted = tagging.evaluate(task, split, {"logits": logits})
  assert predicted == [[1, 2, 2, 0]]
  assert metrics["f1"] == 1.0 and metrics["recall_PER"] == 1.0
  assert tagging.metric_names(task, split) == set(metrics)
  # I- tags without a B- (IOB1 style) still form the one entity.
  split, logits, _ = _split_with_logits([ex], 6, 2, [[2, 2, 2, 0]])
  assert tagging.evaluate(task, split, {"logits": logits})[0]["f1"] == 1.0
  # A B- in the second window breaks it in two: both predicted entities are wrong.
  split, logits, _ = _split_with_logits([ex], 6, 2, [[1, 2, 1, 0]])
  metrics = tagging.evaluate(task, split, {"logits": logits})[0]
  assert (metrics["precision"], metrics["recall"], metrics["accuracy"]) == (0.0, 0.0, 0.75)


def test_real_tokenizer_alignment(spm_model):
  from albert_jax.data import tokenization
  tok = tokenization.SentencePieceTokenizer(spm_model)
  words = ("Gustave", "Eiffel", "designed", "it", "\u0301")  # the last one normalizes to nothing
  arrays, metas, stats = tagging.featurize([tagging.Example("s", words, (1, 2, 0, 0, 0))], tok,
                                           64, 32)
  pieces = tok.convert_ids_to_tokens(arrays["input_ids"][0][arrays["label"][0] >= 0])
  assert all(p.startswith("\u2581") or p == "<unk>" for p in pieces) and len(pieces) == 5
  assert stats["empty_words"] == 1 and metas[0].word_indices.tolist() == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------
# Readers.
# ----------------------------------------------------------------------------------------------


def test_read_conll_and_conllu(tmp_path):
  conll = tmp_path / "train.txt"
  conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                   "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
  examples = tagging.read_file(str(tagging.find_split_file(str(tmp_path), "train")), NER)
  assert [(e.words, e.labels) for e in examples] == [(("EU", "rejects"), (3, 0)),
                                                     (("Peter", "Blackburn"), (1, 2))]
  (tmp_path / "en-ud-dev.conllu").write_text(
      "# text = I don't\n1\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n"
      "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n2\tdo\tdo\tAUX\t_\t_\t1\taux\t_\t_\n"
      "3\tn't\tnot\tPART\t_\t_\t1\tadv\t_\t_\n3.1\tx\tx\tX\t_\t_\t_\t_\t_\t_\n")
  upos = ("AUX", "PART", "PRON", "X")
  examples = tagging.read_file(tagging.find_split_file(str(tmp_path), "dev"), upos)
  assert [(e.words, e.labels) for e in examples] == [(("I", "do", "n't"), (2, 0, 1))]
  (tmp_path / "test.txt").write_text("Unlabelled\nwords\n")
  assert tagging.read_file(str(tmp_path / "test.txt"), NER)[0].labels is None


def test_readers_name_the_file_line_and_field(tmp_path):
  bad = tmp_path / "train.txt"
  bad.write_text("EU B-ORG\nrejects B-FOO\n")
  with pytest.raises(ValueError, match=r"train.txt:2: tag 'B-FOO' is not in config field "
                                       r"'task.labels'"):
    tagging.read_file(str(bad), NER)
  (tmp_path / "x-dev.conllu").write_text("1\tI\tI\tPRON\n")
  with pytest.raises(ValueError, match=r"x-dev.conllu:1: a CoNLL-U line needs 10"):
    tagging.read_file(str(tmp_path / "x-dev.conllu"), ("PRON",))
  with pytest.raises(FileNotFoundError, match=r"no file for split 'test'.*'task.data_dir'"):
    tagging.find_split_file(str(tmp_path), "test")
  task = ml_collections.ConfigDict({"labels": ("O", "PER"), "scoring": "entity"})
  with pytest.raises(ValueError, match="tag 'PER' is not 'O' or"):
    tagging.labels(task)


# ----------------------------------------------------------------------------------------------
# End to end.
# ----------------------------------------------------------------------------------------------


def _mock_tfds(label_key, num_labels):
  """A tfds `as_dataset` giving sentences whose tokens and tags agree in length."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  words = np.array(["the", "city", "of", "paris", "john", "smith", "visited", "reuters", "."],
                   dtype=object)

  def as_dataset(self, split, **kwargs):
    del self, kwargs
    rng = np.random.default_rng(len(str(split)))

    def examples():
      for _ in range(16):
        n = int(rng.integers(1, 30))
        yield {"tokens": rng.choice(words, n), label_key: rng.integers(0, num_labels, n)}
    return tf.data.Dataset.from_generator(examples, output_signature={
        "tokens": tf.TensorSpec([None], tf.string), label_key: tf.TensorSpec([None], tf.int64)})
  return as_dataset


def test_conll2003_from_tfds_end_to_end(tmp_path, spm_model):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config("task=conll2003,runlocal", spm_model, task__source="tfds",
                       training__total_steps=2, training__eval_every_steps=2,
                       optimizer__warmup_steps=1)
  with tfds.testing.mock_data(as_dataset_fn=_mock_tfds("ner", len(NER))):
    result = finetune.run(config, str(tmp_path))
  metrics = result["best"]["metrics"]
  assert result["metric"] == "dev/f1" and result["task"] == "conll2003"
  assert {"dev/precision", "dev/recall", "dev/f1", "dev/accuracy"} <= set(metrics)
  assert {"test/f1", "test/accuracy"} <= set(result["predict"]["test"])
  assert result["data"]["dev"]["split_sentences"] > 0  # the 32-piece windows were exercised
  lines = (tmp_path / "outputs" / "test_predictions.conll").read_text().split("\n\n")
  sentences = [s.splitlines() for s in lines if s.strip()]
  assert len(sentences) == 16 and all(len(line.split()) == 3 for s in sentences for line in s)
  assert sum(map(len, sentences)) == result["data"]["test"]["words"]
  # The default mock draws tokens and tags of unrelated lengths: refused clearly.
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(ValueError, match=r"tfds conll2003 train example 0: \d+ tokens but "
                                         r"\d+ 'ner' tags"):
      tagging.read_examples(config.task, "train")


@pytest.mark.parametrize("name", ["universal_dependencies/en_ewt", "xtreme_pos/xtreme_pos_en"])
def test_pos_tfds_sources(name, spm_model):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config("task=en_ewt", spm_model, task__tfds_name=name)
  with tfds.testing.mock_data(as_dataset_fn=_mock_tfds("upos", 18)):
    examples = tagging.read_examples(config.task, "dev")
  assert len(examples) == 16 and all(len(e.words) == len(e.labels) for e in examples)
  assert max(max(e.labels) for e in examples) < len(config.task.labels)


def test_pos_from_conllu_files_learns(tmp_path, spm_model):
  config = load_config("task=en_ewt,runlocal", spm_model, training__total_steps=40,
                       training__eval_every_steps=40)
  result = finetune.run(config, str(tmp_path))
  assert result["metric"] == "dev/accuracy"
  assert set(result["best"]["metrics"]) == {"dev/accuracy"}
  assert result["best"]["value"] > 0.6, result["history"]  # majority tag (NOUN) is ~25%
  assert result["data"]["train"]["examples"] == 100
  assert (tmp_path / "best" / "task.json").exists()
