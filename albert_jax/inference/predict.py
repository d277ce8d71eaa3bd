"""Inference on raw text with a pretrained or fine-tuned checkpoint.

    python -m albert_jax.predict fill-mask --checkpoint=DIR "the [MASK] returns a new list."
    python -m albert_jax.predict classify --checkpoint=runs/sst2 "a gripping, funny film"
    python -m albert_jax.predict classify --checkpoint=runs/mrpc --input=pairs.jsonl  # text_a/b
    python -m albert_jax.predict qa --checkpoint=runs/squad2 '{"question": "...", "context": "..."}'
    python -m albert_jax.predict tag --checkpoint=runs/conll2003 < sentences.txt
    python -m albert_jax.predict choice --checkpoint=runs/race --input=questions.jsonl
    python -m albert_jax.predict generate --checkpoint=DIR "the [MASK*3] returns a [MASK] ."
    python -m albert_jax.predict generate --checkpoint=DIR --max_new_pieces=8 "the function"
    python -m albert_jax.predict score --checkpoint=DIR --input=sentences.txt --format=jsonl

--checkpoint: every kind that albert_jax.train.checkpoint_kinds reads: a fine-tuning workdir (its
`best/` is used) or a `best/`; any `convert.save_checkpoint` directory (e.g. `python -m
albert_jax.convert --hf_dir=... --out_checkpoint=...`); a pretraining workdir (its newest readable
step, with the model config the run saved beside it; a workdir from before runs saved one needs the
run's `--config`, e.g. configs/demo.py); a Hugging Face directory; or an official TF checkpoint or
TF-Hub module (with the albert_config.json beside it, or --albert_config). The task of a
fine-tuned checkpoint comes from `best/task.json` (written by albert_jax.finetune), the workdir's
metrics.json, or --config=<the fine-tuning config>. The SentencePiece model comes from
--spm_model, the task, the pretraining config or the usual files beside the checkpoint
(data/spm.model, spiece.model, 30k-clean.model). Our checkpoints and workdirs, the SentencePiece
model and --input may be in a bucket (gs://...); Hugging Face and official TF checkpoints are read
from local disk.

Input: the arguments after the mode, else --input=FILE ("-" = stdin), else stdin; one example per
line (blank lines skipped). A line is plain text or a JSON object: fill-mask {"text"}; classify
{"text_a"[, "text_b"]}; qa {"question", "context"}; tag {"words": [...]} or {"text"} (words split
on whitespace); choice {"article", "question", "options": [4 options]}. Output (--format): text,
one line per example (fill-mask: the text, then one line per mask), or JSON lines with the details
(probabilities, n-best answers, entities). Examples are featurized as in training (the task
family's own featurizer) and run in batches of --batch_size; inputs that training would truncate
(classify, choice) are refused unless --truncate; qa and tag use the training windows, so long
inputs are fine. fill-mask: the text around each [MASK] is encoded as separate words, and a
candidate piece without "▁" joins the word before it ("word" in the output). generate (text
with [MASK] / [MASK*N] slots, or a prompt and --max_new_pieces) and score (pseudo-log-likelihood):
see albert_jax/inference/predict_mlm.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from typing import Any, Optional, Sequence

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import command_line
from albert_jax import fileio
from albert_jax.train import finetune
from albert_jax.inference import predict_mlm
from albert_jax.inference.loading import InputError, Loaded, load, load_config_file
from albert_jax.model import modeling
from albert_jax.train import warm_start
from albert_jax import tasks as tasks_lib
from albert_jax.data import tokenization

# Mode -> the task family it needs (None: the pretraining MLM head); each family names its mode.
MODES = {"fill-mask": None, **dict.fromkeys(predict_mlm.MODES),
         **{f.predict_mode: name for name, f in tasks_lib.families().items()}}
_MODE_OF = {family: mode for mode, family in MODES.items() if family}
_MASK = re.compile(re.escape(tokenization.MASK))


def _fit(params: dict, model: nn.Module, init_ids: jax.Array, what: str) -> dict:
  """The checkpoint's parameters for `model`, checked leaf by leaf (shape errors name the leaf)."""
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), init_ids)["params"])
  try:
    return warm_start.fit_params(params, abstract, False)
  except ValueError as e:
    raise InputError(f"the checkpoint does not fit {what}: {e}") from None


