"""GLUE fine-tuning: `--config=configs/finetune_glue.py:task=mnli[,size=base,version=2][,runlocal]`.

task: cola | sst2 | mrpc | qqp | stsb | mnli | qnli | rte | wnli. Hyper-parameters are the paper's
Table 14 (= the official run_glue.sh): learning rate, batch, ALBERT dropout (hidden and attention),
classifier dropout 0.1, steps, warmup, max length 512; AdamW, evaluation every 100 steps (QNLI 200)
and the best dev checkpoint kept, as in the official protocol. Selection metric: accuracy (CoLA:
Matthews correlation, STS-B: Pearson; MNLI: matched accuracy); F1 (MRPC, QQP), Spearman (STS-B)
and mismatched accuracy (MNLI) are reported too.
size: base | large | xlarge | xxlarge | tiny | demo (the model of configs/demo.py); the architecture
is replaced by the checkpoint's when `init_from.path` has a model config (`model_from_init`).
Data: tfds `glue/<task>` (default) or `--config.task.source=files --config.task.data_dir=glue_data/MNLI`
(local or gs://). MNLI also predicts the diagnostic set (split `ax`: tfds glue/ax, or the file
`task.ax_file`) for the leaderboard's AX.tsv.
runlocal: a tiny model on the GLUE-format fixtures in tests/fixtures/glue with a SentencePiece model
trained on the bundled corpus, in a minute on a laptop.
"""

import os

import ml_collections

from albert_jax import config_utils

common = config_utils.load_sibling(__file__, "common")

# task: (learning rate, batch, ALBERT dropout, train steps, warmup steps, max length) — Table 14.
TABLE_14 = {
    "cola": (1e-5, 16, 0.0, 5336, 320, 512),
    "stsb": (2e-5, 16, 0.0, 3598, 214, 512),
    "sst2": (1e-5, 32, 0.0, 20935, 1256, 512),
    "mnli": (3e-5, 128, 0.0, 10000, 1000, 512),
    "qnli": (1e-5, 32, 0.0, 33112, 1986, 512),
    "qqp": (5e-5, 128, 0.1, 14000, 1000, 512),
    "rte": (3e-5, 32, 0.1, 800, 200, 512),
    "mrpc": (2e-5, 32, 0.0, 800, 200, 512),
    "wnli": (2e-5, 16, 0.1, 2000, 250, 512),
}
# GLUE folder names (official data layout) of the fixtures used by runlocal.
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
             "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def get_config(arg=None):
  args = config_utils.parse_arg(arg, task="mnli", size="base", version=2, runlocal=False)
  if args.task not in TABLE_14:
    raise ValueError(f"config argument task={args.task!r}: allowed {sorted(TABLE_14)}")
  lr, batch, dropout, steps, warmup, max_len = TABLE_14[args.task]
  c = common.finetune_config(args.size, args.version, max_seq_length=max_len)
  c.model.hidden_dropout_prob = dropout          # "ALBERT DR" of Table 14
  c.model.attention_probs_dropout_prob = dropout
  c.model.classifier_dropout_prob = 0.1          # official, hard-coded on the pooled output

  c.task = ml_collections.ConfigDict()
  c.task.family = "glue"
  c.task.name = args.task
  c.task.source = "tfds"          # tfds (glue/<task>) | files (official GLUE TSVs in data_dir)
  c.task.data_dir = ""            # the task's GLUE folder, e.g. glue_data/MNLI (source=files)
  c.task.tfds_data_dir = ""       # tfds data_dir ("" = tfds default)
  c.task.train_split = "train"
  mnli = args.task == "mnli"
  c.task.eval_splits = "validation_matched,validation_mismatched" if mnli else "validation"
  # Submission TSVs; MNLI's model also predicts the GLUE diagnostic set (AX.tsv).
  c.task.predict_splits = "test_matched,test_mismatched,ax" if mnli else "test"
  if mnli:
    # The diagnostic TSV for source=files ("" = diagnostic/diagnostic.tsv beside data_dir, as in
    # the official GLUE download; GLUE's AX.tsv works too). tfds: glue/ax.
    c.task.ax_file = ""
  c.task.selection_metric = {"cola": "validation/mcc", "stsb": "validation/pearson",
                             "mnli": "validation_matched/accuracy"}.get(args.task,
                                                                       "validation/accuracy")
  c.task.max_train_examples = 0   # 0 = all (a prefix for quick runs)
  c.task.max_eval_examples = 0

  c.training.global_batch_size = batch
  c.training.total_steps = steps
  c.training.eval_every_steps = 200 if args.task == "qnli" else 100  # run_glue.sh checkpoints
  c.optimizer.learning_rate = lr
  c.optimizer.warmup_steps = warmup

  if args.runlocal:
    common.finetune_runlocal(c, os.path.join("glue", GLUE_DIRS[args.task]), args.version)
    c.training.total_steps = 60
    c.training.eval_every_steps = 20
    c.training.log_every_steps = 20
    c.optimizer.warmup_steps = 6
  return c
