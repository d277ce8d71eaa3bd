"""RACE fine-tuning: `--config=configs/finetune_race.py[:size=base,version=2][,runlocal]`.

Table 14 (v1 models): lr 2e-5, batch 32, ALBERT dropout 0.1, classifier dropout 0.1, 12000 steps,
1000 warmup, max length 512, max_qa_length 128. For v2 models the official README changes RACE to
lr 1e-5 and ALBERT dropout 0 ("the v1 hyperparameters cause divergence"): version=2 (the default)
does that. The best dev checkpoint (accuracy) predicts the test set, scored on middle, high and all.
Data: tfds race/middle + race/high (default) or the RACE folder
(`--config.task.source=files --config.task.data_dir=RACE`). runlocal: tests/fixtures/race.
"""

import ml_collections

from albert_jax import config_utils

common = config_utils.load_sibling(__file__, "common")


def get_config(arg=None):
  args = config_utils.parse_arg(arg, size="base", version=2, runlocal=False)
  c = common.finetune_config(args.size, args.version, max_seq_length=512)
  dropout = 0.1 if args.version == 1 else 0.0
  c.model.hidden_dropout_prob = dropout      # "ALBERT DR"
  c.model.attention_probs_dropout_prob = dropout
  c.model.classifier_dropout_prob = 0.1

  c.task = ml_collections.ConfigDict()
  c.task.family = "race"
  c.task.source = "tfds"          # tfds (race/<level>) | files (the RACE folder in data_dir)
  c.task.data_dir = ""            # RACE folder with {train,dev,test}/{middle,high}/*.txt
  c.task.tfds_data_dir = ""
  c.task.levels = "middle,high"   # official high_only / middle_only = one level
  c.task.max_qa_length = 128      # question+option pieces kept (the last ones)
  c.task.train_split = "train"
  c.task.eval_splits = "dev"
  c.task.predict_splits = "test"  # labelled: scored for middle, high and all
  c.task.selection_metric = "dev/accuracy"
  c.task.max_train_examples = 0
  c.task.max_eval_examples = 0

  c.training.global_batch_size = 32
  c.training.total_steps = 12000
  c.training.eval_every_steps = 1000
  c.training.eval_batch_size = 32
  c.optimizer.learning_rate = 2e-5 if args.version == 1 else 1e-5
  c.optimizer.warmup_steps = 1000

  if args.runlocal:
    common.finetune_runlocal(c, "race", args.version)
    c.task.max_qa_length = 24
    c.training.global_batch_size = 8
    c.training.eval_batch_size = 8
    c.training.total_steps = 20
    c.training.eval_every_steps = 10
    c.training.log_every_steps = 10
    c.optimizer.warmup_steps = 2
  return c
