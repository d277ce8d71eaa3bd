"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment.

On Cloud TPU VMs every worker runs the same command and `jax.distributed.initialize()` finds its
peers from the TPU metadata. On GPU clusters under SLURM it reads the SLURM variables. Elsewhere
give `multihost.coordinator_address`, `multihost.num_processes` and `multihost.process_id` (or the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Optional

import jax
import ml_collections

# TPU chips on the PCI bus, as JAX's own detection (jax/_src/hardware_utils.py) finds them:
# Google's vendor id (also gVNIC network cards', hence the device ids) and the TPU device ids
# (v3, an unnamed one, v4, v5p, v5e, v6e, TPU7x).
_GOOGLE_PCI_VENDOR_ID = "0x1ae0"
_TPU_PCI_DEVICE_IDS = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # "auto": initialize on Cloud TPU VMs, under SLURM with several tasks, when
  # JAX_COORDINATOR_ADDRESS is set, or when the fields below name a coordinator or several
  # processes; "off": never; "on": always (with the fields below or the environment).
  c.mode = "auto"
  c.coordinator_address = ""   # host:port of process 0
  c.num_processes = 0          # 0: from the environment
  c.process_id = -1            # -1: from the environment
  c.cpu_collectives = "gloo"   # CPU-only multi-process runs (tests, laptops)
  return c


def _should_initialize(c: ml_collections.ConfigDict) -> bool:
  if c.mode == "off":
    return False
  if c.mode == "on" or c.coordinator_address or c.num_processes > 1:
    return True
  if c.mode != "auto":
    raise ValueError(f"config field 'multihost.mode'={c.mode!r}: allowed 'auto', 'on', 'off'")
  env = os.environ
  return ("JAX_COORDINATOR_ADDRESS" in env or "SLURM_JOB_ID" in env and
          int(env.get("SLURM_NTASKS", "1")) > 1 or
          tpu_platform_allowed(jax.config.jax_platforms) and on_cloud_tpu_vm())


def tpu_platform_allowed(platforms: Optional[str]) -> bool:
  """Whether JAX may use the TPU (`jax_platforms` unset or naming tpu): JAX_PLATFORMS=cpu on a
  TPU VM (e.g. tests) must not join the TPU workers' distributed system."""
  return not platforms or "tpu" in platforms.split(",")


def on_cloud_tpu_vm(pci_devices: str = "/sys/bus/pci/devices") -> bool:
  """Whether TPU chips are attached, found as JAX does before it loads the TPU runtime. On a TPU
  VM `initialize()` reads the workers from the TPU metadata, and the multi-host preemption
  notices need it."""
  for device in glob.glob(os.path.join(pci_devices, "*")):
    try:
      with open(os.path.join(device, "vendor")) as f:
        vendor = f.read().strip()
      with open(os.path.join(device, "device")) as f:
        device_id = f.read().strip()
    except OSError:
      continue
    if vendor == _GOOGLE_PCI_VENDOR_ID and device_id in _TPU_PCI_DEVICE_IDS:
      return True
  return False


def initialize_kwargs(c: ml_collections.ConfigDict) -> dict:
  """`jax.distributed.initialize` arguments: the config's fields, else the JAX_* variables (JAX
  itself reads only JAX_COORDINATOR_ADDRESS), else none (JAX's cluster detection)."""
  env = os.environ
  kwargs = {}
  address = c.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS", "")
  if address:
    kwargs["coordinator_address"] = address
  for key, field, unset, var in (("num_processes", c.num_processes, 0, "JAX_NUM_PROCESSES"),
                                 ("process_id", c.process_id, -1, "JAX_PROCESS_ID")):
    if field != unset:
      kwargs[key] = field
    elif env.get(var, "") != "":
      try:
        kwargs[key] = int(env[var])
      except ValueError:
        raise ValueError(f"environment variable {var}={env[var]!r} must be an integer") from None
  return kwargs


def maybe_initialize(c: ml_collections.ConfigDict) -> None:
  """Initializes jax.distributed once when the config or environment asks for several processes."""
  if not _should_initialize(c) or jax.distributed.is_initialized():
    return
  kwargs = initialize_kwargs(c)
  if jax.config.jax_platforms in (None, "", "cpu") and c.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", c.cpu_collectives)
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
