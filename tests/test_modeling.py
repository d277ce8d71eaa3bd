"""The encoder's nn.scan against a plain Python loop, sharing structure, dtypes, remat, validation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig

BASE = dict(vocab_size=50, embedding_size=8, hidden_size=16, num_attention_heads=4,
            intermediate_size=20, max_position_embeddings=16)
# Which sub-trees of a layer are stacked on the `layers` axis, written out independently.
UNSHARED = {"all": (), "none": ("attention", "ffn", "ffn_output", "full_layer_layer_norm"),
            "attention": ("ffn", "ffn_output", "full_layer_layer_norm"),
            "ffn": ("attention",)}


def make_inputs(batch=2, length=7, seed=0):
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(0, 50, (batch, length)))
  mask = jnp.ones((batch, length), jnp.int32).at[1, 4:].set(0)
  types = jnp.asarray(rng.integers(0, 2, (batch, length)))
  return ids, mask, types


def loop_forward(cfg, params, ids, mask, types):
  """Reference: the official Python loop over layers, applying AlbertLayer to sliced weights."""
  albert = params["albert"]
  x = modeling.AlbertEmbeddings(cfg).apply({"params": albert["embeddings"]}, ids, types, True)
  enc = albert["encoder"]
  if cfg.has_embedding_projection:
    x = x @ enc["embedding_hidden_mapping_in"]["kernel"] + enc["embedding_hidden_mapping_in"][
        "bias"]
  layers = enc["groups"]["layers"]
  per_group = cfg.num_hidden_layers // cfg.num_hidden_groups
  for i in range(cfg.num_hidden_layers):
    group = int(i / cfg.num_hidden_layers * cfg.num_hidden_groups)  # official formula
    for n in range(cfg.inner_group_num):
      tree = layers[f"albert_layers_{n}"]
      p = {k: jax.tree.map(lambda a: a[group][i % per_group] if k in UNSHARED[cfg.layer_sharing]
                           else a[group], v) for k, v in tree.items()}
      x = modeling.AlbertLayer(cfg).apply({"params": p}, x, mask, True)
  pooled = jnp.tanh(x[:, 0] @ albert["pooler"]["kernel"] + albert["pooler"]["bias"])
  return x, pooled


def assert_grad_close(a, b):
  # float32 sums in a different order: tolerance relative to the tensor's largest entry.
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(b).max())))


CASES = [(sharing, g, n) for sharing in ("all", "none", "attention", "ffn")
         for g, n in ((1, 1), (2, 2))]


@pytest.mark.parametrize("sharing,groups,inner", CASES)
def test_scan_matches_python_loop(sharing, groups, inner):
  cfg = ModelConfig(**BASE, num_hidden_layers=4, num_hidden_groups=groups, inner_group_num=inner,
                    layer_sharing=sharing)
  model = modeling.AlbertModel(cfg)
  ids, mask, types = make_inputs()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  full = {"albert": params}

  def scan_loss(p):
    out = model.apply({"params": p["albert"]}, ids, mask, types)
    return jnp.sum(out["sequence_output"] ** 2) + jnp.sum(out["pooled_output"])

  def loop_loss(p):
    seq, pooled = loop_forward(cfg, p, ids, mask, types)
    return jnp.sum(seq ** 2) + jnp.sum(pooled)

  out = model.apply({"params": params}, ids, mask, types)
  seq, pooled = loop_forward(cfg, full, ids, mask, types)
  np.testing.assert_allclose(out["sequence_output"], seq, atol=1e-5)
  np.testing.assert_allclose(out["pooled_output"], pooled, atol=1e-5)
  g_scan, g_loop = jax.grad(scan_loss)(full), jax.grad(loop_loss)(full)
  jax.tree.map(assert_grad_close, g_scan, g_loop)


@pytest.mark.parametrize("layers,groups,inner,grad", [(5, 2, 1, False), (7, 3, 2, True),
                                                     (22, 22, 1, False)])
def test_unequal_groups_follow_the_official_rule(layers, groups, inner, grad):
  # L not divisible by G, and L = G = 22, where the float rule puts layer 15 in group 14 and no
  # layer in group 15: the model against the Python loop of the official formula.
  cfg = ModelConfig(**BASE, num_hidden_layers=layers, num_hidden_groups=groups,
                    inner_group_num=inner)
  assert not cfg.uniform_groups
  model = modeling.AlbertModel(cfg)
  ids, mask, types = make_inputs()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  scan_loss = lambda p: jnp.sum(model.apply({"params": p["albert"]}, ids, mask, types)[
      "sequence_output"] ** 2)
  loop_loss = lambda p: jnp.sum(loop_forward(cfg, p, ids, mask, types)[0] ** 2)
  full = {"albert": params}
  np.testing.assert_allclose(scan_loss(full), loop_loss(full), rtol=1e-5)
  if grad:  # float32 sums of 5-7 layers in another order: 1e-4 of the largest entry
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max()))),
                 jax.grad(scan_loss)(full), jax.grad(loop_loss)(full))


def test_group_assignment_is_the_official_rounding_rule():
  from albert_jax.model import config as config_lib  # pylint: disable=g-import-not-at-top
  for layers in range(1, 50):
    for groups in range(1, layers + 1):
      cfg = ModelConfig(**BASE, num_hidden_layers=layers, num_hidden_groups=groups)
      # google-research/albert modeling.py transformer_model, verbatim.
      official = tuple(int(l / layers * groups) for l in range(layers))
      assert cfg.layer_groups == official
      assert list(official) == sorted(official)  # contiguous runs
      assert sum(cfg.group_lengths) == layers
      if cfg.uniform_groups:  # the plain scan: L/G layers per group, in order
        assert official == tuple(l // (layers // groups) for l in range(layers))
  assert ModelConfig(**BASE, num_hidden_layers=5, num_hidden_groups=2).group_lengths == (3, 2)
  # Where the float rule is not floor(l * G / L), and where Hugging Face's rule differs.
  assert ModelConfig(**BASE, num_hidden_layers=22, num_hidden_groups=22).group_lengths[14:16] == (
      2, 0)
  assert config_lib.layer_group(9, 18, 14) == 7 and config_lib.hf_layer_group(9, 18, 14) == 6


def layer_shapes(cfg):
  model = modeling.AlbertModel(cfg)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  tree = nn.unbox(variables["params"])["encoder"]["groups"]["layers"]["albert_layers_0"]
  return jax.tree.map(lambda a: a.shape, tree)


@pytest.mark.parametrize("sharing", ["all", "none", "attention", "ffn"])
def test_sharing_structure(sharing):
  layers = 6
  shapes = layer_shapes(ModelConfig(**BASE, num_hidden_layers=layers, layer_sharing=sharing))
  for key, sub in shapes.items():
    for shape in jax.tree.leaves(sub, is_leaf=lambda s: isinstance(s, tuple)):
      stacked = key in UNSHARED[sharing]
      # Leading groups axis (G = 1), then the layers axis only where weights are not shared.
      assert shape[0] == 1
      assert (shape[1] == layers) == stacked, (key, shape)


def test_all_shared_tree_does_not_depend_on_depth():
  shallow = layer_shapes(ModelConfig(**BASE, num_hidden_layers=2))
  deep = layer_shapes(ModelConfig(**BASE, num_hidden_layers=12))
  assert shallow == deep


def test_unshared_layers_start_different_and_shared_groups_differ():
  cfg = ModelConfig(**BASE, num_hidden_layers=4, num_hidden_groups=2, layer_sharing="attention")
  params = nn.unbox(modeling.AlbertModel(cfg).init(jax.random.PRNGKey(0),
                                                   jnp.zeros((1, 4), jnp.int32))["params"])
  layer = params["encoder"]["groups"]["layers"]["albert_layers_0"]
  ffn = layer["ffn"]["kernel"]  # [G, L/G, H, I]
  assert ffn.shape == (2, 2, 16, 20)
  assert not np.allclose(ffn[0, 0], ffn[0, 1]) and not np.allclose(ffn[0, 0], ffn[1, 0])
  query = layer["attention"]["query"]["kernel"]  # [G, H, H]
  assert query.shape == (2, 16, 16) and not np.allclose(query[0], query[1])
  assert abs(float(jnp.std(ffn)) - 0.02 * 0.88) < 0.004  # truncated normal(0.02) at +-2 sigma


@pytest.mark.parametrize("policy", ["nothing_saveable", "matmul_and_layernorm_inputs"])
def test_remat_and_dropout(policy):
  cfg = dict(BASE, num_hidden_layers=3, inner_group_num=2, hidden_dropout_prob=0.1,
             attention_probs_dropout_prob=0.1)
  ids, mask, types = make_inputs()
  plain = modeling.AlbertForPreTraining(cfg)
  remat = modeling.AlbertForPreTraining(dict(cfg, remat_policy=policy))
  params = plain.init(jax.random.PRNGKey(0), ids)["params"]

  def loss(model, p, rng):
    out = model.apply({"params": p}, ids, mask, types, deterministic=False,
                      rngs={"dropout": rng})
    return jnp.sum(out["mlm_logits"] ** 2) + jnp.sum(out["sop_logits"])

  rng = jax.random.PRNGKey(1)
  l1, g1 = jax.value_and_grad(lambda p: loss(plain, p, rng))(params)
  l2, g2 = jax.value_and_grad(lambda p: loss(remat, p, rng))(params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(assert_grad_close, g1, g2)
  assert not np.isclose(l1, loss(plain, params, jax.random.PRNGKey(2)))
  det = [plain.apply({"params": params}, ids, mask, types)["sop_logits"] for _ in range(2)]
  np.testing.assert_array_equal(det[0], det[1])


@pytest.mark.parametrize("blocks,groups,inner,policy", [(3, 1, 1, "nothing_saveable"),
                                                        (0, 2, 2, "none")])
def test_remat_scan_blocks_match_one_scan(blocks, groups, inner, policy):
  """Blocks change the backward pass's memory, not the parameter tree, the init or the maths."""
  cfg = dict(BASE, num_hidden_layers=12, num_hidden_groups=groups, inner_group_num=inner,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
  ids, mask, types = make_inputs()
  plain = modeling.AlbertForPreTraining(cfg)
  blocked = modeling.AlbertForPreTraining(dict(cfg, remat_policy=policy, remat_scan_blocks=blocks))
  assert blocked.config.depth_blocks == (3 if blocks else 2)  # 0: the divisor nearest sqrt(L/G)
  params = plain.init(jax.random.PRNGKey(0), ids)["params"]
  # The same draws, equal to float32 rounding: XLA need not round two programs' normal sampling
  # alike (at the suite's CPU flags, tests/xla_env.py, two kernels differ by 7e-9; the std is 0.02).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-7), params,
               blocked.init(jax.random.PRNGKey(0), ids)["params"])

  def loss(model, p, deterministic):
    out = model.apply({"params": p}, ids, mask, types, deterministic=deterministic,
                      rngs={"dropout": jax.random.PRNGKey(1)})
    return jnp.sum(out["mlm_logits"] ** 2) + jnp.sum(out["sop_logits"])

  # With dropout too: every layer draws the same mask however the depth is cut into blocks.
  losses = []
  for deterministic in (True, False):
    l1, g1 = jax.value_and_grad(lambda p: loss(plain, p, deterministic))(params)
    l2, g2 = jax.value_and_grad(lambda p: loss(blocked, p, deterministic))(params)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    jax.tree.map(assert_grad_close, g1, g2)
    losses.append(l1)
  assert not np.isclose(losses[0], losses[1])  # dropout did act


