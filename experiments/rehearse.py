"""A paper table rehearsed at laptop size in one command: runs x seeds, cross-evaluation, plot.

    python -m experiments.rehearse --sweep=table5 --root=/tmp/rehearsal [--seeds=1,2]
    python -m experiments.rehearse --sweep=table4 --root=/tmp/rehearsal   # all- vs not-shared

Table 5 of Lan et al. 2019 (arXiv:1909.11942) trains ALBERT-base with no inter-sentence loss, with
NSP and with SOP, and scores every model on three held-out tasks: masked LM, NSP and SOP (the
NSP and SOP heads are the same binary classifier, so each model is scored on both kinds of pairs).
The paper's finding: NSP does not solve SOP (52.0%), SOP solves NSP reasonably (78.9%). The
rehearsal trains each of the sweep's runs once per seed with `experiments.launch --runlocal` (on
records made once from the bundled corpus, the NSP run on NSP records made with the same
SentencePiece model) at the size of REHEARSALS below, then evaluates every finished run's last
checkpoint on the whole held-out SOP and NSP record sets of the corpus's FAQ (MLM accuracy on the
SOP set's masked tokens) and writes into --out (default ROOT/<sweep>):

    <sweep>_rehearsal.md    mean and spread over seeds per run, beside the paper's figures
    <sweep>_rehearsal.csv   one row per run and seed
    <sweep>_rehearsal.json  the same, with the majority-class share of each held-out set
    <sweep>_rehearsal.png   held-out accuracies per run (seeds as dots, the paper's as crosses)
                            and the training curves (held-out accuracy against steps)

Launched again, finished runs are skipped and an interrupted one resumes (experiments.launch);
`--set field=value` overrides the rehearsal's config in every run (e.g. a few steps for a check).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
from typing import Any, Optional, Sequence

from absl import flags
import ml_collections

from albert_jax import command_line
from experiments import collect
from experiments import launch
from experiments import sweeps

PROG = "python -m experiments.rehearse"
# Held-out accuracies, each beside the paper's `<metric>_acc` where it has one; sop_order: SOP
# pairs whose label is the order alone (`order_only_records`).
METRICS = ("mlm", "nsp", "sop", "sop_order")
LABELS = {"mlm": "MLM", "nsp": "NSP", "sop": "SOP", "sop_order": "SOP order-only"}


@dataclasses.dataclass(frozen=True)
class Rehearsal:
  runs: tuple[str, ...]          # the sweep's runs rehearsed (empty: all)
  sets: dict[str, Any]           # config overrides on top of the sweep's --runlocal configs
  note: str                      # what the rehearsal keeps of the paper's setting


# A model of the demo's shape (configs/demo.py) trained with a demo-like LAMB recipe: about
# 1M parameters, 64-token pairs. The sweep's runlocal configs keep what each run varies (the
# inter-sentence loss and its data; the sharing at equal E), these fields set everything else.
_LAPTOP = {
    "model.hidden_size": 128, "model.num_attention_heads": 4, "model.intermediate_size": 512,
    "model.embedding_size": 64, "model.num_hidden_layers": 4,
    "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0,
    "data.max_seq_length": 64, "data.max_predictions_per_seq": 10, "data.dupe_factor": 3,
    "data.shuffle_buffer_size": 2000, "data.dynamic_masking": True,
    "data.single_segment_negatives": "skip",
    "training.global_batch_size": 64, "training.total_steps": 600,
    "training.log_every_steps": 100, "training.eval_every_steps": 200,
    "training.eval_batch_size": 64, "training.eval_max_batches": 8,
    "training.checkpoint_every_steps": 300, "training.keep_checkpoints": 1,
    "optimizer.learning_rate": 5e-3, "optimizer.warmup_steps": 100,
}
REHEARSALS = {
    "table5": Rehearsal((), _LAPTOP, "ALBERT-base's all-shared layers and E < H at the demo's "
                        "size; no dropout; NSP data made with random next sentences"),
    "table4": Rehearsal(("E128_all", "E128_none"), _LAPTOP,
                        "all-shared vs not-shared at equal E (E = 64 < H = 128); no dropout"),
}


def define_flags(flag_values: flags.FlagValues) -> None:
  flags.DEFINE_enum("sweep", None, sorted(REHEARSALS), "the sweep to rehearse",
                    flag_values=flag_values)
  flags.DEFINE_string("root", None, "directory holding one workdir per run (and the data)",
                      flag_values=flag_values)
  flags.DEFINE_list("seeds", ["1", "2"], "seeds of every run (at least two show the noise)",
                    flag_values=flag_values)
  flags.DEFINE_multi_string("set", [], "field=value overrides for every run (JSON values), after "
                            "the rehearsal's own", flag_values=flag_values)
  flags.DEFINE_list("only", [], "rehearse only these runs of the sweep (default: the "
                    "rehearsal's own, REHEARSALS)", flag_values=flag_values)
  flags.DEFINE_string("out", None, "output directory (default ROOT/<sweep>)",
                      flag_values=flag_values)
  flags.mark_flags_as_required(["sweep", "root"], flag_values=flag_values)


def launch_argv(sweep: str, rehearsal: Rehearsal, runs: Sequence[str], root: str,
                seeds: Sequence[str], sets: Sequence[str]) -> list[str]:
  """The experiments.launch arguments that train `runs` (empty: all) x seeds."""
  argv = [f"--sweep={sweep}", f"--root={root}", "--runlocal", f"--seeds={','.join(seeds)}"]
  if runs:
    argv.append(f"--only={','.join(runs)}")
  argv += [f"--set={k}={json.dumps(v)}" for k, v in rehearsal.sets.items()]
  return argv + [f"--set={s}" for s in sets]


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The full config a run trained with (run.json, written by experiments.launch)."""
  with open(os.path.join(workdir, "run.json")) as f:
    return ml_collections.ConfigDict(json.load(f)["config"])


