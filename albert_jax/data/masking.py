"""Whole-word n-gram masking for ALBERT's masked-LM objective (official `create_masked_lm_predictions`).

One function serves both static masking (create_pretraining_data, masks written to TFRecords) and
dynamic masking (pipeline.py, masks drawn at read time from token-only records), so the two modes
have the same statistics by construction.

Algorithm (reference albert_official.md §3.4), on the real (unpadded) tokens `[CLS] A [SEP] B [SEP]`:
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

import dataclasses
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


def token_boundary(is_start: np.ndarray, is_special: np.ndarray) -> np.ndarray:
  """The official `token_boundary` feature: 1 at [CLS]/[SEP] and at word-start pieces."""
  return (is_start | is_special).astype(np.int32)


def num_to_predict(length: int, config: MaskingConfig) -> int:
  """How many tokens the official recipe masks in a sequence of `length` real tokens."""
  return min(config.max_predictions_per_seq, max(1, int(round(length * config.masked_lm_prob))))


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
  # Positions of non-special tokens; a unit is a contiguous run of this array, so an n-gram of units
  # starting at unit k is the slice candidates[bounds[k]:bounds[k + n]].
  candidates = np.flatnonzero(~np.asarray(is_special, dtype=bool))
  if config.do_whole_word_mask:
    unit_start = np.asarray(is_start, dtype=bool)[candidates]
    if len(unit_start):
      unit_start[0] = True  # the first candidate always opens a unit, start piece or not
  else:
    unit_start = np.ones(len(candidates), dtype=bool)
  bounds = np.flatnonzero(unit_start).tolist() + [len(candidates)]
  num_units = len(bounds) - 1
  budget = num_to_predict(len(input_ids), config)
  cdf = config.ngram_cdf()
  cand = candidates.tolist()
  order = list(range(num_units))
  covered: set[int] = set()
  masked: list[int] = []
  span_words: list[int] = []
  output = input_ids.copy()
  vocab_max = config.vocab_size - 1
  for t in range(num_units):
    if len(masked) >= budget:
      break
    # Partial Fisher-Yates: order[t] becomes a uniformly random unit not visited yet.
    j = rng.randint(t, num_units - 1)
    order[t], order[j] = order[j], order[t]
    start = order[t]
    u = rng.random()
    n = next(k for k, c in enumerate(cdf, start=1) if u < c) if u < cdf[-1] else len(cdf)
    # Shrink the n-gram until it fits the remaining budget (official "try shorter ngrams").
    while n > 0:
      length = bounds[min(start + n, num_units)] - bounds[start]
      if len(masked) + length <= budget:
        break
      n -= 1
    if n == 0:
      continue
    span = cand[bounds[start]:bounds[min(start + n, num_units)]]
    if any(p in covered for p in span):
      continue
    span_words.append(min(start + n, num_units) - start)
    for p in span:
      covered.add(p)
      masked.append(p)
      if rng.random() < 0.8:
        output[p] = config.mask_id
      elif rng.random() < 0.5:
        pass  # keep the original token
      else:
        output[p] = rng.randint(0, vocab_max)
  positions = np.array(sorted(masked), dtype=np.int32)
  return MaskedLm(output, positions, input_ids[positions], tuple(span_words))
