"""The paper's "Speedup" column (Table 2): training throughput relative to BERT-large, measured
on this machine's devices at a chosen sequence length, beside the paper's figures.

    python -m experiments.speedup --seq=512 --batch=32 --dtype=bfloat16   # on an accelerator
    python -m experiments.speedup --seq=128 --batch=8 --timed_steps=2     # CPU (slow, minutes)

Each model's real train step (compiled, sharded over all local devices) runs on synthetic batches;
throughput = examples per second after one warm-up step. The paper measured on TPU v3 at seq 512
and batch 4096 with 125k-step runs, so only the ratios are comparable, not the absolute numbers.
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax

from experiments import bench_train
from experiments import sweeps

_SEQ = flags.DEFINE_integer("seq", 512, "sequence length")
_BATCH = flags.DEFINE_integer("batch", 8, "global batch size")
_STEPS = flags.DEFINE_integer("timed_steps", 3, "timed steps per model")
_DTYPE = flags.DEFINE_string("dtype", "float32", "compute dtype (bfloat16 on TPU/GPU)")
_MODELS = flags.DEFINE_list("models", [r.name for r in sweeps.TABLE2.runs], "Table 2 runs")
_RUNLOCAL = flags.DEFINE_bool("runlocal", False, "tiny stand-ins of the models (smoke test)")


def throughput(run: sweeps.Run) -> float:
  """Training examples per second of `run`'s model."""
  config = sweeps.run_config(run, runlocal=_RUNLOCAL.value)
  config.training.global_batch_size = _BATCH.value
  config.data.max_seq_length = _SEQ.value
  config.data.max_predictions_per_seq = max(1, round(20 * _SEQ.value / 512))
  config.model.dtype = _DTYPE.value
  config.model.max_position_embeddings = max(config.model.max_position_embeddings, _SEQ.value)
  job, compiled, _ = bench_train.compile_job(config)
  return _BATCH.value / bench_train.seconds_per_step(config, job, compiled, _STEPS.value)


def main(argv):
  del argv
  runs = {r.name: r for r in sweeps.TABLE2.runs}
  unknown = set(_MODELS.value) - set(runs)
  if unknown:
    raise app.UsageError(f"--models: unknown {sorted(unknown)}; allowed {sorted(runs)}")
  if "bert_large" not in _MODELS.value:
    raise app.UsageError("--models must include bert_large (the reference)")
  measured = {name: throughput(runs[name]) for name in _MODELS.value}
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, seq {_SEQ.value}, "
        f"batch {_BATCH.value}, {_DTYPE.value}" + (", runlocal stand-ins" if _RUNLOCAL.value
                                                   else ""))
  print("| model | examples/s | speedup (ours) | speedup (paper) |")
  print("|---|---|---|---|")
  for name, value in measured.items():
    print(f"| {name} | {value:.2f} | {value / measured['bert_large']:.2f}x | "
          f"{runs[name].paper['speedup']}x |")


if __name__ == "__main__":
  app.run(main)
