"""LAMB/AdamW against a NumPy transcription of the official TF update; exclusions; schedule."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from albert_jax.interop import names as checkpoint_names
from albert_jax.model import modeling
from albert_jax.train import optim

EXCLUDE = ("LayerNorm", "layer_norm", "bias")


# ------------------------------------------------------------------------------------------------
# The reference: google-research/albert lamb_optimizer.LAMBOptimizer.apply_gradients and
# optimization.AdamWeightDecayOptimizer.apply_gradients (google-research/albert), one
# official variable at a time, in float64; and optimization.create_optimizer's schedule.
# ------------------------------------------------------------------------------------------------

def official_apply(name, param, grad, m, v, lr, use_lamb, weight_decay_rate=0.01, beta_1=0.9,
                   beta_2=0.999, epsilon=1e-6, exclude=EXCLUDE):
  next_m = beta_1 * m + (1.0 - beta_1) * grad
  next_v = beta_2 * v + (1.0 - beta_2) * np.square(grad)
  update = next_m / (np.sqrt(next_v) + epsilon)
  excluded = any(re.search(r, name) is not None for r in exclude)
  if weight_decay_rate and not excluded:
    update += weight_decay_rate * param
  ratio = 1.0
  if use_lamb and not excluded:
    w_norm = np.linalg.norm(param.ravel(), ord=2)
    g_norm = np.linalg.norm(update.ravel(), ord=2)
    ratio = np.where(w_norm > 0, np.where(g_norm > 0, w_norm / g_norm, 1.0), 1.0)
  next_param = param - ratio * lr * update
  return next_param, next_m, next_v


def official_lr(global_step, init_lr, num_train_steps, num_warmup_steps, poly_power=1.0,
                start_warmup_step=0):
  done = min(global_step, num_train_steps) / num_train_steps
  learning_rate = init_lr * (1.0 - done) ** poly_power
  if num_warmup_steps:
    steps = global_step - start_warmup_step
    warmup_learning_rate = init_lr * steps / num_warmup_steps
    if steps < num_warmup_steps:
      # The only deviation: TF would return a negative rate before start_warmup_step.
      learning_rate = max(warmup_learning_rate, 0.0)
  return learning_rate


def official_clip(grads, clip_norm):
  global_norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
  return {k: g * clip_norm / max(global_norm, clip_norm) for k, g in grads.items()}


def run_official(variables, grad_steps, lrs, use_lamb, clip_norm=None, **kw):
  """variables, grads: {official name: array}. Returns final variables and slots (float64)."""
  w = {k: np.asarray(a, np.float64) for k, a in variables.items()}
  m = {k: np.zeros_like(a) for k, a in w.items()}
  v = {k: np.zeros_like(a) for k, a in w.items()}
  for grads, lr in zip(grad_steps, lrs):
    grads = {k: np.asarray(g, np.float64) for k, g in grads.items()}
    if clip_norm:
      grads = official_clip(grads, clip_norm)
    for k in w:
      w[k], m[k], v[k] = official_apply(k, w[k], grads[k], m[k], v[k], lr, use_lamb, **kw)
  return w, m, v


# ------------------------------------------------------------------------------------------------
# Helpers: our tree <-> official variables (one per slice of the stacked axes).
# ------------------------------------------------------------------------------------------------

def flat(tree):
  """{"a/b/c": leaf} with the optimizer's naming ("/"-joined dict keys)."""
  return dict(zip(jax.tree.leaves(optim.param_names(tree)),
                  (np.asarray(a) for a in jax.tree.leaves(tree))))


def split_slices(tree, stacked):
  """{path[idx]: slice}: every stacked leaf as its official variables."""
  out, counts = {}, flat(stacked)
  for name, a in flat(tree).items():
    k = int(counts[name])
    for idx in np.ndindex(a.shape[:k]):
      out[f"{name}{list(idx) if k else ''}"] = a[idx]
  return out


def assert_close(ours, ref, what):
  for key, expected in ref.items():
    got = np.asarray(ours[key], np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * scale,
                               err_msg=f"{what}: {key}")


def run_ours(tx, params, grad_steps):
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for grads in grad_steps:
    params, state = step(params, state, grads)
  return params, state


def adam_slots(state):
  is_slots = lambda x: isinstance(x, optim.OfficialAdamState)
  found = [s for s in jax.tree.leaves(state, is_leaf=is_slots) if is_slots(s)]
  assert len(found) == 1
  return found[0]


# ------------------------------------------------------------------------------------------------
# A hand-built tree with our names: LayerNorm, biases, embeddings, kernels, stacked leaves.
# ------------------------------------------------------------------------------------------------

