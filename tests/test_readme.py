"""The README's Python examples run as written (on tiny local checkpoints instead of downloads)."""

import json
import os
import re

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from tests.test_convert import official_names, tf_shape, write_tf_checkpoint  # noqa: E402

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_blocks():
  return re.findall(r"```python\n(.*?)```", open(README).read(), re.S)


def test_readme_hf_example(tmp_path, monkeypatch):
  block = next(b for b in python_blocks() if "load_hf" in b)
  cfg = transformers.AlbertConfig(vocab_size=2000, embedding_size=8, hidden_size=16,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=20,
                                  max_position_embeddings=32, hidden_act="gelu_new")
  transformers.AlbertForMaskedLM(cfg).save_pretrained(tmp_path / "albert-base-v2")
  monkeypatch.chdir(tmp_path)
  exec(compile(block, "README.md", "exec"), {})  # pylint: disable=exec-used
  saved = json.load(open(tmp_path / "albert-base-v2-roundtrip" / "config.json"))
  assert saved["architectures"] == ["AlbertForPreTraining"]


def test_readme_tf_example(tmp_path, monkeypatch):
  block = next(b for b in python_blocks() if "load_tf" in b)
  cfg = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=12,
             num_attention_heads=4, intermediate_size=20, max_position_embeddings=16,
             hidden_act="gelu")
  rng = np.random.default_rng(0)
  arrays = {n: rng.normal(0, 0.2, tf_shape(n, cfg)).astype(np.float32)
            for n in official_names(1, 1, with_projection=True)}
  os.makedirs(tmp_path / "albert_base")
  write_tf_checkpoint(str(tmp_path / "albert_base" / "model.ckpt-best"), arrays)
  (tmp_path / "albert_base" / "albert_config.json").write_text(json.dumps(cfg))
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(compile(block, "README.md", "exec"), scope)  # pylint: disable=exec-used
  assert scope["config"].num_hidden_layers == 12
