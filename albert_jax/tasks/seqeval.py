"""Sequence-labelling metrics: entity-level precision/recall/F1 with the CoNLL chunk rules
(`conlleval`, the script the CoNLL-2000/2003 shared tasks score with) and token accuracy.

Tags are "O" or "<X>-<TYPE>" with X one of B, I, E, S (IOB1, IOB2/BIO and IOBES all follow the
same rules). A chunk ends where conlleval's `endOfChunk` says so and starts where `startOfChunk`
says so; in particular an I- tag after O or after another type starts an entity (IOB1, or a
model that forgot the B-), and B- after I- of the same type starts a new one. An entity is correct
when its type, first and last word all match a gold entity of the same sentence.

Scores are fractions in [0, 1] (the official script prints percentages); precision, recall or F1
with an empty denominator is 0, as in conlleval.
"""

from __future__ import annotations

import collections
from typing import Sequence

Entity = tuple[str, int, int]  # (type, first word, last word), both inclusive

_PREFIXES = ("B", "I", "E", "S")


def split_tag(tag: str) -> tuple[str, str]:
  """"B-PER" -> ("B", "PER"), "O" -> ("O", ""); anything else is an error naming the tag."""
  if tag == "O":
    return "O", ""
  prefix, dash, kind = tag.partition("-")
  if not dash or prefix not in _PREFIXES or not kind:
    raise ValueError(f"tag {tag!r} is not 'O' or '<B|I|E|S>-<TYPE>': entity scoring needs "
                     "BIO/IOB/IOBES tags (use token accuracy for other label sets)")
  return prefix, kind


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
  """conlleval `endOfChunk`: does a chunk end just before this word?"""
  if prev_tag in ("E", "S"):
    return True
  if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
    return True
  return prev_tag != "O" and prev_type != kind


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
  """conlleval `startOfChunk`: does a chunk start at this word?"""
  if tag in ("B", "S"):
    return True
  if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
    return True
  return tag != "O" and prev_type != kind


def get_entities(tags: Sequence[str]) -> list[Entity]:
  """The entities of one sentence's tags under the CoNLL chunk rules."""
  entities: list[Entity] = []
  prev_tag, prev_type, begin = "O", "", 0
  for i, tag_str in enumerate(list(tags) + ["O"]):  # a final O closes an open entity
    tag, kind = split_tag(tag_str)
    if _end_of_chunk(prev_tag, tag, prev_type, kind):
      entities.append((prev_type, begin, i - 1))
    if _start_of_chunk(prev_tag, tag, prev_type, kind):
      begin = i
    prev_tag, prev_type = tag, kind
  return entities


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
  precision = correct / predicted if predicted else 0.0
  recall = correct / gold if gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


def _check_lengths(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
  if len(gold) != len(predicted):
    raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones")
  for n, (g, p) in enumerate(zip(gold, predicted)):
    if len(g) != len(p):
      raise ValueError(f"sentence {n}: {len(g)} gold tags but {len(p)} predicted ones")


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
  """The fraction of words whose predicted tag equals the gold tag (POS accuracy)."""
  _check_lengths(gold, predicted)
  total = sum(len(g) for g in gold)
  if not total:
    raise ValueError("token accuracy of an empty set of sentences")
  return sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p)) / total


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
  """Entity-level scores over sentences of tags, as conlleval reports them.

  Returns {"precision", "recall", "f1"} (micro-averaged over all entities), the same three per
  entity type as "precision_<TYPE>" etc. (every type seen in gold or predictions), and
  "accuracy" (token accuracy over every word, conlleval's first line).
  """
  _check_lengths(gold, predicted)
  gold_set, pred_set = set(), set()
  for n, (g, p) in enumerate(zip(gold, predicted)):
    gold_set.update((n,) + e for e in get_entities(g))
    pred_set.update((n,) + e for e in get_entities(p))
  correct = gold_set & pred_set
  count = lambda entities: collections.Counter(e[1] for e in entities)
  by_gold, by_pred, by_correct = count(gold_set), count(pred_set), count(correct)
  out = _prf(len(correct), len(pred_set), len(gold_set))
  for kind in sorted(set(by_gold) | set(by_pred)):
    for key, value in _prf(by_correct[kind], by_pred[kind], by_gold[kind]).items():
      out[f"{key}_{kind}"] = value
  out["accuracy"] = token_accuracy(gold, predicted)
  return out