G, LG, E, H, I, V = 2, 3, 4, 8, 12, 11
SHAPES = {
    "albert": {
        "embeddings": {"word_embeddings": {"embedding": (V, E)},
                       "LayerNorm": {"scale": (E,), "bias": (E,)}},
        "encoder": {
            "embedding_hidden_mapping_in": {"kernel": (E, H), "bias": (H,)},
            "groups": {"layers": {"albert_layers_0": {
                # unshared across depth: groups and layers axes
                "attention": {"query": {"kernel": (G, LG, H, H), "bias": (G, LG, H)},
                              "LayerNorm": {"scale": (G, LG, H), "bias": (G, LG, H)}},
                # shared across depth: groups axis only
                "ffn": {"kernel": (G, H, I), "bias": (G, I)},
                "full_layer_layer_norm": {"scale": (G, H), "bias": (G, H)}}}}},
        "pooler": {"kernel": (H, H), "bias": (H,)}},
    "predictions": {"bias": (V,)},
    "sop_classifier": {"classifier": {"kernel": (H, 2), "bias": (2,)}},
}
IS_SHAPE = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def hand_tree(seed=0):
  rng = np.random.default_rng(seed)
  names = jax.tree.leaves(optim.param_names(jax.tree.map(lambda s: 0, SHAPES, is_leaf=IS_SHAPE)))
  leaves = []
  for name, shape in zip(names, jax.tree.leaves(SHAPES, is_leaf=IS_SHAPE)):
    a = rng.normal(0, 0.05, shape)
    if name.endswith("scale"):
      a = 1.0 + a
    if name == "albert/pooler/kernel":
      a = np.zeros(shape)  # ||w|| = 0: trust ratio 1
    leaves.append(jnp.asarray(a, jnp.float32))
  params = jax.tree.unflatten(jax.tree.structure(SHAPES, is_leaf=IS_SHAPE), leaves)
  # Written out from the tree's comments, independently of the optimizer code.
  stacked = jax.tree.map(lambda n: 2 if "/attention/" in n else 1 if "/groups/" in n else 0,
                         optim.param_names(params))
  return params, stacked


def grad_steps(params, n, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(0, rng.uniform(0.1, 3), p.shape),
                                             jnp.float32), params) for _ in range(n)]


@pytest.mark.parametrize("use_lamb", [True, False])
def test_matches_official_update_on_stacked_tree(use_lamb):
  params, stacked = hand_tree()
  grads = grad_steps(params, 5)
  schedule = optim.learning_rate_schedule(0.01, warmup_steps=2, total_steps=10)
  lrs = [official_lr(t, 0.01, 10, 2) for t in range(5)]
  assert lrs[0] == 0.0
  tx = optim.lamb(schedule, stacked_axes=stacked) if use_lamb else optim.adamw(schedule)
  ours, state = run_ours(tx, params, grads)
  ref_w, ref_m, ref_v = run_official(split_slices(params, stacked),
                                     [split_slices(g, stacked) for g in grads], lrs, use_lamb)
  slots = adam_slots(state)
  assert_close(split_slices(ours, stacked), ref_w, "params")
  assert_close(split_slices(slots.m, stacked), ref_m, "adam_m")
  assert_close(split_slices(slots.v, stacked), ref_v, "adam_v")


def test_trust_ratio_is_per_slice_not_per_leaf():
  # Treating a stacked leaf as one tensor gives a different (wrong) update, so the comparison
  # above does catch an optimizer that ignores stacked_axes.
  params, stacked = hand_tree()
  grads = grad_steps(params, 2)
  wrong, _ = run_ours(optim.lamb(0.01, stacked_axes=jax.tree.map(lambda _: 0, stacked)),
                      params, grads)
  ref, _, _ = run_official(split_slices(params, stacked),
                           [split_slices(g, stacked) for g in grads], [0.01] * 2, True)
  with pytest.raises(AssertionError, match="attention/query/kernel"):
    assert_close(split_slices(wrong, stacked), ref, "params")


def test_zero_update_norm_gives_ratio_one():
  params = {"kernel": jnp.ones((3, 3)), "other": {"kernel": jnp.ones((2,))}}
  grads = {"kernel": jnp.zeros((3, 3)), "other": {"kernel": jnp.ones((2,))}}
  tx = optim.lamb(0.1, weight_decay=0.0)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert np.all(np.asarray(updates["kernel"]) == 0.0)
  assert np.all(np.isfinite(np.asarray(updates["other"]["kernel"])))


# ------------------------------------------------------------------------------------------------
# The real model: exclusion set and stacked axes from the logical axis names.
# ------------------------------------------------------------------------------------------------

MODEL = dict(vocab_size=50, embedding_size=8, hidden_size=16, num_attention_heads=4,
             intermediate_size=20, max_position_embeddings=16, num_hidden_layers=4)


def boxed_params(cfg):
  model = modeling.AlbertForPreTraining(cfg)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))["params"]


