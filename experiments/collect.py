"""Collects a sweep's results into markdown and CSV tables beside the paper's, and PNG plots.

    python -m experiments.collect --sweep=table4 --root=/tmp/sweeps [--out=DIR] [--seeds=1,2]

Per run (ROOT/<sweep>/<run>): parameter count, steps done, the last held-out MLM and SOP accuracy
from metrics.jsonl (training accuracy when there is no eval split), and fine-tuning scores from
ROOT/<sweep>/<run>/finetune/<task>/metrics.json when present; beside each, the paper's figure.
Writes <sweep>.md, <sweep>.csv, <sweep>_curves.png (MLM accuracy against steps, every run) and
<sweep>_params.png (MLM accuracy against parameter count) into --out (default ROOT/<sweep>).
With --seeds (as the sweep was launched), one row per run and seed (`<run>_s<seed>`).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Optional

from absl import app
from absl import flags

from albert_jax import command_line
from experiments import launch
from experiments import sweeps

_SWEEP = flags.DEFINE_string("sweep", None, f"one of {sorted(sweeps.SWEEPS)}")
_ROOT = flags.DEFINE_string("root", None, "directory with one workdir per run")
_OUT = flags.DEFINE_string("out", None, "output directory (default ROOT/<sweep>)")
_SEEDS = flags.DEFINE_list("seeds", [], "the seeds the sweep was launched with (launch --seeds)")

# Fine-tuning tasks whose best dev score fills a paper column: column -> (task dir, metric keys
# in the `best.metrics` of finetune.py's metrics.json, "<split>/<metric>").
# paper column -> (fine-tuning task directory, metrics, factor to percent): the SQuAD scripts
# report percentages, accuracies are fractions.
FINETUNE_COLUMNS = {"squad11": ("squad_v1.1", ("validation/f1", "validation/exact_match"), 1),
                    "squad20": ("squad_v2.0", ("validation/f1", "validation/exact"), 1),
                    "mnli": ("mnli", ("validation_matched/accuracy",), 100),
                    "sst2": ("sst2", ("validation/accuracy",), 100),
                    "race": ("race", ("dev/accuracy",), 100)}


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Rows of metrics.jsonl; when a resumed run logged a step twice, the later row wins."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_step: dict[tuple[int, frozenset], dict] = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      by_step[(row["step"], frozenset(row))] = row
  return sorted(by_step.values(), key=lambda r: r["step"])


def last(rows: list[dict], key: str) -> Optional[float]:
  values = [r[key] for r in rows if key in r]
  return values[-1] if values else None


def finetune_scores(workdir: str) -> dict[str, str]:
  """{paper column: our best dev score} from the run's fine-tuning metrics, where present."""
  out = {}
  for column, (task, keys, to_percent) in FINETUNE_COLUMNS.items():
    path = os.path.join(workdir, "finetune", task, "metrics.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      best = json.load(f).get("best", {})
    metrics = best.get("metrics", best)
    values = [metrics.get(k) for k in keys]
    if all(v is not None for v in values):
      out[column] = "/".join(f"{to_percent * v:.1f}" for v in values)
  return out


def collect(sweep: sweeps.Sweep, root: str) -> list[dict[str, Any]]:
  from albert_jax.model import param_count  # pylint: disable=g-import-not-at-top
  rows = []
  for run in sweep.runs:
    workdir = os.path.join(root, sweep.name, run.name)
    metrics = read_metrics(workdir)
    config_path = os.path.join(workdir, "run.json")
    if os.path.exists(config_path):
      with open(config_path) as f:
        model = json.load(f)["config"]["model"]
    else:
      model = sweeps.run_config(run).model.to_dict()
    mlm = last(metrics, "eval/mlm_accuracy")
    sop = last(metrics, "eval/sop_accuracy")
    source = "eval"
    if mlm is None:
      mlm, sop, source = (last(metrics, "train/mlm_accuracy"), last(metrics, "train/sop_accuracy"),
                          "train")
    row = {"run": run.name, "params": param_count.count_params(model),
           "paper_params": run.paper.get("params"), "steps": last(metrics, "step"),
           "mlm_accuracy": mlm, "sop_accuracy": sop, "accuracy_split": source,
           "curve": [(r["step"], r.get("eval/mlm_accuracy", r.get("train/mlm_accuracy")))
                     for r in metrics if "eval/mlm_accuracy" in r or "train/mlm_accuracy" in r]}
    scores = finetune_scores(workdir)
    for column in sweeps.PAPER_COLUMNS[1:]:
      row[column] = scores.get(column, "")
      row["paper_" + column] = run.paper.get(column, "")
    rows.append(row)
  return rows


def _fmt(value, pct=False) -> str:
  if value is None or value == "":
    return "–"
  if pct:
    return f"{100 * value:.1f}"
  return str(value)


def write_tables(sweep: sweeps.Sweep, rows: list[dict], out: str) -> tuple[str, str]:
  os.makedirs(out, exist_ok=True)
  md_path, csv_path = (os.path.join(out, f"{sweep.name}.{ext}") for ext in ("md", "csv"))
  cols = [c for c in sweeps.PAPER_COLUMNS[1:]]
  header = (["run", "params (ours)", "params (paper)", "steps", "MLM acc", "SOP acc"]
            + [f"{c} (ours / paper)" for c in cols])
  lines = [f"## {sweep.title}", "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for r in rows:
    paper_params = f"{r['paper_params'] / 1e6:.0f}M" if r["paper_params"] else "–"
    cells = [r["run"], f"{r['params'] / 1e6:.1f}M", paper_params, _fmt(r["steps"]),
             _fmt(r["mlm_accuracy"], True), _fmt(r["sop_accuracy"], True)]
    cells += [f"{_fmt(r[c])} / {_fmt(r['paper_' + c])}" for c in cols]
    lines.append("| " + " | ".join(cells) + " |")
  splits = {r["accuracy_split"] for r in rows if r["mlm_accuracy"] is not None}
  lines += ["", f"MLM/SOP accuracy: last {'/'.join(sorted(splits)) or 'eval'} figure of each run "
            "(metrics.jsonl); fine-tuning columns: best dev score (F1/EM for SQuAD)."]
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(csv_path, "w", newline="") as f:
    keys = [k for k in rows[0] if k != "curve"]
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: r[k] for k in keys})
  return md_path, csv_path


