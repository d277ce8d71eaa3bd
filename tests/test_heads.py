"""Task heads: classification/regression, multiple choice, SQuAD v1 spans and the SQuAD v2 head."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.model import modeling

CFG = dict(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=20, max_position_embeddings=16)


def ids_and_mask(batch=2, length=8, seed=0):
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(0, 50, (batch, length)))
  mask = jnp.ones((batch, length), jnp.int32).at[1, 6:].set(0)
  return ids, mask


@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_and_dropout(num_labels):
  model = modeling.AlbertForSequenceClassification(CFG, num_labels=num_labels)
  ids, mask = ids_and_mask()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  assert params["classifier"]["classifier"]["kernel"].shape == (16, num_labels)
  out = model.apply({"params": params}, ids, mask)
  assert out["logits"].shape == (2, num_labels)
  # Classifier dropout (0.1) acts only in training.
  train = [model.apply({"params": params}, ids, mask, deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(s)})["logits"] for s in (1, 2)]
  assert not np.allclose(train[0], train[1])
  np.testing.assert_array_equal(out["logits"], model.apply({"params": params}, ids, mask)["logits"])


def test_multiple_choice_scores_each_choice_independently():
  model = modeling.AlbertForMultipleChoice(CFG)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, 50, (2, 4, 8)))
  types = jnp.zeros_like(ids).at[..., 5:].set(1)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  logits = model.apply({"params": params}, ids, None, types)["logits"]
  assert logits.shape == (2, 4)
  # Choice c of example b scored alone (as a batch of one example with one choice) agrees.
  one = model.apply({"params": params}, ids[1:2, 2:3], None, types[1:2, 2:3])["logits"]
  np.testing.assert_allclose(one[0, 0], logits[1, 2], atol=1e-5)


def test_squad_v1_span_logits():
  model = modeling.AlbertForQuestionAnswering(CFG)
  ids, mask = ids_and_mask()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  assert "pooler" not in params["albert"]
  out = model.apply({"params": params}, ids, mask)
  seq = out["sequence_output"]
  kernel, bias = params["qa_outputs"]["dense"]["kernel"], params["qa_outputs"]["dense"]["bias"]
  np.testing.assert_allclose(out["start_logits"], seq @ kernel[:, 0] + bias[0], atol=1e-5)
  np.testing.assert_allclose(out["end_logits"], seq @ kernel[:, 1] + bias[1], atol=1e-5)


def test_squad_v2_head_train_and_inference_agree():
  model = modeling.AlbertForQuestionAnsweringV2(CFG, start_n_top=3, end_n_top=2)
  ids, mask = ids_and_mask(length=10)
  p_mask = jnp.zeros((2, 10)).at[:, 1:4].set(1.0)  # question tokens and [SEP]s can't be answers
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids, p_mask=p_mask)["params"])
  infer = model.apply({"params": params}, ids, mask, p_mask=p_mask)
  assert infer["start_top_index"].shape == (2, 3)
  assert infer["end_top_index"].shape == (2, 3, 2) and infer["cls_logits"].shape == (2,)
  assert not np.isin(np.asarray(infer["start_top_index"]), [1, 2, 3]).any()
  assert not np.isin(np.asarray(infer["end_top_index"]), [1, 2, 3]).any()

  # Teacher forcing with the k-th beam start gives that beam's end distribution.
  for k in range(3):
    start = infer["start_top_index"][:, k]
    train = model.apply({"params": params}, ids, mask, p_mask=p_mask, start_positions=start)
    np.testing.assert_allclose(jnp.take_along_axis(train["start_log_probs"], start[:, None], 1)[
        :, 0], infer["start_top_log_probs"][:, k], atol=1e-5)
    top = jax.lax.top_k(train["end_log_probs"], 2)
    np.testing.assert_allclose(top[0], infer["end_top_log_probs"][:, k], atol=1e-5)
    np.testing.assert_array_equal(top[1], infer["end_top_index"][:, k])
    np.testing.assert_allclose(train["cls_logits"], infer["cls_logits"], atol=1e-5)
  assert "bias" not in params["squad"]["answer_class_dense_1"]
  assert params["squad"]["answer_class_dense_0"]["kernel"].shape == (32, 16)
