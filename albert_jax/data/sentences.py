"""A small rule-based English sentence splitter for raw paragraphs.

The pretraining format wants one sentence per line, because segment A/B boundaries (and therefore the
SOP task) are drawn at sentence boundaries. Text from a tfds dataset (Wikipedia, C4) arrives as whole
articles, so we split it here. This is deliberately simple (no model, no dependency): split after
`.`, `!` or `?` (optionally followed by closing quotes/brackets) when whitespace and a plausible sentence
start follow, except after common abbreviations and single-letter initials. Errors only move a
boundary, which for SOP/NSP data matters little.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Tokens that end in a period but rarely end a sentence. Compared lower-cased, without the final period.
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al approx fig figs no nos vol vols ed eds
    p pp ch sec jan feb mar apr jun jul aug sep sept oct nov dec inc ltd co corp u.s u.k""".split())

# Candidate boundary: terminal punctuation, optional closers, whitespace, then an opener/capital/digit.
_BOUNDARY = re.compile(r"""([.!?]['")\]]*)\s+(?=['"(\[]?[A-Z0-9])""")
_LAST_WORD = re.compile(r"(\S+)$")


def split_sentences(paragraph: str) -> list[str]:
  """Splits one paragraph of prose into sentences (whitespace-trimmed, empty ones dropped)."""
  text = " ".join(paragraph.split())
  if not text:
    return []
  sentences = []
  start = 0
  for match in _BOUNDARY.finditer(text):
    end = match.end(1)
    if match.group(1).startswith(".") and _is_abbreviation(text[start:match.start(1)]):
      continue
    sentences.append(text[start:end])
    start = match.end()
  sentences.append(text[start:])
  return [s for s in (s.strip() for s in sentences) if s]


def _is_abbreviation(before_period: str) -> bool:
  match = _LAST_WORD.search(before_period)
  if match is None:
    return False
  word = match.group(1).lstrip("(\"'[").lower()
  # Single letters are initials ("J. R. R. Tolkien"); a trailing digit is a number ("3." in "version 3. It").
  return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def document_to_sentences(text: str) -> Iterator[str]:
  """Yields the sentences of a raw document, treating each non-empty line as a paragraph."""
  for paragraph in text.splitlines():
    yield from split_sentences(paragraph)
