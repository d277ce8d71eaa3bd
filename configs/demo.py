"""The demo: a tiny ALBERT pretrained end to end on the bundled corpus in a few minutes on 2 CPUs.

    python -m albert_jax.main --config=configs/demo.py --workdir=/tmp/albert_demo

Trains a 2,000-piece SentencePiece vocabulary on the corpus, creates SOP/n-gram-masked records
(train: the library reference pages; eval: the FAQ), then pretrains with LAMB and reports MLM and
SOP accuracy on the held-out FAQ records.
"""

import os

from albert_jax import config_utils

pretrain = config_utils.load_sibling(__file__, "pretrain")


def get_config(arg=None):
  del arg
  c = pretrain.get_config("size=tiny")
  c.model.vocab_size = 2000
  c.model.hidden_size = 128
  c.model.num_attention_heads = 4
  c.model.intermediate_size = 512
  c.model.embedding_size = 64
  c.model.num_hidden_layers = 4
  corpus = pretrain.CORPUS
  c.data.corpus = ",".join(os.path.join(corpus, f) for f in (
      "library_a_l.txt", "library_m_z.txt", "howto.txt", "tutorial.txt", "reference.txt",
      "using_extending.txt"))
  c.data.eval_corpus = os.path.join(corpus, "faq.txt")
  c.data.spm_vocab_size = 2000
  c.data.max_seq_length = 64
  c.data.max_predictions_per_seq = 10
  c.data.dupe_factor = 1
  c.data.shuffle_buffer_size = 2000
  c.training.global_batch_size = 64
  c.training.total_steps = 600
  c.training.log_every_steps = 100
  c.training.eval_every_steps = 200
  c.training.eval_batch_size = 64
  c.training.eval_max_batches = 20
  c.training.checkpoint_every_steps = 200
  c.optimizer.learning_rate = 1e-2
  c.optimizer.warmup_steps = 60
  return c
