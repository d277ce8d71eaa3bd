"""`predict generate` and `predict score`: the predict command line's modes on the masked LM
(generation: inference/generate.py; scoring: inference/score.py).

generate: each input is a text with `[MASK]` (one piece) and `[MASK*N]` (a span of N pieces)
slots, filled by --strategy (mask_predict or gibbs). With --max_new_pieces=N (or a JSON input's
"max_new_pieces") the input is a prompt instead, continued by N pieces before --suffix (or the
input's "suffix"); slots inside a prompt are filled too. Input lines: plain text or JSON
{"text" (or "prompt")[, "suffix"][, "max_new_pieces"]}. Output: the completed text, then one line
per slot (its text, pieces and probabilities); --format=jsonl: per input the completed text, its
pieces and per slot its position, pieces, ids and probabilities.

score: each input (plain text or {"text"}) gets its pseudo-log-likelihood (PLL, natural log) and
pseudo-perplexity. Output: `pseudo-perplexity<TAB>PLL<TAB>pieces<TAB>text` per input;
--format=jsonl adds the pieces and their log-probabilities. The corpus pseudo-perplexity (summed
PLLs over all scored pieces) goes to stderr as one line, so that the output keeps one line or
record per input. --batch_size counts masked copies (one per piece) for score, inputs for
generate.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Optional

from absl import flags

from albert_jax import command_line
from albert_jax.data import tokenization
from albert_jax.inference import decode_settings
from albert_jax.tasks import InputError

if TYPE_CHECKING:  # the model side loads jax: imported where it runs (`run`), after the checks
  from albert_jax.inference.loading import Loaded

MODES = ("generate", "score")
# Flags of `generate` only (--top_k and --batch_size are shared with other modes).
_GENERATE_FLAGS = ("strategy", "iterations", "order", "burn_in", "greedy", "temperature",
                   "top_p", "seed", "max_new_pieces", "suffix")
_SAMPLING_FLAGS = ("temperature", "top_k", "top_p")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The flags of `generate` (its DecodeSettings and continuation)."""
  defaults = decode_settings.DecodeSettings()
  flags.DEFINE_enum("strategy", defaults.strategy, list(decode_settings.STRATEGIES),
                    "generate: how slots are filled", flag_values=flag_values)
  flags.DEFINE_integer("iterations", defaults.iterations, "generate: mask_predict passes, or "
                       "gibbs sweeps over the slots", flag_values=flag_values)
  flags.DEFINE_enum("order", defaults.order, list(decode_settings.ORDERS),
                    "generate (gibbs): the order of a sweep", flag_values=flag_values)
  flags.DEFINE_integer("burn_in", defaults.burn_in, "generate (gibbs): first sweeps drawing "
                       "from the full distribution", flag_values=flag_values)
  flags.DEFINE_bool("greedy", defaults.greedy, "generate: the most probable piece, no sampling",
                    flag_values=flag_values)
  flags.DEFINE_float("temperature", defaults.temperature, "generate: sampling temperature",
                     flag_values=flag_values)
  flags.DEFINE_float("top_p", defaults.top_p, "generate: nucleus sampling (1.0: all pieces)",
                     flag_values=flag_values)
  flags.DEFINE_integer("seed", defaults.seed, "generate: random seed (same seed, same output)",
                       flag_values=flag_values)
  flags.DEFINE_integer("max_new_pieces", 0, "generate: continue each input (a prompt) by this "
                       "many pieces (0: inputs are texts with [MASK] slots)",
                       flag_values=flag_values)
  flags.DEFINE_string("suffix", "", "generate with --max_new_pieces: text after the new pieces",
                      flag_values=flag_values)


def check_flags(values: flags.FlagValues, mode: str) -> None:
  """Usage errors for flags that would be ignored: nothing given is silently dropped."""
  given = [name for name in _GENERATE_FLAGS if values[name].present]
  if mode != "generate" and given:
    command_line.usage_error(f"--{given[0]} is a `generate` flag; `{mode}` takes none of "
                             f"{['--' + n for n in _GENERATE_FLAGS]}")
  if mode != "generate":
    return
  if values.greedy and any(values[n].present for n in _SAMPLING_FLAGS):
    sampling = [f"--{n}" for n in _SAMPLING_FLAGS if values[n].present]
    command_line.usage_error(f"--greedy takes the most probable piece: {', '.join(sampling)} "
                             "(sampling) would be ignored")
  if values.strategy == "mask_predict" and values["order"].present:
    command_line.usage_error("--order is a gibbs setting (pass --strategy=gibbs)")
  if values.max_new_pieces < 0:
    command_line.usage_error(f"--max_new_pieces={values.max_new_pieces}: must be >= 0 (0: "
                             "infilling)")


