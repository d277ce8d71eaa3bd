"""XLA_FLAGS for the suite's processes: the fake CPU device count and the optimization level.

Most of the suite's time is XLA compiling tiny train and eval steps that then run a few times, and
LLVM's passes take about half of such a step's compile time on the CPU. So pytest's processes and
every process a test starts compile at XLA's backend optimization level 0
(ALBERT_JAX_TEST_XLA_OPT replaces the flag; empty: XLA's default). Only imports os: the workers
set XLA_FLAGS with it before jax is imported.
"""

import os

OPTIMIZATION = os.environ.get("ALBERT_JAX_TEST_XLA_OPT", "--xla_backend_optimization_level=0")


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a process with `devices` fake CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {OPTIMIZATION}".strip()
