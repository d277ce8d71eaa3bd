"""SentencePiece tokenization with the official ALBERT preprocessing, and a vocabulary trainer.

Text -> ids follows the official ALBERT pipeline (google-research/albert `tokenization.py`,
`preprocess_text` and `encode_pieces`): collapse whitespace, NFKD-normalize and drop combining
marks (unless `keep_accents`), lower-case (if `do_lower_case`), SentencePiece-encode, then
re-split pieces such as "1990," into "1990" + "," (the official "digit + comma" fix).

`preprocessing="huggingface"` (config field `data.preprocessing`, flag `--preprocessing`) adds the
one step Hugging Face's `AlbertTokenizer` has on top (from XLNet's preprocessing): the LaTeX-style
quotes `` and '' become ", before accents are stripped. Use it for models trained or fine-tuned with
the Hugging Face tokenizer; the official models (and "official", the default) never replace them.

Intended differences, each documented and tested in tests/test_tokenization.py:
  * The digit+comma re-split follows the *intended* logic (as in the XLNet code and the former slow
    Hugging Face tokenizer): the re-encoded number gets SentencePiece's word-start marker, which is
    removed again when the original piece had none ("x1," -> "▁x", "1", ","). The official code run
    under Python 3 compares a str character with a bytes constant there, so it never removes it and
    ADDS a "▁" inside the word ("▁x", "▁1", ","). Where the piece started a word ("▁1990,") both
    give the same pieces.
  * With the default "official" preprocessing, ids differ from Hugging Face's on text with `` or ''
    (see above). transformers v5's `AlbertTokenizer` is a `tokenizers` pipeline without the
    digit+comma re-split (its former sentencepiece class, up to 4.x, had it), so ids also differ
    from v5's on pieces of the form "<digit>,", whichever preprocessing is chosen.

Special ids for models trained by `train_model` (the official spm_train flags): `<pad>`=0, `<unk>`=1,
`[CLS]`=2, `[SEP]`=3, `[MASK]`=4. Ids are looked up by piece, so any model that has these pieces works.

Command line:
    python -m albert_jax.data.tokenization train --input='corpus/*.txt' --vocab_size=30000 --output=PREFIX
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from absl import flags as absl_flags
import numpy as np
import sentencepiece as spm

from albert_jax import command_line

SPIECE_UNDERLINE = "\u2581"
PAD, UNK, CLS, SEP, MASK = "<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"

# The official vocabulary command (google-research/albert README.md). Vocabulary size, input size,
# coverage stay configurable; the special-symbol layout is what fixes the ids above.
OFFICIAL_TRAINER_FLAGS = {
    "pad_id": 0,
    "unk_id": 1,
    "eos_id": -1,
    "bos_id": -1,
    "control_symbols": "[CLS],[SEP],[MASK]",
    # A list, not the README's comma string: SentencePiece parses that string as CSV, where '"'
    # opens a quoted field and swallows the following symbols.
    "user_defined_symbols": ["(", ")", '"', "-", ".", "\u2013", "\u00a3", "\u20ac"],
    "shuffle_input_sentence": True,
    "input_sentence_size": 10_000_000,
    "character_coverage": 0.99995,
    "model_type": "unigram",
}

# Pieces that count as word starts for whole-word masking (official `_is_start_piece_sp`).
_PUNCTUATION = set('!"#$%&"()*+,-./:;?@[\\]^_`{|}~') | {"\u20ac", "\u00a3"}
_ENGLISH_AND_PUNCT = set("abcdefghijklmnopqrstuvwxyz") | _PUNCTUATION
_DIGIT_COMMA = re.compile(r"\d,")

# "official": google-research/albert `tokenization.preprocess_text`; "huggingface": transformers'
# `AlbertTokenizer.preprocess_text`, which also replaces LaTeX-style quotes.
PREPROCESSING = ("official", "huggingface")


class TokenizerError(ValueError):
  """A SentencePiece model file is missing, unreadable, or lacks the ALBERT special pieces."""


def check_preprocessing(preprocessing: str, field: str = "preprocessing") -> str:
  """`preprocessing` if it is one of PREPROCESSING, else a ValueError naming `field`."""
  if preprocessing not in PREPROCESSING:
    raise ValueError(f"{field}={preprocessing!r}: allowed: {list(PREPROCESSING)}")
  return preprocessing


def preprocess_text(text: str, *, lower: bool = True, keep_accents: bool = False,
                    preprocessing: str = "official") -> str:
  """The ALBERT text normalization applied before SentencePiece (module docstring)."""
  out = " ".join(text.strip().split())
  if preprocessing == "huggingface":  # as transformers does it: after the whitespace, before NFKD
    out = out.replace("``", '"').replace("''", '"')
  # ASCII text is NFKD-invariant and has no combining marks: skip the per-character pass (hot path).
  if not keep_accents and not out.isascii():
    out = unicodedata.normalize("NFKD", out)
    out = "".join(c for c in out if not unicodedata.combining(c))
  if lower:
    out = out.lower()
  return out


def is_start_piece(piece: str) -> bool:
  """Whether `piece` starts a word (official `_is_start_piece_sp`).

  True for pieces with the word-start marker, control/unknown pieces ("<..."), punctuation, and any
  piece with a character outside a-z/punctuation (digits and non-English text are whole words).
  """
  return (piece.startswith(SPIECE_UNDERLINE) or piece.startswith("<") or piece in _PUNCTUATION
          or not all(c.lower() in _ENGLISH_AND_PUNCT for c in piece))


class SentencePieceTokenizer:
  """ALBERT tokenizer: official preprocessing + SentencePiece + the digit/comma re-split."""

  def __init__(self, model_file: str, *, do_lower_case: bool = True, keep_accents: bool = False,
               preprocessing: str = "official"):
    self.model_file = os.fspath(model_file)
    self.do_lower_case = do_lower_case
    self.keep_accents = keep_accents
    self.preprocessing = check_preprocessing(preprocessing)
    self.sp = load_sentencepiece(self.model_file)
    self.vocab_size = self.sp.get_piece_size()
    self.unk_id = self.sp.unk_id()
    ids = {}
    for name, piece in (("pad", PAD), ("cls", CLS), ("sep", SEP), ("mask", MASK)):
      ids[name] = self.sp.piece_to_id(piece)
      if ids[name] == self.unk_id and piece != UNK:
        raise TokenizerError(
            f"SentencePiece model {self.model_file} has no {piece!r} piece; train it with "
            f"`python -m albert_jax.data.tokenization train` (control symbols [CLS],[SEP],[MASK]).")
    self.pad_id, self.cls_id, self.sep_id, self.mask_id = (
        ids["pad"], ids["cls"], ids["sep"], ids["mask"])

  def preprocess(self, text: str) -> str:
    return preprocess_text(text, lower=self.do_lower_case, keep_accents=self.keep_accents,
                           preprocessing=self.preprocessing)

  def tokenize(self, text: str) -> list[str]:
    """Preprocesses `text` and returns its pieces."""
    return self._pieces(self.preprocess(text))

  def encode(self, text: str) -> list[int]:
    """Preprocesses `text` and returns its ids."""
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Ids for many lines at once (one SentencePiece call for all lines without a digit+comma)."""
    pre = [self.preprocess(t) for t in texts]
    out: list[list[int] | None] = [None] * len(pre)
    plain = [i for i, t in enumerate(pre) if not _DIGIT_COMMA.search(t)]
    if plain:
      # num_threads=1: callers parallelise over processes; threads here would oversubscribe.
      for i, ids in zip(plain, self.sp.encode([pre[i] for i in plain], out_type=int, num_threads=1)):
        out[i] = ids
    for i, t in enumerate(pre):
      if out[i] is None:
        out[i] = [self.sp.piece_to_id(p) for p in self._pieces(t)]
    return out  # type: ignore[return-value]

  def _pieces(self, text: str) -> list[str]:
    pieces = self.sp.encode(text, out_type=str)
    result: list[str] = []
    for piece in pieces:
      if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
        # "1990," is one piece in many vocabularies; re-split so the number matches "1990" elsewhere.
        sub = self.sp.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
        if piece[0] != SPIECE_UNDERLINE and sub and sub[0].startswith(SPIECE_UNDERLINE):
          sub = sub[1:] if len(sub[0]) == 1 else [sub[0][1:]] + sub[1:]
        result.extend(sub)
        result.append(",")
      else:
        result.append(piece)
    return result

  def convert_tokens_to_ids(self, pieces: Iterable[str]) -> list[int]:
    return [self.sp.piece_to_id(p) for p in pieces]

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    return [self.sp.id_to_piece(int(i)) for i in ids]

  def start_piece_table(self) -> np.ndarray:
    """Boolean array over the vocabulary: `is_start_piece` of every id (whole-word masking)."""
    return np.array([is_start_piece(self.sp.id_to_piece(i)) for i in range(self.vocab_size)],
                    dtype=bool)


