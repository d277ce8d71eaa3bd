"""Pretraining losses and metrics as google-research/albert `run_pretraining.py` computes them.

- MLM: per prediction nll = -log softmax(logits)[label]; loss = sum(w * nll) / (sum(w) + 1e-5) with
  w = masked_lm_weights (1 real, 0 padding), over the P gathered predictions of every sequence.
- Sentence task (SOP, or NSP for the paper's Table 5 ablation): 2-way cross-entropy, mean over the
  batch. Both tasks use the same head and loss; only the data's labels differ. With "none" the
  sentence loss has weight 0, but its loss and accuracy are still reported.
- total = mlm_loss + sentence_loss. Everything is computed in float32.

Metrics come as additive sums (`SUM_KEYS`) plus the ratios derived from them: sum the sums over
microbatches, devices or eval batches, then `metrics_from_sums` gives exactly the metrics of the
concatenated batch. The reported mlm_loss keeps the loss's +1e-5 (the official Estimator eval
metric divides by sum(w) alone: a relative difference below 1e-5 / sum(w)). For gradient
accumulation, `loss_normalizers` of the full batch makes the microbatch losses add up to the
full-batch loss exactly (each microbatch would otherwise divide by its own sum(w)).

Baselines of an eval set (`baseline_counts` per batch, summed, then `baselines_from_counts`): the
accuracy of always predicting the most frequent masked token of the eval set (`mlm_unigram_baseline`)
and of always predicting its majority sentence label (`sop_majority_baseline`): what a model that
ignores its input scores, for reading the accuracies beside.

Batch keys are the official feature names: masked_lm_ids [B, P], masked_lm_weights [B, P],
next_sentence_labels [B] or [B, 1] (label 0 = in order, 1 = swapped / random next).
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

INTER_SENTENCE_LOSSES = ("sop", "nsp", "none")
# Official denominator guard of the MLM loss.
MLM_EPS = 1e-5
# Additive entries of the metrics dict (everything else is derived from these).
SUM_KEYS = ("mlm_loss_sum", "mlm_correct_sum", "mlm_weight_sum", "sop_loss_sum",
            "sop_correct_sum", "sop_count")
BASELINE_KEYS = ("mlm_unigram_baseline", "sop_majority_baseline")


def _nll(logits: Array, labels: Array) -> Array:
  """-log softmax(logits)[label] along the last axis, in float32."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def _correct(logits: Array, labels: Array) -> Array:
  return (jnp.argmax(logits, axis=-1) == labels.astype(jnp.int32)).astype(jnp.float32)


def _mlm_terms(logits: Array, label_ids: Array, weights: Array) -> tuple[Array, Array, Array]:
  """(w, nll, correct) per prediction slot, all [B, P] float32.

  Padding slots (weight 0) get label 0 before the gather: their id may be anything (official 0,
  Hugging Face's -100), and an out-of-range gather would give NaN, which 0 * NaN keeps.
  """
  w = weights.astype(jnp.float32)
  labels = jnp.where(w > 0, label_ids.astype(jnp.int32), 0)
  return w, _nll(logits, labels), _correct(logits, labels)


def masked_lm_loss(logits: Array, label_ids: Array, weights: Array) -> Array:
  """Official weighted MLM loss: logits [B,P,V], label_ids [B,P], weights [B,P] -> scalar."""
  w, nll, _ = _mlm_terms(logits, label_ids, weights)
  return jnp.sum(w * nll) / (jnp.sum(w) + MLM_EPS)


def masked_lm_accuracy(logits: Array, label_ids: Array, weights: Array) -> Array:
  """Weighted argmax accuracy (official `masked_lm_accuracy`); 0 when all weights are 0."""
  w, _, correct = _mlm_terms(logits, label_ids, weights)
  return _safe_div(jnp.sum(w * correct), jnp.sum(w))


def sentence_loss(logits: Array, labels: Array) -> Array:
  """SOP/NSP loss: logits [B,2], labels [B] (or [B,1]) -> mean cross-entropy."""
  return jnp.mean(_nll(logits, _flat_labels(labels, logits)))


def sentence_accuracy(logits: Array, labels: Array) -> Array:
  return jnp.mean(_correct(logits, _flat_labels(labels, logits)))


def _flat_labels(labels: Array, logits: Array) -> Array:
  # The TFRecord feature is [1] per example, so batches arrive as [B, 1].
  return labels.reshape(logits.shape[:-1])


def _safe_div(num: Array, den: Array) -> Array:
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _example_weights(batch: Mapping[str, Array]) -> Array:
  """[B] float32: 1 for real examples, 0 for the rows that pad an eval set (`example_mask`)."""
  labels = batch["next_sentence_labels"].reshape(-1)
  if "example_mask" not in batch:
    return jnp.ones(labels.shape, jnp.float32)
  return batch["example_mask"].reshape(-1).astype(jnp.float32)


def loss_normalizers(batch: Mapping[str, Array]) -> dict[str, Array]:
  """Denominators of the full batch, to pass to `pretraining_loss` for each of its microbatches."""
  return {"mlm": jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)) + MLM_EPS,
          "sop": jnp.sum(_example_weights(batch))}


