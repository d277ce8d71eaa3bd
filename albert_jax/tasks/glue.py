"""GLUE: readers for tfds `glue/<task>` and the official GLUE TSVs, the official featurization,
metrics and submission files.

Featurization (official `classifier_utils.convert_single_example`): `[CLS] a [SEP]` or
`[CLS] a [SEP] b [SEP]`, segment ids 0 then 1, zero padding; a pair longer than max_seq_length - 3
loses tokens from the end of the currently longer text, one at a time (`_truncate_seq_pair`); a
single text keeps its first max_seq_length - 2 pieces.

Labels are class indices in the tfds order (`LABELS`), so a model trained from TSVs and one trained
from tfds agree; TSV labels may be the class name or its index (as the tfds GLUE builder reads them).
Local files: `task.data_dir` is the task's GLUE folder (e.g. glue_data/MNLI) with train.tsv, dev.tsv
(MNLI: dev_matched.tsv, dev_mismatched.tsv) and test.tsv (MNLI: test_matched.tsv,
test_mismatched.tsv). Split names are the tfds ones: train, validation, test (MNLI:
validation_matched, validation_mismatched, test_matched, test_mismatched).

The GLUE diagnostic set (AX) is the split `ax` of an MNLI task: an MNLI model predicts it for the
leaderboard's AX.tsv. It comes from tfds `glue/ax` (split test) or, from files, `task.ax_file`
("" = the official download's `diagnostic/diagnostic.tsv` beside the MNLI folder; GLUE's AX.tsv
has the same columns: index, sentence1, sentence2). Files may be local or in a bucket (gs://).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
from typing import Any, Optional, Sequence

from absl import logging
import ml_collections
import numpy as np

from albert_jax import fileio
from albert_jax import tasks as tasks_lib
from albert_jax.tasks import glue_metrics


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """How one GLUE task is stored (tfds and GLUE TSVs), labelled, scored and submitted."""

  tfds_keys: tuple[str, ...]          # tfds text features: (a,) or (a, b)
  tsv_columns: tuple[str, ...]        # TSV header names of the same texts
  label_column: str                   # TSV header name of the label
  labels: Optional[tuple[str, ...]]   # class names in tfds order; None: regression (STS-B)
  index_column: str = "index"         # test TSV column with the id GLUE expects back
  submission: Any = None              # split -> submission file name
  text_labels: bool = False           # the submission wants class names, not indices
  skip_malformed: bool = False        # official QQP reader skips rows with a wrong field count


_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv",
                "validation_matched": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
# The diagnostic set: unlabelled MNLI pairs, predicted by an MNLI model (see the module docstring).
AX = "ax"
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence",), ("sentence",), "label", ("unacceptable", "acceptable"),
                     submission={"test": "CoLA.tsv"}),
    "sst2": GlueTask(("sentence",), ("sentence",), "label", ("negative", "positive"),
                     submission={"test": "SST-2.tsv"}),
    "mrpc": GlueTask(_PAIR, ("#1 String", "#2 String"), "Quality",
                     ("not_equivalent", "equivalent"), submission={"test": "MRPC.tsv"}),
    "qqp": GlueTask(("question1", "question2"), ("question1", "question2"), "is_duplicate",
                    ("not_duplicate", "duplicate"), index_column="id",
                    submission={"test": "QQP.tsv"}, skip_malformed=True),
    "stsb": GlueTask(_PAIR, _PAIR, "score", None, submission={"test": "STS-B.tsv"}),
    "mnli": GlueTask(("premise", "hypothesis"), _PAIR, "gold_label",
                     ("entailment", "neutral", "contradiction"), text_labels=True,
                     submission={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv",
                                 AX: "AX.tsv"}),
    "qnli": GlueTask(("question", "sentence"), ("question", "sentence"), "label",
                     ("entailment", "not_entailment"), text_labels=True,
                     submission={"test": "QNLI.tsv"}),
    "rte": GlueTask(_PAIR, _PAIR, "label", ("entailment", "not_entailment"), text_labels=True,
                    submission={"test": "RTE.tsv"}),
    "wnli": GlueTask(_PAIR, _PAIR, "label", ("not_entailment", "entailment"),
                     submission={"test": "WNLI.tsv"}),
}


@dataclasses.dataclass(frozen=True)
class Example:
  guid: str                  # the id written back in submissions (test index) or row number
  text_a: str
  text_b: Optional[str]
  label: Any                 # class index, float score (STS-B), or None when unlabeled


def get_task(name: str) -> GlueTask:
  if name not in TASKS:
    raise ValueError(f"config field 'task.name'={name!r}: unknown GLUE task; allowed: "
                     f"{sorted(TASKS)}")
  return TASKS[name]


def num_labels(name: str) -> int:
  """Outputs of the classifier: the class count, or 1 for regression (STS-B)."""
  labels = get_task(name).labels
  return 1 if labels is None else len(labels)


# ----------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------


def _parse_label(spec: GlueTask, value: str, where: str) -> Any:
  if spec.labels is None:
    try:
      return float(value)
    except ValueError:
      raise ValueError(f"{where}: label {value!r} is not a number") from None
  if value in spec.labels:
    return spec.labels.index(value)
  try:
    index = int(value)
  except ValueError:
    index = -1
  if not 0 <= index < len(spec.labels):
    raise ValueError(f"{where}: label {value!r} is not one of {list(spec.labels)} or their "
                     f"indices 0..{len(spec.labels) - 1}")
  return index


def read_tsv(name: str, path: str, field: str = "task.data_dir") -> list[Example]:
  """Examples of one official GLUE TSV (header-based; CoLA train/dev have no header), local or
  in a bucket; `field` is the config field that names the file (for the error)."""
  spec = get_task(name)
  if not fileio.isfile(path):
    raise FileNotFoundError(f"GLUE {name}: file {path} not found (config field {field!r})")
  csv.field_size_limit(sys.maxsize)
  # newline="": the csv module sees the file's own line ends, as with open(..., newline="").
  text = io.StringIO(fileio.read_text(path, "utf-8-sig"), newline="")
  rows = list(csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE))
  if not rows:
    raise ValueError(f"GLUE {name}: {path} is empty")
  headerless = name == "cola" and rows[0][0] != "index"
  examples = []
  if headerless:
    # CoLA train/dev: source, label, original mark, sentence.
    for n, row in enumerate(rows):
      where = f"{path}:{n + 1}"
      if len(row) != 4:
        raise ValueError(f"{where}: expected 4 tab-separated fields (source, label, mark, "
                         f"sentence), got {len(row)}")
      examples.append(Example(str(n), row[3], None, _parse_label(spec, row[1], where)))
    return examples
  header, body = rows[0], rows[1:]
  missing = [c for c in spec.tsv_columns if c not in header]
  if missing:
    raise ValueError(f"GLUE {name}: {path} has no column(s) {missing} in its header {header}")
  cols = [header.index(c) for c in spec.tsv_columns]
  label_col = header.index(spec.label_column) if spec.label_column in header else None
  id_col = header.index(spec.index_column) if spec.index_column in header else None
  skipped = []  # line numbers
  for n, row in enumerate(body):
    where = f"{path}:{n + 2}"
    if len(row) != len(header):
      if spec.skip_malformed:
        skipped.append(n + 2)
        continue
      raise ValueError(f"{where}: expected {len(header)} tab-separated fields like the header, "
                       f"got {len(row)}")
    texts = [row[c] for c in cols]
    label = None if label_col is None else _parse_label(spec, row[label_col], where)
    examples.append(Example(row[id_col] if id_col is not None else str(n), texts[0],
                            texts[1] if len(texts) > 1 else None, label))
  if skipped:
    lines = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
    logging.warning("GLUE %s: %s: skipped %d row(s) without the header's %d tab-separated "
                    "fields, as the official reader does (line(s) %s)", name, path, len(skipped),
                    len(header), lines)
  return examples


def ax_file(task: ml_collections.ConfigDict) -> str:
  """The diagnostic TSV: `task.ax_file`, else `diagnostic/diagnostic.tsv` beside
  `task.data_dir` (the layout of the official GLUE download: glue_data/MNLI,
  glue_data/diagnostic)."""
  if task.get("ax_file"):
    return task.ax_file
  parent = os.path.dirname(task.data_dir.rstrip("/"))  # not normpath: it would break gs://
  return os.path.join(parent, "diagnostic", "diagnostic.tsv")


def read_examples(task: ml_collections.ConfigDict, split: str) -> list[Example]:
  """Examples of `split` from tfds or from `task.data_dir` (official TSVs)."""
  spec = get_task(task.name)
  if split == AX and task.name != "mnli":
    raise ValueError(f"GLUE {task.name}: split {AX!r} (the GLUE diagnostic set) is predicted by "
                     "an MNLI model; use it with config field 'task.name'='mnli'")
  if split not in _SPLIT_FILES and split != AX:
    raise ValueError(f"GLUE {task.name}: unknown split {split!r}; allowed: "
                     f"{sorted(_SPLIT_FILES)} (MNLI also {AX!r})")
  if task.source == "files":
    if split == AX:
      return read_tsv(task.name, ax_file(task), "task.ax_file")
    return read_tsv(task.name, os.path.join(task.data_dir, _SPLIT_FILES[split]))
  if task.source != "tfds":
    raise ValueError(f"config field 'task.source'={task.source!r}: allowed tfds, files")
  dataset, tfds_split = ("glue/ax", "test") if split == AX else (f"glue/{task.name}", split)
  examples = []
  for ex in tasks_lib.tfds_examples(dataset, tfds_split, task.tfds_data_dir):
    texts = [ex[k] for k in spec.tfds_keys]
    label = ex["label"]
    # tfds gives GLUE test splits (and AX) label -1, also STS-B's (-1.0, a possible score).
    unlabeled = tfds_split.startswith("test") or (spec.labels is not None and label < 0)
    examples.append(Example(str(ex["idx"]), texts[0], texts[1] if len(texts) > 1 else None,
                            None if unlabeled else label))
  return examples


# ----------------------------------------------------------------------------------------------
# Featurization.
# ----------------------------------------------------------------------------------------------


def truncate_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
  """Official `_truncate_seq_pair`: pop from the end of the longer list until they fit."""
  while len(tokens_a) + len(tokens_b) > max_length:
    (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def featurize(examples: Sequence[Example], tokenizer, max_seq_length: int,
              regression: bool) -> tuple[dict[str, np.ndarray], int]:
  """(arrays, number of truncated examples) for `[CLS] a [SEP] (b [SEP])` inputs."""
  if max_seq_length < 3:
    raise ValueError(f"config field 'data.max_seq_length'={max_seq_length} is too small")
  ids_a = tokenizer.encode_batch([e.text_a for e in examples])
  ids_b = tokenizer.encode_batch([e.text_b or "" for e in examples])
  n = len(examples)
  input_ids = np.zeros((n, max_seq_length), np.int32)
  input_mask = np.zeros((n, max_seq_length), np.int32)
  segment_ids = np.zeros((n, max_seq_length), np.int32)
  truncated = 0
  for i, (e, a, b) in enumerate(zip(examples, ids_a, ids_b)):
    a = list(a)
    b = list(b) if e.text_b else []
    before = len(a) + len(b)
    if b:
      truncate_pair(a, b, max_seq_length - 3)
      ids = [tokenizer.cls_id] + a + [tokenizer.sep_id] + b + [tokenizer.sep_id]
      segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    else:
      a = a[:max_seq_length - 2]
      ids = [tokenizer.cls_id] + a + [tokenizer.sep_id]
      segments = [0] * len(ids)
    truncated += len(a) + len(b) < before
    input_ids[i, :len(ids)] = ids
    input_mask[i, :len(ids)] = 1
    segment_ids[i, :len(ids)] = segments
  labels = [0 if e.label is None else e.label for e in examples]
  label = np.asarray(labels, np.float32 if regression else np.int32)
  return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
          "label": label}, truncated


def load_split(task: ml_collections.ConfigDict, tokenizer, split: str, is_training: bool,
               max_seq_length: int) -> tasks_lib.Split:
  spec = get_task(task.name)
  examples = read_examples(task, split)
  examples = tasks_lib.limit(examples, task.max_train_examples if is_training
                             else task.max_eval_examples)
  if not examples:
    raise ValueError(f"GLUE {task.name}: split {split!r} has no examples")
  labelled = [e.label is not None for e in examples]
  if any(labelled) and not all(labelled):
    raise ValueError(f"GLUE {task.name}: split {split!r} mixes labelled and unlabelled rows")
  if is_training and not all(labelled):
    raise ValueError(f"GLUE {task.name}: the training split {split!r} has no labels")
  arrays, truncated = featurize(examples, tokenizer, max_seq_length, spec.labels is None)
  return tasks_lib.Split(name=split, arrays=arrays, meta=examples, has_labels=all(labelled),
                         stats={"examples": len(examples), "rows": len(examples),
                                "truncated": truncated})


# ----------------------------------------------------------------------------------------------
# Scoring and outputs.
# ----------------------------------------------------------------------------------------------


def evaluate(task: ml_collections.ConfigDict, split: tasks_lib.Split,
             outputs: dict[str, np.ndarray]) -> tuple[dict[str, float], list]:
  """(metrics, per-example predictions: class index or score) from the model's `logits`."""
  spec = get_task(task.name)
  logits = outputs["logits"]
  preds = logits[:, 0].tolist() if spec.labels is None else logits.argmax(-1).tolist()
  if not split.has_labels:
    return {}, preds
  labels = [e.label for e in split.meta]
  return glue_metrics.glue_metrics(task.name, preds, labels), preds


