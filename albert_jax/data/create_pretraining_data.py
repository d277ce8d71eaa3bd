"""Creates ALBERT pretraining TFRecords from text files or a tfds dataset (the official algorithm, streamed).

    python -m albert_jax.data.create_pretraining_data --input='corpus/*.txt' --spm_model=M \\
        --output=DIR [--max_seq_length=512 --dupe_factor=40 --num_workers=8 ...]

What it adds to the official `create_pretraining_data.py` (same algorithm, see pretraining_data.py
and masking.py for the intended deviations):
  * reproducible: every draw comes from a generator seeded by (seed, unit, pass, document); the
    input is cut into work units independently of the number of workers and each unit writes its
    own file, so the output is byte-identical for any `--num_workers`;
  * bounded memory: a worker holds one unit (a `--block_size_mb` block of a file, or a tfds shard)
    and the records of one pass at a time, so memory stays flat as the corpus grows;
  * parallel: `--num_workers` processes (this one included) claim units, largest first;
  * fast: per instance, only a tight loop over index ranges and the random draws runs in Python;
    token arrays and records are built for a batch of instances at a time with NumPy
    (`PassBuilder` in pretraining_data.py, `PretrainingRecordEncoder` in records.py), and with
    text input no process imports TensorFlow;
  * atomic: everything is written to DIR.tmp-PID and renamed to DIR at the end; a failure removes it;
  * a JSON summary (summary.json) beside the records: counts, masked fraction, label balance,
    settings and input files.

Output: DIR/part-UUUUU-of-NNNNN.tfrecord with the official feature names and dtypes (records.py).
Within a unit, each of the `dupe_factor` passes is shuffled and written in turn; the official
script instead shuffles all instances of the whole corpus, which needs it all in memory. The input
pipeline's file interleave and shuffle buffer do the mixing across units.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import multiprocessing
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Sequence

from absl import flags

from albert_jax import command_line
from albert_jax.data import masking, pretraining_data, records, sources, tokenization

SUMMARY_FILE = "summary.json"
MASKING_MODES = ("static", "none")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a worker needs; also recorded in the summary."""

  spm_model: str
  do_lower_case: bool
  keep_accents: bool
  preprocessing: str
  instance: pretraining_data.InstanceConfig
  masking: str  # "static": masks in the records; "none": token-only records (dynamic masking)
  masked_lm_prob: float
  max_predictions_per_seq: int
  ngram: int
  favor_shorter_ngram: bool
  do_whole_word_mask: bool
  dupe_factor: int
  random_seed: int


@dataclasses.dataclass
class UnitStats:
  """Counts from one work unit; summed over units (in unit order) into the summary."""

  unit: int
  documents: int = 0
  sentences: int = 0
  one_sentence_documents: int = 0
  sentences_longer_than_max: int = 0
  invalid_utf8_lines: int = 0
  input_bytes: int = 0
  instances: int = 0
  tokens: int = 0
  masked_tokens: int = 0
  short_target_instances: int = 0
  output_file: str | None = None
  output_bytes: int = 0
  kinds: dict = dataclasses.field(default_factory=dict)


def output_name(unit: int, num_units: int) -> str:
  return f"part-{unit:05d}-of-{num_units:05d}.tfrecord"


# ----------------------------------------------------------------------------------------------------
# Work done per unit (in a worker process, or in-process when --num_workers=1).

_WORKER: dict = {}


def _init_worker(settings: Settings, out_dir: str, units: list[sources.WorkUnit],
                 next_unit=None) -> None:
  """Prepares this process to run `process_unit`; `next_unit` is the shared counter that
  `_process_next_unit` claims units from."""
  tokenizer = tokenization.SentencePieceTokenizer(
      settings.spm_model, do_lower_case=settings.do_lower_case, keep_accents=settings.keep_accents,
      preprocessing=settings.preprocessing)
  mask_config = None
  if settings.masking == "static":
    mask_config = masking.MaskingConfig(
        vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
        masked_lm_prob=settings.masked_lm_prob,
        max_predictions_per_seq=settings.max_predictions_per_seq, ngram=settings.ngram,
        favor_shorter_ngram=settings.favor_shorter_ngram,
        do_whole_word_mask=settings.do_whole_word_mask)
  encoder = records.PretrainingRecordEncoder(settings.instance.max_seq_length,
                                             settings.max_predictions_per_seq,
                                             masked=mask_config is not None)
  # Largest units first (text blocks; tfds shards keep their order), so that the last ones to
  # finish are small: with a few units per worker that decides how well the work balances.
  schedule = sorted(units, key=lambda u: u.start - u.end)
  _WORKER.update(settings=settings, tokenizer=tokenizer, mask_config=mask_config, out_dir=out_dir,
                 schedule=schedule, num_units=len(units), next_unit=next_unit, encoder=encoder,
                 specials=pretraining_data.SpecialIds(tokenizer.cls_id, tokenizer.sep_id,
                                                      tokenizer.start_piece_table()))


