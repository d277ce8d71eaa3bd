"""tf.data input pipeline over ALBERT pretraining TFRecords, per JAX process (host).

    ds = pipeline.train_dataset("data/*.tfrecord", batch_size_per_host=B, seed=0,
                                max_seq_length=512, max_predictions_per_seq=20,
                                process_index=jax.process_index(), process_count=jax.process_count())
    it = pipeline.DataIterator(ds)
    batch = next(it)                  # dict of NumPy arrays, leading dim B
    it.save(path); it.restore(path)   # reader position, saved beside each model checkpoint

Training (`train_dataset`): each host reads a disjoint subset of the files (files[i::n]); per epoch the
host's files are put in a seeded order (stateless in (seed, epoch)) and read with a deterministic
interleave; records pass a seeded shuffle buffer, are batched (drop_remainder) and parsed. The same
seed gives the same batches. The official reader (run_pretraining.py) uses a 100-record buffer because
its data were shuffled globally at creation; ours are shuffled within a work unit only, hence the
larger default buffer and the interleave of several files.

Resumption: `DataIterator.save` writes the tf.data iterator state (file positions, shuffle buffer,
prefetched batches) with `tf.train.Checkpoint`; a restored iterator continues with exactly the batches
an uninterrupted run would see. The file includes the shuffle buffer (about buffer size x record
size), which is the price of exact continuation without re-reading the data.

Evaluation (`eval_dataset`): the files are read once in order, records are dealt round-robin to
hosts, and every host pads to the same number of batches with all-zero examples whose
`example_mask` is 0 (real examples have 1), so hosts run the same number of steps; weight metrics
by `example_mask`.

Dynamic masking (`dynamic_masking=DynamicMasking(...)`): records written with
`create_pretraining_data --masking=none` carry tokens only; masks are drawn at read time by the same
`masking.create_masked_lm_predictions` used for static data, with a generator seeded by
(seed, epoch, file, record), so every epoch gets new masks and a resumed run the same ones. The
first record is checked: dynamic masking of statically masked records (which would mask the masked
inputs again) and static reading of token-only records are both errors.

Batch fields (int32 unless noted): input_ids, input_mask, segment_ids [B, S]; masked_lm_positions,
masked_lm_ids [B, P], masked_lm_weights float32 [B, P]; next_sentence_labels [B] (official records
store [1] per example; we squeeze it); eval adds example_mask [B].
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import logging
from collections.abc import Iterator
from typing import Optional

import numpy as np
import tensorflow as tf

from albert_jax import fileio
from albert_jax.command_line import InputError
from albert_jax.data import masking, pretraining_data, records, tokenization

OUTPUT_FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                   "masked_lm_weights", "next_sentence_labels")
_EVAL_EPOCH = -1  # dynamic-masking key of the eval split (training epochs are >= 0)


@dataclasses.dataclass(frozen=True)
class DynamicMasking:
  """Read-time masking settings plus the ids needed to find [CLS]/[SEP] in the records."""

  config: masking.MaskingConfig
  cls_id: int
  sep_id: int

  @classmethod
  def from_spm(cls, spm_model: str, **config) -> "DynamicMasking":
    """Builds the settings from the SentencePiece model the records were made with."""
    sp = tokenization.load_sentencepiece(spm_model)
    ids = [sp.piece_to_id(p) for p in (tokenization.MASK, tokenization.CLS, tokenization.SEP)]
    if sp.unk_id() in ids:
      raise tokenization.TokenizerError(f"{spm_model!r} lacks [MASK]/[CLS]/[SEP] pieces.")
    return cls(masking.MaskingConfig(vocab_size=sp.get_piece_size(), mask_id=ids[0], **config),
               cls_id=ids[1], sep_id=ids[2])


def list_files(file_pattern: str | list[str]) -> list[str]:
  """Sorted files matching a glob (or comma-separated globs, or a list); an error if none match."""
  patterns = file_pattern if isinstance(file_pattern, list) else file_pattern.split(",")
  # tf.io.gfile also reads gs:// and other remote file systems (TPU pods keep data in buckets).
  files = sorted({f for p in patterns if p for f in tf.io.gfile.glob(os.path.expanduser(p))})
  if not files:
    raise FileNotFoundError(f"no record file matches {file_pattern!r}.")
  return files


def host_files(files: list[str], process_index: int, process_count: int) -> list[str]:
  """The disjoint subset of `files` that process `process_index` of `process_count` reads."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count}).")
  if len(files) < process_count:
    raise ValueError(f"{len(files)} record file(s) for {process_count} processes: every process "
                     "needs at least one file (make more, smaller files: --block_size_mb).")
  return files[process_index::process_count]


