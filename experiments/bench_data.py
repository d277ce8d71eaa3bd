"""Benchmark of pretraining-data creation: throughput, scaling with workers, peak memory, baseline.

    python -m experiments.bench_data [--corpus='data/corpus/*.txt'] [--dupe_factor=2] [--out=DIR]

Measures, each run in a fresh subprocess so that peak RSS is its own:
  * ours (`albert_jax.data.create_pretraining_data`) at max_seq_length 128 and 512 with 1 and 2
    workers: instances/s, input MB/s (corpus bytes x dupe_factor / wall time), peak RSS of the
    parent and of the largest worker;
  * memory flatness: ours at 512 on the corpus concatenated 1x, 2x, 4x (more units, same block size);
  * the official script's single-core hot path, transcribed in `official_data_baseline.py`:
    read every file into memory through gfile, FullTokenizer-style SentencePiece tokenization to piece strings,
    `create_instances_from_document`, `create_masked_lm_predictions` (absl flags read per token,
    the start-piece test rebuilding its character sets per call, candidate lists for every unit,
    global-NumPy n-gram draw), a global shuffle, and `convert_tokens_to_ids` (with its INFO log
    line) + `tf.train.Example` + `TFRecordWriter` output. Same corpus, model and settings as ours.
Wall time includes process start-up on both sides (TensorFlow's import for the official script). On
a shared machine, compare the inst/CPU-s column too, and use --repeats for our short runs.
Prints a table and writes bench_data.json into --out.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("corpus", os.path.join(REPO, "data/corpus/*.txt"), "text files (a glob)")
flags.DEFINE_string("spm_model", None, "SentencePiece model (default: train an 8k model on the "
                    "corpus)")
flags.DEFINE_integer("dupe_factor", 2, "passes over the corpus")
flags.DEFINE_float("block_size_mb", 1.0, "work unit size of ours")
flags.DEFINE_string("seq_lens", "128,512", "max_seq_length values, comma-separated")
flags.DEFINE_string("workers", "1,2", "worker counts of ours, comma-separated")
flags.DEFINE_string("scales", "1,2,4", "corpus copies for the memory-flatness runs")
flags.DEFINE_bool("skip_baseline", False, "do not run the official script's transcription")
flags.DEFINE_integer("repeats", 1, "runs of each 'ours' configuration; the one with the median "
                     "wall time is reported (our runs take seconds, so other jobs on a shared "
                     "machine disturb them more than the minutes-long baseline)")
flags.DEFINE_string("out", None, "directory for bench_data.json (default: a temporary one)")
flags.DEFINE_string("child", None, "internal: one measured run (JSON spec)")


# --------------------------------------------------------------------------------------------------
# Child process: run one job, report wall time and peak RSS.

def _child(child: str) -> None:
  spec = json.loads(child)
  start = time.perf_counter()
  if spec.get("kind") == "baseline":
    from experiments import official_data_baseline
    instances = official_data_baseline.run(spec["files"], spec["spm_model"],
                                           spec["output"] + ".tfrecord", spec["seq"], spec["dupe"])
  else:
    from albert_jax.data import create_pretraining_data as cpd
    rc = cpd.main([f"--input={','.join(spec['files'])}", f"--spm_model={spec['spm_model']}",
                   f"--output={spec['output']}", f"--max_seq_length={spec['seq']}",
                   f"--dupe_factor={spec['dupe']}", f"--num_workers={spec['workers']}",
                   f"--block_size_mb={spec['block_mb']}", "--progress=false"])
    assert rc == 0
    with open(os.path.join(spec["output"], "summary.json")) as f:
      instances = json.load(f)["instances"]
  wall = time.perf_counter() - start
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  print(json.dumps({"wall_s": wall, "instances": instances,
                    # CPU time of this process and its workers: less sensitive than wall time to
                    # other jobs on a shared machine.
                    "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                    "rss_parent_mb": _peak_rss_mb(own),
                    "rss_max_worker_mb": children.ru_maxrss / 1024}))


def _peak_rss_mb(usage) -> float:
  """This process's peak RSS. Linux keeps ru_maxrss across exec, so it would also count the RSS the
  benchmark driver had when it started this process (SentencePiece training: ~120 MB); /proc's
  VmHWM belongs to this program alone."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return usage.ru_maxrss / 1024


