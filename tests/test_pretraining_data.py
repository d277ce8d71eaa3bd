"""Pretraining-data creation: algorithm statistics, record format, reproducibility, bad input."""

from __future__ import annotations

import collections
import json
import os
import random

import numpy as np
import pytest

from albert_jax.data import create_pretraining_data as cpd
from albert_jax.data import masking, pretraining_data, records, sources, tokenization
from tests.data_fixtures import MAX_PREDICTIONS, SEQ_LEN, make_records

CLS, SEP, MASK, PAD = 2, 3, 4, 0


def _examples(folder) -> list[dict[str, np.ndarray]]:
  tf = pytest.importorskip("tensorflow")
  out = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".tfrecord"):
      for raw in records.read_records(os.path.join(folder, name)):
        ex = tf.train.Example.FromString(raw)
        out.append({k: np.array(v.int64_list.value or v.float_list.value)
                    for k, v in ex.features.feature.items()})
  return out


@pytest.fixture(scope="module")
def static_examples(static_records):
  return _examples(static_records)


@pytest.fixture(scope="module")
def tokenizer(spm_model):
  return tokenization.SentencePieceTokenizer(spm_model)


@pytest.fixture(scope="module")
def documents(tokenizer, corpus_files):
  counters = sources.ReadCounters()
  units, _ = sources.plan_text_units(corpus_files, 1 << 30)
  return [pretraining_data.Document.from_sentences(tokenizer.encode_batch(lines))
          for unit in units for lines in sources.iter_documents(unit, counters)]


def _specials(tokenizer):
  return pretraining_data.SpecialIds(tokenizer.cls_id, tokenizer.sep_id, tokenizer.start_piece_table())


# --- record format -------------------------------------------------------------------------------

def test_features_have_official_names_dtypes_and_lengths(static_examples):
  ex = static_examples[0]
  assert set(ex) == set(records.ALL_FEATURES)
  for name in records.SEQ_FEATURES:
    assert len(ex[name]) == SEQ_LEN
  for name in records.MLM_INT_FEATURES + records.MLM_FLOAT_FEATURES:
    assert len(ex[name]) == MAX_PREDICTIONS
  assert ex["masked_lm_weights"].dtype.kind == "f" and len(ex["next_sentence_labels"]) == 1


def test_encoder_matches_tensorflow_protobuf():
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(0)
  for _ in range(20):
    values = {"a": rng.integers(0, int(rng.choice([2, 300, 70000, 2**40])), rng.integers(0, 600)),
              "b": rng.random(int(rng.integers(1, 30))).astype(np.float32)}
    ex = tf.train.Example.FromString(records.encode_example(values))
    assert list(ex.features.feature["a"].int64_list.value) == values["a"].tolist()
    np.testing.assert_array_equal(ex.features.feature["b"].float_list.value, values["b"])


def test_records_readable_by_tensorflow_and_back(tmp_path):
  tf = pytest.importorskip("tensorflow")
  payloads = [records.encode_example({"x": np.arange(n)}) for n in (1, 5, 300)]
  records.write_records_atomically(str(tmp_path / "ours.tfrecord"), payloads)
  assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))] == payloads
  with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
    for p in payloads:
      w.write(p)
  assert list(records.read_records(str(tmp_path / "tf.tfrecord"))) == payloads
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_framing_check_counts_records_and_finds_truncation_and_damaged_headers(tmp_path):
  payloads = [records.encode_example({"x": np.arange(n)}) for n in (1, 5, 300)]
  path = tmp_path / "r.tfrecord"
  records.write_records_atomically(str(path), payloads)
  good = path.read_bytes()
  assert records.check_framing(str(path)) == 3
  (tmp_path / "empty.tfrecord").write_bytes(b"")
  assert records.check_framing(str(tmp_path / "empty.tfrecord")) == 0
  second = len(records.frame_record(payloads[0]))
  for name, data, match in [
      ("mid_record", good[:-3], r"ends inside record 3 \(3 bytes missing\)"),
      ("mid_header", good[:second + 5], f"header of record 2 \\(byte {second} of {second + 5}"),
      ("header", good[:second] + bytes([good[second] ^ 1]) + good[second + 1:],
       f"record 2 has a damaged length header \\(byte {second}\\)")]:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=match):
      records.check_framing(str(tmp_path / name))
  # Damaged data keeps the framing: the reader's data checksum finds it.
  flipped = good[:-10] + bytes([good[-10] ^ 1]) + good[-9:]
  (tmp_path / "data").write_bytes(flipped)
  assert records.check_framing(str(tmp_path / "data")) == 3
  with pytest.raises(ValueError, match="corrupt TFRecord data checksum"):
    list(records.read_records(str(tmp_path / "data")))