def _process_next_unit() -> UnitStats | None:
  """Claims the next unprocessed unit (shared counter) and processes it; None when none is left."""
  counter = _WORKER["next_unit"]
  with counter.get_lock():
    index = counter.value
    counter.value = index + 1
  return process_unit(_WORKER["schedule"][index]) if index < _WORKER["num_units"] else None


def _read_block(unit: sources.WorkUnit, tokenizer: tokenization.SentencePieceTokenizer,
                max_num_tokens: int, stats: UnitStats) -> pretraining_data.DocumentBlock:
  """Reads and tokenizes a unit's documents, a few thousand lines per SentencePiece call."""
  counters = sources.ReadCounters()

  def tokenized_documents():
    batch: list[list[str]] = []
    for document in itertools.chain(sources.iter_documents(unit, counters), [None]):
      if document is not None:
        batch.append(document)
      if batch and (document is None or sum(map(len, batch)) >= 4096):
        ids = iter(tokenizer.encode_batch([line for lines in batch for line in lines]))
        yield from ([next(ids) for _ in lines] for lines in batch)
        batch = []

  block = pretraining_data.DocumentBlock.from_documents(tokenized_documents())
  sentences = [len(offsets) - 1 for offsets in block.offsets]
  stats.documents = len(sentences)
  stats.sentences = sum(sentences)
  stats.one_sentence_documents = sentences.count(1)
  stats.sentences_longer_than_max = int((block.sentence_lengths() > max_num_tokens).sum())
  stats.invalid_utf8_lines = counters.invalid_utf8_lines
  stats.input_bytes = counters.input_bytes
  return block


def process_unit(unit: sources.WorkUnit) -> UnitStats:
  """Reads, tokenizes and turns one unit into instances; writes its output file; returns counts."""
  settings: Settings = _WORKER["settings"]
  stats = UnitStats(unit=unit.index)
  block = _read_block(unit, _WORKER["tokenizer"], settings.instance.max_seq_length - 3, stats)
  if not block.offsets:
    return stats
  seed = settings.random_seed
  # The official script shuffles the document list once before the passes.
  pretraining_data.document_rng(seed, unit.index, "documents").shuffle(block.offsets)
  builder = pretraining_data.PassBuilder(block, settings.instance, _WORKER["specials"],
                                         _WORKER["mask_config"], _WORKER["encoder"])
  kinds: collections.Counter = collections.Counter()
  name = output_name(unit.index, _WORKER["num_units"])
  with open(os.path.join(_WORKER["out_dir"], name), "wb", buffering=1 << 20) as f:
    for dupe in range(settings.dupe_factor):
      builder.reset()  # drops the previous pass's records: one pass in memory at a time
      for d in range(len(block.offsets)):
        builder.add_document(d, pretraining_data.document_rng(seed, unit.index, dupe, d))
      stats.output_bytes += _write_shuffled(
          f, builder.finish(), pretraining_data.document_rng(seed, unit.index, dupe, "order"))
      stats.instances += len(builder)
      stats.tokens += builder.tokens
      stats.masked_tokens += builder.masked_tokens
      stats.short_target_instances += builder.short_target_instances
      kinds.update(builder.kind_counts())
  stats.kinds = dict(sorted(kinds.items()))
  if stats.instances:
    stats.output_file = name
  else:
    os.remove(os.path.join(_WORKER["out_dir"], name))
  return stats


def _write_shuffled(f, framed: list[bytes], rng: random.Random) -> int:
  """Writes a pass's records in the official shuffled order; returns the bytes written."""
  # Shuffling the indexes draws the same permutation as shuffling the instances themselves.
  order = list(range(len(framed)))
  rng.shuffle(order)
  f.writelines(framed[k] for k in order)
  return sum(map(len, framed))


