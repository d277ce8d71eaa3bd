"""Benchmark of pretraining-data creation: throughput, scaling with workers, peak memory, baseline.

    python experiments/bench_data.py [--corpus='data/corpus/*.txt'] [--dupe_factor=2] [--out=DIR]

Measures, each run in a fresh subprocess so that peak RSS is its own:
  * ours (`albert_jax.data.create_pretraining_data`) at max_seq_length 128 and 512 with 1 and 2
    workers: instances/s, input MB/s (corpus bytes x dupe_factor / wall time), peak RSS of the
    parent and of the largest worker;
  * memory flatness: ours at 512 on the corpus concatenated 1x, 2x, 4x (more units, same block size);
  * the official script's single-core hot path, TRANSCRIBED here (`_official_baseline`; the original
    cannot be downloaded in this environment): read every file into memory, FullTokenizer-style
    SentencePiece tokenization to piece strings, `create_instances_from_document`,
    `create_masked_lm_predictions` (candidate lists for every unit, global-NumPy n-gram draw),
    a global shuffle, and `tf.train.Example` + `tf.io.TFRecordWriter` output. Same corpus, model and
    settings as ours.
Prints a table and writes bench_data.json into --out.
"""

from __future__ import annotations

import argparse
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

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


# --------------------------------------------------------------------------------------------------
# Transcription of the official create_pretraining_data.py hot path (single process, all in RAM).

def _official_baseline(files, spm_model, out_file, max_seq_length, dupe_factor, seed=12345,
                       max_predictions_per_seq=20, masked_lm_prob=0.15, short_seq_prob=0.1,
                       ngram=3):
  import sentencepiece as spm
  import tensorflow as tf
  from albert_jax.data.tokenization import is_start_piece, preprocess_text
  sp = spm.SentencePieceProcessor(model_file=spm_model)
  vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
  vocab_words = list(vocab)
  rng = random.Random(seed)

  def tokenize(text):  # official encode_pieces: EncodeAsPieces + the digit/comma re-split
    out = []
    for piece in sp.encode_as_pieces(text):
      if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
        cur = sp.encode_as_pieces(piece[:-1].replace("\u2581", ""))
        if piece[0] != "\u2581" and cur[0][0] == "\u2581":
          cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:]] + cur[1:]
        out.extend(cur + [piece[-1]])
      else:
        out.append(piece)
    return out

  all_documents = [[]]
  for path in files:
    with open(path, encoding="utf-8") as f:
      for line in f:
        line = preprocess_text(line, lower=True)
        if not line:
          all_documents.append([])
        tokens = tokenize(line)
        if tokens:
          all_documents[-1].append(tokens)
  all_documents = [d for d in all_documents if d]
  rng.shuffle(all_documents)

  def truncate(a, b, max_num):
    while len(a) + len(b) > max_num:
      t = a if len(a) > len(b) else b
      if rng.random() < 0.5:
        del t[0]
      else:
        t.pop()

  ngrams = np.arange(1, ngram + 1, dtype=np.int64)
  pvals = 1.0 / np.arange(1, ngram + 1)
  pvals /= pvals.sum(keepdims=True)

  def mask(tokens):
    cand = []
    boundary = [0] * len(tokens)
    for i, tok in enumerate(tokens):
      if tok in ("[CLS]", "[SEP]"):
        boundary[i] = 1
        continue
      if cand and not is_start_piece(tok):
        cand[-1].append(i)
      else:
        cand.append([i])
        if is_start_piece(tok):
          boundary[i] = 1
    output = list(tokens)
    num = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    ngram_indexes = [[cand[idx:idx + n] for n in ngrams] for idx in range(len(cand))]
    rng.shuffle(ngram_indexes)
    masked, covered = [], set()
    for cset in ngram_indexes:
      if len(masked) >= num:
        break
      n = np.random.choice(ngrams[:len(cset)], p=pvals[:len(cset)] / pvals[:len(cset)].sum())
      index_set = sum(cset[n - 1], [])
      n -= 1
      while len(masked) + len(index_set) > num:
        if n == 0:
          break
        index_set = sum(cset[n - 1], [])
        n -= 1
      if len(masked) + len(index_set) > num or any(i in covered for i in index_set):
        continue
      for i in index_set:
        covered.add(i)
        if rng.random() < 0.8:
          output[i] = "[MASK]"
        elif rng.random() >= 0.5:
          output[i] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
        masked.append((i, tokens[i]))
    rng.shuffle(ngram_indexes)
    masked.sort()
    return output, [m[0] for m in masked], [m[1] for m in masked], boundary

  def instances_from(doc_index):
    document = all_documents[doc_index]
    max_num = max_seq_length - 3
    target = max_num if rng.random() >= short_seq_prob else rng.randint(2, max_num)
    out, chunk, length, i = [], [], 0, 0
    while i < len(document):
      chunk.append(document[i])
      length += len(document[i])
      if i == len(document) - 1 or length >= target:
        a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
        a = [t for s in chunk[:a_end] for t in s]
        b = []
        if len(chunk) == 1:
          label = 1
          for _ in range(10):  # up to 10 tries to avoid the current document
            r = rng.randint(0, len(all_documents) - 1)
            if r != doc_index:
              break
          other = all_documents[r]
          for j in range(rng.randint(0, len(other) - 1), len(other)):
            b.extend(other[j])
            if len(b) >= target - len(a):
              break
          i -= len(chunk) - a_end
        elif rng.random() < 0.5:
          label = 1
          b = [t for s in chunk[a_end:] for t in s]
          a, b = b, a
        else:
          label = 0
          b = [t for s in chunk[a_end:] for t in s]
        truncate(a, b, max_num)
        tokens = ["[CLS]"] + a + ["[SEP]"] + b + ["[SEP]"]
        segment_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        out.append((*mask(tokens), segment_ids, label))
        chunk, length = [], 0
      i += 1
    return out

  instances = []
  for _ in range(dupe_factor):
    for d in range(len(all_documents)):
      instances.extend(instances_from(d))
  rng.shuffle(instances)

  def int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

  with tf.io.TFRecordWriter(out_file) as writer:
    for tokens, positions, labels, boundary, segment_ids, label in instances:
      ids = [sp.piece_to_id(t) for t in tokens]  # official convert_tokens_to_ids: PieceToId
      pad = max_seq_length - len(ids)
      mpad = max_predictions_per_seq - len(positions)
      features = collections.OrderedDict(
          input_ids=int_feature(ids + [0] * pad), input_mask=int_feature([1] * len(ids) + [0] * pad),
          segment_ids=int_feature(segment_ids + [0] * pad),
          token_boundary=int_feature(boundary + [0] * pad),
          masked_lm_positions=int_feature(positions + [0] * mpad),
          masked_lm_ids=int_feature([sp.piece_to_id(t) for t in labels] + [0] * mpad),
          masked_lm_weights=tf.train.Feature(float_list=tf.train.FloatList(
              value=[1.0] * len(positions) + [0.0] * mpad)),
          next_sentence_labels=int_feature([label]))
      writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
  return len(instances)


