"""Shared pytest setup: 8 fake CPU devices for sharding tests, and fixtures.

XLA_FLAGS must be set before jax is first imported, which is why it happens here (data fixtures
live in data_fixtures.py).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from tests.data_fixtures import (  # noqa: F401
    corpus_files, spm_model, static_records, token_only_records)
