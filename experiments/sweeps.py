"""The paper's ablations as sweeps: each sweep is a list of named runs of configs/pretrain.py.

A run is a preset (`size`, `version`) plus dotted config overrides, with the paper's row beside it
(Lan et al. 2019, arXiv:1909.11942; SQuAD as "F1/EM", dev sets). `run_config(run, runlocal=...)`
turns a run into the pretraining ConfigDict; at runlocal size the model is shrunk to the tiny
preset while keeping what the sweep varies (sharing, E relative to H, depth, width, the
inter-sentence loss, dropout), so a whole sweep can be rehearsed on a laptop.
"""

from __future__ import annotations

import dataclasses
import os
import string
from typing import Any, Mapping, Sequence

import ml_collections

from albert_jax import config_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_COLUMNS = ("params", "squad11", "squad20", "mnli", "sst2", "race", "avg")


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  size: str                                  # configs/pretrain.py `size`
  overrides: Mapping[str, Any]               # dotted config field -> value
  paper: Mapping[str, Any]                   # the paper's row (PAPER_COLUMNS and extras)
  version: int = 1                           # v1 = the paper's 125k-step setting
  init_from_run: str = ""                    # warm start from this earlier run of the sweep
  note: str = ""
  # data.train_files from the launcher's data flags in braces: --data, --extra_data, --nsp_data
  train_files: str = "{data}"


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  title: str
  runs: tuple[Run, ...]


def _row(params, squad11, squad20, mnli, sst2, race, avg, **extra):
  return dict(params=params, squad11=squad11, squad20=squad20, mnli=mnli, sst2=sst2, race=race,
              avg=avg, **extra)


def _base(**model):
  return {f"model.{k}": v for k, v in model.items()}


TABLE2 = Sweep("table2", "Table 2: BERT vs ALBERT model sizes (125k steps)", (
    Run("bert_base", "bert_base", {}, _row(108e6, "90.4/83.2", "80.4/77.6", 84.5, 92.8, 68.2, 82.3,
                                           speedup=4.7)),
    Run("bert_large", "bert_large", {}, _row(334e6, "92.2/85.5", "85.0/82.2", 86.6, 93.0, 73.9,
                                             85.2, speedup=1.0)),
    Run("albert_base", "base", {}, _row(12e6, "89.3/82.3", "80.0/77.1", 81.6, 90.3, 64.0, 80.1,
                                        speedup=5.6)),
    Run("albert_large", "large", {}, _row(18e6, "90.6/83.9", "82.3/79.4", 83.5, 91.7, 68.5, 82.4,
                                          speedup=1.7)),
    Run("albert_xlarge", "xlarge", {}, _row(60e6, "92.5/86.1", "86.1/83.1", 86.4, 92.4, 74.8, 85.5,
                                            speedup=0.6)),
    Run("albert_xxlarge", "xxlarge", {}, _row(235e6, "94.1/88.3", "88.1/85.1", 88.0, 95.2, 82.3,
                                              88.7, speedup=0.3),
        note="the paper's 235M is not reproducible from the released shapes (222.6M); the paper "
        "warm-starts xxlarge from a 6-layer network (footnote 5): set init_from.path"),
))

_T3 = {  # (sharing, E): paper row
    ("none", 64): _row(87e6, "89.9/82.9", "80.1/77.8", 82.9, 91.5, 66.7, 81.3),
    ("none", 128): _row(89e6, "89.9/82.8", "80.3/77.3", 83.7, 91.5, 67.9, 81.7),
    ("none", 256): _row(93e6, "90.2/83.2", "80.3/77.4", 84.1, 91.9, 67.3, 81.8),
    ("none", 768): _row(108e6, "90.4/83.2", "80.4/77.6", 84.5, 92.8, 68.2, 82.3),
    ("all", 64): _row(10e6, "88.7/81.4", "77.5/74.8", 80.8, 89.4, 63.5, 79.0),
    ("all", 128): _row(12e6, "89.3/82.3", "80.0/77.1", 81.6, 90.3, 64.0, 80.1),
    ("all", 256): _row(16e6, "88.8/81.5", "79.1/76.3", 81.5, 90.3, 63.4, 79.6),
    ("all", 768): _row(31e6, "88.6/81.5", "79.2/76.6", 82.0, 90.6, 63.3, 79.8),
}
TABLE3 = Sweep("table3", "Table 3: embedding size E, ALBERT-base not-shared vs all-shared", tuple(
    Run(f"{'all' if s == 'all' else 'not'}_shared_E{e}", "base",
        _base(layer_sharing=s, embedding_size=e), row)
    for (s, e), row in _T3.items()))