def _reason(error: tf.errors.OpError) -> str:
  """TF's message without its op and function-node decorations ("corrupted record at 0")."""
  text = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message.splitlines()[0])
  return re.sub(r"\s*\[Op:.*$", "", text).strip()


def _first_record(path: str) -> bytes | None:
  """The first record of `path` (None: the file holds none); an unreadable or damaged file is an
  InputError naming it."""
  try:
    first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
  except tf.errors.OpError as e:
    raise InputError(f"{path}: not a readable TFRecord file ({_reason(e)})") from None
  return None if first is None else first.numpy()


def _check_example(path: str, data: bytes, max_seq_length: int, max_predictions_per_seq: int,
                   token_only: bool) -> None:
  """Fails, naming the file and feature, unless `data` is an official pretraining example of the
  expected kind (token-only or statically masked), feature dtypes and lengths."""
  try:
    example = tf.train.Example.FromString(data)
  except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError)
    raise InputError(f"{path}: its records are not tf.train.Example protos ({e})") from None
  features = example.features.feature
  present = set(features)
  missing = [k for k in records.TOKEN_ONLY_FEATURES if k not in present]
  if missing:
    raise InputError(f"{path}: not ALBERT pretraining records: no {missing} features (it has "
                     f"{sorted(present)}); make them with create_pretraining_data")
  mlm_features = records.MLM_INT_FEATURES + records.MLM_FLOAT_FEATURES
  static = sorted(present.intersection(mlm_features))
  if token_only and static:
    # Masking already-masked inputs again trains on wrong targets (many labels are [MASK] itself)
    # without any error further down, so this mismatch must stop the run here.
    raise InputError(
        f"{path}: data.dynamic_masking=True but the records are statically masked (they carry "
        f"{static}): masking them again would train on [MASK] tokens as targets. Set "
        "data.dynamic_masking=False to train on their masks, or recreate them with "
        "create_pretraining_data --masking=none for dynamic masking.")
  if not token_only and not static:
    raise InputError(
        f"{path}: data.dynamic_masking=False but the records are token-only (made with "
        f"create_pretraining_data --masking=none; no {list(mlm_features)} features). Set "
        "data.dynamic_masking=True to mask them at read time, or recreate them with "
        "--masking=static.")
  lengths = {k: max_seq_length for k in records.SEQ_FEATURES}
  lengths[records.LABEL_FEATURE] = 1
  if not token_only:
    lengths.update({k: max_predictions_per_seq for k in mlm_features})
  for name, length in lengths.items():
    if name not in present:
      raise InputError(f"{path}: record has no feature {name!r}; it has {sorted(present)}.")
    kind = "float_list" if name in records.MLM_FLOAT_FEATURES else "int64_list"
    if features[name].WhichOneof("kind") != kind:
      raise InputError(f"{path}: feature {name!r} is a {features[name].WhichOneof('kind')}, "
                       f"expected a {kind} (the official record format).")
    got = len(getattr(features[name], kind).value)
    if got != length:
      what = "max_seq_length" if name in records.SEQ_FEATURES else "max_predictions_per_seq"
      raise InputError(f"{path}: feature {name!r} has length {got}, expected {length} "
                       f"({what} does not match the records).")


def check_record_file(path: str, max_seq_length: int, max_predictions_per_seq: int,
                      token_only: bool) -> bool:
  """Fails early, naming the file and field, if the first record does not match the expected
  features or (a local file) its record framing is damaged or truncated; returns whether the file
  holds any record.

  token_only: dynamic masking is on, so the records must be token-only (`--masking=none`).
  """
  first = _first_record(path)
  if first is None:
    return False
  _check_example(path, first, max_seq_length, max_predictions_per_seq, token_only)
  if not fileio.is_uri(path):  # remote files: a read per record would cost a round trip each
    try:
      records.check_framing(path)
    except ValueError as e:
      raise InputError(f"{e}; recreate it with create_pretraining_data") from None
  return True


def check_records(files: list[str], max_seq_length: int, max_predictions_per_seq: int,
                  token_only: bool, what: str = "record files") -> None:
  """`check_record_file` on every file (its first record): a reader over files that hold no
  record at all would wait forever, so that is an error naming them; empty files among others
  are reported as a warning."""
  empty = [f for f in files
           if not check_record_file(f, max_seq_length, max_predictions_per_seq, token_only)]
  if empty and len(empty) == len(files):
    raise InputError(f"{what}: no records in {_names(empty)} (empty files; recreate them with "
                     "create_pretraining_data)")
  if empty:
    logging.warning("%s: %d of %d files hold no records: %s", what, len(empty), len(files),
                    _names(empty))