# --- instance structure ---------------------------------------------------------------------------

def test_segments_and_special_tokens(static_examples):
  for ex in static_examples:
    length = int(ex["input_mask"].sum())
    assert np.all(ex["input_mask"][:length] == 1) and np.all(ex["input_mask"][length:] == 0)
    # Undo the masks first: a random replacement may draw any id, [SEP] included (official, too).
    n = int(ex["masked_lm_weights"].sum())
    ids, seg = ex["input_ids"].copy(), ex["segment_ids"]
    ids[ex["masked_lm_positions"][:n]] = ex["masked_lm_ids"][:n]
    assert ids[0] == CLS and ids[length - 1] == SEP
    seps = np.flatnonzero(ids[:length] == SEP)
    assert len(seps) == 2, "exactly [CLS] A [SEP] B [SEP]"
    first = seps[0]
    assert 1 <= first - 1 and first + 1 < length - 1, "both segments non-empty"
    np.testing.assert_array_equal(seg[:first + 1], 0)
    np.testing.assert_array_equal(seg[first + 1:length], 1)
    np.testing.assert_array_equal(ids[length:], PAD)
    np.testing.assert_array_equal(seg[length:], 0)
    assert ex["token_boundary"][0] == 1 and ex["token_boundary"][first] == 1


def test_no_masked_special_or_padding(static_examples):
  for ex in static_examples:
    length = int(ex["input_mask"].sum())
    n = int(ex["masked_lm_weights"].sum())
    pos, labels = ex["masked_lm_positions"][:n], ex["masked_lm_ids"][:n]
    assert np.all(pos > 0) and np.all(pos < length - 1)
    assert not np.isin(labels, [CLS, SEP, PAD]).any()
    assert np.all(np.diff(pos) > 0), "positions sorted and distinct"
    np.testing.assert_array_equal(ex["masked_lm_positions"][n:], 0)
    np.testing.assert_array_equal(ex["masked_lm_weights"][n:], 0)


def test_masked_count_follows_the_official_formula(static_examples):
  exact = 0
  for ex in static_examples:
    length = int(ex["input_mask"].sum())
    expected = min(MAX_PREDICTIONS, max(1, int(round(length * 0.15))))
    got = int(ex["masked_lm_weights"].sum())
    assert got <= expected
    exact += got == expected
  # Whole-word units occasionally cannot fill the last slot exactly (official behaviour too).
  assert exact / len(static_examples) > 0.95


def test_80_10_10_replacement(tokenizer, documents):
  config = masking.MaskingConfig(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                                 max_predictions_per_seq=MAX_PREDICTIONS)
  counts = collections.Counter()
  rng = random.Random(0)
  specials = _specials(tokenizer)
  for i in range(len(documents)):
    for inst in pretraining_data.create_instances_from_document(
        documents, i, pretraining_data.InstanceConfig(max_seq_length=SEQ_LEN), specials, None, rng):
      ids = inst.input_ids
      is_special = np.isin(ids, [CLS, SEP])
      out = masking.create_masked_lm_predictions(ids, specials.start_table[ids], is_special, config,
                                                 rng)
      new = out.input_ids[out.positions]
      counts["mask"] += int((new == MASK).sum())
      counts["same"] += int((new == out.label_ids).sum())
      counts["total"] += len(out.positions)
      assert np.array_equal(out.label_ids, ids[out.positions])
  assert counts["total"] > 15000
  assert abs(counts["mask"] / counts["total"] - 0.8) < 0.015
  # "same" includes the random replacements that happened to draw the original id (~1/vocab).
  assert abs(counts["same"] / counts["total"] - 0.1) < 0.01
  assert abs(1 - (counts["mask"] + counts["same"]) / counts["total"] - 0.1) < 0.01


