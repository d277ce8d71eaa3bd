"""Pretraining losses and metrics against NumPy / Hugging Face-style computations; aggregation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.model import modeling
from albert_jax.train import objectives

B, T, P, V = 4, 12, 5, 30


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def make_batch(seed=0):
  """Official-format batch: P prediction slots, padded ones with position 0, id 0, weight 0."""
  rng = np.random.default_rng(seed)
  n_real = np.array([5, 2, 0, 3])  # one sequence without any prediction
  positions = np.zeros((B, P), np.int32)
  ids = np.zeros((B, P), np.int32)
  weights = np.zeros((B, P), np.float32)
  for b, n in enumerate(n_real):
    positions[b, :n] = np.sort(rng.choice(np.arange(1, T), n, replace=False))
    ids[b, :n] = rng.integers(0, V, n)
    weights[b, :n] = 1.0
  return {"input_ids": rng.integers(0, V, (B, T)).astype(np.int32),
          "input_mask": np.ones((B, T), np.int32),
          "segment_ids": (np.arange(T) >= T // 2).astype(np.int32)[None].repeat(B, 0),
          "masked_lm_positions": positions, "masked_lm_ids": ids, "masked_lm_weights": weights,
          "next_sentence_labels": rng.integers(0, 2, (B, 1)).astype(np.int32)}


def make_outputs(batch, seed=1):
  rng = np.random.default_rng(seed)
  all_logits = rng.normal(0, 2, (B, T, V)).astype(np.float32)
  gathered = np.take_along_axis(all_logits, batch["masked_lm_positions"][..., None], axis=1)
  return {"mlm_logits": jnp.asarray(gathered), "sop_logits": jnp.asarray(
      rng.normal(0, 2, (B, 2)).astype(np.float32))}, all_logits


def test_mlm_loss_matches_numpy_with_padding():
  batch = make_batch()
  outputs, _ = make_outputs(batch)
  logits, ids, w = outputs["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"]
  nll = -np.take_along_axis(np_log_softmax(logits), ids[..., None], -1)[..., 0]
  expected = (w * nll).sum() / (w.sum() + 1e-5)
  np.testing.assert_allclose(objectives.masked_lm_loss(logits, ids, w), expected, rtol=1e-6)
  # Padded slots (weight 0) do not matter, whatever their logits and ids.
  noisy = jnp.where(w[..., None] > 0, logits, 1e3 * jnp.arange(V, dtype=jnp.float32))
  for pad_id in ((ids + 7) % V, np.full_like(ids, -100)):  # any id, even HF's ignore label
    noisy_ids = np.where(w > 0, ids, pad_id)
    np.testing.assert_allclose(objectives.masked_lm_loss(noisy, noisy_ids, w), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(objectives.masked_lm_accuracy(noisy, noisy_ids, w),
                               objectives.masked_lm_accuracy(logits, ids, w))


def hf_style_loss(all_logits, batch):
  """All-position CE with -100 ignore labels on the same masks (HF AlbertForPreTraining)."""
  labels = np.full((B, T), -100)
  for b in range(B):
    for pos, label, weight in zip(batch["masked_lm_positions"][b], batch["masked_lm_ids"][b],
                                  batch["masked_lm_weights"][b]):
      if weight:
        labels[b, pos] = label
  keep = labels != -100
  log_probs = np_log_softmax(all_logits)[keep]
  return -np.take_along_axis(log_probs, labels[keep][:, None], -1).mean(), keep.sum(), labels


def test_mlm_loss_equals_hf_style_ignore_index():
  batch = make_batch()
  outputs, all_logits = make_outputs(batch)
  hf, count, labels = hf_style_loss(all_logits, batch)
  ours = objectives.masked_lm_loss(outputs["mlm_logits"], batch["masked_lm_ids"],
                                   batch["masked_lm_weights"])
  # Same sum over the same predictions; only the official +1e-5 in the denominator differs.
  np.testing.assert_allclose(float(ours) * (count + 1e-5) / count, hf, rtol=1e-6)
  torch = pytest.importorskip("torch")
  ce = torch.nn.functional.cross_entropy(torch.tensor(all_logits).reshape(-1, V),
                                         torch.tensor(labels).reshape(-1), ignore_index=-100)
  np.testing.assert_allclose(float(ce), hf, rtol=1e-6)


def test_model_gathered_loss_equals_all_positions():
  # The model's gathered MLM logits (official) against its all-position logits (HF).
  cfg = dict(vocab_size=V, embedding_size=8, hidden_size=16, num_attention_heads=4,
             intermediate_size=20, max_position_embeddings=T, num_hidden_layers=2)
  model = modeling.AlbertForPreTraining(cfg)
  batch = make_batch()
  args = (jnp.asarray(batch["input_ids"]), jnp.asarray(batch["input_mask"]),
          jnp.asarray(batch["segment_ids"]))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), *args)["params"]
  apply = lambda pos: model.apply({"params": params}, *args, masked_positions=pos)
  # One compilation for both calls.
  outputs, everywhere = jax.jit(lambda pos: (apply(pos), apply(None)))(
      jnp.asarray(batch["masked_lm_positions"]))
  all_logits = np.asarray(everywhere["mlm_logits"])
  loss, metrics = objectives.pretraining_loss(outputs, batch)
  hf, count, _ = hf_style_loss(all_logits, batch)
  np.testing.assert_allclose(float(metrics["mlm_loss"]) * (count + 1e-5) / count, hf, rtol=1e-5)
  np.testing.assert_allclose(loss, metrics["mlm_loss"] + metrics["sop_loss"], rtol=1e-6)


def test_sentence_loss_and_accuracies():
  batch = make_batch()
  outputs, _ = make_outputs(batch)
  labels = batch["next_sentence_labels"][:, 0]
  logits = np.asarray(outputs["sop_logits"])
  expected = -np_log_softmax(logits)[np.arange(B), labels].mean()
  np.testing.assert_allclose(objectives.sentence_loss(logits, batch["next_sentence_labels"]),
                             expected, rtol=1e-6)
  np.testing.assert_allclose(objectives.sentence_accuracy(logits, labels),
                             (logits.argmax(-1) == labels).mean())
  # MLM accuracy: hand-set argmaxes, 3 of the 10 real predictions right, padded slots right too.
  ids, w = batch["masked_lm_ids"], batch["masked_lm_weights"]
  mlm_logits = np.zeros((B, P, V), np.float32)
  wrong = (ids + 1) % V
  mlm_logits[np.arange(B)[:, None], np.arange(P)[None], wrong] = 5.0
  right = [(0, 0), (0, 3), (3, 2)]
  for b, p in right:
    mlm_logits[b, p, ids[b, p]] = 9.0
  mlm_logits[w == 0, 0] = 1.0
  mlm_logits[w == 0, ids[w == 0]] = 20.0
  assert objectives.masked_lm_accuracy(mlm_logits, ids, w) == pytest.approx(3 / 10)
  assert objectives.masked_lm_accuracy(mlm_logits, ids, 0 * w) == 0.0


def test_pretraining_loss_metrics():
  batch = make_batch()
  outputs, _ = make_outputs(batch)
  loss, m = objectives.pretraining_loss(outputs, batch)
  assert set(objectives.SUM_KEYS) <= set(m)
  assert {"mlm_loss", "sop_loss", "mlm_accuracy", "sop_accuracy"} <= set(m)
  assert float(m["mlm_weight_sum"]) == 10.0 and float(m["sop_count"]) == B
  np.testing.assert_allclose(m["mlm_loss"], objectives.masked_lm_loss(
      outputs["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"]), rtol=1e-7)
  np.testing.assert_allclose(m["mlm_accuracy"], objectives.masked_lm_accuracy(
      outputs["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"]), rtol=1e-7)
  np.testing.assert_allclose(m["sop_loss"], objectives.sentence_loss(
      outputs["sop_logits"], batch["next_sentence_labels"]), rtol=1e-7)
  np.testing.assert_allclose(loss, m["mlm_loss"] + m["sop_loss"], rtol=1e-7)
  assert all(v.dtype == jnp.float32 for v in m.values()) and loss.dtype == jnp.float32
  # bf16 logits: still float32 losses.
  half = {k: v.astype(jnp.bfloat16) for k, v in outputs.items()}
  assert objectives.pretraining_loss(half, batch)[0].dtype == jnp.float32


def test_inter_sentence_loss_switch():
  batch = make_batch()
  outputs, _ = make_outputs(batch)
  sop, m_sop = objectives.pretraining_loss(outputs, batch, "sop")
  nsp, _ = objectives.pretraining_loss(outputs, batch, "nsp")
  assert float(nsp) == float(sop)
  none, m_none = objectives.pretraining_loss(outputs, batch, "none")
  np.testing.assert_allclose(none, m_none["mlm_loss"], rtol=1e-7)
  np.testing.assert_allclose(m_none["sop_accuracy"], m_sop["sop_accuracy"])  # still reported
  grad = jax.grad(lambda o: objectives.pretraining_loss(o, batch, "none")[0])(outputs)
  assert not np.any(np.asarray(grad["sop_logits"]))
  with pytest.raises(ValueError, match="inter_sentence_loss"):
    objectives.pretraining_loss(outputs, batch, "mlm_only")


def test_all_position_logits_are_rejected():
  batch = make_batch()
  outputs, all_logits = make_outputs(batch)
  with pytest.raises(ValueError, match="masked_positions"):
    objectives.pretraining_loss({**outputs, "mlm_logits": jnp.asarray(all_logits)}, batch)


@jax.jit
def loss_and_grad(outputs, batch, normalizers):
  loss_fn = lambda o: objectives.pretraining_loss(o, batch, normalizers=normalizers)
  (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(outputs)
  return loss, metrics, grad


def test_exact_aggregation_across_half_batches():
  batch = {k: jnp.asarray(v) for k, v in make_batch().items()}
  outputs, _ = make_outputs(batch)
  full_loss, full, full_grad = loss_and_grad(outputs, batch, objectives.loss_normalizers(batch))
  # The full batch's own normalizers are what pretraining_loss uses by default.
  np.testing.assert_allclose(objectives.pretraining_loss(outputs, batch)[0], full_loss, rtol=1e-7)
  take = lambda tree, s: {k: v[s] for k, v in tree.items()}
  halves = [slice(0, 2), slice(2, B)]  # uneven: 7 vs 3 real predictions
  norm = objectives.loss_normalizers(batch)
  parts = [loss_and_grad(take(outputs, s), take(batch, s), norm) for s in halves]
  sums = {k: parts[0][1][k] + parts[1][1][k] for k in objectives.SUM_KEYS}
  merged = objectives.metrics_from_sums(sums)
  for key in ("mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy") + objectives.SUM_KEYS:
    np.testing.assert_allclose(merged[key], full[key], rtol=1e-6, err_msg=key)
  # With the full batch's normalizers, microbatch losses and gradients add up exactly ...
  np.testing.assert_allclose(parts[0][0] + parts[1][0], full_loss, rtol=1e-6)
  for key in outputs:
    np.testing.assert_allclose(np.concatenate([p[2][key] for p in parts]), full_grad[key],
                               rtol=1e-6, atol=1e-8)
  # ... whereas averaging microbatch losses with their own denominators would not.
  own = [loss_and_grad(take(outputs, s), take(batch, s),
                       objectives.loss_normalizers(take(batch, s)))[0] for s in halves]
  assert abs(float(own[0] + own[1]) / 2 - float(full_loss)) > 1e-3


def test_eval_padding_rows_are_left_out():
  """Padded eval batches (`example_mask` 0; label 0, MLM weights 0) count only their real rows."""
  batch = make_batch()
  outputs, _ = make_outputs(batch)
  real = [0, 1, 3]
  padded = {**batch, "example_mask": np.array([1, 1, 0, 1], np.int32),
            "next_sentence_labels": np.where(np.arange(B)[:, None] == 2, 0,
                                             batch["next_sentence_labels"])}
  _, got = objectives.pretraining_loss(outputs, padded)
  only_real = {k: v[real] for k, v in batch.items()}
  _, want = objectives.pretraining_loss({k: v[np.array(real)] for k, v in outputs.items()},
                                        only_real)
  for key in ("sop_loss", "sop_accuracy", "sop_count", "mlm_loss", "mlm_accuracy"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
  assert float(got["sop_count"]) == 3
  # A batch that is all padding contributes nothing (and no NaN).
  empty = {**padded, "example_mask": np.zeros(B, np.int32),
           "masked_lm_weights": np.zeros((B, P), np.float32)}
  loss, m = objectives.pretraining_loss(outputs, empty, normalizers=objectives.loss_normalizers(
      empty))
  assert float(m["sop_count"]) == 0 and np.isfinite(float(loss))


def test_baselines_from_known_counts():
  """Most frequent masked token and majority sentence label, over two batches, padding left out."""
  w = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  first = {"masked_lm_ids": np.array([[7, 7, 3, 7], [7, 2, 9, 9]]), "masked_lm_weights": w,
           "next_sentence_labels": np.array([[1], [0]]), "example_mask": np.array([1, 1])}
  # The second batch's last row pads the eval set: its ids (9, 9) and label 0 must not count.
  second = {"masked_lm_ids": np.array([[3, 3, 0, 0], [9, 9, 9, 9]]),
            "masked_lm_weights": np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.float32),
            "next_sentence_labels": np.array([[1], [0]]), "example_mask": np.array([1, 0])}
  counts = [objectives.baseline_counts(b, vocab_size=V) for b in (first, second)]
  total = {k: counts[0][k] + counts[1][k] for k in counts[0]}
  np.testing.assert_array_equal(total["sop_label_counts"], [1, 2])
  assert total["mlm_label_counts"][7] == 3 and total["mlm_label_counts"][3] == 3
  assert total["mlm_label_counts"].sum() == 7 and total["mlm_label_counts"][9] == 0
  got = objectives.baselines_from_counts(total)
  assert set(got) == set(objectives.BASELINE_KEYS)
  assert got["mlm_unigram_baseline"] == pytest.approx(3 / 7)  # 7 (or 3): 3 of 7 predictions
  assert got["sop_majority_baseline"] == pytest.approx(2 / 3)  # label 1: 2 of 3 real examples
  # An empty eval set gives 0, not NaN; an id outside the vocabulary is an error naming it.
  empty = objectives.baseline_counts({**second, "masked_lm_weights": 0 * w,
                                      "example_mask": np.zeros(2)}, vocab_size=V)
  assert objectives.baselines_from_counts(empty) == {"mlm_unigram_baseline": 0.0,
                                                     "sop_majority_baseline": 0.0}
  with pytest.raises(ValueError, match="vocab_size"):
    objectives.baseline_counts({**first, "masked_lm_ids": first["masked_lm_ids"] + V}, V)
