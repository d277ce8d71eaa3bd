"""Plan a pod run from a laptop: compile the real train step for a TPU topology, ahead of time.

    python -m albert_jax.plan --config=configs/pretrain.py:size=xxlarge --topology=v3:16x16 \
        [--num_slices=N] [--mfu=0.5] [--config.x=y ...]

With `libtpu` installed (`pip install -e '.[tpu]'`), `jax.experimental.topologies` describes the
devices of any TPU slice without the hardware, and XLA's TPU compiler compiles for them on the
CPU. The step compiled here is the one training runs: `pretrain.build_job` gives the mesh,
logical-axis rules, state shardings and the jitted step (in/out shardings, donated state), exactly
as `pretrain.run` uses them. No data is read; only the batch shapes come from the config.

The report, per device: parameters, optimizer state and batch (bytes of each shard), XLA's
temporaries and program (`memory_analysis()`), against the chip's HBM (albert_jax/tpu_specs.py);
FLOPs per step from the analytic model and from XLA's `cost_analysis()`; the step time at peak
and at `--mfu`, tokens/s and the time to finish `training.total_steps`.

When the step does not fit, other settings of the same config are compiled, cheapest first, and
the first that fits is printed as `--config.x=y` overrides. "Cheapest" means least extra work per
step: (1) full FSDP (`partitioning.mesh.data=<slices>`, `fsdp=<the rest>`): no extra FLOPs, only
all-gathers of the (small, shared) weights; (2) gradient accumulation (`training.microbatches`,
fewer first): no extra FLOPs, but smaller matmuls run one after another; (3) rematerialization
(`model.remat_policy`, in order of recomputation: dots_saveable, dots_with_no_batch_dims_saveable,
nothing_saveable ~ +1/3 FLOPs). Variants are ordered by (remat, microbatches, fsdp) and combined.

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
import time
from typing import Any, Iterator, Optional, Sequence

import jax
import ml_collections

from albert_jax import metrics
from albert_jax import partitioning
from albert_jax import pretrain
from albert_jax import tpu_specs
from albert_jax import trainer
from albert_jax.model_config import ModelConfig

GiB = tpu_specs.GiB
# Remat policies by how much they recompute; aliases share a rank.
REMAT_RANK = {"none": 0, "everything_saveable": 0, "dots_saveable": 1, "checkpoint_dots": 1,
              "dots_with_no_batch_dims_saveable": 2, "checkpoint_dots_with_no_batch_dims": 2,
              "matmul_and_layernorm_inputs": 1, "nothing_saveable": 3}
REMAT_LADDER = ("dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable")
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


def make_job(config: ml_collections.ConfigDict, devices: Sequence[Any]) -> pretrain.Job:
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
  """pretrain.validate's batch checks, against the topology's mesh and hosts (validate itself
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
  xla_flops: Optional[float] = None   # per device, cost_analysis()
  oom: str = ""                       # the compiler's message when it ran out of HBM

  def flags(self) -> str:
    return " ".join(f"--config.{k}={v}" for k, v in self.overrides.items())


def compile_attempt(config, overrides: dict[str, Any], devices,
                    spec: tpu_specs.TpuSpec) -> Attempt:
  """Builds the Job for `config` + `overrides`, compiles its train step, measures it."""
  cfg = with_overrides(config, overrides)
  if cfg.data.max_seq_length > cfg.model.max_position_embeddings:
    raise PlanError(f"config field 'data.max_seq_length'={cfg.data.max_seq_length} exceeds "
                    f"'model.max_position_embeddings'={cfg.model.max_position_embeddings}")
  job = make_job(cfg, devices)
  check_batch(cfg, job.mesh, len({d.process_index for d in devices}))
  attempt = Attempt(overrides=dict(overrides), mesh=dict(job.mesh.shape))
  abstract, shardings = job.abstract_state()
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  batch = job.abstract_batch()
  rng = jax.ShapeDtypeStruct(job.rng.shape, job.rng.dtype)
  start = time.perf_counter()
  try:
    compiled = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                                    batch, rng)
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    attempt.seconds = time.perf_counter() - start
    attempt.oom = str(e).split("\n")[0]
    match = _OOM.search(attempt.oom)
    if match:
      attempt.memory = {"temp": _to_bytes(*match.group(1, 2)),
                        "available": _to_bytes(*match.group(3, 4))}
    return attempt
  attempt.seconds = time.perf_counter() - start
  ma = compiled.memory_analysis()
  other = ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.generated_code_size_in_bytes
  attempt.memory = {
      "params": shard_bytes(state.params), "opt_state": shard_bytes(state.opt_state),
      "batch": shard_bytes(batch), "arguments": ma.argument_size_in_bytes,
      "temp": ma.temp_size_in_bytes, "other": other,
      "total": ma.argument_size_in_bytes + ma.temp_size_in_bytes + other}
  attempt.fits = attempt.memory["total"] <= spec.hbm_per_device
  cost = compiled.cost_analysis()  # a dict; a one-element list in older jax
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  attempt.xla_flops = float(cost["flops"]) if cost and "flops" in cost else None
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
    """The configured step if it fits, else the cheapest variant that does."""
    return next((a for a in self.attempts if a.fits), None)

  @property
  def available(self) -> float:
    """Usable HBM per device as the compiler reported it (0 when no attempt ran out)."""
    return next((a.memory["available"] for a in self.attempts if "available" in a.memory), 0.0)

  def step_seconds(self, mfu: float) -> float:
    return self.analytic_flops / self.num_devices / self.spec.peak_flops_per_device / mfu


