"""GLUE metrics exactly as the benchmark defines them (https://gluebenchmark.com/tasks).

Accuracy; binary F1 (positive class 1: MRPC, QQP); Matthews correlation (CoLA); Pearson and
Spearman correlation (STS-B; Spearman with average ranks for ties, as scipy.stats.spearmanr).
All scores are plain floats.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


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
