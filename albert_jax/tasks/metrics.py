"""A markdown table of the metrics JSONs of fine-tuning runs (metrics.json of `finetune.run`).

    python -m albert_jax.tasks.metrics 'runs/*/metrics.json' [--output=table.md]

The metrics themselves live beside their task family: glue_metrics.py (GLUE), squad_metrics.py
(the official SQuAD scripts), race.py (RACE accuracy per level), seqeval.py (tagging).
"""

from __future__ import annotations

import glob
import json
import sys
from typing import Any, Iterable, Mapping, Optional, Sequence

from absl import flags

from albert_jax import command_line


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.2f}" if abs(value) > 1.5 else f"{value:.4f}"
  return str(value)


def markdown_table(runs: Iterable[Mapping[str, Any]]) -> str:
  """One row per run (metrics.json of `finetune.run`): task, model, best step, its metrics and the
  labelled test splits' metrics (RACE) predicted with the best parameters."""
  def listing(metrics: Mapping[str, Any], skip: str = "") -> str:
    return ", ".join(f"{k} {_format(v)}" for k, v in sorted(metrics.items())
                     if k != skip and not k.endswith("total") and not isinstance(v, str))

  rows = []
  for run in runs:
    best = run.get("best", {})
    tests = {k: v for split in run.get("predict", {}).values() for k, v in split.items()}
    rows.append("| " + " | ".join([
        str(run.get("task", "?")), str(run.get("model", "?")), str(run.get("workdir", "")),
        str(best.get("step", "")), f"{run.get('metric', '?')} {_format(best.get('value', ''))}",
        listing(best.get("metrics", {}), run.get("metric", "")), listing(tests)]) + " |")
  header = ("| task | model | run | best step | selection metric | other dev metrics "
            "| test metrics (best step) |\n|---|---|---|---|---|---|---|")
  return "\n".join([header] + rows) + "\n"


PROG = "python -m albert_jax.tasks.metrics"


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (defined only when it is parsed: `command_line.parse`)."""
  flags.DEFINE_string("output", None, "write the table here instead of stdout",
                      flag_values=flag_values)


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> int:
  """`PROG PATTERN... [--output=FILE]`: the markdown table of the metrics JSONs (files or globs);
  `argv`: the arguments after the program name (None: this process's)."""
  args, patterns = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  if not patterns:
    command_line.usage_error("give one or more metrics.json files or globs")
  files = sorted({f for p in patterns for f in (glob.glob(p) or [p])})
  runs = []
  for path in files:
    try:
      with open(path) as f:
        runs.append(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
      command_line.usage_error(f"cannot read metrics file {path!r}: {e}")
  table = markdown_table(runs)
  if args.output:
    with open(args.output, "w") as f:
      f.write(table)
  else:
    sys.stdout.write(table)
  return 0


if __name__ == "__main__":
  command_line.run(main)
