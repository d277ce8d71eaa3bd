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

This module is the command line only, and imports no jax or TensorFlow: flags and inputs are
checked first, then the model side (predictions.py, predict_mlm.run) is imported and run.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Optional, Sequence

from absl import flags

from albert_jax import command_line
from albert_jax import fileio
from albert_jax import tasks as tasks_lib
from albert_jax.data import tokenization
from albert_jax.inference import predict_mlm
from albert_jax.tasks import InputError

# Mode -> the task family it needs (None: the pretraining MLM head); each family names its mode.
MODES = {"fill-mask": None, **dict.fromkeys(predict_mlm.MODES),
         **{f.predict_mode: name for name, f in tasks_lib.families().items()}}
_MODE_OF = {family: mode for mode, family in MODES.items() if family}


def mode_of(family: str) -> Optional[str]:
  """The predict mode of a task family."""
  return _MODE_OF.get(family)

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
  # Imported only now, the flags and the input checked: they load jax and TensorFlow (seconds).
  from albert_jax.inference import loading, predictions  # pylint: disable=g-import-not-at-top
  config = loading.load_config_file(args.config, args.set) if args.config else None
  loaded = loading.load(args.checkpoint, config=config, spm_model=args.spm_model,
                        albert_config=args.albert_config, text_options=text_overrides(args))
  summary = None
  if args.mode == "fill-mask":
    top_k = 5 if args.top_k is None else args.top_k
    results = predictions.fill_mask(loaded, examples, top_k, args.batch_size,
                                    args.max_seq_length)
  elif args.mode in predict_mlm.MODES:
    results, summary = predict_mlm.run(args, loaded, examples)
  else:
    results = predictions.predict_task(loaded, args.mode, examples, args.batch_size,
                                       args.truncate, args.null_threshold)
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
