"""Device mesh, logical-axis rules and shardings: how parameters and batches lie on the devices.

Every parameter of the model carries logical axis names (modeling.py); `config.partitioning.rules`
maps them to the mesh axes `data`, `fsdp` and `tensor`. Parameters and optimizer state are created
sharded (abstract shapes -> shardings -> jitted init with out_shardings) and host batches become
global arrays split over the batch axes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension of activations and inputs is split over both data-parallel axes.
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axes. Weights are split over `fsdp` on their hidden (H) dimension (ZeRO-3
# style) and Megatron-style over `tensor` on heads/mlp/vocab; activations keep the hidden dimension
# whole between blocks. Stacked `groups`/`layers` axes are never split.
DEFAULT_RULES = (
    ("act_batch", BATCH_AXES),
    ("act_len", None),
    ("act_hidden", None),
    ("act_embed", None),
    ("vocab", "tensor"),
    ("embed", None),
    ("hidden", "fsdp"),
    ("hidden2", "fsdp"),
    ("hidden_out", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("classes", None),
    ("groups", None),
    ("layers", None),
)


def default_config() -> ml_collections.ConfigDict:
  """The `partitioning` section of a run config."""
  c = ml_collections.ConfigDict()
  # Mesh shape over (data, fsdp, tensor); one size may be -1 (= all remaining devices).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  # (logical axis, mesh axes) pairs, see DEFAULT_RULES.
  c.rules = DEFAULT_RULES
  return c


def _mesh_sizes(mesh_shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """`config.partitioning.mesh` over `num_devices` devices, its -1 resolved, checked."""
  unknown = set(mesh_shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config field 'partitioning.mesh' has unknown axes {sorted(unknown)}; "
                     f"allowed: {MESH_AXES}")
  sizes = [int(mesh_shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config field 'partitioning.mesh'={dict(mesh_shape)}: sizes must be "
                     "positive, with at most one -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config field 'partitioning.mesh'={dict(mesh_shape)} does not divide "
                       f"the {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config field 'partitioning.mesh'={dict(mesh_shape)} needs "
                     f"{math.prod(sizes)} devices, but {num_devices} are available")
  return dict(zip(MESH_AXES, sizes))


def create_mesh(mesh_shape: Mapping[str, int], devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A mesh over (data, fsdp, tensor) from `config.partitioning.mesh`; one size may be -1.

  On several TPU slices (devices with distinct `slice_index`, joined by the data-center network)
  only the data axis crosses slices: each slice holds data/num_slices x fsdp x tensor devices, so
  FSDP all-gathers and tensor-parallel collectives stay on the fast inter-chip links and only the
  gradient all-reduce goes over the network (MaxText's hybrid mesh).
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = _mesh_sizes(mesh_shape, len(devices))
  # Auto axes: Flax linen's logical constraints assert under Explicit mesh axes.
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  num_slices = len({getattr(d, "slice_index", 0) for d in devices})
  if num_slices == 1:
    return jax.make_mesh(tuple(sizes.values()), MESH_AXES, axis_types=axis_types,
                         devices=devices)
  if sizes["data"] % num_slices:
    raise ValueError(f"config field 'partitioning.mesh': data={sizes['data']} is not a multiple "
                     f"of the {num_slices} slices (the data axis is the one split across slices)")
  from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
  ici = (sizes["data"] // num_slices, sizes["fsdp"], sizes["tensor"])
  grid = mesh_utils.create_hybrid_device_mesh(ici, (num_slices, 1, 1), devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def rules_tuple(rules: Any) -> tuple[tuple[str, Any], ...]:
  """Normalizes config rules (lists from a ConfigDict) to the tuples flax expects."""
  out = []
  for name, axes in rules:
    out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules: Any) -> Any:
  """NamedShardings for a tree of boxed (nn.Partitioned) leaves; unboxed leaves are replicated."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules_tuple(rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def host_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
  """Positions (sorted) of the rows of a `batch_size` global batch that this process's devices
  hold: what it passes to `global_batch`. Not always the p-th contiguous block: it follows the
  mesh's device order, and processes that replicate the batch (a `tensor` axis across hosts)
  feed the same rows."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  rows = {r for index in index_map.values() for r in range(batch_size)[index[0]]}
  return np.array(sorted(rows), dtype=np.int64)


def processes_share_rows(mesh: Mesh, batch_size: int) -> bool:
  """Whether some row of a `batch_size` global batch is held by devices of two processes (the
  batch is replicated across hosts, e.g. by a `tensor` axis that spans them)."""
  owner: dict[int, int] = {}
  for device, index in batch_sharding(mesh).devices_indices_map((batch_size,)).items():
    for row in range(batch_size)[index[0]]:
      if owner.setdefault(row, device.process_index) != device.process_index:
        return True
  return False


def global_batch(host_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's slice of the batch -> global arrays (every host passes its own rows)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
