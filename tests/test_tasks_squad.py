"""SQuAD readers (official JSON, tfds), the official featurization (alignment, windows,
max context, labels) and n-best decoding v1/v2."""

import dataclasses
import json
import pathlib

import ml_collections
import numpy as np
import pytest

from albert_jax.tasks import squad_postprocess
from albert_jax import tasks as tasks_lib
from albert_jax.data import tokenization
from albert_jax.tasks import squad

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "squad"
CONTEXT = "Café  Müller opened in 1990, near the ``old'' bridge.\nIt closed in 2001."


@pytest.fixture(scope="module")
def tok(spm_model):
  return tokenization.SentencePieceTokenizer(spm_model)


MAX_LEN = 48  # data.max_seq_length


def task_config(version="1.1", **overrides):
  c = ml_collections.ConfigDict(dict(
      family="squad", version=version, source="files", data_dir=str(FIXTURES), tfds_data_dir="",
      doc_stride=16, max_query_length=12, n_best_size=20,
      max_answer_length=30, max_train_examples=0, max_eval_examples=0))
  c.update(overrides)
  return c


def test_read_official_json():
  train = squad.read_json(str(FIXTURES / "train-v1.1.json"), is_training=True)
  dev = squad.read_json(str(FIXTURES / "dev-v1.1.json"), is_training=False)
  assert len(train) == len(dev) == 18
  ex = train[0]
  assert ex.context[ex.start_char:ex.start_char + len(ex.answer_text)] == ex.answer_text
  assert len(dev[0].gold_answers) == 2  # dev questions keep every gold answer
  v2 = squad.read_json(str(FIXTURES / "train-v2.0.json"), is_training=True)
  impossible = [e for e in v2 if e.is_impossible]
  assert len(impossible) == 6 and all(e.start_char == -1 and not e.gold_answers
                                      for e in impossible)


def test_malformed_json_fails_clearly(tmp_path):
  path = tmp_path / "train-v1.1.json"
  path.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
  with pytest.raises(ValueError, match=r"data\[0\]\.paragraphs\[0\]: missing field 'context'"):
    squad.read_json(str(path), True)
  qa = {"id": "x1", "question": "q?", "answers": [{"text": "a", "answer_start": 0}] * 2}
  path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "a b", "qas": [qa]}]}]}))
  with pytest.raises(ValueError, match=r"id x1.*exactly 1 answer, got 2"):
    squad.read_json(str(path), True)
  qa["answers"] = [{"text": "zzz", "answer_start": 2}]
  path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "a b", "qas": [qa]}]}]}))
  with pytest.raises(ValueError, match=r"id x1.*does not lie inside"):
    squad.read_json(str(path), True)
  path.write_text("{not json")
  with pytest.raises(ValueError, match="is not valid JSON"):
    squad.read_json(str(path), True)


def test_alignment_maps_pieces_to_original_characters(tok):
  al = squad.align_paragraph(CONTEXT, tok)
  pieces = tok.tokenize(CONTEXT)
  assert len(al.tok_start_to_orig) == len(al.tok_end_to_orig) == len(pieces)
  normalize = lambda text: " ".join(tok.preprocess(text).split())
  for piece, s, e in zip(pieces, al.tok_start_to_orig, al.tok_end_to_orig):
    # A piece covers the original characters it came from (after the tokenizer's normalization:
    # accents stripped, lower case, whitespace collapsed, `` '' -> ").
    assert normalize(CONTEXT[s:e + 1]) == normalize(piece.replace(tokenization.SPIECE_UNDERLINE,
                                                                  " "))
  year = CONTEXT.index("1990")
  spans = [(s, e) for s, e in zip(al.tok_start_to_orig, al.tok_end_to_orig) if year <= e < year + 4]
  assert CONTEXT[spans[0][0]:spans[-1][1] + 1].strip() == "1990"
  assert squad.align_paragraph("", tok) is None