def _names(files: list[str], shown: int = 5) -> str:
  """The first `shown` of `files`, and how many more."""
  more = f" and {len(files) - shown} more" if len(files) > shown else ""
  return ", ".join(files[:shown]) + more


def damaged_file(files: list[str]) -> str:
  """Names the first of `files` that cannot be read to its end (for a read error whose message
  names no file), or all of them when each reads."""
  for path in files:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.OpError as e:
      return f"{path} ({_reason(e)})"
  return _names(files)


def _feature_spec(max_seq_length: int, max_predictions_per_seq: int, token_only: bool) -> dict:
  spec = {k: tf.io.FixedLenFeature([max_seq_length], tf.int64) for k in records.SEQ_FEATURES}
  spec[records.LABEL_FEATURE] = tf.io.FixedLenFeature([1], tf.int64)
  if not token_only:
    for k in records.MLM_INT_FEATURES:
      spec[k] = tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64)
    spec["masked_lm_weights"] = tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32)
  return spec


def mask_batch(input_ids: np.ndarray, input_mask: np.ndarray, token_boundary: np.ndarray,
               keys: np.ndarray, seed: int, masking_: DynamicMasking,
               max_predictions_per_seq: int) -> tuple[np.ndarray, ...]:
  """Dynamic masking of a batch of token-only records (NumPy; runs inside `tf.numpy_function`).

  keys: int64 [B, 3] = (epoch, file index, record index) of each example; with `seed` they seed the
  example's generator. Returns input_ids, masked_lm_positions, masked_lm_ids, masked_lm_weights.
  """
  out_ids = np.array(input_ids, dtype=np.int32)
  positions = np.zeros([len(input_ids), max_predictions_per_seq], np.int32)
  labels = np.zeros_like(positions)
  weights = np.zeros([len(input_ids), max_predictions_per_seq], np.float32)
  for row in range(len(input_ids)):
    length = int(input_mask[row].sum())
    ids = out_ids[row, :length]
    is_special = (ids == masking_.cls_id) | (ids == masking_.sep_id)
    # token_boundary = word start or special (masking.token_boundary), so it gives is_start exactly.
    is_start = token_boundary[row, :length].astype(bool)
    rng = pretraining_data.document_rng(seed, "dynamic", *(int(k) for k in keys[row]))
    result = masking.create_masked_lm_predictions(ids, is_start, is_special, masking_.config, rng)
    n = len(result.positions)
    out_ids[row, :length] = result.input_ids
    positions[row, :n], labels[row, :n], weights[row, :n] = result.positions, result.label_ids, 1.0
  return out_ids, positions, labels, weights


def _parse_fn(max_seq_length: int, max_predictions_per_seq: int, seed: int,
              dynamic: DynamicMasking | None):
  spec = _feature_spec(max_seq_length, max_predictions_per_seq, token_only=dynamic is not None)

  def parse(keys, serialized):
    raw = tf.io.parse_example(serialized, spec)
    batch = {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in raw.items()}
    batch[records.LABEL_FEATURE] = batch[records.LABEL_FEATURE][:, 0]
    if dynamic is not None:
      outs = tf.numpy_function(
          lambda i, m, b, k: mask_batch(i, m, b, k, seed, dynamic, max_predictions_per_seq),
          [batch["input_ids"], batch["input_mask"], batch["token_boundary"], keys],
          [tf.int32, tf.int32, tf.int32, tf.float32], stateful=False)
      for name, value, width in zip(("input_ids",) + records.MLM_INT_FEATURES + ("masked_lm_weights",),
                                    outs, (max_seq_length,) + (max_predictions_per_seq,) * 3):
        batch[name] = tf.ensure_shape(value, [None, width])
    return {k: batch[k] for k in OUTPUT_FEATURES}

  return parse


def _options(dynamic: bool) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  if dynamic:
    # numpy_function is "external state" to tf.data's checkpointing; ours is a pure function of its
    # inputs (the generator is seeded from the example key), so saving without it is exact.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  return options


