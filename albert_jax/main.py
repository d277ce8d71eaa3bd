"""Entry point: `python -m albert_jax.main --config=configs/pretrain.py:size=base --workdir=DIR`.

Fine-tuning configs (configs/finetune_*.py, which have a `task` section) run the fine-tuning job
(the same as `python -m albert_jax.finetune`).

Any config field can be overridden with `--config.x=y` (the config is locked, so a misspelled
field is an error). Re-running with the same workdir resumes from its latest checkpoint.
"""

from typing import Optional, Sequence

from albert_jax import command_line
from albert_jax import config_utils

PROG = "python -m albert_jax.main"


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> None:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  config, workdir = config_utils.parse_run_flags(argv, prog=PROG, doc=__doc__,
                                                 example="configs/pretrain.py:size=base")
  # Imported after parsing: a bad flag is reported before the training stack loads.
  import jax  # pylint: disable=g-import-not-at-top
  from albert_jax.train import finetune  # pylint: disable=g-import-not-at-top
  from albert_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  if "task" in config:
    finetune.run(config, workdir)
    return
  result = pretrain.run(config, workdir)
  if jax.process_index() != 0:  # one summary per run, as for the logs
    return
  train, evaluation = result["train"], result["eval"]
  print(f"finished at step {result['step']}")
  if evaluation:
    print(f"final eval: MLM accuracy {evaluation['mlm_accuracy']:.1%} (unigram baseline "
          f"{evaluation['mlm_unigram_baseline']:.1%}), SOP accuracy "
          f"{evaluation['sop_accuracy']:.1%} (majority {evaluation['sop_majority_baseline']:.1%})")
  elif train:
    print(f"final train: MLM accuracy {train.get('mlm_accuracy', float('nan')):.4f}, "
          f"SOP accuracy {train.get('sop_accuracy', float('nan')):.4f}")
  print(f"checkpoints: {result['checkpoints']}")
  print(f"TensorBoard: tensorboard --logdir {result['tensorboard']}")


if __name__ == "__main__":
  command_line.run(main)
