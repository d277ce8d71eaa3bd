"""Two JAX processes on 127.0.0.1 (gloo CPU collectives, 2 devices each) train like one process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.test_trainer import run_steps
from tests.trainer_fixtures import synthetic_batch, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  if jax.device_count() < 4:
    pytest.skip("needs 4 (fake) devices for the single-process reference")
  port = free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  procs = [subprocess.Popen([sys.executable, "-m", "tests.multiprocess_worker", str(port), str(i),
                             "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  per_process = [json.loads(out.split("LOSSES ", 1)[1]) for out, _ in outs]
  assert per_process[0] == per_process[1]

  config = tiny_config()
  config.partitioning.mesh = {"data": 4, "fsdp": 1, "tensor": 1}
  ref, _ = run_steps(config, jax.devices()[:4], [synthetic_batch(config, s) for s in range(3)])
  np.testing.assert_allclose(per_process[0], ref, rtol=1e-5)


def test_a_checkpoint_directory_unwritable_for_one_process_stops_every_process(tmp_path):
  """Both processes stop promptly with the error (none waits forever in orbax's barriers), and
  the last good step is kept."""
  port = free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  procs = [subprocess.Popen([sys.executable, "-m", "tests.checkpoint_probe_worker", str(port),
                             str(i), "2", str(tmp_path), "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=180) for p in procs]
  finally:
    for p in procs:
      p.kill()  # a process left waiting must not outlive the test
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  raised = [out.split("RAISED ", 1)[1].splitlines()[0] for out, _ in outs]
  assert "process(es) [1] of 2 cannot write there" in raised[0]
  assert "process 1: PermissionError" in raised[1]
  assert all("cannot write checkpoint step 2" in r and "step 1, is kept" in r for r in raised)
  assert all(json.loads(out.split("STEPS ", 1)[1]) == [1] for out, _ in outs)
