"""RACE: readers (the official RACE folder or tfds `race/middle|high`) and the official
featurization (`race_utils.py` of google-research/albert), and RACE accuracy per level.

Each question becomes 4 inputs, one per option: qa = question with every "_" replaced by the
option if the question has a "_", else question + " " + option (texts normalized first, as the
official `process_text`); `[CLS] article [SEP] qa [SEP]`, segment 0 for [CLS] article [SEP] and 1
for qa [SEP]; qa keeps its LAST `max_qa_length` pieces and the article is cut from the end to fit.

Local files: `task.data_dir` is the RACE folder (or its parent) with {train,dev,test}/{middle,high}/
*.txt, each line one JSON article {"id", "article", "questions", "options", "answers"} (the
original one-article files and the concatenated all.txt both work). Splits: train, dev, test.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from albert_jax import fileio
from albert_jax import tasks as tasks_lib
from albert_jax.tasks.glue_metrics import accuracy

LEVELS = ("middle", "high")
SPLITS = ("train", "dev", "test")
NUM_CHOICES = 4
_LETTERS = "ABCD"


@dataclasses.dataclass(frozen=True)
class Example:
  example_id: str        # article id (e.g. "high1234.txt")
  question_index: int    # position of the question in its article
  level: str             # middle | high
  context: str
  endings: tuple[str, ...]  # the 4 qa texts
  label: int             # 0..3


def _levels(task: ml_collections.ConfigDict) -> list[str]:
  levels = tasks_lib.split_list(task.levels)
  bad = [lv for lv in levels if lv not in LEVELS]
  if bad or not levels:
    raise ValueError(f"config field 'task.levels'={task.levels!r}: use a comma-separated subset "
                     f"of {LEVELS}")
  return levels


def examples_from_article(article: Any, level: str, tokenizer, where: str) -> list[Example]:
  """The examples of one RACE article (validated, with errors naming `where`)."""
  if not isinstance(article, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(article).__name__}")
  for key in ("article", "questions", "options", "answers"):
    if key not in article:
      raise ValueError(f"{where}: missing field {key!r}")
  questions, options, answers = article["questions"], article["options"], article["answers"]
  if not len(questions) == len(options) == len(answers):
    raise ValueError(f"{where}: {len(questions)} questions, {len(options)} option lists and "
                     f"{len(answers)} answers must be as many")
  context = tokenizer.preprocess(article["article"])
  examples = []
  for i, (question, opts, answer) in enumerate(zip(questions, options, answers)):
    if len(opts) != NUM_CHOICES:
      raise ValueError(f"{where}: question {i} has {len(opts)} options, RACE needs {NUM_CHOICES}")
    if answer not in _LETTERS:
      raise ValueError(f"{where}: question {i} has answer {answer!r}, expected one of A, B, C, D")
    question = tokenizer.preprocess(question)
    endings = []
    for option in opts:
      option = tokenizer.preprocess(option)
      endings.append(question.replace("_", option) if "_" in question
                     else " ".join([question, option]))
    examples.append(Example(str(article.get("id", article.get("example_id", ""))), i, level,
                            context, tuple(endings), _LETTERS.index(answer)))
  return examples


def _race_root(data_dir: str) -> str:
  nested = os.path.join(data_dir, "RACE")
  return nested if fileio.isdir(nested) else data_dir


def read_files(data_dir: str, split: str, levels: Sequence[str], tokenizer) -> list[Example]:
  examples = []
  for level in levels:
    folder = os.path.join(_race_root(data_dir), split, level)
    files = fileio.glob(os.path.join(folder, "*.txt"))
    if not files:
      raise FileNotFoundError(f"RACE: no .txt files in {folder} (config field 'task.data_dir')")
    for path in files:
      for n, line in enumerate(fileio.read_text(path).split("\n")):  # not splitlines: U+2028
        if not line.strip():
          continue
        try:
          article = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{n + 1}: not a JSON article ({e})") from None
        article.setdefault("id", os.path.basename(path))
        examples.extend(examples_from_article(article, level, tokenizer, f"{path}:{n + 1}"))
  return examples


def read_examples(task: ml_collections.ConfigDict, split: str, tokenizer) -> list[Example]:
  if split not in SPLITS:
    raise ValueError(f"RACE: unknown split {split!r}; allowed: {SPLITS}")
  levels = _levels(task)
  if task.source == "files":
    return read_files(task.data_dir, split, levels, tokenizer)
  if task.source != "tfds":
    raise ValueError(f"config field 'task.source'={task.source!r}: allowed tfds, files")
  examples = []
  for level in levels:
    for ex in tasks_lib.tfds_examples(f"race/{level}", split, task.tfds_data_dir):
      examples.extend(examples_from_article(ex, level, tokenizer,
                                            f"tfds race/{level} {split} {ex.get('example_id')}"))
  return examples


def featurize(examples: Sequence[Example], tokenizer, max_seq_length: int,
              max_qa_length: int) -> tuple[dict[str, np.ndarray], int]:
  """(arrays [N, 4, T] + label [N], number of truncated articles)."""
  if not 0 < max_qa_length <= max_seq_length - 3:
    raise ValueError(f"config field 'task.max_qa_length'={max_qa_length} must be in "
                     f"[1, max_seq_length - 3 = {max_seq_length - 3}]")
  n = len(examples)
  shape = (n, NUM_CHOICES, max_seq_length)
  input_ids, input_mask, segment_ids = (np.zeros(shape, np.int32) for _ in range(3))
  contexts = {e.context: None for e in examples}
  encoded = dict(zip(contexts, tokenizer.encode_batch(list(contexts))))
  truncated = 0
  for i, e in enumerate(examples):
    context = encoded[e.context]
    for c, qa in enumerate(tokenizer.encode_batch(list(e.endings))):
      qa = qa[-max_qa_length:]
      keep = max_seq_length - 3 - len(qa)
      truncated += c == 0 and len(context) > keep
      ctx = context[:keep]
      ids = [tokenizer.cls_id] + ctx + [tokenizer.sep_id] + qa + [tokenizer.sep_id]
      input_ids[i, c, :len(ids)] = ids
      input_mask[i, c, :len(ids)] = 1
      segment_ids[i, c, len(ctx) + 2:len(ids)] = 1
  label = np.asarray([e.label for e in examples], np.int32)
  return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
          "label": label}, truncated


def load_split(task: ml_collections.ConfigDict, tokenizer, split: str, is_training: bool,
               max_seq_length: int) -> tasks_lib.Split:
  examples = read_examples(task, split, tokenizer)
  examples = tasks_lib.limit(examples, task.max_train_examples if is_training
                             else task.max_eval_examples)
  if not examples:
    raise ValueError(f"RACE: split {split!r} has no questions")
  arrays, truncated = featurize(examples, tokenizer, max_seq_length, task.max_qa_length)
  return tasks_lib.Split(name=split, arrays=arrays, meta=examples, has_labels=True,
                         stats={"examples": len(examples), "rows": len(examples),
                                "truncated_articles": truncated})


def race_accuracy(predictions: Sequence[int], labels: Sequence[int],
                  levels: Sequence[str]) -> dict[str, float]:
  """{"accuracy", "accuracy_middle", "accuracy_high"} (a level absent from the data is left out)."""
  p, y, lv = np.asarray(predictions), np.asarray(labels), np.asarray(levels)
  out = {"accuracy": accuracy(p, y)}
  for level in ("middle", "high"):
    if np.any(lv == level):
      out[f"accuracy_{level}"] = accuracy(p[lv == level], y[lv == level])
  return out


def evaluate(task: ml_collections.ConfigDict, split: tasks_lib.Split,
             outputs: dict[str, np.ndarray]) -> tuple[dict[str, float], list]:
  del task
  logits = outputs["logits"]
  preds = logits.argmax(-1).tolist()
  probs = tasks_lib.softmax(logits).tolist()
  metrics = race_accuracy(preds, [e.label for e in split.meta],
                                       [e.level for e in split.meta])
  return metrics, list(zip(preds, probs))


def metric_names(task: ml_collections.ConfigDict, split: tasks_lib.Split) -> set[str]:
  """The metrics `evaluate` reports for `split` (a level absent from the split has none)."""
  del task
  labels = [e.label for e in split.meta]
  return set(race_accuracy(labels, labels, [e.level for e in split.meta]))


def write_outputs(task: ml_collections.ConfigDict, split: tasks_lib.Split, predictions: list,
                  out_dir: str) -> list[str]:
  """`race_<split>_predictions.jsonl`: one line per question with the predicted letter."""
  del task
  path = os.path.join(out_dir, f"race_{split.name}_predictions.jsonl")
  fileio.write_text(path, "".join(
      json.dumps({"id": e.example_id, "question_index": e.question_index, "level": e.level,
                  "prediction": _LETTERS[pred], "label": _LETTERS[e.label],
                  "probabilities": [round(p, 6) for p in probs]}) + "\n"
      for e, (pred, probs) in zip(split.meta, predictions)))
  return [path]


# ----------------------------------------------------------------------------------------------
# The task family.
# ----------------------------------------------------------------------------------------------


class Race(tasks_lib.TaskFamily):
  """RACE: one score per (article, question + option) input, softmax CE over the 4 options."""

  predict_mode = "choice"
  predict_fields = ("article", "question", "options")
  plain_text_field = None

  def build_model(self, model_config, task):
    from albert_jax.model import modeling  # pylint: disable=g-import-not-at-top
    return modeling.AlbertForMultipleChoice(model_config), "classifier"

  def input_shape(self, task, max_seq_length):
    return (NUM_CHOICES, max_seq_length)

  load_split = staticmethod(load_split)
  metric_names = staticmethod(metric_names)
  evaluate = staticmethod(evaluate)
  write_outputs = staticmethod(write_outputs)

  def parse_predict_input(self, example, where):
    example = super().parse_predict_input(example, where)
    if not isinstance(example["options"], list) or len(example["options"]) != NUM_CHOICES:
      raise tasks_lib.InputError(f"{where}: 'options' must be a list of {NUM_CHOICES} options")
    return example

  def predict(self, task, max_seq_length, tokenizer, examples, run, options):
    """Article + question + 4 options -> the option letter and probabilities."""
    rows = []
    for ex in examples:
      article = {"article": ex["article"], "questions": [ex["question"]],
                 "options": [ex["options"]], "answers": ["A"]}  # the answer is not used
      try:
        rows += examples_from_article(article, "unknown", tokenizer, ex["where"])
      except ValueError as e:
        raise tasks_lib.InputError(str(e)) from None
    for ex, row in zip(examples, rows):
      context = len(tokenizer.encode(row.context))
      length = context + max(len(qa) for qa in tokenizer.encode_batch(list(row.endings))) + 3
      if length > max_seq_length and not options.truncate:
        raise tasks_lib.too_long(ex["where"], length, max_seq_length, "the task's max_seq_length")
    arrays, _ = featurize(rows, tokenizer, max_seq_length, task.max_qa_length)
    out = []
    for ex, probs in zip(examples, tasks_lib.softmax(run(arrays)["logits"].astype(np.float64))):
      best = int(probs.argmax())
      out.append({"answer": _LETTERS[best], "option": ex["options"][best],
                  "probabilities": [float(p) for p in probs]})
    return out

  def format_prediction(self, example, result):
    return [f"{result['answer']}\t{result['option']}"]

  def hf_architecture(self, task, head, outputs, has_pooler):
    from albert_jax.interop import hf_classes  # pylint: disable=g-import-not-at-top
    if outputs != 1:
      raise ValueError(f"params head 'classifier' has {outputs} outputs; a multiple-choice "
                       "(RACE) head scores each choice with 1")
    return hf_classes.HfArchitecture("AlbertForMultipleChoice", head)


FAMILY = Race()