def train_dataset(file_pattern: str | list[str], *, batch_size_per_host: int, seed: int,
                  max_seq_length: int, max_predictions_per_seq: int, process_index: int = 0,
                  process_count: int = 1, shuffle_buffer_size: int = 10_000, cycle_length: int = 4,
                  dynamic_masking: DynamicMasking | None = None,
                  num_epochs: int | None = None) -> tf.data.Dataset:
  """The host's infinite (or `num_epochs`) stream of shuffled training batches (see module doc)."""
  if batch_size_per_host < 1:
    raise ValueError(f"batch_size_per_host={batch_size_per_host}: must be >= 1.")
  all_files = list_files(file_pattern)
  files = host_files(all_files, process_index, process_count)
  check_records(files, max_seq_length, max_predictions_per_seq, dynamic_masking is not None)
  file_ids = tf.constant([all_files.index(f) for f in files], tf.int64)  # global ids: mask keys
  file_names = tf.constant(files)
  num_files = len(files)

  def epoch_records(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_files, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

    def read(i):
      keys = tf.stack([epoch, file_ids[i]])
      return tf.data.TFRecordDataset(file_names[i]).enumerate().map(
          lambda r, rec: (tf.concat([keys, [r]], 0), rec))

    return tf.data.Dataset.from_tensor_slices(order).interleave(
        read, cycle_length=min(cycle_length, num_files), block_length=1,
        num_parallel_calls=min(cycle_length, num_files), deterministic=True)

  epochs = (tf.data.Dataset.range(num_epochs) if num_epochs is not None
            else tf.data.Dataset.counter())
  ds = epochs.flat_map(epoch_records)
  ds = ds.shuffle(shuffle_buffer_size, seed=seed)
  ds = ds.batch(batch_size_per_host, drop_remainder=True)
  ds = ds.map(_parse_fn(max_seq_length, max_predictions_per_seq, seed, dynamic_masking),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options(dynamic_masking is not None))


def count_records(files: list[str]) -> int:
  """Number of records in `files` (reads them once, without parsing); a damaged file is an
  InputError naming it."""
  total = 0
  for f in files:
    try:
      total += int(tf.data.TFRecordDataset(f).reduce(np.int64(0), lambda n, _: n + 1))
    except tf.errors.OpError as e:
      raise InputError(f"{f}: damaged TFRecord file ({_reason(e)})") from None
  return total


def eval_dataset(file_pattern: str | list[str], *, batch_size_per_host: int, max_seq_length: int,
                 max_predictions_per_seq: int, process_index: int = 0, process_count: int = 1,
                 dynamic_masking: DynamicMasking | None = None,
                 seed: int = 0) -> tuple[tf.data.Dataset, int]:
  """The host's eval batches read once, padded to the same batch count on every host.

  Returns (dataset, num_batches). Batches carry `example_mask` (1 real, 0 padding).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count}).")
  files = list_files(file_pattern)
  check_records(files, max_seq_length, max_predictions_per_seq, dynamic_masking is not None,
                what="eval record files")
  total = count_records(files)
  per_host = math.ceil(total / process_count)
  num_batches = max(1, math.ceil(per_host / batch_size_per_host))
  mine = len(range(process_index, total, process_count))
  num_padding = num_batches * batch_size_per_host - mine

  ds = tf.data.TFRecordDataset(files).enumerate().shard(process_count, process_index)
  ds = ds.map(lambda r, rec: (tf.stack([tf.constant(_EVAL_EPOCH, tf.int64), 0, r]), rec))
  ds = ds.batch(batch_size_per_host)
  parse = _parse_fn(max_seq_length, max_predictions_per_seq, seed, dynamic_masking)
  ds = ds.map(parse).unbatch().map(lambda ex: {**ex, "example_mask": tf.constant(1, tf.int32)})
  padding = {k: tf.zeros(v.shape, v.dtype) for k, v in ds.element_spec.items()}
  pad_ds = tf.data.Dataset.from_tensors(padding).repeat(num_padding)
  ds = ds.concatenate(pad_ds).batch(batch_size_per_host, drop_remainder=True)
  return ds.with_options(_options(dynamic_masking is not None)), num_batches


class DataIterator:
  """Iterator of NumPy batches whose position can be saved and restored (see module doc)."""

  def __init__(self, dataset: tf.data.Dataset, files: Optional[list[str]] = None):
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)
    self._files = files or []  # the files it reads, to name a damaged one

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    try:
      batch = next(self._iterator)
    except tf.errors.DataLossError as e:
      where = damaged_file(self._files) if self._files else "a record file"
      raise InputError(f"damaged record file {where}: {_reason(e)}") from None
    return {k: v.numpy() for k, v in batch.items()}

  def save(self, path: str) -> str:
    """Writes the reader position to `path` (a file prefix; TF adds .index/.data suffixes)."""
    tf.io.gfile.makedirs(os.path.dirname(path))  # also in a bucket (gs://)
    return self._checkpoint.write(path)

  def restore(self, path: str) -> None:
    """Continues from a position written by `save` for the same dataset definition."""
    if not tf.io.gfile.exists(path + ".index"):
      raise FileNotFoundError(f"no saved reader position at {path!r} (expected {path}.index).")
    self._checkpoint.read(path).assert_consumed()


def position_path(directory: str, process_index: int) -> str:
  """Where host `process_index` keeps its reader position inside a checkpoint directory."""
  return os.path.join(directory, f"data_position_{process_index:05d}")
