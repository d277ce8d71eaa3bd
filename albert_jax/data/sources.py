"""Input sources for pretraining-data creation: work units and the documents they contain.

A work unit is the granule of parallelism, of randomness and of output: one unit -> one output file,
seeded by its index. Units are defined by the input alone (never by the number of workers), which is
what makes the output identical for any `--num_workers`.

Text files (official format: one sentence per line, a blank line between documents) are cut into
byte blocks of `block_size` bytes. A unit [start, end) owns the documents that follow the first
blank line starting at or after `start` (or the file start, for the first block) and reads on until
the first blank line starting at or after `end` — the very line the next block anchors on — so each
document belongs to exactly one block, however the cut falls, and memory per unit is bounded by the
block size (plus one document).

A tfds text dataset is cut into `num_shards` even sub-splits; each example is a document whose raw
text is split into sentences by `sentences.document_to_sentences`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from albert_jax.data import sentences


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  index: int
  path: str = ""  # text unit: the file; tfds unit: the dataset name
  start: int = 0  # text unit: byte range [start, end)
  end: int = 0
  split: str = ""  # tfds unit: the sub-split, e.g. "train[0%:10%]"
  text_field: str = "text"
  data_dir: str | None = None

  @property
  def is_tfds(self) -> bool:
    return bool(self.split)

  def describe(self) -> str:
    if self.is_tfds:
      return f"tfds {self.path} split {self.split}"
    return f"{self.path} bytes [{self.start}, {self.end})"


@dataclasses.dataclass
class ReadCounters:
  """Input problems found while reading, reported in the summary."""

  invalid_utf8_lines: int = 0
  input_bytes: int = 0


def plan_text_units(files: list[str], block_size: int) -> tuple[list[WorkUnit], list[str]]:
  """Cuts files into byte blocks; returns the units and the list of empty files (no units)."""
  if block_size < 1:
    raise ValueError(f"block size {block_size}: must be >= 1 byte.")
  units, empty = [], []
  for path in files:
    size = os.path.getsize(path)
    if size == 0:
      empty.append(path)
      continue
    for start in range(0, size, block_size):
      units.append(WorkUnit(index=len(units), path=path, start=start,
                            end=min(start + block_size, size)))
  return units, empty


def plan_tfds_units(name: str, split: str, num_shards: int, text_field: str,
                    data_dir: str | None) -> list[WorkUnit]:
  """Even sub-splits of a tfds split (tfds is imported only on this path: it pulls in TensorFlow)."""
  import tensorflow_datasets as tfds
  if num_shards < 1:
    raise ValueError(f"--tfds_num_shards={num_shards}: must be >= 1.")
  subsplits = tfds.even_splits(split, n=num_shards)
  return [WorkUnit(index=i, path=name, split=str(s), text_field=text_field, data_dir=data_dir)
          for i, s in enumerate(subsplits)]


def _decode(line: bytes, counters: ReadCounters) -> str:
  try:
    return line.decode("utf-8")
  except UnicodeDecodeError:
    counters.invalid_utf8_lines += 1
    return line.decode("utf-8", errors="replace")


def _is_blank(line: bytes) -> bool:
  return not line.strip()


def iter_text_documents(unit: WorkUnit, counters: ReadCounters) -> Iterator[list[str]]:
  """Yields the documents (lists of raw sentence lines) owned by a text block."""
  counters.input_bytes += unit.end - unit.start  # so that units add up to the file sizes
  with open(unit.path, "rb") as f:
    pos = 0
    if unit.start > 0:
      # Align to the first line starting at or after `start`, then to the first blank line there.
      f.seek(unit.start - 1)
      pos = unit.start - 1 + len(f.readline())
      while True:
        if pos >= unit.end:
          return  # the anchor lies in a later block: this block owns nothing
        line = f.readline()
        if not line:
          return
        pos += len(line)
        if _is_blank(line):
          break
    document: list[str] = []
    while True:
      line_start = pos
      line = f.readline()
      pos += len(line)
      if not line or (_is_blank(line) and line_start >= unit.end):
        break
      if _is_blank(line):
        if document:
          yield document
        document = []
      else:
        document.append(_decode(line, counters))
    if document:
      yield document


def iter_tfds_documents(unit: WorkUnit, counters: ReadCounters) -> Iterator[list[str]]:
  """Yields the documents (lists of sentences) of a tfds sub-split."""
  import tensorflow_datasets as tfds
  dataset = tfds.load(unit.path, split=unit.split, data_dir=unit.data_dir, shuffle_files=False)
  for example in tfds.as_numpy(dataset):
    if unit.text_field not in example:
      raise KeyError(f"--tfds_text_field={unit.text_field!r}: {unit.path} has fields "
                     f"{sorted(example)}.")
    raw = example[unit.text_field]
    counters.input_bytes += len(raw)
    text = _decode(raw, counters) if isinstance(raw, bytes) else str(raw)
    document = list(sentences.document_to_sentences(text))
    if document:
      yield document


def iter_documents(unit: WorkUnit, counters: ReadCounters) -> Iterator[list[str]]:
  return iter_tfds_documents(unit, counters) if unit.is_tfds else iter_text_documents(unit, counters)


def looks_binary(path: str, probe: int = 8192) -> bool:
  """Whether the start of a local text file holds NUL bytes or is not UTF-8 (a binary file given
  as corpus, e.g. by a too-wide glob)."""
  with open(path, "rb") as f:
    head = f.read(probe)
  if b"\0" in head:
    return True
  try:
    head.decode("utf-8")
  except UnicodeDecodeError as e:
    return e.end < len(head) - 3  # a character cut at the probe's end is not an error
  return False
