"""SQuAD v1.1 / v2.0: readers (official JSON or tfds `squad/v1.1|v2.0`) and the official ALBERT
featurization (`squad_utils.convert_examples_to_features` of google-research/albert); the
scoring is squad_metrics.py, the decoding squad_postprocess.py.

- The question keeps its first `max_query_length` pieces; the paragraph is cut into windows of
  max_seq_length - |q| - 3 pieces starting every `doc_stride` pieces:
  `[CLS] q [SEP] window [SEP]`, segment 0 for [CLS]/q/[SEP], 1 for the window and its [SEP].
  `p_mask` is 1 on the question, both [SEP] and padding, 0 on [CLS] and the window.
- Character <-> piece alignment (squad_alignment.py): the official banded longest-common-
  subsequence; a paragraph matching less than 80% of its characters is dropped ("MISMATCH
  DETECTED" in the official log). Alignments are cached per paragraph.
- Training windows that do not contain the answer, and unanswerable questions, point at [CLS]
  (start = end = 0) and are kept. A token's "max context" window is the one where
  min(left, right context) + 0.01 * window length is largest.

Local files: `task.data_dir` holds the official `train-v1.1.json`/`dev-v1.1.json` (or `-v2.0`).
Splits: train, validation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

from absl import logging
import ml_collections
import numpy as np

from albert_jax import fileio
from albert_jax.tasks import squad_alignment
from albert_jax.tasks.squad_alignment import Alignment, align_paragraph
from albert_jax.tasks import squad_postprocess
from albert_jax.tasks import squad_metrics
from albert_jax import tasks as tasks_lib

VERSIONS = ("1.1", "2.0")
_FILES = {"train": "train-v{}.json", "validation": "dev-v{}.json"}


@dataclasses.dataclass(frozen=True)
class Example:
  qas_id: str
  question: str
  context: str
  answer_text: str            # training answer ("" when unanswerable or not training)
  start_char: int             # its character offset in `context` (-1 when none)
  is_impossible: bool
  gold_answers: tuple[str, ...]  # every gold answer text (evaluation; () = unanswerable)


@dataclasses.dataclass(frozen=True)
class FeatureMeta:
  """What decoding needs about one window (official InputFeatures, minus the model inputs)."""

  example_index: int
  doc_offset: int             # position of the window's first piece (= |q| + 2)
  tok_start_to_orig: np.ndarray  # [window] first paragraph character of each piece
  tok_end_to_orig: np.ndarray    # [window] last paragraph character of each piece
  max_context: np.ndarray        # [window] bool: this window is the piece's max-context window


# ----------------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------------


def _need(obj: Any, key: str, where: str, kind: type) -> Any:
  if not isinstance(obj, dict) or key not in obj:
    raise ValueError(f"{where}: missing field {key!r}")
  if not isinstance(obj[key], kind):
    names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
    raise ValueError(f"{where}: field {key!r} must be a {names}, got {type(obj[key]).__name__}")
  return obj[key]


def _example(qas_id, question, context, answers, is_impossible, is_training, where) -> Example:
  texts = tuple(a["text"] for a in answers)
  if not is_training:
    return Example(qas_id, question, context, "", -1, is_impossible, texts)
  if is_impossible:
    return Example(qas_id, question, context, "", -1, True, ())
  if len(answers) != 1:
    # Official: "For training, each question should have exactly 1 answer."
    raise ValueError(f"{where}: a training question needs exactly 1 answer, got {len(answers)}")
  text, start = answers[0]["text"], int(answers[0]["answer_start"])
  if not text or start < 0 or start + len(text) > len(context):
    raise ValueError(f"{where}: answer {text!r} at character {start} does not lie inside the "
                     f"{len(context)}-character context")
  return Example(qas_id, question, context, text, start, False, texts)


def read_json(path: str, is_training: bool) -> list[Example]:
  """Examples of an official SQuAD JSON file (v1.1 or v2.0), with errors naming the entry."""
  if not fileio.isfile(path):
    raise FileNotFoundError(f"SQuAD file {path} not found (config field 'task.data_dir')")
  try:
    data = json.loads(fileio.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"SQuAD file {path} is not valid JSON: {e}") from None
  examples = []
  for a, article in enumerate(_need(data, "data", path, list)):
    for p, paragraph in enumerate(_need(article, "paragraphs", f"{path}: data[{a}]", list)):
      where_p = f"{path}: data[{a}].paragraphs[{p}]"
      context = _need(paragraph, "context", where_p, str)
      for q, qa in enumerate(_need(paragraph, "qas", where_p, list)):
        where = f"{where_p}.qas[{q}]"
        qas_id = str(_need(qa, "id", where, (str, int)))
        answers = _need(qa, "answers", f"{where} (id {qas_id})", list)
        for i, ans in enumerate(answers):
          _need(ans, "text", f"{where}.answers[{i}]", str)
          _need(ans, "answer_start", f"{where}.answers[{i}]", int)
        examples.append(_example(qas_id, _need(qa, "question", where, str), context, answers,
                                 bool(qa.get("is_impossible", False)), is_training,
                                 f"{where} (id {qas_id})"))
  return examples


def read_examples(task: ml_collections.ConfigDict, split: str, is_training: bool) -> list[Example]:
  if task.version not in VERSIONS:
    raise ValueError(f"config field 'task.version'={task.version!r}: allowed {VERSIONS}")
  if split not in _FILES:
    raise ValueError(f"SQuAD: unknown split {split!r}; allowed: {sorted(_FILES)}")
  if task.source == "files":
    return read_json(os.path.join(task.data_dir, _FILES[split].format(task.version)), is_training)
  if task.source != "tfds":
    raise ValueError(f"config field 'task.source'={task.source!r}: allowed tfds, files")
  examples = []
  for ex in tasks_lib.tfds_examples(f"squad/v{task.version}", split, task.tfds_data_dir):
    answers = [{"text": t, "answer_start": s}
               for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])]
    examples.append(_example(ex["id"], ex["question"], ex["context"], answers,
                             bool(ex.get("is_impossible", False)), is_training,
                             f"tfds squad/v{task.version} {split} id {ex['id']}"))
  return examples


# ----------------------------------------------------------------------------------------------
# Windows.
# ----------------------------------------------------------------------------------------------


def doc_spans(num_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
  """(start, length) windows of the official sliding window."""
  spans, start = [], 0
  while start < num_tokens:
    length = min(num_tokens - start, max_tokens)
    spans.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, stride)
  return spans


def is_max_context(spans: list[tuple[int, int]], span_index: int, position: int) -> bool:
  """Official `_check_is_max_context`."""
  best_score, best_index = None, None
  for k, (start, length) in enumerate(spans):
    end = start + length - 1
    if position < start or position > end:
      continue
    score = min(position - start, end - position) + 0.01 * length
    if best_score is None or score > best_score:
      best_score, best_index = score, k
  return span_index == best_index


def featurize(examples: Sequence[Example], tokenizer, max_seq_length: int, doc_stride: int,
              max_query_length: int, is_training: bool
              ) -> tuple[dict[str, np.ndarray], list[FeatureMeta], dict[str, int]]:
  """(arrays, per-window metadata, counts) with the official windows and labels."""
  rows: dict[str, list] = {k: [] for k in ("input_ids", "input_mask", "segment_ids", "p_mask",
                                           "start_positions", "end_positions", "is_impossible")}
  meta: list[FeatureMeta] = []
  stats = {"examples": len(examples), "mismatch": 0, "bad_answer_span": 0,
           "answer_text_mismatch": 0, "positive": 0, "negative": 0}
  alignments: dict[str, Optional[Alignment]] = {}
  for example_index, ex in enumerate(examples):
    query = tokenizer.encode(ex.question)[:max_query_length]
    max_tokens = max_seq_length - len(query) - 3
    if max_tokens <= 0:
      raise ValueError(f"config field 'data.max_seq_length'={max_seq_length} leaves no room for "
                       f"the paragraph after a {len(query)}-piece question (max_query_length="
                       f"{max_query_length})")
    if ex.context not in alignments:
      alignments[ex.context] = align_paragraph(ex.context, tokenizer)
    al = alignments[ex.context]
    if al is None:
      stats["mismatch"] += 1
      continue
    tok_start = tok_end = 0
    if is_training and not ex.is_impossible:
      # The official reader trains on the characters at answer_start whatever they are; so do
      # we, but an answer_start that points at other text is counted (and reported).
      if ex.context[ex.start_char:ex.start_char + len(ex.answer_text)] != ex.answer_text:
        stats["answer_text_mismatch"] += 1
      end_char = ex.start_char + len(ex.answer_text) - 1
      tok_start = al.chartok_to_tok[squad_alignment.convert_index(al.orig_to_chartok, ex.start_char, None, True)]
      tok_end = al.chartok_to_tok[squad_alignment.convert_index(al.orig_to_chartok, end_char, None, False)]
      if tok_start > tok_end:  # the official code asserts here
        stats["bad_answer_span"] += 1
        continue
    spans = doc_spans(len(al.piece_ids), max_tokens, doc_stride)
    for k, (start, length) in enumerate(spans):
      ids = [tokenizer.cls_id] + query + [tokenizer.sep_id] + al.piece_ids[start:start + length]
      ids.append(tokenizer.sep_id)
      doc_offset = len(query) + 2
      segments = [0] * doc_offset + [1] * (length + 1)
      p_mask = [0] + [1] * (len(query) + 1) + [0] * length + [1]
      ids, mask = tasks_lib.pad_ids(ids, max_seq_length)
      pad = max_seq_length - len(segments)
      impossible = ex.is_impossible
      start_pos = end_pos = 0
      if is_training and not impossible:
        if tok_start >= start and tok_end <= start + length - 1:
          start_pos, end_pos = tok_start - start + doc_offset, tok_end - start + doc_offset
        else:
          impossible = True  # the window misses the answer: point at [CLS], keep it
      stats["negative" if impossible else "positive"] += 1
      rows["input_ids"].append(ids)
      rows["input_mask"].append(mask)
      rows["segment_ids"].append(segments + [0] * pad)
      rows["p_mask"].append(p_mask + [1] * pad)
      rows["start_positions"].append(start_pos)
      rows["end_positions"].append(end_pos)
      rows["is_impossible"].append(int(impossible))
      meta.append(FeatureMeta(
          example_index=example_index, doc_offset=doc_offset,
          tok_start_to_orig=np.asarray(al.tok_start_to_orig[start:start + length], np.int32),
          tok_end_to_orig=np.asarray(al.tok_end_to_orig[start:start + length], np.int32),
          max_context=np.asarray([is_max_context(spans, k, start + t) for t in range(length)])))
  seq_keys = ("input_ids", "input_mask", "segment_ids", "p_mask")
  arrays = {k: np.asarray(v, np.int32).reshape((-1, max_seq_length) if k in seq_keys else (-1,))
            for k, v in rows.items()}
  return arrays, meta, stats


def load_split(task: ml_collections.ConfigDict, tokenizer, split: str, is_training: bool,
               max_seq_length: int) -> tasks_lib.Split:
  examples = read_examples(task, split, is_training)
  examples = tasks_lib.limit(examples, task.max_train_examples if is_training
                             else task.max_eval_examples)
  if not examples:
    raise ValueError(f"SQuAD v{task.version}: split {split!r} has no examples")
  arrays, meta, stats = featurize(examples, tokenizer, max_seq_length, task.doc_stride,
                                  task.max_query_length, is_training)
  if not meta:
    raise ValueError(f"SQuAD v{task.version}: split {split!r} gave no features ({stats})")
  stats["rows"] = len(meta)
  _report_skipped(f"SQuAD v{task.version} {split}", stats)
  return tasks_lib.Split(name=split, arrays=arrays, meta=(examples, meta),
                         has_labels=not is_training, stats=stats)


_SKIP_REASONS = {
    "mismatch": "skipped: the paragraph's pieces could not be aligned with its characters",
    "bad_answer_span": "skipped: the answer's pieces end before they start",
    "answer_text_mismatch": "trained on as the official code does: the text at answer_start "
                            "is not the answer's text",
}


def _report_skipped(name: str, stats: dict[str, int]) -> None:
  """One warning per kind of skipped or doubtful example, with its count."""
  for key, reason in _SKIP_REASONS.items():
    if stats[key]:
      logging.warning("%s: %d of %d question(s) %s", name, stats[key], stats["examples"], reason)


# ----------------------------------------------------------------------------------------------
# Scoring and outputs.
# ----------------------------------------------------------------------------------------------


def evaluate(task: ml_collections.ConfigDict, split: tasks_lib.Split,
             outputs: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, Any]]:
  """Official decoding and scoring: v1 EM/F1; v2 with the dev-tuned null threshold."""
  examples, meta = split.meta
  gold = _gold_answers(examples)
  if task.version == "1.1":
    preds, nbest = squad_postprocess.v1_predictions(
        examples, meta, outputs["start_logits"], outputs["end_logits"], task.n_best_size,
        task.max_answer_length)
    metrics = squad_metrics.squad_v1_evaluate(gold, preds)
    return metrics, {"predictions": preds, "nbest": nbest}
  best, null_scores, nbest = squad_postprocess.v2_predictions(
      examples, meta, outputs, task.n_best_size, task.max_answer_length)
  metrics, preds = squad_metrics.squad_v2_albert_eval(gold, best, null_scores)
  return metrics, {"predictions": preds, "nbest": nbest, "null_odds": null_scores}


def _gold_answers(examples) -> dict[str, list[str]]:
  return {ex.qas_id: list(ex.gold_answers) for ex in examples}


def metric_names(task: ml_collections.ConfigDict, split: tasks_lib.Split) -> set[str]:
  """The metrics `evaluate` reports for `split`: those of a perfect prediction (v2's HasAns_*
  and NoAns_* only where the split has such questions)."""
  gold = _gold_answers(split.meta[0])
  perfect = {qid: answers[0] if answers else "" for qid, answers in gold.items()}
  if task.version == "1.1":
    return set(squad_metrics.squad_v1_evaluate(gold, perfect))
  null_scores = {qid: 0.0 if answers else 1.0 for qid, answers in gold.items()}
  return set(squad_metrics.squad_v2_albert_eval(gold, perfect, null_scores)[0])


def write_outputs(task: ml_collections.ConfigDict, split: tasks_lib.Split,
                  predictions: dict[str, Any], out_dir: str) -> list[str]:
  """predictions.json, nbest_predictions.json and (v2) null_odds.json, as the official code."""
  prefix = "" if split.name == "validation" else f"{split.name}_"
  paths = []
  for key, name in (("predictions", "predictions.json"), ("nbest", "nbest_predictions.json"),
                    ("null_odds", "null_odds.json")):
    if key in predictions:
      path = os.path.join(out_dir, prefix + name)
      fileio.write_json(path, predictions[key], ensure_ascii=False)
      paths.append(path)
  return paths


# ----------------------------------------------------------------------------------------------
# The task family.
# ----------------------------------------------------------------------------------------------

_V2_OUTPUTS = ("start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index",
               "cls_logits")


def _is_v2(task) -> bool:
  return task.get("version") == "2.0"


class Squad(tasks_lib.TaskFamily):
  """SQuAD: v1.1 a start/end span head; v2.0 the official XLNet-style head with answerability."""

  heads = ("qa_outputs", "squad")
  predict_mode = "qa"
  predict_fields = ("question", "context")
  plain_text_field = None

  def label(self, task):
    return f"squad_v{task.get('version')}"

  def build_model(self, model_config, task):
    from albert_jax.model import modeling  # pylint: disable=g-import-not-at-top
    if task.version == "1.1":
      return modeling.AlbertForQuestionAnswering(model_config), "qa_outputs"
    if task.version == "2.0":
      return modeling.AlbertForQuestionAnsweringV2(model_config, task.start_n_top,
                                                   task.end_n_top), "squad"
    raise ValueError(f"config field 'task.version'={task.version!r}: allowed 1.1, 2.0")

  def batch_spec(self, task, max_seq_length):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    seq = (max_seq_length,)
    spec = {k: (seq, jnp.int32) for k in tasks_lib.INPUTS + ("p_mask",)}
    spec.update({k: ((), jnp.int32) for k in ("start_positions", "end_positions",
                                              "is_impossible")})
    return spec

  def input_keys(self, task):
    return tasks_lib.INPUTS + (("p_mask",) if _is_v2(task) else ())

  def output_keys(self, task):
    return _V2_OUTPUTS if _is_v2(task) else ("start_logits", "end_logits")

  def model_kwargs(self, task, batch, labelled):
    if not _is_v2(task):
      return {}
    # v2.0: the end logits are conditioned on the gold start in training (official).
    return dict(p_mask=batch["p_mask"], **({"start_positions": batch["start_positions"]}
                                           if labelled else {}))

  def per_example_loss(self, task, outputs, batch):
    """v1.1: mean start/end CE; v2.0: (start + end) / 2 + 0.5 * answerability sigmoid CE."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    if _is_v2(task):
      import optax  # pylint: disable=g-import-not-at-top
      start = -jnp.take_along_axis(outputs["start_log_probs"],
                                   batch["start_positions"][:, None], axis=-1)[:, 0]
      end = -jnp.take_along_axis(outputs["end_log_probs"],
                                 batch["end_positions"][:, None], axis=-1)[:, 0]
      cls = optax.sigmoid_binary_cross_entropy(outputs["cls_logits"],
                                              batch["is_impossible"].astype(jnp.float32))
      return (start + end) / 2 + 0.5 * cls, None
    return (tasks_lib.softmax_nll(outputs["start_logits"], batch["start_positions"])
            + tasks_lib.softmax_nll(outputs["end_logits"], batch["end_positions"])) / 2, None

  load_split = staticmethod(load_split)
  metric_names = staticmethod(metric_names)
  evaluate = staticmethod(evaluate)
  write_outputs = staticmethod(write_outputs)

  def predict(self, task, max_seq_length, tokenizer, examples, run, options):
    """The best answer span of each question (v2: "" when the null score wins)."""
    rows = [Example(str(i), ex["question"], ex["context"], "", -1, False, ())
            for i, ex in enumerate(examples)]
    arrays, metas, _ = featurize(rows, tokenizer, max_seq_length, task.doc_stride,
                                 task.max_query_length, False)
    if not metas:  # no paragraph aligned with its pieces (the official MISMATCH): no window
      return [{"answer": "", "has_answer": False, "nbest": []} for _ in rows]
    outputs = run(arrays)
    if not _is_v2(task):  # (a question without a valid span gets the official "empty")
      best, nbest = squad_postprocess.v1_predictions(rows, metas, outputs["start_logits"],
                                                     outputs["end_logits"], task.n_best_size,
                                                     task.max_answer_length)
      return [{"answer": best[r.qas_id], "nbest": nbest[r.qas_id][:3]} for r in rows]
    best, null, nbest = squad_postprocess.v2_predictions(rows, metas, outputs, task.n_best_size,
                                                         task.max_answer_length)
    threshold = options.null_threshold
    if threshold is None:  # the threshold tuned on dev when the best checkpoint was kept
      tuned = [v for k, v in options.best_metrics.items()
               if k.endswith("null_score_diff_threshold")]
      threshold = float(tuned[0]) if tuned else 0.0
    out = []
    for r in rows:
      has = null[r.qas_id] < threshold and bool(best[r.qas_id])
      out.append({"answer": best[r.qas_id] if has else "", "has_answer": has,
                  "null_score": null[r.qas_id], "null_threshold": threshold,
                  "nbest": nbest[r.qas_id][:3]})
    return out

  def format_prediction(self, example, result):
    return [result["answer"] if result["answer"] else "<no answer>"]

  def hf_architecture(self, task, head, outputs, has_pooler):
    from albert_jax.interop import hf_classes  # pylint: disable=g-import-not-at-top
    if head == "squad":
      raise ValueError("the SQuAD v2.0 head 'squad' (the official XLNet-style start/end/"
                       "answerability head of AlbertForQuestionAnsweringV2) has no Hugging Face "
                       "counterpart (transformers' AlbertForQuestionAnswering is the SQuAD v1.1 "
                       "span head); export only the encoder, as AlbertModel, with "
                       "encoder_only=True (--encoder_only)")
    if outputs != 2:
      raise ValueError(f"params head 'qa_outputs' has {outputs} outputs; a span head has 2 "
                       "(start, end)")
    return hf_classes.HfArchitecture("AlbertForQuestionAnswering", head, pooler=False,
                                     num_labels=2)


FAMILY = Squad()