def model_params(cfg, seed=0):
  abstract = nn.unbox(boxed_params(cfg))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda name, a: jnp.asarray(rng.normal(0, 0.05, a.shape) + name.endswith("scale"),
                                  jnp.float32), optim.param_names(abstract), abstract)


@pytest.mark.parametrize("sharing,groups", [("all", 1), ("all", 2), ("none", 2)])
def test_exclusions_are_the_official_set(sharing, groups):
  cfg = modeling.ModelConfig(**MODEL, layer_sharing=sharing, num_hidden_groups=groups)
  tensors = list(checkpoint_names.tensors(cfg))
  leaves = set(jax.tree.leaves(optim.param_names(nn.unbox(boxed_params(cfg)))))
  assert {"/".join(t.path) for t in tensors} == leaves  # every leaf has official counterparts
  for t in tensors:
    official = checkpoint_names.tf_name(t.hf_key)
    assert optim.is_excluded("/".join(t.path), EXCLUDE) == optim.is_excluded(official, EXCLUDE), (
        official)
  excluded = {n for n in leaves if optim.is_excluded(n, EXCLUDE)}
  assert "predictions/bias" in excluded  # cls/predictions/output_bias
  assert "sop_classifier/classifier/bias" in excluded
  assert "albert/embeddings/LayerNorm/scale" in excluded
  for name in ("sop_classifier/classifier/kernel", "albert/embeddings/word_embeddings/embedding",
               "albert/encoder/embedding_hidden_mapping_in/kernel", "predictions/dense/kernel"):
    assert name not in excluded
  assert all(n.endswith(("/scale", "/bias")) for n in excluded)
  assert all(n.endswith("/bias") or "LayerNorm" in n or "layer_norm" in n for n in excluded)


@pytest.mark.parametrize("sharing,expected", [
    ("all", {"attention": 1, "ffn": 1}), ("none", {"attention": 2, "ffn": 2}),
    ("attention", {"attention": 1, "ffn": 2}), ("ffn", {"attention": 2, "ffn": 1})])
def test_stacked_axes_from_logical_names(sharing, expected):
  cfg = modeling.ModelConfig(**MODEL, layer_sharing=sharing, num_hidden_groups=2)
  boxed = boxed_params(cfg)
  stacked = optim.stacked_axes_from_params(boxed)
  assert jax.tree.structure(stacked) == jax.tree.structure(nn.unbox(boxed))
  assert optim.stacked_axes_from_params(nn.get_partition_spec(boxed)) == stacked
  for name, k in zip(jax.tree.leaves(optim.param_names(stacked)), jax.tree.leaves(stacked)):
    if "/groups/" not in name:
      assert k == 0, name
    elif "/attention/" in name:
      assert k == expected["attention"], name
    else:  # ffn, ffn_output, full_layer_layer_norm
      assert k == expected["ffn"], name


def test_model_lamb_equals_official_per_layer():
  # layer_sharing='none', G=2: each encoder leaf stacks 2 groups x 2 layers = 4 official
  # variables (`group_0` .. `group_3` of the equivalent official model).
  cfg = modeling.ModelConfig(**MODEL, layer_sharing="none", num_hidden_groups=2)
  params = model_params(cfg)
  grads = grad_steps(params, 3)
  tx = optim.lamb(0.01, stacked_axes=optim.stacked_axes_from_params(boxed_params(cfg)))
  ours, _ = run_ours(tx, params, grads)

  def official(tree):  # {official TF name: array}, via the checkpoint name tables
    leaves = flat(tree)
    return {checkpoint_names.tf_name(t.hf_key): leaves["/".join(t.path)][t.index]
            for t in checkpoint_names.tensors(cfg)}

  ref, _, _ = run_official(official(params), [official(g) for g in grads], [0.01] * 3, True)
  assert len(ref) == len(list(checkpoint_names.tensors(cfg)))
  assert_close(official(ours), ref, "params")


def test_unstacked_default_refuses_stacked_model():
  cfg = modeling.ModelConfig(**MODEL, layer_sharing="none", num_hidden_groups=2)
  params = model_params(cfg)
  with pytest.raises(ValueError, match="stacked_axes"):
    optim.lamb(0.01).init(params)
  with pytest.raises(ValueError, match="structure"):
    optim.lamb(0.01, stacked_axes={"params": 0}).init(params)
  optim.adamw(0.01).init(params)  # no norms: stacking does not matter
  as_function = lambda p: jax.tree.map(lambda _: 0, p)  # stacked_axes may be a function
  optim.lamb(0.01, stacked_axes=as_function).init(params)


# ------------------------------------------------------------------------------------------------
# Schedule.
# ------------------------------------------------------------------------------------------------

