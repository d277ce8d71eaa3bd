"""Model presets: `--config=configs/model.py:size=base,version=2`.

size: base | large | xlarge | xxlarge (ALBERT, Table 1 of the paper), bert_base | bert_large (the
BERT baselines: E = H, no sharing), tiny (a laptop-sized ALBERT for tests and demos).
version: 1 or 2, the ALBERT release (v1 dropout 0.1 except xxlarge; v2 no dropout).
Any field can then be overridden, e.g. `--config.layer_sharing=attention --config.embedding_size=768`.
"""

from albert_jax import config_utils
from albert_jax.model import config as model_config


def get_config(arg=None):
  args = config_utils.parse_arg(arg, size="base", version=2)
  name = args.size if args.size.startswith("bert_") or args.size == "tiny" else (
      "albert_" + args.size)
  return model_config.preset(name, args.version)
