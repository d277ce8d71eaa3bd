"""albert_jax: ALBERT in JAX/Flax (model, checkpoint interop, data, training)."""