_T4 = {
    (768, "all"): _row(31e6, "88.6/81.5", "79.2/76.6", 82.0, 90.6, 63.3, 79.8),
    (768, "attention"): _row(83e6, "89.9/82.7", "80.0/77.2", 84.0, 91.4, 67.7, 81.6),
    (768, "ffn"): _row(57e6, "89.2/82.1", "78.2/75.4", 81.5, 90.8, 62.6, 79.5),
    (768, "none"): _row(108e6, "90.4/83.2", "80.4/77.6", 84.5, 92.8, 68.2, 82.3),
    (128, "all"): _row(12e6, "89.3/82.3", "80.0/77.1", 82.0, 90.3, 64.0, 80.1),
    (128, "attention"): _row(64e6, "89.9/82.8", "80.7/77.9", 83.4, 91.9, 67.6, 81.7),
    (128, "ffn"): _row(38e6, "88.9/81.6", "78.6/75.6", 82.3, 91.7, 64.4, 80.2),
    (128, "none"): _row(89e6, "89.9/82.8", "80.3/77.3", 83.2, 91.5, 67.9, 81.6),
}
TABLE4 = Sweep("table4", "Table 4: cross-layer sharing strategy, ALBERT-base", tuple(
    Run(f"E{e}_{s}", "base", _base(layer_sharing=s, embedding_size=e), row)
    for (e, s), row in _T4.items()))

TABLE5 = Sweep("table5", "Table 5: inter-sentence loss, ALBERT-base", (
    Run("none", "base", {"training.inter_sentence_loss": "none"},
        _row(12e6, "88.6/81.5", "78.1/75.3", 81.5, 89.9, 61.7, 79.0, mlm_acc=54.9, nsp_acc=52.4,
             sop_acc=53.3)),
    Run("nsp", "base", {"training.inter_sentence_loss": "nsp", "data.random_next_sentence": True},
        _row(12e6, "88.4/81.5", "77.2/74.6", 81.6, 91.1, 62.3, 79.2, mlm_acc=54.5, nsp_acc=90.5,
             sop_acc=52.0), train_files="{nsp_data}",
        note="NSP records: create_pretraining_data --random_next_sentence"),
    Run("sop", "base", {}, _row(12e6, "89.3/82.3", "80.0/77.1", 82.0, 90.3, 64.0, 80.1,
                                mlm_acc=54.0, nsp_acc=78.9, sop_acc=86.5)),
))

TABLE7 = Sweep("table7", "Table 7: additional training data, ALBERT-base", (
    Run("no_additional_data", "base", {}, _row(12e6, "89.3/82.3", "80.0/77.1", 81.6, 90.3, 64.0,
                                               80.1)),
    Run("additional_data", "base", {}, _row(12e6, "88.8/81.7", "79.1/76.3", 82.4, 92.8, 66.0, 80.8),
        train_files="{data},{extra_data}",
        note="Wikipedia + BookCorpus (--data) and the additional data (--extra_data)"),
))

TABLE8 = Sweep("table8", "Table 8: dropout, ALBERT-xxlarge (~1M steps)", (
    Run("with_dropout", "xxlarge", {"model.hidden_dropout_prob": 0.1,
                                    "model.attention_probs_dropout_prob": 0.1,
                                    "training.total_steps": 1_000_000},
        _row(235e6, "94.7/89.2", "89.6/86.9", 90.0, 96.3, 85.7, 90.4)),
    Run("without_dropout", "xxlarge", {"model.hidden_dropout_prob": 0.0,
                                       "model.attention_probs_dropout_prob": 0.0,
                                       "training.total_steps": 1_000_000},
        _row(235e6, "94.8/89.5", "89.9/87.2", 90.4, 96.5, 86.1, 90.7)),
))

_DEPTH = {1: _row(18e6, "31.1/22.9", "50.1/50.1", 66.4, 80.8, 40.1, 52.9),
          3: _row(18e6, "79.8/69.7", "64.4/61.7", 77.7, 86.7, 54.0, 71.2),
          6: _row(18e6, "86.4/78.4", "73.8/71.1", 81.2, 88.9, 60.9, 77.2),
          12: _row(18e6, "89.8/83.3", "80.7/77.9", 83.3, 91.7, 66.7, 81.5),
          24: _row(18e6, "90.3/83.3", "81.8/79.0", 83.3, 91.5, 68.7, 82.1),
          48: _row(18e6, "90.0/83.1", "81.8/78.9", 83.4, 91.9, 66.9, 81.8)}
_depths = sorted(_DEPTH)
DEPTH = Sweep("depth", "Depth (paper Table 11): ALBERT-large, each warm-started from the shallower",
              tuple(Run(f"L{L}", "large", _base(num_hidden_layers=L), _DEPTH[L],
                        init_from_run=f"L{_depths[i - 1]}" if i else "")
                    for i, L in enumerate(_depths)))

