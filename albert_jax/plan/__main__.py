"""`python -m albert_jax.plan`: the command line of albert_jax/plan/planner.py."""

import sys
from typing import Optional, Sequence

from absl import flags

from albert_jax import command_line
from albert_jax import config_utils
from albert_jax.plan import planner

PROG = "python -m albert_jax.plan"


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  argv = list(sys.argv[1:] if argv is None else argv)

  def define_flags(flag_values: flags.FlagValues) -> None:
    config_utils.define_config_flag(flag_values, argv, "config",
                                    "config file, e.g. configs/pretrain.py:size=xxlarge")
    flags.DEFINE_string("topology", None, "TPU topology, e.g. v3:16x16, v5e:4x4",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_slices", 1, "slices joined over the data-center network",
                         flag_values=flag_values)
    flags.DEFINE_float("mfu", 0.5, "model FLOPs utilization assumed for the step time",
                       flag_values=flag_values)
    flags.DEFINE_integer("max_variants", 12, "variants to compile when the step does not fit "
                         "(0: report only)", flag_values=flag_values)
    flags.DEFINE_bool("roofline", True, "the roofline of each step that fits (--noroofline: "
                      "memory only)", flag_values=flag_values)
    flags.mark_flags_as_required(["config", "topology"], flag_values=flag_values)

  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=planner.__doc__)
  return planner.main([PROG, *positional], args.config, args.topology, args.num_slices, args.mfu,
                      args.max_variants, args.roofline)


if __name__ == "__main__":
  command_line.run(main)
