"""Shared pytest setup: 8 fake CPU devices for sharding tests, one compilation cache, whole
modules per xdist worker, fixtures.

XLA_FLAGS and the cache settings must be in the environment before jax is first imported, which
is why it happens here (data fixtures live in data_fixtures.py).

Most of the suite's time is XLA compiling small train and eval steps, and many tests (and the
`python -m` processes they start) compile the same programs again. The session therefore shares
one persistent compilation cache (https://docs.jax.dev/en/latest/persistent_compilation_cache.html)
in a temporary directory: made by the first pytest process (the xdist controller), inherited by
its workers and their subprocesses through the environment, and removed when that process ends.
Every program is cached however quick its compilation. The cache has no size limit: with one,
JAX's cache lists and reads every entry's access time on each write (to evict), which grows with
the thousands of entries a session writes. Without one there is no file lock either; a process
that reads an entry while another still writes it finds it truncated, which JAX reports as a
warning and treats as a miss (it compiles). ALBERT_JAX_TEST_CACHE=0 runs without the cache.
"""

import os
import shutil
import tempfile

from tests import xla_env

# 8 fake devices, optimization level 0 (tests/xla_env.py).
os.environ.setdefault("XLA_FLAGS", xla_env.xla_flags(8))

_OWN_CACHE = None
if os.environ.get("ALBERT_JAX_TEST_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="albert_jax_test_jit_cache_")
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_OWN_CACHE,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


# The modules that take longest on 2 cores (pytest --durations, 2026-12), longest first.
LONGEST_FIRST = (
    "test_pretrain_run", "test_experiments", "test_modeling", "test_finetune", "test_attention",
    "test_predict", "test_plan", "test_convert", "test_trainer", "test_checkpoint_kinds",
    "test_bad_inputs", "test_generate", "test_finetune_multiprocess", "test_multiprocess",
    "test_hf_parity", "test_rehearse", "test_pipeline", "test_heads", "test_tagging")


def pytest_configure(config):
  """`-n N` hands each worker whole modules (pytest-xdist's loadfile), longest first.

  Many modules build expensive module-scoped fixtures (a pretraining run, a fine-tuned model, a
  batch of entry-point processes); xdist's default spreads a module's tests over every worker,
  and each worker then builds them again. Whole modules, handed out longest first
  (pytest_collection_modifyitems below, xdist's own reordering off), keep one build and let the
  workers finish together.
  """
  if getattr(config.option, "dist", "no") == "load":
    config.option.dist = "loadfile"
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: same order within


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)

from tests.data_fixtures import (  # noqa: F401
    corpus_files, spm_model, static_records, token_only_records)