def test_bfloat16_compute():
  ids, mask, types = make_inputs()
  f32 = modeling.AlbertForPreTraining(dict(BASE, num_hidden_layers=2))
  bf16 = modeling.AlbertForPreTraining(dict(BASE, num_hidden_layers=2, dtype="bfloat16"))
  params = f32.init(jax.random.PRNGKey(0), ids)["params"]
  a = f32.apply({"params": params}, ids, mask, types)
  b = bf16.apply({"params": params}, ids, mask, types)
  assert b["sequence_output"].dtype == jnp.bfloat16 and b["mlm_logits"].dtype == jnp.float32
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  np.testing.assert_allclose(b["mlm_logits"], a["mlm_logits"], atol=0.1)


def test_logical_axis_names_on_every_parameter():
  model = modeling.AlbertForPreTraining(dict(BASE, num_hidden_layers=2, layer_sharing="ffn"))
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  specs = nn.get_partition_spec(boxed["params"])
  layer = specs["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  assert tuple(layer["attention"]["query"]["kernel"]) == ("groups", "layers", "hidden", "heads")
  assert tuple(layer["ffn"]["kernel"]) == ("groups", "hidden", "mlp")
  assert tuple(specs["albert"]["embeddings"]["word_embeddings"]["embedding"]) == ("vocab", "embed")


@pytest.mark.parametrize("overrides,field", [
    (dict(hidden_size=18), "hidden_size"),
    (dict(num_hidden_layers=3, num_hidden_groups=2, layer_sharing="none"), "num_hidden_groups"),
    (dict(num_hidden_layers=2, num_hidden_groups=3), "num_hidden_groups"),
    (dict(num_hidden_layers=5, num_hidden_groups=2, remat_scan_blocks=0), "remat_scan_blocks"),
    (dict(layer_sharing="half"), "layer_sharing"),
    (dict(hidden_act="gelu_fancy"), "hidden_act"),
    (dict(use_embedding_projection=False), "use_embedding_projection"),
    (dict(remat_policy="save_all"), "remat_policy"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(num_hidden_layers=6, remat_scan_blocks=4), "remat_scan_blocks"),
    (dict(remat_scan_blocks=2, layer_sharing="none"), "remat_scan_blocks"),
    (dict(remat_scan_blocks=-1), "remat_scan_blocks"),
    (dict(not_a_field=1), "not_a_field"),
])
def test_invalid_config_fails_at_construction(overrides, field):
  with pytest.raises(ValueError, match=field):
    modeling.AlbertForPreTraining({**BASE, "num_hidden_layers": 2, **overrides})


def test_sequence_longer_than_max_positions():
  model = modeling.AlbertModel(dict(BASE, num_hidden_layers=1))
  ids = jnp.zeros((1, 17), jnp.int32)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    model.init(jax.random.PRNGKey(0), ids)


def test_out_of_range_ids_fail_instead_of_nan():
  model = modeling.AlbertModel(BASE)
  ids, mask, types = make_inputs()
  params = model.init(jax.random.PRNGKey(0), ids)
  with pytest.raises(ValueError, match=r"token id 50 is outside \[0, 50\).*'vocab_size'=50"):
    model.apply(params, ids.at[0, 1].set(50), mask, types)
  with pytest.raises(ValueError, match=r"token type id 2 .*'type_vocab_size'=2"):
    model.apply(params, ids, mask, types.at[1, 0].set(2))
  # Under jit the values are not looked at (no device sync); in-range ids are unaffected.
  out = jax.jit(lambda p, i: model.apply(p, i, mask, types))(params, ids)
  assert np.isfinite(np.asarray(out["sequence_output"])).all()


def test_training_mode_without_dropout_needs_no_rng():
  # v2 configs have no dropout: training-mode calls need no 'dropout' rng, as with nn.Dropout.
  model = modeling.AlbertForPreTraining(dict(BASE, num_hidden_layers=2))
  ids, mask, types = make_inputs()
  params = model.init(jax.random.PRNGKey(0), ids)["params"]
  train = model.apply({"params": params}, ids, mask, types, deterministic=False)
  test = model.apply({"params": params}, ids, mask, types)
  np.testing.assert_array_equal(train["mlm_logits"], test["mlm_logits"])
