"""ALBERT pretraining instances: documents -> `[CLS] A [SEP] B [SEP]` with an SOP (or NSP) label.

This is the official `create_instances_from_document` (google-research/albert, same file name) on
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

import bisect
import dataclasses
import hashlib
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence

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
  a_lo, a_hi, b_lo, b_hi = _truncate(0, len(a), 0, len(b), max_num_tokens, rng.random)
  return a[a_lo:a_hi], b[b_lo:b_hi]


def _truncate(a_lo: int, a_hi: int, b_lo: int, b_hi: int, max_num_tokens: int,
              random_: Callable[[], float]) -> tuple[int, int, int, int]:
  """`truncate_seq_pair` on index ranges [a_lo, a_hi) and [b_lo, b_hi)."""
  while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
    if (a_hi - a_lo) > (b_hi - b_lo):
      if random_() < 0.5:
        a_lo += 1
      else:
        a_hi -= 1
    else:
      if random_() < 0.5:
        b_lo += 1
      else:
        b_hi -= 1
  return a_lo, a_hi, b_lo, b_hi


# A sequence pair as index ranges, (a_lo, a_hi, b_document, b_lo, b_hi, kind, target_seq_length):
# A is [a_lo, a_hi) of the document being processed, B is [b_lo, b_hi) of document b_document
# (another one only for random-document pairs).
Pair = tuple[int, int, int, int, int, str, int]


def sentence_pairs(doc_offsets: Sequence[Sequence[int]], document_index: int,
                   config: InstanceConfig, rng: random.Random) -> Iterator[Pair]:
  """The pairs of one pass over a document: the official algorithm (module doc) on sentence offsets.

  `doc_offsets[d]` are the sentence boundaries of document d (sentence k is tokens
  [offsets[k], offsets[k + 1]) of that document; any origin, e.g. a position in an array shared by
  all documents); `doc_offsets` is also the pool random-document segments are drawn from. Pairs
  come out truncated, in order. The caller masks each pair before asking for the next one, with the
  same `rng`: that interleaving of draws is the official one.

  `rng._randbelow(k)` is exactly what `rng.randint(a, a + k - 1) - a` computes (CPython's randint
  -> randrange -> _randbelow), without randint's argument checking.
  """
  offsets = doc_offsets[document_index]
  num_sentences = len(offsets) - 1
  max_num_tokens = config.max_seq_length - 3
  random_, randbelow = rng.random, rng._randbelow  # noqa: SLF001  (see docstring)
  skip_single = config.single_segment_negatives == "skip"
  random_next = config.random_next_sentence
  target_seq_length = max_num_tokens
  if random_() < config.short_seq_prob:
    target_seq_length = 2 + randbelow(max_num_tokens - 1)  # randint(2, max_num_tokens)

  chunk_start = 0  # first sentence of the current chunk
  i = 0
  while i < num_sentences:
    if i == num_sentences - 1 or offsets[i + 1] - offsets[chunk_start] >= target_seq_length:
      num_in_chunk = i + 1 - chunk_start
      a_end = 1 + randbelow(num_in_chunk - 1) if num_in_chunk >= 2 else 1
      a_lo, split = offsets[chunk_start], offsets[chunk_start + a_end]
      if num_in_chunk == 1 and skip_single:
        chunk_start = i + 1
        i += 1
        continue
      if num_in_chunk == 1 or (random_next and random_() < 0.5):
        kind = RANDOM_DOCUMENT
        b_document, b_lo, b_hi = _random_document_segment(
            doc_offsets, document_index, target_seq_length - (split - a_lo), randbelow)
        a_hi = split
        i -= num_in_chunk - a_end  # put the unused sentences back (official behaviour)
      elif not random_next and random_() < 0.5:
        kind, b_document = SWAPPED, document_index
        a_lo, a_hi, b_lo, b_hi = split, offsets[i + 1], a_lo, split
      else:
        kind, b_document = IN_ORDER, document_index
        a_hi, b_lo, b_hi = split, split, offsets[i + 1]
      a_lo, a_hi, b_lo, b_hi = _truncate(a_lo, a_hi, b_lo, b_hi, max_num_tokens, random_)
      yield a_lo, a_hi, b_document, b_lo, b_hi, kind, target_seq_length
      chunk_start = i + 1
    i += 1


def _random_document_segment(doc_offsets: Sequence[Sequence[int]], document_index: int,
                             target_b_length: int,
                             randbelow: Callable[[int], int]) -> tuple[int, int, int]:
  """Sentences from a random start in a random other document until `target_b_length` tokens;
  returns (document, lo, hi)."""
  num_documents = len(doc_offsets)
  for _ in range(10):  # official: up to 10 tries to avoid the current document
    random_index = randbelow(num_documents)
    if random_index != document_index:
      break
  offsets = doc_offsets[random_index]
  num_sentences = len(offsets) - 1
  start = randbelow(num_sentences)
  # The official loop adds whole sentences and stops once the length reaches the target: the end is
  # the first sentence boundary at or past offsets[start] + target, and at least one sentence.
  end = bisect.bisect_left(offsets, offsets[start] + target_b_length)
  end = min(max(end, start + 1), num_sentences)
  return random_index, offsets[start], offsets[end]


class _DocumentOffsets(Sequence):
  """`doc_offsets` for `sentence_pairs` over a list of Documents (each in its own coordinates)."""

  def __init__(self, documents: Sequence[Document]):
    self._documents = documents

  def __len__(self) -> int:
    return len(self._documents)

  def __getitem__(self, index):
    return self._documents[index].offsets.tolist()


def create_instances_from_document(
    documents: Sequence[Document], document_index: int, config: InstanceConfig,
    specials: SpecialIds, mask_config: masking.MaskingConfig | None,
    rng: random.Random) -> list[Instance]:
  """All instances of one pass over `documents[document_index]` (official algorithm, see module doc).

  `documents` is the pool random-document segments are drawn from; `mask_config=None` skips masking
  (token-only records for dynamic masking). The data generator uses `PassBuilder` instead, which
  makes the same instances with the same draws and writes them as records in bulk.
  """
  instances = []
  tokens = documents[document_index].tokens
  for a_lo, a_hi, b_document, b_lo, b_hi, kind, target in sentence_pairs(
      _DocumentOffsets(documents), document_index, config, rng):
    instances.append(_build_instance(tokens[a_lo:a_hi], documents[b_document].tokens[b_lo:b_hi],
                                     int(kind != IN_ORDER), kind, target, specials, mask_config,
                                     rng))
  return instances


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


# --------------------------------------------------------------------------------------------------
# Bulk path of the data generator: one pass of a block of documents -> framed records.

@dataclasses.dataclass
class DocumentBlock:
  """The documents of one work unit, sharing one token array.

  Document d's sentence k is tokens[offsets[d][k]:offsets[d][k + 1]]. Offsets are Python lists
  because the instance loop reads them one at a time (NumPy scalar access is several times slower).
  """

  tokens: np.ndarray  # int32 [num_tokens]
  offsets: list[list[int]]

  # Ids are moved from Python lists into NumPy every this many tokens: a list of Python ints costs
  # about 9 times the memory of the int32 array.
  _FLUSH_TOKENS = 1 << 16

  @classmethod
  def from_documents(cls, documents: Iterable[Sequence[Sequence[int]]]) -> "DocumentBlock":
    """From documents as lists of sentences of ids (streamed); empty sentences and documents are
    dropped."""
    offsets, arrays, pending, total, flushed = [], [], [], 0, 0
    for sentences in documents:
      bounds = [total]
      for sentence in sentences:
        if len(sentence):
          pending.append(sentence)
          total += len(sentence)
          bounds.append(total)
      if len(bounds) > 1:
        offsets.append(bounds)
      if total - flushed >= cls._FLUSH_TOKENS:
        ids = itertools.chain.from_iterable(pending)
        arrays.append(np.fromiter(ids, np.int32, total - flushed))
        pending, flushed = [], total
    arrays.append(np.fromiter(itertools.chain.from_iterable(pending), np.int32, total - flushed))
    return cls(np.concatenate(arrays), offsets)

  def sentence_lengths(self) -> np.ndarray:
    """Tokens per sentence, over all documents."""
    return np.concatenate([np.diff(o) for o in self.offsets]) if self.offsets else np.zeros([0])


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """concatenate([arange(s, s + n) for s, n in zip(starts, lengths)]), vectorised."""
  ends = np.cumsum(lengths)
  return np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)


_KIND_CODES = {IN_ORDER: 0, SWAPPED: 1, RANDOM_DOCUMENT: 2}
_KINDS = (IN_ORDER, SWAPPED, RANDOM_DOCUMENT)


class PassBuilder:
  """Creates the instances of passes over a block's documents and encodes them as records.

  Same instances, same draws and same record bytes as `create_instances_from_document` +
  `Instance.to_example` + `records.frame_record`, organised for throughput: while the documents
  are walked, each instance is a few integers in flat lists (index ranges into the block, masked
  candidates and their new ids); for every chunk of instances, token arrays, masks, boundaries and
  records are then built with a few NumPy calls (`records.PretrainingRecordEncoder`), so that only
  the framed records of a pass stay in memory. Use: `reset()`, `add_document()` for each document,
  then `finish()`; the counts of the pass are attributes.
  """

  # Tokens encoded per NumPy batch (CHUNK_TOKENS // max_seq_length instances): large enough to
  # amortise the calls, small enough to keep the temporaries (a few int64 per token) and the
  # pending lists at a few MB.
  CHUNK_TOKENS = 1 << 16

  def __init__(self, block: DocumentBlock, config: InstanceConfig, specials: SpecialIds,
               mask_config: masking.MaskingConfig | None,
               encoder: records.PretrainingRecordEncoder):
    self.block, self.config, self.mask_config, self.encoder = block, config, mask_config, encoder
    self.specials = specials
    self._is_start = specials.start_table[block.tokens].view(np.uint8)  # token_boundary of tokens
    # For `itertools.compress`: unit boundaries of an instance without NumPy calls.
    self._is_start_view = memoryview(self._is_start)
    # masked_lm_prob=0 writes the MLM features empty and draws nothing (as the per-instance path).
    self._draw_masks = mask_config is not None and mask_config.masked_lm_prob > 0
    if self._draw_masks:
      self._budgets = [masking.num_to_predict(n, mask_config)
                       for n in range(config.max_seq_length + 1)]
    self._chunk = max(1, self.CHUNK_TOKENS // config.max_seq_length)
    self.reset()

  def reset(self) -> None:
    """Starts a new pass: no records, zero counts."""
    self.records: list[bytes] = []  # framed, in creation order
    self.tokens = self.masked_tokens = self.short_target_instances = 0
    self.kinds = np.zeros([len(_KINDS)], np.int64)
    self._clear_pending()

  def _clear_pending(self) -> None:
    self._a_lo: list[int] = []
    self._a_hi: list[int] = []
    self._b_lo: list[int] = []
    self._b_hi: list[int] = []
    self._kinds: list[int] = []
    self._targets: list[int] = []
    self._num_masked: list[int] = []
    self._masked: list[int] = []  # candidate indexes (0 = first token of A), all instances
    self._values: list[int] = []  # the id each masked token gets, or masking.KEEP

  def __len__(self) -> int:
    """Instances of the pass so far."""
    return len(self.records) + len(self._kinds)

  def kind_counts(self) -> dict[str, int]:
    return {kind: int(c) for kind, c in zip(_KINDS, self.kinds) if c}

  def add_document(self, document_index: int, rng: random.Random) -> None:
    """Adds the instances of one document, drawn from `rng` as in
    `create_instances_from_document`."""
    mask_config, is_start, compress = self.mask_config, self._is_start_view, itertools.compress
    whole_word = mask_config is not None and mask_config.do_whole_word_mask
    for a_lo, a_hi, _, b_lo, b_hi, kind, target in sentence_pairs(
        self.block.offsets, document_index, self.config, rng):
      self._a_lo.append(a_lo)
      self._a_hi.append(a_hi)
      self._b_lo.append(b_lo)
      self._b_hi.append(b_hi)
      self._kinds.append(_KIND_CODES[kind])
      self._targets.append(target)
      if not self._draw_masks:
        self._num_masked.append(0)
        continue
      length_a = a_hi - a_lo
      length = length_a + b_hi - b_lo
      if whole_word:  # masking.unit_bounds of the start flags of A then B
        bounds = list(compress(range(length_a), is_start[a_lo:a_hi]))
        bounds += compress(range(length_a, length), is_start[b_lo:b_hi])
        if not bounds or bounds[0]:
          bounds.insert(0, 0)
        bounds.append(length)
      else:
        bounds = list(range(length + 1))
      self._num_masked.append(masking.draw_masks(bounds, self._budgets[length + 3], mask_config,
                                                 rng, self._masked, self._values))
    if len(self._kinds) >= self._chunk:
      self._encode_pending()

  def finish(self) -> list[bytes]:
    """The framed record of every instance of the pass, in creation order."""
    self._encode_pending()
    return self.records

  def _encode_pending(self) -> None:
    """Encodes the pending instances into records and updates the counts."""
    n = len(self._kinds)
    if not n:
      return
    a_lo, a_hi = np.array(self._a_lo, np.int64), np.array(self._a_hi, np.int64)
    b_lo, b_hi = np.array(self._b_lo, np.int64), np.array(self._b_hi, np.int64)
    kinds = np.array(self._kinds, np.int64)
    la, lb = a_hi - a_lo, b_hi - b_lo
    lengths = la + lb + 3
    num_masked = np.array(self._num_masked, np.int64)
    self.tokens += int(lengths.sum())
    self.masked_tokens += int(num_masked.sum())
    self.short_target_instances += int(
        (np.array(self._targets) < self.config.max_seq_length - 3).sum())
    self.kinds += np.bincount(kinds, minlength=len(_KINDS))
    # Gather [CLS] A [SEP] B [SEP] of every instance from the block in one indexing operation
    # (token 0 stands in for the specials, then overwritten).
    one, zero = np.ones([n], np.int64), np.zeros([n], np.int64)
    index = _ragged_arange(np.stack([zero, a_lo, zero, b_lo, zero], axis=1).ravel(),
                           np.stack([one, la, one, lb, one], axis=1).ravel())
    input_ids, boundary = self.block.tokens[index], self._is_start[index]
    first = np.cumsum(lengths) - lengths
    input_ids[first] = self.specials.cls_id
    input_ids[first + la + 1] = input_ids[first + lengths - 1] = self.specials.sep_id
    boundary[first] = boundary[first + la + 1] = boundary[first + lengths - 1] = 1
    labels = (kinds != _KIND_CODES[IN_ORDER]).astype(np.int64)
    if self.mask_config is None:
      self.records += self.encoder.encode(input_ids, lengths, la + 2, boundary, labels)
    else:
      candidates = np.array(self._masked, np.int64)
      values = np.array(self._values, np.int64)
      instance = np.repeat(np.arange(n), num_masked)
      # Candidate c is token c + 1 of A ([CLS] first), or skips the middle [SEP] too in B.
      positions = candidates + 1 + (candidates >= la[instance])
      flat = first[instance] + positions
      label_ids = input_ids[flat]
      changed = values != masking.KEEP
      input_ids[flat[changed]] = values[changed]
      order = np.lexsort((positions, instance))
      self.records += self.encoder.encode(input_ids, lengths, la + 2, boundary, labels,
                                          positions[order], label_ids[order], num_masked)
    self._clear_pending()
