"""Multi-host start-up: when `maybe_initialize` initializes, and with which arguments."""

import os
import socket
import subprocess
import sys

import pytest

from albert_jax.train import distributed
from tests import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_initialize_arguments_from_config_then_environment(monkeypatch):
  c = distributed.default_config()
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(var, raising=False)
  assert distributed.initialize_kwargs(c) == {}  # JAX's own cluster detection (TPU, SLURM)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  assert distributed.initialize_kwargs(c) == {"coordinator_address": "10.0.0.1:1234",
                                              "num_processes": 4, "process_id": 2}
  c.num_processes, c.process_id = 8, 0
  assert distributed.initialize_kwargs(c)["num_processes"] == 8
  assert distributed.initialize_kwargs(c)["process_id"] == 0
  monkeypatch.setenv("JAX_PROCESS_ID", "one")
  c.process_id = -1
  with pytest.raises(ValueError, match="JAX_PROCESS_ID='one' must be an integer"):
    distributed.initialize_kwargs(c)


def test_cloud_tpu_vm_is_detected_from_pci_devices(tmp_path):
  def add(name, vendor, device):
    (tmp_path / name).mkdir()
    (tmp_path / name / "vendor").write_text(vendor + "\n")
    (tmp_path / name / "device").write_text(device + "\n")

  add("0000:00:04.0", "0x1af4", "0x1000")  # virtio
  add("0000:00:05.0", "0x10de", "0x2335")  # an NVIDIA GPU
  add("0000:00:06.0", "0x1ae0", "0x0042")  # Google's gVNIC network card: not a TPU
  assert not distributed.on_cloud_tpu_vm(str(tmp_path))
  add("0000:00:07.0", "0x1ae0", "0x0063")  # a TPU v5e chip
  assert distributed.on_cloud_tpu_vm(str(tmp_path))


def test_two_processes_from_the_documented_environment_variables():
  """README: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID start a 2-process run."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  code = ("from albert_jax.train import distributed; import jax; "
          "distributed.maybe_initialize(distributed.default_config()); "
          "print('process', jax.process_index(), 'of', jax.process_count())")
  procs = [subprocess.Popen(
      [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_env.xla_flags(1),
                          JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                          JAX_PROCESS_ID=str(i))) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, err[-2000:]
    assert f"process {i} of 2" in out


def test_cpu_platform_on_a_tpu_vm_does_not_join_the_tpu_workers():
  assert distributed.tpu_platform_allowed(None) and distributed.tpu_platform_allowed("")
  assert distributed.tpu_platform_allowed("tpu,cpu")
  assert not distributed.tpu_platform_allowed("cpu")