def test_ngram_lengths_in_words():
  # Long sequences of one-piece words and a low masking rate: the budget rarely shortens an n-gram.
  config = masking.MaskingConfig(vocab_size=100, mask_id=4, masked_lm_prob=0.05,
                                 max_predictions_per_seq=1000)
  rng = random.Random(1)
  ids = np.full(2000, 50, np.int32)
  special = np.zeros(2000, bool)
  special[[0, -1]] = True
  lengths = collections.Counter()
  for _ in range(60):
    lengths.update(masking.create_masked_lm_predictions(ids, ~special, special, config, rng).span_words)
  total = sum(lengths.values())
  for n, p in ((1, 6 / 11), (2, 3 / 11), (3, 2 / 11)):
    assert abs(lengths[n] / total - p) < 0.03, (n, lengths)


def test_whole_word_units_are_masked_together(tokenizer, static_examples):
  table = tokenizer.start_piece_table()
  partial = 0
  for ex in static_examples[:500]:
    n = int(ex["masked_lm_weights"].sum())
    masked = set(ex["masked_lm_positions"][:n].tolist())
    original = ex["input_ids"].copy()
    original[ex["masked_lm_positions"][:n]] = ex["masked_lm_ids"][:n]
    for p in masked:  # a masked continuation piece means its word start is masked too
      if p > 1 and not table[original[p]] and original[p - 1] not in (CLS, SEP):
        partial += (p - 1) not in masked
  assert partial == 0


def test_sop_labels_and_short_targets(tokenizer, documents):
  config = pretraining_data.InstanceConfig(max_seq_length=SEQ_LEN)
  specials = _specials(tokenizer)
  kinds, short, passes = collections.Counter(), 0, 0
  for dupe in range(3):
    for i in range(len(documents)):
      rng = pretraining_data.document_rng(7, dupe, i)
      instances = pretraining_data.create_instances_from_document(documents, i, config, specials,
                                                                  None, rng)
      kinds.update(inst.kind for inst in instances)
      passes += 1
      short += instances[0].target_seq_length < SEQ_LEN - 3
  swapped, in_order = kinds[pretraining_data.SWAPPED], kinds[pretraining_data.IN_ORDER]
  assert abs(swapped / (swapped + in_order) - 0.5) < 0.03
  assert abs(short / passes - 0.1) < 0.03
  assert kinds[pretraining_data.RANDOM_DOCUMENT] > 0  # official single-segment negatives


def test_skip_mode_has_pure_sop_labels(tokenizer, documents):
  config = pretraining_data.InstanceConfig(max_seq_length=SEQ_LEN, single_segment_negatives="skip")
  kinds = collections.Counter()
  for i in range(len(documents)):
    kinds.update(inst.kind for inst in pretraining_data.create_instances_from_document(
        documents, i, config, _specials(tokenizer), None, random.Random(i)))
  assert kinds[pretraining_data.RANDOM_DOCUMENT] == 0
  assert abs(kinds[pretraining_data.SWAPPED] / sum(kinds.values()) - 0.5) < 0.03


def test_nsp_mode_uses_random_documents_half_the_time(tokenizer, documents):
  config = pretraining_data.InstanceConfig(max_seq_length=SEQ_LEN, random_next_sentence=True)
  kinds = collections.Counter()
  for i in range(len(documents)):
    kinds.update(inst.kind for inst in pretraining_data.create_instances_from_document(
        documents, i, config, _specials(tokenizer), None, random.Random(i)))
  assert kinds[pretraining_data.SWAPPED] == 0
  assert 0.5 <= kinds[pretraining_data.RANDOM_DOCUMENT] / sum(kinds.values()) < 0.6