def _measure(spec: dict) -> dict:
  out = subprocess.run([sys.executable, "-m", "experiments.bench_data", "--child",
                        json.dumps(spec)], capture_output=True, text=True, check=False, cwd=REPO)
  if out.returncode:
    raise RuntimeError(f"benchmark child failed: {out.stderr[-3000:]}")
  result = json.loads(out.stdout.strip().splitlines()[-1])
  input_mb = sum(os.path.getsize(f) for f in spec["files"]) / 2**20
  result.update(input_mb=input_mb, inst_per_s=result["instances"] / result["wall_s"],
                mb_per_s=input_mb * spec["dupe"] / result["wall_s"])
  return result


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = FLAGS
  if args.child:
    return _child(args.child)
  work = tempfile.mkdtemp(prefix="bench_data_")
  files = sorted(glob.glob(args.corpus))
  if not files:
    raise app.UsageError(f"--corpus={args.corpus}: no file matches.")
  spm_model = args.spm_model
  if spm_model is None:
    from albert_jax.data import tokenization
    spm_model = tokenization.train_model(files, os.path.join(work, "spm"), vocab_size=8000)
  common = dict(spm_model=spm_model, dupe=args.dupe_factor, block_mb=args.block_size_mb)
  results = []

  def run(name, purpose="throughput", repeats=1, **spec):
    runs = []
    for _ in range(repeats):
      runs.append(_measure({**common, **spec, "output": os.path.join(work, f"out_{len(results)}_"
                                                                     f"{len(runs)}")}))
    r = sorted(runs, key=lambda x: x["wall_s"])[(len(runs) - 1) // 2]
    r.update(name=name, purpose=purpose, seq=spec["seq"], workers=spec.get("workers", 1),
             scale=spec.get("scale", 1), all_wall_s=[x["wall_s"] for x in runs])
    results.append(r)
    print(f"{name:9s} seq={r['seq']:4d} workers={r['workers']} scale={r['scale']}x "
          f"input={r['input_mb']:.1f}MB: {r['instances']:7d} inst in {r['wall_s']:6.1f}s = "
          f"{r['inst_per_s']:7.0f} inst/s, {r['mb_per_s']:5.2f} MB/s, "
          f"{r['instances'] / r['cpu_s']:7.0f} inst/CPU-s; peak RSS parent "
          f"{r['rss_parent_mb']:.0f} MB, largest worker {r['rss_max_worker_mb']:.0f} MB"
          + (f" (median of {repeats}: {', '.join(f'{w:.1f}' for w in r['all_wall_s'])} s)"
             if repeats > 1 else ""), flush=True)

  for seq in map(int, args.seq_lens.split(",")):
    for workers in map(int, args.workers.split(",")):
      run("ours", files=files, seq=seq, workers=workers, repeats=args.repeats)
    if not args.skip_baseline:
      run("official", kind="baseline", files=files, seq=seq)
  for scale in map(int, args.scales.split(",")):
    scaled = []
    for k in range(scale):  # the corpus concatenated `scale` times (as separate copies)
      for f in files:
        dst = os.path.join(work, f"x{scale}", f"{k}_{os.path.basename(f)}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
          os.symlink(os.path.abspath(f), dst)  # a relative target would resolve from dst
        scaled.append(dst)
    run("ours", purpose="memory", files=scaled, seq=512, workers=1, scale=scale, kind="ours")
  out_dir = args.out or work
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "bench_data.json"), "w") as f:
    json.dump(results, f, indent=2)
  for seq in map(int, args.seq_lens.split(",")):
    base = [r for r in results if r["name"] == "official" and r["seq"] == seq]
    for r in results:
      if base and r["name"] == "ours" and r["seq"] == seq and r["purpose"] == "throughput":
        print(f"seq {seq}: ours with {r['workers']} worker(s) = "
              f"{r['inst_per_s'] / base[0]['inst_per_s']:.1f}x the official single-core throughput "
              f"({r['instances'] / r['cpu_s'] / (base[0]['instances'] / base[0]['cpu_s']):.1f}x "
              "per CPU-second)")
  print(f"results in {os.path.join(out_dir, 'bench_data.json')}")


if __name__ == "__main__":
  app.run(main)
