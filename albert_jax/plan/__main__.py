"""`python -m albert_jax.plan`: the command line of albert_jax/plan/planner.py."""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from albert_jax.plan import planner

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. "
                                          "configs/pretrain.py:size=xxlarge", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v3:16x16, v5e:4x4")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "slices joined over the data-center network")
_MFU = flags.DEFINE_float("mfu", 0.5, "model FLOPs utilization assumed for the step time")
_MAX_VARIANTS = flags.DEFINE_integer("max_variants", 12, "variants to compile when the step "
                                     "does not fit (0: report only)")
_ROOFLINE = flags.DEFINE_bool("roofline", True, "compile an unrolled copy of each step that "
                              "fits for the roofline (--noroofline: memory only, faster)")
flags.mark_flags_as_required(["config", "topology"])

if __name__ == "__main__":
  app.run(lambda argv: sys.exit(planner.main(argv, _CONFIG.value, _TOPOLOGY.value,
                                             _NUM_SLICES.value, _MFU.value, _MAX_VARIANTS.value,
                                             _ROOFLINE.value)))
