"""TPU generations for planning: HBM, its bandwidth and peak bf16 FLOP/s, and how to ask libtpu
for a topology.

A "device" below is a JAX device: one TensorCore on v2/v3 (two devices per chip, each with half
of the chip's HBM) and one chip on v4 and later (v4/v5p run their two TensorCores as one
"megacore" device; v5e/v6e chips have a single TensorCore).

Sources (Cloud TPU system-architecture pages, "Key specifications" tables):
  v2:  https://cloud.google.com/tpu/docs/v2   45 TFLOP/s bf16 and 16 GiB HBM per chip, 2 cores
  v3:  https://cloud.google.com/tpu/docs/v3   123 TFLOP/s bf16 and 32 GiB HBM2 at 900 GBps per
                                              chip, 2 cores
  v4:  https://cloud.google.com/tpu/docs/v4   275 TFLOP/s bf16 and 32 GiB HBM2 at 1200 GBps
  v5e: https://cloud.google.com/tpu/docs/v5e  197 TFLOP/s bf16 and 16 GB HBM2 at 819 GBps
  v5p: https://cloud.google.com/tpu/docs/v5p  459 TFLOP/s bf16 and 95 GiB HBM2e at 2765 GBps
  v6e: https://cloud.google.com/tpu/docs/v6e  918 TFLOP/s bf16 and 32 GB HBM at 1640 GBps (the
                                              page's newer table says 1638)
The v2 page gives no bandwidth; it refers to Jouppi et al., "A Domain-Specific Supercomputer for
Training Deep Neural Networks", CACM 63(7), 2020 (https://dl.acm.org/doi/10.1145/3360307), whose
Table 3 gives 700 GB/s per TPUv2 chip (and 900 GB/s per TPUv3 chip, as the v3 page).
The pages mix GB and GiB for capacity; we read all of them as GiB, which matches what the TPU
compiler itself reports (a v3 core: "15.48G" available of 16 GiB, the rest is reserved by the
runtime). Bandwidths are in GB/s with GB = 1e9 bytes. On v2/v3 each of the two devices of a chip
has its own half of the chip's HBM and of its bandwidth.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class TpuSpec:
  generation: str             # the prefix of a topology name: "v3" in "v3:16x16"
  device_kind: str            # jax's `device.device_kind` for this generation
  hbm_per_chip_gib: float
  peak_bf16_per_chip: float   # dense bf16 FLOP/s
  devices_per_chip: int       # JAX devices per chip (2 on v2/v3: one per TensorCore)
  # libtpu's chip configuration: v4 defaults to one device per TensorCore in compile-only
  # topologies, but TPU VMs present megacore chips, so ask for what training will see.
  chip_config: Optional[str]
  # Torus wraparound: 2D generations wrap a dimension equal to this (the full pod's side); 3D
  # generations (v4, v5p) wrap all three when every dimension is a multiple of it.
  wrap_side: int
  source: str
  hbm_bandwidth_per_chip: float  # bytes/s (GB/s x 1e9)
  bandwidth_source: str

  @property
  def hbm_per_device(self) -> float:
    """Bytes of HBM one JAX device owns."""
    return self.hbm_per_chip_gib * GiB / self.devices_per_chip

  @property
  def peak_flops_per_device(self) -> float:
    return self.peak_bf16_per_chip / self.devices_per_chip

  @property
  def hbm_bandwidth_per_device(self) -> float:
    """Bytes/s between one JAX device and its HBM."""
    return self.hbm_bandwidth_per_chip / self.devices_per_chip


SPECS: dict[str, TpuSpec] = {s.generation: s for s in (
    TpuSpec("v2", "TPU v2", 16, 45e12, 2, None, 16, "https://cloud.google.com/tpu/docs/v2",
            700e9, "https://dl.acm.org/doi/10.1145/3360307"),
    TpuSpec("v3", "TPU v3", 32, 123e12, 2, None, 32, "https://cloud.google.com/tpu/docs/v3",
            900e9, "https://cloud.google.com/tpu/docs/v3"),
    TpuSpec("v4", "TPU v4", 32, 275e12, 1, "megacore", 4, "https://cloud.google.com/tpu/docs/v4",
            1200e9, "https://cloud.google.com/tpu/docs/v4"),
    TpuSpec("v5e", "TPU v5 lite", 16, 197e12, 1, None, 16, "https://cloud.google.com/tpu/docs/v5e",
            819e9, "https://cloud.google.com/tpu/docs/v5e"),
    TpuSpec("v5p", "TPU v5", 95, 459e12, 1, "megacore", 4, "https://cloud.google.com/tpu/docs/v5p",
            2765e9, "https://cloud.google.com/tpu/docs/v5p"),
    TpuSpec("v6e", "TPU v6 lite", 32, 918e12, 1, None, 16, "https://cloud.google.com/tpu/docs/v6e",
            1640e9, "https://cloud.google.com/tpu/docs/v6e"),
)}

_TOPOLOGY = re.compile(r"^(v[0-9]+[a-z]*):([0-9]+(?:x[0-9]+){1,2})$")


def parse_topology(name: str) -> tuple[TpuSpec, tuple[int, ...]]:
  """'v3:16x16' -> (the v3 spec, (16, 16)); errors name the flag and the allowed values."""
  match = _TOPOLOGY.match(name or "")
  if not match:
    raise ValueError(f"--topology={name!r} is not GENERATION:AxB[xC] (e.g. v3:16x16, v4:2x2x4, "
                     f"v5e:4x4, v5p:4x4x4, v6e:8x8)")
  generation, dims = match.group(1), tuple(int(d) for d in match.group(2).split("x"))
  if generation not in SPECS:
    raise ValueError(f"--topology={name!r}: unknown TPU generation {generation!r}; known: "
                     f"{sorted(SPECS)} (see albert_jax/plan/tpu_specs.py)")
  if any(d < 1 for d in dims):
    raise ValueError(f"--topology={name!r}: every dimension must be at least 1")
  return SPECS[generation], dims


def topology_kwargs(spec: TpuSpec, dims: tuple[int, ...]) -> dict[str, Any]:
  """Extra arguments for `get_topology_desc`: chip configuration and torus wraparound.

  Wraparound only changes how collectives are routed, not memory, but we pass what the slice
  really has: v4/v5p slices whose dimensions are all multiples of 4 are 3D tori (Cloud TPU v4
  docs); 2D generations wrap a dimension that spans the full pod.
  """
  kwargs: dict[str, Any] = {}
  if spec.chip_config:
    kwargs["chip_config_name"] = spec.chip_config
  full = tuple(dims) + (1,) * (3 - len(dims))
  if len(dims) == 3:
    wrap = all(d % spec.wrap_side == 0 for d in dims)
    kwargs["wrap"] = (wrap, wrap, wrap)
  else:
    kwargs["wrap"] = tuple(d == spec.wrap_side for d in full[:2]) + (False,)
  return kwargs