def load_sentencepiece(model_file: str) -> spm.SentencePieceProcessor:
  """Loads a SentencePiece model, with an error naming the file when it is missing or not a model.

  A URI (gs://...) is read through tf.io.gfile: SentencePiece itself opens local files only.
  """
  remote = "://" in model_file
  if remote:
    from albert_jax import fileio  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    found = fileio.isfile(model_file)
  else:
    found = os.path.isfile(model_file)
  if not found:
    raise TokenizerError(f"SentencePiece model file {model_file!r} does not exist.")
  sp = spm.SentencePieceProcessor()
  try:
    if remote:
      sp.load_from_serialized_proto(fileio.read_bytes(model_file))
    else:
      sp.load(model_file)
  except (OSError, RuntimeError) as e:
    raise TokenizerError(
        f"{model_file!r} is not a SentencePiece model (loading it failed: {e}).") from e
  return sp


def text_options(data: Mapping) -> dict:
  """The tokenizer's text options (keyword arguments of SentencePieceTokenizer and train_model)
  from a config's `data` section; configs from before a field existed get its default."""
  return {"do_lower_case": bool(data.get("do_lower_case", True)),
          "keep_accents": bool(data.get("keep_accents", False)),
          "preprocessing": check_preprocessing(data.get("preprocessing", "official"),
                                               "config field 'data.preprocessing'")}