_WIDTH = {1024: _row(18e6, "79.8/69.7", "64.4/61.7", 77.7, 86.7, 54.0, 71.2),
          2048: _row(60e6, "83.3/74.1", "69.1/66.6", 79.7, 88.6, 58.2, 74.6),
          4096: _row(225e6, "85.0/76.4", "71.0/68.1", 80.3, 90.4, 60.4, 76.3),
          6144: _row(499e6, "84.7/75.8", "67.8/65.4", 78.1, 89.1, 56.0, 74.0)}
WIDTH = Sweep("width", "Width (paper Table 12): 3-layer ALBERT-large", tuple(
    Run(f"H{h}", "large", _base(num_hidden_layers=3, hidden_size=h, intermediate_size=4 * h,
                                num_attention_heads=h // 64), row,
        note="the paper prints 235M, 233M and 225M for this shape; the architecture gives 222.6M"
        if h == 4096 else "")
    for h, row in _WIDTH.items()))

SWEEPS = {s.name: s for s in (TABLE2, TABLE3, TABLE4, TABLE5, TABLE7, TABLE8, DEPTH, WIDTH)}


def get_sweep(name: str) -> Sweep:
  if name not in SWEEPS:
    raise ValueError(f"unknown sweep {name!r}; allowed: {sorted(SWEEPS)}")
  return SWEEPS[name]


SEED_SUFFIX = "_s"  # run <name>_s<seed>: the run `name` with config field `seed` set


def with_seeds(sweep: Sweep, seeds: Sequence[int]) -> Sweep:
  """`sweep` with every run repeated once per seed: run `<name>_s<seed>` sets config field `seed`
  (initialization, dropout and data order; the records are the same for every seed), and a warm
  start points at the earlier run of the same seed. Seed-major order (every run of the first seed,
  then the next seed's), so a sweep stopped half-way has each run at least once. No seeds: `sweep`
  itself."""
  if not seeds:
    return sweep
  return dataclasses.replace(sweep, runs=tuple(
      dataclasses.replace(run, name=f"{run.name}{SEED_SUFFIX}{seed}",
                          overrides={**run.overrides, "seed": seed},
                          init_from_run=run.init_from_run and
                          f"{run.init_from_run}{SEED_SUFFIX}{seed}")
      for seed in seeds for run in sweep.runs))


def arm_name(run_name: str) -> str:
  """The sweep's run name of a seeded run (`sop_s2` -> `sop`); other names unchanged."""
  head, sep, tail = run_name.rpartition(SEED_SUFFIX)
  return head if sep and tail.isdigit() else run_name


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise ValueError(f"sweep override {dotted!r} is not a config field")
  node[leaf] = value


def preset_arg(run: Run, runlocal: bool = False) -> str:
  """The run's configs/pretrain.py argument: `--config=configs/pretrain.py:<this>`."""
  return f"size={run.size},version={run.version}" + (",runlocal" if runlocal else "")


def preset_config(run: Run, runlocal: bool = False) -> ml_collections.ConfigDict:
  """configs/pretrain.py at the run's preset, as `--config=configs/pretrain.py:<arg>` gives it."""
  pretrain = config_utils.load_sibling(os.path.join(REPO, "configs", "x.py"), "pretrain")
  return pretrain.get_config(preset_arg(run, runlocal))


def data_flags(run: Run) -> list[str]:
  """The launcher's data flags that `run.train_files` names (e.g. ["data", "extra_data"])."""
  return [field for _, field, _, _ in string.Formatter().parse(run.train_files) if field]


def _local_model(run: Run) -> dict[str, Any]:
  """The run's model changes at tiny scale: width relative to 1024 and E relative to H kept."""
  full = preset_config(run).model
  for key, value in run.overrides.items():
    if key.startswith("model."):
      full[key[len("model."):]] = value
  hidden = max(32, 32 * full.hidden_size // 1024)
  embedding = hidden if full.embedding_size == full.hidden_size else max(
      4, round(32 * full.embedding_size / full.hidden_size))
  return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=4,
              embedding_size=embedding, num_hidden_layers=full.num_hidden_layers,
              layer_sharing=full.layer_sharing, hidden_dropout_prob=full.hidden_dropout_prob,
              attention_probs_dropout_prob=full.attention_probs_dropout_prob)


def run_config(run: Run, runlocal: bool = False) -> ml_collections.ConfigDict:
  """The pretraining ConfigDict of `run` (its data files are the launcher's: `data_flags`)."""
  config = preset_config(run, runlocal)
  for key, value in run.overrides.items():
    if runlocal and (key.startswith("model.") or key == "training.total_steps"):
      continue
    _set(config, key, value)
  if runlocal:
    for key, value in _local_model(run).items():
      config.model[key] = value
  return config