def test_schedule_official_values():
  peak, w, t = 0.00176, 3125, 125000
  lr = jax.jit(optim.learning_rate_schedule(peak, w, t))
  expect = {0: 0.0, 1562: peak * 1562 / w, 3124: peak * 3124 / w, 3125: peak * (1 - w / t),
            64000: peak * (1 - 64000 / t), t: 0.0, t + 500: 0.0}
  for step, value in expect.items():
    np.testing.assert_allclose(float(lr(step)), value, rtol=1e-6, atol=1e-12, err_msg=str(step))
    np.testing.assert_allclose(value, official_lr(step, peak, t, w), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kw", [dict(power=2.0), dict(start_warmup_step=10),
                                dict(warmup_steps=0), dict(power=0.5, start_warmup_step=3)])
def test_schedule_matches_transcription(kw):
  args = dict(peak=0.5, warmup_steps=20, total_steps=100, power=1.0, start_warmup_step=0)
  args.update(kw)
  lr = optim.learning_rate_schedule(**args)
  for step in range(0, 130):
    expected = official_lr(step, args["peak"], args["total_steps"], args["warmup_steps"],
                           args["power"], args["start_warmup_step"])
    np.testing.assert_allclose(float(lr(step)), expected, rtol=1e-6, atol=1e-9, err_msg=str(step))
  if args["warmup_steps"] == 0:
    assert float(lr(0)) == args["peak"]


# ------------------------------------------------------------------------------------------------
# The builder: clipping, config fields, errors.
# ------------------------------------------------------------------------------------------------

def config(**overrides):
  c = optim.default_config()
  c.update({**dict(learning_rate=0.01, warmup_steps=2, total_steps=10), **overrides})
  return c


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_make_optimizer_clips_then_matches_official(name):
  params, stacked = hand_tree()
  grads = grad_steps(params, 3)
  grads[1] = jax.tree.map(lambda g: g * 1e-3, grads[1])  # below the clip norm: untouched
  tx = optim.make_optimizer(config(name=name), stacked_axes=stacked)
  ours, _ = run_ours(tx, params, grads)
  lrs = [official_lr(t, 0.01, 10, 2) for t in range(3)]
  ref, _, _ = run_official(split_slices(params, stacked),
                           [split_slices(g, stacked) for g in grads], lrs, name == "lamb",
                           clip_norm=1.0)
  assert_close(split_slices(ours, stacked), ref, "params")


@pytest.mark.parametrize("clip_norm,scale", [(1.0, 1 / 5), (0.0, 1.0), (10.0, 1.0)])
def test_clipping_at_configured_norm(clip_norm, scale):
  params = {"a": jnp.ones((3,)), "b": {"kernel": jnp.ones((4,))}}
  grads = {"a": jnp.asarray([3.0, 0.0, 0.0]), "b": {"kernel": jnp.asarray([4.0, 0, 0, 0])}}
  tx = optim.make_optimizer(config(name="adamw", clip_norm=clip_norm))
  _, state = tx.update(grads, tx.init(params), params)
  m = adam_slots(state).m  # = (1 - b1) * clipped gradient
  np.testing.assert_allclose(m["a"], 0.1 * scale * np.asarray(grads["a"]), rtol=1e-6)
  np.testing.assert_allclose(m["b"]["kernel"], 0.1 * scale * np.asarray(grads["b"]["kernel"]),
                             rtol=1e-6)


def test_total_steps_from_config_or_caller():
  c = config(total_steps=None)
  assert float(optim.make_schedule(c, total_steps=10)(3)) == pytest.approx(0.01 * 0.7)
  with pytest.raises(ValueError, match="optimizer.total_steps"):
    optim.make_schedule(c)
  with pytest.raises(ValueError, match="optimizer.total_steps"):
    optim.make_schedule(config(), total_steps=20)
  assert float(optim.make_schedule(config(), total_steps=10)(3)) == pytest.approx(0.007)


@pytest.mark.parametrize("field,value", [
    ("name", "sgd"), ("learning_rate", 0.0), ("warmup_steps", -1), ("warmup_steps", 11),
    ("b1", 1.0), ("eps", 0.0), ("weight_decay", -0.1), ("clip_norm", -1.0), ("poly_power", 0.0),
    ("exclude", ("bias", "("))])
def test_bad_fields_are_named(field, value):
  c = config()
  c[field] = value
  with pytest.raises(ValueError, match=f"optimizer.{field}"):
    optim.make_optimizer(c)


def test_unknown_and_missing_fields():
  c = config()
  c.grad_accum = 2
  with pytest.raises(ValueError, match="grad_accum"):
    optim.make_optimizer(c)
  c = ml_collections.ConfigDict({k: v for k, v in config().items() if k != "eps"})
  with pytest.raises(ValueError, match="eps"):
    optim.make_optimizer(c)
