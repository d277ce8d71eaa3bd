"""Text generation with a masked LM: infilling and continuation by iterative refinement.

An encoder-only masked LM generates by filling masked slots and refining them:

* `mask_predict` (Ghazvininejad et al. 2019, "Mask-Predict: Parallel Decoding of Conditional
  Masked Language Models", https://arxiv.org/abs/1904.09324): iteration 0 predicts every slot piece;
  at iteration t = 1 .. T-1 the n = N*(T-t)/T least confident of the N slot pieces (rounded down)
  are masked again and predicted anew, the others kept with their probability. T =
  `iterations` forward passes.
* `gibbs` (Wang and Cho 2019, "BERT has a Mouth, and It Must Speak: BERT as a Markov Random Field
  Language Model", https://arxiv.org/abs/1902.04094): the slots start masked; each step masks one
  slot piece and draws it from the model's conditional given all the others. A sweep visits every
  slot piece once, left to right (`order="left_to_right"`) or in a fresh random order per sweep
  (`order="random"`); `iterations` sweeps in all. During the first `burn_in` sweeps pieces are
  drawn from the full (tempered) distribution, afterwards by the configured rule (greedy, top-k,
  top-p), as in the authors' code (burn-in samples, then the rule applies).

Picking a piece: `greedy` takes the most probable one; otherwise it is drawn from the softmax of
logits / `temperature`, restricted to the `top_k` most probable pieces (0: all) and to the
smallest set whose probability reaches `top_p` (Holtzman et al. 2020, nucleus sampling; 1.0: all).
The control pieces (<pad>, <unk>, [CLS], [SEP], [MASK]) are never generated. A `seed` makes every
output reproducible: input i draws from jax.random.fold_in(PRNGKey(seed), i), so its output does
not depend on the batch it runs in.

Slot syntax in the text: `[MASK]` is one piece, `[MASK*N]` a span of N pieces (N >= 1), e.g.
"the [MASK*3] returns a new list of [MASK] ." A piece may be a whole word or part of one, so a
span of N pieces is at most N words. The text between slots is encoded as separate words (as
fill-mask does). Continuation, `continuation_template(prompt, max_new_pieces, suffix)`, is the
text "prompt [MASK*max_new_pieces] suffix".

Output (`Generation`, `to_json()` for JSONL): the completed text (pieces joined back to words), its
pieces, and per slot its pieces, ids and probabilities: the model's softmax probability (over the
whole vocabulary, temperature 1) of the piece when it was last predicted.

Decoding runs on device: one jitted function per strategy whose loop over iterations is a
`lax.fori_loop`, batched over inputs; lengths, slot pieces and batches are padded to buckets
(mlm.py), so a run compiles few shapes (`MaskedLM.compilations()`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.data import tokenization
from albert_jax.inference import mlm as mlm_lib
from albert_jax.inference.decode_settings import (  # noqa: F401  (part of this module's API)
    ORDERS, SLOT, STRATEGIES, DecodeSettings, continuation_template)
from albert_jax.inference.loading import InputError
from albert_jax.inference.mlm import MaskedLM

@dataclasses.dataclass
class Slot:
  """One filled slot: where its pieces are in `Generation.pieces`, and what was generated."""

  position: int               # index of its first piece in Generation.pieces
  pieces: list[str]
  ids: list[int]
  probabilities: list[float]
  text: str                   # its pieces joined (a piece without "▁" continues a word)


@dataclasses.dataclass
class Generation:
  text: str                   # the completed text
  pieces: list[str]           # all pieces, without [CLS] and [SEP]
  slots: list[Slot]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Template:
  ids: tuple[int, ...]                   # [CLS] ... [SEP] with [MASK] at every slot piece
  slots: tuple[tuple[int, int], ...]     # (first position, length) of each slot


def encode_template(tok: tokenization.SentencePieceTokenizer, text: str, limit: int,
                    where: str = "input") -> _Template:
  """Text with [MASK] / [MASK*N] slots -> its ids and slots; one-line errors name the input."""
  if not isinstance(text, str) or not text.strip():
    raise InputError(f"{where}: empty text")
  segments, lengths, end = [], [], 0
  for match in SLOT.finditer(text):
    count = match.group(1)
    if count is not None and not (count.isdigit() and int(count) >= 1):
      raise InputError(f"{where}: bad slot {match.group(0)!r}: write [MASK] for one piece or "
                       "[MASK*N] for a span of N >= 1 pieces")
    segments.append(text[end:match.start()])
    lengths.append(1 if count is None else int(count))
    end = match.end()
  if not lengths:
    raise InputError(f"{where}: no {tokenization.MASK} slot in {text!r} (write [MASK] for one "
                     "piece or [MASK*N] for a span of N pieces)")
  segments.append(text[end:])
  ids, slots = [tok.cls_id], []
  for n, piece_ids in enumerate(tok.encode_batch(segments)):
    if n:
      slots.append((len(ids), lengths[n - 1]))
      ids += [tok.mask_id] * lengths[n - 1]
    ids += piece_ids
  ids.append(tok.sep_id)
  if len(ids) > limit:
    raise InputError(f"{where}: {len(ids)} pieces (with [CLS], [SEP] and {sum(lengths)} slot "
                     f"pieces) exceed the model's max_position_embeddings={limit}; shorten the "
                     "text or the spans")
  return _Template(tuple(ids), tuple(slots))


# ----------------------------------------------------------------------------------------------
# On device.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rule:
  """The static part of picking a piece (it decides the compiled code)."""

  greedy: bool
  top_k: int
  nucleus: bool   # top_p < 1


def _sample(key, logits):
  """One draw per row of softmax(logits) [..., V] by inverting the CDF: one uniform number per
  row (jax.random.categorical draws a Gumbel number per vocabulary entry, which costs more than
  the MLM head of a small model)."""
  cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
  u = jax.random.uniform(key, logits.shape[:-1] + (1,)) * cdf[..., -1:]
  return jnp.minimum((cdf <= u).sum(-1), logits.shape[-1] - 1)  # a piece of probability > 0


def _pick(rule: _Rule, key, logits, banned, temperature, top_p,
          full: Optional[jax.Array] = None):
  """Pieces for logits [P, V] and their model probability; where `full`, drawn from all pieces
  (Gibbs burn-in) whatever the rule."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # the model's, over the whole vocabulary
  logits = jnp.where(banned, -jnp.inf, logits)
  scaled = logits / temperature
  if rule.greedy:
    chosen = jnp.argmax(logits, axis=-1)
  else:
    if rule.top_k or rule.nucleus:  # candidates sorted by probability, most probable first
      values, index = jax.lax.top_k(scaled, min(rule.top_k or logits.shape[-1], logits.shape[-1]))
    else:
      values, index = scaled, None
    if rule.nucleus:
      probs = jax.nn.softmax(values, axis=-1)
      before = jnp.cumsum(probs, axis=-1) - probs  # the most probable piece is always kept
      values = jnp.where(before < top_p, values, -jnp.inf)
    choice = _sample(jax.random.fold_in(key, 1), values)
    chosen = choice if index is None else jnp.take_along_axis(index, choice[..., None], -1)[..., 0]
  if full is not None:  # (drawn only where needed: sampling costs as much as the MLM head here)
    chosen = jnp.where(full, _sample(key, scaled), chosen)
  prob = jnp.exp(jnp.take_along_axis(log_probs, chosen[..., None], -1)[..., 0])
  return chosen.astype(jnp.int32), prob


