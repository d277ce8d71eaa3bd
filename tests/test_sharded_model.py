"""The model under a (data, fsdp, tensor) mesh of 8 fake CPU devices: same outputs, sharded params."""

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from albert_jax.model import modeling
from albert_jax.train import partitioning

CFG = dict(vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=4,
           num_attention_heads=4, intermediate_size=32, max_position_embeddings=16,
           num_hidden_groups=2, layer_sharing="attention")


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  return partitioning.create_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])


def test_sharded_forward_matches_single_device(mesh):
  model = modeling.AlbertForPreTraining(CFG)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 64, (4, 12))
  mask = np.ones((4, 12), np.int32)
  mask[2, 7:] = 0
  init = lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12), jnp.int32))
  rules = partitioning.DEFAULT_RULES
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init)
    shardings = partitioning.logical_shardings(abstract, mesh, rules)
    params = nn.unbox(jax.jit(init, out_shardings=shardings)())["params"]
    batch = partitioning.global_batch({"ids": ids, "mask": mask}, mesh)
    sharded = jax.jit(lambda p, b: model.apply({"params": p}, b["ids"], b["mask"]))(params, batch)

  layer = params["albert"]["encoder"]["groups"]["layers"]["albert_layers_0"]
  assert layer["attention"]["query"]["kernel"].sharding.spec == jax.P(None, "fsdp", "tensor")
  assert layer["ffn_output"]["kernel"].sharding.spec == jax.P(None, None, "tensor", "fsdp")
  assert params["albert"]["embeddings"]["word_embeddings"]["embedding"].sharding.spec == jax.P(
      "tensor", None)
  assert sharded["sequence_output"].sharding.spec[0] == ("data", "fsdp")

  host = jax.device_get(params)
  single = model.apply({"params": host}, ids, mask)
  for key in single:
    np.testing.assert_allclose(np.asarray(sharded[key]), single[key], atol=2e-5, err_msg=key)


def test_mesh_errors_name_the_field():
  with pytest.raises(ValueError, match="partitioning.mesh"):
    partitioning.create_mesh({"data": 3}, jax.devices()[:1] * 1)
  with pytest.raises(ValueError, match="partitioning.mesh"):
    partitioning.create_mesh({"data": -1, "tensor": -1})
  with pytest.raises(ValueError, match="unknown axes"):
    partitioning.create_mesh({"model": 1})
