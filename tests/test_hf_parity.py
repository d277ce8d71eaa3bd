"""Numerical parity with Hugging Face's PyTorch AlbertForPreTraining, both conversion directions."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from albert_jax import convert, modeling  # noqa: E402

ATOL = 1e-5

# (groups, inner layers, E, H, layers): G > 1, N > 1, E == H and E > H are all covered.
SHAPES = [
    dict(num_hidden_groups=1, inner_group_num=1, embedding_size=8, hidden_size=16,
         num_hidden_layers=2),
    dict(num_hidden_groups=2, inner_group_num=1, embedding_size=8, hidden_size=16,
         num_hidden_layers=4),
    dict(num_hidden_groups=1, inner_group_num=2, embedding_size=8, hidden_size=16,
         num_hidden_layers=3),
    dict(num_hidden_groups=2, inner_group_num=2, embedding_size=16, hidden_size=16,
         num_hidden_layers=2),
    dict(num_hidden_groups=1, inner_group_num=1, embedding_size=24, hidden_size=16,
         num_hidden_layers=3),
]


def hf_model(shape, seed):
  cfg = transformers.AlbertConfig(
      vocab_size=40, num_attention_heads=4, intermediate_size=20, max_position_embeddings=16,
      hidden_act="gelu_new", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      classifier_dropout_prob=0.0, attn_implementation="eager", **shape)
  torch.manual_seed(seed)
  model = transformers.AlbertForPreTraining(cfg).eval()
  # Random values everywhere (LayerNorm gains, biases, ...) so that no tensor can be misplaced
  # without changing the outputs; ties between the decoder and the embeddings are kept.
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.2)
  return model


def inputs(seed, batch=3, length=9, vocab=40):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[1, 5:] = 0  # padded rows keep at least one real key
  mask[2, 2:] = 0
  types = rng.integers(0, 2, (batch, length))
  return ids, mask, types


def hf_outputs(model, ids, mask, types):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(types), output_hidden_states=True)
    base = model.albert(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types))
  return {"sequence_output": base.last_hidden_state.numpy(),
          "pooled_output": base.pooler_output.numpy(),
          "mlm_logits": out.prediction_logits.numpy(), "sop_logits": out.sop_logits.numpy()}


def our_outputs(config, params, ids, mask, types, masked_positions=None):
  out = modeling.AlbertForPreTraining(config).apply(
      {"params": params}, ids, attention_mask=mask, token_type_ids=types,
      masked_positions=masked_positions, deterministic=True)
  return {k: np.asarray(v) for k, v in out.items()}


def assert_close(ours, ref):
  for key in ("sequence_output", "pooled_output", "mlm_logits", "sop_logits"):
    np.testing.assert_allclose(ours[key], ref[key], atol=ATOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "G{num_hidden_groups}N{inner_group_num}"
                         "E{embedding_size}H{hidden_size}L{num_hidden_layers}".format(**s))
def test_load_hf_matches_transformers(shape, tmp_path):
  model = hf_model(shape, seed=sum(shape.values()))
  model.save_pretrained(tmp_path)
  ids, mask, types = inputs(seed=1)
  ref = hf_outputs(model, ids, mask, types)

  config, params = convert.load_hf(str(tmp_path))
  ours = our_outputs(config, params, ids, mask, types)
  assert_close(ours, ref)

  # Gathered MLM positions give the same logits as the all-position output.
  positions = np.array([[0, 3, 4], [1, 1, 2], [8, 0, 0]])
  gathered = our_outputs(config, params, ids, mask, types, positions)["mlm_logits"]
  np.testing.assert_allclose(gathered, np.take_along_axis(ref["mlm_logits"],
                                                          positions[..., None], 1), atol=ATOL)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3]], ids=["G2N1", "G2N2-E==H"])
def test_save_hf_loads_in_transformers(shape, tmp_path):
  config = dict(vocab_size=40, num_attention_heads=4, intermediate_size=20,
                max_position_embeddings=16, hidden_act="gelu", **shape)
  params = convert.init_params(config, seed=3)
  ids, mask, types = inputs(seed=2)
  ours = our_outputs(config, params, ids, mask, types)

  convert.save_hf(config, params, str(tmp_path))
  loaded, info = transformers.AlbertForPreTraining.from_pretrained(
      str(tmp_path), output_loading_info=True, attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert_close(ours, hf_outputs(loaded.eval(), ids, mask, types))
  assert json.load(open(os.path.join(tmp_path, "config.json")))["hidden_act"] == "gelu_new"


def test_unshared_layers_export_as_one_hf_group_per_layer(tmp_path):
  config = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=4,
                num_hidden_groups=2, num_attention_heads=4, intermediate_size=20,
                max_position_embeddings=16, layer_sharing="none")
  params = convert.init_params(config, seed=4)
  ids, mask, types = inputs(seed=3)
  convert.save_hf(config, params, str(tmp_path))
  loaded = transformers.AlbertForPreTraining.from_pretrained(str(tmp_path),
                                                             attn_implementation="eager")
  assert loaded.config.num_hidden_groups == 4
  assert_close(our_outputs(config, params, ids, mask, types),
               hf_outputs(loaded.eval(), ids, mask, types))


def test_partial_sharing_cannot_export(tmp_path):
  config = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=20, max_position_embeddings=16,
                layer_sharing="attention")
  params = convert.init_params(config)
  with pytest.raises(ValueError, match="layer_sharing"):
    convert.save_hf(config, params, str(tmp_path))
