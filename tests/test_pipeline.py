"""tf.data pipeline: per-host files, seeded order, exact resumption, padded eval, dynamic masking."""

from __future__ import annotations


import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from albert_jax.data import masking, pipeline, pretraining_data, records, tokenization  # noqa: E402
from tests.data_fixtures import MAX_PREDICTIONS, SEQ_LEN  # noqa: E402

COMMON = dict(max_seq_length=SEQ_LEN, max_predictions_per_seq=MAX_PREDICTIONS)


def _pattern(folder) -> str:
  return str(folder / "*.tfrecord")


def _take(ds_or_it, n):
  it = ds_or_it if isinstance(ds_or_it, pipeline.DataIterator) else pipeline.DataIterator(ds_or_it)
  return [next(it) for _ in range(n)]


def _rows(batches, mask_key=None):
  rows = []
  for b in batches:
    for i in range(len(b["input_ids"])):
      if mask_key is None or b[mask_key][i]:
        rows.append(b["input_ids"][i].tobytes() + b["segment_ids"][i].tobytes())
  return rows


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_shapes_and_dtypes(static_records):
  (batch,) = _take(pipeline.train_dataset(_pattern(static_records), batch_size_per_host=4, seed=0,
                                          **COMMON), 1)
  assert batch["input_ids"].shape == (4, SEQ_LEN) and batch["input_ids"].dtype == np.int32
  assert batch["masked_lm_positions"].shape == (4, MAX_PREDICTIONS)
  assert batch["masked_lm_weights"].dtype == np.float32
  assert batch["next_sentence_labels"].shape == (4,)
  assert set(batch) == set(pipeline.OUTPUT_FEATURES)


def test_same_seed_same_order_other_seed_differs(static_records):
  make = lambda seed: pipeline.train_dataset(_pattern(static_records), batch_size_per_host=8,
                                             seed=seed, shuffle_buffer_size=200, **COMMON)
  a, b, c = _take(make(3), 5), _take(make(3), 5), _take(make(4), 5)
  _assert_same(a, b)
  assert _rows(a) != _rows(c)


def test_processes_read_disjoint_files(static_records):
  files = pipeline.list_files(_pattern(static_records))
  shards = [pipeline.host_files(files, i, 2) for i in range(2)]
  assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == files
  rows = []
  for i in range(2):
    ds = pipeline.train_dataset(_pattern(static_records), batch_size_per_host=1, seed=0,
                                process_index=i, process_count=2, num_epochs=1, **COMMON)
    rows.append(_rows(ds.as_numpy_iterator()))
  expected = [sum(1 for f in shard for _ in records.read_records(f)) for shard in shards]
  assert [len(r) for r in rows] == expected
  assert not set(rows[0]) & set(rows[1])


def test_too_few_files_for_processes(static_records):
  n = len(pipeline.list_files(_pattern(static_records)))
  with pytest.raises(ValueError, match=f"{n} record file"):
    pipeline.train_dataset(_pattern(static_records), batch_size_per_host=1, seed=0,
                           process_index=0, process_count=n + 1, **COMMON)


@pytest.mark.parametrize("dynamic", [False, True])
def test_restored_position_continues_exactly(tmp_path, static_records, token_only_records,
                                             spm_model, dynamic):
  folder = token_only_records if dynamic else static_records
  dm = pipeline.DynamicMasking.from_spm(spm_model, max_predictions_per_seq=MAX_PREDICTIONS) if dynamic else None
  make = lambda: pipeline.train_dataset(_pattern(folder), batch_size_per_host=16, seed=5,
                                        shuffle_buffer_size=300, dynamic_masking=dm, **COMMON)
  uninterrupted = _take(make(), 12)
  first = pipeline.DataIterator(make())
  _take(first, 5)
  path = first.save(pipeline.position_path(str(tmp_path / "ckpt"), 0))
  del first
  resumed = pipeline.DataIterator(make())
  resumed.restore(path)
  _assert_same(_take(resumed, 7), uninterrupted[5:])


