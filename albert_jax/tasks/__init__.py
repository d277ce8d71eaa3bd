"""Fine-tuning tasks: the task-family protocol, tfds reading, the feature cache, batching.

A task family is ONE module `albert_jax/tasks/<family>.py` whose `FAMILY` object implements
`TaskFamily` (below), found by the config field `task.family`:

    glue     cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli (glue.py: GLUE TSVs or glue/<task>)
    squad    SQuAD v1.1 and v2.0                                (squad.py: JSON or squad/v1.1|v2.0)
    race     RACE middle + high                              (race.py: JSON lines or race/<level>)
    tagging  NER / POS: conll2003, UD, xtreme_pos              (tagging.py: CoNLL(-U) files or tfds)

The family supplies everything that differs between tasks: reading and featurizing splits, the
model class and the name of its head's parameter tree, the batch layout, the per-example loss,
evaluation (its metric code beside it: glue_metrics.py, squad_metrics.py, seqeval.py), the output
files, what `python -m albert_jax.predict MODE` does with raw examples, and the Hugging Face class
its checkpoints export as. `albert_jax.finetune`, `albert_jax.predict` and `albert_jax.convert`
dispatch through it and never name a family; adding a family is one module and one config.

`task` below is the `task` section of a fine-tuning config (a plain dict where noted), and
`max_seq_length` its `data.max_seq_length` (the pretraining name of the same knob). A `Split` holds
model inputs as NumPy arrays with one row per model input (a GLUE example, a SQuAD window, a RACE
question with its 4 choices) and the family's metadata needed to turn model outputs back into
answers. `load_split` here adds a cache of featurized splits in front of the family's.

Batching: `train_batch` draws the rows of any step from (seed, step) alone (a new permutation
every epoch, remainder dropped), so a resumed run sees exactly the batches it would have seen;
`eval_batches` covers every row once, padding the last batch with rows whose `row` is -1. On
several processes each one takes the positions of the global batch that its devices hold.

Files (inputs, the feature cache, outputs) go through `albert_jax.fileio`, so they may be in a
bucket (gs://...).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import os
import pickle
import pkgutil
import tempfile
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from albert_jax import command_line
from albert_jax import fileio

# The encoder inputs of every task model, in the order of its positional arguments.
INPUTS = ("input_ids", "input_mask", "segment_ids")


# A bad example or checkpoint: the command lines report it as one line (command_line.boundary).
InputError = command_line.InputError


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


@dataclasses.dataclass(frozen=True)
class PredictOptions:
  """The settings of `python -m albert_jax.predict` that a family's `predict` may use."""

  truncate: bool = False                   # cut long inputs as training does instead of failing
  null_threshold: Optional[float] = None   # SQuAD v2: override the dev-tuned no-answer threshold
  best_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)  # best_step.json