def heldout_files(root: str, config: ml_collections.ConfigDict) -> dict[str, str]:
  """{"sop" | "nsp" | "sop_order": held-out records of that kind} for `config`'s data settings
  (made if absent, with the SentencePiece model every run of the rehearsal shares)."""
  out = {}
  for kind in ("sop", "nsp"):
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.random_next_sentence = kind == "nsp"
    c.data.spm_model = ""
    made = launch.shared_local_data(root, c)
    out[kind] = made.data.eval_files
  out["sop_order"] = order_only_records(root, made)
  return out


def order_only_records(root: str, config: ml_collections.ConfigDict) -> str:
  """Held-out SOP records whose label is the order alone: made like the SOP set (the official
  generator also pairs a one-chunk document with a random document's text, labelled 1, official
  issue https://github.com/google-research/albert/issues/234), but with those pairs dropped
  (create_pretraining_data --single_segment_negatives=skip). Made anew each time (seconds)."""
  from albert_jax.data import create_pretraining_data  # pylint: disable=g-import-not-at-top
  d = config.data
  output = os.path.join(root, "_data", "sop_order", "eval")
  status = create_pretraining_data.main([
      f"--input={d.eval_corpus}", f"--spm_model={d.spm_model}", f"--output={output}",
      f"--random_seed={launch.DATA_SEED + 1}", "--overwrite", "--progress=false",
      f"--max_seq_length={d.max_seq_length}", f"--dupe_factor={d.dupe_factor}",
      f"--max_predictions_per_seq={d.max_predictions_per_seq}",
      "--single_segment_negatives=skip", "--random_next_sentence=false",
      f"--masking={'none' if d.dynamic_masking else 'static'}"])  # as the runs read their data
  if status:
    raise RuntimeError(f"creating the order-only SOP records in {output} failed")
  return os.path.join(output, "*.tfrecord")


def majority_share(eval_files: str) -> float:
  """The share of the majority label in the held-out records (create_pretraining_data's summary
  beside them): what always answering one class scores."""
  with open(os.path.join(os.path.dirname(eval_files), "summary.json")) as f:
    ones = json.load(f)["label_1_fraction"]
  return max(ones, 1 - ones)


def cross_evaluate(workdir: str, heldout: dict[str, str]) -> dict[str, Any]:
  """The run's newest readable checkpoint scored on every held-out set, each read whole:
  {"step", "mlm", "nsp", "sop", "mlm_on_nsp"} (accuracies as fractions); the binary sentence head
  gives the NSP and the SOP accuracy, whatever loss trained it."""
  import jax  # pylint: disable=g-import-not-at-top
  from albert_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from albert_jax.train import partitioning  # pylint: disable=g-import-not-at-top
  from albert_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  from albert_jax.train import step as trainer  # pylint: disable=g-import-not-at-top
  config = run_config(workdir)
  found = checkpoints.read_step_params(workdir)
  if found is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint to evaluate")
  step, params = found
  _, objective = pretrain.build_objective(config)
  mesh = partitioning.create_mesh(config.partitioning.mesh)
  params = jax.device_put(params, partitioning.replicated(mesh))
  eval_step = jax.jit(trainer.make_eval_step(objective))
  scores: dict[str, Any] = {"step": step}
  for kind, files in heldout.items():
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.eval_files = files
    c.training.eval_max_batches = 0  # the whole set
    m = pretrain.evaluate(c, eval_step, params, mesh, config.partitioning.rules)
    scores[kind] = m["sop_accuracy"]
    scores["mlm" if kind == "sop" else f"mlm_on_{kind}"] = m["mlm_accuracy"]
  return scores