def write_plots(sweep: sweeps.Sweep, rows: list[dict], out: str) -> tuple[str, str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curves_path = os.path.join(out, f"{sweep.name}_curves.png")
  params_path = os.path.join(out, f"{sweep.name}_params.png")
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    if r["curve"]:
      steps, acc = zip(*r["curve"])
      ax.plot(steps, [100 * a for a in acc], marker=".", label=r["run"])
  ax.set(xlabel="step", ylabel="MLM accuracy (%)", title=sweep.title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(curves_path, dpi=120)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    if r["mlm_accuracy"] is not None:
      ax.scatter(r["params"] / 1e6, 100 * r["mlm_accuracy"])
      ax.annotate(r["run"], (r["params"] / 1e6, 100 * r["mlm_accuracy"]), fontsize=7)
  ax.set(xscale="log", xlabel="parameters (M)", ylabel="MLM accuracy (%)", title=sweep.title)
  fig.tight_layout()
  fig.savefig(params_path, dpi=120)
  plt.close(fig)
  return curves_path, params_path


def main(argv):
  del argv
  if not os.path.isdir(_ROOT.value):  # never created here: a mistyped root would collect nothing
    raise command_line.InputError(f"--root={_ROOT.value}: no such directory (the --root the "
                                  "sweep was launched with)")
  sweep = sweeps.with_seeds(sweeps.get_sweep(_SWEEP.value), launch.seeds_flag(_SEEDS.value))
  out = _OUT.value or os.path.join(_ROOT.value, sweep.name)
  rows = collect(sweep, _ROOT.value)
  for path in write_tables(sweep, rows, out) + write_plots(sweep, rows, out):
    print(f"wrote {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep", "root"])
  app.run(command_line.boundary(main))
