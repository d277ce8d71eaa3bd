"""Creates pretraining data inside the workdir from a text corpus (the demo and `runlocal`).

With `data.corpus` set and `data.train_files` empty, the run first trains a SentencePiece model on
the corpus (unless `data.spm_model` is given) and writes train and eval TFRecords with
`create_pretraining_data`, exactly as a user would from the command line. Process 0 does the work;
the others wait. Existing outputs are reused, so a resumed run does not redo them.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.experimental import multihost_utils

from albert_jax.data import create_pretraining_data
from albert_jax.data import tokenization


def _create(corpus: str, spm_model: str, output: str, config: ml_collections.ConfigDict,
            seed: int) -> None:
  if os.path.exists(os.path.join(output, create_pretraining_data.SUMMARY_FILE)):
    return
  d = config.data
  argv = [f"--input={corpus}", f"--spm_model={spm_model}", f"--output={output}",
          f"--max_seq_length={d.max_seq_length}",
          f"--max_predictions_per_seq={d.max_predictions_per_seq}",
          f"--dupe_factor={d.dupe_factor}", f"--random_seed={seed}", "--overwrite",
          f"--num_workers={d.num_workers}", "--progress=false",
          f"--masking={'none' if d.dynamic_masking else 'static'}",
          f"--random_next_sentence={str(bool(d.random_next_sentence)).lower()}"]
  if create_pretraining_data.main(argv) != 0:
    raise RuntimeError(f"creating pretraining data from {corpus} into {output} failed")


def prepare(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Returns a copy of `config` whose data fields point at data created in `workdir/data`."""
  config = ml_collections.ConfigDict(config.to_dict())
  d = config.data
  out = os.path.join(os.path.abspath(workdir), "data")
  spm_model = d.spm_model or os.path.join(out, "spm.model")
  if jax.process_index() == 0:
    if not d.spm_model and not os.path.exists(spm_model):
      tokenization.train_model(tokenization.expand_globs(d.corpus, "data.corpus"),
                               spm_model[:-len(".model")], vocab_size=d.spm_vocab_size,
                               input_sentence_size=1_000_000)
    _create(d.corpus, spm_model, os.path.join(out, "train"), config, config.seed)
    if d.eval_corpus:
      _create(d.eval_corpus, spm_model, os.path.join(out, "eval"), config, config.seed + 1)
  multihost_utils.sync_global_devices("pretraining data ready")
  d.spm_model = spm_model
  d.train_files = os.path.join(out, "train", "*.tfrecord")
  if d.eval_corpus:
    d.eval_files = os.path.join(out, "eval", "*.tfrecord")
  return config
