"""fill-mask and the fine-tuned task modes of `predict` on a loaded checkpoint: the examples (parsed
by predict.py, the command line) are encoded as in training and run through a jitted forward pass
in batches of a fixed shape; each task family decodes its outputs (albert_jax/tasks).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import tasks as tasks_lib
from albert_jax.data import tokenization
from albert_jax.inference.loading import InputError, Loaded
from albert_jax.inference.predict import MODES, mode_of
from albert_jax.model import modeling
from albert_jax.train import finetune
from albert_jax.train import warm_start

_MASK = re.compile(re.escape(tokenization.MASK))


def _fit(params: dict, model: nn.Module, init_ids: jax.Array, what: str) -> dict:
  """The checkpoint's parameters for `model`, checked leaf by leaf (shape errors name the leaf)."""
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), init_ids)["params"])
  try:
    return warm_start.fit_params(params, abstract, False)
  except ValueError as e:
    raise InputError(f"the checkpoint does not fit {what}: {e}") from None


@dataclasses.dataclass
class _TaskModel:
  task: ml_collections.ConfigDict
  family: tasks_lib.TaskFamily
  max_seq_length: int              # the fine-tuning data.max_seq_length
  input_keys: tuple[str, ...]
  predict: Any     # jitted (params, batch) -> outputs + row
  params: dict


def _task_model(loaded: Loaded, mode: str) -> _TaskModel:
  """The fine-tuned model of a task mode, or an error saying why the checkpoint is wrong."""
  family, task = MODES[mode], loaded.task
  heads = sorted(k for k in loaded.params if k != "albert")
  if task is None:
    kind = ("a pretraining checkpoint" if "predictions" in loaded.params
            else f"a checkpoint without task information (heads: {heads})")
    raise InputError(f"--checkpoint {loaded.path} is {kind}: `{mode}` needs a model fine-tuned "
                     f"on a {family} task (a fine-tuning workdir or its best/, or pass "
                     "--config=<the fine-tuning config>)")
  if task.family != family:
    raise InputError(f"--checkpoint {loaded.path} was fine-tuned for {task.family} "
                     f"({tasks_lib.task_label(task)}); use `predict "
                     f"{mode_of(task.family)}`, not `predict {mode}`")
  fam = tasks_lib.family(family)
  config = ml_collections.ConfigDict({"model": loaded.model_config.to_config_dict().to_dict(),
                                      "task": task.to_dict()})
  model, head = finetune.build_model(config)
  if head not in loaded.params:
    raise InputError(f"--checkpoint {loaded.path} has no {head!r} head for "
                     f"{tasks_lib.task_label(task)} (its heads: {heads})")
  if not loaded.data or not loaded.data.get("max_seq_length"):
    raise InputError(f"--checkpoint {loaded.path}: its task has no data.max_seq_length (pass "
                     "--config=<the fine-tuning config>)")
  length = loaded.data.max_seq_length
  params = _fit(loaded.params, model, jnp.zeros((1,) + fam.input_shape(task, length), jnp.int32),
                f"a {tasks_lib.task_label(task)} model")
  return _TaskModel(task, fam, length, fam.input_keys(task),
                    jax.jit(finetune.make_predict(config, model)), params)


