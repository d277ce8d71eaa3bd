"""TFRecord files of `tf.train.Example`s with the official ALBERT pretraining features, without TF.

The data generator runs in many worker processes; importing TensorFlow in each costs seconds and
hundreds of MB, and building `tf.train.Example` protos in Python dominates the official script's
write time. The protobuf wire format of an Example of int64/float lists is simple, so we encode it
directly with NumPy (varints for int64, little-endian float32) and frame it as TFRecord (length,
masked CRC32C of the length, data, masked CRC32C of the data). tests/test_pretraining_data.py checks
that TensorFlow parses these bytes to the same values and that TF-written records read back here.

Feature names/dtypes (official create_pretraining_data.py): every field zero-padded to a fixed length.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from typing import Optional

import google_crc32c
import numpy as np

# name -> (dtype, length key): the official `create_pretraining_data.py` output.
SEQ_FEATURES = ("input_ids", "input_mask", "segment_ids", "token_boundary")
MLM_INT_FEATURES = ("masked_lm_positions", "masked_lm_ids")
MLM_FLOAT_FEATURES = ("masked_lm_weights",)
LABEL_FEATURE = "next_sentence_labels"
# Written by `--masking=none` for dynamic masking: the MLM fields are drawn at read time.
TOKEN_ONLY_FEATURES = SEQ_FEATURES + (LABEL_FEATURE,)
ALL_FEATURES = SEQ_FEATURES + MLM_INT_FEATURES + MLM_FLOAT_FEATURES + (LABEL_FEATURE,)


def _varint_slow(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


# Tags and lengths are small: a table makes them a list lookup (this is in the per-record hot path).
_VARINT_TABLE = [_varint_slow(i) for i in range(1 << 14)]


def _varint(value: int) -> bytes:
  """Protobuf base-128 varint of one non-negative integer (tags and lengths)."""
  return _VARINT_TABLE[value] if value < 16384 else _varint_slow(value)


def _varint_buffer(values: np.ndarray) -> tuple[bytes, np.ndarray]:
  """Varints of a non-negative integer array, concatenated, and where each one starts.

  Returns (buffer, offsets): value i is buffer[offsets[i]:offsets[i + 1]] (offsets has n + 1
  entries). Vectorised, with fast paths for one- and two-byte values (ids of vocabularies up to
  16384 pieces, positions): this is the writer's hot loop, run once over many records.
  """
  v = np.asarray(values).ravel()
  if v.size == 0:
    return b"", np.zeros([1], np.int64)
  top = int(v.max())
  offsets = np.zeros([v.size + 1], np.int64)
  if top < 0x80:  # the common case for masks, segment ids, boundaries, positions
    offsets[1:] = np.arange(1, v.size + 1)
    return v.astype(np.uint8).tobytes(), offsets
  if top < 0x4000:
    # Both bytes of every value side by side, the second one dropped where the value is < 128.
    two = v >= 0x80
    pairs = np.empty([v.size, 2], np.uint8)
    pairs[:, 0] = (v & 0x7F) | (two.view(np.uint8) << 7)
    pairs[:, 1] = v >> 7
    keep = np.empty([v.size, 2], bool)
    keep[:, 0] = True
    keep[:, 1] = two
    np.cumsum(1 + two.view(np.uint8), out=offsets[1:])
    return pairs[keep].tobytes(), offsets
  v = v.astype(np.int64)
  width = (top.bit_length() + 6) // 7
  shifts = np.arange(0, 7 * width, 7, dtype=np.int64)
  # Bytes needed per value; bytes past that are dropped and all but the last get the high bit.
  nbytes = 1 + (v[:, None] >= (np.int64(1) << shifts[1:])).sum(axis=1)
  groups = ((v[:, None] >> shifts) & 0x7F).astype(np.uint8)
  col = np.arange(width)
  groups |= ((col < nbytes[:, None] - 1) * 0x80).astype(np.uint8)
  np.cumsum(nbytes, out=offsets[1:])
  return groups[col < nbytes[:, None]].tobytes(), offsets


def _varints(values: np.ndarray) -> bytes:
  """Varints of a non-negative int64 array, concatenated."""
  return _varint_buffer(values)[0]


def _len_delimited(field_number: int, payload: bytes) -> bytes:
  return _VARINT_TABLE[(field_number << 3) | 2] + _varint(len(payload)) + payload


_KEY_CACHE: dict[str, bytes] = {}


def _key_entry(name: str) -> bytes:
  """The encoded map key `{key: name}` of a feature, cached per name."""
  entry = _KEY_CACHE.get(name)
  if entry is None:
    entry = _KEY_CACHE[name] = _len_delimited(1, name.encode())
  return entry


def _int64_feature(values: np.ndarray) -> bytes:
  values = np.asarray(values, dtype=np.int64)
  if values.size and values.min() < 0:
    raise ValueError("negative int64 feature values are not supported by this encoder")
  # Feature.int64_list (field 3) -> Int64List.value (field 1, packed).
  return _len_delimited(3, _len_delimited(1, _varints(values)))


def _float_feature(values: np.ndarray) -> bytes:
  # Feature.float_list (field 2) -> FloatList.value (field 1, packed little-endian float32).
  return _len_delimited(2, _len_delimited(1, np.asarray(values, dtype="<f4").tobytes()))


def _feature_entry(name: str, values: np.ndarray) -> bytes:
  """One entry of the `Features.feature` map: float arrays become float lists, others int64."""
  values = np.asarray(values)
  feature = _float_feature(values) if values.dtype.kind == "f" else _int64_feature(values)
  # Features.feature is a map<string, Feature>: each entry is {key: 1, value: 2}.
  return _len_delimited(1, _key_entry(name) + _len_delimited(2, feature))


def _int64_entry_prefix(name: str, payload_length: int) -> bytes:
  """The bytes of `_feature_entry(name, v)` that precede the packed varints of v (`payload_length`
  bytes): they depend on the payload's length only, so batch encoding caches them."""
  list_length = 1 + len(_varint(payload_length)) + payload_length  # Int64List {value: 1}
  feature_length = 1 + len(_varint(list_length)) + list_length  # Feature {int64_list: 3}
  key = _key_entry(name)
  entry_length = len(key) + 1 + len(_varint(feature_length)) + feature_length
  return b"".join((_VARINT_TABLE[(1 << 3) | 2], _varint(entry_length), key,
                   _VARINT_TABLE[(2 << 3) | 2], _varint(feature_length),
                   _VARINT_TABLE[(3 << 3) | 2], _varint(list_length),
                   _VARINT_TABLE[(1 << 3) | 2], _varint(payload_length)))


