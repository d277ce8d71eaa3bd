"""Attention implementations (albert_jax/model/attention.py): each fused one equals the xla reference.

Splash and fused_tpu run in Pallas interpret mode on the CPU; cuDNN cannot run here, so the GPU
branch of `dot_product_attention` is covered by its dispatch and its padding conversion only.
"""

import importlib.util
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

from albert_jax.model import attention, fused_attention
from albert_jax.model import modeling
from albert_jax.train import partitioning
from albert_jax.model.config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSED = ("dot_product_attention", "splash", "fused_tpu")
# bfloat16 has an 8-bit mantissa: outputs of order 1 agree to a few of its ulps.
TOLERANCE = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2}


def padded_mask(batch: int, length: int) -> jnp.ndarray:
  """Row 0 unpadded, row 1 right-padded, the last row all padding (an empty eval slot)."""
  mask = np.ones((batch, length), np.int32)
  mask[1, length // 3:] = 0
  mask[-1] = 0
  return jnp.asarray(mask)


def qkv(dtype, batch=3, length=128, heads=2, head_dim=16, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(batch, length, heads, head_dim)), dtype)
               for _ in range(3))


def core(impl, dtype, mask):
  return lambda q, k, v: attention.attend(impl, q, k, v, mask, lambda p: p, dtype)


def assert_close(actual, expected, dtype, mask):
  """Rows with real keys to the dtype's tolerance; an all-padding row to 2e-3, since the
  reference's -10000 added to its scores costs float32 about 1e-3 of precision there."""
  actual, expected = (np.asarray(x, np.float32) for x in (actual, expected))
  assert np.isfinite(actual).all()
  scale = max(1.0, float(np.abs(expected).max()))
  for row, has_keys in enumerate(np.asarray(mask).any(-1)):
    tol = TOLERANCE[dtype] if has_keys else max(TOLERANCE[dtype], 2e-3)
    np.testing.assert_allclose(actual[row], expected[row], atol=tol * scale, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("impl", FUSED)
def test_fused_core_equals_xla_forward_and_gradients_with_padding(impl, dtype):
  q, k, v = qkv(dtype)
  mask = padded_mask(3, 128)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)

  def loss(fn):
    return lambda *a: (fn(*a).astype(jnp.float32) * weights).sum()

  expected = core("xla", dtype, mask)(q, k, v)
  actual = core(impl, dtype, mask)(q, k, v)
  assert_close(actual, expected, dtype, mask)
  grads = jax.grad(loss(core(impl, dtype, mask)), argnums=(0, 1, 2))(q, k, v)
  expected_grads = jax.grad(loss(core("xla", dtype, mask)), argnums=(0, 1, 2))(q, k, v)
  for g, e in zip(grads, expected_grads):
    assert_close(g, e, dtype, mask)


@pytest.mark.parametrize("impl", FUSED)
def test_padded_keys_get_zero_probability(impl):
  q, k, v = qkv(jnp.float32)
  mask = padded_mask(3, 128)
  # Changing what stands at padded keys must not change any output of a row with real keys.
  k2 = k.at[1, 128 // 3:].set(100.0)
  v2 = v.at[1, 128 // 3:].set(-100.0)
  fn = core(impl, jnp.float32, mask)
  np.testing.assert_allclose(fn(q, k2, v2)[:2], fn(q, k, v)[:2], atol=1e-5)


def test_all_padding_row_is_the_official_unmasked_average():
  # Official: -10000 on every score of the row is no mask at all; fused kernels must not divide
  # by a zero sum there.
  q, k, v = qkv(jnp.float32)
  mask = padded_mask(3, 128)
  unmasked = core("xla", jnp.float32, jnp.ones_like(mask))(q, k, v)
  official = core("xla", jnp.float32, mask)(q, k, v)
  for impl in FUSED:
    out = core(impl, jnp.float32, mask)(q, k, v)
    # fused_tpu adds the official -10000 itself, so it matches xla's float32 rounding of it.
    expected = official if impl == "fused_tpu" else unmasked
    np.testing.assert_allclose(out[-1], expected[-1], atol=2e-5)


def tiny_config(impl, **overrides):
  fields = dict(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                attention_impl=impl)
  fields.update(overrides)
  return ModelConfig(**fields)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("impl", FUSED)
def test_model_with_fused_attention_equals_xla(impl, dtype):
  batch, length = 3, 128
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 64, (batch, length)))
  mask = padded_mask(batch, length)
  positions = jnp.tile(jnp.arange(4)[None], (batch, 1))
  reference = modeling.AlbertForPreTraining(tiny_config("xla", dtype=dtype))
  params = reference.init(jax.random.PRNGKey(0), ids, mask)["params"]

  def loss(model):
    def fn(p):
      out = model.apply({"params": p}, ids, mask, masked_positions=positions)
      return out["mlm_logits"][:2].sum() + out["sop_logits"][:2].sum()
    return fn

  model = modeling.AlbertForPreTraining(tiny_config(impl, dtype=dtype))
  out = model.apply({"params": params}, ids, mask)
  expected = reference.apply({"params": params}, ids, mask)
  real = np.asarray(mask, bool)
  tol = TOLERANCE[jnp.float32 if dtype == "float32" else jnp.bfloat16]
  for key in ("sequence_output", "mlm_logits"):
    assert np.isfinite(np.asarray(out[key], np.float32)).all()
    np.testing.assert_allclose(np.asarray(out[key], np.float32)[real],
                               np.asarray(expected[key], np.float32)[real],
                               atol=tol * 10, rtol=0)
  grads = jax.grad(loss(model))(params)
  expected_grads = jax.grad(loss(reference))(params)
  for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
    scale = max(1.0, float(jnp.abs(e).max()))
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(e, np.float32),
                               atol=tol * 10 * scale, rtol=0)