def metric_names(task: ml_collections.ConfigDict, split: tasks_lib.Split) -> set[str]:
  """The metrics `evaluate` reports for `split` (none for an unlabelled split)."""
  if not split.has_labels:
    return set()
  labels = [e.label for e in split.meta]
  return set(glue_metrics.glue_metrics(task.name, labels, labels))


def _prediction_text(spec: GlueTask, pred: Any) -> str:
  if spec.labels is None:
    return f"{pred:.3f}"
  return spec.labels[pred] if spec.text_labels else str(pred)


def write_outputs(task: ml_collections.ConfigDict, split: tasks_lib.Split, predictions: list,
                  out_dir: str) -> list[str]:
  """The GLUE submission file of a test split (e.g. MNLI-m.tsv, AX.tsv: "index<TAB>prediction"),
  else `<split>_predictions.tsv` with the labels beside the predictions."""
  spec = get_task(task.name)
  submission = (spec.submission or {}).get(split.name)
  if submission:
    path = os.path.join(out_dir, submission)
    rows = [("index", "prediction")] + [(e.guid, _prediction_text(spec, p))
                                        for e, p in zip(split.meta, predictions)]
  else:
    path = os.path.join(out_dir, f"{split.name}_predictions.tsv")
    rows = [("index", "prediction", "label")] + [
        (e.guid, _prediction_text(spec, p),
         "" if e.label is None else _prediction_text(spec, e.label))
        for e, p in zip(split.meta, predictions)]
  fileio.write_text(path, "".join("\t".join(r) + "\n" for r in rows))
  return [path]


