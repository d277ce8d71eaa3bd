"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment.

On Cloud TPU pods every worker runs the same command and JAX finds its peers by itself. On GPU
clusters under SLURM, `jax.distributed.initialize()` reads the SLURM variables. Elsewhere give
`multihost.coordinator_address`, `multihost.num_processes` and `multihost.process_id` (or the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # "auto": initialize on TPU pods, under SLURM, or when the JAX_* variables are set; "off": never;
  # "on": always (with the fields below or the environment).
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
          int(env.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in env and
          "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def maybe_initialize(c: ml_collections.ConfigDict) -> None:
  """Initializes jax.distributed once when the config or environment asks for several processes."""
  if not _should_initialize(c) or jax.distributed.is_initialized():
    return
  kwargs = {}
  if c.coordinator_address:
    kwargs["coordinator_address"] = c.coordinator_address
  if c.num_processes > 0:
    kwargs["num_processes"] = c.num_processes
  if c.process_id >= 0:
    kwargs["process_id"] = c.process_id
  if jax.config.jax_platforms in (None, "", "cpu") and c.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", c.cpu_collectives)
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