def parse_generate_input(ex: dict, where: str) -> dict:
  """A generate input's fields ("text" or "prompt", "suffix", "max_new_pieces"), type-checked."""
  unknown = sorted(set(ex) - {"text", "prompt", "suffix", "max_new_pieces"})
  if unknown:
    raise InputError(f"{where}: unknown field(s) {unknown}; generate takes \"text\" (or "
                     "\"prompt\"), \"suffix\" and \"max_new_pieces\"")
  if "text" in ex and "prompt" in ex:
    raise InputError(f"{where}: give \"text\" or \"prompt\", not both")
  text = ex.get("text", ex.get("prompt"))
  if not isinstance(text, str) or not text.strip():
    raise InputError(f"{where}: empty or missing 'text' (or 'prompt')")
  if not isinstance(ex.get("suffix", ""), str):
    raise InputError(f"{where}: 'suffix' must be a string")
  n = ex.get("max_new_pieces")
  if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
    raise InputError(f"{where}: 'max_new_pieces' must be an integer >= 1, got {n!r}")
  return dict(ex)


def _template(ex: dict, args: types.SimpleNamespace) -> str:
  """The infilling text of one generate input (a continuation's prompt + slot + suffix)."""
  text, where = ex.get("text", ex.get("prompt")), ex["where"]
  n = ex.get("max_new_pieces", args.max_new_pieces)
  suffix = ex.get("suffix", args.suffix)
  if n:
    return decode_settings.continuation_template(text, n, suffix, where)
  if suffix:
    raise InputError(f"{where}: a suffix needs --max_new_pieces (or \"max_new_pieces\"): the "
                     "number of pieces to generate before it")
  if not decode_settings.SLOT.search(text):
    raise InputError(f"{where}: no {tokenization.MASK} slot in {text!r}: write [MASK] or "
                     "[MASK*N] where pieces go, or pass --max_new_pieces=N to continue the text")
  return text


def settings(args: types.SimpleNamespace) -> decode_settings.DecodeSettings:
  """The DecodeSettings of the command line's flags."""
  return decode_settings.DecodeSettings(
      strategy=args.strategy, iterations=args.iterations, order=args.order,
      burn_in=args.burn_in, greedy=args.greedy, temperature=args.temperature,
      top_k=args.top_k or 0, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size)


def run(args: types.SimpleNamespace, loaded: Loaded,
        examples: list[dict]) -> tuple[list[dict], Optional[str]]:
  """(one result dict per example, the summary line for stderr or None) of generate / score."""
  from albert_jax.inference import generate, score  # pylint: disable=g-import-not-at-top
  from albert_jax.inference.mlm import MaskedLM  # pylint: disable=g-import-not-at-top
  where = [ex["where"] for ex in examples]
  if args.mode == "generate":
    texts = [_template(ex, args) for ex in examples]
    decode = settings(args)  # bad settings fail before the masked LM is built
    results = generate.infill(MaskedLM.from_loaded(loaded), texts, decode, where)
    return [g.to_json() for g in results], None
  scores = score.score(MaskedLM.from_loaded(loaded), [ex["text"] for ex in examples],
                       args.batch_size, where)
  pieces = sum(len(s.pieces) for s in scores)
  summary = (f"corpus pseudo-perplexity {score.corpus_pseudo_perplexity(scores):.4f} over "
             f"{len(scores)} texts ({pieces} pieces, PLL {sum(s.pll for s in scores):.4f})")
  return [s.to_json() for s in scores], summary


def format_text(mode: str, result: dict) -> list[str]:
  """The plain-text lines of one result."""
  if mode == "score":
    return [f"{result['pseudo_perplexity']:.4f}\t{result['pll']:.4f}\t{len(result['pieces'])}\t"
            f"{result['text']}"]
  lines = [result["text"]]
  for n, slot in enumerate(result["slots"]):
    pieces = ", ".join(f"{piece} {p:.3f}" for piece, p in zip(slot["pieces"],
                                                              slot["probabilities"]))
    lines.append(f"  slot {n + 1}: {slot['text']} ({pieces})")
  return lines
