"""Malformed inputs through every command-line tool: one `error:` line naming the culprit, exit
status 2, no traceback, nothing half-written, and fast failure where a tool used to hang.

Most cases call the tools' `main(argv)` in process (the same boundary as `python -m`); one case per
tool runs as a real subprocess (`test_entry_points`), all of them started at once.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from albert_jax import command_line

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
TINY = ["--config=configs/pretrain.py:size=tiny", "--config.data.max_seq_length=16",
        "--config.data.max_predictions_per_seq=3"]


def assert_one_line(err: str, *culprits: str) -> None:
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert "Traceback" not in err, err[-3000:]
  assert len(lines) == 1, err[-3000:]
  for culprit in culprits:
    assert culprit in lines[0], lines[0]


def fails(main, argv, capsys, *culprits: str) -> str:
  """Runs `main(argv)` in process; asserts the boundary's exit status and its one line."""
  try:
    code = main(argv)
  except SystemExit as e:
    code = e.code
  err = capsys.readouterr().err
  assert code == command_line.USAGE_EXIT_CODE, err[-3000:]
  assert_one_line(err, *culprits)
  return err


def write_records(path: pathlib.Path, n: int = 4, seq: int = 16, preds: int = 3, **changes):
  """`n` official pretraining records; `changes` replace (array) or drop (None) features."""
  from albert_jax.data import records
  feats = {"input_ids": np.arange(seq), "input_mask": np.ones(seq, np.int64),
           "segment_ids": np.zeros(seq, np.int64), "token_boundary": np.ones(seq, np.int64),
           "masked_lm_positions": np.arange(1, preds + 1), "masked_lm_ids": np.arange(preds),
           "masked_lm_weights": np.ones(preds, np.float32), "next_sentence_labels": np.zeros(1, np.int64)}
  for k, v in changes.items():
    feats.pop(k) if v is None else feats.__setitem__(k, v)
  records.write_records_atomically(str(path), [records.encode_example(feats)] * n)
  return path


# ---------------------------------------------------------------------------------------------
# Configs and flags (albert_jax.main, finetune, param_count, plan).
# ---------------------------------------------------------------------------------------------

