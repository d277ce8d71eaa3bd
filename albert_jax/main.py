"""Entry point: `python -m albert_jax.main --config=configs/pretrain.py:size=base --workdir=DIR`.

Fine-tuning configs (configs/finetune_*.py, which have a `task` section) run the fine-tuning job
(the same as `python -m albert_jax.finetune`).

Any config field can be overridden with `--config.x=y` (the config is locked, so a misspelled
field is an error). Re-running with the same workdir resumes from its latest checkpoint.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from albert_jax.train import finetune
from albert_jax.train import pretrain

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and created data")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Progress goes to stdout; keep library INFO logs (orbax is chatty) out of the way.
  logging.set_verbosity(logging.WARNING)
  if "task" in _CONFIG.value:
    finetune.run(_CONFIG.value, _WORKDIR.value)
    return
  result = pretrain.run(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() != 0:  # one summary per run, as for the logs
    return
  train, evaluation = result["train"], result["eval"]
  print(f"finished at step {result['step']}")
  if evaluation:
    print(f"final eval: MLM accuracy {evaluation['mlm_accuracy']:.4f}, "
          f"SOP accuracy {evaluation['sop_accuracy']:.4f}")
  elif train:
    print(f"final train: MLM accuracy {train.get('mlm_accuracy', float('nan')):.4f}, "
          f"SOP accuracy {train.get('sop_accuracy', float('nan')):.4f}")
  print(f"checkpoints: {result['checkpoints']}")
  print(f"TensorBoard: tensorboard --logdir {result['tensorboard']}")


if __name__ == "__main__":
  app.run(main)
