"""Sequence labelling (NER, POS): readers (tfds `conll2003`, `universal_dependencies/<treebank>`,
`xtreme_pos/<config>`, or local CoNLL / CoNLL-U files), word -> piece label alignment, strided
windows and the merge back to one prediction per word, metrics and prediction files.

Alignment: every word is encoded on its own (the official preprocessing, then SentencePiece, so it
gets its word-start "▁"); the word's FIRST piece carries its label, the other pieces (and [CLS],
[SEP], padding) get label -1 and count neither in the loss nor in scoring. A word that encodes to
no piece at all (whitespace, lone combining marks) is given one `<unk>` piece so that it still
gets a prediction.

Long sentences: the pieces are cut into windows of max_seq_length - 2 pieces starting every
`doc_stride` pieces (`[CLS] window [SEP]`, segment 0), the SQuAD windows. In training every word
whose first piece lies in a window is labelled there (a word in two windows trains twice); in
evaluation and prediction each word is read from exactly one window: the one where its first piece
has the most context on both sides (SQuAD's max-context rule), so every word gets exactly one
prediction and an entity cut by a window boundary is scored whole.

Labels are indices into `task.labels` (the tfds class names by default, so tfds and files give
the same model); tfds class ids are mapped through their names. Scoring (`task.scoring`):
"entity" = conlleval entity precision/recall/F1 overall and per type + token accuracy (NER),
"accuracy" = token accuracy (POS).

Local files (`task.source=files`, `task.data_dir`): per split the first existing of
`<split>.txt`, `<split>.conll`, `<split>.conllu`, `*-<split>.conllu` (UD naming, e.g.
en_ewt-ud-dev.conllu) and the CoNLL-2003 names (`valid.txt`, `eng.testa` for dev; `eng.testb` for
test; `eng.train`). CoNLL: one word per line, whitespace-separated columns, the word first and the
tag in `task.label_column` (-1 = last), blank lines between sentences, `-DOCSTART-` lines
skipped; one-column files are unlabelled (prediction only). CoNLL-U: tab-separated, comments,
multi-word ranges (1-2) and empty nodes (1.1) skipped, the tag in `task.label_column`
(-1 = UPOS, column 3). Splits: train, dev, test.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from albert_jax import fileio
from albert_jax.tasks import seqeval as seqeval_metrics
from albert_jax import tasks as tasks_lib
from albert_jax.tasks import squad

SCORING = ("entity", "accuracy")
FORMATS = ("auto", "conll", "conllu")
# CoNLL-U columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC.
_CONLLU_UPOS = 3
_SPLIT_ALIASES = {"train": ("eng.train",), "dev": ("valid.txt", "eng.testa"),
                  "test": ("eng.testb",)}


@dataclasses.dataclass(frozen=True)
class Example:
  guid: str                              # "<file>:<line>" or "<tfds split>:<index>"
  words: tuple[str, ...]
  labels: Optional[tuple[int, ...]]      # indices into task.labels; None when unlabelled


@dataclasses.dataclass(frozen=True)
class RowMeta:
  """Which words one model row predicts (those whose max-context window it is)."""

  example_index: int
  word_indices: np.ndarray   # [k] words of the example read from this row
  positions: np.ndarray      # [k] their first piece's position in the row


def labels(task: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The label set (`task.labels`), validated."""
  names = tuple(task.labels)
  if not names or len(set(names)) != len(names):
    raise ValueError(f"config field 'task.labels'={list(names)} must be a non-empty list of "
                     "distinct tag names")
  if task.scoring not in SCORING:
    raise ValueError(f"config field 'task.scoring'={task.scoring!r}: allowed {SCORING}")
  if task.scoring == "entity":
    for name in names:
      seqeval_metrics.split_tag(name)
  return names


def num_labels(task: ml_collections.ConfigDict) -> int:
  return len(labels(task))


# ----------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------