def _run(tm: _TaskModel, arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Model outputs for every row of `arrays`, in row order (batches of `batch_size`)."""
  arrays = {k: arrays[k] for k in tm.input_keys}
  chunks: dict[str, list] = {}
  for batch in tasks_lib.eval_batches(arrays, batch_size):  # the last batch padded: one shape
    for k, v in tm.predict(tm.params, batch).items():
      chunks.setdefault(k, []).append(np.asarray(v))
  out = {k: np.concatenate(v) for k, v in chunks.items()}
  keep = out.pop("row") >= 0
  return {k: v[keep] for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# Modes. Each takes parsed examples (dicts) and returns one result dict per example.
# ----------------------------------------------------------------------------------------------


def _word_of(pieces: list[str], i: int) -> str:
  """The whole word that piece i belongs to (pieces join until the next "▁" piece)."""
  start = i
  while start > 0 and not pieces[start].startswith(tokenization.SPIECE_UNDERLINE) and (
      not pieces[start - 1].startswith("[")):
    start -= 1
  end = i + 1
  while end < len(pieces) and not pieces[end].startswith((tokenization.SPIECE_UNDERLINE, "[")):
    end += 1
  return "".join(pieces[start:end]).replace(tokenization.SPIECE_UNDERLINE, " ").strip()


def fill_mask(loaded: Loaded, examples: list[dict], top_k: int = 5, batch_size: int = 32,
              max_seq_length: int = 0) -> list[dict]:
  """Top-k pieces (and the whole words they complete) for every [MASK] of every text."""
  tok, cfg = loaded.tokenizer, loaded.model_config
  if "predictions" not in loaded.params:
    what = f"fine-tuned for {loaded.task.family}" if loaded.task else "without an MLM head"
    raise InputError(f"--checkpoint {loaded.path} is {what} (no 'predictions' parameters): "
                     "fill-mask needs a pretraining checkpoint")
  limit = min(max_seq_length or cfg.max_position_embeddings, cfg.max_position_embeddings)
  model = modeling.AlbertForMaskedLM(cfg)
  params = _fit(loaded.params, model, jnp.zeros((1, 2), jnp.int32), "a masked-LM model")
  apply = jax.jit(lambda p, ids, mask, pos: model.apply({"params": p}, ids, mask,
                                                        masked_positions=pos)["mlm_logits"])
  sequences = []
  for ex in examples:
    segments = _MASK.split(ex["text"])
    if len(segments) == 1:
      raise InputError(f"{ex['where']}: no {tokenization.MASK} in the text {ex['text']!r}")
    ids = [tok.cls_id]
    for n, piece_ids in enumerate(tok.encode_batch(segments)):
      ids += ([tok.mask_id] if n else []) + piece_ids
    ids.append(tok.sep_id)
    if len(ids) > limit:
      field = ("model config 'max_position_embeddings'" if limit == cfg.max_position_embeddings
               else "--max_seq_length")
      raise tasks_lib.too_long(ex["where"], len(ids), limit, field,
                               truncatable="max_position" not in field)
    sequences.append(ids)
  results = []
  for start in range(0, len(sequences), batch_size):
    chunk = sequences[start:start + batch_size]
    # Pad to a power of two (and a full batch) so that few shapes are ever compiled.
    length = min(limit, max(16, 1 << (max(map(len, chunk)) - 1).bit_length()))
    masks = [[i for i, t in enumerate(s) if t == tok.mask_id] for s in chunk]
    width = max(map(len, masks))
    ids, mask = np.zeros((2, batch_size, length), np.int32)
    positions = np.zeros((batch_size, width), np.int32)
    for r, (s, m) in enumerate(zip(chunk, masks)):
      ids[r, :len(s)], mask[r, :len(s)] = s, 1
      positions[r, :len(m)] = m
    logits = np.asarray(apply(params, ids, mask, positions))
    for r, (s, m) in enumerate(zip(chunk, masks)):
      probs = tasks_lib.softmax(logits[r, :len(m)].astype(np.float64))
      pieces = tok.convert_ids_to_tokens(s)
      filled, out = list(pieces), []
      for j, position in enumerate(m):
        candidates = []
        for rank, i in enumerate(np.argsort(-probs[j], kind="stable")[:top_k]):
          piece = tok.convert_ids_to_tokens([int(i)])[0]
          word = _word_of(pieces[:position] + [piece] + pieces[position + 1:], position)
          candidates.append({"rank": rank + 1, "piece": piece, "id": int(i),
                             "probability": float(probs[j, i]), "word": word})
        filled[position] = candidates[0]["piece"]
        out.append({"mask": j + 1, "candidates": candidates})
      text = "".join(filled[1:-1]).replace(tokenization.SPIECE_UNDERLINE, " ").strip()
      results.append({"masks": out, "filled": text})
  return results


def predict_task(loaded: Loaded, mode: str, examples: list[dict], batch_size: int = 32,
                 truncate: bool = False, null_threshold: Optional[float] = None) -> list[dict]:
  """A fine-tuned task mode (classify, qa, tag, choice): the task family featurizes the examples
  as in training, the model runs in batches of `batch_size`, the family decodes the outputs.

  truncate: cut inputs that training would truncate (classify, choice) instead of refusing them;
  null_threshold: SQuAD v2's no-answer threshold (None: the one tuned on dev).
  """
  tm = _task_model(loaded, mode)
  options = tasks_lib.PredictOptions(truncate=truncate, null_threshold=null_threshold,
                                     best_metrics=loaded.best_metrics)
  return tm.family.predict(tm.task, tm.max_seq_length, loaded.tokenizer, examples,
                           lambda arrays: _run(tm, arrays, batch_size), options)
