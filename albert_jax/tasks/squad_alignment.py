"""Character <-> piece alignment of a SQuAD paragraph, the official algorithm
(google-research/albert `squad_utils.py`, from XLNet): the pieces (▁ -> space) are matched to the
raw paragraph with a banded longest-common-subsequence, characters compared after the tokenizer's
normalization; a paragraph matching less than 80% of its characters gives None.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Optional, Sequence

from albert_jax.data.tokenization import SPIECE_UNDERLINE




def _normalize_char(c: str, lower: bool, keep_accents: bool) -> str:
  """Official preprocess_text(c, remove_space=False): NFKD, drop combining marks, lower-case."""
  if not keep_accents:
    c = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))
  return c.lower() if lower else c


def _lcs_match(orig: Sequence[str], tok: str, max_dist: int) -> tuple[dict, dict]:
  """Banded LCS between normalized paragraph characters and the piece text; (f, g) tables."""
  f: dict[tuple[int, int], int] = {}
  g: dict[tuple[int, int], int] = {}
  n, m = len(orig), len(tok)
  for i in range(n):
    for j in range(max(i - max_dist, 0), min(i + max_dist, m)):
      if i > 0:
        g[i, j] = 0
        f[i, j] = f.get((i - 1, j), 0)
      if j > 0 and f.get((i, j - 1), 0) > f.get((i, j), 0):
        g[i, j] = 1
        f[i, j] = f[i, j - 1]
      f_prev = f.get((i - 1, j - 1), 0) if i > 0 and j > 0 else 0
      if orig[i] == tok[j] and f_prev + 1 > f.get((i, j), 0):
        g[i, j] = 2
        f[i, j] = f_prev + 1
  return f, g


def convert_index(index: list, pos: int, m: Optional[int] = None, is_start: bool = True) -> int:
  """Official `_convert_index`: map `pos` through `index`, bridging unaligned (None) entries."""
  if index[pos] is not None:
    return index[pos]
  n = len(index)
  rear = pos
  while rear < n - 1 and index[rear] is None:
    rear += 1
  front = pos
  while front > 0 and index[front] is None:
    front -= 1
  if index[front] is None:
    if index[rear] >= 1:
      return 0 if is_start else index[rear] - 1
    return index[rear]
  if index[rear] is None:
    if m is not None and index[front] < m - 1:
      return index[front] + 1 if is_start else m - 1
    return index[front]
  if is_start:
    return index[front] + 1 if index[rear] > index[front] + 1 else index[rear]
  return index[rear] - 1 if index[rear] > index[front] + 1 else index[front]


@dataclasses.dataclass
class Alignment:
  piece_ids: list[int]
  tok_start_to_orig: list[int]
  tok_end_to_orig: list[int]
  orig_to_chartok: list
  chartok_to_tok: list[int]


def align_paragraph(context: str, tokenizer) -> Optional[Alignment]:
  """Pieces of `context` and their character spans in it; None on an official MISMATCH."""
  pieces = tokenizer.tokenize(context)
  chartok_to_tok, tok_start, tok_end = [], [], []
  count = 0
  for i, piece in enumerate(pieces):
    text = piece.replace(SPIECE_UNDERLINE, " ")
    chartok_to_tok.extend([i] * len(text))
    tok_start.append(count)
    count += len(text)
    tok_end.append(count - 1)
  tok_text = "".join(pieces).replace(SPIECE_UNDERLINE, " ")
  n, m = len(context), len(tok_text)
  if n == 0 or m == 0:
    return None
  orig = [_normalize_char(c, tokenizer.do_lower_case, tokenizer.keep_accents) for c in context]
  max_dist = abs(n - m) + 5
  for _ in range(2):
    f, g = _lcs_match(orig, tok_text, max_dist)
    if f.get((n - 1, m - 1), 0) > 0.8 * n:
      break
    max_dist *= 2
  orig_to_chartok: list = [None] * n
  chartok_to_orig: list = [None] * m
  i, j = n - 1, m - 1
  while i >= 0 and j >= 0 and (i, j) in g:
    if g[i, j] == 2:
      orig_to_chartok[i], chartok_to_orig[j] = j, i
      i, j = i - 1, j - 1
    elif g[i, j] == 1:
      j -= 1
    else:
      i -= 1
  if all(v is None for v in orig_to_chartok) or f.get((n - 1, m - 1), 0) < 0.8 * n:
    return None
  return Alignment(
      piece_ids=tokenizer.convert_tokens_to_ids(pieces),
      tok_start_to_orig=[convert_index(chartok_to_orig, s, n, True) for s in tok_start],
      tok_end_to_orig=[convert_index(chartok_to_orig, e, n, False) for e in tok_end],
      orig_to_chartok=orig_to_chartok, chartok_to_tok=chartok_to_tok)