def test_one_sentence_document_and_long_sentence():
  specials = pretraining_data.SpecialIds(CLS, SEP, np.ones(100, bool))
  long_doc = pretraining_data.Document.from_sentences([list(range(10, 90))])  # one 80-token sentence
  other = pretraining_data.Document.from_sentences([[20, 21], [22, 23, 24]])
  config = pretraining_data.InstanceConfig(max_seq_length=32, short_seq_prob=0)
  (inst,) = pretraining_data.create_instances_from_document([long_doc, other], 0, config, specials,
                                                             None, random.Random(0))
  assert inst.kind == pretraining_data.RANDOM_DOCUMENT and inst.label == 1
  assert len(inst.input_ids) <= 32
  skip = pretraining_data.InstanceConfig(max_seq_length=32, single_segment_negatives="skip")
  assert pretraining_data.create_instances_from_document([long_doc, other], 0, skip, specials, None,
                                                         random.Random(0)) == []


def test_truncation_keeps_the_budget():
  rng = random.Random(0)
  for la, lb in ((100, 3), (3, 100), (50, 50), (1, 1)):
    a, b = pretraining_data.truncate_seq_pair(np.arange(la), np.arange(lb), 20, rng)
    assert len(a) + len(b) == min(la + lb, 20) and len(a) >= 1 and len(b) >= 1


# --- input splitting, reproducibility, summary -----------------------------------------------------

def test_blocks_partition_documents_exactly(tmp_path):
  docs = [[f"doc {d} sentence {s}." for s in range(d % 4 + 1)] for d in range(40)]
  text = "\n\n\n".join("\n".join(d) for d in docs) + "\n"
  path = tmp_path / "c.txt"
  path.write_text(text)
  for block in (1, 7, 50, 333, 10_000):
    units, _ = sources.plan_text_units([str(path)], block)
    got = [[line.strip() for line in doc] for u in units
           for doc in sources.iter_text_documents(u, sources.ReadCounters())]
    assert got == docs, block


def test_same_output_for_one_and_two_workers(tmp_path, corpus_files, spm_model):
  a = make_records(tmp_path / "w1", corpus_files[:2], spm_model, num_workers=1, block_size=40_000,
                   dupe_factor=1)
  b = make_records(tmp_path / "w2", corpus_files[:2], spm_model, num_workers=2, block_size=40_000,
                   dupe_factor=1)
  assert a == b and len(a["files"]) >= 3
  for name in a["files"] + [cpd.SUMMARY_FILE]:
    assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
  other_seed = make_records(tmp_path / "seed", corpus_files[:2], spm_model, block_size=40_000,
                            dupe_factor=1, seed=1)
  assert other_seed["files"] == a["files"]
  assert (tmp_path / "seed" / a["files"][0]).read_bytes() != (tmp_path / "w1" / a["files"][0]).read_bytes()


def test_summary_statistics(static_records):
  summary = json.loads((static_records / cpd.SUMMARY_FILE).read_text())
  assert summary["instances"] == sum(1 for f in summary["files"]
                                     for _ in records.read_records(str(static_records / f)))
  assert 0.12 < summary["masked_fraction"] < 0.16
  kinds = summary["instance_kinds"]
  assert abs(kinds["swapped"] / (kinds["swapped"] + kinds["in_order"]) - 0.5) < 0.05
  assert summary["settings"]["instance"]["max_seq_length"] == SEQ_LEN
  assert all(os.path.exists(p) for p in summary["inputs"])


# --- command line and bad input ---------------------------------------------------------------------

def _cli(tmp_path, spm_model, inputs, *extra):
  return cpd.main([f"--input={inputs}", f"--spm_model={spm_model}", f"--output={tmp_path / 'out'}",
                   "--max_seq_length=64", "--dupe_factor=1", "--progress=false", *extra])