@dataclasses.dataclass
class _TaskModel:
  task: ml_collections.ConfigDict
  family: tasks_lib.TaskFamily
  max_seq_length: int              # the fine-tuning data.max_seq_length
  input_keys: tuple[str, ...]
  predict: Any     # jitted (params, batch) -> outputs + row
  params: dict


def _task_model(loaded: Loaded, mode: str) -> _TaskModel:
  """The fine-tuned model of a task mode, or an error saying why the checkpoint is wrong."""
  family, task = MODES[mode], loaded.task
  heads = sorted(k for k in loaded.params if k != "albert")
  if task is None:
    kind = ("a pretraining checkpoint" if "predictions" in loaded.params
            else f"a checkpoint without task information (heads: {heads})")
    raise InputError(f"--checkpoint {loaded.path} is {kind}: `{mode}` needs a model fine-tuned "
                     f"on a {family} task (a fine-tuning workdir or its best/, or pass "
                     "--config=<the fine-tuning config>)")
  if task.family != family:
    raise InputError(f"--checkpoint {loaded.path} was fine-tuned for {task.family} "
                     f"({tasks_lib.task_label(task)}); use `predict "
                     f"{_MODE_OF.get(task.family)}`, not `predict {mode}`")
  fam = tasks_lib.family(family)
  config = ml_collections.ConfigDict({"model": loaded.model_config.to_config_dict().to_dict(),
                                      "task": task.to_dict()})
  model, head = finetune.build_model(config)
  if head not in loaded.params:
    raise InputError(f"--checkpoint {loaded.path} has no {head!r} head for "
                     f"{tasks_lib.task_label(task)} (its heads: {heads})")
  if not loaded.data or not loaded.data.get("max_seq_length"):
    raise InputError(f"--checkpoint {loaded.path}: its task has no data.max_seq_length (pass "
                     "--config=<the fine-tuning config>)")
  length = loaded.data.max_seq_length
  params = _fit(loaded.params, model, jnp.zeros((1,) + fam.input_shape(task, length), jnp.int32),
                f"a {tasks_lib.task_label(task)} model")
  return _TaskModel(task, fam, length, fam.input_keys(task),
                    jax.jit(finetune.make_predict(config, model)), params)