def test_restore_missing_position_is_named(tmp_path, static_records):
  it = pipeline.DataIterator(pipeline.train_dataset(_pattern(static_records), batch_size_per_host=2,
                                                    seed=0, **COMMON))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    it.restore(str(tmp_path / "nowhere"))


def test_eval_is_padded_to_the_same_batch_count(static_records):
  files = pipeline.list_files(_pattern(static_records))
  total = pipeline.count_records(files)
  results = [pipeline.eval_dataset(_pattern(static_records), batch_size_per_host=64, process_index=i,
                                   process_count=3, **COMMON) for i in range(3)]
  counts = {n for _, n in results}
  assert len(counts) == 1
  rows = []
  for ds, n in results:
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == n
    padding = np.concatenate([b["example_mask"] for b in batches]) == 0
    assert all(not b["input_ids"][b["example_mask"] == 0].any() for b in batches)
    assert padding.sum() == n * 64 - sum(b["example_mask"].sum() for b in batches)
    rows += _rows(batches, "example_mask")
  assert len(rows) == total
  everything = _rows(pipeline.eval_dataset(_pattern(static_records), batch_size_per_host=64,
                                           **COMMON)[0].as_numpy_iterator(), "example_mask")
  assert sorted(rows) == sorted(everything)


def test_official_feature_spec_record_parses(tmp_path):
  """A record built like the official writer (tf.train.Example + TFRecordWriter) feeds the pipeline."""
  def int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))
  ids = [2, 10, 11, 3, 12, 3] + [0] * (SEQ_LEN - 6)
  features = {
      "input_ids": int_feature(ids), "input_mask": int_feature([1] * 6 + [0] * (SEQ_LEN - 6)),
      "segment_ids": int_feature([0] * 4 + [1] * 2 + [0] * (SEQ_LEN - 6)),
      "token_boundary": int_feature([1] * 6 + [0] * (SEQ_LEN - 6)),
      "masked_lm_positions": int_feature([1] + [0] * (MAX_PREDICTIONS - 1)),
      "masked_lm_ids": int_feature([10] + [0] * (MAX_PREDICTIONS - 1)),
      "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(
          value=[1.0] + [0.0] * (MAX_PREDICTIONS - 1))),
      "next_sentence_labels": int_feature([1]),
  }
  example = tf.train.Example(features=tf.train.Features(feature=features))
  with tf.io.TFRecordWriter(str(tmp_path / "official.tfrecord")) as w:
    w.write(example.SerializeToString())
  (batch,) = _take(pipeline.train_dataset(_pattern(tmp_path), batch_size_per_host=1, seed=0,
                                          num_epochs=1, **COMMON), 1)
  assert batch["input_ids"][0].tolist() == ids and batch["next_sentence_labels"].tolist() == [1]
  assert batch["masked_lm_weights"][0, 0] == 1.0 and batch["masked_lm_ids"][0, 0] == 10


def test_mismatched_lengths_name_the_file_and_flag(static_records):
  with pytest.raises(ValueError, match="input_ids.*max_seq_length"):
    pipeline.train_dataset(_pattern(static_records), batch_size_per_host=1, seed=0,
                           max_seq_length=SEQ_LEN * 2, max_predictions_per_seq=MAX_PREDICTIONS)
  with pytest.raises(ValueError, match="masked_lm_positions.*max_predictions_per_seq"):
    pipeline.train_dataset(_pattern(static_records), batch_size_per_host=1, seed=0,
                           max_seq_length=SEQ_LEN, max_predictions_per_seq=MAX_PREDICTIONS + 1)


def test_token_only_records_need_dynamic_masking(token_only_records):
  first = pipeline.list_files(_pattern(token_only_records))[0]
  with pytest.raises(ValueError, match="masked_lm_positions.*dynamic_masking") as e:
    pipeline.train_dataset(_pattern(token_only_records), batch_size_per_host=1, seed=0, **COMMON)
  assert first in str(e.value) and "data.dynamic_masking=True" in str(e.value)
  with pytest.raises(ValueError, match="token-only"):
    pipeline.eval_dataset(_pattern(token_only_records), batch_size_per_host=1, **COMMON)


