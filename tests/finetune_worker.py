"""One process of a tiny GLUE fine-tuning run on CPU (used by test_finetune_multiprocess.py).

    python -m tests.finetune_worker '{"workdir": ..., "devices": 2, "spm_model": "",
        "spm_corpus": "a.txt,b.txt", "port": 12345, "process_id": 0, "num_processes": 2}'

`num_processes` 1 runs alone (the single-process reference; no port). An empty `spm_model` makes
the run train its SentencePiece model on `spm_corpus` (process 0 trains it, the others wait).
Every file this process opens for writing through Python or tf.io.gfile is recorded, so the test
can check which process wrote what; the last line printed is `RESULT <json>`.
"""

import builtins
import json
import os
import re
import sys

SPEC = json.loads(sys.argv[1])
from tests import xla_env  # imports only os: XLA_FLAGS is set before jax

os.environ["XLA_FLAGS"] = xla_env.xla_flags(SPEC["devices"])
os.environ["JAX_PLATFORMS"] = "cpu"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import tensorflow as tf  # noqa: E402

from albert_jax import config_utils  # noqa: E402
from albert_jax.train import finetune  # noqa: E402

WRITTEN: list[str] = []


def record_writes() -> None:
  """Records the paths opened for writing by builtins.open and tf.io.gfile.GFile."""
  real_open, real_gfile = builtins.open, tf.io.gfile.GFile

  def recording_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
      WRITTEN.append(os.fspath(file))
    return real_open(file, mode, *args, **kwargs)

  class RecordingGFile(real_gfile):
    def __init__(self, name, mode="r"):
      if any(c in mode for c in "wa"):
        WRITTEN.append(str(name))
      super().__init__(name, mode)

  builtins.open = recording_open
  tf.io.gfile.GFile = RecordingGFile


def main() -> None:
  config = config_utils.load_sibling(os.path.join(REPO, "configs", "x.py"),
                                     "finetune_glue").get_config("task=sst2,runlocal")
  config.data.spm_model = SPEC["spm_model"]
  config.data.spm_corpus = SPEC["spm_corpus"]
  config.training.total_steps = 4
  config.training.eval_every_steps = 2
  config.training.log_every_steps = 1
  config.optimizer.warmup_steps = 1
  config.partitioning.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  if SPEC["num_processes"] > 1:
    config.multihost.coordinator_address = f"127.0.0.1:{SPEC['port']}"
    config.multihost.num_processes = SPEC["num_processes"]
    config.multihost.process_id = SPEC["process_id"]
  else:
    config.multihost.mode = "off"
  record_writes()
  result = finetune.run(config, SPEC["workdir"])
  assert jax.process_count() == SPEC["num_processes"]
  assert jax.device_count() == SPEC["devices"] * SPEC["num_processes"]
  workdir = os.path.abspath(SPEC["workdir"])
  # A file written under a temporary name and renamed counts as the file itself.
  written = sorted({re.sub(r"\.tmp(-[^/]*)?$", "", os.path.relpath(p, workdir))
                    for p in WRITTEN if "://" not in p})
  print("RESULT " + json.dumps({"process": jax.process_index(), "written": written,
                                "history": result["history"], "best": result["best"],
                                "outputs": [os.path.relpath(p, workdir)
                                            for p in result["outputs"]]}), flush=True)
  if SPEC["num_processes"] > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
