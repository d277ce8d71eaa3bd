"""Benchmark of pretraining-data creation: throughput, scaling with workers, peak memory, baseline.

    python -m experiments.bench_data [--corpus='data/corpus/*.txt'] [--dupe_factor=2] [--out=DIR]

Measures, each run in a fresh subprocess so that peak RSS is its own:
  * ours (`albert_jax.data.create_pretraining_data`) at max_seq_length 128 and 512 with 1 and 2
    workers: instances/s, input MB/s (corpus bytes x dupe_factor / wall time), peak RSS of the
    parent and of the largest worker;
  * memory flatness: ours at 512 on the corpus concatenated 1x, 2x, 4x (more units, same block size);
  * the official script's single-core hot path, TRANSCRIBED here (`_official_baseline`; the original
    cannot be downloaded in this environment): read every file into memory through gfile,
    FullTokenizer-style SentencePiece tokenization to piece strings,
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
# Transcription of the official create_pretraining_data.py hot path (single process, all in RAM).
#
# It does the work the official script does, step for step, including what costs time without
# changing the result, so that the baseline is neither favoured nor handicapped: flags are read from
# an absl FlagValues at the same places (per token in the candidate loop), the start-piece test
# rebuilds its character sets on every call, text is NFKD-normalised and filtered character by
# character, pieces pass through `printable_text`, instances are assembled and padded by per-token
# appends, and every `convert_tokens_to_ids` call logs at INFO level (the official `main` sets the
# verbosity to INFO).

def _official_baseline(files, spm_model, out_file, max_seq_length, dupe_factor, seed=12345,
                       max_predictions_per_seq=20, masked_lm_prob=0.15, short_seq_prob=0.1,
                       ngram=3):
  import unicodedata

  import sentencepiece as spm
  import tensorflow as tf
  from absl import flags as absl_flags
  tf1 = tf.compat.v1
  tf1.logging.set_verbosity(tf1.logging.INFO)
  FLAGS = absl_flags.FlagValues()  # the official script reads tf.flags.FLAGS (absl) throughout
  absl_flags.DEFINE_string("spm_model_file", None, "", flag_values=FLAGS)
  absl_flags.DEFINE_bool("do_lower_case", True, "", flag_values=FLAGS)
  absl_flags.DEFINE_bool("do_whole_word_mask", True, "", flag_values=FLAGS)
  absl_flags.DEFINE_bool("do_permutation", False, "", flag_values=FLAGS)
  absl_flags.DEFINE_bool("favor_shorter_ngram", True, "", flag_values=FLAGS)
  absl_flags.DEFINE_bool("random_next_sentence", False, "", flag_values=FLAGS)
  absl_flags.DEFINE_integer("ngram", ngram, "", flag_values=FLAGS)
  FLAGS(["create_pretraining_data", f"--spm_model_file={spm_model}"])

  def printable_text(text):  # official tokenization.printable_text under Python 3
    if isinstance(text, str):
      return text
    if isinstance(text, bytes):
      return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported string type: {type(text)}")

  def preprocess_text(text, lower):  # official tokenization.preprocess_text
    text = " ".join(text.strip().split())
    text = unicodedata.normalize("NFKD", text)
    text = "".join([c for c in text if not unicodedata.combining(c)])
    return text.lower() if lower else text

  sp = spm.SentencePieceProcessor()  # official FullTokenizer: model read through gfile
  sp.LoadFromSerializedProto(tf1.gfile.GFile(spm_model, "rb").read())
  vocab = {sp.IdToPiece(i): i for i in range(sp.GetPieceSize())}
  rng = random.Random(seed)

  def tokenize(text):  # official encode_pieces: EncodeAsPieces + the digit/comma re-split
    out = []
    for piece in sp.EncodeAsPieces(text):
      piece = printable_text(piece)
      if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
        cur = sp.EncodeAsPieces(piece[:-1].replace("\u2581", ""))
        if piece[0] != "\u2581" and cur[0][0] == "\u2581":
          cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:]] + cur[1:]
        out.extend(cur + [piece[-1]])
      else:
        out.append(piece)
    return out

  def convert_tokens_to_ids(tokens):  # official FullTokenizer.convert_tokens_to_ids
    tf1.logging.info("using sentence piece tokenzier.")
    return [sp.PieceToId(printable_text(t)) for t in tokens]

  all_documents = [[]]
  for path in files:
    with tf1.gfile.GFile(path, "r") as reader:
      while True:
        line = reader.readline()
        if not FLAGS.spm_model_file:
          line = printable_text(line)
        if not line:
          break
        if FLAGS.spm_model_file:
          line = preprocess_text(line, lower=FLAGS.do_lower_case)
        else:
          line = line.strip()
        if not line:
          all_documents.append([])
        tokens = tokenize(line)
        if tokens:
          all_documents[-1].append(tokens)
  all_documents = [d for d in all_documents if d]
  rng.shuffle(all_documents)
  vocab_words = list(vocab)

  def truncate(a, b, max_num):
    while len(a) + len(b) > max_num:
      t = a if len(a) > len(b) else b
      if rng.random() < 0.5:
        del t[0]
      else:
        t.pop()

  def is_start_piece(piece):  # official: flag dispatch, then _is_start_piece_sp
    if not FLAGS.spm_model_file:
      return not piece.startswith("##")
    special = set(list('!"#$%&"()*+,-./:;?@[\\]^_`{|}~'))
    special.add("\u20ac".encode("utf-8"))
    special.add("\u00a3".encode("utf-8"))
    english = set(list("abcdefghijklmnopqrstuvwxyz"))
    return (piece.startswith("\u2581") or piece.startswith("<") or piece in special
            or not all([c.lower() in english.union(special) for c in piece]))

  masked_lm = collections.namedtuple("MaskedLmInstance", ["index", "label"])

  def mask(tokens):
    cand = []
    boundary = [0] * len(tokens)
    for i, tok in enumerate(tokens):
      if tok == "[CLS]" or tok == "[SEP]":
        boundary[i] = 1
        continue
      if FLAGS.do_whole_word_mask and len(cand) >= 1 and not is_start_piece(tok):
        cand[-1].append(i)
      else:
        cand.append([i])
        if is_start_piece(tok):
          boundary[i] = 1
    output = list(tokens)
    num = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    ngrams = np.arange(1, FLAGS.ngram + 1, dtype=np.int64)
    pvals = 1.0 / np.arange(1, FLAGS.ngram + 1)
    pvals /= pvals.sum(keepdims=True)
    if not FLAGS.favor_shorter_ngram:
      pvals = pvals[::-1]
    ngram_indexes = [[cand[idx:idx + n] for n in ngrams] for idx in range(len(cand))]
    rng.shuffle(ngram_indexes)
    masked, covered = [], set()
    for cset in ngram_indexes:
      if len(masked) >= num:
        break
      if not cset:
        continue
      for index_set in cset[0]:  # official no-op "skip if covered" loop
        for i in index_set:
          if i in covered:
            continue
      n = np.random.choice(ngrams[:len(cset)],
                           p=pvals[:len(cset)] / pvals[:len(cset)].sum(keepdims=True))
      index_set = sum(cset[n - 1], [])
      n -= 1
      while len(masked) + len(index_set) > num:
        if n == 0:
          break
        index_set = sum(cset[n - 1], [])
        n -= 1
      if len(masked) + len(index_set) > num:
        continue
      if any(i in covered for i in index_set):
        continue
      for i in index_set:
        covered.add(i)
        if rng.random() < 0.8:
          output[i] = "[MASK]"
        elif rng.random() >= 0.5:
          output[i] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
        masked.append(masked_lm(index=i, label=tokens[i]))
    rng.shuffle(ngram_indexes)
    if FLAGS.do_permutation:
      raise ValueError("do_permutation (off by default) is not transcribed")
    masked = sorted(masked, key=lambda x: x.index)
    return output, [m.index for m in masked], [m.label for m in masked], boundary

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
        a = []
        for j in range(a_end):
          a.extend(chunk[j])
        b = []
        if len(chunk) == 1 or (FLAGS.random_next_sentence and rng.random() < 0.5):
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
        elif not FLAGS.random_next_sentence and rng.random() < 0.5:
          label = 1
          for j in range(a_end, len(chunk)):
            b.extend(chunk[j])
          a, b = b, a
        else:
          label = 0
          for j in range(a_end, len(chunk)):
            b.extend(chunk[j])
        truncate(a, b, max_num)
        tokens, segment_ids = ["[CLS]"], [0]
        for t in a:
          tokens.append(t)
          segment_ids.append(0)
        tokens.append("[SEP]")
        segment_ids.append(0)
        for t in b:
          tokens.append(t)
          segment_ids.append(1)
        tokens.append("[SEP]")
        segment_ids.append(1)
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

  writers = [tf1.python_io.TFRecordWriter(out_file)]
  writer_index = 0
  for inst_index, (tokens, positions, labels, boundary, segment_ids, label) in enumerate(instances):
    input_ids = convert_tokens_to_ids(tokens)
    input_mask = [1] * len(input_ids)
    segment_ids, token_boundary = list(segment_ids), list(boundary)
    while len(input_ids) < max_seq_length:
      input_ids.append(0)
      input_mask.append(0)
      segment_ids.append(0)
      token_boundary.append(0)
    masked_lm_positions = list(positions)
    masked_lm_ids = convert_tokens_to_ids(labels)
    masked_lm_weights = [1.0] * len(masked_lm_ids)
    multiplier = 1 + int(FLAGS.do_permutation)
    while len(masked_lm_positions) < max_predictions_per_seq * multiplier:
      masked_lm_positions.append(0)
      masked_lm_ids.append(0)
      masked_lm_weights.append(0.0)
    features = collections.OrderedDict()
    features["input_ids"] = int_feature(input_ids)
    features["input_mask"] = int_feature(input_mask)
    features["segment_ids"] = int_feature(segment_ids)
    features["token_boundary"] = int_feature(token_boundary)
    features["masked_lm_positions"] = int_feature(masked_lm_positions)
    features["masked_lm_ids"] = int_feature(masked_lm_ids)
    features["masked_lm_weights"] = tf.train.Feature(
        float_list=tf.train.FloatList(value=list(masked_lm_weights)))
    features["next_sentence_labels"] = int_feature([label])
    example = tf.train.Example(features=tf.train.Features(feature=features))
    writers[writer_index].write(example.SerializeToString())
    if random.randint(1, 100) >= 97:  # official: random flushes
      writers[writer_index].flush()
    writer_index = (writer_index + 1) % len(writers)
    if inst_index < 20:
      tf1.logging.info("*** Example ***")
      tf1.logging.info("tokens: %s" % " ".join(printable_text(x) for x in tokens))
      for name, feature in features.items():
        values = feature.int64_list.value or feature.float_list.value
        tf1.logging.info("%s: %s" % (name, " ".join(str(x) for x in values)))
  for writer in writers:
    writer.close()
  return len(instances)


# --------------------------------------------------------------------------------------------------
# Child process: run one job, report wall time and peak RSS.

def _child(child: str) -> None:
  spec = json.loads(child)
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
          os.symlink(f, dst)
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
