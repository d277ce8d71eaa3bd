"""Fine-tuning tasks: readers (tfds or the official file formats), featurizers and batching.

Families and their modules:

    glue   cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli   (glue.py: GLUE TSVs or glue/<task>)
    squad  SQuAD v1.1 and v2.0                                   (squad.py: JSON or squad/v1.1|v2.0)
    race   RACE middle + high                                    (race.py: JSON lines or race/<level>)
    tagging  NER / POS: conll2003, UD, xtreme_pos               (tagging.py: CoNLL(-U) files or tfds)

Each family module has the same three functions, used by `albert_jax.finetune`:

    load_split(task, tokenizer, split, is_training) -> Split
    evaluate(task, split, outputs) -> (metrics, predictions)     outputs: model outputs per row
    write_outputs(task, split, predictions, out_dir) -> [paths]

`load_split` here adds a cache of featurized splits in front of the family's.

`task` is the `task` section of a fine-tuning config. A `Split` holds model inputs as NumPy arrays
with one row per model input (a GLUE example, a SQuAD window, a RACE question with its 4 choices)
and the family's metadata needed to turn model outputs back into answers.

Batching: `train_batch` draws the rows of any step from (seed, step) alone (a new permutation
every epoch, remainder dropped), so a resumed run sees exactly the batches it would have seen;
`eval_batches` covers every row once, padding the last batch with rows whose `row` is -1. On
several processes each one takes the positions of the global batch that its devices hold.

Files (inputs, the feature cache, outputs) go through `albert_jax.fileio`, so they may be in a
bucket (gs://...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import pickle
import tempfile
from typing import Any, Callable, Iterator, Optional

import numpy as np

from albert_jax import fileio

FAMILIES = ("glue", "squad", "race", "tagging")


@dataclasses.dataclass
class Split:
  """One featurized split of a task."""

  name: str
  arrays: dict[str, np.ndarray]   # model inputs and targets, one row per model input
  meta: Any                       # what the family needs to score / write predictions
  has_labels: bool                # False for unlabeled test sets (GLUE test, submissions only)
  stats: dict[str, Any]           # counts for the metrics JSON (examples, rows, truncation, ...)

  @property
  def num_rows(self) -> int:
    return int(next(iter(self.arrays.values())).shape[0])


def family_module(family: str):
  """The module of a task family ("glue", "squad", "race" or "tagging")."""
  if family not in FAMILIES:
    raise ValueError(f"config field 'task.family'={family!r}: unknown task family; allowed: "
                     f"{FAMILIES}")
  return importlib.import_module(f"albert_jax.tasks.{family}")


def split_list(value: str) -> list[str]:
  """Comma-separated config strings ("validation_matched,validation_mismatched") -> list."""
  return [s.strip() for s in (value or "").split(",") if s.strip()]


def pad_ids(ids: list[int], length: int) -> tuple[list[int], list[int]]:
  """(ids zero-padded to `length`, input mask) — pad id 0 as in the official code."""
  return ids + [0] * (length - len(ids)), [1] * len(ids) + [0] * (length - len(ids))


def limit(examples: list, max_examples: int) -> list:
  """The first `max_examples` examples (0 keeps all): for quick runs on big tasks."""
  return examples[:max_examples] if max_examples else examples


# ----------------------------------------------------------------------------------------------
# tfds.
# ----------------------------------------------------------------------------------------------


def tfds_examples(name: str, split: str, data_dir: str = "") -> Iterator[dict[str, Any]]:
  """Examples of a tfds dataset as Python values (bytes decoded to str, arrays to lists)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = tfds.load(name, split=split, data_dir=data_dir or None, shuffle_files=False)
  for example in tfds.as_numpy(ds):
    yield _to_python(example)


