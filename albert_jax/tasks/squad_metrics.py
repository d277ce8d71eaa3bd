"""SQuAD metrics: the official evaluation scripts and the ALBERT threshold protocol.

- SQuAD v1.1: the official evaluate-v1.1.py (answer normalization: lower-case, drop punctuation,
  drop the articles a/an/the, collapse whitespace; EM and token F1, max over the gold answers).
- SQuAD v2.0: the official evaluate-v2.0.py (no-answer gold = [""], F1 of empty strings, the
  `na_prob_thresh` rule, HasAns/NoAns breakdown, `find_best_thresh`) and the ALBERT protocol on top
  (`squad_v2_albert_eval`, the official `run_squad_v2.py` / `squad_utils.evaluate_v2` of
  google-research/albert): pick the threshold on the null score that maximizes dev F1, predict ""
  where the null score reaches it, and score again.

Scores are percentages, like the official scripts (https://rajpurkar.github.io/SQuAD-explorer/).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Mapping, Optional, Sequence


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
  """Lower text and remove punctuation, articles and extra whitespace (official, v1.1 and v2.0)."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_v1(prediction: str, ground_truth: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_v1(prediction: str, ground_truth: str) -> float:
  pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
  same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(gold)
  return 2 * precision * recall / (precision + recall)


def squad_v1_evaluate(gold: Mapping[str, Sequence[str]],
                      predictions: Mapping[str, str]) -> dict[str, float]:
  """{"exact_match", "f1"} in percent over every question of `gold` (qid -> answer texts).

  A question without a prediction scores 0, as in the official script.
  """
  if not gold:
    raise ValueError("squad_v1_evaluate: no gold questions")
  em = f1 = 0.0
  for qid, answers in gold.items():
    if qid not in predictions:
      continue
    em += max(exact_match_v1(predictions[qid], a) for a in answers)
    f1 += max(f1_v1(predictions[qid], a) for a in answers)
  return {"exact_match": 100.0 * em / len(gold), "f1": 100.0 * f1 / len(gold)}


# ----------------------------------------------------------------------------------------------
# SQuAD v2.0 (official evaluate-v2.0.py) and the ALBERT threshold protocol.
# ----------------------------------------------------------------------------------------------


def _tokens_v2(s: str) -> list[str]:
  return normalize_answer(s).split() if s else []


def exact_v2(gold: str, prediction: str) -> int:
  return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_v2(gold: str, prediction: str) -> float:
  gold_toks, pred_toks = _tokens_v2(gold), _tokens_v2(prediction)
  if not gold_toks or not pred_toks:
    # If either is no-answer, F1 is 1 if they agree, 0 otherwise.
    return float(gold_toks == pred_toks)
  same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_toks), same / len(gold_toks)
  return 2 * precision * recall / (precision + recall)


def squad_v2_raw_scores(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
                        ) -> tuple[dict[str, float], dict[str, float]]:
  """Per-question (exact, f1) before any threshold; questions without a prediction are skipped."""
  exact, f1 = {}, {}
  for qid, answers in gold.items():
    golds = [a for a in answers if normalize_answer(a)] or [""]
    if qid not in predictions:
      continue
    exact[qid] = float(max(exact_v2(a, predictions[qid]) for a in golds))
    f1[qid] = max(f1_v2(a, predictions[qid]) for a in golds)
  return exact, f1


def _apply_no_answer_threshold(scores, na_probs, has_answer, threshold):
  return {qid: float(not has_answer[qid]) if na_probs[qid] > threshold else s
          for qid, s in scores.items()}


def _eval_dict(exact, f1, qids=None) -> dict[str, float]:
  qids = list(exact) if qids is None else qids
  total = len(qids)
  return {"exact": 100.0 * sum(exact[q] for q in qids) / total,
          "f1": 100.0 * sum(f1[q] for q in qids) / total, "total": total}


def find_best_thresh(predictions: Mapping[str, str], scores: Mapping[str, float],
                     na_probs: Mapping[str, float],
                     has_answer: Mapping[str, bool]) -> tuple[float, float]:
  """Official: (best score in percent, threshold) when predicting "" for na_prob > threshold."""
  current = best = float(sum(1 for q in has_answer if not has_answer[q]))
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda q: na_probs[q]):
    if qid not in scores:
      continue
    if has_answer[qid]:
      diff = scores[qid]
    else:
      diff = -1.0 if predictions[qid] else 0.0
    current += diff
    if current > best:
      best, best_thresh = current, na_probs[qid]
  return 100.0 * best / len(scores), best_thresh


def squad_v2_evaluate(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                      na_probs: Optional[Mapping[str, float]] = None,
                      na_prob_thresh: float = 1.0) -> dict[str, float]:
  """The official v2.0 script's output dict.

  Args:
    gold: qid -> gold answer texts ([] for unanswerable questions).
    predictions: qid -> predicted text ("" = no answer).
    na_probs: qid -> no-answer score (the script's --na-prob-file; None = all 0).
    na_prob_thresh: questions with na_prob above it count as predicted unanswerable.
  Returns:
    exact, f1, total, HasAns_*/NoAns_* (where such questions exist) and, with `na_probs`,
    best_exact, best_exact_thresh, best_f1, best_f1_thresh.
  """
  if not gold:
    raise ValueError("squad_v2_evaluate: no gold questions")
  has_answer = {qid: bool(answers) for qid, answers in gold.items()}
  probs = dict(na_probs) if na_probs is not None else {qid: 0.0 for qid in predictions}
  exact_raw, f1_raw = squad_v2_raw_scores(gold, predictions)
  missing = [q for q in exact_raw if q not in probs]
  if missing:
    raise ValueError(f"na_probs lacks {len(missing)} question(s), e.g. {missing[0]!r}")
  exact = _apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_thresh)
  f1 = _apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_thresh)
  out = _eval_dict(exact, f1)
  for prefix, wanted in (("HasAns", True), ("NoAns", False)):
    qids = [q for q in exact if has_answer[q] == wanted]
    if qids:
      out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
  if na_probs is not None:
    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, exact_raw,
                                                                   probs, has_answer)
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, probs,
                                                             has_answer)
  return out


def squad_v2_albert_eval(gold: Mapping[str, Sequence[str]], best_non_null: Mapping[str, str],
                         null_scores: Mapping[str, float]
                         ) -> tuple[dict[str, float], dict[str, str]]:
  """The official ALBERT `evaluate_v2`: tune the null threshold on these questions, re-predict.

  Pass 1 scores the best non-null answers with the null scores as na_probs and takes the
  threshold maximizing F1 (`best_f1_thresh`); pass 2 predicts "" where null score >= threshold
  and scores again with the official script (na_prob_thresh 1.0, as the official code does).

  Returns:
    (metrics, final predictions): metrics are pass 2's dict plus `null_score_diff_threshold`
    and pass 1's best_exact/best_f1 (with their thresholds).
  """
  first = squad_v2_evaluate(gold, best_non_null, null_scores)
  threshold = first["best_f1_thresh"]
  final = {qid: ("" if null_scores[qid] >= threshold else text)
           for qid, text in best_non_null.items()}
  out = squad_v2_evaluate(gold, final, null_scores)
  for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
    out[key] = first[key]
  out["null_score_diff_threshold"] = threshold
  return out, final
