"""Numerical parity with Hugging Face's PyTorch ALBERT classes (pretraining and fine-tuning heads),
both conversion directions, and config.json fields missing from a checkpoint."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from albert_jax.interop import convert
from albert_jax.interop import names
from albert_jax.model import modeling  # noqa: E402

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
    # L not divisible by G: groups of 3 and 2 layers, where HF's rule equals the official one.
    dict(num_hidden_groups=2, inner_group_num=1, embedding_size=8, hidden_size=16,
         num_hidden_layers=5),
]


def test_groups_where_hf_and_the_official_rule_differ_are_refused():
  # Layer 9 of 18 with 14 groups: group 7 officially (ours), 6 in transformers.
  cfg = convert.ModelConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=18,
                            num_hidden_groups=14, num_attention_heads=4, intermediate_size=20)
  with pytest.raises(ValueError, match=r"layer\(s\) \[9.*int\(l / L \* G\)"):
    convert.config_to_hf(cfg)
  with pytest.raises(ValueError, match="config.json: with num_hidden_layers=18"):
    convert.config_from_hf(dict(num_hidden_layers=18, num_hidden_groups=14, hidden_size=16,
                                num_attention_heads=4))


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


# Fine-tuning heads with a Hugging Face class: (our model, its kwargs, the task as best/task.json
# holds it, the transformers class, our output keys). Sequence, token and multiple-choice heads are
# all `classifier`: only the task tells the class.
TASK_MODELS = {
    "mnli": (modeling.AlbertForSequenceClassification, dict(num_labels=3),
             {"family": "glue", "name": "mnli"}, "AlbertForSequenceClassification", ("logits",)),
    "stsb": (modeling.AlbertForSequenceClassification, dict(num_labels=1),
             {"family": "glue", "name": "stsb"}, "AlbertForSequenceClassification", ("logits",)),
    "ner": (modeling.AlbertForTokenClassification, dict(num_labels=3),
            {"family": "tagging", "name": "ner", "labels": ["O", "B-PER", "I-PER"]},
            "AlbertForTokenClassification", ("logits",)),
    "race": (modeling.AlbertForMultipleChoice, {}, {"family": "race"}, "AlbertForMultipleChoice",
             ("logits",)),
    "squad11": (modeling.AlbertForQuestionAnswering, {}, {"family": "squad", "version": "1.1"},
                "AlbertForQuestionAnswering", ("start_logits", "end_logits")),
}
TASK_CONFIG = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=4,
                   num_hidden_groups=2, num_attention_heads=4, intermediate_size=20,
                   max_position_embeddings=16, hidden_act="gelu")


def random_params(model, input_shape, seed):
  """Random values in every leaf (biases and LayerNorms too), so no tensor can be misplaced
  without changing the outputs."""
  variables = model.init(jax.random.PRNGKey(0), np.zeros(input_shape, np.int32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.normal(0.0, 0.2, x.shape).astype(np.float32),
                      nn.unbox(variables["params"]))


def task_inputs(kind, seed):
  """Padded inputs; RACE: [B, 4 choices, T]."""
  if kind != "race":
    return inputs(seed)
  return tuple(a.reshape(2, 4, 9) for a in inputs(seed, batch=8))


@pytest.mark.parametrize("kind", list(TASK_MODELS))
def test_task_heads_export_to_transformers(kind, tmp_path):
  model_cls, kwargs, task, hf_class, keys = TASK_MODELS[kind]
  model = model_cls(TASK_CONFIG, **kwargs)
  ids, mask, types = task_inputs(kind, seed=11)
  params = random_params(model, (1,) + ids.shape[1:], seed=len(kind))
  ours = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types,
                     deterministic=True)

  arch = convert.save_hf(TASK_CONFIG, params, str(tmp_path), task=task)
  assert arch.name == hf_class
  loaded, info = getattr(transformers, hf_class).from_pretrained(
      str(tmp_path), output_loading_info=True, attn_implementation="eager")
  # Every tensor of the class came from the checkpoint (no random init), none was left over.
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  with torch.no_grad():
    ref = loaded.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types))
  for key in keys:
    np.testing.assert_allclose(np.asarray(ours[key]), getattr(ref, key).numpy(), atol=ATOL,
                               rtol=0, err_msg=key)

  config = json.load(open(os.path.join(tmp_path, "config.json")))
  assert config["architectures"] == [hf_class]
  assert not any(k.startswith(("predictions", "sop_classifier")) for k in loaded.state_dict())
  if kind == "mnli":
    assert loaded.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert config["problem_type"] == "single_label_classification"
  if kind == "stsb":
    assert loaded.config.num_labels == 1 and config["problem_type"] == "regression"
  if kind == "ner":
    assert loaded.config.label2id == {"O": 0, "B-PER": 1, "I-PER": 2}

  # And back: the HF head lands in our head, giving the tree of the task model.
  _, back = convert.load_hf(str(tmp_path))
  flat, back_flat = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (params, back))
  assert [p for p, _ in flat] == [p for p, _ in back_flat]
  for (path, a), (_, b) in zip(flat, back_flat):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_squad_v2_head_has_no_hf_class_but_its_encoder_exports(tmp_path):
  model = modeling.AlbertForQuestionAnsweringV2(TASK_CONFIG)
  ids, mask, types = inputs(seed=12)
  params = random_params(model, (1, 9), seed=12)
  with pytest.raises(ValueError, match="SQuAD v2.0 head 'squad'.*encoder_only"):
    convert.save_hf(TASK_CONFIG, params, str(tmp_path / "full"))
  assert not os.path.exists(tmp_path / "full" / "model.safetensors")

  arch = convert.save_hf(TASK_CONFIG, params, str(tmp_path / "encoder"), encoder_only=True)
  assert arch.name == "AlbertModel"
  loaded, info = transformers.AlbertModel.from_pretrained(
      str(tmp_path / "encoder"), add_pooling_layer=False, output_loading_info=True,
      attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ours = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types,
                     deterministic=True)
  with torch.no_grad():
    ref = loaded.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types))
  np.testing.assert_allclose(np.asarray(ours["sequence_output"]), ref.last_hidden_state.numpy(),
                             atol=ATOL, rtol=0)


@pytest.mark.parametrize("field", ["num_attention_heads", "embedding_size"])
def test_config_json_missing_field_takes_transformers_default(field, tmp_path):
  # hidden 192 keeps transformers' default 64 heads valid; embedding 128 is its default E.
  cfg = transformers.AlbertConfig(vocab_size=40, embedding_size=128, hidden_size=192,
                                  num_hidden_layers=2, intermediate_size=20,
                                  max_position_embeddings=16, attn_implementation="eager")
  assert cfg.num_attention_heads == 64
  torch.manual_seed(0)
  model = transformers.AlbertModel(cfg).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.2)
  model.save_pretrained(tmp_path)
  path = os.path.join(tmp_path, "config.json")
  hf_config = json.load(open(path))
  del hf_config[field]
  json.dump(hf_config, open(path, "w"))
  assert getattr(transformers.AlbertConfig.from_pretrained(str(tmp_path)), field) == getattr(
      cfg, field)

  config, params = convert.load_hf(str(tmp_path), allow_missing_heads=True)
  assert config[field] == getattr(cfg, field)
  ids, mask, types = inputs(seed=13)
  ours = our_outputs(config, params, ids, mask, types)
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(types))
  np.testing.assert_allclose(ours["sequence_output"], ref.last_hidden_state.numpy(), atol=ATOL,
                             rtol=0)
  np.testing.assert_allclose(ours["pooled_output"], ref.pooler_output.numpy(), atol=ATOL, rtol=0)


def test_config_defaults_are_the_sources_own():
  # An empty config.json means transformers' AlbertConfig() (the xxlarge shape), field by field.
  ours = convert.config_from_hf({})
  ref = transformers.AlbertConfig()
  for field in names.CONFIG_FIELDS + ("layer_norm_eps", "classifier_dropout_prob"):
    assert getattr(ours, field) == getattr(ref, field), field
  assert ref.hidden_act == "gelu_new" and ours.hidden_act == "gelu"  # the same tanh GELU
  # The official AlbertConfig (google-research/albert modeling.py, written out): xxlarge, "gelu".
  official = convert.config_from_official({"vocab_size": 40})
  assert dict(vocab_size=40, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
              num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384,
              inner_group_num=1, hidden_act="gelu", hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0, max_position_embeddings=512, type_vocab_size=2,
              initializer_range=0.02, layer_norm_eps=1e-12) == {
                  k: getattr(official, k) for k in ("vocab_size", "embedding_size",
                                                    "hidden_size", "num_hidden_layers",
                                                    "num_hidden_groups", "num_attention_heads",
                                                    "intermediate_size", "inner_group_num",
                                                    "hidden_act", "hidden_dropout_prob",
                                                    "attention_probs_dropout_prob",
                                                    "max_position_embeddings", "type_vocab_size",
                                                    "initializer_range", "layer_norm_eps")}
  with pytest.raises(ValueError, match="albert_config.json has no field 'vocab_size'"):
    convert.config_from_official({"hidden_size": 16})
