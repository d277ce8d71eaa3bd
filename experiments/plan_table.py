"""The paper's models on the paper's TPU v3-512 and on current TPU slices: fit and speed, planned.

    python -m experiments.plan_table [--models=bert_large,base,...] [--topologies=v3:16x16,...]
        [--mfu=0.5] [--out=workdirs/plan_table]

Every cell is `albert_jax.plan` on `configs/pretrain.py:size=<model>` (the paper's pretraining
setup: batch 4096, sequences of 512 with 20 predictions, LAMB, 125k steps) with
`--config.model.dtype=bfloat16`: the real train step compiled ahead of time for the slice, its
per-device memory against the chip's HBM, and when it does not fit, the cheapest variant that does
(see albert_jax/plan/planner.py). Speeds come from the analytic FLOPs at `--mfu`, so they are the same for
a variant; a variant with gradient accumulation or remat will reach a lower MFU in practice. The
"MFU ceiling" column is the compiler's estimate (albert_jax/plan/roofline.py), not a measurement.

The slices have 256 chips each, the chip count of the paper's v3-512 (512 v3 cores). Needs
libtpu (`pip install -e '.[tpu]'`); no TPU. Cells are appended to OUT.jsonl as they finish (a
rerun skips them) and the markdown table goes to OUT.md and stdout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = ("bert_large", "base", "large", "xlarge", "xxlarge")
NAMES = {"bert_large": "BERT-large", "base": "ALBERT-base", "large": "ALBERT-large",
         "xlarge": "ALBERT-xlarge", "xxlarge": "ALBERT-xxlarge"}
# 256 chips each: the paper's TPU v3-512 (its hardware), then v4, v5e, v5p and v6e (Trillium).
TOPOLOGIES = ("v3:16x16", "v4:4x8x8", "v5e:16x16", "v5p:4x8x8", "v6e:16x16")
OVERRIDES = {"model.dtype": "bfloat16"}

_MODELS = flags.DEFINE_list("models", list(MODELS), "model sizes of configs/pretrain.py")
_TOPOLOGIES = flags.DEFINE_list("topologies", list(TOPOLOGIES), "TPU slices, e.g. v3:16x16")
_MFU = flags.DEFINE_float("mfu", 0.5, "model FLOPs utilization assumed for the speeds")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "workdirs", "plan_table"),
                           "path prefix of OUT.jsonl and OUT.md (workdirs/ is git-ignored)")


def load_config(size: str):
  path = os.path.join(REPO, "configs", "pretrain.py")
  spec = importlib.util.spec_from_file_location("albert_jax_config_pretrain", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(f"size={size}")


def cell(size: str, topology: str, mfu: float) -> dict[str, Any]:
  """Plans one (model, slice) and keeps what the table shows."""
  from albert_jax.plan import planner as plan  # pylint: disable=g-import-not-at-top
  config = plan.with_overrides(load_config(size), OVERRIDES)
  start = time.perf_counter()
  p = plan.plan(config, topology, mfu=mfu)
  chosen = p.chosen
  step = p.step_seconds(mfu)
  return {"model": size, "topology": topology, "mfu": mfu, "fits": p.fits,
          "chosen_overrides": chosen.overrides if chosen else None,
          "memory_total": chosen.memory["total"] if chosen else None,
          "temp_required": p.attempts[0].memory.get("temp"),
          "hbm": p.spec.hbm_per_device, "device_kind": p.spec.device_kind,
          "mfu_ceiling": chosen.estimate.mfu_ceiling if chosen and chosen.estimate else None,
          "bound": chosen.estimate.bound if chosen and chosen.estimate else None,
          "devices": p.num_devices, "tried": len(p.attempts) - 1,
          "steps_per_sec": 1 / step, "days": config.training.total_steps * step / 86400,
          "tokens_per_sec": config.training.global_batch_size * config.data.max_seq_length / step,
          "seconds": time.perf_counter() - start}


def _variant(overrides: dict[str, Any]) -> str:
  return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()) or "as configured"


def markdown(rows: list[dict[str, Any]], mfu: float) -> str:
  from albert_jax.plan import planner as plan  # pylint: disable=g-import-not-at-top
  gib = 2**30
  out = ["| model | slice (256 chips) | fits as configured? | memory per device / HBM | "
         f"setting that fits | MFU ceiling (compiler's estimate) | steps/s at {mfu:.0%} MFU | "
         f"125k steps at {mfu:.0%} MFU |",
         "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["memory_total"] is not None:
      memory = f"{r['memory_total'] / gib:.1f} / {r['hbm'] / gib:.0f} GiB"
      if r["hbm"] - r["memory_total"] < 0.05 * r["hbm"]:
        memory += " (tight)"
      setting = _variant(r["chosen_overrides"])
    else:
      memory = f"> {r['hbm'] / gib:.0f} GiB"
      setting = f"none of {r['tried']} variants"
    ceiling = (f"{r['mfu_ceiling']:.0%} ({r['bound']}-bound)" if r.get("mfu_ceiling")
               else "n/a")
    fits = "yes" if r["fits"] else (f"no ({r['temp_required'] / gib:.0f} GiB temporaries)"
                                    if r["temp_required"] else "no")
    out.append(f"| {NAMES.get(r['model'], r['model'])} | {r['topology']} ({r['device_kind']}) | "
               f"{fits} | {memory} | {setting} | {ceiling} | {r['steps_per_sec']:.2f} | "
               f"{plan.duration(r['days'] * 86400)} |")
  return "\n".join(out)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out, mfu = _OUT.value, _MFU.value
  from albert_jax.plan import planner as plan  # pylint: disable=g-import-not-at-top
  plan.setup_host()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  done = {}
  if os.path.exists(out + ".jsonl"):
    for line in open(out + ".jsonl"):
      r = json.loads(line)
      done[(r["model"], r["topology"], r["mfu"])] = r
  rows = []
  for size in _MODELS.value:
    for topology in _TOPOLOGIES.value:
      key = (size, topology, mfu)
      if key not in done:
        done[key] = cell(size, topology, mfu)
        with open(out + ".jsonl", "a") as f:
          f.write(json.dumps(done[key]) + "\n")
        print(f"{size} on {topology}: fits={done[key]['fits']} "
              f"[{done[key]['seconds']:.0f} s]", file=sys.stderr, flush=True)
      rows.append(done[key])
  table = markdown(rows, mfu)
  with open(out + ".md", "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
