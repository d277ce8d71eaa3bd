"""The roofline of a compiled step: the compiler's estimate of how fast it can possibly run.

XLA's `cost_analysis()` of a compiled program gives its FLOPs and the bytes it moves to and from
HBM (per device, after fusion). Against the chip's peak FLOP/s and HBM bandwidth
(albert_jax/plan/tpu_specs.py) the step cannot take less than
    max(FLOPs / peak, bytes accessed / bandwidth),
and the model FLOPs utilization it can reach is at most (the "MFU ceiling")
    analytic FLOPs / (that time x peak),
analytic FLOPs being the model's own (metrics.pretraining_flops_per_example): XLA's FLOPs also
count elementwise work and rematerialization, which MFU does not credit. The arithmetic intensity
FLOPs / bytes against the chip's ridge, peak / bandwidth, says which bound applies (FLOPs being
the larger of XLA's and the analytic count, as in the compute time).

These are the compiler's estimates, never measurements: XLA's cost model does not know about
overlap, stalls or collectives' latency, so a real step is usually slower. XLA counts a while-loop
body once whatever its trip count; `estimate` counts each loop body of the compiled step (the depth
scan, the microbatch scan) as often as it runs (albert_jax/plan/loop_costs.py), so the figures are
those of the program training runs, at no second compile. Pallas kernels (splash and fused_tpu
attention) are custom calls whose FLOPs cost_analysis() does not count; the report says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from albert_jax.plan import loop_costs
from albert_jax.plan import tpu_specs


@dataclasses.dataclass(frozen=True)
class Roofline:
  """One compiled step against one chip, per device."""

  flops: float                 # XLA's cost_analysis(), loop bodies counted as often as they run
  bytes_accessed: float        # XLA's cost_analysis(), loop bodies counted as often as they run
  analytic_flops: float        # the model's FLOPs (matmuls), per device
  peak_flops: float            # FLOP/s per device
  hbm_bandwidth: float         # bytes/s per device
  kernel_calls: int = 0        # Pallas/Mosaic kernels in the program: opaque to cost_analysis()
  loops: tuple[loop_costs.Loop, ...] = ()  # the while loops counted

  @property
  def compute_seconds(self) -> float:
    """At peak, for the larger of XLA's and the analytic FLOPs: cost_analysis() counts a Pallas
    kernel (splash attention) as no FLOPs, and the analytic count is a floor of the real work."""
    return max(self.flops, self.analytic_flops) / self.peak_flops

  @property
  def hbm_seconds(self) -> float:
    return self.bytes_accessed / self.hbm_bandwidth

  @property
  def step_seconds(self) -> float:
    """The least time the step can take by this estimate."""
    return max(self.compute_seconds, self.hbm_seconds)

  @property
  def intensity(self) -> float:
    """FLOPs per byte of HBM traffic, of the FLOPs compute_seconds counts (so that the intensity
    is above the ridge exactly when the step is compute-bound)."""
    return max(self.flops, self.analytic_flops) / self.bytes_accessed

  @property
  def ridge(self) -> float:
    """The intensity at which the chip's compute and HBM limits meet."""
    return self.peak_flops / self.hbm_bandwidth

  @property
  def bound(self) -> str:
    return "compute" if self.compute_seconds >= self.hbm_seconds else "HBM"

  @property
  def mfu_ceiling(self) -> float:
    """The highest MFU the step can reach if it ran at this estimate."""
    return self.analytic_flops / (self.step_seconds * self.peak_flops)


def roofline(flops: float, bytes_accessed: float, analytic_flops: float,
             spec: tpu_specs.TpuSpec, kernel_calls: int = 0,
             loops: tuple[loop_costs.Loop, ...] = ()) -> Roofline:
  """The roofline of a step of `flops` and `bytes_accessed` (XLA's, per device) on `spec`."""
  if flops <= 0 or bytes_accessed <= 0:
    raise ValueError(f"cost_analysis() gave flops={flops}, bytes accessed={bytes_accessed}: "
                     "both must be positive")
  return Roofline(flops=flops, bytes_accessed=bytes_accessed, analytic_flops=analytic_flops,
                  peak_flops=spec.peak_flops_per_device,
                  hbm_bandwidth=spec.hbm_bandwidth_per_device, kernel_calls=kernel_calls,
                  loops=loops)


def estimate(compiled: Any, spec: tpu_specs.TpuSpec,
             analytic_per_device: float) -> tuple[Optional[Roofline], str]:
  """(the roofline of a compiled step, each loop body counted as often as it runs, or None; why
  there is none)."""
  flops, bytes_accessed = from_compiled(compiled)
  if not flops or not bytes_accessed:
    return None, "cost_analysis() of the step gave no FLOPs or bytes"
  text = compiled.as_text()
  try:
    flops, bytes_accessed, loops = loop_costs.scale(flops, bytes_accessed, text)
  except loop_costs.LoopCostError as e:
    return None, f"a loop of the compiled step cannot be counted: {e}"
  kernels = text.count('custom_call_target="tpu_custom_call"')
  return roofline(flops, bytes_accessed, analytic_per_device, spec, kernels, tuple(loops)), ""


def from_compiled(compiled: Any) -> tuple[Optional[float], Optional[float]]:
  """(flops, bytes accessed) of a compiled program, None where the backend does not say."""
  cost = compiled.cost_analysis()  # a dict; a one-element list in older jax
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  cost = cost or {}
  get = lambda key: float(cost[key]) if key in cost else None
  return get("flops"), get("bytes accessed")


def summary(r: Roofline) -> str:
  """One line for a variant: the estimated step and its MFU ceiling."""
  return (f"estimated step {_seconds(r.step_seconds)} ({r.bound}-bound), MFU ceiling "
          f"{r.mfu_ceiling:.1%}")


def report_lines(r: Roofline, spec: tpu_specs.TpuSpec) -> list[str]:
  """The roofline section of albert_jax.plan's report."""
  side = "above" if r.intensity >= r.ridge else "below"
  return [
      f"  XLA FLOPs       {r.flops:.3e} per device   (cost_analysis() of the step, {_loops(r)})",
      f"  bytes accessed  {r.bytes_accessed:.3e} per device   (HBM traffic as XLA counts it)",
      f"  compute-bound   {_seconds(r.compute_seconds)} per step at {r.peak_flops / 1e12:.1f} "
      "TFLOP/s (the larger of XLA's and the analytic FLOPs)",
      f"  HBM-bound       {_seconds(r.hbm_seconds)} per step at {r.hbm_bandwidth / 1e9:.0f} GB/s "
      f"per device ({spec.bandwidth_source})",
      f"  intensity       {r.intensity:.3g} FLOP/byte (the same FLOPs), {side} the chip's ridge "
      f"of {r.ridge:.0f} (peak / bandwidth): {r.bound}-bound",
      f"  MFU ceiling     {r.mfu_ceiling:.1%} = analytic FLOPs / (max(compute, HBM time) x peak)"
  ] + ([f"  note: {r.kernel_calls} Pallas kernel calls in the program (splash or fused_tpu "
        "attention): cost_analysis() does not see their FLOPs, so XLA FLOPs are undercounted"]
       if r.kernel_calls else [])


def _loops(r: Roofline) -> str:
  """'loop bodies counted 12, 12 times' or 'no loops'."""
  if not r.loops:
    return "no loops"
  return "loop bodies counted " + ", ".join(str(l.trip_count) for l in r.loops) + " times"


def _seconds(seconds: float) -> str:
  if seconds >= 1:
    return f"{seconds:.2f} s"
  return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"
