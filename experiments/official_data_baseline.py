"""The official create_pretraining_data.py hot path, transcribed: the baseline of bench_data.

The original (https://github.com/google-research/albert/blob/master/create_pretraining_data.py)
cannot be downloaded in this environment. This transcription runs in one process, all in RAM, and
does the work the official script does, step for step, including what costs time without changing
the result, so that the baseline is neither favoured nor handicapped: flags are read from an absl
FlagValues at the same places (per token in the candidate loop), the start-piece test rebuilds its
character sets on every call, text is NFKD-normalised and filtered character by character, pieces
pass through `printable_text`, instances are assembled and padded by per-token appends, and every
`convert_tokens_to_ids` call logs at INFO level (the official `main` sets the verbosity to INFO).
The n-gram length is drawn from the global NumPy generator, as the official code does.
"""

from __future__ import annotations

import collections
import random
import unicodedata

from absl import flags as absl_flags
import numpy as np
import sentencepiece as spm
import tensorflow as tf

tf1 = tf.compat.v1
MaskedLmInstance = collections.namedtuple("MaskedLmInstance", ["index", "label"])


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


def official_flags(spm_model: str, ngram: int) -> absl_flags.FlagValues:
  """The official script's flags that its hot path reads (tf.flags.FLAGS, absl, throughout)."""
  values = absl_flags.FlagValues()
  absl_flags.DEFINE_string("spm_model_file", None, "", flag_values=values)
  absl_flags.DEFINE_bool("do_lower_case", True, "", flag_values=values)
  absl_flags.DEFINE_bool("do_whole_word_mask", True, "", flag_values=values)
  absl_flags.DEFINE_bool("do_permutation", False, "", flag_values=values)
  absl_flags.DEFINE_bool("favor_shorter_ngram", True, "", flag_values=values)
  absl_flags.DEFINE_bool("random_next_sentence", False, "", flag_values=values)
  absl_flags.DEFINE_integer("ngram", ngram, "", flag_values=values)
  values(["create_pretraining_data", f"--spm_model_file={spm_model}"])
  return values