def _iter_training_sentences(files: Sequence[str], normalize: Callable[[str], str],
                             invalid: dict[str, int]) -> Iterator[str]:
  """Preprocessed non-empty lines; `invalid` counts, per file, the lines with invalid UTF-8 (their
  bad bytes become U+FFFD)."""
  for path in files:
    with open(path, "rb") as f:
      for raw in f:
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError:
          invalid[path] = invalid.get(path, 0) + 1
          line = raw.decode("utf-8", errors="replace")
        line = normalize(line)
        if line:
          yield line


def expand_globs(patterns: str | Sequence[str], flag: str = "--input") -> list[str]:
  """Sorted files matching comma-separated glob patterns; an error names `flag` if none match."""
  if isinstance(patterns, str):
    patterns = [p for p in patterns.split(",") if p]
  files: list[str] = []
  for pattern in patterns:
    matched = sorted(glob.glob(os.path.expanduser(pattern)))
    if not matched:
      raise FileNotFoundError(f"{flag}: no file matches {pattern!r}.")
    files.extend(f for f in matched if f not in files)
  return files


def train_model(input_files: Sequence[str], output_prefix: str, *, vocab_size: int = 30000,
                do_lower_case: bool = True, keep_accents: bool = False,
                preprocessing: str = "official", seed: int = 12345, **overrides) -> str:
  """Trains a SentencePiece model with the official ALBERT flags; returns the .model path.

  Input lines get the same preprocessing as at tokenization time, so the vocabulary matches what the
  tokenizer will see (lower-cased, accents stripped, with `preprocessing`). `overrides` replace entries of
  OFFICIAL_TRAINER_FLAGS (e.g. input_sentence_size, character_coverage).
  """
  unknown = set(overrides) - set(OFFICIAL_TRAINER_FLAGS)
  if unknown:
    raise ValueError(f"unknown trainer flag(s) {sorted(unknown)}; allowed: {sorted(OFFICIAL_TRAINER_FLAGS)}")
  flags = {**OFFICIAL_TRAINER_FLAGS, **overrides}
  normalize = functools.partial(preprocess_text, lower=do_lower_case, keep_accents=keep_accents,
                                preprocessing=check_preprocessing(preprocessing))
  out_dir = os.path.dirname(output_prefix)
  created = bool(out_dir) and not os.path.isdir(out_dir)
  if created:
    os.makedirs(out_dir)
  spm.set_random_generator_seed(seed)  # input sampling/shuffling: reproducible vocabularies
  invalid: dict[str, int] = {}
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_iter_training_sentences(input_files, normalize, invalid),
        model_prefix=output_prefix, vocab_size=vocab_size, minloglevel=2,
        num_threads=os.cpu_count(), **flags)
  except RuntimeError as e:  # e.g. "[!sentences_.empty()]": no usable sentence in the input
    if created and not os.listdir(out_dir):
      os.rmdir(out_dir)  # nothing half-written
    raise TokenizerError(f"SentencePiece could not train on {list(input_files)}: "
                         f"{str(e).splitlines()[0]} (no usable text? empty or blank files, or "
                         "lines longer than its max_sentence_length)") from None
  for path, count in invalid.items():
    logging.warning("%s: %d line(s) with invalid UTF-8 (bad bytes replaced by U+FFFD)", path,
                    count)
  return output_prefix + ".model"