CONFIG_CASES = {
    "bad size choice": (["--config=configs/pretrain.py:size=huge"], ["size='huge'", "allowed"]),
    "unknown argument": (["--config=configs/pretrain.py:sise=tiny"], ["'sise'", "allowed"]),
    "missing file": (["--config=configs/nope.py"], ["configs/nope.py", "not found"]),
    "misspelled field": ([*TINY, "--config.training.nope=3"],
                         ["--config.training.nope", "global_batch_size"]),
    "misspelled section": ([*TINY, "--config.nope.x=3"], ["--config.nope.x", "training"]),
    "value not a section": ([*TINY, "--config.seed.x=3"], ["config.seed is a value"]),
    "bad value type": ([*TINY, "--config.training.global_batch_size=abc"],
                       ["--config.training.global_batch_size=abc"]),
    "bad field value": (["--config=configs/pretrain.py:size=tiny"],
                        ["'data.max_seq_length'", "max_position_embeddings"]),
    "bad text preprocessing": ([*TINY, "--config.data.preprocessing=hf"],
                               ["'data.preprocessing'='hf'", "'official', 'huggingface'"]),
    "bad task choice": (["--config=configs/finetune_glue.py:task=nope"], ["task='nope'", "mnli"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_main_config_errors(case, tmp_path, capsys):
  from albert_jax import main
  argv, culprits = CONFIG_CASES[case]
  fails(main.main, [*argv, f"--workdir={tmp_path / 'w'}"], capsys, *culprits)
  assert not (tmp_path / "w").exists()  # nothing half-written


def test_main_flag_errors(tmp_path, capsys):
  from albert_jax import main
  fails(main.main, TINY, capsys, "--workdir")
  fails(main.main, [*TINY, f"--workdir={tmp_path}", "stray"], capsys, "stray")


def test_finetune_param_count_and_plan_config_errors(tmp_path, capsys):
  from albert_jax.model import param_count
  from albert_jax.plan import __main__ as plan
  from albert_jax.train import finetune
  fails(finetune.main, ["--config=configs/finetune_glue.py:task=nope", f"--workdir={tmp_path}"],
        capsys, "task='nope'")
  fails(param_count.main, ["--config=configs/model.py:size=huge"], capsys, "albert_huge")
  fails(param_count.main, ["--config=configs/model.py:size=base", "--config.hiden_size=3"],
        capsys, "--config.hiden_size", "hidden_size")
  fails(plan.main, ["--config=configs/pretrain.py:size=huge", "--topology=v3:8"], capsys,
        "size='huge'")


def test_traceback_switch_lets_the_error_through(monkeypatch, tmp_path):
  from albert_jax import main
  monkeypatch.setenv(command_line.TRACEBACK_ENV, "1")
  with pytest.raises(ValueError, match="max_position_embeddings"):
    main.main(["--config=configs/pretrain.py:size=tiny", f"--workdir={tmp_path}"])


# ---------------------------------------------------------------------------------------------
# Record files (pretraining fails before the model is built, naming the file).
# ---------------------------------------------------------------------------------------------

def _bad_records(d: pathlib.Path) -> dict:
  (d / "empty.tfrecord").write_bytes(b"")
  (d / "junk.tfrecord").write_bytes(bytes(range(256)) * 4)
  good = write_records(d / "good.tfrecord").read_bytes()
  (d / "truncated.tfrecord").write_bytes(good[:len(good) // 3])
  write_records(d / "names.tfrecord", input_ids=None, masked_lm_ids=None)
  write_records(d / "token_only.tfrecord", masked_lm_positions=None, masked_lm_ids=None,
                masked_lm_weights=None)
  write_records(d / "length.tfrecord", seq=32)
  write_records(d / "dtype.tfrecord", masked_lm_weights=np.ones(3, np.int64))
  return {
      "empty": (["empty.tfrecord", "no records"], {}),
      "not a record file": (["junk.tfrecord", "not a readable TFRecord"], {}),
      # Its first record is intact; the walk over its record headers finds where it ends.
      "truncated": (["truncated.tfrecord", "truncated"], {}),
      "other feature names": (["names.tfrecord", "not ALBERT pretraining records"], {}),
      "token-only without dynamic masking": (["token_only.tfrecord", "token-only"], {}),
      "wrong length": (["length.tfrecord", "max_seq_length"], {}),
      "wrong dtype": (["dtype.tfrecord", "masked_lm_weights", "float_list"], {}),
      "empty eval file": (["empty.tfrecord", "data.eval_files"], {"eval": "empty.tfrecord"}),
      "no eval match": (["data.eval_files", "nothing*.tfrecord"], {"eval": "nothing*.tfrecord"}),
  }


def test_record_file_errors(tmp_path, capsys):
  from albert_jax import main
  cases = _bad_records(tmp_path)
  for i, (name, (culprits, opts)) in enumerate(cases.items()):
    train = "good.tfrecord" if "eval" in opts else culprits[0]
    workdir = tmp_path / f"w{i}"
    argv = [*TINY, f"--config.data.train_files={tmp_path / train}", f"--workdir={workdir}"]
    if "eval" in opts:
      argv.append(f"--config.data.eval_files={tmp_path / opts['eval']}")
    start = time.time()
    fails(main.main, argv, capsys, *culprits)
    assert time.time() - start < 30, name  # before the model is built
    assert not workdir.exists(), name
  assert "token-only" not in fails(
      main.main, [*TINY, f"--config.data.train_files={tmp_path / 'names.tfrecord'}",
                  f"--workdir={tmp_path / 'w'}"], capsys)


def test_damaged_record_mid_file_is_named(tmp_path):
  from albert_jax.data import pipeline
  good = write_records(tmp_path / "good.tfrecord", n=8).read_bytes()
  damaged = bytearray(good)
  damaged[-10] ^= 0xFF  # a flipped byte in the last record's data: the framing stays intact
  (tmp_path / "bad.tfrecord").write_bytes(bytes(damaged))
  files = [str(tmp_path / "good.tfrecord"), str(tmp_path / "bad.tfrecord")]
  ds = pipeline.train_dataset(files, batch_size_per_host=4, seed=0, max_seq_length=16,
                              max_predictions_per_seq=3, shuffle_buffer_size=1, num_epochs=1)
  it = pipeline.DataIterator(ds, files)
  with pytest.raises(command_line.InputError, match="bad.tfrecord"):
    for _ in it:
      pass


# ---------------------------------------------------------------------------------------------
# Corpora (tokenization train, create_pretraining_data).
# ---------------------------------------------------------------------------------------------

def test_tokenization_train_errors(tmp_path, capsys):
  from albert_jax.data import tokenization
  (tmp_path / "empty.txt").write_text("")
  (tmp_path / "blank.txt").write_text("\n  \n\n")
  out = tmp_path / "out" / "spm"
  for argv, culprits in [
      ([f"--input={tmp_path / 'empty.txt'}", f"--output={out}"], ["empty.txt", "SentencePiece"]),
      ([f"--input={tmp_path / 'blank.txt'}", f"--output={out}"], ["blank.txt"]),
      ([f"--input={tmp_path / 'none*.txt'}", f"--output={out}"], ["--input", "none*.txt"]),
      ([f"--input={tmp_path / 'blank.txt'}", f"--output={out}", "--vocab_size=3"],
       ["--vocab_size=3"]),
      ([f"--input={tmp_path / 'blank.txt'}"], ["--output"]),
      (["--input=x"], ["command"]),
  ]:
    fails(tokenization.main, ["train", *argv] if argv[0] != "--input=x" else argv, capsys,
          *culprits)
    assert not (tmp_path / "out").exists()


def test_tokenization_train_counts_invalid_utf8(tmp_path, caplog):
  from albert_jax.data import tokenization
  text = "".join(f"line {i} of some words here and there\n" for i in range(200)).encode()
  (tmp_path / "bad.txt").write_bytes(text + b"caf\xe9 au lait\n" * 3)
  tokenization.train_model([str(tmp_path / "bad.txt")], str(tmp_path / "spm"), vocab_size=60)
  assert "bad.txt: 3 line(s) with invalid UTF-8" in caplog.text


def test_create_pretraining_data_errors(tmp_path, capsys, corpus_files, spm_model):
  from albert_jax.data import create_pretraining_data as cpd
  (tmp_path / "not.model").write_text("not a model")
  base = [f"--input={corpus_files[0]}", f"--output={tmp_path / 'out'}"]
  for argv, culprits in [
      (base, ["--spm_model"]),
      ([*base, f"--spm_model={tmp_path / 'not.model'}", "--dupe_factor=0"], ["--dupe_factor=0"]),
      ([f"--input={tmp_path / 'none*.txt'}", f"--output={tmp_path / 'out'}",
        f"--spm_model={spm_model}"], ["none*.txt"]),
      ([*base, f"--spm_model={tmp_path / 'not.model'}"], ["not.model"]),
  ]:
    try:
      code = cpd.main(argv)
    except SystemExit as e:
      code = e.code
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert_one_line(err, *culprits)
    assert not (tmp_path / "out").exists()


def test_binary_corpus_file_is_named(tmp_path):
  from albert_jax.data import sources
  (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 64)
  (tmp_path / "text.txt").write_text("plain text, é and ü\n" * 500)
  assert sources.looks_binary(str(tmp_path / "blob.bin"))
  assert not sources.looks_binary(str(tmp_path / "text.txt"))


# ---------------------------------------------------------------------------------------------
# Checkpoints (convert).
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  import jax
  import jax.numpy as jnp
  import flax.linen as nn
  from albert_jax import convert
  from albert_jax.model import modeling
  from albert_jax.model.config import preset
  config = preset("tiny")
  params = nn.unbox(modeling.AlbertForPreTraining(config).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  root = tmp_path_factory.mktemp("ckpt")
  convert.save_checkpoint(config, params, str(root / "ours"))
  convert.save_hf(config, params, str(root / "hf"))
  return root


def test_convert_errors(tiny_checkpoint, tmp_path, capsys):
  from albert_jax import convert
  import shutil
  hf_json = tmp_path / "hf_json"
  shutil.copytree(tiny_checkpoint / "hf", hf_json)
  (hf_json / "config.json").write_text('{"model_type": "albert",')
  hf_trunc = tmp_path / "hf_trunc"
  shutil.copytree(tiny_checkpoint / "hf", hf_trunc)
  data = (hf_trunc / "model.safetensors").read_bytes()
  (hf_trunc / "model.safetensors").write_bytes(data[:len(data) // 2])
  mismatch = tmp_path / "mismatch"
  shutil.copytree(tiny_checkpoint / "ours", mismatch)
  cfg = json.loads((mismatch / "model_config.json").read_text())
  cfg["hidden_size"] *= 2
  (mismatch / "model_config.json").write_text(json.dumps(cfg))
  out = tmp_path / "out"
  for argv, culprits in [
      ([f"--hf_dir={hf_json}"], ["config.json", "not valid JSON"]),
      ([f"--hf_dir={hf_trunc}"], ["model.safetensors"]),
      ([f"--checkpoint={mismatch}"], [str(mismatch), "disagrees with its weights"]),
      ([f"--checkpoint={tmp_path / 'nope'}"], ["nope"]),
      ([f"--tf_checkpoint={tmp_path / 'nope'}"], ["--albert_config"]),
      ([], ["--hf_dir"]),
  ]:
    fails(convert.main, [*argv, f"--out_hf={out}"], capsys, *culprits)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Inference inputs (predict) and task-file readers.
# ---------------------------------------------------------------------------------------------

def test_predict_input_errors(tiny_checkpoint, tmp_path, capsys, monkeypatch):
  import io
  from albert_jax import predict
  (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 [MASK]\n")
  (tmp_path / "blank.txt").write_text("\n\n")
  ckpt = f"--checkpoint={tiny_checkpoint / 'ours'}"
  for argv, culprits in [
      (["fill-mask", ckpt, f"--input={tmp_path / 'latin1.txt'}"], ["latin1.txt:1", "utf-8"]),
      (["fill-mask", ckpt, f"--input={tmp_path / 'blank.txt'}"], ["blank.txt", "empty"]),
      (["fill-mask", ckpt, f"--input={tmp_path / 'nope.txt'}"], ["nope.txt", "not found"]),
      (["fill-mask", ckpt, "{not json"], ["argument 1", "JSON"]),
      (["translate", ckpt, "x"], ["mode", "'translate'"]),
      (["fill-mask", "x [MASK]"], ["--checkpoint"]),
      (["fill-mask", f"--checkpoint={tmp_path / 'nope'}", "x [MASK]"], ["nope"]),
  ]:
    fails(predict.main, argv, capsys, *culprits)
  monkeypatch.setattr(sys, "stdin", io.StringIO("caf\udce9 [MASK]\n"))  # surrogateescape'd
  fails(predict.main, ["fill-mask", ckpt, "--input=-"], capsys, "stdin", "UTF-8")


def test_predict_checks_its_input_before_loading_the_model_libraries(tmp_path):
  """Bad input and flags fail before jax and TensorFlow are imported (seconds of imports)."""
  (tmp_path / "blank.txt").write_text("\n")
  script = ("import sys\nfrom albert_jax.inference import predict\n"
            "try:\n  rc = predict.main(sys.argv[1:])\nexcept SystemExit as e:\n  rc = e.code\n"
            "print(rc, sorted(m for m in ('jax', 'tensorflow', 'flax') if m in sys.modules))")
  for argv, culprit in [
      (["fill-mask", f"--checkpoint={tmp_path}", f"--input={tmp_path / 'blank.txt'}"], "blank.txt"),
      (["generate", f"--checkpoint={tmp_path}", "--max_new_pieces=-1", "x"], "--max_new_pieces"),
      (["classify", f"--checkpoint={tmp_path}", "{broken"], "argument 1"),
      (["score", f"--checkpoint={tmp_path}", "--preprocessing=xlnet", "x"], "--preprocessing"),
  ]:
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "[]"], (argv, proc.stdout, proc.stderr[-2000:])
    assert_one_line(proc.stderr, culprit)


def test_metrics_and_json_readers(tmp_path, capsys):
  from albert_jax import fileio
  from albert_jax.tasks import metrics
  (tmp_path / "metrics.json").write_text('{"best": ')
  fails(metrics.main, [str(tmp_path / "metrics.json")], capsys, "metrics.json")
  fails(metrics.main, [str(tmp_path / "none*.json")], capsys, "none*.json")
  (tmp_path / "task.tsv").write_bytes(b"sentence\tlabel\nna\xefve\t1\n")
  with pytest.raises(command_line.InputError, match=r"task.tsv:2: not utf-8"):
    fileio.read_text(str(tmp_path / "task.tsv"))


# ---------------------------------------------------------------------------------------------
# The real entry points, one subprocess per tool, all started at once.
# ---------------------------------------------------------------------------------------------

def _entry_point_cases(d: pathlib.Path, corpus: str) -> dict:
  (d / "empty.tfrecord").write_bytes(b"")
  (d / "empty.txt").write_text("")
  (d / "metrics.json").write_text("[")
  binary = bytes(range(256)) * 8
  return {
      "main: empty record file": (
          ["albert_jax.main", *TINY, f"--config.data.train_files={d / 'empty.tfrecord'}",
           f"--workdir={d / 'w_main'}"], None, ["empty.tfrecord", "no records"], d / "w_main"),
      "finetune: bad task": (
          ["albert_jax.finetune", "--config=configs/finetune_glue.py:task=nope",
           f"--workdir={d / 'w_ft'}"], None, ["task='nope'"], d / "w_ft"),
      "convert: no source": (["albert_jax.convert", f"--out_hf={d / 'hf'}"], None, ["--hf_dir"],
                             d / "hf"),
      "predict: binary stdin": (
          ["albert_jax.predict", "fill-mask", f"--checkpoint={d}"], binary, ["stdin", "UTF-8"],
          None),
      "tokenization: empty corpus": (
          ["albert_jax.data.tokenization", "train", f"--input={d / 'empty.txt'}",
           f"--output={d / 'spm_out' / 'spm'}"], None, ["empty.txt"], d / "spm_out"),
      "create_pretraining_data: bad flag": (
          ["albert_jax.data.create_pretraining_data", f"--input={corpus}",
           f"--output={d / 'records'}", "--spm_model=x", "--dupe_factor=0"], None,
          ["--dupe_factor=0"], d / "records"),
      "plan: bad size": (["albert_jax.plan", "--config=configs/pretrain.py:size=huge",
                          "--topology=v3:8"], None, ["size='huge'"], None),
      "param_count: misspelled field": (
          ["albert_jax.model.param_count", "--config=configs/model.py:size=base",
           "--config.hiden_size=3"], None, ["--config.hiden_size"], None),
      "metrics: bad JSON": (["albert_jax.tasks.metrics", str(d / "metrics.json")], None,
                            ["metrics.json"], None),
      "launch: unknown sweep": (["experiments.launch", "--sweep=nope", f"--root={d / 'sw'}"],
                                None, ["'nope'"], d / "sw"),
      "collect: missing root": (["experiments.collect", "--sweep=table4",
                                 f"--root={d / 'missing'}"], None, ["--root"], d / "missing"),
  }


@pytest.fixture(scope="module")
def entry_points(tmp_path_factory, corpus_files):
  d = tmp_path_factory.mktemp("entry")
  cases = _entry_point_cases(d, corpus_files[0])
  procs = {}
  for i, (name, (args, stdin, _, _)) in enumerate(cases.items()):
    (d / f"stdin{i}").write_bytes(stdin or b"")
    with open(d / f"stdin{i}", "rb") as f:
      procs[name] = (subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=ENV, stdin=f,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                     time.time())
  results = {}
  for name, (proc, start) in procs.items():
    try:
      _, err = proc.communicate(timeout=240)  # the empty record file once hung here forever
    except subprocess.TimeoutExpired:
      proc.kill()
      _, err = proc.communicate()
    results[name] = (proc.returncode, err.decode(errors="replace"), time.time() - start)
  return cases, results


ENTRY_POINTS = ("main: empty record file", "finetune: bad task", "convert: no source",
                "predict: binary stdin", "tokenization: empty corpus",
                "create_pretraining_data: bad flag", "plan: bad size",
                "param_count: misspelled field", "metrics: bad JSON", "launch: unknown sweep",
                "collect: missing root")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points(entry_points, name):
  cases, results = entry_points
  assert sorted(cases) == sorted(ENTRY_POINTS)
  code, err, seconds = results[name]
  _, _, culprits, not_written = cases[name]
  assert code not in (0, None, -9), err[-3000:]
  assert_one_line(err, *culprits)
  assert seconds < 200, (name, seconds)
  if not_written is not None:
    assert not not_written.exists(), name
