"""Files on local disks and in buckets (gs://...) alike, through tf.io.gfile.

Runs on TPU pods keep their workdir, and often their data, in a bucket, where builtin `open`,
`os.path`, `os.replace` and friends do not work. Fine-tuning reads and writes its files through
these helpers (pretraining's checkpoints.py and metrics.py use tf.io.gfile the same way).

Reads and tests of local paths use the os module directly (the same answers without importing
TensorFlow, which takes seconds: a command line checking its input should not wait for it).
Local paths are made absolute so that a run's files record where they are; URIs are left alone
(`os.path.abspath("gs://b/x")` would give "<cwd>/gs:/b/x"). Writes go to a temporary name that is
then renamed over the target, so a reader (or a resumed run) never sees half a file.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any


def _gfile():
  # Imported on first use: TensorFlow takes seconds to import, and modules that merely import
  # this one (convert, the task readers) should not pay for it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def is_uri(path: str) -> bool:
  """True for "gs://bucket/x", "ram://x" and other file-system URIs."""
  return "://" in path


def absolute(path: str) -> str:
  """`path` made absolute when it is local; a URI unchanged."""
  return path if is_uri(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_uri(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_uri(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  return exists(path) and not isdir(path)


def makedirs(path: str) -> None:
  """Creates `path` and its parents (no error when it exists)."""
  _gfile().makedirs(path)


def listdir(path: str) -> list[str]:
  """Sorted entry names of a directory (buckets mark sub-directories with a trailing "/";
  it is dropped)."""
  return sorted(name.rstrip("/") for name in _gfile().listdir(path))


def glob(pattern: str) -> list[str]:
  """Sorted paths matching a glob pattern (local or in a bucket)."""
  return sorted(_gfile().glob(pattern))


def read_bytes(path: str) -> bytes:
  with (_gfile().GFile(path, "rb") if is_uri(path) else open(path, "rb")) as f:
    return f.read()


def read_text(path: str, encoding: str = "utf-8") -> str:
  """The decoded contents of a text file ("utf-8-sig" also drops a byte-order mark); text that is
  not `encoding` is an InputError naming the file and where."""
  data = read_bytes(path)
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise _input_error(f"{path}:{line}: not {encoding} text (byte {e.start}: {e.reason})") from None


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (a temporary name, then a rename), creating the
  directory."""
  gfile = _gfile()
  parent = os.path.dirname(path)
  if parent:
    gfile.makedirs(parent)
  # Unique per process and call: several processes may write the same path concurrently.
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  with gfile.GFile(tmp, "wb") as f:
    f.write(data)
  gfile.rename(tmp, path, overwrite=True)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def read_json(path: str) -> Any:
  """The JSON value in `path`; malformed JSON is an InputError naming the file and line."""
  return parse_json(read_text(path), path)


def parse_json(text: str, path: str) -> Any:
  """`text` (the contents of `path`) as JSON; malformed JSON is an InputError naming both."""
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise _input_error(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None


def _input_error(message: str) -> Exception:
  from albert_jax.command_line import InputError  # pylint: disable=g-import-not-at-top
  return InputError(message)


def write_json(path: str, value: Any, **dump_kwargs: Any) -> None:
  """`value` as JSON (indent 2 and `str` for unknown types unless given otherwise)."""
  dump_kwargs = {"indent": 2, "default": str, **dump_kwargs}
  write_text(path, json.dumps(value, **dump_kwargs))


def copy(source: str, target: str) -> None:
  """Copies a file (local <-> bucket too), replacing `target`."""
  write_bytes(target, read_bytes(source))


def fingerprint(path: str) -> dict[str, Any]:
  """{"path", "size", "mtime"} of a file: changes whenever the file is rewritten."""
  st = _gfile().stat(path)
  return {"path": absolute(path), "size": st.length, "mtime": st.mtime_nsec / 1e9}
