"""The test suite as a package, so that its helpers import as `tests.X` from the repository root
(pytest and `python -m tests.multiprocess_worker` alike) without editing sys.path."""