class TaskFamily(abc.ABC):
  """The protocol of a task family, with the defaults of a one-sequence classifier.

  A family module defines a subclass and an instance of it, `FAMILY`. Arrays in the model methods
  are jax arrays (traced), elsewhere NumPy.
  """

  heads: tuple[str, ...] = ("classifier",)  # top-level parameter trees of its task heads
  predict_mode: str = ""                    # `python -m albert_jax.predict <mode>`
  predict_fields: tuple[str, ...] = ()      # required fields of a predict input
  plain_text_field: Optional[str] = "text"  # a plain-text predict line fills it (None: JSON only)

  # -- identity and model ------------------------------------------------------------------

  def label(self, task) -> str:
    """The task's name in tables and metrics files ("mnli", "squad_v2.0")."""
    return task.get("name") or task.family

  @abc.abstractmethod
  def build_model(self, model_config, task) -> tuple[Any, str]:
    """(the flax task model, the name of its head's parameter tree)."""

  def input_shape(self, task, max_seq_length: int) -> tuple[int, ...]:
    """The shape of one example's `input_ids` (without the batch axis)."""
    del task
    return (max_seq_length,)

  def batch_spec(self, task, max_seq_length: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Shapes (without the batch axis) and dtypes of a training batch."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    seq = self.input_shape(task, max_seq_length)
    return dict({k: (seq, jnp.int32) for k in INPUTS}, label=((), jnp.int32))

  def input_keys(self, task) -> tuple[str, ...]:
    """The batch keys the model reads when predicting."""
    del task
    return INPUTS

  def output_keys(self, task) -> tuple[str, ...]:
    """The model outputs that `evaluate` and `predict` decode."""
    del task
    return ("logits",)

  def model_kwargs(self, task, batch, labelled: bool) -> dict[str, Any]:
    """Keyword inputs of the model besides INPUTS (`labelled`: the batch has targets)."""
    del task, batch, labelled
    return {}

  def loss_weights(self, task, batch):
    """The weight of every term of `per_example_loss` (the loss is their weighted mean)."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    del task
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)

  def per_example_loss(self, task, outputs, batch):
    """(loss per term, 1.0 where the prediction is right or None): softmax CE by default."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    del task
    logits = outputs["logits"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return softmax_nll(logits, batch["label"]), correct

  # -- data, evaluation, outputs -----------------------------------------------------------

  @abc.abstractmethod
  def load_split(self, task, tokenizer, split: str, is_training: bool,
                 max_seq_length: int) -> Split:
    """The featurized `split` (`is_training`: the training split, with targets)."""

  @abc.abstractmethod
  def metric_names(self, task, split: Split) -> set[str]:
    """The metrics `evaluate` reports for `split` (none for an unlabelled split)."""

  @abc.abstractmethod
  def evaluate(self, task, split: Split, outputs: dict[str, np.ndarray]
               ) -> tuple[dict[str, float], Any]:
    """(metrics, predictions) from the model outputs of every row of `split`, in row order."""

  @abc.abstractmethod
  def write_outputs(self, task, split: Split, predictions: Any, out_dir: str) -> list[str]:
    """The prediction files of `split` in `out_dir`; their paths."""

  # -- inference (albert_jax.predict) ------------------------------------------------------

  def parse_predict_input(self, example: dict[str, Any], where: str) -> dict[str, Any]:
    """A predict input (a JSON object, or {plain_text_field: line}) completed and validated."""
    for field in self.predict_fields:
      value = example.get(field)
      if not value or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{where}: empty or missing {field!r}")
    return example

  @abc.abstractmethod
  def predict(self, task, max_seq_length: int, tokenizer, examples: list[dict],
              run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
              options: PredictOptions) -> list[dict[str, Any]]:
    """One result per example: featurize as in training, `run` the model, decode."""

  @abc.abstractmethod
  def format_prediction(self, example: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The plain-text lines of one `predict` result."""

  # -- export (albert_jax.convert) ---------------------------------------------------------

  @abc.abstractmethod
  def hf_architecture(self, task: Mapping[str, Any], head: str, outputs: Optional[int],
                      has_pooler: bool):
    """The `interop.hf_classes.HfArchitecture` of a checkpoint with this family's `head`
    (`outputs`: the head kernel's output size; `task` a dict, possibly without its name)."""


def softmax_nll(logits, labels):
  """-log softmax(logits)[label] along the last axis, in float32 (jax arrays)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def softmax(x: np.ndarray) -> np.ndarray:
  """Softmax along the last axis (NumPy)."""
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def too_long(where: str, length: int, limit: int, field: str, truncatable: bool = True
             ) -> InputError:
  """The error for a predict input longer than the model takes."""
  return InputError(f"{where}: {length} pieces with [CLS]/[SEP] exceed the model's maximum "
                    f"length {limit} ({field}); shorten the text" +
                    (" or pass --truncate to cut it as training does" if truncatable else ""))


@functools.lru_cache(maxsize=None)
def families() -> dict[str, TaskFamily]:
  """Every task family: the modules of this package that define `FAMILY`."""
  out = {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    if isinstance(getattr(module, "FAMILY", None), TaskFamily):
      out[info.name] = module.FAMILY
  return out


def family(name: str) -> TaskFamily:
  """The task family `name` (config field `task.family`)."""
  if isinstance(name, str) and name.isidentifier() and not name.startswith("_"):
    try:
      module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"{__name__}.{name}":
        raise
    else:
      if isinstance(getattr(module, "FAMILY", None), TaskFamily):
        return module.FAMILY
  raise ValueError(f"config field 'task.family'={name!r}: unknown task family; allowed: "
                   f"{sorted(families())}")


def task_label(task) -> str:
  """"mnli", "squad_v2.0", "race": the task's name in tables and metrics files."""
  return family(task.family).label(task)


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


def load_split(task, data, tokenizer, split: str, is_training: bool, cache_dir: Optional[str],
               write_cache: bool = True) -> Split:
  """The family's `load_split`, through the feature cache in `cache_dir` (None: no cache;
  `write_cache` False: read it but never write it). `data`: the config's `data` section."""
  key = {"task": task.to_dict(), "data": data.to_dict(), "split": split,
         "is_training": is_training, "spm": fileio.fingerprint(data.spm_model)}
  fam = family(task.family)
  return cached_split(cache_dir, key, lambda: fam.load_split(
      task, tokenizer, split, is_training, data.max_seq_length), write_cache)


def train_tokenizer(data, vocab_size: int, workdir: str) -> str:
  """A SentencePiece model trained on `data.spm_corpus`, stored in `workdir` (runlocal); its path.

  Process 0 trains it once (an existing one is reused) in a local temporary directory, since the
  trainer writes local files only, and copies it into the workdir (which may be a bucket); the
  other processes wait for it and read it from there.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from albert_jax.data import tokenization  # pylint: disable=g-import-not-at-top
  if not data.get("spm_corpus"):
    raise ValueError("config field 'data.spm_model' is empty: give the SentencePiece model of "
                     "the checkpoint you fine-tune (e.g. 30k-clean.model)")
  prefix = os.path.join(fileio.absolute(workdir), "spm")
  if jax.process_index() == 0 and not fileio.exists(prefix + ".model"):
    with tempfile.TemporaryDirectory() as local:
      trained = tokenization.train_model(
          tokenization.expand_globs(data.spm_corpus, "data.spm_corpus"),
          os.path.join(local, "spm"), vocab_size=vocab_size, input_sentence_size=1_000_000,
          **tokenization.text_options(data))
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