def _to_python(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _to_python(v) for k, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return _to_python(value.tolist())
  if isinstance(value, (list, tuple)):
    return [_to_python(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


# ----------------------------------------------------------------------------------------------
# Feature cache: featurizing SQuAD or MNLI takes minutes, resuming should not redo it.
# ----------------------------------------------------------------------------------------------


def cached_split(cache_dir: Optional[str], key: dict[str, Any], build: Callable[[], Split],
                 write: bool = True) -> Split:
  """`build()`, or its pickle under `cache_dir` when one was made with the same `key`.

  The key holds everything the features depend on (task settings, split, tokenizer file and
  its size/mtime), so a changed setting never reuses stale features. `cache_dir` may be a bucket.
  `write`: store a split it had to build (False on all processes but one: featurization is
  deterministic, so the others build the same split and need not write it concurrently).
  """
  if not cache_dir:
    return build()
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"{key.get('split', 'split')}-{digest}.pkl")
  if fileio.exists(path):
    logging.info("features from cache %s", path)
    return pickle.loads(fileio.read_bytes(path))
  split = build()
  if write:
    fileio.write_bytes(path, pickle.dumps(split, protocol=pickle.HIGHEST_PROTOCOL))
  return split


def load_split(task, tokenizer, split: str, is_training: bool, cache_dir: Optional[str],
               write_cache: bool = True) -> Split:
  """The family's `load_split`, through the feature cache in `cache_dir` (None: no cache;
  `write_cache` False: read it but never write it)."""
  key = {"task": task.to_dict(), "split": split, "is_training": is_training,
         "spm": fileio.fingerprint(task.spm_model)}
  module = family_module(task.family)
  return cached_split(cache_dir, key, lambda: module.load_split(task, tokenizer, split,
                                                                is_training), write_cache)


def train_tokenizer(task, vocab_size: int, workdir: str) -> str:
  """A SentencePiece model trained on `task.spm_corpus`, stored in `workdir` (runlocal); its path.

  Process 0 trains it once (an existing one is reused) in a local temporary directory, since the
  trainer writes local files only, and copies it into the workdir (which may be a bucket); the
  other processes wait for it and read it from there.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from albert_jax.data import tokenization  # pylint: disable=g-import-not-at-top
  if not task.get("spm_corpus"):
    raise ValueError("config field 'task.spm_model' is empty: give the SentencePiece model of "
                     "the checkpoint you fine-tune (e.g. 30k-clean.model)")
  prefix = os.path.join(fileio.absolute(workdir), "spm")
  if jax.process_index() == 0 and not fileio.exists(prefix + ".model"):
    with tempfile.TemporaryDirectory() as local:
      trained = tokenization.train_model(
          tokenization.expand_globs(task.spm_corpus, "task.spm_corpus"),
          os.path.join(local, "spm"), vocab_size=vocab_size, input_sentence_size=1_000_000)
      fileio.copy(trained[:-len(".model")] + ".vocab", prefix + ".vocab")
      fileio.copy(trained, prefix + ".model")  # last: its presence means the pair is complete
  multihost_utils.sync_global_devices("fine-tuning tokenizer ready")
  return prefix + ".model"


# ----------------------------------------------------------------------------------------------
# Batches.
# ----------------------------------------------------------------------------------------------


def train_batch(arrays: dict[str, np.ndarray], step: int, global_batch: int, seed: int,
                host_rows: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
  """The global training batch of `step` (0-based), or the positions `host_rows` of it that this
  process feeds (`partitioning.host_rows`)."""
  n = next(iter(arrays.values())).shape[0]
  per_epoch = n // global_batch
  if per_epoch == 0:
    raise ValueError(f"the training split has {n} rows, fewer than config field "
                     f"'training.global_batch_size'={global_batch}")
  epoch, index = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(n)
  rows = order[index * global_batch:(index + 1) * global_batch]
  if host_rows is not None:
    rows = rows[host_rows]
  return {k: v[rows] for k, v in arrays.items()}


def eval_batches(arrays: dict[str, np.ndarray], global_batch: int,
                 host_rows: Optional[np.ndarray] = None) -> Iterator[dict[str, np.ndarray]]:
  """Every eval batch (or its positions `host_rows`, as in `train_batch`); the key `row` holds
  each row's index (-1 = padding)."""
  n = next(iter(arrays.values())).shape[0]
  positions = np.arange(global_batch) if host_rows is None else np.asarray(host_rows)
  for start in range(0, n, global_batch):
    rows = start + positions
    real = rows < n
    take = np.where(real, rows, 0)
    batch = {k: v[take] for k, v in arrays.items()}
    batch["row"] = np.where(real, rows, -1).astype(np.int32)
    yield batch