def int_feature(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


class OfficialGenerator:
  """One run of the transcribed generator; each method is the official function of that name."""

  def __init__(self, spm_model: str, max_seq_length: int, seed: int, max_predictions_per_seq: int,
               masked_lm_prob: float, short_seq_prob: float, ngram: int):
    self.FLAGS = official_flags(spm_model, ngram)
    self.sp = spm.SentencePieceProcessor()  # official FullTokenizer: model read through gfile
    self.sp.LoadFromSerializedProto(tf1.gfile.GFile(spm_model, "rb").read())
    self.vocab = {self.sp.IdToPiece(i): i for i in range(self.sp.GetPieceSize())}
    self.vocab_words = list(self.vocab)
    self.rng = random.Random(seed)
    self.max_seq_length = max_seq_length
    self.max_predictions_per_seq = max_predictions_per_seq
    self.masked_lm_prob = masked_lm_prob
    self.short_seq_prob = short_seq_prob
    self.all_documents = []

  def tokenize(self, text):  # official encode_pieces: EncodeAsPieces + the digit/comma re-split
    out = []
    for piece in self.sp.EncodeAsPieces(text):
      piece = printable_text(piece)
      if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
        cur = self.sp.EncodeAsPieces(piece[:-1].replace("\u2581", ""))
        if piece[0] != "\u2581" and cur[0][0] == "\u2581":
          cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:]] + cur[1:]
        out.extend(cur + [piece[-1]])
      else:
        out.append(piece)
    return out

  def convert_tokens_to_ids(self, tokens):  # official FullTokenizer.convert_tokens_to_ids
    tf1.logging.info("using sentence piece tokenzier.")
    return [self.sp.PieceToId(printable_text(t)) for t in tokens]

  def read_documents(self, files):  # official create_training_instances, reading part
    FLAGS = self.FLAGS
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
          tokens = self.tokenize(line)
          if tokens:
            all_documents[-1].append(tokens)
    self.all_documents = [d for d in all_documents if d]
    self.rng.shuffle(self.all_documents)

  def truncate_seq_pair(self, a, b, max_num):
    while len(a) + len(b) > max_num:
      t = a if len(a) > len(b) else b
      if self.rng.random() < 0.5:
        del t[0]
      else:
        t.pop()

  def is_start_piece(self, piece):  # official: flag dispatch, then _is_start_piece_sp
    if not self.FLAGS.spm_model_file:
      return not piece.startswith("##")
    special = set(list('!"#$%&"()*+,-./:;?@[\\]^_`{|}~'))
    special.add("\u20ac".encode("utf-8"))
    special.add("\u00a3".encode("utf-8"))
    english = set(list("abcdefghijklmnopqrstuvwxyz"))
    return (piece.startswith("\u2581") or piece.startswith("<") or piece in special
            or not all([c.lower() in english.union(special) for c in piece]))

  def candidate_spans(self, tokens):  # official create_masked_lm_predictions, first part
    cand = []
    boundary = [0] * len(tokens)
    for i, tok in enumerate(tokens):
      if tok == "[CLS]" or tok == "[SEP]":
        boundary[i] = 1
        continue
      if self.FLAGS.do_whole_word_mask and len(cand) >= 1 and not self.is_start_piece(tok):
        cand[-1].append(i)
      else:
        cand.append([i])
        if self.is_start_piece(tok):
          boundary[i] = 1
    return cand, boundary

  def create_masked_lm_predictions(self, tokens):
    FLAGS, rng = self.FLAGS, self.rng
    cand, boundary = self.candidate_spans(tokens)
    output = list(tokens)
    num = min(self.max_predictions_per_seq,
              max(1, int(round(len(tokens) * self.masked_lm_prob))))
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
          output[i] = self.vocab_words[rng.randint(0, len(self.vocab_words) - 1)]
        masked.append(MaskedLmInstance(index=i, label=tokens[i]))
    rng.shuffle(ngram_indexes)
    if FLAGS.do_permutation:
      raise ValueError("do_permutation (off by default) is not transcribed")
    masked = sorted(masked, key=lambda x: x.index)
    return output, [m.index for m in masked], [m.label for m in masked], boundary

  def segment_b(self, chunk, a_end, doc_index, target, a):
    """Segment B, its label, and the number of sentences to put back (official code inline)."""
    b, put_back = [], 0
    if len(chunk) == 1 or (self.FLAGS.random_next_sentence and self.rng.random() < 0.5):
      label = 1
      for _ in range(10):  # up to 10 tries to avoid the current document
        r = self.rng.randint(0, len(self.all_documents) - 1)
        if r != doc_index:
          break
      other = self.all_documents[r]
      for j in range(self.rng.randint(0, len(other) - 1), len(other)):
        b.extend(other[j])
        if len(b) >= target - len(a):
          break
      put_back = len(chunk) - a_end
    elif not self.FLAGS.random_next_sentence and self.rng.random() < 0.5:
      label = 1
      for j in range(a_end, len(chunk)):
        b.extend(chunk[j])
      a, b = b, a
    else:
      label = 0
      for j in range(a_end, len(chunk)):
        b.extend(chunk[j])
    return a, b, label, put_back

  def create_instances_from_document(self, doc_index):
    rng = self.rng
    document = self.all_documents[doc_index]
    max_num = self.max_seq_length - 3
    target = max_num if rng.random() >= self.short_seq_prob else rng.randint(2, max_num)
    out, chunk, length, i = [], [], 0, 0
    while i < len(document):
      chunk.append(document[i])
      length += len(document[i])
      if i == len(document) - 1 or length >= target:
        a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
        a = []
        for j in range(a_end):
          a.extend(chunk[j])
        a, b, label, put_back = self.segment_b(chunk, a_end, doc_index, target, a)
        i -= put_back
        self.truncate_seq_pair(a, b, max_num)
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
        out.append((*self.create_masked_lm_predictions(tokens), segment_ids, label))
        chunk, length = [], 0
      i += 1
    return out

  def features(self, tokens, positions, labels, boundary, segment_ids, label):
    """One instance's tf.train features (official write_instance_to_example_files, per instance)."""
    input_ids = self.convert_tokens_to_ids(tokens)
    input_mask = [1] * len(input_ids)
    segment_ids, token_boundary = list(segment_ids), list(boundary)
    while len(input_ids) < self.max_seq_length:
      input_ids.append(0)
      input_mask.append(0)
      segment_ids.append(0)
      token_boundary.append(0)
    masked_lm_positions = list(positions)
    masked_lm_ids = self.convert_tokens_to_ids(labels)
    masked_lm_weights = [1.0] * len(masked_lm_ids)
    multiplier = 1 + int(self.FLAGS.do_permutation)
    while len(masked_lm_positions) < self.max_predictions_per_seq * multiplier:
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
    return features

  def write_instance_to_example_files(self, instances, out_file):
    writers = [tf1.python_io.TFRecordWriter(out_file)]
    writer_index = 0
    for inst_index, instance in enumerate(instances):
      features = self.features(*instance)
      example = tf.train.Example(features=tf.train.Features(feature=features))
      writers[writer_index].write(example.SerializeToString())
      if random.randint(1, 100) >= 97:  # official: random flushes
        writers[writer_index].flush()
      writer_index = (writer_index + 1) % len(writers)
      if inst_index < 20:
        tf1.logging.info("*** Example ***")
        tf1.logging.info("tokens: %s" % " ".join(printable_text(x) for x in instance[0]))
        for name, feature in features.items():
          values = feature.int64_list.value or feature.float_list.value
          tf1.logging.info("%s: %s" % (name, " ".join(str(x) for x in values)))
    for writer in writers:
      writer.close()


def run(files, spm_model, out_file, max_seq_length, dupe_factor, seed=12345,
        max_predictions_per_seq=20, masked_lm_prob=0.15, short_seq_prob=0.1, ngram=3) -> int:
  """Writes the official script's records for `files` to `out_file`; the number of instances."""
  tf1.logging.set_verbosity(tf1.logging.INFO)
  generator = OfficialGenerator(spm_model, max_seq_length, seed, max_predictions_per_seq,
                                masked_lm_prob, short_seq_prob, ngram)
  generator.read_documents(files)
  instances = []
  for _ in range(dupe_factor):
    for d in range(len(generator.all_documents)):
      instances.extend(generator.create_instances_from_document(d))
  generator.rng.shuffle(instances)
  generator.write_instance_to_example_files(instances, out_file)
  return len(instances)
