"""Training metrics: TensorBoard events, a console progress line, FLOP counting and MFU.

Only process 0 writes. FLOPs are analytic (the model's matmuls, counted once per token, times 3 for
forward + backward; remat recomputation is not counted, as is usual for MFU). MFU is printed only
for devices whose bf16 peak is in PEAK_BF16_FLOPS: an unknown device prints no MFU rather than a
guess.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional

import jax

from albert_jax.model.config import ModelConfig

# Dense bf16 peak FLOP/s per JAX device (a TPU v2/v3 device is one core; v4/v5p one megacore chip).
PEAK_BF16_FLOPS = {
    "TPU v2": 22.5e12, "TPU v3": 61.5e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
    "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12,
    "TPU v6e": 918e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
}


def peak_flops_per_device(device: Any, dtype: str) -> Optional[float]:
  """The device's peak for `dtype` compute, or None when we do not know it."""
  if dtype != "bfloat16":
    return None
  # Exact names only: variants that share a prefix differ (H100 PCIe ~756 vs SXM 989 TFLOP/s).
  return PEAK_BF16_FLOPS.get(getattr(device, "device_kind", ""))


def encoder_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Forward FLOPs per token of the encoder (embedding projection, every layer's matmuls and
  attention over `seq_len` tokens)."""
  h, e, i = cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size
  depth = cfg.num_hidden_layers * cfg.inner_group_num
  per_token_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h  # dense + QK^T and PV
  return depth * per_token_layer + (2 * e * h if cfg.has_embedding_projection else 0)


def pretraining_flops_per_example(cfg: ModelConfig, seq_len: int, num_predictions: int) -> float:
  """Training FLOPs (forward + backward) of one pretraining example."""
  h, e, v = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size
  heads = num_predictions * (2 * h * e + 2 * e * v) + 2 * h * h + 2 * h * 2  # MLM, pooler, SOP
  return 3.0 * (seq_len * encoder_flops_per_token(cfg, seq_len) + heads)


def finetuning_flops_per_example(cfg: ModelConfig, seq_len: int, num_sequences: int = 1) -> float:
  """Training FLOPs (forward + backward) of one fine-tuning example of `num_sequences` sequences
  (a multiple-choice example has one per choice): the encoder's. The task head's (2 x hidden x
  labels per token or per sequence; for ALBERT-base under 0.1% of the encoder's) are not
  counted."""
  return 3.0 * num_sequences * seq_len * encoder_flops_per_token(cfg, seq_len)


class Writer:
  """TensorBoard scalars and a JSON-lines copy (`metrics.jsonl`, full precision, easy to collect)
  from process 0; the other processes write nothing.

  `resumed_at`: the step a resumed run restarts from. Rows logged after it by the interrupted run
  are dropped from metrics.jsonl, since the resumed run logs those steps again.
  """

  def __init__(self, logdir: str, jsonl_path: Optional[str] = None, resumed_at: int = 0):
    self._writer = None
    self._jsonl = None
    self.logdir = logdir
    if jax.process_index() == 0:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._writer = tf.summary.create_file_writer(logdir)
      if jsonl_path:
        # Buckets have no append: keep the rows and rewrite the (small) file on every write.
        self._jsonl_path = jsonl_path
        self._jsonl = []
        if tf.io.gfile.exists(jsonl_path):
          with tf.io.gfile.GFile(jsonl_path) as f:
            self._jsonl = [row for row in f.read().splitlines()
                           if row and json.loads(row)["step"] <= resumed_at]

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in values.items():
        self._tf.summary.scalar(name, value, step=step)
    self._writer.flush()
    if self._jsonl is not None:
      self._jsonl.append(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}))
      with self._tf.io.gfile.GFile(self._jsonl_path + ".tmp", "w") as f:
        f.write("\n".join(self._jsonl) + "\n")
      self._tf.io.gfile.rename(self._jsonl_path + ".tmp", self._jsonl_path, overwrite=True)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class Progress:
  """Steps/s, tokens/s, TFLOP/s per device, MFU and ETA over the last reporting interval."""

  def __init__(self, total_steps: int, start_step: int, tokens_per_step: int,
               flops_per_step: float, num_devices: int, peak_flops: Optional[float]):
    self.total_steps = total_steps
    self.tokens_per_step = tokens_per_step
    self.flops_per_step = flops_per_step
    self.num_devices = num_devices
    self.peak_flops = peak_flops
    self._last_step = start_step
    self._last_time: Optional[float] = None  # set after the first (compiling) step

  def start(self, step: int) -> None:
    """Marks the beginning of timed steps (call after the first step, which compiles)."""
    self._last_step, self._last_time = step, time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    """Throughput figures since the previous report."""
    now = time.perf_counter()
    if self._last_time is None or step <= self._last_step:
      self.start(step)
      return {}
    steps_per_sec = (step - self._last_step) / (now - self._last_time)
    self._last_step, self._last_time = step, now
    flops = steps_per_sec * self.flops_per_step / self.num_devices
    out = {"steps_per_sec": steps_per_sec, "tokens_per_sec": steps_per_sec * self.tokens_per_step,
           "tflops_per_device": flops / 1e12,
           "eta_seconds": (self.total_steps - step) / steps_per_sec}
    if self.peak_flops:
      out["mfu"] = flops / self.peak_flops
    return out


def format_line(step: int, total: int, values: Mapping[str, float]) -> str:
  """One console line: step, loss, learning rate, grad norm, throughput, MFU, ETA."""
  parts = [f"step {step}/{total}"]
  for key, fmt in (("loss", "loss {:.4f}"), ("mlm_accuracy", "mlm_acc {:.4f}"),
                   ("sop_accuracy", "sop_acc {:.4f}"), ("learning_rate", "lr {:.3e}"),
                   ("grad_norm", "gnorm {:.3f}"), ("steps_per_sec", "{:.2f} steps/s"),
                   ("tokens_per_sec", "{:,.0f} tok/s"), ("tflops_per_device", "{:.2f} TFLOP/s/dev"),
                   ("mfu", "MFU {:.1%}"), ("skipped_steps", "skipped {:.0f}")):
    if key in values:
      parts.append(fmt.format(values[key]))
  if "eta_seconds" in values:
    eta = int(values["eta_seconds"])
    parts.append(f"ETA {eta // 3600}h{eta % 3600 // 60:02d}m{eta % 60:02d}s")
  return " | ".join(parts)
