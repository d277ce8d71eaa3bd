"""ALBERT pretraining: `--config=configs/pretrain.py:size=base,version=2[,runlocal]`.

Arguments: size = base | large | xlarge | xxlarge | bert_base | bert_large | tiny;
version = 1 | 2 (dropout of the presets); runlocal = shrink everything so the config runs on a
laptop on the bundled corpus (data created in the workdir) in a few minutes.
Defaults are the paper's settings (arXiv:1909.11942 §4.1; the warmup from the official README):
batch 4096, LAMB, lr 0.00176, 3125 warmup steps, linear decay to 0 at 125k steps, sequences of 512
with 20 predictions, SOP.
"""

import os

import ml_collections

from albert_jax import config_utils
from albert_jax.train import distributed
from albert_jax.model import config as model_config
from albert_jax.train import optim
from albert_jax.train import partitioning
from albert_jax.train import warm_start

SIZES = ("base", "large", "xlarge", "xxlarge", "bert_base", "bert_large", "tiny")
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "corpus")


def get_config(arg=None):
  args = config_utils.parse_arg(arg, size="base", version=2, runlocal=False)
  if args.size not in SIZES:
    raise ValueError(f"configs/pretrain.py: size={args.size!r}; allowed: {'|'.join(SIZES)}")
  c = ml_collections.ConfigDict()
  c.seed = 42  # one seed: init, dropout (folded with the step) and data order

  name = args.size if args.size.startswith("bert_") or args.size == "tiny" else (
      "albert_" + args.size)
  c.model = model_config.preset(name, args.version)

  c.data = ml_collections.ConfigDict()
  c.data.train_files = ""        # glob of TFRecords from create_pretraining_data
  c.data.eval_files = ""         # held-out TFRecords ("" = no periodic eval)
  c.data.spm_model = ""          # SentencePiece model (checked against model.vocab_size)
  c.data.max_seq_length = 512
  c.data.max_predictions_per_seq = 20
  c.data.shuffle_buffer_size = 10_000
  c.data.dynamic_masking = False  # mask at read time from token-only records
  # Creating the data inside the workdir from text (used by the demo and runlocal):
  c.data.corpus = ""             # globs of text files; used when train_files is empty
  c.data.eval_corpus = ""
  c.data.spm_vocab_size = 30000  # SentencePiece vocabulary trained when spm_model is empty
  c.data.dupe_factor = 40
  c.data.num_workers = 1
  c.data.random_next_sentence = False  # create NSP instead of SOP data (Table 5's NSP row)
  # One-sentence chunks: "random_document" pairs them with another document's text, label 1
  # (official); "skip" drops them, so that SOP labels are pure order labels.
  c.data.single_segment_negatives = "random_document"
  # Text normalization before SentencePiece (vocabulary and records alike):
  c.data.do_lower_case = True
  c.data.keep_accents = False
  c.data.preprocessing = "official"  # official | huggingface (also `` and '' -> ")

  c.training = ml_collections.ConfigDict()
  c.training.global_batch_size = 4096
  c.training.microbatches = 1           # gradient accumulation steps per optimizer step
  c.training.total_steps = 125_000
  c.training.inter_sentence_loss = "sop"  # sop | nsp | none (Table 5)
  c.training.log_every_steps = 100
  c.training.eval_every_steps = 5000
  c.training.eval_batch_size = 64
  c.training.eval_max_batches = 100     # 0 = the whole eval split
  c.training.checkpoint_every_steps = 5000
  c.training.keep_checkpoints = 5
  c.training.max_nonfinite_steps = 10   # consecutive skipped steps before the run stops

  c.optimizer = optim.default_config()   # LAMB, lr 0.00176, warmup 3125, clip 1.0
  c.partitioning = partitioning.default_config()
  c.multihost = distributed.default_config()
  c.init_from = warm_start.default_config()

  if args.runlocal:
    full, c.model = c.model, model_config.preset("tiny", args.version)
    # The tiny shape keeps what makes the preset's family: BERT's unshared layers with E = H,
    # and the preset's dropout.
    c.model.layer_sharing = full.layer_sharing
    if full.embedding_size == full.hidden_size:
      c.model.embedding_size = c.model.hidden_size
    c.model.hidden_dropout_prob = full.hidden_dropout_prob
    c.model.attention_probs_dropout_prob = full.attention_probs_dropout_prob
    c.model.vocab_size = 2000
    c.data.corpus = os.path.join(CORPUS, "library_*.txt")
    c.data.eval_corpus = os.path.join(CORPUS, "faq.txt")
    c.data.spm_vocab_size = 2000
    c.data.max_seq_length = 128
    c.data.dupe_factor = 1
    c.data.shuffle_buffer_size = 1000
    c.training.global_batch_size = 16
    c.training.total_steps = 50
    c.training.log_every_steps = 10
    c.training.eval_every_steps = 50
    c.training.eval_batch_size = 16
    c.training.eval_max_batches = 10
    c.training.checkpoint_every_steps = 25
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 5
  return c