@pytest.mark.parametrize("impl", ["splash", "fused_tpu"])
def test_pallas_kernel_under_a_sharded_mesh_equals_xla(impl):
  # data x fsdp x tensor = 2 x 2 x 2: the kernel runs per (batch, heads) shard under shard_map.
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), partitioning.MESH_AXES,
              axis_types=(AxisType.Auto,) * 3)
  q, k, v = qkv(jnp.float32, batch=4, heads=4)
  mask = padded_mask(4, 128)
  expected = core("xla", jnp.float32, mask)(q, k, v)
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.DEFAULT_RULES):
    out = jax.jit(core(impl, jnp.float32, mask))(q, k, v)
    # The batch of 1 that initialization traces does not divide the batch axes: replicated.
    single = jax.jit(core(impl, jnp.float32, mask[:1]))(q[:1], k[:1], v[:1])
  assert_close(out, expected, jnp.float32, mask)
  assert_close(single, expected[:1], jnp.float32, mask[:1])


def device(platform, kind):
  return types.SimpleNamespace(platform=platform, device_kind=kind)


TPU, H100, AMD, CPU = (device("tpu", "TPU v5 lite"), device("gpu", "NVIDIA H100 80GB HBM3"),
                       device("gpu", "AMD Instinct MI300X"), device("cpu", "cpu"))


@pytest.mark.parametrize("dev,dtype,seq_len,dropout,expected", [
    (TPU, "bfloat16", 512, False, "fused_tpu"),
    (TPU, "float32", 128, False, "fused_tpu"),
    (TPU, "bfloat16", 384, False, "fused_tpu"),
    (TPU, "bfloat16", 1024, False, "splash"),      # longer than fused_tpu's scores in VMEM
    (TPU, "bfloat16", 100, False, "xla"),          # the TPU kernels tile the sequence by 128
    (TPU, "bfloat16", 512, True, "xla"),           # attention dropout active (v1 presets)
    (H100, "bfloat16", 512, False, "dot_product_attention"),
    (H100, "float16", 100, False, "dot_product_attention"),
    (H100, "float32", 512, False, "xla"),          # cuDNN flash takes bf16/fp16 only
    (H100, "bfloat16", 512, True, "xla"),
    (AMD, "bfloat16", 512, False, "xla"),
    (CPU, "bfloat16", 512, False, "xla"),
])
def test_auto_picks_the_platform_kernel(dev, dtype, seq_len, dropout, expected):
  assert attention.resolve("auto", dtype=dtype, seq_len=seq_len, dropout_active=dropout,
                           device=dev) == expected


@pytest.mark.parametrize("impl", ["xla", "dot_product_attention", "splash", "fused_tpu"])
def test_an_explicit_choice_is_kept(impl):
  assert attention.resolve(impl, dtype="float32", seq_len=100, dropout_active=False,
                           device=TPU) == impl