def test_cli_bad_input_and_counts(tmp_path, spm_model, corpus_files):
  (tmp_path / "empty.txt").write_text("")
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"Caf\xe9 is a bad byte here. Second sentence follows.\nAnother line.\n\n"
                  b"Only sentence.\n\n" + ("word " * 200).encode() + b"\nEnd.\n")
  assert _cli(tmp_path, spm_model, f"{tmp_path}/*.txt") == 0
  summary = json.loads((tmp_path / "out" / cpd.SUMMARY_FILE).read_text())
  assert summary["invalid_utf8_lines"] == 1
  assert summary["one_sentence_documents"] == 1
  assert summary["sentences_longer_than_max"] == 1
  assert summary["empty_files"] == [str(tmp_path / "empty.txt")]
  assert summary["documents"] == 3


def test_cli_refuses_existing_output_unless_overwrite(tmp_path, spm_model, corpus_files):
  (tmp_path / "out").mkdir()
  with pytest.raises(SystemExit):
    _cli(tmp_path, spm_model, corpus_files[0])
  assert _cli(tmp_path, spm_model, corpus_files[0], "--overwrite") == 0
  assert (tmp_path / "out" / cpd.SUMMARY_FILE).exists()


@pytest.mark.parametrize("model", ["missing.model", "garbage.model"])
def test_cli_bad_spm_model(tmp_path, corpus_files, capsys, model):
  (tmp_path / "garbage.model").write_bytes(b"not a model")
  with pytest.raises(SystemExit):
    _cli(tmp_path, str(tmp_path / model), corpus_files[0])
  assert "--spm_model" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_cli_all_empty_leaves_nothing(tmp_path, spm_model, capsys):
  (tmp_path / "a.txt").write_text("")
  (tmp_path / "b.txt").write_text("\n\n   \n")
  assert _cli(tmp_path, spm_model, f"{tmp_path}/*.txt") == 1
  assert "no " in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]  # no output, no temporary folder


def test_cli_flag_errors_name_the_flag(tmp_path, spm_model, corpus_files, capsys):
  with pytest.raises(SystemExit):
    _cli(tmp_path, spm_model, corpus_files[0], "--single_segment_negatives=nope")
  assert _cli(tmp_path, spm_model, f"{tmp_path}/none*.txt") == 1
  assert "--input: no file matches" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    _cli(tmp_path, spm_model, corpus_files[0], "--masked_lm_prob=2")
  assert "masked_lm_prob" in capsys.readouterr().err


def test_tfds_input(tmp_path, spm_model):
  """The tfds path end to end on tfds' offline mock data (random text from the builder's features)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    rc = cpd.main(["--tfds_name=wikipedia/20230601.en", "--tfds_num_shards=2",
                   f"--spm_model={spm_model}", f"--output={tmp_path / 'out'}",
                   "--max_seq_length=64", "--dupe_factor=1", "--progress=false"])
  assert rc == 0
  summary = json.loads((tmp_path / "out" / cpd.SUMMARY_FILE).read_text())
  assert summary["num_units"] == 2 and summary["documents"] > 0 and summary["instances"] > 0
  assert summary["inputs"] == ["tfds:wikipedia/20230601.en/train"]


def test_tfds_missing_text_field_is_named(tmp_path, spm_model, capsys):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    rc = cpd.main(["--tfds_name=wikipedia/20230601.en", "--tfds_num_shards=1",
                   "--tfds_text_field=body", f"--spm_model={spm_model}",
                   f"--output={tmp_path / 'out'}", "--progress=false"])
  assert rc == 1 and "--tfds_text_field='body'" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_sentence_splitter():
  from albert_jax.data.sentences import document_to_sentences, split_sentences
  assert split_sentences('Mr. Smith met Dr. Who. He said "Hi." Then he left! Is it 3.0? '
                         "Yes, e.g. this. (See the docs.) J. R. R. Tolkien wrote it.") == [
      "Mr. Smith met Dr. Who.", 'He said "Hi."', "Then he left!", "Is it 3.0?",
      "Yes, e.g. this.", "(See the docs.)", "J. R. R. Tolkien wrote it."]
  assert list(document_to_sentences("First one. Second one.\n\nNew paragraph.")) == [
      "First one.", "Second one.", "New paragraph."]
  assert split_sentences("   ") == []