def test_windows_and_max_context():
  assert squad.doc_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
  assert squad.doc_spans(3, 4, 3) == [(0, 3)]
  spans = squad.doc_spans(10, 4, 3)
  # Position 4: only span 1 (3..6) holds it. Position 6: spans 1 and 2 tie (0 + 0.04): the first.
  assert [squad.is_max_context(spans, k, 4) for k in range(3)] == [False, True, False]
  assert [squad.is_max_context(spans, k, 6) for k in range(3)] == [False, True, False]
  assert [squad.is_max_context(spans, k, 8) for k in range(3)] == [False, False, True]


def test_featurize_training_windows(tok):
  ex = squad.Example("q", "When did it open?", CONTEXT, "1990", CONTEXT.index("1990"), False,
                     ("1990",))
  query = tok.encode(ex.question)
  arrays, meta, stats = squad.featurize([ex], tok, 24, 4, 8, True)
  assert stats["examples"] == 1 and len(meta) == stats["positive"] + stats["negative"] > 1
  doc_offset = len(query) + 2
  for i, m in enumerate(meta):
    ids = arrays["input_ids"][i]
    window = len(m.tok_start_to_orig)
    assert m.doc_offset == doc_offset
    assert ids[:doc_offset].tolist() == [tok.cls_id] + query + [tok.sep_id]
    assert ids[doc_offset + window] == tok.sep_id
    assert arrays["segment_ids"][i].tolist() == (
        [0] * doc_offset + [1] * (window + 1) + [0] * (24 - doc_offset - window - 1))
    assert arrays["p_mask"][i].tolist() == (
        [0] + [1] * (len(query) + 1) + [0] * window + [1] * (24 - doc_offset - window))
    s, e = arrays["start_positions"][i], arrays["end_positions"][i]
    if arrays["is_impossible"][i]:
      assert s == e == 0  # windows without the answer point at [CLS]
    else:
      text = CONTEXT[m.tok_start_to_orig[s - doc_offset]:m.tok_end_to_orig[e - doc_offset] + 1]
      assert text.strip() == "1990"
  # Every paragraph piece has exactly one max-context window.
  assert sum(int(m.max_context.sum()) for m in meta) == len(tok.tokenize(CONTEXT))


def test_an_answer_start_at_other_text_is_counted_and_reported(tok, caplog):
  wrong = squad.Example("q", "When did it open?", CONTEXT, "1990", 0, False, ("1990",))
  right = dataclasses.replace(wrong, start_char=CONTEXT.index("1990"))
  _, meta, stats = squad.featurize([wrong, right], tok, 24, 4, 8, True)
  assert stats["answer_text_mismatch"] == 1 and meta  # trained on, as the official code does
  squad._report_skipped("SQuAD v1.1 train", stats)  # pylint: disable=protected-access
  assert ("SQuAD v1.1 train: 1 of 2 question(s) trained on as the official code does: the text "
          "at answer_start is not the answer's text") in caplog.text


def test_featurize_unanswerable_and_eval(tok):
  ex = squad.Example("q", "Who?", CONTEXT, "", -1, True, ())
  arrays, meta, _ = squad.featurize([ex], tok, 64, 16, 8, True)
  assert arrays["is_impossible"].tolist() == [1] * len(meta)
  assert not arrays["start_positions"].any() and not arrays["end_positions"].any()
  with pytest.raises(ValueError, match="leaves no room"):
    squad.featurize([ex], tok, 4, 2, 8, True)


def test_tfds_source_with_mock_data(tok):
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gold = json.load(open(FIXTURES / "dev-v2.0.json"))["data"]
  rows = [(p["context"], qa) for a in gold for p in a["paragraphs"] for qa in p["qas"]]

  def as_dataset(self, split, **kwargs):
    del split, kwargs

    def gen():
      for context, qa in rows:
        answers = {"text": [a["text"] for a in qa["answers"]],
                   "answer_start": [a["answer_start"] for a in qa["answers"]]}
        yield {"id": qa["id"], "title": "t", "context": context, "question": qa["question"],
               "answers": answers, "is_impossible": qa["is_impossible"],
               "plausible_answers": {"text": [], "answer_start": []}}
    return tf.data.Dataset.from_generator(gen, output_types=self.info.features.dtype,
                                          output_shapes=self.info.features.shape)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    split = squad.load_split(task_config("2.0", source="tfds"), tok, "validation", False,
                             MAX_LEN)
  examples, meta = split.meta
  assert len(examples) == len(rows) and len(meta) >= len(rows)
  assert sum(e.is_impossible for e in examples) == 6
  assert squad.metric_names(task_config("2.0"), split) == {
      f"{prefix}{name}" for prefix in ("", "HasAns_", "NoAns_")
      for name in ("exact", "f1", "total")} | {
      "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh", "null_score_diff_threshold"}


