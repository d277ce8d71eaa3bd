"""Benchmark of masked-LM generation and scoring (albert_jax/inference/generate.py, score.py).

    python -m experiments.bench_generate [--models=tiny,base] [--batch_sizes=1,32]
        [--iterations=4] [--sweeps=1] [--span=8] [--spm_model=M] [--out=DIR]

For each model (random weights: `tiny` is the tiny preset, `base` ALBERT-base's shape: 12 layers,
H=768, E=128, shared layers) and batch size, on the default JAX backend:
  * generation: mask-predict (sampling, --iterations passes) of a --span-piece slot in each of
    `batch` short texts (one batch), then the same for Gibbs (left to right, --sweeps sweeps, one
    forward pass per slot piece and sweep); generated pieces per second = slot pieces / wall time;
  * scoring: the pseudo-log-likelihood of `batch` sentences (all their masked copies, batches of
    `batch` copies); scored sentences per second.
Each is run once to compile (its wall time is reported as "first") and once timed; "compiles" is
the number of shapes compiled for the run (`MaskedLM.compilations()` after minus before). The
vocabulary is the SentencePiece model's (--spm_model, else one of 4000 pieces trained here on the
bundled corpus, a few seconds): with the MLM head evaluated at the slot positions only, the
vocabulary size changes little but the embedding table. Prints a table; writes
bench_generate.json into --out when given.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from albert_jax.data import tokenization
from albert_jax.inference import generate, score
from albert_jax.inference.mlm import MaskedLM
from albert_jax.model import config as model_config
from albert_jax.model import modeling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CORPUS = [os.path.join(REPO, "data", "corpus", f) for f in
          ("tutorial.txt", "faq.txt", "using_extending.txt", "reference.txt")]
WORDS = ("the function returns a new list of items when the loop ends and the iterator is "
         "exhausted strings are immutable sequences of unicode characters").split()


def texts(n: int, words: int, offset: int = 0) -> list[str]:
  """n different texts of `words` words from WORDS (rotations)."""
  return [" ".join(WORDS[(i + offset + k) % len(WORDS)] for k in range(words)) for i in range(n)]


def build(name: str, tok: tokenization.SentencePieceTokenizer) -> MaskedLM:
  preset = model_config.preset("albert_base" if name == "base" else "tiny")
  preset.vocab_size = tok.vocab_size
  cfg = model_config.ModelConfig.from_any(preset)
  params = modeling.AlbertForMaskedLM(cfg).init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, 8), jnp.int32))["params"]
  return MaskedLM(cfg, params, tok, f"random {name}")


def timed(lm: MaskedLM, run) -> dict:
  before = lm.compilations()
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  start = time.perf_counter()
  units = run()
  seconds = time.perf_counter() - start
  return {"first_s": first, "seconds": seconds, "per_second": units / seconds,
          "compiles": lm.compilations() - before}


def bench(lm: MaskedLM, batch: int, iterations: int, sweeps: int, span: int) -> list[dict]:
  prompts = [t.rsplit(" ", 2)[0] + f" [MASK*{span}] " + t.rsplit(" ", 2)[1]
             for t in texts(batch, 6)]
  rows = []
  for strategy, passes in (("mask_predict", iterations), ("gibbs", sweeps)):
    settings = generate.DecodeSettings(strategy=strategy, iterations=passes, seed=1,
                                       batch_size=batch)

    def run():
      out = generate.infill(lm, prompts, settings)
      return sum(len(s.pieces) for g in out for s in g.slots)

    rows.append({"what": f"generate {strategy}", "unit": "pieces/s", **timed(lm, run)})
  sentences = texts(batch, 8, offset=3)

  def run_score():
    return len(score.score(lm, sentences, batch_size=batch))

  rows.append({"what": "score", "unit": "sentences/s", **timed(lm, run_score)})
  return rows


_MODELS = flags.DEFINE_list("models", ["tiny", "base"], "tiny and/or base")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "32"], "batch sizes")
_ITERATIONS = flags.DEFINE_integer("iterations", 4, "mask-predict passes")
_SWEEPS = flags.DEFINE_integer("sweeps", 1, "Gibbs sweeps")
_SPAN = flags.DEFINE_integer("span", 8, "pieces per slot")
_SPM_MODEL = flags.DEFINE_string("spm_model", "", "SentencePiece model (default: train one)")
_OUT = flags.DEFINE_string("out", "", "write bench_generate.json here")


def main(argv) -> None:
  del argv
  args = flags.FLAGS
  spm_model = args.spm_model or tokenization.train_model(
      CORPUS, os.path.join(tempfile.mkdtemp(), "spm"), vocab_size=4000)
  tok = tokenization.SentencePieceTokenizer(spm_model)
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), vocab "
        f"{tok.vocab_size}, mask-predict iterations {args.iterations}, Gibbs sweeps "
        f"{args.sweeps}, span {args.span} pieces")
  print(f"{'model':6} {'batch':>5} {'run':22} {'rate':>16} {'first s':>8} {'timed s':>8} "
        f"{'compiles':>8}")
  results = []
  for name in args.models:
    lm = build(name, tok)
    for batch in map(int, args.batch_sizes):
      for row in bench(lm, batch, args.iterations, args.sweeps, args.span):
        row.update(model=name, batch=batch)
        results.append(row)
        print(f"{name:6} {batch:5d} {row['what']:22} {row['per_second']:9.1f} "
              f"{row['unit']:>6} {row['first_s']:8.2f} {row['seconds']:8.2f} "
              f"{row['compiles']:8d}", flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_generate.json"), "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
