"""What several configs share: the base of every fine-tuning config and its runlocal shrink.

Config files import it by path (`config_utils.load_sibling(__file__, "common")`), so it loads
however the config itself was loaded (`--config=configs/finetune_glue.py:task=mnli` from any
working directory, or `load_sibling` in tests) without `configs/` being importable.
"""

import os

import ml_collections

from albert_jax import config_utils
from albert_jax.train import distributed
from albert_jax.model import config as model_config
from albert_jax.train import optim
from albert_jax.train import partitioning
from albert_jax.train import warm_start

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def finetune_config(size="base", version=2, max_seq_length=512):
  """The sections every fine-tuning config shares (all but `task`).

  size: base | large | xlarge | xxlarge | bert_base | bert_large | tiny | demo (the model that
  configs/demo.py pretrains); version: the ALBERT release of the preset (1 or 2).
  """
  c = ml_collections.ConfigDict()
  c.seed = 42                   # init of the head, dropout and data order
  if size == "demo":
    c.model = config_utils.load_sibling(__file__, "demo").get_config().model
    c.model_name = "demo"       # label of the run in metrics tables
  else:
    name = size if size.startswith("bert_") or size == "tiny" else "albert_" + size
    c.model = model_config.preset(name, version)
    c.model_name = f"{name}_v{version}"
  c.model_from_init = True      # take the architecture from init_from's model config if it has one
  c.init_from = warm_start.default_config()  # pretrained weights (empty path: from scratch)
  # Text -> model inputs; the fields pretraining has too keep its names (configs/pretrain.py).
  c.data = ml_collections.ConfigDict()
  c.data.spm_model = ""         # the checkpoint's SentencePiece model (e.g. 30k-clean.model)
  c.data.spm_corpus = ""        # train a SentencePiece model on these files if spm_model is ""
  c.data.do_lower_case = True   # lower-case before SentencePiece (the uncased official models)
  c.data.keep_accents = False   # the official models strip accents
  c.data.preprocessing = "official"  # huggingface: also `` and '' -> " (HF-tokenized models)
  c.data.max_seq_length = max_seq_length  # pieces per model input, [CLS] and [SEP]s included
  c.training = ml_collections.ConfigDict()
  c.training.global_batch_size = 32
  c.training.microbatches = 1   # gradient accumulation steps per update
  c.training.total_steps = 1000
  c.training.eval_every_steps = 100      # official: every saved checkpoint (GLUE: 100 steps)
  c.training.eval_batch_size = 64
  c.training.log_every_steps = 50
  c.training.checkpoint_every_steps = 0  # train-state saves for resuming; 0 = at every eval
  c.training.keep_checkpoints = 1
  c.training.max_nonfinite_steps = 10    # consecutive skipped steps before the run stops
  c.optimizer = optim.default_config()
  c.optimizer.name = "adamw"    # official fine-tuning optimizer: AdamW without bias correction
  c.partitioning = partitioning.default_config()
  c.multihost = distributed.default_config()
  return c


def finetune_runlocal(c, fixture, version):
  """Shrinks `c` to a tiny model on tests/fixtures/<fixture> with a corpus-trained vocabulary."""
  dropouts = {k: c.model[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob",
                                      "classifier_dropout_prob")}
  c.model = model_config.preset("tiny", version)
  c.model.update(dropouts)  # the recipe's dropouts on the tiny model
  c.model.vocab_size = 2000
  c.model_name = "tiny"
  c.task.source = "files"
  c.task.data_dir = os.path.join(REPO, "tests", "fixtures", fixture)
  c.data.spm_corpus = os.path.join(REPO, "data", "corpus", "*.txt")
  c.data.max_seq_length = 64
  c.training.global_batch_size = 16
  c.training.eval_batch_size = 16
  c.optimizer.learning_rate = 1e-3
