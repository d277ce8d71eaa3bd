"""Parameter counts of model configs, beside the paper's Table 1.

    python -m albert_jax.model.param_count                                   # every preset
    python -m albert_jax.model.param_count --config=configs/model.py:size=base --config.embedding_size=768

Counts are encoder + pooler (the paper's convention); `--heads` adds the MLM and SOP heads.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import flax.linen as nn

from albert_jax import command_line
from albert_jax import config_utils

from albert_jax.model import modeling
from albert_jax.model.config import PAPER_PARAMS, PRESETS, preset

# Where the architecture and the paper's figure disagree beyond rounding, say why.
NOTES = {
    "albert_xlarge": "58.7M (59.0M with the pretraining heads); the paper says 60M here and 59M "
                     "in its earlier arXiv versions",
    "albert_xxlarge": "the architecture gives 222.6M; the paper's 235M (233M in its text) cannot "
                      "be reproduced from the released shapes",
    "bert_base": "109.1M with the pooler; the paper's 108M matches the count without it (108.5M)",
}


def count_params(config: Any, heads: bool = False) -> int:
  """Number of parameters of AlbertModel (with pooler), or AlbertForPreTraining if `heads`."""
  model = (modeling.AlbertForPreTraining(config) if heads else modeling.AlbertModel(config))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
  return sum(x.size for x in jax.tree.leaves(nn.unbox(shapes["params"])))


def table(heads: bool = False) -> list[tuple[str, int, float | None, str]]:
  """(preset, our count, paper's count or None, note) for every preset."""
  rows = []
  for name in PRESETS:
    rows.append((name, count_params(preset(name), heads), PAPER_PARAMS.get(name),
                 NOTES.get(name, "")))
  return rows


PROG = "python -m albert_jax.model.param_count"


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  argv = list(sys.argv[1:] if argv is None else argv)

  def define_flags(flag_values: flags.FlagValues) -> None:
    config_utils.define_config_flag(flag_values, argv, "config", "model config file "
                                    "(configs/model.py)", lock_config=False)
    flags.DEFINE_bool("heads", False, "also count the MLM and SOP pretraining heads",
                      flag_values=flag_values)

  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  command_line.no_positional(positional, PROG)
  config, heads = args.config, args.heads
  if config is not None:
    print(f"{count_params(config, heads):,} parameters")
    return 0
  print(f"{'preset':<16}{'ours':>16}{'ours (M)':>10}{'paper':>8}  note")
  for name, n, paper, note in table(heads):
    paper_s = f"{paper / 1e6:.0f}M" if paper else "-"
    print(f"{name:<16}{n:>16,}{n / 1e6:>9.1f}M{paper_s:>8}  {note}")
  return 0


if __name__ == "__main__":
  command_line.run(main)
