"""One process of a 2-process CPU run on 127.0.0.1 whose checkpoint directory is unwritable for
one process only (as a host whose mount went read-only).

    python -m tests.checkpoint_probe_worker PORT PROCESS_ID NUM_PROCESSES WORKDIR FAILING_PROCESS

Saves step 1, then makes the write probe fail on FAILING_PROCESS and saves step 2; prints the
CheckpointWriteError each process gets ("RAISED <message>") and the steps left on disk.
"""

import json
import os
import sys

from tests import xla_env  # imports only os: XLA_FLAGS is set before jax

os.environ["XLA_FLAGS"] = xla_env.xla_flags(1)
os.environ["JAX_PLATFORMS"] = "cpu"

from etils import epath  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from albert_jax.train import checkpoints  # noqa: E402
from albert_jax.train import distributed  # noqa: E402


def unwritable_probes() -> None:
  """Write probes fail with EACCES, as on a read-only mount; orbax's own writes are untouched."""
  path_type = type(epath.Path("/"))
  real_mkdir = path_type.mkdir

  def mkdir(self, *args, **kwargs):
    if self.name.startswith(".write-probe"):
      raise PermissionError(13, "Permission denied", str(self))
    return real_mkdir(self, *args, **kwargs)
  path_type.mkdir = mkdir


def main():
  port, process_id, num_processes = map(int, sys.argv[1:4])
  workdir, failing = sys.argv[4], int(sys.argv[5])
  c = distributed.default_config()
  c.coordinator_address = f"127.0.0.1:{port}"
  c.num_processes, c.process_id = num_processes, process_id
  distributed.maybe_initialize(c)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = {"w": jax.make_array_from_callback((4,), replicated, lambda i: np.arange(4.0)[i])}
  ckpt = checkpoints.Checkpointer(workdir, every_steps=1, keep=3)
  ckpt.save(1, state)
  ckpt.wait()
  if process_id == failing:
    unwritable_probes()
  try:
    ckpt.save(2, state)
    print("SAVED", flush=True)
  except checkpoints.CheckpointWriteError as e:
    print("RAISED " + str(e), flush=True)
  ckpt.close()
  print("STEPS " + json.dumps(sorted(int(s) for s in os.listdir(ckpt.directory) if s.isdigit())),
        flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