def _write(ids, slot_pos, valid, values):
  """ids [B, T] with `values` [B, S] written at the valid slot positions (others unchanged)."""
  current = jnp.take_along_axis(ids, slot_pos, axis=1)
  rows = jnp.arange(ids.shape[0])[:, None]
  return ids.at[rows, slot_pos].set(jnp.where(valid, values, current))


def _mask_predict(spec: mlm_lib.MlmSpec, rule: _Rule, params, ids, attention_mask, slot_pos,
                  valid, keys, temperature, top_p, iterations):
  """Slot tokens and probabilities [B, S] after `iterations` mask-predict passes."""
  n_slots = valid.sum(-1)
  pick = jax.vmap(functools.partial(_pick, rule), in_axes=(0, 0, None, None, None))
  banned = spec.banned()

  def body(t, state):
    tokens, probs = state
    # The n = N*(T-t)/T least confident slot pieces are (re)predicted; at t=0 that is all N.
    rank = jnp.argsort(jnp.argsort(jnp.where(valid, probs, jnp.inf), axis=-1, stable=True), -1)
    remask = valid & (rank < ((n_slots * (iterations - t)) // iterations)[:, None])
    inputs = _write(ids, slot_pos, valid, jnp.where(remask, spec.mask_id, tokens))
    logits = spec.logits(params, inputs, attention_mask, slot_pos)
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
    new, new_probs = pick(step_keys, logits, banned, temperature, top_p)
    return jnp.where(remask, new, tokens), jnp.where(remask, new_probs, probs)

  init = (jnp.take_along_axis(ids, slot_pos, axis=1), jnp.zeros(slot_pos.shape, jnp.float32))
  return jax.lax.fori_loop(0, iterations, body, init)


def _gibbs(spec: mlm_lib.MlmSpec, rule: _Rule, order: str, params, ids, attention_mask,
           slot_pos, valid, keys, temperature, top_p, iterations, burn_in):
  """Slot tokens and probabilities [B, S] after `iterations` Gibbs sweeps over each row's slots."""
  n_slots = jnp.maximum(valid.sum(-1), 1)
  rows = jnp.arange(ids.shape[0])
  pick = jax.vmap(functools.partial(_pick, rule), in_axes=(0, 0, None, None, None, 0))
  banned = spec.banned()

  def visit(key, step, n, row_valid):  # the slot index one row resamples at this step
    sweep, j = step // n, step % n
    if order == "left_to_right":
      return j
    noise = jax.random.uniform(jax.random.fold_in(key, 2 * sweep), row_valid.shape)
    return jnp.argsort(jnp.where(row_valid, noise, jnp.inf))[j]  # valid slots come first

  def body(step, state):
    seq, tokens, probs = state
    k = jax.vmap(visit, in_axes=(0, None, 0, 0))(keys, step, n_slots, valid)
    pos = slot_pos[rows, k]
    logits = spec.logits(params, seq.at[rows, pos].set(spec.mask_id), attention_mask,
                         pos[:, None])
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2 * step + 1)
    new, new_prob = pick(step_keys, logits, banned, temperature, top_p,
                         (step < burn_in * n_slots)[:, None])
    # A row stops after its own `iterations` sweeps: its output does not depend on the batch.
    active = (step < iterations * n_slots) & valid[rows, k]
    seq = seq.at[rows, pos].set(jnp.where(active, new[:, 0], seq[rows, pos]))
    tokens = tokens.at[rows, k].set(jnp.where(active, new[:, 0], tokens[rows, k]))
    probs = probs.at[rows, k].set(jnp.where(active, new_prob[:, 0], probs[rows, k]))
    return seq, tokens, probs

  init = (ids, jnp.take_along_axis(ids, slot_pos, axis=1), jnp.zeros(slot_pos.shape, jnp.float32))
  steps = iterations * jnp.max(n_slots)
  _, tokens, probs = jax.lax.fori_loop(0, steps, body, init)
  return tokens, probs


def _decoder(lm: MaskedLM, settings: DecodeSettings):
  """The jitted decoding function of `settings`' strategy and rule (compiled once per shape)."""
  rule = (_Rule(True, 0, False) if settings.greedy  # top-k and top-p play no part then
          else _Rule(False, settings.top_k, settings.top_p < 1.0))
  if settings.strategy == "mask_predict":
    return lm.jit(f"mask_predict/{rule}", lambda spec: functools.partial(_mask_predict, spec, rule))
  return lm.jit(f"gibbs/{settings.order}/{rule}",
                lambda spec: functools.partial(_gibbs, spec, rule, settings.order))


# ----------------------------------------------------------------------------------------------
# API.
# ----------------------------------------------------------------------------------------------


def _run_batch(lm: MaskedLM, settings: DecodeSettings, templates: list[_Template],
               indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
  """Slot tokens and probabilities [rows, S] of one batch of templates (padded to buckets)."""
  rows = mlm_lib.batch_bucket(len(templates), settings.batch_size)
  length = mlm_lib.length_bucket(max(len(t.ids) for t in templates), lm.max_length)
  width = mlm_lib.slot_bucket(max(sum(n for _, n in t.slots) for t in templates), length)
  ids, attention = np.zeros((2, rows, length), np.int32)
  slot_pos, valid = np.zeros((rows, width), np.int32), np.zeros((rows, width), bool)
  for r, t in enumerate(templates):
    ids[r, :len(t.ids)], attention[r, :len(t.ids)] = t.ids, 1
    positions = [start + i for start, n in t.slots for i in range(n)]
    slot_pos[r, :len(positions)], valid[r, :len(positions)] = positions, True
  ids[len(templates):, 0], attention[len(templates):, 0] = lm.tokenizer.cls_id, 1  # padding rows
  base = jax.random.PRNGKey(settings.seed)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      base, np.array(indices + [0] * (rows - len(indices)), np.uint32))
  decode = _decoder(lm, settings)
  common = (lm.params, ids, attention, slot_pos, valid, keys,
            np.float32(settings.temperature), np.float32(settings.top_p),
            np.int32(settings.iterations))
  if settings.strategy == "gibbs":
    tokens, probs = decode(*common, np.int32(settings.burn_in))
  else:
    tokens, probs = decode(*common)
  return np.asarray(tokens), np.asarray(probs)


def _result(tok: tokenization.SentencePieceTokenizer, t: _Template, tokens: np.ndarray,
            probs: np.ndarray) -> Generation:
  ids, slots, j = list(t.ids), [], 0
  for start, n in t.slots:
    ids[start:start + n] = [int(x) for x in tokens[j:j + n]]
    pieces = tok.convert_ids_to_tokens(ids[start:start + n])
    slots.append(Slot(start - 1, pieces, ids[start:start + n],
                      [float(p) for p in probs[j:j + n]], mlm_lib.join_pieces(pieces)))
    j += n
  pieces = tok.convert_ids_to_tokens(ids[1:-1])
  return Generation(mlm_lib.join_pieces(pieces), pieces, slots)


def infill(lm: MaskedLM, texts: Sequence[str], settings: DecodeSettings = DecodeSettings(),
           where: Optional[Sequence[str]] = None) -> list[Generation]:
  """Fills the [MASK] / [MASK*N] slots of every text (see the module docstring)."""
  where = mlm_lib.input_labels(texts, where)
  templates = [encode_template(lm.tokenizer, text, lm.max_length, w)
               for text, w in zip(texts, where)]
  # Similar lengths share a batch (less padding); results go back in input order.
  order = sorted(range(len(templates)), key=lambda i: len(templates[i].ids))
  results: list[Optional[Generation]] = [None] * len(templates)
  for start in range(0, len(order), settings.batch_size):
    chunk = order[start:start + settings.batch_size]
    tokens, probs = _run_batch(lm, settings, [templates[i] for i in chunk], chunk)
    for r, i in enumerate(chunk):
      results[i] = _result(lm.tokenizer, templates[i], tokens[r], probs[r])
  return results  # type: ignore[return-value]


def continue_text(lm: MaskedLM, prompts: Sequence[str], max_new_pieces: int,
                  suffixes: Optional[Sequence[str]] = None,
                  settings: DecodeSettings = DecodeSettings(),
                  where: Optional[Sequence[str]] = None) -> list[Generation]:
  """max_new_pieces pieces after each prompt (and before its suffix, when given)."""
  where = mlm_lib.input_labels(prompts, where)
  suffixes = list(suffixes) if suffixes is not None else [""] * len(prompts)
  if len(suffixes) != len(prompts):
    raise InputError(f"{len(suffixes)} suffixes for {len(prompts)} prompts")
  texts = [continuation_template(p, max_new_pieces, s, w)
           for p, s, w in zip(prompts, suffixes, where)]
  return infill(lm, texts, settings, where)
