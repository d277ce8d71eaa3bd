"""Sequence labelling: `--config=configs/finetune_tagging.py:task=conll2003[,size=base][,runlocal]`.

task: conll2003 (NER; tfds `conll2003`, IOB2 tags PER/ORG/LOC/MISC; selection: dev entity F1 with
the conlleval rules, per-type P/R/F1 and token accuracy reported too) | en_ewt (POS; tfds
`universal_dependencies/en_ewt`, UPOS; selection: dev token accuracy) | xtreme_pos (POS; tfds
`xtreme_pos/xtreme_pos_en`, the XTREME English UPOS data; dev token accuracy).
The ALBERT paper has no tagging recipe; the defaults are the usual BERT-family NER/POS settings:
AdamW lr 5e-5, batch 32, about 3 epochs with 10% warmup, max length 128 with windows every 64
pieces, ALBERT dropout 0 (as the v2 recipes), classifier dropout 0.1, evaluation every 200 steps
and the best dev checkpoint kept (as for GLUE).
Data: tfds (default) or local files, `--config.task.source=files --config.task.data_dir=DIR`
(CoNLL: train.txt / valid.txt or dev.txt / test.txt, or eng.train / eng.testa / eng.testb;
CoNLL-U: *-train.conllu, *-dev.conllu, *-test.conllu; see albert_jax/tasks/tagging.py).
Own label sets: `--config.task.labels="('O','B-GENE','I-GENE')"` (and scoring=accuracy for tags
that are not BIO).
size: as configs/finetune_glue.py. runlocal: a tiny model on tests/fixtures/conll2003 (CoNLL) or
tests/fixtures/en_ewt (CoNLL-U).
"""

import ml_collections

from albert_jax import config_utils

common = config_utils.load_sibling(__file__, "common")

# tfds conll2003 `ner` and UD/xtreme_pos `upos` class names, in the tfds order.
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "_")
# task: (tfds name, tfds tag feature, labels, scoring, train steps, runlocal fixture folder)
TASKS = {
    "conll2003": ("conll2003", "ner", NER_TAGS, "entity", 1300, "conll2003"),
    "en_ewt": ("universal_dependencies/en_ewt", "upos", UPOS, "accuracy", 1200, "en_ewt"),
    "xtreme_pos": ("xtreme_pos/xtreme_pos_en", "upos", UPOS, "accuracy", 2000, "en_ewt"),
}


def get_config(arg=None):
  args = config_utils.parse_arg(arg, task="conll2003", size="base", version=2, runlocal=False)
  if args.task not in TASKS:
    raise ValueError(f"config argument task={args.task!r}: allowed {sorted(TASKS)}")
  tfds_name, label_key, labels, scoring, steps, fixture = TASKS[args.task]
  c = common.finetune_config(args.size, args.version, max_seq_length=128)
  c.model.hidden_dropout_prob = 0.0
  c.model.attention_probs_dropout_prob = 0.0
  c.model.classifier_dropout_prob = 0.1     # dropout on every token before the classifier

  c.task = ml_collections.ConfigDict()
  c.task.family = "tagging"
  c.task.name = args.task
  c.task.source = "tfds"          # tfds (task.tfds_name) | files (CoNLL / CoNLL-U in data_dir)
  c.task.tfds_name = tfds_name
  c.task.tfds_label_key = label_key   # the tfds feature holding the tags
  c.task.tfds_data_dir = ""       # tfds data_dir ("" = tfds default)
  c.task.data_dir = ""            # folder with the split files (source=files)
  c.task.file_format = "auto"     # auto (.conllu -> CoNLL-U, else CoNLL) | conll | conllu
  c.task.label_column = -1        # tag column; -1: last (CoNLL) or UPOS (CoNLL-U)
  c.task.labels = labels          # tag names; the classifier's outputs in this order
  c.task.scoring = scoring        # entity (conlleval P/R/F1 + accuracy) | accuracy
  c.task.doc_stride = 64          # long sentences: a window of max_seq_length - 2 pieces every 64
  c.task.train_split = "train"
  c.task.eval_splits = "dev"
  c.task.predict_splits = "test"  # labelled: scored, and written as CoNLL
  c.task.selection_metric = "dev/f1" if scoring == "entity" else "dev/accuracy"
  c.task.max_train_examples = 0   # 0 = all (a prefix for quick runs)
  c.task.max_eval_examples = 0

  c.training.global_batch_size = 32
  c.training.total_steps = steps
  c.training.eval_every_steps = 200
  c.training.eval_batch_size = 64
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = steps // 10

  if args.runlocal:
    common.finetune_runlocal(c, fixture, args.version)
    c.data.max_seq_length = 32
    c.task.doc_stride = 16
    c.training.total_steps = 60
    c.training.eval_every_steps = 20
    c.training.log_every_steps = 20
    c.optimizer.warmup_steps = 6
  return c