def spread(values: list[float]) -> tuple[float, float]:
  """(mean, half the range) in percent."""
  pct = [100 * v for v in values]
  return statistics.mean(pct), (max(pct) - min(pct)) / 2


def results(sweep: sweeps.Sweep, root: str, heldout: dict[str, str]) -> list[dict[str, Any]]:
  """One row per run and seed: the cross-evaluation, parameters, curves (metrics.jsonl)."""
  collected = {r["run"]: r for r in collect.collect(sweep, root)}
  rows = []
  for run in sweep.runs:
    workdir = os.path.join(root, sweep.name, run.name)
    scores = cross_evaluate(workdir, heldout)
    with open(os.path.join(workdir, "cross_eval.json"), "w") as f:
      json.dump({"heldout": heldout, **scores}, f, indent=2)
    metrics = collect.read_metrics(workdir)
    rows.append({"arm": sweeps.arm_name(run.name), "run": run.name,
                 "seed": run.overrides["seed"], "params": collected[run.name]["params"],
                 **scores, "curves": {
                     key: [(r["step"], r[f"eval/{key}_accuracy"]) for r in metrics
                           if f"eval/{key}_accuracy" in r] for key in ("mlm", "sop")}})
  return rows


def arms(sweep: sweeps.Sweep, rows: list[dict]) -> list[dict[str, Any]]:
  """Per run of the sweep: the seeds' mean and spread of each metric, and the paper's figures."""
  out = []
  for name in dict.fromkeys(r["arm"] for r in rows):
    mine = [r for r in rows if r["arm"] == name]
    paper = next(r for r in sweeps.get_sweep(sweep.name).runs if r.name == name).paper
    arm = {"arm": name, "seeds": [r["seed"] for r in mine], "params": mine[0]["params"],
           "paper_params": paper.get("params"), "paper_avg": paper.get("avg")}
    for m in METRICS:
      arm[m], arm[f"{m}_spread"] = spread([r[m] for r in mine])
      arm[f"paper_{m}"] = paper.get(f"{m}_acc")
    out.append(arm)
  return out


def _cell(mean: float, half_range: float, paper: Optional[float]) -> str:
  return f"{mean:.1f} ± {half_range:.1f} | {'–' if paper is None else f'{paper:.1f}'}"


def write_table(sweep: sweeps.Sweep, table: list[dict], majority: dict[str, float],
                rehearsal: Rehearsal, steps: int, out: str) -> str:
  path = os.path.join(out, f"{sweep.name}_rehearsal.md")
  header = ["run", "seeds", "params (ours / paper)"]
  for m in METRICS:
    header += [f"{LABELS[m]} acc (ours)", "(paper)"]
  header.append("paper avg downstream")
  lines = [f"## {sweep.title}: laptop rehearsal", "",
           f"{steps} steps; {rehearsal.note}. Held-out accuracy in %, mean ± half the range over "
           "the seeds; the paper's beside it (Lan et al. 2019, arXiv:1909.11942).", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for a in table:
    paper_params = f"{a['paper_params'] / 1e6:.0f}M" if a["paper_params"] else "–"
    cells = [a["arm"], ",".join(map(str, a["seeds"])),
             f"{a['params'] / 1e6:.2f}M / {paper_params}"]
    cells += [_cell(a[m], a[f"{m}_spread"], a[f"paper_{m}"]) for m in METRICS]
    cells.append("–" if a["paper_avg"] is None else f"{a['paper_avg']}")
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Always answering the majority label scores "
            + ", ".join(f"{100 * v:.1f}% on the {LABELS[k]} set" for k, v in majority.items())
            + " (the sets' label balance); MLM accuracy is on the SOP set's masked tokens. The "
            "SOP set is made with the runs' data.single_segment_negatives; the order-only set "
            "never has random-document pairs."]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def write_rows(sweep: sweeps.Sweep, rows: list[dict], table: list[dict],
               majority: dict[str, float], out: str) -> tuple[str, str]:
  csv_path, json_path = (os.path.join(out, f"{sweep.name}_rehearsal.{e}") for e in ("csv", "json"))
  keys = [k for k in rows[0] if k != "curves"]
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows({k: r[k] for k in keys} for r in rows)
  with open(json_path, "w") as f:
    json.dump({"sweep": sweep.name, "majority_share": majority, "arms": table, "runs": rows}, f,
              indent=2)
  return csv_path, json_path


