"""Pytest fixtures for the data tests: a SentencePiece model and small record sets from the bundled corpus.

The SentencePiece model is trained here (about a second on the corpus subset) rather than committed,
so the tests exercise our trainer and the repository carries no binary model. Everything is
session-scoped: each pytest-xdist worker builds it once.
"""

from __future__ import annotations

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "corpus"
# A ~0.5 MB subset of the corpus: enough documents for stable statistics, fast to process.
SUBSET = ("tutorial.txt", "faq.txt", "using_extending.txt", "reference.txt")
SEQ_LEN = 128
MAX_PREDICTIONS = 20


@pytest.fixture(scope="session")
def corpus_files() -> list[str]:
  return [str(CORPUS / name) for name in SUBSET]


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory, corpus_files) -> str:
  from albert_jax.data import tokenization
  prefix = tmp_path_factory.mktemp("spm") / "spm"
  return tokenization.train_model(corpus_files, str(prefix), vocab_size=4000)


def make_records(out_dir: pathlib.Path, corpus_files: list[str], spm_model: str, *,
                 masking: str = "static", dupe_factor: int = 2, num_workers: int = 1,
                 block_size: int = 128 * 1024, seed: int = 12345, **instance) -> dict:
  """Runs the generator on `corpus_files`; returns its summary."""
  from albert_jax.data import create_pretraining_data as cpd
  from albert_jax.data import pretraining_data, sources
  settings = cpd.Settings(
      spm_model=spm_model, do_lower_case=True, keep_accents=False, preprocessing="official",
      instance=pretraining_data.InstanceConfig(max_seq_length=instance.pop("max_seq_length", SEQ_LEN),
                                               **instance),
      masking=masking, masked_lm_prob=0.15, max_predictions_per_seq=MAX_PREDICTIONS, ngram=3,
      favor_shorter_ngram=True, do_whole_word_mask=True, dupe_factor=dupe_factor, random_seed=seed)
  units, empty = sources.plan_text_units(list(corpus_files), block_size)
  return cpd.run(settings, units, str(out_dir), num_workers=num_workers, inputs=corpus_files,
                 empty_files=empty, progress=False)


@pytest.fixture(scope="session")
def static_records(tmp_path_factory, corpus_files, spm_model) -> pathlib.Path:
  out = tmp_path_factory.mktemp("static") / "records"
  make_records(out, corpus_files, spm_model)
  return out


@pytest.fixture(scope="session")
def token_only_records(tmp_path_factory, corpus_files, spm_model) -> pathlib.Path:
  out = tmp_path_factory.mktemp("token_only") / "records"
  make_records(out, corpus_files, spm_model, masking="none", dupe_factor=1)
  return out
