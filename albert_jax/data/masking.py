"""Whole-word n-gram masking for ALBERT's masked-LM objective (official `create_masked_lm_predictions`).

One function serves both static masking (create_pretraining_data, masks written to TFRecords) and
dynamic masking (pipeline.py, masks drawn at read time from token-only records), so the two modes
have the same statistics by construction.

Algorithm (google-research/albert `create_pretraining_data.py`), on the real (unpadded) tokens:
  1. Word units: skip [CLS]/[SEP]; with whole-word masking a non-start piece joins the previous unit
     (a unit may even span a [SEP], exactly as in the official code).
  2. num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob))).
  3. Visit unit starts in a uniformly random order; at each, draw n in 1..ngram with p(n) ∝ 1/n
     (reversed when favor_shorter_ngram=False); the candidate is the n units from the start (fewer at
     the end of the sequence); shrink n until it fits the remaining budget, else skip; skip if any of
     its tokens is already masked.
  4. Per token (not per span): 80% [MASK], 10% keep, 10% a uniform random id from the whole vocab.

Intended deviations, none of which changes the distribution of the output:
  * The n draw uses the caller's seeded `random.Random` instead of the unseeded global NumPy RNG, so
    data generation is reproducible.
  * The official code materialises and shuffles the candidate list for every unit start, then
    usually stops after a handful; we draw the permutation lazily (a partial Fisher-Yates shuffle),
    which yields the same uniform order at a fraction of the cost.
  * The official second shuffle of the candidates only feeds `do_permutation` (off by default and
    not implemented here), so it is not performed.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import random
from typing import NamedTuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """Settings of the masked-LM objective; field names follow the official flags."""

  vocab_size: int
  mask_id: int
  masked_lm_prob: float = 0.15
  max_predictions_per_seq: int = 20
  ngram: int = 3
  favor_shorter_ngram: bool = True
  do_whole_word_mask: bool = True

  def __post_init__(self):
    if not 0.0 <= self.masked_lm_prob <= 1.0:
      raise ValueError(f"masked_lm_prob={self.masked_lm_prob}: must be in [0, 1].")
    if self.max_predictions_per_seq < 1:
      raise ValueError(f"max_predictions_per_seq={self.max_predictions_per_seq}: must be >= 1.")
    if self.ngram < 1:
      raise ValueError(f"ngram={self.ngram}: must be >= 1.")
    if not 0 <= self.mask_id < self.vocab_size:
      raise ValueError(f"mask_id={self.mask_id}: must be in [0, vocab_size={self.vocab_size}).")

  @functools.cached_property
  def cdf(self) -> list[float]:
    """`ngram_cdf()`, computed once (it is read for every masked sequence)."""
    return self.ngram_cdf()

  def ngram_cdf(self) -> list[float]:
    """Cumulative p(n) for n = 1..ngram."""
    pvals = 1.0 / np.arange(1, self.ngram + 1)
    pvals /= pvals.sum()
    if not self.favor_shorter_ngram:
      pvals = pvals[::-1]
    cdf = np.cumsum(pvals).tolist()
    cdf[-1] = 1.0  # guard against rounding leaving a gap above the last bucket
    return cdf


class MaskedLm(NamedTuple):
  """Result of masking one sequence."""

  input_ids: np.ndarray  # int32 [len]: the sequence with masks applied
  positions: np.ndarray  # int32 [num_masked]: masked positions, ascending
  label_ids: np.ndarray  # int32 [num_masked]: original ids at `positions`
  span_words: tuple[int, ...] = ()  # words (units) in each accepted n-gram, in order (statistics)


# `draw_masks` marks a masked token that keeps its original id with this value.
KEEP = -1


def token_boundary(is_start: np.ndarray, is_special: np.ndarray) -> np.ndarray:
  """The official `token_boundary` feature: 1 at [CLS]/[SEP] and at word-start pieces."""
  return (is_start | is_special).astype(np.int32)


def num_to_predict(length: int, config: MaskingConfig) -> int:
  """How many tokens the official recipe masks in a sequence of `length` real tokens."""
  return min(config.max_predictions_per_seq, max(1, int(round(length * config.masked_lm_prob))))


def unit_bounds(is_start: np.ndarray, do_whole_word_mask: bool) -> list[int]:
  """Word units over the candidates (the non-special tokens, in order) as boundaries.

  Unit k is candidates [bounds[k], bounds[k + 1]); the last entry is the number of candidates.
  `is_start` is over the candidates only. With whole-word masking a unit starts at each start piece
  and at the first candidate (start piece or not); otherwise every candidate is a unit.
  """
  n = len(is_start)
  if not do_whole_word_mask:
    return list(range(n + 1))
  bounds = np.flatnonzero(is_start).tolist()
  if n and (not bounds or bounds[0]):
    bounds.insert(0, 0)
  bounds.append(n)
  return bounds


def draw_masks(bounds: list[int], budget: int, config: MaskingConfig, rng: random.Random,
               masked: list[int], values: list[int], span_words: list[int] | None = None) -> int:
  """Steps 3-4 of the algorithm on unit boundaries (see `unit_bounds`); the core of all masking.

  Appends the masked candidate indexes, in draw order, to `masked` and the id each one gets to
  `values` (`config.mask_id`, a random id, or KEEP); with `span_words`, appends the words of each
  accepted n-gram. Returns the number of masked tokens. Appending to the caller's lists lets the
  data generator collect a whole pass in flat lists.

  Every draw, and the order of draws, is that of the straightforward implementation (randint for
  the next unit, random() for n, then random() [random() [randint]] per token): the output for a
  seed is part of the format. `rng._randbelow(k)` is exactly what `rng.randint(a, a + k - 1) - a`
  computes (CPython's randint -> randrange -> _randbelow), without randint's argument checking,
  which costs more than the draw itself in this loop.
  """
  num_units = len(bounds) - 1
  if num_units <= 0 or budget <= 0:
    return 0
  cdf = config.cdf
  ngram = len(cdf)
  mask_id, vocab_size = config.mask_id, config.vocab_size
  randbelow, random_ = rng._randbelow, rng.random  # noqa: SLF001  (see docstring)
  append, bisect_right = values.append, bisect.bisect_right
  # Padded so that an n-gram running past the last unit ends at the last candidate, without a min().
  bounds = bounds + [bounds[-1]] * ngram
  # Spans are whole units, so overlap is tracked per unit (units past the end are never real).
  covered = bytearray(num_units + ngram)
  order = list(range(num_units))  # partial Fisher-Yates: order[t] is the t-th unit visited
  used = 0
  for t in range(num_units):
    if used >= budget:
      break
    j = t + randbelow(num_units - t)
    start = order[j]
    order[j] = order[t]
    n = bisect_right(cdf, random_()) + 1  # p(n) from the cdf: the first n with u < cdf[n - 1]
    end = start + (n if n < ngram else ngram)
    lo = bounds[start]
    # Shrink the n-gram until it fits the remaining budget (official "try shorter ngrams").
    room = budget - used + lo
    while bounds[end] > room:
      end -= 1
    if end == start or covered.find(1, start, end) >= 0:
      continue
    hi = bounds[end]
    if span_words is not None:
      span_words.append(min(end, num_units) - start)
    covered[start:end] = b"\x01" * (end - start)
    masked.extend(range(lo, hi))
    used += hi - lo
    for _ in range(hi - lo):
      if random_() < 0.8:
        append(mask_id)
      elif random_() < 0.5:
        append(KEEP)  # keep the original token
      else:
        append(randbelow(vocab_size))
  return used


def create_masked_lm_predictions(input_ids: np.ndarray, is_start: np.ndarray,
                                 is_special: np.ndarray, config: MaskingConfig,
                                 rng: random.Random) -> MaskedLm:
  """Masks one sequence of real tokens (no padding).

  Args:
    input_ids: int [len] token ids, `[CLS] A [SEP] B [SEP]`.
    is_start: bool [len], whether each piece starts a word (`tokenization.is_start_piece`).
    is_special: bool [len], True at [CLS]/[SEP] (never masked, never part of a unit).
    config: masking settings.
    rng: the seeded generator of this instance; all draws come from it.
  """
  input_ids = np.asarray(input_ids, dtype=np.int32)
  if config.masked_lm_prob == 0:
    empty = np.zeros([0], np.int32)
    return MaskedLm(input_ids.copy(), empty, empty)
  # Positions of non-special tokens; a unit is a contiguous run of this array.
  candidates = np.flatnonzero(~np.asarray(is_special, dtype=bool))
  bounds = unit_bounds(np.asarray(is_start, dtype=bool)[candidates], config.do_whole_word_mask)
  masked: list[int] = []
  values: list[int] = []
  span_words: list[int] = []
  draw_masks(bounds, num_to_predict(len(input_ids), config), config, rng, masked, values,
             span_words)
  output = input_ids.copy()
  where = candidates[np.array(masked, dtype=np.int64)]
  values_ = np.array(values, dtype=np.int64)
  output[where[values_ != KEEP]] = values_[values_ != KEEP]
  positions = np.sort(where).astype(np.int32)
  return MaskedLm(output, positions, input_ids[positions], tuple(span_words))
