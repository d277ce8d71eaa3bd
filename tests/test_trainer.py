"""The train step on meshes of 8 fake CPU devices, gradient accumulation, the NaN guard, checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.train import partitioning
from albert_jax.train import pretrain
from albert_jax.train import step as trainer
from albert_jax.train import warm_start
from tests.trainer_fixtures import synthetic_batch, tiny_config


def run_steps(config, devices, batches):
  """Losses and final params of len(batches) steps of the compiled training step."""
  job = pretrain.build_job(config, devices)
  state, shardings = job.create_state()
  step = None
  losses = []
  for batch in batches:
    global_batch = partitioning.global_batch(batch, job.mesh)
    if step is None:
      step = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                                  global_batch, job.rng)
    state, metrics = step(state, global_batch, job.rng)
    losses.append(float(metrics["loss"]))
  return np.array(losses), state


@pytest.fixture(scope="module")
def devices():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices")
  return jax.devices()[:8]


@pytest.fixture(scope="module")
def reference(devices):
  config = tiny_config()
  config.partitioning.mesh = {"data": 1, "fsdp": 1, "tensor": 1}
  batches = [synthetic_batch(config, seed) for seed in range(3)]
  losses, state = run_steps(config, devices[:1], batches)
  return config, batches, losses, jax.device_get(state.params)


@pytest.mark.parametrize("mesh", [dict(data=8, fsdp=1, tensor=1), dict(data=2, fsdp=4, tensor=1),
                                  dict(data=2, fsdp=1, tensor=4)], ids=["data8", "fsdp4", "tensor4"])
def test_meshes_give_single_device_losses(devices, reference, mesh):
  config, batches, ref_losses, ref_params = reference
  config = config.copy_and_resolve_references()
  config.partitioning.mesh = mesh
  losses, state = run_steps(config, devices, batches)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(state.params), ref_params)

  # Parameters and their Adam moments lie on the devices as the rules say.
  layer = state.params["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  expect_fsdp = "fsdp" if mesh["fsdp"] > 1 else None
  expect_tensor = "tensor" if mesh["tensor"] > 1 else None
  spec = layer["attention"]["query"]["kernel"].sharding.spec
  assert tuple(spec) + (None,) * (3 - len(spec)) == (None, "fsdp", "tensor")
  query = layer["attention"]["query"]["kernel"]
  shard = query.addressable_shards[0].data.shape
  assert shard == (1, 32 // (4 if expect_fsdp else 1), 32 // (4 if expect_tensor else 1))
  adam_m = state.opt_state[1][0].m["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  assert adam_m["attention"]["query"]["kernel"].sharding == query.sharding


@pytest.mark.parametrize("model", [dict(remat_policy="matmul_and_layernorm_inputs"),
                                   dict(remat_policy="nothing_saveable", remat_scan_blocks=2)],
                         ids=["named_residuals", "remat_blocks"])
def test_remat_on_a_mesh_gives_single_device_losses(devices, reference, model):
  config, batches, ref_losses, ref_params = reference
  config = config.copy_and_resolve_references()
  config.partitioning.mesh = {"data": 2, "fsdp": 2, "tensor": 2}
  config.model.update(model)
  losses, state = run_steps(config, devices, batches)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(state.params), ref_params)


def test_gradient_accumulation_equals_large_batch(devices, reference):
  config, batches, ref_losses, ref_params = reference
  config = config.copy_and_resolve_references()
  config.training.microbatches = 4
  config.partitioning.mesh = {"data": 2, "fsdp": 1, "tensor": 1}
  losses, state = run_steps(config, devices[:2], batches)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(state.params), ref_params)


def test_nonfinite_step_is_skipped_and_counted(devices):
  config = tiny_config()
  config.partitioning.mesh = {"data": 1}
  job = pretrain.build_job(config, devices[:1])
  state, shardings = job.create_state()
  step = jax.jit(trainer.make_train_step(job.objective, job.tx, job.learning_rate_fn))
  good = partitioning.global_batch(synthetic_batch(config), job.mesh)
  bad = dict(good, masked_lm_weights=jnp.full_like(good["masked_lm_weights"], jnp.nan))
  before = jax.device_get(state.params)
  state, metrics = step(state, bad, job.rng)
  assert not bool(metrics["finite"]) and int(state.skipped_steps) == 1
  assert int(state.nonfinite_streak) == 1 and int(state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)
  state, _ = step(state, bad, job.rng)
  assert int(state.nonfinite_streak) == 2
  state, metrics = step(state, good, job.rng)
  assert bool(metrics["finite"]) and int(state.nonfinite_streak) == 0
  assert int(state.skipped_steps) == 2
  # The update used (and the metrics report) the learning rate of step 2: skipped steps advance
  # the schedule's counter like the step count.
  counters = [int(x) for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype,
                                                                                   jnp.integer)]
  assert counters and all(c == int(state.step) == 3 for c in counters)
  np.testing.assert_allclose(metrics["learning_rate"], job.learning_rate_fn(2), rtol=1e-6)


@pytest.mark.parametrize("change,field", [
    (lambda c: c.training.update(global_batch_size=12), "training.global_batch_size"),
    (lambda c: c.partitioning.mesh.update(data=16), "partitioning.mesh"),
    (lambda c: c.data.update(max_seq_length=1024), "data.max_seq_length"),
    (lambda c: c.training.update(microbatches=3), "training.microbatches"),
    (lambda c: c.training.update(log_every_steps=0), "training.log_every_steps"),
    (lambda c: c.training.update(eval_every_steps=0), "training.eval_every_steps"),
    (lambda c: c.training.update(keep_checkpoints=0), "training.keep_checkpoints"),
    (lambda c: c.training.update(max_nonfinite_steps=0), "training.max_nonfinite_steps"),
    (lambda c: c.training.update(checkpoint_every_steps=-1), "training.checkpoint_every_steps"),
    (lambda c: c.training.update(eval_max_batches=-1), "training.eval_max_batches"),
    (lambda c: c.data.update(spm_model="/nonexistent/spiece.model"), "data.spm_model"),
    (lambda c: (c.training.update(eval_batch_size=12),
                c.data.update(eval_files=c.data.train_files)), "training.eval_batch_size"),
    (lambda c: c.training.update(inter_sentence_loss="sopp"), "training.inter_sentence_loss"),
])
def test_invalid_configs_fail_before_compiling(devices, change, field, static_records):
  config = tiny_config(str(static_records / "*.tfrecord"))
  config.partitioning.mesh = {"data": 8, "fsdp": 1, "tensor": 1}
  change(config)
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    pretrain.validate(config, 1)


@pytest.mark.parametrize("field,value", [("microbatches", 0), ("total_steps", 0),
                                         ("log_every_steps", 0), ("eval_every_steps", 0),
                                         ("eval_batch_size", 0), ("keep_checkpoints", 0),
                                         ("max_nonfinite_steps", 0), ("checkpoint_every_steps", -1)])
def test_loop_fields_shared_by_pretraining_and_fine_tuning(field, value):
  training = tiny_config().training
  trainer.check_loop_fields(training)
  training[field] = value
  with pytest.raises(ValueError, match=rf"'training\.{field}'={value}"):
    trainer.check_loop_fields(training)


def test_missing_data_files(tmp_path):
  config = tiny_config(str(tmp_path / "nothing-*.tfrecord"))
  config.partitioning.mesh = {"data": -1}
  with pytest.raises(ValueError, match=r"data\.train_files"):
    pretrain.validate(config, 1)


def test_vocab_smaller_than_tokenizer(spm_model, static_records):
  config = tiny_config(str(static_records / "*.tfrecord"))
  config.data.spm_model = spm_model
  config.model.vocab_size = 1000
  config.partitioning.mesh = {"data": -1}
  with pytest.raises(ValueError, match="model.vocab_size"):
    pretrain.validate(config, 1)


def test_warm_start_group0_grows_depth_and_groups():
  small = tiny_config()
  big = tiny_config()
  big.model.num_hidden_layers = 4
  big.model.num_hidden_groups = 2
  init = lambda c: nn.unbox(pretrain.build_objective(c)[0].init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  source, target = init(small), init(big)
  with pytest.raises(ValueError, match="group0"):
    warm_start.fit_params(source, target, group0=False)
  fitted = warm_start.fit_params(source, target, group0=True)
  src_layer = source["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  dst_layer = fitted["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  for g in range(2):
    np.testing.assert_array_equal(dst_layer["ffn"]["kernel"][g], src_layer["ffn"]["kernel"][0])
  # From a source with as many groups: still every group from the source's group 0.
  refit = warm_start.fit_params(init(big), target, group0=True)
  big_layer = init(big)["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  assert not np.array_equal(big_layer["ffn"]["kernel"][1], big_layer["ffn"]["kernel"][0])
  np.testing.assert_array_equal(
      refit["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]["ffn"]["kernel"][1],
      big_layer["ffn"]["kernel"][0])
  # All-shared layers: a 2-layer checkpoint initializes a 12-layer model as is.
  deep = tiny_config()
  deep.model.num_hidden_layers = 12
  same = warm_start.fit_params(source, init(deep), group0=False)
  jax.tree.map(np.testing.assert_array_equal, same, source)
