"""Multi-host fine-tuning: two JAX processes on 127.0.0.1 (gloo CPU collectives, 2 devices each)
fine-tune exactly like one process with 4 devices, and only process 0 writes the run's files."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from albert_jax.interop import convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Orbax checkpoints are written by every process (each saves the shards it holds).
EVERY_PROCESS = ("checkpoints/", "best/params")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(**spec) -> subprocess.Popen:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  return subprocess.Popen([sys.executable, "-m", "tests.finetune_worker", json.dumps(spec)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=REPO)


def finish(procs) -> list[dict]:
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, (out[-2000:], err[-4000:])
  return [json.loads(out.rsplit("RESULT ", 1)[1]) for out, _ in outs]


def train_losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def read(path) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_two_processes_fine_tune_like_one(tmp_path, corpus_files):
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  port = free_port()
  # No spm_model: process 0 trains the vocabulary in the shared workdir, process 1 waits for it.
  results = finish([launch(workdir=two, devices=2, spm_model="", spm_corpus=",".join(corpus_files),
                           port=port, process_id=i, num_processes=2) for i in range(2)])
  assert [r["process"] for r in results] == [0, 1]
  assert results[0]["history"] == results[1]["history"]  # every process holds the same metrics
  (ref,) = finish([launch(workdir=one, devices=4, spm_model=os.path.join(two, "spm.model"),
                          spm_corpus="", num_processes=1)])

  # Same training losses, evaluation history, best step and outputs as one process.
  losses, ref_losses = train_losses(two), train_losses(one)
  assert sorted(losses) == sorted(ref_losses) == [1, 2, 3, 4]
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [ref_losses[s] for s in sorted(ref_losses)], rtol=1e-5)
  assert [h["step"] for h in results[0]["history"]] == [h["step"] for h in ref["history"]]
  for got, want in zip(results[0]["history"], ref["history"]):
    assert got["metrics"].keys() == want["metrics"].keys()
    np.testing.assert_allclose(list(got["metrics"].values()), list(want["metrics"].values()),
                               rtol=1e-5, atol=1e-6)
  assert results[0]["best"]["step"] == ref["best"]["step"]
  _, params = convert.load_checkpoint(os.path.join(two, "best"))
  _, ref_params = convert.load_checkpoint(os.path.join(one, "best"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params,
               ref_params)
  assert results[0]["outputs"] == ref["outputs"] == ["outputs/SST-2.tsv",
                                                     "outputs/validation_predictions.tsv"]
  for name in ref["outputs"]:
    assert read(os.path.join(two, name)) == read(os.path.join(one, name)), name

  # Only process 0 writes the run's files; process 1 writes nothing but its checkpoint shards.
  written = [set(r["written"]) for r in results]
  assert {"metrics.json", "metrics.jsonl", "eval_history.json", "outputs/SST-2.tsv",
          "best/task.json", "best/model_config.json"} <= written[0]
  assert any(p.startswith("features/") for p in written[0])
  assert not [p for p in written[1] if not p.startswith(EVERY_PROCESS)], written[1]
  saved = json.loads(read(os.path.join(two, "metrics.json")))
  assert saved["history"] == results[0]["history"]
