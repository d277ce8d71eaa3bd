"""Which transformers ALBERT class holds a parameter tree, and the config.json fields of its head.

The pretraining heads make AlbertForPreTraining; a fine-tuning head its HF class (GLUE:
AlbertForSequenceClassification, tagging: -TokenClassification, RACE: -MultipleChoice, SQuAD v1.1:
-QuestionAnswering). GLUE, RACE and tagging heads are all called `classifier`: only the fine-tuning
task (`best/task.json`) tells them apart and names their labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
from flax import traverse_util
import numpy as np

from albert_jax.interop import names

Params = dict[str, Any]

# Our top-level trees besides the encoder 'albert': the pretraining heads, and the fine-tuning
# heads without a Hugging Face class (those with one are checkpoint_names.TASK_HEADS).
PRETRAINING_TREES = ("predictions", "sop_classifier")
_NO_HF_CLASS = {"squad": "the SQuAD v2.0 head 'squad' (the official XLNet-style start/end/"
                         "answerability head of AlbertForQuestionAnsweringV2)"}


@dataclasses.dataclass(frozen=True)
class HfArchitecture:
  """The transformers class `save_hf` writes a tree as, and the config.json fields of its head."""

  name: str                                  # config.json `architectures`, e.g. AlbertModel
  head: Optional[str] = None                 # our top-level tree of its fine-tuning head
  pooler: bool = True                        # the class runs AlbertModel's pooler
  num_labels: Optional[int] = None           # outputs of a classification or span head
  labels: Optional[tuple[str, ...]] = None   # class names for id2label (None: LABEL_i)
  problem_type: Optional[str] = None         # AlbertForSequenceClassification's loss

  @property
  def pretraining(self) -> bool:
    return self.name == "AlbertForPreTraining"


def hf_architecture(params: Params, task: Optional[Mapping[str, Any]] = None, *,
                    encoder_only: bool = False) -> HfArchitecture:
  """The transformers class that holds `params`, from its top-level trees and its task.

  `task` is the task section of the fine-tuning config (the "task" of `best/task.json`): GLUE,
  RACE and tagging heads are all called `classifier`, and only the task tells them apart and names
  their labels. Without it the class is inferred where the tree is unambiguous (no pooler: token
  classification; more than one output: sequence classification). `encoder_only` exports
  AlbertModel whatever heads the tree has.
  """
  params = nn.unbox(params)
  trees = set(params)
  if "albert" not in trees:
    raise ValueError(f"params have no 'albert' encoder tree (top-level trees: {sorted(trees)})")
  known = {"albert", *PRETRAINING_TREES, *names.TASK_HEADS, *_NO_HF_CLASS}
  if trees - known:
    raise ValueError(f"params have top-level tree(s) {sorted(trees - known)} that no Hugging Face "
                     f"ALBERT class holds (known trees: {sorted(known)})")
  has_pooler = "pooler" in params["albert"]
  if encoder_only:
    return HfArchitecture("AlbertModel", pooler=has_pooler)
  task = dict(task or {})
  family = task.get("family")
  heads_ = sorted(trees & ({*names.TASK_HEADS} | {*_NO_HF_CLASS}))
  if len(heads_) > 1:
    raise ValueError(f"params have several fine-tuning heads {heads_}; a Hugging Face model "
                     "holds one")
  if not heads_:
    if family:
      raise ValueError(f"the task says the checkpoint is fine-tuned (task family {family!r}), "
                       f"but params have no fine-tuning head (top-level trees: {sorted(trees)})")
    return HfArchitecture("AlbertForPreTraining")
  head = heads_[0]
  if head in _NO_HF_CLASS:
    raise ValueError(f"{_NO_HF_CLASS[head]} has no Hugging Face counterpart (transformers' "
                     "AlbertForQuestionAnswering is the SQuAD v1.1 span head); export only the "
                     "encoder, as AlbertModel, with encoder_only=True (--encoder_only)")
  kernel_path = (head, names.TASK_HEADS[head][1], "kernel")
  kernel = traverse_util.flatten_dict(params).get(kernel_path)
  if kernel is None:
    raise ValueError(f"params lack the head kernel {'/'.join(kernel_path)}")
  outputs = int(np.shape(kernel)[-1])

  def check_family(allowed: tuple[str, ...]) -> None:
    if family is not None and family not in allowed:
      raise ValueError(f"the task family {family!r} does not match the checkpoint's '{head}' "
                       f"head (a head of {' or '.join(allowed)})")

  if head == "qa_outputs":
    check_family(("squad",))
    if outputs != 2:
      raise ValueError(f"params head 'qa_outputs' has {outputs} outputs; a span head has 2 "
                       "(start, end)")
    return HfArchitecture("AlbertForQuestionAnswering", head, pooler=False, num_labels=2)
  check_family(("glue", "race", "tagging"))
  if family is None:
    if not has_pooler:
      family = "tagging"
    elif outputs > 1:
      family = "glue"
    else:
      raise ValueError("params head 'classifier' has 1 output: STS-B regression "
                       "(AlbertForSequenceClassification) or RACE (AlbertForMultipleChoice), "
                       "which only the task tells apart; give it (task.json beside the "
                       "checkpoint, as fine-tuning writes it in best/, or save_hf(task=...))")
  if family == "glue":
    labels = None
    if task.get("name"):
      from albert_jax.tasks import glue  # pylint: disable=g-import-not-at-top
      labels = glue.get_task(task["name"]).labels  # None: regression (STS-B)
      if outputs != glue.num_labels(task["name"]):
        raise ValueError(f"params head 'classifier' has {outputs} outputs but GLUE task "
                         f"{task['name']!r} has {glue.num_labels(task['name'])}")
    return HfArchitecture("AlbertForSequenceClassification", head, num_labels=outputs,
                          labels=labels, problem_type=("regression" if outputs == 1
                                                       else "single_label_classification"))
  if family == "race":
    if outputs != 1:
      raise ValueError(f"params head 'classifier' has {outputs} outputs; a multiple-choice "
                       "(RACE) head scores each choice with 1")
    return HfArchitecture("AlbertForMultipleChoice", head)
  labels = tuple(task["labels"]) if task.get("labels") else None
  if labels is not None and len(labels) != outputs:
    raise ValueError(f"params head 'classifier' has {outputs} outputs but the task has "
                     f"{len(labels)} labels {list(labels)}")
  return HfArchitecture("AlbertForTokenClassification", head, pooler=False, num_labels=outputs,
                        labels=labels)