# ----------------------------------------------------------------------------------------------------
# Driver.

def run(settings: Settings, units: list[sources.WorkUnit], output: str, *, num_workers: int = 1,
        overwrite: bool = False, inputs: Sequence[str] = (), empty_files: Sequence[str] = (),
        progress: bool = True) -> dict:
  """Processes all units into `output` atomically and returns the summary (also written to it)."""
  if os.path.exists(output) and not overwrite:
    raise FileExistsError(f"--output={output} already exists; pass --overwrite to replace it.")
  if not units:
    raise ValueError("no input: every --input file is empty." if empty_files else "no input units.")
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = f"{os.path.abspath(output).rstrip(os.sep)}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    all_stats = _process_all(settings, units, tmp, num_workers, progress)
    summary = _summarize(settings, all_stats, inputs, empty_files, len(units))
    if summary["documents"] == 0:
      raise ValueError(f"no documents found in the input ({', '.join(inputs) or 'tfds'}): every "
                       "line is empty after preprocessing.")
    with open(os.path.join(tmp, SUMMARY_FILE), "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
      f.write("\n")
    if os.path.exists(output):
      shutil.rmtree(output)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return summary


def _process_all(settings: Settings, units: list[sources.WorkUnit], out_dir: str,
                 num_workers: int, progress: bool) -> list[UnitStats]:
  from tqdm import tqdm
  total_bytes = sum(u.end - u.start for u in units) or None
  bar = tqdm(total=total_bytes if total_bytes else len(units), unit="B" if total_bytes else "unit",
             unit_scale=True, disable=not progress, desc="create_pretraining_data", file=sys.stderr)
  results: list[UnitStats] = []
  started = time.perf_counter()
  lock = threading.Lock()  # results come from this thread and from the pool's result thread

  def update(stats: UnitStats | None) -> None:
    if stats is None:
      return
    with lock:
      results.append(stats)
      bar.update(stats.input_bytes if total_bytes else 1)
      elapsed = max(time.perf_counter() - started, 1e-9)
      bar.set_postfix(instances=sum(r.instances for r in results),
                      inst_per_s=f"{sum(r.instances for r in results) / elapsed:.0f}")

  try:
    if num_workers <= 1:
      _init_worker(settings, out_dir, units)
      for unit in units:
        update(process_unit(unit))
    else:
      # This process is one of the workers: it processes units while the pool's processes start
      # (spawn re-imports everything in each, a noticeable part of a short run), all of them
      # claiming units from one shared counter. spawn, not fork: this process may hold TensorFlow
      # (tfds input), which is not fork-safe.
      ctx = multiprocessing.get_context("spawn")
      next_unit = ctx.Value("q", 0)
      _init_worker(settings, out_dir, units, next_unit)
      failed = threading.Event()
      with ctx.Pool(num_workers - 1, initializer=_init_worker,
                    initargs=(settings, out_dir, units, next_unit)) as pool:
        # One task per unit: each claims a unit, so the pool never runs out while some are left.
        tasks = [pool.apply_async(_process_next_unit, callback=update,
                                  error_callback=lambda _: failed.set()) for _ in units]
        while not failed.is_set() and (stats := _process_next_unit()) is not None:
          update(stats)
        for task in tasks:
          task.get()  # re-raises a worker's exception
  finally:
    bar.close()
  return sorted(results, key=lambda s: s.unit)


def _summarize(settings: Settings, all_stats: list[UnitStats], inputs: Sequence[str],
               empty_files: Sequence[str], num_units: int) -> dict:
  """Deterministic summary (no timings), so that it too is identical for any number of workers."""
  total = collections.Counter()
  kinds: collections.Counter = collections.Counter()
  for s in all_stats:
    for field in dataclasses.fields(UnitStats):
      value = getattr(s, field.name)
      if field.name not in ("unit", "output_file", "kinds"):
        total[field.name] += value
    kinds.update(s.kinds)
  instances = total["instances"]
  positives = kinds[pretraining_data.SWAPPED] + kinds[pretraining_data.RANDOM_DOCUMENT]
  warnings = []
  if empty_files:
    warnings.append(f"{len(empty_files)} empty input file(s) skipped: {list(empty_files)}")
  if total["invalid_utf8_lines"]:
    warnings.append(f"{total['invalid_utf8_lines']} line(s) with invalid UTF-8 "
                    "(bad bytes replaced by U+FFFD)")
  if total["sentences_longer_than_max"]:
    warnings.append(f"{total['sentences_longer_than_max']} sentence(s) longer than "
                    f"max_seq_length - 3 tokens (truncated inside instances)")
  if total["one_sentence_documents"]:
    warnings.append(f"{total['one_sentence_documents']} one-sentence document(s) (they only yield "
                    "random-document pairs, or nothing with --single_segment_negatives=skip)")
  settings_dict = dataclasses.asdict(settings)
  settings_dict["spm_model"] = os.path.abspath(settings.spm_model)
  return {
      "settings": settings_dict,
      "inputs": list(inputs),
      "num_units": num_units,
      "files": [s.output_file for s in all_stats if s.output_file],
      "documents": total["documents"],
      "sentences": total["sentences"],
      "input_bytes": total["input_bytes"],
      "instances": instances,
      "tokens": total["tokens"],
      "output_bytes": total["output_bytes"],
      "masked_tokens": total["masked_tokens"],
      "masked_fraction": total["masked_tokens"] / max(total["tokens"], 1),
      "label_1_fraction": positives / max(instances, 1),
      "instance_kinds": dict(sorted(kinds.items())),
      "short_target_fraction": total["short_target_instances"] / max(instances, 1),
      "mean_length": total["tokens"] / max(instances, 1),
      "one_sentence_documents": total["one_sentence_documents"],
      "sentences_longer_than_max": total["sentences_longer_than_max"],
      "invalid_utf8_lines": total["invalid_utf8_lines"],
      "empty_files": list(empty_files),
      "warnings": warnings,
  }


PROG = "python -m albert_jax.data.create_pretraining_data"


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (defined only when it is parsed: `command_line.parse`)."""
  fv = {"flag_values": flag_values}
  # Input: exactly one of --input and --tfds_name.
  flags.DEFINE_string("input", None, "comma-separated globs of text files: one sentence per "
                      "line, a blank line between documents", **fv)
  flags.DEFINE_string("tfds_name", None, "a tfds text dataset, e.g. wikipedia/20230601.en", **fv)
  flags.DEFINE_string("tfds_split", "train", "the tfds split", **fv)
  flags.DEFINE_string("tfds_text_field", "text", "feature holding the document text", **fv)
  flags.DEFINE_string("tfds_data_dir", None, "tfds data directory (default: tfds's)", **fv)
  flags.DEFINE_integer("tfds_num_shards", 256, "work units (= output files) the tfds split is "
                       "cut into", **fv)
  flags.DEFINE_float("block_size_mb", 16.0, "text files are cut into blocks of this size: one "
                     "work unit and one output file each; also the pool random-document segments "
                     "are drawn from", **fv)
  flags.DEFINE_string("spm_model", None, "SentencePiece .model file (required)", **fv)
  flags.DEFINE_string("output", None, "output directory, must not exist (required)", **fv)
  flags.DEFINE_bool("overwrite", False, "replace an existing --output", **fv)
  flags.DEFINE_bool("do_lower_case", True, "lower-case the text", **fv)
  flags.DEFINE_bool("keep_accents", False, "keep combining marks", **fv)
  tokenization.define_preprocessing_flag(flag_values)
  flags.DEFINE_integer("max_seq_length", 512, "tokens per instance", **fv)
  flags.DEFINE_integer("max_predictions_per_seq", 20, "masked positions per instance", **fv)
  flags.DEFINE_float("masked_lm_prob", 0.15, "share of tokens masked", **fv)
  flags.DEFINE_integer("dupe_factor", 40, "passes over the input, each masked anew", **fv)
  flags.DEFINE_float("short_seq_prob", 0.1, "share of instances with a shorter target length",
                     **fv)
  flags.DEFINE_integer("ngram", 3, "longest masked n-gram", **fv)
  flags.DEFINE_bool("favor_shorter_ngram", True, "n-gram lengths drawn with probability 1/n", **fv)
  flags.DEFINE_bool("do_whole_word_mask", True, "mask whole words", **fv)
  flags.DEFINE_bool("random_next_sentence", False, "NSP instead of SOP (the paper's ablation)",
                    **fv)
  flags.DEFINE_enum("single_segment_negatives", "random_document",
                    list(pretraining_data.SINGLE_SEGMENT_NEGATIVES), "one-sentence chunks: pair "
                    "with a random document's text, label 1 (official, default), or skip them "
                    "(pure SOP labels)", **fv)
  flags.DEFINE_enum("masking", "static", list(MASKING_MODES), "static: masks written to the "
                    "records (official); none: token-only records for the pipeline's dynamic "
                    "masking", **fv)
  flags.DEFINE_integer("random_seed", 12345, "seed of every draw", **fv)
  flags.DEFINE_integer("num_workers", 1, "processes (this one included)", **fv)
  flags.DEFINE_bool("progress", True, "print progress to stderr", **fv)


@command_line.boundary
def main(argv: Sequence[str] | None = None) -> int:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  command_line.no_positional(positional, PROG)
  missing = [f"--{name}" for name in ("spm_model", "output") if not args[name].value]
  if missing:
    command_line.usage_error(f"give {' and '.join(missing)}.")
  if bool(args.input) == bool(args.tfds_name):
    command_line.usage_error("give exactly one of --input and --tfds_name.")
  if args.dupe_factor < 1:
    command_line.usage_error(f"--dupe_factor={args.dupe_factor}: must be >= 1.")
  if args.num_workers < 1:
    command_line.usage_error(f"--num_workers={args.num_workers}: must be >= 1.")
  if os.path.exists(args.output) and not args.overwrite:
    command_line.usage_error(f"--output={args.output} already exists; pass --overwrite to "
                             "replace it.")
  try:
    tokenizer = tokenization.SentencePieceTokenizer(
        args.spm_model, do_lower_case=args.do_lower_case, keep_accents=args.keep_accents,
        preprocessing=args.preprocessing)
    instance = pretraining_data.InstanceConfig(
        max_seq_length=args.max_seq_length, short_seq_prob=args.short_seq_prob,
        random_next_sentence=args.random_next_sentence,
        single_segment_negatives=args.single_segment_negatives)
    masking.MaskingConfig(  # validated here so that errors name the flag before any work starts
        vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
        masked_lm_prob=args.masked_lm_prob, max_predictions_per_seq=args.max_predictions_per_seq,
        ngram=args.ngram)
  except (tokenization.TokenizerError, ValueError) as e:
    flag = "--spm_model" if isinstance(e, tokenization.TokenizerError) else "--" + str(e).split("=")[0]
    command_line.usage_error(f"{flag}: {e}")
  settings = Settings(
      spm_model=args.spm_model, do_lower_case=args.do_lower_case, keep_accents=args.keep_accents,
      preprocessing=args.preprocessing,
      instance=instance, masking=args.masking, masked_lm_prob=args.masked_lm_prob,
      max_predictions_per_seq=args.max_predictions_per_seq, ngram=args.ngram,
      favor_shorter_ngram=args.favor_shorter_ngram, do_whole_word_mask=args.do_whole_word_mask,
      dupe_factor=args.dupe_factor, random_seed=args.random_seed)
  try:
    if args.input:
      inputs = tokenization.expand_globs(args.input, "--input")
      units, empty = sources.plan_text_units(inputs, max(1, int(args.block_size_mb * 2**20)))
    else:
      inputs = [f"tfds:{args.tfds_name}/{args.tfds_split}"]
      units, empty = sources.plan_tfds_units(args.tfds_name, args.tfds_split, args.tfds_num_shards,
                                             args.tfds_text_field, args.tfds_data_dir), []
    for path in empty:
      print(f"warning: --input file {path} is empty; skipped.", file=sys.stderr)
    for path in filter(sources.looks_binary, inputs if args.input else []):
      print(f"warning: --input file {path} looks binary (NUL bytes or invalid UTF-8 near its "
            "start): its instances are likely garbage.", file=sys.stderr)
    summary = run(settings, units, args.output, num_workers=args.num_workers,
                  overwrite=args.overwrite, inputs=inputs, empty_files=empty,
                  progress=args.progress)
  except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for warning in summary["warnings"]:
    print(f"warning: {warning}", file=sys.stderr)
  print(f"wrote {summary['instances']} instances ({summary['tokens']} tokens) in "
        f"{len(summary['files'])} file(s) to {args.output}; summary in "
        f"{os.path.join(args.output, SUMMARY_FILE)}")
  return 0


if __name__ == "__main__":
  command_line.run(main)