def _run(tm: _TaskModel, arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Model outputs for every row of `arrays`, in row order (batches of `batch_size`)."""
  arrays = {k: arrays[k] for k in tm.input_keys}
  chunks: dict[str, list] = {}
  for batch in tasks_lib.eval_batches(arrays, batch_size):  # the last batch padded: one shape
    for k, v in tm.predict(tm.params, batch).items():
      chunks.setdefault(k, []).append(np.asarray(v))
  out = {k: np.concatenate(v) for k, v in chunks.items()}
  keep = out.pop("row") >= 0
  return {k: v[keep] for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# Modes. Each takes parsed examples (dicts) and returns one result dict per example.
# ----------------------------------------------------------------------------------------------


def _word_of(pieces: list[str], i: int) -> str:
  """The whole word that piece i belongs to (pieces join until the next "▁" piece)."""
  start = i
  while start > 0 and not pieces[start].startswith(tokenization.SPIECE_UNDERLINE) and (
      not pieces[start - 1].startswith("[")):
    start -= 1
  end = i + 1
  while end < len(pieces) and not pieces[end].startswith((tokenization.SPIECE_UNDERLINE, "[")):
    end += 1
  return "".join(pieces[start:end]).replace(tokenization.SPIECE_UNDERLINE, " ").strip()


def fill_mask(loaded: Loaded, examples: list[dict], top_k: int = 5, batch_size: int = 32,
              max_seq_length: int = 0) -> list[dict]:
  """Top-k pieces (and the whole words they complete) for every [MASK] of every text."""
  tok, cfg = loaded.tokenizer, loaded.model_config
  if "predictions" not in loaded.params:
    what = f"fine-tuned for {loaded.task.family}" if loaded.task else "without an MLM head"
    raise InputError(f"--checkpoint {loaded.path} is {what} (no 'predictions' parameters): "
                     "fill-mask needs a pretraining checkpoint")
  limit = min(max_seq_length or cfg.max_position_embeddings, cfg.max_position_embeddings)
  model = modeling.AlbertForMaskedLM(cfg)
  params = _fit(loaded.params, model, jnp.zeros((1, 2), jnp.int32), "a masked-LM model")
  apply = jax.jit(lambda p, ids, mask, pos: model.apply({"params": p}, ids, mask,
                                                        masked_positions=pos)["mlm_logits"])
  sequences = []
  for ex in examples:
    segments = _MASK.split(ex["text"])
    if len(segments) == 1:
      raise InputError(f"{ex['where']}: no {tokenization.MASK} in the text {ex['text']!r}")
    ids = [tok.cls_id]
    for n, piece_ids in enumerate(tok.encode_batch(segments)):
      ids += ([tok.mask_id] if n else []) + piece_ids
    ids.append(tok.sep_id)
    if len(ids) > limit:
      field = ("model config 'max_position_embeddings'" if limit == cfg.max_position_embeddings
               else "--max_seq_length")
      raise tasks_lib.too_long(ex["where"], len(ids), limit, field,
                               truncatable="max_position" not in field)
    sequences.append(ids)
  results = []
  for start in range(0, len(sequences), batch_size):
    chunk = sequences[start:start + batch_size]
    # Pad to a power of two (and a full batch) so that few shapes are ever compiled.
    length = min(limit, max(16, 1 << (max(map(len, chunk)) - 1).bit_length()))
    masks = [[i for i, t in enumerate(s) if t == tok.mask_id] for s in chunk]
    width = max(map(len, masks))
    ids, mask = np.zeros((2, batch_size, length), np.int32)
    positions = np.zeros((batch_size, width), np.int32)
    for r, (s, m) in enumerate(zip(chunk, masks)):
      ids[r, :len(s)], mask[r, :len(s)] = s, 1
      positions[r, :len(m)] = m
    logits = np.asarray(apply(params, ids, mask, positions))
    for r, (s, m) in enumerate(zip(chunk, masks)):
      probs = tasks_lib.softmax(logits[r, :len(m)].astype(np.float64))
      pieces = tok.convert_ids_to_tokens(s)
      filled, out = list(pieces), []
      for j, position in enumerate(m):
        candidates = []
        for rank, i in enumerate(np.argsort(-probs[j], kind="stable")[:top_k]):
          piece = tok.convert_ids_to_tokens([int(i)])[0]
          word = _word_of(pieces[:position] + [piece] + pieces[position + 1:], position)
          candidates.append({"rank": rank + 1, "piece": piece, "id": int(i),
                             "probability": float(probs[j, i]), "word": word})
        filled[position] = candidates[0]["piece"]
        out.append({"mask": j + 1, "candidates": candidates})
      text = "".join(filled[1:-1]).replace(tokenization.SPIECE_UNDERLINE, " ").strip()
      results.append({"masks": out, "filled": text})
  return results


def predict_task(loaded: Loaded, mode: str, examples: list[dict], batch_size: int = 32,
                 truncate: bool = False, null_threshold: Optional[float] = None) -> list[dict]:
  """A fine-tuned task mode (classify, qa, tag, choice): the task family featurizes the examples
  as in training, the model runs in batches of `batch_size`, the family decodes the outputs.

  truncate: cut inputs that training would truncate (classify, choice) instead of refusing them;
  null_threshold: SQuAD v2's no-answer threshold (None: the one tuned on dev).
  """
  tm = _task_model(loaded, mode)
  options = tasks_lib.PredictOptions(truncate=truncate, null_threshold=null_threshold,
                                     best_metrics=loaded.best_metrics)
  return tm.family.predict(tm.task, tm.max_seq_length, loaded.tokenizer, examples,
                           lambda arrays: _run(tm, arrays, batch_size), options)


# ----------------------------------------------------------------------------------------------
# Input and output.
# ----------------------------------------------------------------------------------------------

def parse_example(mode: str, line: str, where: str) -> dict:
  """One input line (plain text or a JSON object) -> the mode's fields, validated."""
  fam = tasks_lib.family(MODES[mode]) if MODES[mode] else None
  stripped = line.strip()
  if stripped.startswith("{"):
    try:
      ex = json.loads(stripped)
    except json.JSONDecodeError as e:
      raise InputError(f"{where}: not a JSON object ({e})") from None
  elif fam is not None and fam.plain_text_field is None:
    raise InputError(f"{where}: `{mode}` needs a JSON object with "
                     f"{list(fam.predict_fields)}, got plain text")
  else:
    ex = {fam.plain_text_field if fam is not None else "text": line}
  if fam is not None:
    ex = fam.parse_predict_input(ex, where)
  elif mode == "generate":
    ex = predict_mlm.parse_generate_input(ex, where)
  elif not str(ex.get("text") or "").strip():
    raise InputError(f"{where}: empty or missing 'text'")
  ex["where"] = where
  return ex


def read_inputs(texts: Sequence[str], input_file: str) -> list[tuple[str, str]]:
  """(where, line) of every example: the arguments, else the file or stdin (blank lines skipped)."""
  if texts:
    return [(f"argument {i + 1}", t) for i, t in enumerate(texts)]
  if input_file and input_file != "-":
    if not fileio.isfile(input_file):
      raise InputError(f"--input file {input_file!r} not found")
    lines = fileio.read_text(input_file).splitlines()
    name = input_file
  elif input_file == "-" or not sys.stdin.isatty():
    try:
      text, name = sys.stdin.read(), "stdin"
      text.encode("utf-8")  # undecodable bytes read as lone surrogates (errors=surrogateescape)
    except UnicodeError as e:
      # A binary stdin is named here, not left to the tokenizer's TypeError.
      raise InputError(f"stdin: not UTF-8 text ({e.reason}; binary input?)") from None
    lines = text.splitlines()
  else:
    raise InputError("no input: give texts as arguments, --input=FILE, or pipe lines to stdin")
  out = [(f"{name}:{n + 1}", line) for n, line in enumerate(lines) if line.strip()]
  if not out:
    raise InputError(f"no examples in {name} (every line is empty)")
  return out


def format_text(mode: str, ex: dict, result: dict) -> list[str]:
  """The plain-text lines of one result."""
  if MODES[mode]:
    return tasks_lib.family(MODES[mode]).format_prediction(ex, result)
  if mode in predict_mlm.MODES:
    return predict_mlm.format_text(mode, result)
  ranked = lambda m: " | ".join(f"{c['word'] or c['piece']} {c['probability']:.3f}"
                                for c in m["candidates"])
  return [ex["text"]] + [f"  [MASK] {m['mask']}: {ranked(m)}" for m in result["masks"]]


PROG = "python -m albert_jax.predict"


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (defined only when it is parsed: `command_line.parse`)."""
  def string(name: str, help_text: str) -> None:
    flags.DEFINE_string(name, "", help_text, flag_values=flag_values)

  string("checkpoint", "the model (required): see the module docstring for the kinds")
  string("input", "one example per line; - = stdin")
  string("output", "write here instead of stdout")
  flags.DEFINE_enum("format", "text", ["text", "jsonl"], "output format",
                    flag_values=flag_values)
  string("config", "FILE[:ARG] the checkpoint was trained with")
  flags.DEFINE_multi_string("set", [], "config override field=value (repeatable)",
                            flag_values=flag_values)
  string("spm_model", "SentencePiece model (else found as the module docstring says)")
  string("albert_config", "albert_config.json (TF checkpoints)")
  flags.DEFINE_bool("cased", False, "do not lower-case (cased models)", flag_values=flag_values)
  flags.DEFINE_enum("preprocessing", None, list(tokenization.PREPROCESSING), "text "
                    "normalization (default: the checkpoint run's data.preprocessing, else "
                    "official; huggingface: also `` and '' -> \" as HF's AlbertTokenizer)",
                    flag_values=flag_values)
  flags.DEFINE_integer("batch_size", 32, "examples per batch (score: masked copies)",
                       flag_values=flag_values)
  flags.DEFINE_integer("top_k", None, "fill-mask: candidates per mask (default 5); generate: "
                       "sample from the k most probable pieces (default 0: all)",
                       flag_values=flag_values)
  flags.DEFINE_integer("max_seq_length", 0, "fill-mask length limit (0: the model's)",
                       flag_values=flag_values)
  predict_mlm.define_flags(flag_values)
  flags.DEFINE_bool("truncate", False, "classify/choice: cut long inputs as training does "
                    "instead of failing", flag_values=flag_values)
  flags.DEFINE_float("null_threshold", None, "qa (SQuAD v2): override the dev-tuned no-answer "
                     "threshold", flag_values=flag_values)


def parse_args(argv: Optional[Sequence[str]]) -> types.SimpleNamespace:
  """The flags' values, `mode` (the first positional argument) and `texts` (the others)."""
  values, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  if not positional or positional[0] not in MODES:
    got = f"got {positional[0]!r}" if positional else "none given"
    command_line.usage_error(f"the first argument is the mode, one of {sorted(MODES)} ({got})")
  if not values.checkpoint:
    command_line.usage_error("--checkpoint is required")
  if values.batch_size < 1:
    command_line.usage_error("--batch_size must be positive")
  top_k_least = 0 if positional[0] == "generate" else 1  # generate: 0 samples from all pieces
  if values.top_k is not None and values.top_k < top_k_least:
    command_line.usage_error(f"--top_k={values.top_k}: must be >= {top_k_least}")
  predict_mlm.check_flags(values, positional[0])
  return types.SimpleNamespace(**values.flag_values_dict(), mode=positional[0],
                               texts=positional[1:])


def text_overrides(args: types.SimpleNamespace) -> dict:
  """The tokenizer options the flags set (the others come from the checkpoint's run)."""
  return {**({"do_lower_case": False} if args.cased else {}),
          **({"preprocessing": args.preprocessing} if args.preprocessing else {})}


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  args = parse_args(argv)
  examples = [parse_example(args.mode, line, where)
              for where, line in read_inputs(args.texts, args.input)]
  config = load_config_file(args.config, args.set) if args.config else None
  loaded = load(args.checkpoint, config=config, spm_model=args.spm_model,
                albert_config=args.albert_config, text_options=text_overrides(args))
  summary = None
  if args.mode == "fill-mask":
    top_k = 5 if args.top_k is None else args.top_k
    results = fill_mask(loaded, examples, top_k, args.batch_size, args.max_seq_length)
  elif args.mode in predict_mlm.MODES:
    results, summary = predict_mlm.run(args, loaded, examples)
  else:
    results = predict_task(loaded, args.mode, examples, args.batch_size, args.truncate,
                           args.null_threshold)
  out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
  try:
    for ex, result in zip(examples, results):
      if args.format == "jsonl":
        record = {k: v for k, v in ex.items() if k != "where"}
        out.write(json.dumps({"input": record, **result}, ensure_ascii=False) + "\n")
      else:
        out.writelines(line + "\n" for line in format_text(args.mode, ex, result))
  finally:
    if args.output:
      out.close()
  if summary:
    print(summary, file=sys.stderr)
  return 0


def cli() -> None:
  """The command line (also reached through the top-level module of the same name)."""
  command_line.run(main)


if __name__ == "__main__":
  cli()