# --------------------------------------------------------------------------------------------------
# Child process: run one job, report wall time and peak RSS.

def _child(args) -> None:
  spec = json.loads(args.child)
  start = time.perf_counter()
  if spec.get("kind") == "baseline":
    instances = _official_baseline(spec["files"], spec["spm_model"], spec["output"] + ".tfrecord",
                                   spec["seq"], spec["dupe"])
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
  print(json.dumps({"wall_s": wall, "instances": instances,
                    "rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "rss_max_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def _measure(spec: dict) -> dict:
  out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                       text=True, check=False, cwd=REPO)
  if out.returncode:
    raise RuntimeError(f"benchmark child failed: {out.stderr[-3000:]}")
  result = json.loads(out.stdout.strip().splitlines()[-1])
  input_mb = sum(os.path.getsize(f) for f in spec["files"]) / 2**20
  result.update(input_mb=input_mb, inst_per_s=result["instances"] / result["wall_s"],
                mb_per_s=input_mb * spec["dupe"] / result["wall_s"])
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--corpus", default=os.path.join(REPO, "data/corpus/*.txt"))
  parser.add_argument("--spm_model", default=None, help="default: train an 8k model on the corpus")
  parser.add_argument("--dupe_factor", type=int, default=2)
  parser.add_argument("--block_size_mb", type=float, default=1.0)
  parser.add_argument("--seq_lens", default="128,512")
  parser.add_argument("--workers", default="1,2")
  parser.add_argument("--scales", default="1,2,4")
  parser.add_argument("--skip_baseline", action="store_true")
  parser.add_argument("--out", default=None)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return _child(args)
  work = tempfile.mkdtemp(prefix="bench_data_")
  files = sorted(glob.glob(args.corpus))
  if not files:
    parser.error(f"--corpus={args.corpus}: no file matches.")
  spm_model = args.spm_model
  if spm_model is None:
    from albert_jax.data import tokenization
    spm_model = tokenization.train_model(files, os.path.join(work, "spm"), vocab_size=8000)
  common = dict(spm_model=spm_model, dupe=args.dupe_factor, block_mb=args.block_size_mb)
  results = []

  def run(name, **spec):
    spec = {**common, **spec, "output": os.path.join(work, f"out_{len(results)}")}
    r = _measure(spec)
    r.update(name=name, seq=spec["seq"], workers=spec.get("workers", 1),
             scale=spec.get("scale", 1))
    results.append(r)
    print(f"{name:9s} seq={r['seq']:4d} workers={r['workers']} scale={r['scale']}x "
          f"input={r['input_mb']:.1f}MB: {r['instances']:7d} inst in {r['wall_s']:6.1f}s = "
          f"{r['inst_per_s']:7.0f} inst/s, {r['mb_per_s']:5.2f} MB/s; peak RSS parent "
          f"{r['rss_parent_mb']:.0f} MB, largest worker {r['rss_max_worker_mb']:.0f} MB", flush=True)

  for seq in map(int, args.seq_lens.split(",")):
    for workers in map(int, args.workers.split(",")):
      run("ours", files=files, seq=seq, workers=workers)
    if not args.skip_baseline:
      run("official", kind="baseline", files=files, seq=seq)
  for scale in map(int, args.scales.split(",")):
    scaled = []
    for k in range(scale):  # the corpus concatenated `scale` times (as separate copies)
      for f in files:
        dst = os.path.join(work, f"x{scale}", f"{k}_{os.path.basename(f)}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
          os.symlink(f, dst)
        scaled.append(dst)
    run("ours", files=scaled, seq=512, workers=1, scale=scale, kind="ours")
  out_dir = args.out or work
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "bench_data.json"), "w") as f:
    json.dump(results, f, indent=2)
  for seq in map(int, args.seq_lens.split(",")):
    base = [r for r in results if r["name"] == "official" and r["seq"] == seq]
    for r in results:
      if base and r["name"] == "ours" and r["seq"] == seq and r["scale"] == 1:
        print(f"seq {seq}: ours with {r['workers']} worker(s) = "
              f"{r['inst_per_s'] / base[0]['inst_per_s']:.1f}x the official single-core throughput")
  print(f"results in {os.path.join(out_dir, 'bench_data.json')}")


if __name__ == "__main__":
  main()
