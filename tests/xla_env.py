"""XLA_FLAGS for the suite's processes: the fake CPU device count and the optimization level.

Most of the suite's time is XLA compiling tiny train and eval steps that then run a few times, and
LLVM's passes take about half of such a step's compile time on the CPU. So pytest's processes and
every process a test starts compile at XLA's backend optimization level 0 and with XLA:CPU's
elemental fusion emitter instead of its MLIR fusion emitters, which compiles the tiny steps about a
quarter faster (a 2-step tiny pretraining run: 10.0 -> 7.5 s on one device). With both, two
different programs may round the same maths differently by a few ulps (test_modeling's remat-block
init comparison allows for it). ALBERT_JAX_TEST_XLA_OPT replaces these flags (empty: XLA's
defaults). Only imports os: the workers set XLA_FLAGS with it before jax is imported.
"""

import os

OPTIMIZATION = os.environ.get(
    "ALBERT_JAX_TEST_XLA_OPT",
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a process with `devices` fake CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {OPTIMIZATION}".strip()