def find_split_file(data_dir: str, split: str) -> str:
  """The file of `split` in `data_dir` (see the module docstring for the names tried)."""
  patterns = [f"{split}.txt", f"{split}.conll", f"{split}.conllu", f"*-{split}.conllu",
              *_SPLIT_ALIASES.get(split, ())]
  for pattern in patterns:
    found = fileio.glob(os.path.join(data_dir, pattern))
    if len(found) > 1:
      raise ValueError(f"tagging: several files match {pattern!r} for split {split!r} in "
                       f"{data_dir}: {found}")
    if found:
      return found[0]
  raise FileNotFoundError(f"tagging: no file for split {split!r} in {data_dir} (config field "
                          f"'task.data_dir'); looked for {patterns}")


def _file_format(path: str, fmt: str) -> str:
  if fmt not in FORMATS:
    raise ValueError(f"config field 'task.file_format'={fmt!r}: allowed {FORMATS}")
  if fmt == "auto":
    return "conllu" if path.endswith(".conllu") else "conll"
  return fmt


def read_file(path: str, names: Sequence[str], fmt: str = "auto",
              label_column: int = -1) -> list[Example]:
  """Sentences of a CoNLL or CoNLL-U file; errors name the file, line and field at fault."""
  if not fileio.isfile(path):
    raise FileNotFoundError(f"tagging: file {path} not found (config field 'task.data_dir')")
  conllu = _file_format(path, fmt) == "conllu"
  index = {name: i for i, name in enumerate(names)}
  examples: list[Example] = []
  words: list[str] = []
  tags: list[Optional[int]] = []
  start = 0

  def flush() -> None:
    if words:
      labelled = [t is not None for t in tags]
      if any(labelled) and not all(labelled):
        raise ValueError(f"{path}:{start}: sentence mixes labelled and unlabelled words")
      examples.append(Example(f"{os.path.basename(path)}:{start}", tuple(words),
                              tuple(tags) if all(labelled) else None))  # type: ignore[arg-type]
    words.clear()
    tags.clear()

  for n, line in enumerate(fileio.read_text(path).split("\n"), start=1):  # not splitlines: U+2028
    line = line.rstrip("\r")
    if not line.strip():
      flush()
      continue
    if conllu:
      if line.startswith("#"):
        continue
      fields = line.split("\t")
      if len(fields) != 10:
        raise ValueError(f"{path}:{n}: a CoNLL-U line needs 10 tab-separated fields, got "
                         f"{len(fields)}")
      if "-" in fields[0] or "." in fields[0]:  # multi-word token range / empty node
        continue
      word, column = fields[1], (_CONLLU_UPOS if label_column == -1 else label_column)
    else:
      fields = line.split()
      if fields[0] == "-DOCSTART-":
        continue
      word, column = fields[0], label_column
    if not words:
      start = n
    words.append(word)
    if len(fields) == 1:
      tags.append(None)
      continue
    try:
      tag = fields[column]
    except IndexError:
      raise ValueError(f"{path}:{n}: no column {column} (config field 'task.label_column') "
                       f"in {len(fields)} fields") from None
    if tag not in index:
      raise ValueError(f"{path}:{n}: tag {tag!r} is not in config field 'task.labels' "
                       f"{list(names)}")
    tags.append(index[tag])
  flush()
  return examples