def define_preprocessing_flag(flag_values: absl_flags.FlagValues) -> None:
  """--preprocessing, shared by the tools that tokenize text."""
  absl_flags.DEFINE_enum("preprocessing", "official", list(PREPROCESSING),
                         "official: google-research/albert's text normalization; huggingface: "
                         "also `` and '' -> \" (transformers' AlbertTokenizer)",
                         flag_values=flag_values)


PROG = "python -m albert_jax.data.tokenization"
COMMANDS = ("train",)


def define_flags(flag_values: absl_flags.FlagValues) -> None:
  """The flags of `train` (defined only when the command line is parsed: `command_line.parse`)."""
  absl_flags.DEFINE_string("input", None, "comma-separated globs of text files (required)",
                           flag_values=flag_values)
  absl_flags.DEFINE_string("output", None, "output prefix, writes PREFIX.model and "
                           "PREFIX.vocab (required)", flag_values=flag_values)
  absl_flags.DEFINE_integer("vocab_size", 30000, "pieces in the vocabulary",
                            flag_values=flag_values)
  absl_flags.DEFINE_integer("input_sentence_size", OFFICIAL_TRAINER_FLAGS["input_sentence_size"],
                            "sentences sampled for training", flag_values=flag_values)
  absl_flags.DEFINE_float("character_coverage", OFFICIAL_TRAINER_FLAGS["character_coverage"],
                          "share of characters the vocabulary covers", flag_values=flag_values)
  absl_flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe", "char", "word"],
                         "SentencePiece model type", flag_values=flag_values)
  absl_flags.DEFINE_bool("do_lower_case", True, "lower-case the text", flag_values=flag_values)
  absl_flags.DEFINE_bool("keep_accents", False, "keep combining marks", flag_values=flag_values)
  define_preprocessing_flag(flag_values)
  absl_flags.DEFINE_integer("seed", 12345, "SentencePiece's sampling seed",
                            flag_values=flag_values)


@command_line.boundary
def main(argv: Sequence[str] | None = None) -> int:
  """`PROG train --input=... --output=PREFIX`; `argv`: the arguments after the program name
  (None: this process's)."""
  args, commands = command_line.parse(define_flags, argv, prog=PROG,
                                      doc="ALBERT SentencePiece tools.\n\n    " + PROG
                                      + " train --input=GLOBS --output=PREFIX [--vocab_size=N]")
  if list(commands) != ["train"]:
    command_line.usage_error(f"give one command, one of {list(COMMANDS)} (got {list(commands)})")
  missing = [f"--{name}" for name in ("input", "output") if not args[name].value]
  if missing:
    command_line.usage_error(f"train needs {' and '.join(missing)}")
  try:
    files = expand_globs(args.input)
  except FileNotFoundError as e:
    command_line.usage_error(str(e))
  if args.vocab_size < 8:
    command_line.usage_error(f"--vocab_size={args.vocab_size}: must be at least 8 (5 special "
                             "pieces + text).")
  path = train_model(files, args.output, vocab_size=args.vocab_size, do_lower_case=args.do_lower_case,
                     keep_accents=args.keep_accents, preprocessing=args.preprocessing,
                     seed=args.seed,
                     input_sentence_size=args.input_sentence_size,
                     character_coverage=args.character_coverage, model_type=args.model_type)
  print(f"wrote {path} ({args.vocab_size} pieces) from {len(files)} file(s)")
  return 0


if __name__ == "__main__":
  command_line.run(main)
