"""The task-family protocol: every family is found by name and the entry points dispatch to it."""

import ml_collections
import pytest

from albert_jax import tasks
from albert_jax.inference import predict
from albert_jax.model import config as model_config
from albert_jax.train import finetune


def test_families_are_found_by_their_module_name():
  assert sorted(tasks.families()) == ["glue", "race", "squad", "tagging"]
  for name, family in tasks.families().items():
    assert tasks.family(name) is family and isinstance(family, tasks.TaskFamily)
  for bad in ("nope", "metrics", "seqeval", "../glue", 3):
    with pytest.raises(ValueError, match=r"'task.family'=.*allowed: \['glue', 'race', 'squad', "
                                         r"'tagging'\]"):
      tasks.family(bad)


def test_predict_modes_come_from_the_families():
  # The masked-LM modes (fill-mask, generate, score) need no task family.
  assert predict.MODES == {"fill-mask": None, "generate": None, "score": None, "classify": "glue",
                           "qa": "squad", "tag": "tagging", "choice": "race"}


@pytest.mark.parametrize("task, shape, head, label", [
    ({"family": "glue", "name": "rte"}, (32,), "classifier", "rte"),
    ({"family": "race", "max_qa_length": 8}, (4, 32), "classifier", "race"),
    ({"family": "squad", "version": "2.0", "start_n_top": 2, "end_n_top": 2}, (32,), "squad",
     "squad_v2.0"),
    ({"family": "tagging", "name": "ner", "labels": ("O", "B-X", "I-X"), "scoring": "entity"},
     (32,), "classifier", "ner"),
])
def test_model_and_batch_through_the_family(task, shape, head, label):
  config = ml_collections.ConfigDict({"model": model_config.preset("tiny", 2), "task": task,
                                      "data": {"max_seq_length": 32}})
  family = tasks.family(task["family"])
  assert family.input_shape(config.task, 32) == shape
  assert finetune.build_model(config)[1] == head
  assert tasks.task_label(config.task) == label
  spec = finetune.batch_spec(config)
  assert all(spec[k][0] == shape for k in tasks.INPUTS)
  assert set(family.input_keys(config.task)) <= set(spec)
