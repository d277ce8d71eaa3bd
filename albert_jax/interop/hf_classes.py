"""Which transformers ALBERT class holds a parameter tree, and the config.json fields of its head.

The pretraining heads make AlbertForPreTraining; a fine-tuning head the class its task family
names (`TaskFamily.hf_architecture` in albert_jax/tasks: GLUE AlbertForSequenceClassification,
tagging -TokenClassification, RACE -MultipleChoice, SQuAD v1.1 -QuestionAnswering). GLUE, RACE and
tagging heads are all called `classifier`: only the fine-tuning task (`best/task.json`) tells them
apart and names their labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
from flax import traverse_util
import numpy as np

from albert_jax.interop import names

Params = dict[str, Any]

# Our top-level trees besides the encoder 'albert' and the task families' heads.
PRETRAINING_TREES = ("predictions", "sop_classifier")


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
  from albert_jax import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  params = nn.unbox(params)
  trees = set(params)
  if "albert" not in trees:
    raise ValueError(f"params have no 'albert' encoder tree (top-level trees: {sorted(trees)})")
  families = tasks_lib.families()
  task_heads = {h for f in families.values() for h in f.heads}
  known = {"albert", *PRETRAINING_TREES, *task_heads}
  if trees - known:
    raise ValueError(f"params have top-level tree(s) {sorted(trees - known)} that no Hugging Face "
                     f"ALBERT class holds (known trees: {sorted(known)})")
  has_pooler = "pooler" in params["albert"]
  if encoder_only:
    return HfArchitecture("AlbertModel", pooler=has_pooler)
  task = dict(task or {})
  family = task.get("family")
  heads_ = sorted(trees & task_heads)
  if len(heads_) > 1:
    raise ValueError(f"params have several fine-tuning heads {heads_}; a Hugging Face model "
                     "holds one")
  if not heads_:
    if family:
      raise ValueError(f"the task says the checkpoint is fine-tuned (task family {family!r}), "
                       f"but params have no fine-tuning head (top-level trees: {sorted(trees)})")
    return HfArchitecture("AlbertForPreTraining")
  head = heads_[0]
  outputs = None
  if head in names.TASK_HEADS:  # the heads with a Hugging Face layout
    kernel_path = (head, names.TASK_HEADS[head][1], "kernel")
    kernel = traverse_util.flatten_dict(params).get(kernel_path)
    if kernel is None:
      raise ValueError(f"params lack the head kernel {'/'.join(kernel_path)}")
    outputs = int(np.shape(kernel)[-1])
  allowed = sorted(name for name, f in families.items() if head in f.heads)
  if family is None:
    family = _guess_family(head, allowed, outputs, has_pooler)
  elif family not in allowed:
    raise ValueError(f"the task family {family!r} does not match the checkpoint's '{head}' "
                     f"head (a head of {' or '.join(allowed)})")
  return tasks_lib.family(family).hf_architecture(task, head, outputs, has_pooler)


def _guess_family(head: str, allowed: list[str], outputs: Optional[int], has_pooler: bool) -> str:
  """The task family of a head when no task is given, where the tree alone tells it."""
  if len(allowed) == 1:
    return allowed[0]
  # `classifier`: per-token (no pooler) is tagging; several outputs a GLUE classifier.
  if not has_pooler and "tagging" in allowed:
    return "tagging"
  if outputs is not None and outputs > 1 and "glue" in allowed:
    return "glue"
  raise ValueError(f"params head '{head}' has {outputs} output: STS-B regression "
                   "(AlbertForSequenceClassification) or RACE (AlbertForMultipleChoice), "
                   "which only the task tells apart; give it (task.json beside the "
                   "checkpoint, as fine-tuning writes it in best/, or save_hf(task=...))")
