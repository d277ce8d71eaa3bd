"""Fine-tuning on GLUE, SQuAD v1.1/v2.0 and RACE with the official recipes, and sequence labelling
(NER, POS): the task's job (model, head, loss, batches, evaluation) run in the loop that
pretraining runs (train/loop.py: restore, ahead-of-time compilation, logging with throughput,
save-then-evaluate, signals, the non-finite stop).

    python -m albert_jax.finetune --config=configs/finetune_glue.py:task=mnli --workdir=DIR \
        --config.init_from.path=CKPT --config.data.spm_model=30k-clean.model

The job: warm-start the encoder (and the task head when the source has one that fits) from
`init_from` (our checkpoint, a pretraining workdir, Hugging Face or official TF); train with the
official AdamW and warmup + linear decay; every `training.eval_every_steps` evaluate every eval
split with the task's official metrics and keep the best parameters by `task.selection_metric`
(the official protocol: the best dev checkpoint of one run) in `DIR/best` (an albert_jax checkpoint,
usable as `init_from.path`, e.g. MNLI -> RTE). The whole evaluation history is kept in
`DIR/eval_history.json`. At the end the best parameters predict `task.predict_splits`.

Outputs in DIR: `metrics.json` (best/final/per-split metrics, history, data counts, config),
`metrics.jsonl` (every logged train/eval scalar, as in pretraining),
`outputs/` (GLUE `<split>_predictions.tsv` and submission TSVs such as MNLI-m.tsv; SQuAD
predictions.json, nbest_predictions.json, null_odds.json; RACE race_<split>_predictions.jsonl;
tagging <split>_predictions.conll), `best/task.json` (the task config, for albert_jax.predict),
`checkpoints/` (train state, for resuming), `tensorboard/`, `features/` (featurized data cache);
see checkpoint_kinds.py. DIR and the task's input files may be local or in a bucket (gs://...).

Multi-host: every process runs the same command (see albert_jax.train.distributed); each featurizes the
data and feeds the rows of every global batch that its devices hold; process 0 writes the files.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import command_line
from albert_jax import config_utils
from albert_jax.train import distributed
from albert_jax.train import finetune_files
from albert_jax.train import job as job_lib
from albert_jax.train import loop
from albert_jax.train import metrics as metrics_lib
from albert_jax.train import partitioning
from albert_jax.train import step as trainer
from albert_jax.train import warm_start
from albert_jax import tasks as tasks_lib
from albert_jax.data import tokenization
from albert_jax.model.config import ModelConfig

# Architecture fields taken from the warm-start source when `model_from_init` (the recipe keeps
# dropouts, dtypes and remat).
ARCH_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "intermediate_size", "num_hidden_groups", "inner_group_num",
               "hidden_act", "max_position_embeddings", "type_vocab_size", "initializer_range",
               "layer_norm_eps", "use_embedding_projection", "layer_sharing")


# ----------------------------------------------------------------------------------------------
# Model, losses, predictions: all from the task family (albert_jax.tasks).
# ----------------------------------------------------------------------------------------------


def build_model(config: ml_collections.ConfigDict) -> tuple[nn.Module, str]:
  """(task model, name of its head's parameter sub-tree)."""
  return tasks_lib.family(config.task.family).build_model(config.model, config.task)


def build_objective(config: ml_collections.ConfigDict, model: nn.Module) -> trainer.Objective:
  """The family's per-example loss as a weighted mean that accumulates over microbatches: softmax
  CE (GLUE, RACE, tagging per labelled piece), squared error (STS-B), mean start/end CE (SQuAD
  v1), (start + end)/2 + 0.5 * answerability sigmoid CE (SQuAD v2)."""
  task = config.task
  family = tasks_lib.family(task.family)

  def forward(params, batch, rng, deterministic):
    rngs = {} if rng is None else {"dropout": rng}
    return model.apply({"params": params}, *(batch[k] for k in tasks_lib.INPUTS),
                       deterministic=deterministic, rngs=rngs,
                       **family.model_kwargs(task, batch, labelled=True))

  def normalizers(batch):
    # At least 1: a batch of only unlabelled positions (tagging) has loss 0, not NaN.
    count = jnp.sum(family.loss_weights(task, batch))
    return {"count": jnp.maximum(count, 1).astype(jnp.float32)}

  def loss_and_sums(outputs, batch, norm):
    losses, correct = family.per_example_loss(task, outputs, batch)
    weights = family.loss_weights(task, batch)
    sums = {"task_loss_sum": jnp.sum(losses * weights), "count": jnp.sum(weights)}
    if correct is not None:
      sums["correct_sum"] = jnp.sum(correct * weights)
    return sums["task_loss_sum"] / norm["count"], sums

  def metrics(sums):
    out = {"task_loss": sums["task_loss_sum"] / sums["count"]}
    if "correct_sum" in sums:
      out["accuracy"] = sums["correct_sum"] / sums["count"]
    return out

  return trainer.Objective(forward=forward, normalizers=normalizers,
                           loss_and_sums=loss_and_sums, metrics=metrics)


def make_predict(config: ml_collections.ConfigDict, model: nn.Module):
  """(params, batch) -> the outputs decoding needs, plus the batch's `row` ids."""
  task = config.task
  family = tasks_lib.family(task.family)
  keys = family.output_keys(task)

  def predict(params, batch):
    out = model.apply({"params": params}, *(batch[k] for k in tasks_lib.INPUTS),
                      deterministic=True, **family.model_kwargs(task, batch, labelled=False))
    return dict({k: out[k] for k in keys}, row=batch["row"])

  return predict


# ----------------------------------------------------------------------------------------------
# Job.
# ----------------------------------------------------------------------------------------------


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Shapes (without the batch axis) and dtypes of a training batch."""
  return tasks_lib.family(config.task.family).batch_spec(config.task, config.data.max_seq_length)


def build_job(config: ml_collections.ConfigDict,
              devices: Optional[Sequence[Any]] = None) -> job_lib.Job:
  """The Job of a fine-tuning config on `devices` (default: all of this run's devices)."""
  model, head = build_model(config)
  spec = batch_spec(config)
  *sequences, seq_len = spec["input_ids"][0]
  flops = metrics_lib.finetuning_flops_per_example(ModelConfig.from_any(config.model), seq_len,
                                                   int(np.prod(sequences)))
  return job_lib.build(config, model, build_objective(config, model), spec, flops, head=head,
                       devices=devices)


def resolve_model_config(config: ml_collections.ConfigDict,
                         source_cfg: Optional[ModelConfig]) -> ml_collections.ConfigDict:
  """A copy of `config` whose architecture comes from the warm-start source (`model_from_init`)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if source_cfg is not None and config.model_from_init:
    for field in ARCH_FIELDS:
      config.model[field] = getattr(source_cfg, field)
  return config


# Evaluation metrics where lower is better; the best evaluation is kept by the highest value.
_LOWER_IS_BETTER = ("mse", "task_loss")


def validate(config: ml_collections.ConfigDict, tokenizer, num_processes: int) -> None:
  """Fails before any compilation on settings that cannot work, naming the field."""
  task = config.task
  job_lib.validate_training(config, num_processes, evaluates_batches=True)
  if config.data.max_seq_length > config.model.max_position_embeddings:
    raise ValueError(f"config field 'data.max_seq_length'={config.data.max_seq_length} exceeds "
                     f"'model.max_position_embeddings'={config.model.max_position_embeddings}")
  if tokenizer.vocab_size != config.model.vocab_size:
    source = (f"the checkpoint {config.init_from.path!r}" if config.init_from.path
              else "config field 'model.vocab_size'")
    raise ValueError(
        f"vocabulary mismatch: the tokenizer (config field 'data.spm_model'="
        f"{config.data.spm_model!r}) has {tokenizer.vocab_size} pieces but {source} has vocab_size "
        f"{config.model.vocab_size}; fine-tune with the SentencePiece model the checkpoint was "
        "pretrained with")
  evals = tasks_lib.split_list(task.eval_splits)
  split, _, metric = task.selection_metric.partition("/")
  if split not in evals:
    raise ValueError(f"config field 'task.selection_metric'={task.selection_metric!r} must be "
                     f"'<eval split>/<metric>' with the split one of task.eval_splits={evals}")
  if metric in _LOWER_IS_BETTER:
    raise ValueError(f"config field 'task.selection_metric'={task.selection_metric!r}: the best "
                     "evaluation is the one with the highest value, and lower is better for "
                     f"{metric!r}; select by a score (e.g. pearson, accuracy, f1)")


def check_selection_metric(task: ml_collections.ConfigDict, evals: list[tasks_lib.Split]) -> None:
  """Fails before training when the selection split will not report `task.selection_metric`."""
  split_name, _, metric = task.selection_metric.partition("/")
  split = next(s for s in evals if s.name == split_name)
  names = tasks_lib.family(task.family).metric_names(task, split)
  if metric not in names:
    reported = (f"it reports {sorted(names)}" if names else "it has no labels, so no metrics")
    raise ValueError(f"config field 'task.selection_metric'={task.selection_metric!r}: the "
                     f"{split_name!r} split has no metric {metric!r}; {reported}")


# ----------------------------------------------------------------------------------------------
# Data, evaluation, parameters.
# ----------------------------------------------------------------------------------------------


def predict_split(predict_fn, params, split: tasks_lib.Split, config, mesh, rules
                  ) -> dict[str, np.ndarray]:
  """Model outputs for every row of `split`, in row order (padding rows dropped)."""
  keys = tasks_lib.family(config.task.family).input_keys(config.task)
  arrays = {k: split.arrays[k] for k in keys}
  size = config.training.eval_batch_size
  chunks: dict[str, list] = {}
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules_tuple(rules)):
    for host_batch in tasks_lib.eval_batches(arrays, size, partitioning.host_rows(mesh, size)):
      out = predict_fn(params, partitioning.global_batch(host_batch, mesh))
      for k, v in out.items():  # replicated outputs: every host holds all of them
        chunks.setdefault(k, []).append(np.asarray(v.addressable_data(0)))
  out = {k: np.concatenate(v) for k, v in chunks.items()}
  rows = out.pop("row")
  keep = rows >= 0
  order = np.argsort(rows[keep])
  return {k: v[keep][order] for k, v in out.items()}


def evaluate(config, predict_fn, params, splits, mesh, rules) -> tuple[dict[str, float], dict]:
  """({"<split>/<metric>": value}, {split: predictions}) over `splits`."""
  family = tasks_lib.family(config.task.family)
  metrics, predictions = {}, {}
  for split in splits:
    outputs = predict_split(predict_fn, params, split, config, mesh, rules)
    split_metrics, predictions[split.name] = family.evaluate(config.task, split, outputs)
    metrics.update({f"{split.name}/{k}": float(v) for k, v in split_metrics.items()})
  return metrics, predictions


def warm_params(source: dict, target: Any, init_from, head: str) -> tuple[dict, str]:
  """(params, "source"|"fresh"): the encoder from `source` (strict), the head when it fits."""
  if "albert" not in source:
    raise ValueError(f"config field 'init_from.path'={init_from.path!r}: the source has no "
                     f"'albert' encoder parameters (top-level keys: {sorted(source)})")
  try:
    source_vocab = np.shape(source["albert"]["embeddings"]["word_embeddings"]["embedding"])[0]
  except (KeyError, TypeError):
    source_vocab = None
  target_vocab = target["albert"]["embeddings"]["word_embeddings"]["embedding"].shape[0]
  if source_vocab is not None and source_vocab != target_vocab:
    raise ValueError(f"vocabulary mismatch: the checkpoint {init_from.path!r} has "
                     f"{source_vocab} word embeddings but the tokenizer (config field "
                     f"'data.spm_model') has {target_vocab} pieces")
  params = dict(target)
  params["albert"] = warm_start.fit_params(source["albert"], target["albert"], init_from.group0)
  head_from = "fresh"
  if head in source:
    try:
      params[head] = warm_start.fit_params(source[head], target[head], False)
      head_from = "source"
    except ValueError as e:
      logging.warning("task head %r of the source does not fit this task; initialized fresh "
                      "(%s)", head, e)
  return params, head_from


# ----------------------------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------------------------


class _KeepBest:
  """The evaluation history and the best parameters by `task.selection_metric` (the official
  protocol: the best dev checkpoint of one run), kept in the workdir across resumes; and the
  warm start from `init_from` (which decides where the task head comes from)."""

  def __init__(self, config: ml_collections.ConfigDict, files: finetune_files.RunFiles,
               evals: list[tasks_lib.Split], source: Optional[dict], head: str):
    self.config, self.files, self.evals, self.head = config, files, evals, head
    self.metric = config.task.selection_metric
    self.history: list[dict] = []
    self.best: Optional[dict] = None
    self.head_from = "fresh"
    self._source = source  # the warm-start parameters (host copy), until they are used

  def score(self, entry: dict) -> float:
    return entry["metrics"][self.metric]

  def restored(self, step: int, position: Optional[str]) -> Optional[int]:
    """Reads the history up to the restored `step`; the step of its last evaluation."""
    del position  # the train batches are a function of the step
    self._source = None
    self.history, self.head_from = self.files.read_history(step, self.head_from)
    self.best = max(self.history, key=self.score) if self.history else None
    return self.history[-1]["step"] if self.history else None

  def warm_start(self, params: Any) -> Any:
    params, self.head_from = warm_params(self._source, params, self.config.init_from, self.head)
    self._source = None
    return params

  def after_evaluation(self, step: int, values: dict[str, float], predictions: dict,
                       params: Any) -> None:
    self.history.append({"step": step, "metrics": values})
    self.files.write_history(self.metric, self.head_from, self.history)
    if self.best is None or values[self.metric] > self.score(self.best):
      self.best = self.history[-1]
      self.files.save_best(self.config, params, self.best)
      family = tasks_lib.family(self.config.task.family)
      for split in self.evals:
        self.files.write_outputs(family.write_outputs, self.config.task, split,
                                 predictions[split.name])


def _hooks(config: ml_collections.ConfigDict, job: job_lib.Job, train: tasks_lib.Split,
           evals: list[tasks_lib.Split], predict_fn, keep: _KeepBest) -> loop.Hooks:
  """The task's train batches, its evaluation on every eval split, and the best kept."""
  t = config.training
  # Each process passes the rows of the global batch that its devices hold.
  rows = partitioning.host_rows(job.mesh, t.global_batch_size)
  batch = lambda step: partitioning.global_batch(tasks_lib.train_batch(
      train.arrays, step, t.global_batch_size, config.seed, rows), job.mesh)
  return loop.Hooks(
      batch=batch,
      evaluate=lambda params: evaluate(config, predict_fn, params, evals, job.mesh, job.rules),
      after_evaluation=keep.after_evaluation, restored=keep.restored,
      warm_start=keep.warm_start if config.init_from.path else None,
      checkpoint_at_evaluations=True)



def _prepare(config: ml_collections.ConfigDict, files: finetune_files.RunFiles):
  """(config, tokenizer, warm-start parameters or None): the vocabulary trained when the config
  has none (runlocal), the architecture taken from the warm-start source, the config checked."""
  if not config.data.spm_model:  # runlocal: a vocabulary trained on `data.spm_corpus`
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.spm_model = tasks_lib.train_tokenizer(config.data, config.model.vocab_size,
                                                      files.workdir)
  source_cfg, source = None, None
  if config.init_from.path:
    source_cfg, source = warm_start.read_source(config.init_from)
  config = resolve_model_config(config, source_cfg)
  tokenizer = tokenization.SentencePieceTokenizer(config.data.spm_model,
                                                  **tokenization.text_options(config.data))
  validate(config, tokenizer, jax.process_count())
  return config, tokenizer, source


def _load_splits(config: ml_collections.ConfigDict, tokenizer, files: finetune_files.RunFiles):
  """(train, eval splits, predict splits), featurized or read from the cache."""
  task = config.task
  # Every process featurizes (deterministically) what is not cached; only process 0 stores it.
  load = lambda split, is_training: tasks_lib.load_split(
      task, config.data, tokenizer, split, is_training, files.features_dir, files.is_chief)
  train = load(task.train_split, True)
  evals = [load(s, False) for s in tasks_lib.split_list(task.eval_splits)]
  check_selection_metric(task, evals)
  # Test splits are read now so that a missing or malformed file fails before training.
  tests = [load(s, False) for s in tasks_lib.split_list(task.predict_splits)]
  return train, evals, tests


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) fine-tuning in `workdir` (local or gs://); returns metrics.json's contents.

  On several processes every process runs this with the same config and workdir.
  """
  distributed.maybe_initialize(config.multihost)
  files = finetune_files.RunFiles(workdir)
  config, tokenizer, source = _prepare(config, files)
  task = config.task
  train, evals, tests = _load_splits(config, tokenizer, files)
  job = build_job(config)
  _, shardings = job.abstract_state()
  predict_fn = jax.jit(make_predict(config, job.model),
                       in_shardings=(shardings.params, partitioning.batch_sharding(job.mesh)),
                       out_shardings=partitioning.replicated(job.mesh))
  keep = _KeepBest(config, files, evals, source, job.head)
  del source  # the keeper drops its reference once the warm start is done
  trained = loop.train(job, _hooks(config, job, train, evals, predict_fn, keep), files.workdir)
  if trained.step < config.training.total_steps:
    return {"step": trained.step, "stopped": True}

  # The best parameters predict the test splits.
  params = files.restore_best(trained.state.params, trained.state_shardings.params)
  family = tasks_lib.family(task.family)
  predicted = {}
  for split in tests:
    values, predictions = evaluate(config, predict_fn, params, [split], job.mesh, job.rules)
    predicted[split.name] = values
    files.write_outputs(family.write_outputs, task, split, predictions[split.name])
  best, metric = keep.best, keep.metric
  result = {
      "task": family.label(task), "family": task.family, "model": config.model_name,
      "init_from": config.init_from.path, "head_init": keep.head_from, "workdir": files.workdir,
      "metric": metric, "best": {"step": best["step"], "value": keep.score(best),
                                 "metrics": best["metrics"]},
      "final": keep.history[-1], "predict": predicted, "history": keep.history,
      "outputs": files.list_outputs(),
      "data": {"train": train.stats, **{s.name: s.stats for s in evals + tests}},
      "config": json.loads(config.to_json_best_effort()),
  }
  files.write_metrics(result)
  if files.is_chief:
    print(f"best {metric} {keep.score(best):.4f} at step {best['step']}; metrics: "
          f"{files.metrics_path}", flush=True)
  return result


PROG = "python -m albert_jax.finetune"


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> None:
  """`PROG --config=FILE:ARG --workdir=DIR`; `argv`: the arguments after the program name (None:
  this process's)."""
  config, workdir = config_utils.parse_run_flags(argv, prog=PROG, doc=__doc__,
                                                 example="configs/finetune_glue.py:task=mnli")
  result = run(config, workdir)
  if "best" in result:
    print("outputs:\n  " + "\n  ".join(result["outputs"]))


def cli() -> None:
  """The command line (also reached through the top-level module of the same name)."""
  command_line.run(main)


if __name__ == "__main__":
  cli()
