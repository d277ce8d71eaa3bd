"""Fine-tuning metrics exactly as the benchmarks define them, and a table across runs.

- Classification: accuracy; binary F1 (positive class 1: MRPC, QQP); Matthews correlation (CoLA);
  Pearson and Spearman correlation (STS-B; Spearman with average ranks for ties).
- SQuAD v1.1: the official evaluation script (answer normalization: lower-case, drop punctuation,
  drop the articles a/an/the, collapse whitespace; EM and token F1, max over the gold answers).
- SQuAD v2.0: the official v2.0 script (no-answer gold = [""], F1 of empty strings, the
  `na_prob_thresh` rule, HasAns/NoAns breakdown, `find_best_thresh`) and the ALBERT protocol on top
  (`squad_v2_albert_eval`): pick the threshold on the null score that maximizes dev F1, predict ""
  where the null score reaches it, and score again (google-research/albert `run_squad_v2.py`).
- RACE: accuracy over middle, high and all questions.

All scores are returned as plain floats; SQuAD scores are percentages like the official scripts.

Command line: a markdown table of the metrics JSONs of fine-tuning runs:
    python -m albert_jax.tasks.metrics 'runs/*/metrics.json' [--output=table.md]
"""

from __future__ import annotations

import collections
import glob
import json
import re
import string
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from absl import flags
import numpy as np

from albert_jax import command_line

# ----------------------------------------------------------------------------------------------
# Classification and regression.
# ----------------------------------------------------------------------------------------------


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
  p, y = np.asarray(predictions), np.asarray(labels)
  if p.shape != y.shape or p.size == 0:
    raise ValueError(f"accuracy needs equally long, non-empty inputs, got {p.shape}, {y.shape}")
  return float(np.mean(p == y))


def f1_binary(predictions: Sequence[int], labels: Sequence[int]) -> float:
  """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP; 0 if undefined."""
  p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
  tp = float(np.sum(p & y))
  denominator = 2 * tp + float(np.sum(p & ~y)) + float(np.sum(~p & y))
  return 2 * tp / denominator if denominator else 0.0


def matthews_corrcoef(predictions: Sequence[int], labels: Sequence[int]) -> float:
  """Binary Matthews correlation (CoLA); 0 when a margin is empty (the usual convention)."""
  p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
  tp, tn = float(np.sum(p & y)), float(np.sum(~p & ~y))
  fp, fn = float(np.sum(p & ~y)), float(np.sum(~p & y))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  xc, yc = x - x.mean(), y - y.mean()
  denominator = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
  return float(np.sum(xc * yc) / denominator) if denominator else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks; tied values share the mean of their ranks (as scipy.stats.rankdata)."""
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sorted_x = x[order]
  start = 0
  while start < len(x):
    end = start
    while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
      end += 1
    ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
    start = end + 1
  return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  return pearson(_average_ranks(np.asarray(x, np.float64)),
                 _average_ranks(np.asarray(y, np.float64)))


# ----------------------------------------------------------------------------------------------
# SQuAD v1.1 (official evaluate-v1.1.py).
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# RACE.
# ----------------------------------------------------------------------------------------------


def race_accuracy(predictions: Sequence[int], labels: Sequence[int],
                  levels: Sequence[str]) -> dict[str, float]:
  """{"accuracy", "accuracy_middle", "accuracy_high"} (a level absent from the data is left out)."""
  p, y, lv = np.asarray(predictions), np.asarray(labels), np.asarray(levels)
  out = {"accuracy": accuracy(p, y)}
  for level in ("middle", "high"):
    if np.any(lv == level):
      out[f"accuracy_{level}"] = accuracy(p[lv == level], y[lv == level])
  return out


# ----------------------------------------------------------------------------------------------
# GLUE metric sets.
# ----------------------------------------------------------------------------------------------

# What each GLUE task reports (on top of accuracy for classification tasks).
_GLUE_EXTRA: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",), "mrpc": ("f1",), "qqp": ("f1",), "stsb": ("pearson", "spearman"),
}


def glue_metrics(task: str, predictions: Sequence[Any], labels: Sequence[Any]) -> dict[str, float]:
  """Every metric GLUE reports for `task` (predicted class ids, or scores for STS-B)."""
  extra = _GLUE_EXTRA.get(task, ())
  if task == "stsb":
    p, y = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
    return {"pearson": pearson(p, y), "spearman": spearman(p, y),
            "mse": float(np.mean((p - y) ** 2))}
  out = {"accuracy": accuracy(predictions, labels)}
  fns: dict[str, Callable[..., float]] = {"mcc": matthews_corrcoef, "f1": f1_binary}
  for name in extra:
    out[name] = fns[name](predictions, labels)
  return out


# ----------------------------------------------------------------------------------------------
# A table across runs.
# ----------------------------------------------------------------------------------------------


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.2f}" if abs(value) > 1.5 else f"{value:.4f}"
  return str(value)


def markdown_table(runs: Iterable[Mapping[str, Any]]) -> str:
  """One row per run (metrics.json of `finetune.run`): task, model, best step, its metrics and the
  labelled test splits' metrics (RACE) predicted with the best parameters."""
  def listing(metrics: Mapping[str, Any], skip: str = "") -> str:
    return ", ".join(f"{k} {_format(v)}" for k, v in sorted(metrics.items())
                     if k != skip and not k.endswith("total") and not isinstance(v, str))

  rows = []
  for run in runs:
    best = run.get("best", {})
    tests = {k: v for split in run.get("predict", {}).values() for k, v in split.items()}
    rows.append("| " + " | ".join([
        str(run.get("task", "?")), str(run.get("model", "?")), str(run.get("workdir", "")),
        str(best.get("step", "")), f"{run.get('metric', '?')} {_format(best.get('value', ''))}",
        listing(best.get("metrics", {}), run.get("metric", "")), listing(tests)]) + " |")
  header = ("| task | model | run | best step | selection metric | other dev metrics "
            "| test metrics (best step) |\n|---|---|---|---|---|---|---|")
  return "\n".join([header] + rows) + "\n"


PROG = "python -m albert_jax.tasks.metrics"


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (defined only when it is parsed: `command_line.parse`)."""
  flags.DEFINE_string("output", None, "write the table here instead of stdout",
                      flag_values=flag_values)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`PROG PATTERN... [--output=FILE]`: the markdown table of the metrics JSONs (files or globs);
  `argv`: the arguments after the program name (None: this process's)."""
  args, patterns = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  if not patterns:
    command_line.usage_error("give one or more metrics.json files or globs")
  files = sorted({f for p in patterns for f in (glob.glob(p) or [p])})
  runs = []
  for path in files:
    try:
      with open(path) as f:
        runs.append(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
      command_line.usage_error(f"cannot read metrics file {path!r}: {e}")
  table = markdown_table(runs)
  if args.output:
    with open(args.output, "w") as f:
      f.write(table)
  else:
    sys.stdout.write(table)
  return 0


if __name__ == "__main__":
  command_line.run(main)
