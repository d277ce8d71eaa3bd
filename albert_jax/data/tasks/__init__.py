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
`eval_batches` covers every row once, padding the last batch with rows whose `row` is -1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import pickle
from typing import Any, Callable, Iterator, Optional

import numpy as np

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
  return importlib.import_module(f"albert_jax.data.tasks.{family}")


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


def cached_split(cache_dir: Optional[str], key: dict[str, Any],
                 build: Callable[[], Split]) -> Split:
  """`build()`, or its pickle under `cache_dir` when one was made with the same `key`.

  The key holds everything the features depend on (task settings, split, tokenizer file and
  its size/mtime), so a changed setting never reuses stale features.
  """
  if not cache_dir:
    return build()
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"{key.get('split', 'split')}-{digest}.pkl")
  if os.path.exists(path):
    with open(path, "rb") as f:
      logging.info("features from cache %s", path)
      return pickle.load(f)
  split = build()
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    pickle.dump(split, f, protocol=pickle.HIGHEST_PROTOCOL)
  os.replace(tmp, path)
  return split


def file_fingerprint(path: str) -> dict[str, Any]:
  st = os.stat(path)
  return {"path": os.path.abspath(path), "size": st.st_size, "mtime": st.st_mtime}


def load_split(task, tokenizer, split: str, is_training: bool, cache_dir: Optional[str]) -> Split:
  """The family's `load_split`, through the feature cache in `cache_dir` (None: no cache)."""
  key = {"task": task.to_dict(), "split": split, "is_training": is_training,
         "spm": file_fingerprint(task.spm_model)}
  module = family_module(task.family)
  return cached_split(cache_dir, key, lambda: module.load_split(task, tokenizer, split,
                                                                is_training))


def train_tokenizer(task, vocab_size: int, workdir: str) -> str:
  """A SentencePiece model trained on `task.spm_corpus` in `workdir` (runlocal); its path.

  Process 0 trains it (once: an existing one is reused); the others wait for it.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from albert_jax.data import tokenization  # pylint: disable=g-import-not-at-top
  if not task.get("spm_corpus"):
    raise ValueError("config field 'task.spm_model' is empty: give the SentencePiece model of "
                     "the checkpoint you fine-tune (e.g. 30k-clean.model)")
  prefix = os.path.join(os.path.abspath(workdir), "spm")
  if jax.process_index() == 0 and not os.path.exists(prefix + ".model"):
    tokenization.train_model(tokenization.expand_globs(task.spm_corpus, "task.spm_corpus"),
                             prefix, vocab_size=vocab_size, input_sentence_size=1_000_000)
  multihost_utils.sync_global_devices("fine-tuning tokenizer ready")
  return prefix + ".model"


# ----------------------------------------------------------------------------------------------
# Batches.
# ----------------------------------------------------------------------------------------------


def train_batch(arrays: dict[str, np.ndarray], step: int, global_batch: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
  """This host's rows of the global training batch of `step` (0-based)."""
  n = next(iter(arrays.values())).shape[0]
  per_epoch = n // global_batch
  if per_epoch == 0:
    raise ValueError(f"the training split has {n} rows, fewer than config field "
                     f"'training.global_batch_size'={global_batch}")
  epoch, index = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(n)
  rows = order[index * global_batch:(index + 1) * global_batch]
  per_host = global_batch // process_count
  rows = rows[process_index * per_host:(process_index + 1) * per_host]
  return {k: v[rows] for k, v in arrays.items()}


def eval_batches(arrays: dict[str, np.ndarray], global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This host's rows of every eval batch; the key `row` holds each row's index (-1 = padding)."""
  n = next(iter(arrays.values())).shape[0]
  per_host = global_batch // process_count
  for start in range(0, n, global_batch):
    rows = np.arange(start + process_index * per_host, start + (process_index + 1) * per_host)
    real = rows < n
    take = np.where(real, rows, 0)
    batch = {k: v[take] for k, v in arrays.items()}
    batch["row"] = np.where(real, rows, -1).astype(np.int32)
    yield batch
