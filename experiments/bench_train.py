"""Training-step benchmark: speed and MFU of one config, and compile time / memory against depth.

    # speed of the real (compiled, sharded) train step on synthetic batches
    python -m experiments.bench_train speed --config=configs/pretrain.py:size=base \\
        --config.training.global_batch_size=8 --config.data.max_seq_length=128
    # the same, plus the forward pass, forward + backward, and the step's dense matmuls and
    # attention core timed on their own
    python -m experiments.bench_train speed ... --breakdown
    # one row per attention implementation (model.attention_impl), e.g. on an NVIDIA GPU:
    python -m experiments.bench_train speed --config=configs/pretrain.py:size=large \\
        --config.model.dtype=bfloat16 --config.data.max_seq_length=512 \\
        --config.training.global_batch_size=32 --attention_impls=xla,dot_product_attention

    # compile time and XLA temp memory for L = 12/24/48, `all` sharing: scan vs unrolled, remat
    # off / per layer / per layer inside sqrt(L) rematerialized blocks
    python -m experiments.bench_train depth --config=configs/pretrain.py:size=base \\
        --config.training.global_batch_size=8 --config.data.max_seq_length=128

MFU is reported against the device's peak: the bf16 table in albert_jax/train/metrics.py on TPU/GPU, and on
the CPU the matmul throughput measured in the same run (the fastest of a few large float32
`jnp.dot`s), which is the honest ceiling for a CPU (the step's own dtype is float32 there).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from albert_jax.model import attention
from albert_jax.train import metrics
from albert_jax.train import partitioning
from albert_jax.train import pretrain
from albert_jax.train import step as trainer
from albert_jax.model.config import ATTENTION_IMPLS, ModelConfig

from experiments import step_parts


def define_flags() -> None:
  """The benchmark's flags (defined only when run as a program: experiments/speedup.py imports
  this module's timing functions)."""
  config_flags.DEFINE_config_file("config", None, "pretraining config", lock_config=False)
  flags.DEFINE_integer("steps", 10, "timed steps (after one warm-up step)")
  flags.DEFINE_bool("breakdown", False, "speed: also time the forward pass, forward + backward, "
                    "and the step's dense matmuls and attention core alone")
  flags.DEFINE_list("attention_impls", [], "speed: one run and one table row per "
                    f"model.attention_impl ({', '.join(ATTENTION_IMPLS)}); empty: the config's "
                    "own")
  flags.DEFINE_list("depths", ["12", "24", "48"], "depths for the `depth` benchmark")
  flags.mark_flags_as_required(["config"])


def measured_matmul_peak(sizes: Sequence[int] = (1024, 2048, 4096), dtype=jnp.float32,
                         repeats: int = 3) -> float:
  """FLOP/s of the fastest square matmul of `sizes` on the default device (best of `repeats`).

  Several sizes, because the largest is not the fastest: on a 2-core AMD EPYC a 2048^2 float32
  matmul runs at about 470 GFLOP/s and a 4096^2 one at about 390.
  """
  dot = jax.jit(lambda x: x @ x)
  seconds = lambda n: step_parts.best_seconds(dot, jnp.ones((n, n), dtype), repeats=repeats)
  return max(2 * n ** 3 / seconds(n) for n in sizes)


def compile_job(config):
  """(job, compiled step, seconds to lower + compile) for the abstract state and batch."""
  job = pretrain.build_job(config)
  shardings, state, batch, rng = job.abstract_step_args()
  start = time.perf_counter()
  compiled = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                                  batch, rng)
  return job, compiled, time.perf_counter() - start


def seconds_per_step(config, job, compiled, steps: int) -> float:
  """Mean wall time of `steps` compiled steps on synthetic batches, after one warm-up step."""
  state, _ = job.create_state()
  batches = [partitioning.global_batch(step_parts.synthetic_batch(config, i), job.mesh)
             for i in range(2)]
  state, m = compiled(state, batches[0], job.rng)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for i in range(steps):
    state, m = compiled(state, batches[i % 2], job.rng)
  jax.block_until_ready(m)
  return (time.perf_counter() - start) / steps


