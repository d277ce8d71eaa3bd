"""Scoring text with a masked LM: pseudo-log-likelihood and pseudo-perplexity.

Salazar et al. 2020, "Masked Language Model Scoring" (https://arxiv.org/abs/1910.14659): the PLL
of a sentence W = w_1 .. w_n is sum_t log P(w_t | W with w_t masked), one masked copy of the
sentence per piece; [CLS] and [SEP] are not scored. Its pseudo-perplexity is exp(-PLL / n) (the
paper's PPPL over a corpus divides the summed PLLs by all the corpus's pieces:
`corpus_pseudo_perplexity`). The masked copies of all sentences run on device in batches of
`batch_size` copies, a copy built on device from its sentence and the position it masks; inputs
are padded to length buckets (mlm.py) so that few shapes are compiled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.inference import mlm as mlm_lib
from albert_jax.inference.loading import InputError
from albert_jax.inference.mlm import MaskedLM


@dataclasses.dataclass
class Score:
  text: str
  pieces: list[str]            # the scored pieces (without [CLS] and [SEP])
  log_probs: list[float]       # log P(piece | the rest), natural log, one per piece
  pll: float                   # their sum
  pseudo_perplexity: float     # exp(-pll / len(pieces))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def corpus_pseudo_perplexity(scores: Sequence[Score]) -> float:
  """The paper's PPPL of a corpus: exp(-(sum of PLLs) / (number of scored pieces))."""
  pieces = sum(len(s.pieces) for s in scores)
  return math.exp(-sum(s.pll for s in scores) / pieces)


def _masked_log_prob(spec: mlm_lib.MlmSpec):
  """(params, ids [B, T], attention [B, T], position [B]) -> log P(ids[b, position[b]] | rest)."""
  def fn(params, ids, attention_mask, position):
    rows = jnp.arange(ids.shape[0])
    target = ids[rows, position]
    masked = ids.at[rows, position].set(spec.mask_id)
    logits = spec.logits(params, masked, attention_mask, position[:, None])[:, 0]
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), target[:, None], -1)[:, 0]
  return fn


def _encode(lm: MaskedLM, texts: Sequence[str], where: Sequence[str]) -> list[list[int]]:
  tok, out = lm.tokenizer, []
  for text, w, ids in zip(texts, where, tok.encode_batch([t if isinstance(t, str) else ""
                                                          for t in texts])):
    if not isinstance(text, str) or not text.strip() or not ids:
      raise InputError(f"{w}: empty text (nothing to score)")
    if len(ids) + 2 > lm.max_length:
      raise InputError(f"{w}: {len(ids) + 2} pieces with [CLS]/[SEP] exceed the model's "
                       f"max_position_embeddings={lm.max_length}; shorten the text")
    out.append([tok.cls_id] + ids + [tok.sep_id])
  return out


def score(lm: MaskedLM, texts: Sequence[str], batch_size: int = 32,
          where: Optional[Sequence[str]] = None) -> list[Score]:
  """PLL, pseudo-perplexity and per-piece log-probabilities of every text, in input order."""
  mlm_lib.check_batch_size(batch_size)
  where = mlm_lib.input_labels(texts, where)
  sequences = _encode(lm, texts, where)
  log_probs = [np.zeros(len(s) - 2) for s in sequences]
  apply = lm.jit("score", _masked_log_prob)
  # Copies (sentence, masked position), sentences of one length bucket together.
  buckets: dict[int, list[tuple[int, int]]] = {}
  for i, s in enumerate(sequences):
    buckets.setdefault(mlm_lib.length_bucket(len(s), lm.max_length), []).extend(
        (i, p) for p in range(1, len(s) - 1))
  for length, copies in sorted(buckets.items()):
    for start in range(0, len(copies), batch_size):
      chunk = copies[start:start + batch_size]
      rows = mlm_lib.batch_bucket(len(chunk), batch_size)
      ids, attention = np.zeros((2, rows, length), np.int32)
      position = np.ones(rows, np.int32)  # padding rows score a position of an empty sequence
      for r, (i, p) in enumerate(chunk):
        ids[r, :len(sequences[i])], attention[r, :len(sequences[i])] = sequences[i], 1
        position[r] = p
      attention[len(chunk):, :2] = 1
      out = np.asarray(apply(lm.params, ids, attention, position))
      for r, (i, p) in enumerate(chunk):
        log_probs[i][p - 1] = out[r]
  results = []
  for text, s, lp in zip(texts, sequences, log_probs):
    pll = float(lp.sum())
    results.append(Score(text, lm.tokenizer.convert_ids_to_tokens(s[1:-1]),
                         [float(x) for x in lp], pll, math.exp(-pll / len(lp))))
  return results