def test_auto_on_this_cpu_runs_xla_and_training_dropout_still_works():
  cfg = tiny_config("auto", attention_probs_dropout_prob=0.1)
  ids = jnp.ones((2, 16), jnp.int32)
  model = modeling.AlbertModel(cfg)
  params = model.init(jax.random.PRNGKey(0), ids)["params"]
  train = lambda seed: model.apply({"params": params}, ids, deterministic=False,
                                   rngs={"dropout": jax.random.PRNGKey(seed)})
  assert not np.allclose(train(0)["sequence_output"], train(1)["sequence_output"])


@pytest.mark.parametrize("impl", FUSED)
def test_fused_choice_with_attention_dropout_fails_naming_both_fields(impl):
  with pytest.raises(ValueError, match=r"'attention_impl'.*attention_probs_dropout_prob"):
    tiny_config(impl, attention_probs_dropout_prob=0.1)


def test_unknown_implementation_names_the_allowed_ones():
  with pytest.raises(ValueError, match=r"'attention_impl'.*allowed.*splash"):
    tiny_config("flash")


def test_splash_on_a_tpu_needs_a_multiple_of_128():
  q, k, v = qkv(jnp.float32, length=96)
  with pytest.raises(ValueError, match=r"'attention_impl'='splash'.*multiple of 128, got 96"):
    attention.splash_attention(q, k, v, jnp.ones((3, 96), jnp.int32), device=TPU)


def test_fused_tpu_on_a_tpu_takes_multiples_of_128_up_to_512():
  for length in (96, 1024):
    q, k, v = qkv(jnp.float32, length=length)
    with pytest.raises(ValueError, match=rf"'attention_impl'='fused_tpu'.*up to 512, got {length}"):
      attention.fused_tpu_attention(q, k, v, jnp.ones((3, length), jnp.int32), device=TPU)


@pytest.mark.parametrize("heads,head_dim,expected", [
    (12, 64, 2), (16, 64, 2), (64, 64, 2), (16, 32, 4), (4, 256, 1), (2, 16, 2), (3, 64, 3)])
def test_fused_tpu_blocks_fill_128_lanes(heads, head_dim, expected):
  # (2, 16) and (3, 64): no group fills a multiple of 128 lanes, so one block takes every head.
  assert fused_attention.heads_per_block(heads, head_dim) == expected


def test_cudnn_takes_right_padded_masks_only():
  left_padded = jnp.asarray([[0, 0, 1, 1]])
  with pytest.raises(ValueError, match="right-padded"):
    attention.dot_product_attention(*qkv(jnp.bfloat16, batch=1, length=4), left_padded,
                                    device=H100)


AOT_SCRIPT = """
import sys
from albert_jax.plan import planner as plan
plan.setup_host()
from albert_jax.train import step as trainer
from configs import pretrain as pretrain_config
config = pretrain_config.get_config("size=tiny")
config.data.max_seq_length = 128
config.training.global_batch_size = 16
config.model.attention_impl = sys.argv[1]
config.partitioning.mesh = {"data": 2, "fsdp": 1, "tensor": 2}
_, devices = plan.topology_devices("v5e:2x2")
job = plan.make_job(config, devices)
shardings, state, batch, rng = job.abstract_step_args()
compiled = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                                batch, rng)
text = compiled.as_text()
print("kernels:", text.count("custom_call_target=\\"tpu_custom_call\\""),
      *[name for name in ("splash_mha_fwd", "splash_mha_dkv", "albert_fused_attention_fwd",
                          "albert_fused_attention_bwd") if name in text])
"""


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu")
@pytest.mark.parametrize("impl,kernels", [
    ("splash", "splash_mha_fwd splash_mha_dkv"),
    ("fused_tpu", "albert_fused_attention_fwd albert_fused_attention_bwd"),
    ("auto", "albert_fused_attention_fwd albert_fused_attention_bwd")])
def test_train_step_with_a_pallas_kernel_compiles_for_a_tpu_topology(impl, kernels):
  # Compile only (libtpu on the CPU), on a data x tensor mesh: the kernel runs per shard, and
  # `auto` resolves to fused_tpu from the mesh's devices although this host is a CPU.
  result = subprocess.run([sys.executable, "-c", AOT_SCRIPT, impl], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"kernels: 2 {kernels}" in result.stdout, result.stdout