def metrics_from_sums(sums: Mapping[str, Array]) -> dict[str, Array]:
  """The ratios (losses, accuracies) from summed `SUM_KEYS` entries; keeps the sums too."""
  out = {k: sums[k] for k in SUM_KEYS}
  out["mlm_loss"] = sums["mlm_loss_sum"] / (sums["mlm_weight_sum"] + MLM_EPS)
  out["mlm_accuracy"] = _safe_div(sums["mlm_correct_sum"], sums["mlm_weight_sum"])
  out["sop_loss"] = _safe_div(sums["sop_loss_sum"], sums["sop_count"])
  out["sop_accuracy"] = _safe_div(sums["sop_correct_sum"], sums["sop_count"])
  return out


def pretraining_loss(outputs: Mapping[str, Array], batch: Mapping[str, Array],
                     inter_sentence_loss: str = "sop",
                     normalizers: Optional[Mapping[str, Array]] = None
                     ) -> tuple[Array, dict[str, Array]]:
  """Total official pretraining loss and metrics.

  Args:
    outputs: model outputs with `mlm_logits` [B,P,V] (the model called with
      masked_positions=batch["masked_lm_positions"]) and `sop_logits` [B,2].
    batch: official feature names (`masked_lm_ids`, `masked_lm_weights`, `next_sentence_labels`),
      and `example_mask` [B] on padded eval batches (rows with 0 are left out).
    inter_sentence_loss: "sop" | "nsp" (loss weight 1, same loss; the data decides the labels)
      or "none" (loss weight 0, metrics still reported); the run config's field of that name.
    normalizers: `loss_normalizers` of the full batch when this is a microbatch of it; the
      returned losses then sum over microbatches to the full-batch loss. None: this batch's own.

  Returns:
    (total_loss, metrics): metrics has the `SUM_KEYS` sums and mlm_loss, mlm_accuracy, sop_loss,
    sop_accuracy of this batch (ratios of its own sums, whatever `normalizers`).
  """
  if inter_sentence_loss not in INTER_SENTENCE_LOSSES:
    raise ValueError(f"config field 'inter_sentence_loss': unknown value "
                     f"{inter_sentence_loss!r}; allowed: {INTER_SENTENCE_LOSSES}")
  mlm_logits, ids, weights = (outputs["mlm_logits"], batch["masked_lm_ids"],
                              batch["masked_lm_weights"])
  if mlm_logits.shape[:-1] != ids.shape or weights.shape != ids.shape:
    raise ValueError(f"mlm_logits {mlm_logits.shape} must be [B, P, V] for masked_lm_ids "
                     f"{ids.shape} and masked_lm_weights {weights.shape}; call the model with "
                     "masked_positions=batch['masked_lm_positions']")
  sop_logits = outputs["sop_logits"]
  sop_labels = _flat_labels(batch["next_sentence_labels"], sop_logits)
  w, nll, correct = _mlm_terms(mlm_logits, ids, weights)
  # Padding rows of an eval set have MLM weights 0 already; their sentence label must not count.
  examples = _example_weights(batch)
  sums = {
      "mlm_loss_sum": jnp.sum(w * nll),
      "mlm_correct_sum": jnp.sum(w * correct),
      "mlm_weight_sum": jnp.sum(w),
      "sop_loss_sum": jnp.sum(examples * _nll(sop_logits, sop_labels)),
      "sop_correct_sum": jnp.sum(examples * _correct(sop_logits, sop_labels)),
      "sop_count": jnp.sum(examples),
  }
  if normalizers is None:
    normalizers = {"mlm": sums["mlm_weight_sum"] + MLM_EPS, "sop": sums["sop_count"]}
  mlm = sums["mlm_loss_sum"] / normalizers["mlm"]
  sentence = _safe_div(sums["sop_loss_sum"], normalizers["sop"])  # 0 rows: an all-padding batch
  total = mlm + (0.0 if inter_sentence_loss == "none" else sentence)
  return total, metrics_from_sums(sums)


def baseline_counts(batch: Mapping[str, np.ndarray], vocab_size: int) -> dict[str, np.ndarray]:
  """Host-side label counts of one batch, additive over batches and hosts (NumPy).

  Returns `mlm_label_counts` [vocab_size] (the weight of each masked token id, padding slots left
  out) and `sop_label_counts` [2] (real examples per sentence label, `example_mask` rows left out).
  """
  w = np.asarray(batch["masked_lm_weights"], np.float64).reshape(-1)
  ids = np.asarray(batch["masked_lm_ids"]).reshape(-1)
  real = w > 0
  if real.any() and not 0 <= ids[real].min() <= ids[real].max() < vocab_size:
    raise ValueError(f"masked_lm_ids outside [0, model.vocab_size={vocab_size}) in an eval batch")
  labels = np.asarray(batch["next_sentence_labels"]).reshape(-1)
  examples = (np.asarray(batch["example_mask"], np.float64).reshape(-1)
              if "example_mask" in batch else np.ones(labels.shape, np.float64))
  return {"mlm_label_counts": np.bincount(ids[real], weights=w[real], minlength=vocab_size),
          "sop_label_counts": np.bincount(labels, weights=examples, minlength=2)[:2]}


def baselines_from_counts(counts: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Input-blind accuracies from summed `baseline_counts`: `mlm_unigram_baseline` = share of the
  most frequent masked token, `sop_majority_baseline` = share of the majority label (0 when empty).
  """
  out = {}
  for key, name in (("mlm_label_counts", "mlm_unigram_baseline"),
                    ("sop_label_counts", "sop_majority_baseline")):
    c = np.asarray(counts[key], np.float64)
    out[name] = float(c.max() / c.sum()) if c.sum() > 0 else 0.0
  return out
