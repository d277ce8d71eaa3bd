"""Creates pretraining data inside the workdir from a text corpus (the demo and `runlocal`).

With `data.corpus` set and `data.train_files` empty, the run first trains a SentencePiece model on
the corpus (unless `data.spm_model` is given) and writes train and eval TFRecords with
`create_pretraining_data`, exactly as a user would from the command line. Process 0 does the work;
the others wait.

Each output keeps a record of what it was made from (SETTINGS_FILE in the records' directory,
SPM_SETTINGS_FILE beside the SentencePiece model): the config fields passed on, the input files'
fingerprints (path, size, modification time) and the SentencePiece model's. An output whose
record matches the current config is reused, so a resumed run does not redo it; one made with other
settings (say by an earlier run with another `data.max_seq_length` in the same workdir) is made
again, with a line naming the fields that changed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import ml_collections
from jax.experimental import multihost_utils

from albert_jax import fileio
from albert_jax.data import create_pretraining_data
from albert_jax.data import pretraining_data
from albert_jax.data import tokenization

SETTINGS_FILE = "prepare_settings.json"
SPM_SETTINGS_FILE = "spm_settings.json"


def _bool_flag(value: Any) -> str:
  return str(bool(value)).lower()


# Config field -> create_pretraining_data flag and how the value is written there. The same table
# builds the command line and the record of the settings, so a field passed on to the generator
# cannot be left out of the check. --num_workers is not in it: the output is byte-identical for any
# number of workers.
_FLAGS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("max_seq_length", "max_seq_length", str),
    ("max_predictions_per_seq", "max_predictions_per_seq", str),
    ("dupe_factor", "dupe_factor", str),
    ("dynamic_masking", "masking", lambda v: "none" if v else "static"),
    ("random_next_sentence", "random_next_sentence", _bool_flag),
    ("do_lower_case", "do_lower_case", _bool_flag),
    ("keep_accents", "keep_accents", _bool_flag),
    ("preprocessing", "preprocessing", str),
    ("single_segment_negatives", "single_segment_negatives", str),
)


def _fingerprints(files: list[str]) -> list[dict[str, Any]]:
  # Path, size and modification time, not a digest: a user corpus may be many gigabytes, and
  # every start (resumed runs included) checks it.
  return [fileio.fingerprint(f) for f in files]


def _describe(field: str, old: Any, new: Any) -> str:
  if isinstance(old, (list, dict)) or isinstance(new, (list, dict)):
    return f"{field} (other files, or files rewritten since)"
  return f"{field} {old!r} -> {new!r}"


def _reusable(what: str, settings_path: str, settings: dict[str, Any], output: str) -> bool:
  """Whether `output` exists and was made with `settings`; prints why it is remade otherwise."""
  if not fileio.exists(output):
    return False
  recorded = None  # no record: made before records were kept, or stopped before writing it
  if fileio.exists(settings_path):
    try:
      recorded = fileio.read_json(settings_path)
    except ValueError:  # not JSON: treated as no record, so the output is made again
      pass
  if recorded == settings:
    return True
  if not isinstance(recorded, dict):
    reason = f"no record of the settings it was made with ({settings_path})"
  else:
    changed = [k for k in sorted(set(recorded) | set(settings))
               if recorded.get(k) != settings.get(k)]
    reason = "made with other settings: " + ", ".join(
        _describe(k, recorded.get(k), settings.get(k)) for k in changed)
  print(f"recreating {what}: {reason}", flush=True)
  return False


def _normalized(settings: dict[str, Any]) -> dict[str, Any]:
  # What reading the record back gives (tuples become lists, ...), so that equal settings compare
  # equal to their record.
  return json.loads(json.dumps(settings))


def _prepare_spm(corpus_files: list[str], spm_model: str,
                 config: ml_collections.ConfigDict) -> None:
  """Trains the workdir's SentencePiece model unless the existing one was trained the same way."""
  options = tokenization.text_options(config.data)
  settings = _normalized({"data.corpus": _fingerprints(corpus_files),
                          "data.spm_vocab_size": config.data.spm_vocab_size,
                          **{f"data.{k}": v for k, v in options.items()}})
  settings_path = os.path.join(os.path.dirname(spm_model), SPM_SETTINGS_FILE)
  if _reusable(f"the SentencePiece model {spm_model}", settings_path, settings, spm_model):
    return
  # The old record goes first: a training that fails half-way must not leave it beside a new model.
  if fileio.exists(settings_path):
    os.remove(settings_path)
  tokenization.train_model(corpus_files, spm_model[:-len(".model")],
                           vocab_size=config.data.spm_vocab_size, input_sentence_size=1_000_000,
                           **options)
  fileio.write_json(settings_path, settings)