def encode_example(features: Mapping[str, np.ndarray]) -> bytes:
  """Serialises {name: 1-D array} as a `tf.train.Example`; float32 arrays become float lists."""
  entries = b"".join(_feature_entry(name, values) for name, values in features.items())
  return _len_delimited(1, entries)  # Example.features (field 1)


def _masked_crc(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def _record_header(length: int) -> bytes:
  header = _LENGTH.pack(length)
  return header + _CRC.pack(_masked_crc(header))


def frame_record(data: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC of it, data, masked CRC of the data."""
  return _record_header(len(data)) + data + _CRC.pack(_masked_crc(data))


def write_records_atomically(path: str, records: list[bytes]) -> int:
  """Writes serialized records to `path` via a temporary name and a rename; returns bytes written."""
  tmp = f"{path}.tmp-{os.getpid()}"
  size = 0
  with open(tmp, "wb") as f:
    for record in records:
      framed = frame_record(record)
      f.write(framed)
      size += len(framed)
  os.replace(tmp, path)
  return size


def _header_length(header: bytes) -> Optional[int]:
  """The record length a 12-byte TFRecord header holds; None when its checksum does not match."""
  length, (crc,) = _LENGTH.unpack(header[:8])[0], _CRC.unpack(header[8:])
  return length if _masked_crc(header[:8]) == crc else None


def check_framing(path: str) -> int:
  """The number of records in a local TFRecord file, walking only its record headers; a damaged
  length header, or a file that ends inside a record (an interrupted copy or write), is a
  ValueError naming the file and the byte offset.

  One 12-byte read per record, so every local file can be checked before training starts (the
  records' data checksums are verified as they are read). Payload damage that keeps the framing
  is found by the reader, which names the file then.
  """
  size = os.path.getsize(path)
  count = offset = 0
  with open(path, "rb") as f:
    while offset < size:
      f.seek(offset)
      header = f.read(12)
      if len(header) < 12:
        raise ValueError(f"{path}: ends inside the header of record {count + 1} (byte {offset} "
                         f"of {size}): the file is truncated")
      length = _header_length(header)
      if length is None:
        raise ValueError(f"{path}: record {count + 1} has a damaged length header (byte {offset})")
      offset += 12 + length + 4
      count += 1
  if offset > size:
    raise ValueError(f"{path}: ends inside record {count} ({offset - size} bytes missing): the "
                     "file is truncated")
  return count


def read_records(path: str) -> Iterator[bytes]:
  """Yields the payloads of a TFRecord file, verifying both checksums."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: truncated TFRecord header")
      length = _header_length(header)
      if length is None:
        raise ValueError(f"{path}: corrupt TFRecord length checksum")
      data = f.read(length)
      footer = f.read(4)
      if len(data) < length or len(footer) < 4:
        raise ValueError(f"{path}: truncated TFRecord")
      if _masked_crc(data) != _CRC.unpack(footer)[0]:
        raise ValueError(f"{path}: corrupt TFRecord data checksum")
      yield data


def pretraining_features(input_ids: np.ndarray, segment_ids: np.ndarray, boundary: np.ndarray,
                         label: int, max_seq_length: int, masked_positions: np.ndarray | None = None,
                         masked_ids: np.ndarray | None = None,
                         max_predictions_per_seq: int = 0) -> dict[str, np.ndarray]:
  """Zero-pads one instance to the official fixed-length features (MLM fields if masks are given)."""
  length = len(input_ids)
  if length > max_seq_length:
    raise ValueError(f"instance of length {length} exceeds max_seq_length={max_seq_length}")
  def pad(x, n, dtype=np.int64):
    out = np.zeros([n], dtype)
    out[:len(x)] = x
    return out
  features = {
      "input_ids": pad(input_ids, max_seq_length),
      "input_mask": pad(np.ones([length]), max_seq_length),
      "segment_ids": pad(segment_ids, max_seq_length),
      "token_boundary": pad(boundary, max_seq_length),
  }
  if masked_positions is not None:
    n = len(masked_positions)
    features["masked_lm_positions"] = pad(masked_positions, max_predictions_per_seq)
    features["masked_lm_ids"] = pad(masked_ids, max_predictions_per_seq)
    features["masked_lm_weights"] = pad(np.ones([n]), max_predictions_per_seq, np.float32)
  features[LABEL_FEATURE] = np.array([label], np.int64)
  return features


class PretrainingRecordEncoder:
  """Framed TFRecords of many pretraining instances at once, for the data generator.

  The bytes are exactly `frame_record(encode_example(pretraining_features(...)))` of each instance
  (tests/test_pretraining_data.py parses them with TensorFlow), but built for a batch at a time with
  NumPy, leaving a handful of byte-string operations per record:
    * input_mask, segment_ids and token_boundary hold 0/1 values, one varint byte each, so their
      three map entries have a fixed length: they are written for the whole batch as the rows of
      one uint8 array;
    * the input_ids, masked_lm_positions and masked_lm_ids of the batch are varint-coded in one
      pass each; a record takes its slice, then one 0x00 byte per zero of padding, and the entry
      framing before them depends only on their byte length, so it is cached per length;
    * masked_lm_weights and next_sentence_labels take few values: their entries are precomputed.
  """

  def __init__(self, max_seq_length: int, max_predictions_per_seq: int = 0, masked: bool = True):
    self.max_seq_length = max_seq_length
    self.max_predictions_per_seq = max_predictions_per_seq
    self.masked = masked
    self._prefixes: dict[str, dict[int, bytes]] = {
        name: {} for name in ("input_ids",) + MLM_INT_FEATURES}
    self._headers: dict[int, bytes] = {}
    self._zeros = bytes(max(max_seq_length, max_predictions_per_seq))
    self._fixed_prefixes = [np.frombuffer(_int64_entry_prefix(name, max_seq_length), np.uint8)
                            for name in ("input_mask", "segment_ids", "token_boundary")]
    self._labels = [_feature_entry(LABEL_FEATURE, np.array([label], np.int64)) for label in (0, 1)]
    self._weights = [_feature_entry("masked_lm_weights", np.concatenate(
        [np.ones([n], np.float32), np.zeros([max_predictions_per_seq - n], np.float32)]))
                     for n in range(max_predictions_per_seq + 1)] if masked else []

  def _prefix(self, name: str, payload_length: int) -> bytes:
    """The cached `_int64_entry_prefix` (computed here on a cache miss)."""
    prefix = self._prefixes[name][payload_length] = _int64_entry_prefix(name, payload_length)
    return prefix

  def _fixed_entries(self, lengths: np.ndarray, segment_a_lengths: np.ndarray,
                     boundary: np.ndarray) -> np.ndarray:
    """The input_mask, segment_ids and token_boundary entries of every record, one row each."""
    seq = self.max_seq_length
    column = np.arange(seq)
    real = column < lengths[:, None]
    payloads = (real, real & (column >= segment_a_lengths[:, None]), None)
    rows = np.zeros([len(lengths), sum(len(p) + seq for p in self._fixed_prefixes)], np.uint8)
    offset = 0
    for prefix, payload in zip(self._fixed_prefixes, payloads):
      rows[:, offset:offset + len(prefix)] = prefix
      offset += len(prefix)
      if payload is None:  # token_boundary: the flat values go into the real slots, row-major
        rows[:, offset:offset + seq][real] = boundary
      else:
        rows[:, offset:offset + seq] = payload
      offset += seq
    return rows

  @staticmethod
  def _row_varints(values: np.ndarray, counts: np.ndarray) -> tuple[bytes, list[int]]:
    """Varints of flat `values` made of rows of `counts` values: the buffer and the byte offset of
    each row (N + 1 entries)."""
    buffer, offsets = _varint_buffer(values)
    rows = np.zeros([len(counts) + 1], np.int64)
    np.cumsum(counts, out=rows[1:])
    return buffer, offsets[rows].tolist()

  def encode(self, input_ids: np.ndarray, lengths: np.ndarray, segment_a_lengths: np.ndarray,
             boundary: np.ndarray, labels: np.ndarray, masked_positions: np.ndarray | None = None,
             masked_ids: np.ndarray | None = None,
             num_masked: np.ndarray | None = None) -> list[bytes]:
    """Framed records of N instances given as flat arrays.

    Args:
      input_ids: int [sum(lengths)], the (masked) real tokens of all instances, concatenated.
      lengths: int [N], real tokens per instance.
      segment_a_lengths: int [N], tokens with segment id 0 ([CLS] A [SEP]) per instance.
      boundary: int [sum(lengths)], token_boundary (0/1) of all instances, concatenated.
      labels: int [N], next_sentence_labels (0/1).
      masked_positions, masked_ids: int [sum(num_masked)], ascending positions within each
        instance and their original ids, concatenated (only when `masked`).
      num_masked: int [N], masked tokens per instance (only when `masked`).
    """
    seq, zeros = self.max_seq_length, self._zeros
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and int(lengths.max()) > seq:
      raise ValueError(f"instance of length {int(lengths.max())} exceeds max_seq_length={seq}")
    fixed = self._fixed_entries(lengths, np.asarray(segment_a_lengths, np.int64),
                                np.asarray(boundary).astype(np.uint8))
    fixed_size, fixed = fixed.shape[1], fixed.tobytes()
    ids_buffer, ids_starts = self._row_varints(input_ids, lengths)
    ids_pads = (seq - lengths).tolist()
    ids_prefixes, prefix = self._prefixes["input_ids"], self._prefix
    label_entries, headers = self._labels, self._headers
    if self.masked:
      num_masked = np.asarray(num_masked, np.int64)
      positions_buffer, positions_starts = self._row_varints(masked_positions, num_masked)
      label_buffer, label_starts = self._row_varints(masked_ids, num_masked)
      positions_prefixes = self._prefixes["masked_lm_positions"]
      label_prefixes = self._prefixes["masked_lm_ids"]
      mask_pads = (self.max_predictions_per_seq - num_masked).tolist()
      weights = self._weights
    out = []
    for i, label in enumerate(np.asarray(labels).tolist()):
      b0, b1, pad = ids_starts[i], ids_starts[i + 1], ids_pads[i]
      size = b1 - b0 + pad
      parts = [b"\x0a", b"", ids_prefixes.get(size) or prefix("input_ids", size),
               ids_buffer[b0:b1], zeros[:pad], fixed[i * fixed_size:(i + 1) * fixed_size]]
      if self.masked:
        p0, p1, pad = positions_starts[i], positions_starts[i + 1], mask_pads[i]
        l0, l1 = label_starts[i], label_starts[i + 1]
        size, label_size = p1 - p0 + pad, l1 - l0 + pad
        parts += [positions_prefixes.get(size) or prefix("masked_lm_positions", size),
                  positions_buffer[p0:p1], zeros[:pad],
                  label_prefixes.get(label_size) or prefix("masked_lm_ids", label_size),
                  label_buffer[l0:l1], zeros[:pad], weights[self.max_predictions_per_seq - pad]]
      parts.append(label_entries[label])
      parts[1] = _varint(sum(map(len, parts)) - 1)  # Example.features (field 1): its length
      example = b"".join(parts)
      header = headers.get(len(example))
      if header is None:
        header = headers[len(example)] = _record_header(len(example))
      out.append(b"".join((header, example, _CRC.pack(_masked_crc(example)))))
    return out
