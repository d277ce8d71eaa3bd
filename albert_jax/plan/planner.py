"""Plan a pod run from a laptop: compile the real train step for a TPU topology, ahead of time.

    python -m albert_jax.plan --config=configs/pretrain.py:size=xxlarge --topology=v3:16x16 \
        [--num_slices=N] [--mfu=0.5] [--config.x=y ...]

With `libtpu` installed (`pip install -e '.[tpu]'`), `jax.experimental.topologies` describes the
devices of any TPU slice without the hardware, and XLA's TPU compiler compiles for them on the
CPU. The step compiled here is the one training runs: `pretrain.build_job` gives the mesh,
logical-axis rules, state shardings and the jitted step (in/out shardings, donated state), exactly
as the training loop (train/loop.py) uses them. No data is read; only the batch shapes come from the config.

The report, per device: parameters, optimizer state and batch (bytes of each shard), XLA's
temporaries and program (`memory_analysis()`), against the chip's HBM (albert_jax/plan/tpu_specs.py);
FLOPs per step from the analytic model and from XLA's `cost_analysis()`; the roofline; the step
time at peak and at `--mfu`, tokens/s and the time to finish `training.total_steps`.

Roofline (albert_jax/plan/roofline.py; off with --noroofline): FLOPs and bytes accessed from XLA's
cost_analysis() of each step that fits, the one training runs. cost_analysis() counts a loop body
once, so each loop's body (depth, microbatches) is analyzed again on its own and counted as often
as the loop runs (albert_jax/plan/loop_costs.py): a few seconds, no second compile. The figures are
the compiler's estimate, not a measurement.

When the step does not fit, other settings are compiled, cheapest (least extra work) first:
(1) full FSDP (`partitioning.mesh.data=<slices>`, `fsdp=<the rest>`): no extra FLOPs, only
all-gathers of the (small, shared) weights; (2) gradient accumulation (`training.microbatches`,
fewer first): no extra FLOPs, but smaller matmuls one after another; (3) rematerialization
(`model.remat_policy`, in order of recomputation: dots_saveable, dots_with_no_batch_dims_saveable,
nothing_saveable ~ +1/3 FLOPs), ordered by (remat, microbatches, fsdp) and combined; at most
`max_variants`. Once one fits, only variants with fewer microbatches than every fitting one are
compiled (they have more remat; more accumulation at as much recomputation is not worth it). Of
those that fit, the one with the shortest estimated step (the roofline's max of compute and HBM
time) is printed as `--config.x=y` overrides; within ROOFLINE_TIE of it the earliest wins, so
cheapest first breaks ties.

Exit status: 0 when the configured step fits, 2 when it does not, 1 on errors.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import math
import os
import re
import sys
from typing import Any, Iterator, Optional, Sequence

import jax
import ml_collections

from albert_jax.train import job as job_lib
from albert_jax.train import metrics
from albert_jax.train import partitioning
from albert_jax.train import pretrain
from albert_jax.plan import roofline
from albert_jax.plan import tpu_specs
from albert_jax.train import step as trainer
from albert_jax.model.config import ModelConfig

GiB = tpu_specs.GiB
# Remat policies by how much they recompute; aliases share a rank.
REMAT_RANK = {"none": 0, "everything_saveable": 0, "dots_saveable": 1, "checkpoint_dots": 1,
              "dots_with_no_batch_dims_saveable": 2, "checkpoint_dots_with_no_batch_dims": 2,
              "matmul_and_layernorm_inputs": 1, "nothing_saveable": 3}
REMAT_LADDER = ("dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable")
# Estimated step times within this fraction of the fastest tie (cheapest first wins).
ROOFLINE_TIE = 0.01
_OOM = re.compile(r"required for HLO temporaries \(([0-9.]+)([KMGT]?)\) exceeds available HBM "
                  r"\(([0-9.]+)([KMGT]?)\)")
# Read by libtpu when it is first loaded (see setup_host).
_LIBTPU_ENV = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_SKIP_MDS_QUERY": "1",
               "TPU_WORKER_HOSTNAMES": "localhost", "TPU_HOST_BOUNDS": "1,1,1"}


class PlanError(Exception):
  """A problem with the flags, the config or the environment, with the fix in the message."""


def setup_host() -> None:
  """Environment for compile-only TPU work on a CPU machine (call before jax starts a backend).

  Planning never runs anything, so jax stays on the CPU even on a TPU VM (where training may own
  the chips). Once libtpu is installed, every jax process on the machine loads it and takes its
  lock file, so we allow a second load; the other variables stop libtpu from probing for a
  Cloud TPU host (and from printing errors about it).
  """
  if "JAX_PLATFORMS" not in os.environ:
    jax.config.update("jax_platforms", "cpu")
  os.environ.update({k: v for k, v in _LIBTPU_ENV.items() if k not in os.environ})


def require_libtpu() -> None:
  """libtpu (or a TPU_LIBRARY_PATH, which jax also accepts) is what compiles for TPUs."""
  if os.environ.get("TPU_LIBRARY_PATH"):
    return
  try:
    importlib.import_module("libtpu")
  except ImportError as e:
    raise PlanError("planning for TPUs needs libtpu (the TPU compiler, CPU-only use is fine): "
                    "pip install -e '.[tpu]'  or  pip install -r requirements-tpu.txt") from e


def topology_devices(topology: str,
                     num_slices: int = 1) -> tuple[tpu_specs.TpuSpec, list[Any]]:
  """(spec, compile-only devices) of `num_slices` slices of `topology`, e.g. 'v3:16x16'."""
  if num_slices < 1:
    raise PlanError(f"--num_slices={num_slices} must be at least 1")
  try:
    spec, dims = tpu_specs.parse_topology(topology)
  except ValueError as e:
    raise PlanError(str(e)) from e
  require_libtpu()
  os.environ.update({k: v for k, v in _LIBTPU_ENV.items() if k not in os.environ})
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  kwargs = tpu_specs.topology_kwargs(spec, dims)
  if num_slices > 1:
    kwargs["num_slices"] = num_slices
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs)
  except Exception as e:  # pylint: disable=broad-except  (libtpu raises JaxRuntimeError)
    raise PlanError(f"libtpu rejected --topology={topology!r} (--num_slices={num_slices}): "
                    f"{e}") from e
  return spec, list(desc.devices)


def make_job(config: ml_collections.ConfigDict, devices: Sequence[Any]) -> job_lib.Job:
  """The training Job on the topology's devices (several slices: the hybrid mesh of
  partitioning.create_mesh); a mesh that cannot work is a PlanError naming the field."""
  try:
    return pretrain.build_job(config, devices)
  except ValueError as e:
    if "partitioning.mesh" in str(e):
      raise PlanError(str(e)) from None
    raise


def with_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
  """A copy of the config with dotted fields set (the same fields --config.x=y would set)."""
  out = copy.deepcopy(config)
  for path, value in overrides.items():
    parent, leaf = path.rsplit(".", 1)
    functools.reduce(lambda node, name: node[name], parent.split("."), out)[leaf] = value
  return out


def check_batch(config: ml_collections.ConfigDict, mesh, num_hosts: int) -> None:
  """job.validate_training's batch checks, against the topology's mesh and hosts (which itself
  builds the mesh of this machine's devices)."""
  t, dp = config.training, partitioning.data_parallel_size(mesh)
  if t.global_batch_size % dp or t.global_batch_size % num_hosts:
    raise PlanError(f"config field 'training.global_batch_size'={t.global_batch_size} must be "
                    f"divisible by the data-parallel size {dp} (mesh data x fsdp) and by the "
                    f"{num_hosts} hosts of the topology")
  if t.global_batch_size % t.microbatches or (t.global_batch_size // t.microbatches) % dp:
    raise PlanError(f"config field 'training.microbatches'={t.microbatches}: each microbatch of a "
                    f"{t.global_batch_size} batch must split over {dp} data-parallel devices")


def shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def _to_bytes(value: str, unit: str) -> float:
  return float(value) * 1024 ** "BKMGT".index(unit or "B")


@dataclasses.dataclass
class Attempt:
  """One compilation of the step: the config with `overrides`, and what XLA said about it."""

  overrides: dict[str, Any]
  mesh: dict[str, int]
  fits: bool = False
  seconds: float = 0.0
  memory: dict[str, float] = dataclasses.field(default_factory=dict)  # bytes per device
  xla_flops: Optional[float] = None   # per device, cost_analysis() of the rolled step
  oom: str = ""                       # the compiler's message when it ran out of HBM
  estimate: Optional[roofline.Roofline] = None  # only when it fits
  estimate_note: str = ""             # why a fitting step has no estimate

  def flags(self) -> str:
    return " ".join(f"--config.{k}={v}" for k, v in self.overrides.items())


def compile_attempt(config, overrides: dict[str, Any], devices, spec: tpu_specs.TpuSpec,
                    analytic_per_device: Optional[float] = None) -> Attempt:
  """Builds the Job for `config` + `overrides`, compiles its train step, measures it; with the
  model's `analytic_per_device` FLOPs, also the roofline of a step that fits."""
  cfg = with_overrides(config, overrides)
  if cfg.data.max_seq_length > cfg.model.max_position_embeddings:
    raise PlanError(f"config field 'data.max_seq_length'={cfg.data.max_seq_length} exceeds "
                    f"'model.max_position_embeddings'={cfg.model.max_position_embeddings}")
  job = make_job(cfg, devices)
  check_batch(cfg, job.mesh, len({d.process_index for d in devices}))
  attempt = Attempt(overrides=dict(overrides), mesh=dict(job.mesh.shape))
  shardings, state, batch, rng = job.abstract_step_args()
  lowered = trainer.lower_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                               batch, rng)
  compiled, attempt.seconds = trainer.try_compile(lowered)
  if isinstance(compiled, str):
    attempt.oom = compiled
    match = _OOM.search(attempt.oom)
    if match:
      attempt.memory = {"temp": _to_bytes(*match.group(1, 2)),
                        "available": _to_bytes(*match.group(3, 4))}
    return attempt
  ma = compiled.memory_analysis()
  other = ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.generated_code_size_in_bytes
  attempt.memory = {
      "params": shard_bytes(state.params), "opt_state": shard_bytes(state.opt_state),
      "batch": shard_bytes(batch), "arguments": ma.argument_size_in_bytes,
      "temp": ma.temp_size_in_bytes, "other": other,
      "total": ma.argument_size_in_bytes + ma.temp_size_in_bytes + other}
  attempt.fits = attempt.memory["total"] <= spec.hbm_per_device
  attempt.xla_flops = roofline.from_compiled(compiled)[0]
  if analytic_per_device is None:
    attempt.estimate_note = "off (--noroofline)"
  elif attempt.fits:
    attempt.estimate, attempt.estimate_note = roofline.estimate(compiled, spec,
                                                                analytic_per_device)
  return attempt


def variants(config, mesh: dict[str, int], num_slices: int) -> Iterator[dict[str, Any]]:
  """Override sets that save memory, cheapest first (see the module docstring)."""
  t = config.training
  dp = mesh["data"] * mesh["fsdp"]
  rank = REMAT_RANK[config.model.remat_policy]
  remats = [None] + [p for p in REMAT_LADDER if REMAT_RANK[p] > rank]
  ks = [t.microbatches] + [k for k in (2 ** i for i in range(31)) if k > t.microbatches
                          and t.global_batch_size % k == 0 and (t.global_batch_size // k) % dp == 0]
  # Only the fields that change (an unchanged tensor=-1 still resolves to the same size).
  full_fsdp = {f"partitioning.mesh.{axis}": size for axis, size in
               (("data", num_slices), ("fsdp", dp // num_slices))
               if config.partitioning.mesh.get(axis, 1) != size}
  fsdps = [{}] + ([full_fsdp] if mesh["data"] > num_slices else [])
  for remat in remats:
    for k in ks:
      for fsdp in fsdps:
        if remat is None and k == t.microbatches and not fsdp:
          continue  # the config as given
        out = dict(fsdp)
        if k != t.microbatches:
          out["training.microbatches"] = k
        if remat is not None:
          out["model.remat_policy"] = remat
        yield out


def search(config, first: Attempt, devices, spec: tpu_specs.TpuSpec, num_slices: int,
           max_variants: int, analytic_per_device: Optional[float] = None) -> list[Attempt]:
  """Compiles variants of a configured step that does not fit: cheapest first, at most
  `max_variants`, and once one fits only those with fewer microbatches (module docstring)."""
  tried: list[Attempt] = []
  fewest = None  # the fewest microbatches of a variant that fits
  for overrides in variants(config, first.mesh, num_slices):
    k = overrides.get("training.microbatches", config.training.microbatches)
    if len(tried) >= max_variants or fewest == config.training.microbatches:
      break
    if fewest is not None and k >= fewest:
      continue
    tried.append(compile_attempt(config, overrides, devices, spec, analytic_per_device))
    if tried[-1].fits:
      fewest = k
  return tried


def choose(attempts: Sequence[Attempt]) -> Optional[Attempt]:
  """The attempt that fits with the shortest estimated step; ties (ROOFLINE_TIE) and attempts
  without an estimate go by the given (cheapest-first) order."""
  fitting = [a for a in attempts if a.fits]
  step = lambda a: a.estimate.step_seconds if a.estimate else math.inf
  fastest = min(map(step, fitting), default=math.inf)
  return next((a for a in fitting if step(a) <= fastest * (1 + ROOFLINE_TIE)), None)


@dataclasses.dataclass
class Plan:
  """The attempts (the configured step first, then variants) and what the report derives."""

  topology: str
  num_slices: int
  spec: tpu_specs.TpuSpec
  num_devices: int
  num_hosts: int
  config: ml_collections.ConfigDict
  attempts: list[Attempt]
  analytic_flops: float          # per step, whole job
  mfu: float

  @property
  def fits(self) -> bool:
    """Whether the step as configured fits."""
    return self.attempts[0].fits

  @property
  def chosen(self) -> Optional[Attempt]:
    """The configured step if it fits, else the variant that fits with the shortest estimated
    step (see `choose`)."""
    return self.attempts[0] if self.fits else choose(self.attempts[1:])

  @property
  def available(self) -> float:
    """Usable HBM per device as the compiler reported it (0 when no attempt ran out)."""
    return next((a.memory["available"] for a in self.attempts if "available" in a.memory), 0.0)

  def step_seconds(self, mfu: float) -> float:
    return self.analytic_flops / self.num_devices / self.spec.peak_flops_per_device / mfu


def plan(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1, mfu: float = 0.5,
         max_variants: int = 12, estimate: bool = True) -> Plan:
  """Compiles the configured step for the topology and, if it does not fit, searches variants;
  `estimate`: the roofline of the steps that fit."""
  if not 0 < mfu <= 1:
    raise PlanError(f"--mfu={mfu} must be in (0, 1]")
  spec, devices = topology_devices(topology, num_slices)
  model = ModelConfig.from_any(config.model)
  per_example = metrics.pretraining_flops_per_example(model, config.data.max_seq_length,
                                                      config.data.max_predictions_per_seq)
  analytic = per_example * config.training.global_batch_size
  per_device = analytic / len(devices) if estimate else None
  attempts = [compile_attempt(config, {}, devices, spec, per_device)]
  if not attempts[0].fits:
    attempts += search(config, attempts[0], devices, spec, num_slices, max_variants, per_device)
  return Plan(topology=topology, num_slices=num_slices, spec=spec, num_devices=len(devices),
              num_hosts=len({d.process_index for d in devices}), config=config,
              attempts=attempts, analytic_flops=analytic, mfu=mfu)


def _gib(x: float) -> str:
  if abs(x) >= GiB / 10:
    return f"{x / GiB:.2f} GiB"
  return f"{x / 2**20:.1f} MiB" if abs(x) >= 2**20 / 10 else f"{x / 2**10:.1f} KiB"


def duration(seconds: float) -> str:
  """'12.3 ms', '4.5 s', '7.8 h' or '2.9 days'."""
  if seconds < 1:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.1f} us"
  return (f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 3600:.1f} h" if seconds < 172800
          else f"{seconds / 86400:.1f} days")


def _memory_lines(a: Attempt, spec: tpu_specs.TpuSpec, available: float) -> list[str]:
  m, hbm = a.memory, spec.hbm_per_device
  if "total" not in m:
    return ["  DOES NOT FIT: " + (f"XLA needs {_gib(m['temp'])} for temporaries alone, "
                                 f"{_gib(m['available'])} available" if m else a.oom)]
  margin = hbm - m["total"]
  # The compiler's own limit is known when some attempt ran out of memory.
  limit = f"; the compiler allows {_gib(available)}" if available else ""
  tight = " (tight: under 5% left)" if 0 <= margin < 0.05 * hbm else ""
  rows = [("parameters", m["params"]), ("optimizer state", m["opt_state"]),
          ("batch", m["batch"]), ("XLA temporaries", m["temp"]),
          ("program, outputs", m["other"]), ("total", m["total"])]
  return ([f"  {name:<17}{_gib(value):>11}" for name, value in rows]
          + [f"  -> {'FITS' if a.fits else 'DOES NOT FIT'}: margin {_gib(margin)} "
             f"({margin / hbm:.0%} of {_gib(hbm)}{limit}){tight}"])


def _variant_lines(p: Plan) -> list[str]:
  """The variants tried and the one chosen, for a configured step that does not fit."""
  lines = ["", "Variants tried, cheapest first (estimate: the compiler's roofline):"]
  for a in p.attempts[1:]:
    result = ("does not fit" + (f" (temporaries {_gib(a.memory['temp'])})" if a.memory else "")
              if not a.fits else f"FITS, total {_gib(a.memory['total'])}; "
              + (roofline.summary(a.estimate) if a.estimate else a.estimate_note))
    lines.append(f"  {a.flags()}  ->  {result} [{a.seconds:.0f} s]")
  chosen = p.chosen
  if len(p.attempts) == 1:
    lines.append("  none: the search is off (--max_variants=0)")
  elif chosen is None:
    lines.append("  none fits within --max_variants: use more devices or a smaller "
                 "training.global_batch_size")
  else:
    lines += ["", "Variant that fits with the shortest estimated step (ties: the cheapest): add",
              f"  {chosen.flags()}", "Memory per device with it:"]
    lines += _memory_lines(chosen, p.spec, p.available)
  return lines


def _flops_lines(p: Plan, a: Attempt) -> list[str]:
  """Analytic and XLA FLOPs, and the roofline of attempt `a` (the one the plan recommends)."""
  per_device = p.analytic_flops / p.num_devices
  lines = ["", "FLOPs per step",
           f"  analytic  {p.analytic_flops:.3e} per step, {per_device:.3e} per device "
           "(matmuls x 3 for forward + backward, metrics.pretraining_flops_per_example)"]
  variant = " with the variant" if a.overrides else ""
  if a.estimate:
    lines += [f"  XLA       {a.estimate.flops:.3e} per device, from cost_analysis() of the step"
              f"{variant}, each loop body counted as often as it runs; analytic / XLA = "
              f"{per_device / a.estimate.flops:.2f}",
              "            (XLA counts a loop body once: each body of the compiled step analyzed "
              "on its own, x its trip count; XLA also counts elementwise work and remat)"]
  elif a.xla_flops:  # no estimate: the rolled step's figure, each loop counted for one iteration
    lines += [f"  XLA       {a.xla_flops:.3e} per device, from cost_analysis() of the compiled step"
              f"{variant} (it counts a loop body once); analytic / XLA = "
              f"{per_device / a.xla_flops:.1f}"]
  lines += ["", "Roofline (the compiler's estimate, not a measurement)"]
  if a.estimate:
    return lines + roofline.report_lines(a.estimate, p.spec)
  return lines + ["  not available: " + (a.estimate_note or "the step does not fit")]


def report(p: Plan) -> str:
  """The human-readable plan."""
  c, s, first, chosen = p.config, p.spec, p.attempts[0], p.chosen
  seq, batch = c.data.max_seq_length, c.training.global_batch_size
  dp = first.mesh["data"] * first.mesh["fsdp"]
  lines = [f"Plan for {p.topology}" + (f" x {p.num_slices} slices" if p.num_slices > 1 else "")
           + f": {s.device_kind}, {p.num_devices // s.devices_per_chip} chips, {p.num_devices} "
           f"devices, {p.num_hosts} hosts",
           "  mesh " + " ".join(f"{k}={v}" for k, v in first.mesh.items())
           + f"; batch {batch} ({batch // dp} per data-parallel device) x seq {seq}; "
           f"model.dtype={c.model.dtype}, remat_policy={c.model.remat_policy}, "
           f"microbatches={c.training.microbatches}; compiled in {first.seconds:.0f} s",
           "", f"Memory per device (HBM {_gib(s.hbm_per_device)} per {s.device_kind} device, "
           f"{s.source})"] + _memory_lines(first, s, p.available)
  if not first.fits:
    lines += _variant_lines(p)
  measured = chosen or first
  lines += _flops_lines(p, measured)
  step_peak, step_mfu = p.step_seconds(1.0), p.step_seconds(p.mfu)
  lines += ["", f"Speed from the analytic FLOPs ({s.peak_flops_per_device / 1e12:.1f} TFLOP/s "
                "bf16 peak per device)",
            f"  step time   {duration(step_peak)} at peak, {duration(step_mfu)} at "
            f"{p.mfu:.0%} MFU ({1 / step_mfu:.2f} steps/s)",
            f"  tokens/s    {batch * seq / step_mfu:,.0f} at {p.mfu:.0%} MFU",
            f"  {c.training.total_steps} steps (training.total_steps): "
            f"{duration(c.training.total_steps * step_mfu)} at {p.mfu:.0%} MFU, "
            f"{duration(c.training.total_steps * step_peak)} at peak"]
  if measured.estimate and p.mfu > measured.estimate.mfu_ceiling:
    lines.append(f"  note: --mfu={p.mfu:g} is above the estimated MFU ceiling "
                 f"({measured.estimate.mfu_ceiling:.1%}): expect a slower step")
  if measured.overrides.get("model.remat_policy"):
    lines.append("  note: remat recomputes activations, not counted above: expect a lower MFU")
  if c.model.dtype != "bfloat16":
    lines.append(f"  note: model.dtype={c.model.dtype}: TPUs run float32 matmuls at a fraction "
                 "of the bf16 peak; use --config.model.dtype=bfloat16")
  if p.num_slices > 1:
    lines.append("  note: the data axis spans the slices (partitioning.create_mesh's hybrid mesh, "
                 "as in training)")
  return "\n".join(lines)


def main(argv: Sequence[str], config: ml_collections.ConfigDict, topology: str,
         num_slices: int, mfu: float, max_variants: int, estimate: bool = True) -> int:
  """The command line: prints the plan, returns the exit status (see the module docstring)."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {list(argv[1:])}", file=sys.stderr)
    return 1
  setup_host()
  try:
    p = plan(config, topology, num_slices, mfu, max_variants, estimate)
  except (PlanError, ValueError) as e:  # ValueErrors from the config name the field
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report(p), flush=True)
  return 0 if p.fits else 2