# ----------------------------------------------------------------------------------------------
# The task family.
# ----------------------------------------------------------------------------------------------


def _regression(task) -> bool:
  return get_task(task.name).labels is None


class Glue(tasks_lib.TaskFamily):
  """GLUE: a classifier (or STS-B regressor) on the pooled [CLS] of one text or a pair."""

  predict_mode = "classify"
  predict_fields = ("text_a",)
  plain_text_field = "text_a"

  def build_model(self, model_config, task):
    from albert_jax.model import modeling  # pylint: disable=g-import-not-at-top
    return modeling.AlbertForSequenceClassification(
        model_config, num_labels=num_labels(task.name)), "classifier"

  def batch_spec(self, task, max_seq_length):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    spec = super().batch_spec(task, max_seq_length)
    spec["label"] = ((), jnp.float32 if _regression(task) else jnp.int32)
    return spec

  def per_example_loss(self, task, outputs, batch):
    """Softmax CE; STS-B: squared error of the single output (official run_classifier.py)."""
    if _regression(task):
      import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
      return jnp.square(outputs["logits"][:, 0] - batch["label"]), None
    return super().per_example_loss(task, outputs, batch)

  load_split = staticmethod(load_split)
  metric_names = staticmethod(metric_names)
  evaluate = staticmethod(evaluate)
  write_outputs = staticmethod(write_outputs)

  def parse_predict_input(self, example, where):
    example.setdefault("text_a", example.get("text", example.get("sentence1", "")))
    example.setdefault("text_b", example.get("sentence2"))
    return super().parse_predict_input(example, where)

  def predict(self, task, max_seq_length, tokenizer, examples, run, options):
    """Single texts or pairs -> label and probabilities (STS-B: a score)."""
    spec = get_task(task.name)
    rows = [Example(str(i), ex["text_a"], ex.get("text_b") or None, None)
            for i, ex in enumerate(examples)]
    for ex, a, b in zip(examples, tokenizer.encode_batch([r.text_a for r in rows]),
                        tokenizer.encode_batch([r.text_b or "" for r in rows])):
      length = len(a) + len(b) + (3 if ex.get("text_b") else 2)
      if length > max_seq_length and not options.truncate:
        raise tasks_lib.too_long(ex["where"], length, max_seq_length, "the task's max_seq_length")
    arrays, _ = featurize(rows, tokenizer, max_seq_length, spec.labels is None)
    logits = run(arrays)["logits"]
    if spec.labels is None:
      return [{"score": float(x[0])} for x in logits]
    out = []
    for probs in tasks_lib.softmax(logits.astype(np.float64)):
      best = int(probs.argmax())
      out.append({"label": spec.labels[best], "label_index": best,
                  "probabilities": dict(zip(spec.labels, map(float, probs)))})
    return out

  def format_prediction(self, example, result):
    if "score" in result:
      return [f"{result['score']:.3f}"]
    return [f"{result['label']}\t{result['probabilities'][result['label']]:.3f}"]

  def hf_architecture(self, task, head, outputs, has_pooler):
    from albert_jax.interop import hf_classes  # pylint: disable=g-import-not-at-top
    labels = None
    if task.get("name"):
      labels = get_task(task["name"]).labels  # None: regression (STS-B)
      if outputs != num_labels(task["name"]):
        raise ValueError(f"params head 'classifier' has {outputs} outputs but GLUE task "
                         f"{task['name']!r} has {num_labels(task['name'])}")
    return hf_classes.HfArchitecture(
        "AlbertForSequenceClassification", head, num_labels=outputs, labels=labels,
        problem_type="regression" if outputs == 1 else "single_label_classification")


FAMILY = Glue()
