"""TFRecord files of `tf.train.Example`s with the official ALBERT pretraining features, without TF.

The data generator runs in many worker processes; importing TensorFlow in each costs seconds and
hundreds of MB, and building `tf.train.Example` protos in Python dominates the official script's
write time. The protobuf wire format of an Example of int64/float lists is simple, so we encode it
directly with NumPy (varints for int64, little-endian float32) and frame it as TFRecord (length,
masked CRC32C of the length, data, masked CRC32C of the data). tests/test_pretraining_data.py checks
that TensorFlow parses these bytes to the same values and that TF-written records read back here.

Feature names/dtypes (reference albert_official.md §3.5): every field zero-padded to a fixed length.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping

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


def _varints(values: np.ndarray) -> bytes:
  """Varints of a non-negative int64 array, vectorised (this is the writer's hot loop)."""
  v = np.asarray(values, dtype=np.int64)
  if v.size == 0:
    return b""
  top = int(v.max())
  if top < 0x80:  # the common case for masks, segment ids, boundaries, positions
    return v.astype(np.uint8).tobytes()
  width = (top.bit_length() + 6) // 7
  shifts = np.arange(0, 7 * width, 7, dtype=np.int64)
  groups = (v[:, None] >> shifts) & 0x7F
  # Bytes needed per value; bytes past that are dropped and all but the last get the high bit.
  nbytes = 1 + (v[:, None] >= (np.int64(1) << shifts[1:])).sum(axis=1)
  col = np.arange(width)
  groups |= (col < nbytes[:, None] - 1) * 0x80
  return groups.astype(np.uint8)[col < nbytes[:, None]].tobytes()


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


def encode_example(features: Mapping[str, np.ndarray]) -> bytes:
  """Serialises {name: 1-D array} as a `tf.train.Example`; float32 arrays become float lists."""
  entries = []
  for name, values in features.items():
    values = np.asarray(values)
    feature = _float_feature(values) if values.dtype.kind == "f" else _int64_feature(values)
    # Features.feature is a map<string, Feature>: each entry is {key: 1, value: 2}.
    entry = _key_entry(name) + _len_delimited(2, feature)
    entries.append(_len_delimited(1, entry))
  return _len_delimited(1, b"".join(entries))  # Example.features (field 1)


def _masked_crc(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC of it, data, masked CRC of the data."""
  header = struct.pack("<Q", len(data))
  return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


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


def read_records(path: str) -> Iterator[bytes]:
  """Yields the payloads of a TFRecord file, verifying both checksums."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: truncated TFRecord header")
      (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
      if _masked_crc(header[:8]) != length_crc:
        raise ValueError(f"{path}: corrupt TFRecord length checksum")
      data = f.read(length)
      footer = f.read(4)
      if len(data) < length or len(footer) < 4:
        raise ValueError(f"{path}: truncated TFRecord")
      if _masked_crc(data) != struct.unpack("<I", footer)[0]:
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
