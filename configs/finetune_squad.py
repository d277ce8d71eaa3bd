"""SQuAD fine-tuning: `--config=configs/finetune_squad.py:version=1.1|2.0[,size=base,model_version=2][,runlocal]`.

Table 14: v1.1 lr 5e-5, batch 48, 3649 steps, 365 warmup, max length 384; v2.0 lr 3e-5, batch 48,
8144 steps, 814 warmup, max length 512; ALBERT dropout 0; doc_stride 128, max_query_length 64,
n_best_size 20, max_answer_length 30 (official flags); v2.0: the XLNet-style head with a beam of
5 starts x 5 ends and answerability dropout 0.1; the null threshold is tuned on dev (official).
Selection metric: dev F1. Data: tfds squad/v1.1|v2.0 (default) or the official JSON files
(`--config.task.source=files --config.task.data_dir=DIR` with train-v1.1.json and dev-v1.1.json).
size: as configs/finetune_glue.py. runlocal: a tiny model on tests/fixtures/squad.
"""

import ml_collections

from albert_jax import config_utils

common = config_utils.load_sibling(__file__, "common")

# version: (learning rate, batch, train steps, warmup, max length) — Table 14.
TABLE_14 = {"1.1": (5e-5, 48, 3649, 365, 384), "2.0": (3e-5, 48, 8144, 814, 512)}


def get_config(arg=None):
  args = config_utils.parse_arg(arg, version="1.1", size="base", model_version=2,
                                runlocal=False)
  if args.version not in TABLE_14:
    raise ValueError(f"config argument version={args.version!r}: allowed {sorted(TABLE_14)}")
  lr, batch, steps, warmup, max_len = TABLE_14[args.version]
  c = common.finetune_config(args.size, args.model_version, max_seq_length=max_len)
  c.model.hidden_dropout_prob = 0.0          # "ALBERT DR" of Table 14
  c.model.attention_probs_dropout_prob = 0.0
  c.model.classifier_dropout_prob = 0.1      # v2.0 answerability dropout (official dropout_prob)

  c.task = ml_collections.ConfigDict()
  c.task.family = "squad"
  c.task.version = args.version
  c.task.source = "tfds"          # tfds (squad/v<version>) | files (official JSON in data_dir)
  c.task.data_dir = ""            # folder with train-v<version>.json and dev-v<version>.json
  c.task.tfds_data_dir = ""
  c.task.doc_stride = 128         # window step over the paragraph, in pieces
  c.task.max_query_length = 64    # question pieces kept
  c.task.n_best_size = 20         # start/end candidates per window and answers kept
  c.task.max_answer_length = 30   # in pieces
  c.task.start_n_top = 5          # v2.0 beam: starts
  c.task.end_n_top = 5            # v2.0 beam: ends per start
  c.task.train_split = "train"
  c.task.eval_splits = "validation"
  c.task.predict_splits = ""      # the SQuAD test sets are hidden
  c.task.selection_metric = "validation/f1"
  c.task.max_train_examples = 0
  c.task.max_eval_examples = 0

  c.training.global_batch_size = batch
  c.training.total_steps = steps
  c.training.eval_every_steps = 1000  # dev decoding is slow; ~4 (v1.1) / 8 (v2.0) evaluations
  c.training.eval_batch_size = 64
  c.optimizer.learning_rate = lr
  c.optimizer.warmup_steps = warmup

  if args.runlocal:
    common.finetune_runlocal(c, "squad", args.model_version)
    c.task.doc_stride = 24
    c.task.max_query_length = 16
    c.training.global_batch_size = 8
    c.training.total_steps = 30
    c.training.eval_every_steps = 15
    c.training.log_every_steps = 15
    c.optimizer.warmup_steps = 3
  return c
