"""Training-step benchmark: speed and MFU of one config, and compile time / memory against depth.

    # speed of the real (compiled, sharded) train step on synthetic batches
    python experiments/bench_train.py speed --config=configs/pretrain.py:size=base \\
        --config.training.global_batch_size=8 --config.data.max_seq_length=128
    # the same, plus the forward pass, forward + backward, and the step's dense matmuls and
    # attention core timed on their own
    python experiments/bench_train.py speed ... --breakdown

    # compile time and XLA temp memory for L = 12/24/48, `all` sharing: scan vs unrolled, remat
    # off / per layer / per layer inside sqrt(L) rematerialized blocks
    python experiments/bench_train.py depth --config=configs/pretrain.py:size=base \\
        --config.training.global_batch_size=8 --config.data.max_seq_length=128

MFU is reported against the device's peak: the bf16 table in albert_jax/metrics.py on TPU/GPU, and on
the CPU the matmul throughput measured in the same run (the fastest of a few large float32
`jnp.dot`s), which is the honest ceiling for a CPU (the step's own dtype is float32 there).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from albert_jax import metrics, modeling, partitioning, pretrain, trainer
from albert_jax.model_config import ModelConfig

_CONFIG = config_flags.DEFINE_config_file("config", None, "pretraining config", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps (after one warm-up step)")
_BREAKDOWN = flags.DEFINE_bool(
    "breakdown", False, "speed: also time the forward pass, forward + backward, and the step's "
    "dense matmuls and attention core alone")
_DEPTHS = flags.DEFINE_list("depths", ["12", "24", "48"], "depths for the `depth` benchmark")


def measured_matmul_peak(sizes: Sequence[int] = (1024, 2048, 4096), dtype=jnp.float32,
                         repeats: int = 3) -> float:
  """FLOP/s of the fastest square matmul of `sizes` on the default device (best of `repeats`).

  Several sizes, because the largest is not the fastest: on a 2-core AMD EPYC a 2048^2 float32
  matmul runs at about 470 GFLOP/s and a 4096^2 one at about 390.
  """
  dot = jax.jit(lambda x: x @ x)
  return max(2 * n ** 3 / best_seconds(dot, jnp.ones((n, n), dtype), repeats=repeats)
             for n in sizes)


def best_seconds(fn: Callable[..., Any], *args: Any, repeats: int = 3) -> float:
  """Best wall time of `fn(*args)` over `repeats` calls, after one warm-up (compiling) call."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def compile_job(config):
  """(job, compiled step, seconds to lower + compile) for the abstract state and batch."""
  job = pretrain.build_job(config)
  abstract, shardings = job.abstract_state()
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  rng = jax.ShapeDtypeStruct(job.rng.shape, job.rng.dtype)
  start = time.perf_counter()
  compiled = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, abstract,
                                  job.abstract_batch(), rng)
  return job, compiled, time.perf_counter() - start


def seconds_per_step(config, job, compiled, steps: int) -> float:
  """Mean wall time of `steps` compiled steps on synthetic batches, after one warm-up step."""
  state, _ = job.create_state()
  batches = [partitioning.global_batch(pretrain.synthetic_batch(config, i), job.mesh)
             for i in range(2)]
  state, m = compiled(state, batches[0], job.rng)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for i in range(steps):
    state, m = compiled(state, batches[i % 2], job.rng)
  jax.block_until_ready(m)
  return (time.perf_counter() - start) / steps


def loss_seconds(config, job) -> dict[str, float]:
  """Best seconds of the pretraining loss's forward pass and of its forward + backward (the step
  without the optimizer update), with the step's parameters, batch, dropout and mesh."""
  state, _ = job.create_state()
  batch = partitioning.global_batch(pretrain.synthetic_batch(config, 0), job.mesh)
  objective = job.objective

  def loss(params, batch, rng):
    outputs = objective.forward(params, batch, rng, False)
    return objective.loss_and_sums(outputs, batch, objective.normalizers(batch))[0]

  with jax.set_mesh(job.mesh), nn.logical_axis_rules(partitioning.rules_tuple(job.rules)):
    return {"forward": best_seconds(jax.jit(loss), state.params, batch, job.rng),
            "forward + backward": best_seconds(jax.jit(jax.grad(loss)), state.params, batch,
                                               job.rng)}


def _depth(cfg: ModelConfig) -> int:
  return cfg.num_hidden_layers * cfg.inner_group_num


def dense_matmuls_alone(cfg: ModelConfig, rows: int):
  """(fn, args, FLOPs): the encoder's dense matmuls alone, forward + backward, on one device.

  L layers of x [rows, H] -> query + key + value projections -> output projection -> the two FFN
  matmuls, with shared weights: every dense matmul of the real step (x @ W forward, dy @ W^T and
  x^T @ dy backward) and nothing in between.
  """
  h, i = cfg.hidden_size, cfg.intermediate_size
  keys = jax.random.split(jax.random.PRNGKey(0), 7)
  # Scaled so that activations keep unit size through any depth (3 projections are summed).
  fan_in = [3 * h, 3 * h, 3 * h, h, h, i]
  shapes = [(h, h)] * 4 + [(h, i), (i, h)]
  weights = [(jax.random.normal(k, s) / fan ** 0.5).astype(cfg.dtype)
             for k, s, fan in zip(keys, shapes, fan_in)]
  x = jax.random.normal(keys[6], (rows, h)).astype(cfg.dtype)

  def loss(weights, x):
    wq, wk, wv, wo, w1, w2 = weights
    layer = lambda x, _: ((((x @ wq + x @ wk + x @ wv) @ wo) @ w1) @ w2, None)
    return jnp.sum(jax.lax.scan(layer, x, None, length=_depth(cfg))[0].astype(jnp.float32))

  flops = 3 * 2 * rows * (4 * h * h + 2 * h * i) * _depth(cfg)
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (weights, x), flops