def write_plot(sweep: sweeps.Sweep, rows: list[dict], table: list[dict],
               majority: dict[str, float], out: str) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  path = os.path.join(out, f"{sweep.name}_rehearsal.png")
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  colors = {a["arm"]: f"C{i}" for i, a in enumerate(table)}
  width = 0.8 / len(table)
  ax = axes[0]
  for i, a in enumerate(table):
    xs = [j + (i - (len(table) - 1) / 2) * width for j in range(len(METRICS))]
    ax.bar(xs, [a[m] for m in METRICS], width, color=colors[a["arm"]], alpha=0.6, label=a["arm"])
    for x, m in zip(xs, METRICS):
      ax.scatter([x] * len(a["seeds"]), [100 * r[m] for r in rows if r["arm"] == a["arm"]],
                 color="k", s=8, zorder=3)
      if a[f"paper_{m}"] is not None:
        ax.scatter([x], [a[f"paper_{m}"]], marker="x", color="k", s=40, zorder=3)
  for j, m in enumerate(METRICS):
    if m in majority:
      ax.hlines(100 * majority[m], j - 0.45, j + 0.45, colors="grey", linestyles="dashed")
  ax.set(xticks=range(len(METRICS)), xticklabels=[LABELS[m] for m in METRICS],
         ylabel="accuracy (%)", title="ours (bars, seeds as dots); paper x; majority --")
  ax.legend(fontsize=7)
  for ax, key, name in ((axes[1], "sop", "sentence head (own kind of pairs)"),
                        (axes[2], "mlm", "masked LM")):
    for r in rows:
      if r["curves"][key]:
        steps, acc = zip(*r["curves"][key])
        ax.plot(steps, [100 * v for v in acc], color=colors[r["arm"]],
                linestyle=["-", "--", ":", "-."][r["seed"] % 4], label=r["run"])
    ax.set(xlabel="step", ylabel="held-out accuracy (%)", title=f"training: {name}")
    ax.legend(fontsize=6)
  fig.suptitle(f"{sweep.title}: laptop rehearsal", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> int:
  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  command_line.no_positional(positional, PROG)
  rehearsal = REHEARSALS[args.sweep]
  launch.seeds_flag(args.seeds)  # one line for a bad --seeds, before anything trains
  if len(args.seeds) < 2:
    command_line.usage_error(f"--seeds={','.join(args.seeds)}: give at least two seeds, so the "
                             "table shows the noise between them")
  only = args.only or list(rehearsal.runs)
  sweep = sweeps.with_seeds(sweeps.get_sweep(args.sweep), launch.seeds_flag(args.seeds))
  sweep = dataclasses.replace(sweep, runs=tuple(launch.select_runs(sweep, only)))
  status = launch.main(launch_argv(args.sweep, rehearsal, only, args.root, args.seeds, args.set))
  if status:
    return status
  unfinished = [r.name for r in sweep.runs
                if not os.path.exists(os.path.join(args.root, sweep.name, r.name, "DONE.json"))]
  if unfinished:  # stopped by a signal: launching again resumes
    print(f"not finished: {unfinished}; run the same command again to resume", flush=True)
    return 0
  first = run_config(os.path.join(args.root, sweep.name, sweep.runs[0].name))
  heldout = heldout_files(args.root, first)
  majority = {k: majority_share(v) for k, v in heldout.items()}
  rows = results(sweep, args.root, heldout)
  table = arms(sweep, rows)
  out = args.out or os.path.join(args.root, sweep.name)
  os.makedirs(out, exist_ok=True)
  paths = [write_table(sweep, table, majority, rehearsal, first.training.total_steps, out),
           *write_rows(sweep, rows, table, majority, out), write_plot(sweep, rows, table,
                                                                     majority, out)]
  for path in paths:
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  command_line.run(main)
