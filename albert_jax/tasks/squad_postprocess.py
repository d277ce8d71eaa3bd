"""SQuAD n-best decoding as the official ALBERT code (`squad_utils.accumulate_predictions_v1/v2`,
`write_predictions_v1/v2` in google-research/albert `squad_utils.py`), for one prediction pass.

v1: per window, the top `n_best_size` start and end positions over the whole sequence; spans are
kept when both ends lie in the window's paragraph pieces, the start piece has its max context in
this window, end >= start and the length is at most `max_answer_length`. Score = start + end logit.
Candidates of all windows of a question are sorted by score, deduplicated by answer text (the
paragraph characters covered, stripped), and the best `n_best_size` kept; the answer is the first.

v2: the same filter over the head's beam (`start_n_top` starts x `end_n_top` ends, log-probs);
the null score of a question is the minimum `cls_logits` over its windows. The best non-null
answer and the null score go to `squad_metrics.squad_v2_albert_eval` (threshold tuned on dev).

A question without any window (paragraph alignment mismatch) gets the official nonce answer:
"empty" in v1, "" with a large null score in v2.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

# Official nonce for questions with no valid span, and the null score of questions without windows.
_V1_EMPTY = "empty"
_NO_WINDOW_NULL_SCORE = 1e6


def _best_indexes(logits: np.ndarray, n: int) -> list[int]:
  """Official `_get_best_indexes`: top n by value, ties in position order (a stable sort)."""
  return np.argsort(-np.asarray(logits, np.float64), kind="stable")[:n].tolist()


def _softmax(scores: Sequence[float]) -> list[float]:
  if not scores:
    return []
  top = max(scores)
  exps = [math.exp(s - top) for s in scores]
  total = sum(exps)
  return [e / total for e in exps]


def _valid(meta, start: int, end: int, max_answer_length: int) -> bool:
  """The official span filter, positions relative to the whole input sequence."""
  s, e = start - meta.doc_offset, end - meta.doc_offset
  window = len(meta.tok_start_to_orig)
  if s < 0 or s >= window or e >= window:
    return False
  if not meta.max_context[s]:
    return False
  return end >= start and end - start + 1 <= max_answer_length


def _nbest(example, candidates: list[tuple[float, float, Any, int, int]], n_best_size: int
           ) -> list[dict[str, Any]]:
  """Sorted, text-deduplicated n-best entries from (start score, end score, meta, s, e)."""
  candidates = sorted(candidates, key=lambda c: c[0] + c[1], reverse=True)
  seen, out = set(), []
  for start_score, end_score, meta, s, e in candidates:
    if len(out) >= n_best_size:
      break
    text = example.context[meta.tok_start_to_orig[s]:meta.tok_end_to_orig[e] + 1].strip()
    if text in seen:
      continue
    seen.add(text)
    out.append({"text": text, "start_log_prob": start_score, "end_log_prob": end_score})
  probs = _softmax([o["start_log_prob"] + o["end_log_prob"] for o in out])
  for o, p in zip(out, probs):
    o["probability"] = p
  return out


def _by_example(metas: Sequence[Any]) -> dict[int, list[int]]:
  rows: dict[int, list[int]] = {}
  for row, meta in enumerate(metas):
    rows.setdefault(meta.example_index, []).append(row)
  return rows


def v1_predictions(examples: Sequence[Any], metas: Sequence[Any], start_logits: np.ndarray,
                   end_logits: np.ndarray, n_best_size: int, max_answer_length: int
                   ) -> tuple[dict[str, str], dict[str, list]]:
  """(qid -> answer text, qid -> n-best list) from per-window start/end logits [F, T]."""
  rows = _by_example(metas)
  predictions, nbest_json = {}, {}
  for index, example in enumerate(examples):
    candidates = []
    for row in rows.get(index, []):
      meta = metas[row]
      starts = _best_indexes(start_logits[row], n_best_size)
      ends = _best_indexes(end_logits[row], n_best_size)
      for start in starts:
        for end in ends:
          if _valid(meta, start, end, max_answer_length):
            candidates.append((float(start_logits[row, start]), float(end_logits[row, end]),
                               meta, start - meta.doc_offset, end - meta.doc_offset))
    nbest = _nbest(example, candidates, n_best_size) or [
        {"text": _V1_EMPTY, "start_log_prob": 0.0, "end_log_prob": 0.0, "probability": 1.0}]
    predictions[example.qas_id] = nbest[0]["text"]
    nbest_json[example.qas_id] = nbest
  return predictions, nbest_json


def v2_predictions(examples: Sequence[Any], metas: Sequence[Any],
                   outputs: Mapping[str, np.ndarray], n_best_size: int, max_answer_length: int
                   ) -> tuple[dict[str, str], dict[str, float], dict[str, list]]:
  """(qid -> best non-null answer, qid -> null score, qid -> n-best) from the v2 head's beam.

  `outputs`: start_top_log_probs [F, Ks], start_top_index [F, Ks], end_top_log_probs
  [F, Ks, Ke] (or [F, Ks*Ke]), end_top_index (same shape), cls_logits [F].
  """
  start_lp, start_ix = outputs["start_top_log_probs"], outputs["start_top_index"]
  num_starts = start_lp.shape[1]
  end_lp = outputs["end_top_log_probs"].reshape(start_lp.shape[0], num_starts, -1)
  end_ix = outputs["end_top_index"].reshape(end_lp.shape)
  cls_logits = outputs["cls_logits"]
  rows = _by_example(metas)
  best, null_scores, nbest_json = {}, {}, {}
  for index, example in enumerate(examples):
    candidates, null = [], _NO_WINDOW_NULL_SCORE
    for row in rows.get(index, []):
      meta = metas[row]
      null = min(null, float(cls_logits[row]))
      for i in range(num_starts):
        for j in range(end_lp.shape[2]):
          start, end = int(start_ix[row, i]), int(end_ix[row, i, j])
          if _valid(meta, start, end, max_answer_length):
            candidates.append((float(start_lp[row, i]), float(end_lp[row, i, j]), meta,
                               start - meta.doc_offset, end - meta.doc_offset))
    nbest = _nbest(example, candidates, n_best_size) or [
        {"text": "", "start_log_prob": -1e6, "end_log_prob": -1e6, "probability": 1.0}]
    best[example.qas_id] = nbest[0]["text"]
    null_scores[example.qas_id] = null
    nbest_json[example.qas_id] = nbest
  return best, null_scores, nbest_json