def _create(corpus_field: str, spm_model: str, output: str, config: ml_collections.ConfigDict,
            seed_offset: int) -> None:
  """Writes records of the corpus in config field `corpus_field` to `output` (generator seed
  `config.seed + seed_offset`), unless the records there were made with the same settings."""
  d = config.data
  seed = config.seed + seed_offset
  corpus = d[corpus_field.split(".", 1)[1]]
  settings = _normalized({
      corpus_field: _fingerprints(tokenization.expand_globs(corpus, corpus_field)),
      # The model's fingerprint: records made with an earlier model have other token ids.
      "data.spm_model": fileio.fingerprint(spm_model),
      **{f"data.{field}": d[field] for field, _, _ in _FLAGS},
      "seed": config.seed,  # the config field, so that a changed seed is reported as it was set
  })
  settings_path = os.path.join(output, SETTINGS_FILE)
  summary = os.path.join(output, create_pretraining_data.SUMMARY_FILE)
  if _reusable(f"the records in {output}", settings_path, settings, summary):
    return
  argv = [f"--input={corpus}", f"--spm_model={spm_model}", f"--output={output}",
          f"--random_seed={seed}", "--overwrite", f"--num_workers={d.num_workers}",
          "--progress=false"]
  argv += [f"--{flag}={to_flag(d[field])}" for field, flag, to_flag in _FLAGS]
  if create_pretraining_data.main(argv) != 0:
    raise RuntimeError(f"creating pretraining data from {corpus_field}={corpus!r} into {output} "
                       "failed")
  # Written once the records are complete (the generator renames its output into place at the
  # end): a run stopped before this point finds no record and makes them again.
  fileio.write_json(settings_path, settings)


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Fails, naming the field and what is allowed, on a data-creation field the generator would
  reject (before any work, and on every process)."""
  tokenization.text_options(config.data)
  value = config.data.single_segment_negatives
  if value not in pretraining_data.SINGLE_SEGMENT_NEGATIVES:
    raise ValueError(f"config field 'data.single_segment_negatives'={value!r}; allowed: "
                     f"{'|'.join(pretraining_data.SINGLE_SEGMENT_NEGATIVES)}")


def prepare(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Returns a copy of `config` whose data fields point at data created in `workdir/data`."""
  config = ml_collections.ConfigDict(config.to_dict())
  check_fields(config)
  d = config.data
  out = os.path.join(os.path.abspath(workdir), "data")
  spm_model = d.spm_model or os.path.join(out, "spm.model")
  # Checked on every process: the others would otherwise wait for process 0 at the barrier.
  if d.spm_model and not fileio.exists(d.spm_model):
    raise FileNotFoundError(f"config field 'data.spm_model': {d.spm_model!r} does not exist "
                            "(leave it empty to train a model on data.corpus).")
  if jax.process_index() == 0:
    if not d.spm_model:
      _prepare_spm(tokenization.expand_globs(d.corpus, "data.corpus"), spm_model, config)
    _create("data.corpus", spm_model, os.path.join(out, "train"), config, 0)
    if d.eval_corpus:
      _create("data.eval_corpus", spm_model, os.path.join(out, "eval"), config, 1)
  multihost_utils.sync_global_devices("pretraining data ready")
  d.spm_model = spm_model
  d.train_files = os.path.join(out, "train", "*.tfrecord")
  if d.eval_corpus:
    d.eval_files = os.path.join(out, "eval", "*.tfrecord")
  return config
