"""ALBERT pretraining instances: documents -> `[CLS] A [SEP] B [SEP]` with an SOP (or NSP) label.

This is the official `create_instances_from_document` (reference albert_official.md §3.3) on
documents held as one flat id array plus sentence offsets, so segments are array slices:
  * target length = max_seq_length - 3, or with probability short_seq_prob a uniform draw in
    [2, max_seq_length - 3] (once per document and pass);
  * sentences accumulate into a chunk until it reaches the target or the document ends; A is the
    first a_end sentences (a_end uniform in [1, len(chunk) - 1]), B the rest;
  * SOP mode (default): with probability 0.5 A and B are swapped (label 1), else in order (label 0);
    NSP mode (`random_next_sentence`): with probability 0.5 B comes from a random document (label 1);
  * a chunk of ONE sentence cannot be split, and the official code then takes B from a random other
    document (label 1) and puts the unused sentences back — NSP-style negatives inside SOP data
    (official issue #234). `single_segment_negatives="random_document"` keeps that (default, as in the
    paper's data); `"skip"` drops such chunks so that SOP labels are pure order labels;
  * the pair is truncated to max_seq_length - 3 tokens by removing one token at a time from the
    longer side, front or back with probability 0.5 each; then masked (masking.py).

Streaming change: the official script picks the random document from the whole corpus, which forces
it to hold the corpus in memory. We pick it from the documents of the same work unit (a block of an
input file, or a tfds shard; thousands of documents at the default block size), which keeps memory
bounded by the block size. The only difference is that random-document negatives come from nearby
text (the same file region) rather than from anywhere in the corpus.

Randomness: every draw comes from a `random.Random` seeded from (seed, unit, pass, document), see
`document_rng`, so the output depends on neither the number of workers nor the processing order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence

import numpy as np

from albert_jax.data import masking, records

SINGLE_SEGMENT_NEGATIVES = ("random_document", "skip")
# Instance kinds, for the summary's label balance.
IN_ORDER, SWAPPED, RANDOM_DOCUMENT = "in_order", "swapped", "random_document"


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
  """How documents become sequence pairs; field names follow the official flags."""

  max_seq_length: int = 512
  short_seq_prob: float = 0.1
  random_next_sentence: bool = False
  single_segment_negatives: str = "random_document"

  def __post_init__(self):
    if self.max_seq_length < 5:
      raise ValueError(f"max_seq_length={self.max_seq_length}: must be >= 5 "
                       "([CLS], [SEP], [SEP] and at least one token per segment).")
    if not 0.0 <= self.short_seq_prob <= 1.0:
      raise ValueError(f"short_seq_prob={self.short_seq_prob}: must be in [0, 1].")
    if self.single_segment_negatives not in SINGLE_SEGMENT_NEGATIVES:
      raise ValueError(f"single_segment_negatives={self.single_segment_negatives!r}: "
                       f"allowed values are {SINGLE_SEGMENT_NEGATIVES}.")


@dataclasses.dataclass(frozen=True)
class Document:
  """A tokenized document: all ids in one array; sentence k is tokens[offsets[k]:offsets[k+1]]."""

  tokens: np.ndarray  # int32 [num_tokens]
  offsets: np.ndarray  # int64 [num_sentences + 1], offsets[0] == 0

  @classmethod
  def from_sentences(cls, sentences: Sequence[Sequence[int]]) -> "Document":
    sentences = [s for s in sentences if len(s)]
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = (np.concatenate([np.asarray(s, np.int32) for s in sentences]) if sentences
              else np.zeros([0], np.int32))
    return cls(tokens, offsets)

  @property
  def num_sentences(self) -> int:
    return len(self.offsets) - 1


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """What instance creation needs to know about the vocabulary."""

  cls_id: int
  sep_id: int
  start_table: np.ndarray  # bool [vocab_size]: tokenization.is_start_piece of every id


@dataclasses.dataclass
class Instance:
  input_ids: np.ndarray  # int32 [length], masked if static masking is on
  segment_ids: np.ndarray  # int32 [length]
  token_boundary: np.ndarray  # int32 [length]
  label: int  # 1 = swapped (SOP) / random next (NSP), 0 = in order
  kind: str  # IN_ORDER, SWAPPED or RANDOM_DOCUMENT
  target_seq_length: int  # the drawn target (for statistics; not written)
  masked_positions: np.ndarray | None = None
  masked_ids: np.ndarray | None = None

  def to_example(self, max_seq_length: int, max_predictions_per_seq: int) -> bytes:
    """Serialized `tf.train.Example` with the official features (token-only without masks)."""
    return records.encode_example(records.pretraining_features(
        self.input_ids, self.segment_ids, self.token_boundary, self.label, max_seq_length,
        self.masked_positions, self.masked_ids, max_predictions_per_seq))


def document_rng(seed: int, *key: int | str) -> random.Random:
  """A generator seeded by a stable hash of (seed, *key): independent streams, no shared state."""
  digest = hashlib.blake2b(repr((seed,) + key).encode(), digest_size=16).digest()
  return random.Random(int.from_bytes(digest, "little"))


def truncate_seq_pair(a: np.ndarray, b: np.ndarray, max_num_tokens: int,
                      rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
  """Official truncation: drop one token from the longer side (front or back, p=0.5) until it fits."""
  a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
  while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
    if (a_hi - a_lo) > (b_hi - b_lo):
      if rng.random() < 0.5:
        a_lo += 1
      else:
        a_hi -= 1
    else:
      if rng.random() < 0.5:
        b_lo += 1
      else:
        b_hi -= 1
  return a[a_lo:a_hi], b[b_lo:b_hi]


def create_instances_from_document(
    documents: Sequence[Document], document_index: int, config: InstanceConfig,
    specials: SpecialIds, mask_config: masking.MaskingConfig | None,
    rng: random.Random) -> list[Instance]:
  """All instances of one pass over `documents[document_index]` (official algorithm, see module doc).

  `documents` is the pool random-document segments are drawn from; `mask_config=None` skips masking
  (token-only records for dynamic masking).
  """
  document = documents[document_index]
  tokens, offsets = document.tokens, document.offsets
  num_sentences = document.num_sentences
  max_num_tokens = config.max_seq_length - 3
  target_seq_length = max_num_tokens
  if rng.random() < config.short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)

  instances = []
  chunk_start = 0  # first sentence of the current chunk
  i = 0
  while i < num_sentences:
    chunk_length = int(offsets[i + 1] - offsets[chunk_start])
    if i == num_sentences - 1 or chunk_length >= target_seq_length:
      num_in_chunk = i + 1 - chunk_start
      a_end = rng.randint(1, num_in_chunk - 1) if num_in_chunk >= 2 else 1
      split = offsets[chunk_start + a_end]
      tokens_a = tokens[offsets[chunk_start]:split]
      if num_in_chunk == 1 and config.single_segment_negatives == "skip":
        chunk_start = i + 1
        i += 1
        continue
      if num_in_chunk == 1 or (config.random_next_sentence and rng.random() < 0.5):
        kind, label = RANDOM_DOCUMENT, 1
        tokens_b = _random_document_segment(documents, document_index,
                                            target_seq_length - len(tokens_a), rng)
        i -= num_in_chunk - a_end  # put the unused sentences back (official behaviour)
      elif not config.random_next_sentence and rng.random() < 0.5:
        kind, label = SWAPPED, 1
        tokens_a, tokens_b = tokens[split:offsets[i + 1]], tokens_a
      else:
        kind, label = IN_ORDER, 0
        tokens_b = tokens[split:offsets[i + 1]]
      tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
      instances.append(_build_instance(tokens_a, tokens_b, label, kind, target_seq_length,
                                       specials, mask_config, rng))
      chunk_start = i + 1
    i += 1
  return instances


def _random_document_segment(documents: Sequence[Document], document_index: int,
                             target_b_length: int, rng: random.Random) -> np.ndarray:
  """Sentences from a random start in a random other document until `target_b_length` tokens."""
  for _ in range(10):  # official: up to 10 tries to avoid the current document
    random_index = rng.randint(0, len(documents) - 1)
    if random_index != document_index:
      break
  other = documents[random_index]
  start = rng.randint(0, other.num_sentences - 1)
  # The official loop adds whole sentences and stops once the length reaches the target: the end is
  # the first sentence boundary at or past offsets[start] + target, and at least one sentence.
  end = int(np.searchsorted(other.offsets, other.offsets[start] + target_b_length, side="left"))
  end = min(max(end, start + 1), other.num_sentences)
  return other.tokens[other.offsets[start]:other.offsets[end]]


def _build_instance(tokens_a: np.ndarray, tokens_b: np.ndarray, label: int, kind: str,
                    target_seq_length: int, specials: SpecialIds,
                    mask_config: masking.MaskingConfig | None, rng: random.Random) -> Instance:
  cls, sep = np.array([specials.cls_id], np.int32), np.array([specials.sep_id], np.int32)
  input_ids = np.concatenate([cls, tokens_a, sep, tokens_b, sep])
  segment_ids = np.zeros(len(input_ids), np.int32)
  segment_ids[len(tokens_a) + 2:] = 1
  is_special = np.zeros(len(input_ids), bool)
  is_special[[0, len(tokens_a) + 1, len(input_ids) - 1]] = True
  is_start = specials.start_table[input_ids]
  boundary = masking.token_boundary(is_start, is_special)
  instance = Instance(input_ids, segment_ids, boundary, label, kind, target_seq_length)
  if mask_config is not None:
    masked = masking.create_masked_lm_predictions(input_ids, is_start, is_special, mask_config, rng)
    instance.input_ids = masked.input_ids
    instance.masked_positions = masked.positions
    instance.masked_ids = masked.label_ids
  return instance