def _one_window(tok):
  ex = squad.Example("q1", "When did it open?", CONTEXT, "", -1, False, ("1990",))
  arrays, meta, _ = squad.featurize([ex], tok, 64, 32, 12, False)
  assert len(meta) == 1
  return ex, arrays, meta


def test_v1_decoding(tok):
  ex, arrays, meta = _one_window(tok)
  m = meta[0]
  al = squad.align_paragraph(CONTEXT, tok)
  year = CONTEXT.index("1990")
  first = next(i for i, e in enumerate(al.tok_end_to_orig) if e >= year)
  last = next(i for i, e in enumerate(al.tok_end_to_orig) if e >= year + 3)
  start, end = np.full((1, 64), -5.0), np.full((1, 64), -5.0)
  start[0, m.doc_offset + first], end[0, m.doc_offset + last] = 3.0, 2.0
  start[0, 1], end[0, 2] = 9.0, 9.0       # inside the question: never a valid span
  start[0, 40], end[0, 60] = 2.5, 2.5     # padding positions: outside the window
  preds, nbest = squad_postprocess.v1_predictions([ex], meta, start, end, 20, 30)
  assert preds == {"q1": "1990"}
  split = tasks_lib.Split("validation", arrays, ([ex], meta), True, {})
  metrics, _ = squad.evaluate(task_config(), split, {"start_logits": start, "end_logits": end})
  assert metrics == {"exact_match": 100.0, "f1": 100.0}
  assert squad.metric_names(task_config(), split) == set(metrics)
  assert nbest["q1"][0]["start_log_prob"] == 3.0 and nbest["q1"][0]["end_log_prob"] == 2.0
  assert len({n["text"] for n in nbest["q1"]}) == len(nbest["q1"])  # deduplicated by text
  assert sum(n["probability"] for n in nbest["q1"]) == pytest.approx(1.0)
  # max_answer_length 0 leaves nothing: the official "empty" nonce.
  preds, _ = squad_postprocess.v1_predictions([ex], meta, start, end, 20, 0)
  assert preds == {"q1": "empty"}


def test_v2_decoding(tok):
  ex, _, meta = _one_window(tok)
  m = meta[0]
  al = squad.align_paragraph(CONTEXT, tok)
  year = CONTEXT.index("2001")
  first = next(i for i, e in enumerate(al.tok_end_to_orig) if e >= year)
  last = len(al.tok_end_to_orig) - 2  # "2001" ends before the final "."
  outputs = {
      "start_top_log_probs": np.array([[-0.1, -0.5]]),
      "start_top_index": np.array([[1, m.doc_offset + first]]),   # 1 is in the question
      "end_top_log_probs": np.array([[[-0.1, -0.2], [-0.3, -0.4]]]),
      "end_top_index": np.array([[[2, 3], [m.doc_offset + last, m.doc_offset + first - 1]]]),
      "cls_logits": np.array([0.75]),
  }
  best, null, nbest = squad_postprocess.v2_predictions([ex], meta, outputs, 20, 30)
  assert best == {"q1": "2001"} and null == {"q1": 0.75}
  split = tasks_lib.Split("validation", {}, ([ex], meta), True, {})
  metrics, _ = squad.evaluate(task_config("2.0"), split, outputs)
  assert squad.metric_names(task_config("2.0"), split) == set(metrics)
  assert len(nbest["q1"]) == 1  # the end before the start is dropped
  best, null, _ = squad_postprocess.v2_predictions(
      [ex, squad.Example("q2", "?", "x", "", -1, False, ())], meta, outputs, 20, 30)
  assert best["q2"] == "" and null["q2"] > 1e5  # no window: the official nonce
