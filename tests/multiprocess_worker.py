"""One process of a 2-process CPU run on 127.0.0.1 (gloo collectives, 2 devices per process).

    python -m tests.multiprocess_worker PORT PROCESS_ID NUM_PROCESSES   # from the repository root

Runs 3 train steps of the tiny config on the synthetic global batches of trainer_fixtures, each
process feeding only the rows its devices hold, and prints the losses as JSON.
"""

import json
import os
import sys

from tests import xla_env  # imports only os: XLA_FLAGS is set before jax

os.environ["XLA_FLAGS"] = xla_env.xla_flags(2)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from albert_jax.train import distributed  # noqa: E402
from albert_jax.train import partitioning  # noqa: E402
from albert_jax.train import pretrain  # noqa: E402
from albert_jax.train import step as trainer  # noqa: E402
from tests.trainer_fixtures import synthetic_batch, tiny_config  # noqa: E402


def local_rows(batch, mesh):
  """The rows of the global batch that this process's devices hold, in their order."""
  sharding = partitioning.batch_sharding(mesh)
  out = {}
  for key, value in batch.items():
    index_map = sharding.addressable_devices_indices_map(value.shape)
    starts = sorted({idx[0].start or 0: idx[0] for idx in index_map.values()}.items())
    out[key] = np.concatenate([value[s] for _, s in starts])
  return out


def main():
  port, process_id, num_processes = map(int, sys.argv[1:4])
  config = tiny_config()
  config.multihost.coordinator_address = f"127.0.0.1:{port}"
  config.multihost.num_processes = num_processes
  config.multihost.process_id = process_id
  distributed.maybe_initialize(config.multihost)
  assert jax.process_count() == num_processes and jax.device_count() == 2 * num_processes
  config.partitioning.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  job = pretrain.build_job(config)
  state, shardings = job.create_state()
  step, losses = None, []
  for seed in range(3):
    global_batch = partitioning.global_batch(local_rows(synthetic_batch(config, seed), job.mesh),
                                             job.mesh)
    if step is None:
      step = trainer.compile_step(job.jitted_train_step(shardings), job.mesh, job.rules, state,
                                  global_batch, job.rng)
    state, metrics = step(state, global_batch, job.rng)
    losses.append(float(metrics["loss"]))
  print("LOSSES " + json.dumps(losses), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