def plan(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1, mfu: float = 0.5,
         max_variants: int = 12) -> Plan:
  """Compiles the configured step for the topology and, if it does not fit, searches variants."""
  if not 0 < mfu <= 1:
    raise PlanError(f"--mfu={mfu} must be in (0, 1]")
  spec, devices = topology_devices(topology, num_slices)
  first = compile_attempt(config, {}, devices, spec)
  attempts = [first]
  if not first.fits:
    for overrides in variants(config, first.mesh, num_slices):
      if len(attempts) > max_variants:
        break
      attempts.append(compile_attempt(config, overrides, devices, spec))
      if attempts[-1].fits:
        break
  model = ModelConfig.from_any(config.model)
  per_example = metrics.pretraining_flops_per_example(model, config.data.max_seq_length,
                                                      config.data.max_predictions_per_seq)
  return Plan(topology=topology, num_slices=num_slices, spec=spec, num_devices=len(devices),
              num_hosts=len({d.process_index for d in devices}), config=config,
              attempts=attempts, analytic_flops=per_example * config.training.global_batch_size,
              mfu=mfu)


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
           f"microbatches={c.training.microbatches}; compiled in {first.seconds:.0f} s", "",
           f"Memory per device (HBM {_gib(s.hbm_per_device)} per {s.device_kind} device, "
           f"{s.source})"] + _memory_lines(first, s, p.available)
  if not first.fits:
    lines += ["", "Variants tried, cheapest first:"]
    for a in p.attempts[1:]:
      result = ("does not fit" + (f" (temporaries {_gib(a.memory['temp'])})" if a.memory else "")
                if not a.fits else f"FITS, total {_gib(a.memory['total'])}")
      lines.append(f"  {a.flags()}  ->  {result} [{a.seconds:.0f} s]")
    if len(p.attempts) == 1:
      lines.append("  none: the search is off (--max_variants=0)")
    elif chosen is None:
      lines.append("  none fits within --max_variants: use more devices or a smaller "
                   "training.global_batch_size")
    else:
      lines += ["", "Cheapest variant that fits: add", f"  {chosen.flags()}",
                "Memory per device with it:"] + _memory_lines(chosen, s, p.available)
  measured = chosen or first
  step_peak, step_mfu = p.step_seconds(1.0), p.step_seconds(p.mfu)
  per_device = p.analytic_flops / p.num_devices
  lines += ["", "FLOPs per step",
            f"  analytic  {p.analytic_flops:.3e} per step, {per_device:.3e} per device "
            "(matmuls x 3 for forward + backward, metrics.pretraining_flops_per_example)"]
  if measured.xla_flops:
    k = with_overrides(c, measured.overrides).training.microbatches
    loops = f"{c.model.num_hidden_layers} layers" + (f" x {k} microbatches" if k > 1 else "")
    loops = f"{c.model.num_hidden_layers * k} times ({loops})"
    lines += [f"  XLA       {measured.xla_flops:.3e} per device, from cost_analysis() of the "
              f"compiled step{' with the variant' if measured.overrides else ''}; analytic / "
              f"XLA = {per_device / measured.xla_flops:.1f}",
              f"            XLA counts a loop body once: the scanned layer runs {loops} per "
              "step but is counted once; XLA also counts elementwise work and remat"]
  lines += ["", f"Speed from the analytic FLOPs ({s.peak_flops_per_device / 1e12:.1f} TFLOP/s "
                "bf16 peak per device)",
            f"  step time   {duration(step_peak)} at peak, {duration(step_mfu)} at "
            f"{p.mfu:.0%} MFU ({1 / step_mfu:.2f} steps/s)",
            f"  tokens/s    {batch * seq / step_mfu:,.0f} at {p.mfu:.0%} MFU",
            f"  {c.training.total_steps} steps (training.total_steps): "
            f"{duration(c.training.total_steps * step_mfu)} at {p.mfu:.0%} MFU, "
            f"{duration(c.training.total_steps * step_peak)} at peak"]
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
         num_slices: int, mfu: float, max_variants: int) -> int:
  """The command line: prints the plan, returns the exit status (see the module docstring)."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {list(argv[1:])}", file=sys.stderr)
    return 1
  setup_host()
  try:
    p = plan(config, topology, num_slices, mfu, max_variants)
  except (PlanError, ValueError) as e:  # ValueErrors from the config name the field
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report(p), flush=True)
  return 0 if p.fits else 2


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  # Flags live here, not at import time, so that plan_table and tests can import this module.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. "
                                            "configs/pretrain.py:size=xxlarge", lock_config=True)
  _TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v3:16x16, v5e:4x4")
  _NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "slices joined over the data-center network")
  _MFU = flags.DEFINE_float("mfu", 0.5, "model FLOPs utilization assumed for the step time")
  _MAX_VARIANTS = flags.DEFINE_integer("max_variants", 12, "variants to compile when the step "
                                       "does not fit (0: report only)")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(lambda argv: sys.exit(main(argv, _CONFIG.value, _TOPOLOGY.value, _NUM_SLICES.value,
                                     _MFU.value, _MAX_VARIANTS.value)))