def _tfds_label_names(name: str, key: str, data_dir: str) -> list[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = tfds.builder(name, data_dir=data_dir or None).info.features
  if key not in features:
    raise ValueError(f"config field 'task.tfds_label_key'={key!r}: tfds {name} has features "
                     f"{sorted(features.keys())}")
  return list(features[key].feature.names)


def read_examples(task: ml_collections.ConfigDict, split: str) -> list[Example]:
  """Sentences of `split` from tfds (`task.tfds_name`) or files in `task.data_dir`."""
  names = labels(task)
  if task.source == "files":
    return read_file(find_split_file(task.data_dir, split), names, task.file_format,
                     task.label_column)
  if task.source != "tfds":
    raise ValueError(f"config field 'task.source'={task.source!r}: allowed tfds, files")
  tfds_names = _tfds_label_names(task.tfds_name, task.tfds_label_key, task.tfds_data_dir)
  missing = sorted(set(tfds_names) - set(names))
  if missing:
    raise ValueError(f"tfds {task.tfds_name} has tags {missing} that are not in config field "
                     f"'task.labels'")
  to_ours = [names.index(n) for n in tfds_names]
  examples = []
  for i, ex in enumerate(tasks_lib.tfds_examples(task.tfds_name, split, task.tfds_data_dir)):
    words, tags = ex["tokens"], ex[task.tfds_label_key]
    if len(words) != len(tags):
      raise ValueError(f"tfds {task.tfds_name} {split} example {i}: {len(words)} tokens but "
                       f"{len(tags)} '{task.tfds_label_key}' tags")
    if words:
      examples.append(Example(f"{split}:{i}", tuple(words), tuple(to_ours[t] for t in tags)))
  return examples


# ----------------------------------------------------------------------------------------------
# Featurization, and the merge back to words.
# ----------------------------------------------------------------------------------------------


def word_pieces(words: Sequence[str], tokenizer) -> tuple[list[list[int]], int]:
  """(piece ids of every word, number of words that needed an `<unk>` stand-in)."""
  unique = list(dict.fromkeys(words))
  encoded = dict(zip(unique, tokenizer.encode_batch(unique)))
  empty = sum(1 for w in words if not encoded[w])
  return [encoded[w] or [tokenizer.unk_id] for w in words], empty


def featurize(examples: Sequence[Example], tokenizer, max_seq_length: int, doc_stride: int
              ) -> tuple[dict[str, np.ndarray], list[RowMeta], dict[str, int]]:
  """(arrays, per-row metadata, counts): `[CLS] window [SEP]` rows with first-piece labels."""
  max_tokens = max_seq_length - 2
  if max_tokens < 1:
    raise ValueError(f"config field 'data.max_seq_length'={max_seq_length} is too small")
  if doc_stride < 1:
    raise ValueError(f"config field 'task.doc_stride'={doc_stride} must be positive")
  all_words = [w for e in examples for w in e.words]
  pieces_flat, empty = word_pieces(all_words, tokenizer)
  rows: dict[str, list] = {"input_ids": [], "input_mask": [], "label": []}
  metas: list[RowMeta] = []
  stats = {"examples": len(examples), "words": len(all_words), "empty_words": empty,
           "split_sentences": 0}
  offset = 0
  for example_index, ex in enumerate(examples):
    word_ids = pieces_flat[offset:offset + len(ex.words)]
    offset += len(ex.words)
    ids, first = [], []  # the sentence's pieces; first[w] = index of word w's first piece
    for pieces in word_ids:
      first.append(len(ids))
      ids.extend(pieces)
    spans = squad.doc_spans(len(ids), max_tokens, doc_stride)
    stats["split_sentences"] += len(spans) > 1
    for k, (start, length) in enumerate(spans):
      row_ids = [tokenizer.cls_id] + ids[start:start + length] + [tokenizer.sep_id]
      label = [-1] * max_seq_length
      read_words, read_positions = [], []
      for w, f in enumerate(first):
        if not start <= f < start + length:
          continue
        position = 1 + f - start
        if ex.labels is not None:
          label[position] = ex.labels[w]
        if squad.is_max_context(spans, k, f):
          read_words.append(w)
          read_positions.append(position)
      row_ids, mask = tasks_lib.pad_ids(row_ids, max_seq_length)
      rows["input_ids"].append(row_ids)
      rows["input_mask"].append(mask)
      rows["label"].append(label)
      metas.append(RowMeta(example_index, np.asarray(read_words, np.int32),
                           np.asarray(read_positions, np.int32)))
  arrays = {k: np.asarray(v, np.int32).reshape(-1, max_seq_length) for k, v in rows.items()}
  arrays["segment_ids"] = np.zeros_like(arrays["input_ids"])
  stats["rows"] = len(metas)
  return arrays, metas, stats


def merge(num_words: Sequence[int], metas: Sequence[RowMeta],
          row_predictions: np.ndarray) -> list[list[Any]]:
  """Per-word values from per-position ones ([rows, T, ...]): each word from its one row.

  Raises if a word was read from no row or from several (the windows guarantee exactly one).
  """
  out: list[list[Any]] = [[None] * n for n in num_words]
  for row, meta in enumerate(metas):
    target = out[meta.example_index]
    for w, position in zip(meta.word_indices.tolist(), meta.positions.tolist()):
      if target[w] is not None:
        raise AssertionError(f"example {meta.example_index}: word {w} read from two windows")
      target[w] = row_predictions[row, position]
  for i, words in enumerate(out):
    if any(v is None for v in words):
      raise AssertionError(f"example {i}: a word was read from no window")
  return out


def decode(examples: Sequence[Example], metas: Sequence[RowMeta],
           logits: np.ndarray) -> list[list[int]]:
  """The predicted label index of every word of every example (argmax per first piece)."""
  predicted = merge([len(e.words) for e in examples], metas, np.asarray(logits).argmax(-1))
  return [[int(p) for p in words] for words in predicted]


def load_split(task: ml_collections.ConfigDict, tokenizer, split: str, is_training: bool,
               max_seq_length: int) -> tasks_lib.Split:
  examples = read_examples(task, split)
  examples = tasks_lib.limit(examples, task.max_train_examples if is_training
                             else task.max_eval_examples)
  if not examples:
    raise ValueError(f"tagging {task.name}: split {split!r} has no sentences")
  labelled = all(e.labels is not None for e in examples)
  if not labelled and any(e.labels is not None for e in examples):
    raise ValueError(f"tagging {task.name}: split {split!r} mixes labelled and unlabelled "
                     "sentences")
  if is_training and not labelled:
    raise ValueError(f"tagging {task.name}: the training split {split!r} has no tags")
  arrays, metas, stats = featurize(examples, tokenizer, max_seq_length, task.doc_stride)
  return tasks_lib.Split(name=split, arrays=arrays, meta=(examples, metas),
                         has_labels=labelled, stats=stats)


# ----------------------------------------------------------------------------------------------
# Scoring and outputs.
# ----------------------------------------------------------------------------------------------


def score(task: ml_collections.ConfigDict, gold: Sequence[Sequence[str]],
          predicted: Sequence[Sequence[str]]) -> dict[str, float]:
  """`task.scoring` metrics of tag-name sequences."""
  if task.scoring == "entity":
    return seqeval_metrics.entity_scores(gold, predicted)
  return {"accuracy": seqeval_metrics.token_accuracy(gold, predicted)}


def evaluate(task: ml_collections.ConfigDict, split: tasks_lib.Split,
             outputs: dict[str, np.ndarray]) -> tuple[dict[str, float], list[list[int]]]:
  """(metrics, predicted label indices per word) from the model's per-piece `logits`."""
  examples, metas = split.meta
  predicted = decode(examples, metas, outputs["logits"])
  if not split.has_labels:
    return {}, predicted
  names = labels(task)
  metrics = score(task, _gold_tags(task, examples), [[names[i] for i in p] for p in predicted])
  return metrics, predicted


def _gold_tags(task: ml_collections.ConfigDict, examples) -> list[list[str]]:
  names = labels(task)
  return [[names[i] for i in e.labels] for e in examples]


def metric_names(task: ml_collections.ConfigDict, split: tasks_lib.Split) -> set[str]:
  """The metrics `evaluate` reports for `split`: those of a perfect prediction (with entity
  scoring, one set per entity type in the gold tags)."""
  if not split.has_labels:
    return set()
  gold = _gold_tags(task, split.meta[0])
  return set(score(task, gold, gold))


def write_outputs(task: ml_collections.ConfigDict, split: tasks_lib.Split,
                  predictions: list[list[int]], out_dir: str) -> list[str]:
  """`<split>_predictions.conll`: "word gold predicted" per line (the conlleval input format;
  "word predicted" for unlabelled splits), a blank line after each sentence."""
  names = labels(task)
  path = os.path.join(out_dir, f"{split.name}_predictions.conll")
  examples, _ = split.meta
  lines = []
  for e, pred in zip(examples, predictions):
    for i, (word, p) in enumerate(zip(e.words, pred)):
      word = "_".join(word.split()) or "_"  # a column format: no spaces inside a word
      gold = [] if e.labels is None else [names[e.labels[i]]]
      lines.append(" ".join([word, *gold, names[p]]) + "\n")
    lines.append("\n")
  fileio.write_text(path, "".join(lines))
  return [path]


# ----------------------------------------------------------------------------------------------
# The task family.
# ----------------------------------------------------------------------------------------------


class Tagging(tasks_lib.TaskFamily):
  """Sequence labelling: a classifier on every piece, CE on the words' first pieces."""

  predict_mode = "tag"
  predict_fields = ("words",)

  def build_model(self, model_config, task):
    from albert_jax.model import modeling  # pylint: disable=g-import-not-at-top
    return modeling.AlbertForTokenClassification(
        model_config, num_labels=num_labels(task)), "classifier"

  def batch_spec(self, task, max_seq_length):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    spec = super().batch_spec(task, max_seq_length)
    spec["label"] = ((max_seq_length,), jnp.int32)  # per piece; -1 = not scored
    return spec

  def loss_weights(self, task, batch):
    """1 on the positions with a label (>= 0), 0 elsewhere (-1: other pieces, padding)."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    return (batch["label"] >= 0).astype(jnp.float32)

  def per_example_loss(self, task, outputs, batch):
    """Softmax CE and correctness per position (unlabelled positions get weight 0)."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    safe = jnp.maximum(batch["label"], 0)
    correct = (jnp.argmax(outputs["logits"], -1) == safe).astype(jnp.float32)
    return tasks_lib.softmax_nll(outputs["logits"], safe), correct

  load_split = staticmethod(load_split)
  metric_names = staticmethod(metric_names)
  evaluate = staticmethod(evaluate)
  write_outputs = staticmethod(write_outputs)

  def parse_predict_input(self, example, where):
    if "words" not in example:
      example["words"] = str(example.get("text", "")).split()
    if not all(isinstance(w, str) for w in example["words"] or ()):
      raise tasks_lib.InputError(f"{where}: 'words' must be a list of strings")
    return super().parse_predict_input(example, where)

  def predict(self, task, max_seq_length, tokenizer, examples, run, options):
    """Words -> one tag each (NER also: the entities under the CoNLL rules)."""
    names = labels(task)
    rows = [Example(str(i), tuple(ex["words"]), None) for i, ex in enumerate(examples)]
    arrays, metas, _ = featurize(rows, tokenizer, max_seq_length, task.doc_stride)
    predicted = decode(rows, metas, run(arrays)["logits"])
    out = []
    for row, pred in zip(rows, predicted):
      tags = [names[p] for p in pred]
      result: dict[str, Any] = {"words": list(row.words), "tags": tags}
      if task.scoring == "entity":
        result["entities"] = [{"type": kind, "start": s, "end": e,
                               "text": " ".join(row.words[s:e + 1])}
                              for kind, s, e in seqeval_metrics.get_entities(tags)]
      out.append(result)
    return out

  def format_prediction(self, example, result):
    return [" ".join(f"{w}/{t}" for w, t in zip(result["words"], result["tags"]))]

  def hf_architecture(self, task, head, outputs, has_pooler):
    from albert_jax.interop import hf_classes  # pylint: disable=g-import-not-at-top
    names = tuple(task["labels"]) if task.get("labels") else None
    if names is not None and len(names) != outputs:
      raise ValueError(f"params head 'classifier' has {outputs} outputs but the task has "
                       f"{len(names)} labels {list(names)}")
    return hf_classes.HfArchitecture("AlbertForTokenClassification", head, pooler=False,
                                     num_labels=outputs, labels=names)


FAMILY = Tagging()