def attention_core_alone(cfg: ModelConfig, batch: int, seq: int):
  """(fn, args, FLOPs): `modeling.attention_core` alone (QK^T, mask, softmax, PV) for L layers,
  forward + backward, on one device at the step's per-device shapes."""
  shape = (batch, seq, cfg.num_attention_heads, cfg.head_dim)
  x = jax.random.normal(jax.random.PRNGKey(0), shape).astype(cfg.dtype)
  mask_bias = jnp.zeros((batch, 1, 1, seq), jnp.float32)

  def loss(x):
    layer = lambda x, _: (modeling.attention_core(x, x, x, mask_bias, lambda p: p, cfg.dtype),
                          None)
    return jnp.sum(jax.lax.scan(layer, x, None, length=_depth(cfg))[0].astype(jnp.float32))

  flops = 3 * 2 * 2 * batch * seq * seq * cfg.hidden_size * _depth(cfg)
  return jax.jit(jax.grad(loss)), (x,), flops


def breakdown(config, job, step_seconds: float, peak: Optional[float]) -> None:
  """Where the step's time goes: a table of parts, each timed on its own."""
  t, d = config.training, config.data
  devices = jax.device_count()
  flops = t.global_batch_size * metrics.pretraining_flops_per_example(
      job.model_config, d.max_seq_length, d.max_predictions_per_seq)
  rows = [("train step (forward, backward, LAMB update)", step_seconds, flops, devices)]
  parts = loss_seconds(config, job)
  rows.append(("forward + backward (no update)", parts["forward + backward"], flops, devices))
  rows.append(("forward", parts["forward"], flops / 3, devices))
  if t.global_batch_size % devices == 0:
    per_device = t.global_batch_size // devices
    with jax.default_device(jax.devices()[0]):
      for name, (fn, args, part_flops) in (
          ("dense matmuls alone, fwd + bwd (1 device)",
           dense_matmuls_alone(job.model_config, per_device * d.max_seq_length)),
          ("attention core alone, fwd + bwd (1 device)",
           attention_core_alone(job.model_config, per_device, d.max_seq_length))):
        rows.append((name, best_seconds(fn, *args), part_flops, 1))
  print("| part | ms | TFLOP/s per device | of peak |")
  print("|---|---|---|---|")
  for name, seconds, part_flops, n in rows:
    rate = part_flops / seconds / n
    share = f"{rate / peak:.1%}" if peak else "-"
    print(f"| {name} | {seconds * 1e3:.1f} | {rate / 1e12:.3f} | {share} |")


def speed(config) -> None:
  job, compiled, compile_seconds = compile_job(config)
  device = jax.devices()[0]
  peak = metrics.peak_flops_per_device(device, job.model_config.dtype)
  source = "bf16 table"
  cpu_peak = peak is None and device.platform == "cpu"
  # On a (possibly shared) CPU the matmul peak is measured before and after the timed steps and the
  # higher figure is kept: interference can only make either measurement lower.
  before = measured_matmul_peak() if cpu_peak else None
  step_seconds = seconds_per_step(config, job, compiled, _STEPS.value)
  if cpu_peak:
    peak, source = max(before, measured_matmul_peak()), "measured float32 matmul"
  t, d = config.training, config.data
  flops = t.global_batch_size * metrics.pretraining_flops_per_example(
      job.model_config, d.max_seq_length, d.max_predictions_per_seq)
  per_device = flops / step_seconds / jax.device_count()
  print(f"device: {device.device_kind} x{jax.device_count()}")
  print(f"compile {compile_seconds:.1f} s | step {step_seconds * 1e3:.1f} ms | "
        f"{t.global_batch_size * d.max_seq_length / step_seconds:,.0f} tokens/s | "
        f"{per_device / 1e12:.3f} TFLOP/s per device (analytic model FLOPs)")
  if peak:
    print(f"peak {peak / 1e12:.3f} TFLOP/s per device ({source}) -> MFU {per_device / peak:.1%}")
  else:
    print("no known peak for this device and dtype: MFU not reported")
  print(trainer.describe_memory(compiled))
  if _BREAKDOWN.value:
    breakdown(config, job, step_seconds, peak)


# (loop, remat_policy, remat_scan_blocks) per row of the depth table; blocks 0 = about sqrt(L).
DEPTH_VARIANTS = (("scan", "none", 1), ("scan", "nothing_saveable", 1),
                  ("scan", "nothing_saveable", 0), ("unrolled", "none", 1),
                  ("unrolled", "nothing_saveable", 1))


def depth(config) -> None:
  print("| L | loop | remat | blocks | compile s | temp MiB |")
  print("|---|---|---|---|---|---|")
  for layers in map(int, _DEPTHS.value):
    for loop, remat, blocks in DEPTH_VARIANTS:
      c = config.copy_and_resolve_references()
      c.model.num_hidden_layers = layers
      c.model.layer_sharing = "all"
      c.model.scan_unroll = layers if loop == "unrolled" else 1
      c.model.remat_policy = remat
      c.model.remat_scan_blocks = blocks
      job, compiled, seconds = compile_job(c)
      temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
      print(f"| {layers} | {loop} | {remat} | {job.model_config.depth_blocks} | {seconds:.1f} | "
            f"{temp:.1f} |", flush=True)


def main(argv):
  if len(argv) != 2 or argv[1] not in ("speed", "depth"):
    raise app.UsageError("usage: bench_train.py speed|depth --config=...")
  {"speed": speed, "depth": depth}[argv[1]](_CONFIG.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
