"""Shared pytest setup: 8 fake CPU devices for sharding tests, one compilation cache, fixtures.

XLA_FLAGS and the cache settings must be in the environment before jax is first imported, which
is why it happens here (data fixtures live in data_fixtures.py).

Most of the suite's time is XLA compiling small train and eval steps, and many tests (and the
`python -m` processes they start) compile the same programs again. The session therefore shares
one persistent compilation cache (https://docs.jax.dev/en/latest/persistent_compilation_cache.html)
in a temporary directory: made by the first pytest process (the xdist controller), inherited by
its workers and their subprocesses through the environment, and removed when that process ends.
Every program is cached however quick its compilation; a size limit turns on JAX's file lock, so
concurrent processes are safe. ALBERT_JAX_TEST_CACHE=0 runs without it.
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
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                    JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)

from tests.data_fixtures import (  # noqa: F401
    corpus_files, spm_model, static_records, token_only_records)