def test_dynamic_masking_refuses_statically_masked_records(static_records, spm_model):
  """Masking masked inputs again would silently train on [MASK] labels: the reader must refuse."""
  dm = pipeline.DynamicMasking.from_spm(spm_model, max_predictions_per_seq=MAX_PREDICTIONS)
  first = pipeline.list_files(_pattern(static_records))[0]
  for make in (pipeline.train_dataset, pipeline.eval_dataset):
    kwargs = dict(seed=0) if make is pipeline.train_dataset else {}
    with pytest.raises(ValueError, match="data.dynamic_masking=True.*statically masked") as e:
      make(_pattern(static_records), batch_size_per_host=1, dynamic_masking=dm, **kwargs, **COMMON)
    message = str(e.value)
    assert first in message and "data.dynamic_masking=False" in message
    assert "--masking=none" in message


def test_dynamic_masking_uses_the_static_code_and_changes_per_epoch(token_only_records, spm_model):
  tok = tokenization.SentencePieceTokenizer(spm_model)
  dm = pipeline.DynamicMasking.from_spm(spm_model, max_predictions_per_seq=MAX_PREDICTIONS)
  files = pipeline.list_files(_pattern(token_only_records))
  raw = [tf.train.Example.FromString(r) for r in list(records.read_records(files[0]))[:64]]
  get = lambda name: np.array([list(e.features.feature[name].int64_list.value) for e in raw])
  ids, mask, boundary = get("input_ids"), get("input_mask"), get("token_boundary")
  keys = np.array([[0, 0, r] for r in range(len(raw))])
  out0 = pipeline.mask_batch(ids, mask, boundary, keys, 9, dm, MAX_PREDICTIONS)
  again = pipeline.mask_batch(ids, mask, boundary, keys, 9, dm, MAX_PREDICTIONS)
  out1 = pipeline.mask_batch(ids, mask, boundary, keys + [1, 0, 0], 9, dm, MAX_PREDICTIONS)
  for a, b in zip(out0, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(out0[1], out1[1])  # a new epoch draws new masks
  table = tok.start_piece_table()
  for row in range(len(raw)):
    # Same result as static masking with the tokenizer's start-piece table and the same generator.
    n = int(mask[row].sum())
    is_special = np.isin(ids[row, :n], [tok.cls_id, tok.sep_id])
    rng = pretraining_data.document_rng(9, "dynamic", 0, 0, row)
    ref = masking.create_masked_lm_predictions(ids[row, :n], table[ids[row, :n]], is_special,
                                               dm.config, rng)
    k = len(ref.positions)
    np.testing.assert_array_equal(out0[0][row, :n], ref.input_ids)
    np.testing.assert_array_equal(out0[1][row, :k], ref.positions)
    np.testing.assert_array_equal(out0[2][row, :k], ref.label_ids)
    assert out0[3][row].sum() == k <= masking.num_to_predict(n, dm.config)


def test_dynamic_masking_statistics(token_only_records, spm_model):
  dm = pipeline.DynamicMasking.from_spm(spm_model, max_predictions_per_seq=MAX_PREDICTIONS)
  ds = pipeline.train_dataset(_pattern(token_only_records), batch_size_per_host=64, seed=0,
                              dynamic_masking=dm, **COMMON)
  exact = masked = total = num_masked = 0
  for b in _take(ds, 8):
    lengths = b["input_mask"].sum(1)
    n = b["masked_lm_weights"].sum(1)
    expected = np.minimum(MAX_PREDICTIONS, np.maximum(1, np.round(lengths * 0.15)))
    assert np.all(n <= expected)
    exact += int((n == expected).sum())
    total += len(n)
    rows, cols = np.nonzero(b["masked_lm_weights"])
    masked += int((b["input_ids"][rows, b["masked_lm_positions"][rows, cols]] == dm.config.mask_id).sum())
    num_masked += len(rows)
  assert exact / total > 0.95
  assert abs(masked / num_masked - 0.8) < 0.03  # ~7000 masked tokens: 0.03 is > 6 sigma