def breakdown(config, job, step_seconds: float, flops: float, peak: Optional[float]) -> None:
  """Where the step's time goes: a table of parts, each timed on its own (`flops`: the step's)."""
  t, d = config.training, config.data
  devices = jax.device_count()
  parts = step_parts.loss_seconds(config, job)
  rows = [("train step (forward, backward, LAMB update)", step_seconds, flops, devices),
          ("forward + backward (no update)", parts["forward + backward"], flops, devices),
          ("forward", parts["forward"], flops / 3, devices)]
  data_parallel = partitioning.data_parallel_size(job.mesh)
  # The parts alone run unsharded on one device, at the rows one device sees without tensor
  # parallelism (with it, each device's matmuls are narrower and these shapes would not apply).
  if job.mesh.shape["tensor"] == 1 and t.global_batch_size % data_parallel == 0:
    per_device = t.global_batch_size // data_parallel
    with jax.default_device(jax.devices()[0]):
      for name, (fn, args, part_flops) in (
          ("dense matmuls alone, fwd + bwd (1 device)",
           step_parts.dense_matmuls_alone(job.model_config, per_device * d.max_seq_length)),
          ("attention core alone, fwd + bwd (1 device)",
           step_parts.attention_core_alone(job.model_config, per_device, d.max_seq_length))):
        rows.append((name, step_parts.best_seconds(fn, *args), part_flops, 1))
  print("| part | ms | TFLOP/s per device | of peak |")
  print("|---|---|---|---|")
  for name, seconds, part_flops, n in rows:
    rate = part_flops / seconds / n
    share = f"{rate / peak:.1%}" if peak else "-"
    print(f"| {name} | {seconds * 1e3:.1f} | {rate / 1e12:.3f} | {share} |")


def speed_row(config, steps: int, with_breakdown: bool) -> dict[str, float]:
  """Compiles and times one config's step (`steps` timed steps, and the `breakdown` of its parts
  if asked); prints its figures and returns them for the table."""
  job, compiled, compile_seconds = compile_job(config)
  device = jax.devices()[0]
  peak = metrics.peak_flops_per_device(device, job.model_config.dtype)
  source = "bf16 table"
  cpu_peak = peak is None and device.platform == "cpu"
  # On a (possibly shared) CPU the matmul peak is measured before and after the timed steps and the
  # higher figure is kept: interference can only make either measurement lower.
  before = measured_matmul_peak() if cpu_peak else None
  step_seconds = seconds_per_step(config, job, compiled, steps)
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
  print(trainer.describe_memory(compiled), flush=True)
  if with_breakdown:
    breakdown(config, job, step_seconds, flops, peak)
  memory = compiled.memory_analysis()
  return {"compile": compile_seconds, "step": step_seconds, "per_device": per_device,
          "tokens": t.global_batch_size * d.max_seq_length / step_seconds,
          "mfu": per_device / peak if peak else float("nan"),
          "temp": memory.temp_size_in_bytes / 2**20 if memory else float("nan")}


def speed(config, attention_impls: Sequence[str], steps: int, with_breakdown: bool) -> None:
  """The config's step, or one run per entry of `attention_impls` and a table of them."""
  impls = list(attention_impls) or [config.model.attention_impl]
  rows = []
  for impl in impls:
    c = config.copy_and_resolve_references()
    c.model.attention_impl = impl
    model = ModelConfig.from_any(c.model)
    runs_as = attention.resolve(impl, dtype=model.dtype, seq_len=c.data.max_seq_length,
                                dropout_active=model.attention_probs_dropout_prob > 0)
    print(f"== model.attention_impl={impl} (runs as {runs_as})", flush=True)
    rows.append((impl, runs_as, speed_row(c, steps, with_breakdown)))
  if len(rows) > 1:
    print("| attention_impl | runs as | compile s | step ms | tokens/s | TFLOP/s per device | MFU "
          "| temp MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for impl, runs_as, r in rows:
      print(f"| {impl} | {runs_as} | {r['compile']:.1f} | {r['step'] * 1e3:.1f} | "
            f"{r['tokens']:,.0f} | {r['per_device'] / 1e12:.3f} | {r['mfu']:.1%} | "
            f"{r['temp']:.0f} |")


# (loop, remat_policy, remat_scan_blocks) per row of the depth table; blocks 0 = about sqrt(L).
DEPTH_VARIANTS = (("scan", "none", 1), ("scan", "nothing_saveable", 1),
                  ("scan", "nothing_saveable", 0), ("unrolled", "none", 1),
                  ("unrolled", "nothing_saveable", 1))


def depth(config, depths: Sequence[int]) -> None:
  """Compile time and temporary memory of the step at each depth, per DEPTH_VARIANTS row."""
  print("| L | loop | remat | blocks | compile s | temp MiB |")
  print("|---|---|---|---|---|---|")
  for layers in depths:
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
    raise app.UsageError("usage: python -m experiments.bench_train speed|depth --config=...")
  f = flags.FLAGS
  if argv[1] == "speed":
    speed(f.config, f.attention_impls, f.steps, f.breakdown)
  else:
    depth(f.config, [int(d) for d in f.depths])


if __name__ == "__main__":
  define_flags()
  app.run(main)
