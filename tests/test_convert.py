"""Checkpoint import/export: official TF1 names, HF layouts, strictness, our own format, CLI."""

import os
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from albert_jax.interop import convert
from albert_jax.train import finetune_files
from albert_jax.model import modeling

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tf = pytest.importorskip("tensorflow")

from tests.test_hf_parity import (  # noqa: E402
    TASK_CONFIG, assert_close, hf_model, hf_outputs, inputs, our_outputs, random_params)

SMALL = dict(num_hidden_groups=2, inner_group_num=2, embedding_size=8, hidden_size=16,
             num_hidden_layers=4)


def official_names(groups, inner, with_projection):
  """Variable names of an official pretraining checkpoint (google-research/albert), written out
  independently of albert_jax.interop.names."""
  out = ["bert/embeddings/word_embeddings", "bert/embeddings/token_type_embeddings",
         "bert/embeddings/position_embeddings", "bert/embeddings/LayerNorm/gamma",
         "bert/embeddings/LayerNorm/beta", "bert/pooler/dense/kernel", "bert/pooler/dense/bias",
         "cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
         "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/transform/LayerNorm/beta",
         "cls/predictions/output_bias", "cls/seq_relationship/output_weights",
         "cls/seq_relationship/output_bias"]
  if with_projection:
    out += ["bert/encoder/embedding_hidden_mapping_in/kernel",
            "bert/encoder/embedding_hidden_mapping_in/bias"]
  for g in range(groups):
    for n in range(inner):
      p = f"bert/encoder/transformer/group_{g}/inner_group_{n}/"
      for m in ("query", "key", "value"):
        out += [p + f"attention_1/self/{m}/kernel", p + f"attention_1/self/{m}/bias"]
      out += [p + "attention_1/output/dense/kernel", p + "attention_1/output/dense/bias",
              p + "LayerNorm/gamma", p + "LayerNorm/beta",
              p + "ffn_1/intermediate/dense/kernel", p + "ffn_1/intermediate/dense/bias",
              p + "ffn_1/intermediate/output/dense/kernel",
              p + "ffn_1/intermediate/output/dense/bias",
              p + "LayerNorm_1/gamma", p + "LayerNorm_1/beta"]
  return out


def hf_rename(name):
  """transformers' load_tf_weights_in_albert (modeling_albert.py) rules -> (HF key, transpose?)."""
  for old, new in [("module/", ""), ("ffn_1", "ffn"), ("bert/", "albert/"),
                   ("attention_1", "attention"), ("transform/", ""),
                   ("LayerNorm_1", "full_layer_layer_norm"), ("LayerNorm", "attention/LayerNorm"),
                   ("transformer/", ""), ("intermediate/dense/", ""),
                   ("ffn/intermediate/output/dense/", "ffn_output/"), ("/output/", "/"),
                   ("/self/", "/"), ("pooler/dense", "pooler"), ("cls/predictions", "predictions"),
                   ("predictions/attention", "predictions"), ("embeddings/attention", "embeddings"),
                   ("inner_group_", "albert_layers/"), ("group_", "albert_layer_groups/")]:
    name = name.replace(old, new)
  if "seq_relationship" in name:
    name = name.replace("seq_relationship/output_", "sop_classifier/classifier/")
    name = name.replace("weights", "weight")
  # HF walks the module tree and silently skips components it has no attribute for ("cls").
  parts = [p for p in name.split("/") if p != "cls"]
  leaf = {"kernel": "weight", "gamma": "weight", "beta": "bias", "output_bias": "bias"}.get(
      parts[-1], parts[-1])
  if parts[-1].endswith("_embeddings"):
    return ".".join(parts + ["weight"]), False
  return ".".join(parts[:-1] + [leaf]), parts[-1] == "kernel"


def tf_shape(name, cfg):
  v, e, h, i, p = cfg["vocab_size"], cfg["embedding_size"], cfg["hidden_size"], 20, 16
  table = {"word_embeddings": (v, e), "token_type_embeddings": (2, e),
           "position_embeddings": (p, e), "output_weights": (2, h), "output_bias": None}
  last = name.split("/")[-1]
  if last in table and table[last]:
    return table[last]
  if name == "cls/predictions/output_bias":
    return (v,)
  if name == "cls/seq_relationship/output_bias":
    return (2,)
  if "embeddings/LayerNorm" in name or "predictions/transform/LayerNorm" in name:
    return (e,)
  if "LayerNorm" in name:
    return (h,)
  io = {"embedding_hidden_mapping_in": (e, h), "predictions/transform/dense": (h, e),
        "intermediate/dense": (h, i), "output/dense": (i, h) if "ffn_1" in name else (h, h)}
  shape = next((s for k, s in io.items() if k in name), (h, h))
  return shape if last == "kernel" else shape[1:]


def write_tf_checkpoint(prefix, arrays, module_prefix=False, with_slots=True):
  names, values = [], []
  pre = "module/" if module_prefix else ""
  for name, value in arrays.items():
    names.append(pre + name)
    values.append(tf.constant(value))
    if with_slots:  # LAMB/AdamW slots and the step counter must be ignored
      names += [pre + name + "/adam_m", pre + name + "/adam_v"]
      values += [tf.constant(np.full_like(value, 7.0))] * 2
  names.append("global_step")
  values.append(tf.constant(np.int64(1000)))
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=values)


@pytest.mark.parametrize("module_prefix", [False, True], ids=["tar", "tfhub"])
@pytest.mark.parametrize("embedding_size", [8, 16], ids=["E!=H", "E==H"])
def test_load_tf_official_names(tmp_path, module_prefix, embedding_size):
  cfg = dict(vocab_size=40, embedding_size=embedding_size, hidden_size=16, num_hidden_layers=4,
             num_hidden_groups=2, inner_group_num=2, num_attention_heads=4, intermediate_size=20,
             max_position_embeddings=16, hidden_act="gelu", type_vocab_size=2,
             initializer_range=0.02, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
             net_structure_type=0, gap_size=0, num_memory_blocks=0, down_scale_factor=1)
  rng = np.random.default_rng(0)
  names = official_names(2, 2, with_projection=embedding_size != 16)
  arrays = {n: rng.normal(0, 0.2, tf_shape(n, cfg)).astype(np.float32) for n in names}
  prefix = str(tmp_path / "model.ckpt-best")
  write_tf_checkpoint(prefix, arrays, module_prefix)
  config_path = tmp_path / "albert_config.json"
  config_path.write_text(__import__("json").dumps(cfg))

  config, params = convert.load_tf(prefix, str(config_path))
  assert convert.ModelConfig.from_any(config).has_embedding_projection == (embedding_size != 16)

  # Every tensor lands where the HF name mapping puts it.
  expected = {}
  for name, value in arrays.items():
    key, transpose = hf_rename(name)
    expected[key] = value.T if transpose else value
  got = convert.hf_tensors_from_params(convert.ModelConfig.from_any(config), params)
  if embedding_size == 16:  # no projection in the official E == H model: identity in HF
    expected["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(16, dtype=np.float32)
    expected["albert.encoder.embedding_hidden_mapping_in.bias"] = np.zeros(16, np.float32)
  assert sorted(got) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)

  # ... and the outputs match transformers loaded with the same tensors.
  hf_cfg = transformers.AlbertConfig(
      vocab_size=40, embedding_size=embedding_size, hidden_size=16, num_hidden_layers=4,
      num_hidden_groups=2, inner_group_num=2, num_attention_heads=4, intermediate_size=20,
      max_position_embeddings=16, hidden_act="gelu_new", attn_implementation="eager")
  ref_model = transformers.AlbertForPreTraining(hf_cfg).eval()
  state = {k: torch.tensor(v) for k, v in expected.items()}
  state["predictions.decoder.weight"] = state["albert.embeddings.word_embeddings.weight"]
  state["predictions.decoder.bias"] = state["predictions.bias"]
  ref_model.load_state_dict(state, strict=True)
  ids, mask, types = inputs(seed=5)
  assert_close(our_outputs(config, params, ids, mask, types),
               hf_outputs(ref_model, ids, mask, types))


def test_load_tf_directory_and_unexpected_tensor(tmp_path):
  cfg = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
             num_attention_heads=4, intermediate_size=20, max_position_embeddings=16)
  names = official_names(1, 1, with_projection=True)
  rng = np.random.default_rng(1)
  arrays = {n: rng.normal(0, 0.2, tf_shape(n, cfg)).astype(np.float32) for n in names}
  arrays["bert/extra/kernel"] = np.zeros((3, 16), np.float32)  # no model has it
  (tmp_path / "albert_config.json").write_text(__import__("json").dumps(cfg))
  hub = tmp_path / "hub" / "variables"
  hub.mkdir(parents=True)
  write_tf_checkpoint(str(hub / "variables"), arrays, module_prefix=True, with_slots=False)
  with pytest.raises(ValueError, match="unexpected: tf:bert/extra/kernel"):
    convert.load_tf(str(tmp_path / "hub"), str(tmp_path / "albert_config.json"))
  _, params = convert.load_tf(str(tmp_path / "hub"), str(tmp_path / "albert_config.json"),
                              strict=False)
  np.testing.assert_array_equal(params["predictions"]["bias"],
                                arrays["cls/predictions/output_bias"])


TINY_OFFICIAL = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=20, max_position_embeddings=16)
# The official fine-tuning heads (classifier_utils.py, race_utils.py, squad_utils.py), H = 16.
OFFICIAL_HEADS = {
    "glue": {"output_weights": (3, 16), "output_bias": (3,)},
    "race": {"output_weights": (1, 16), "output_bias": (1,)},
    "squad_v1": {"cls/squad/output_weights": (2, 16), "cls/squad/output_bias": (2,)},
    "squad_v2": {"start_logits/dense/kernel": (16, 1), "start_logits/dense/bias": (1,),
                 "end_logits/dense_0/kernel": (32, 16), "end_logits/dense_0/bias": (16,),
                 "end_logits/LayerNorm/gamma": (16,), "end_logits/LayerNorm/beta": (16,),
                 "end_logits/dense_1/kernel": (16, 1), "end_logits/dense_1/bias": (1,),
                 "answer_class/dense_0/kernel": (32, 16), "answer_class/dense_0/bias": (16,),
                 "answer_class/dense_1/kernel": (16, 1)},
}


def fine_tuned_tf_checkpoint(directory, head, drop=()):
  """An official fine-tuned checkpoint: the encoder and pooler (fine-tuning graphs have no MLM or
  SOP head) and `head`'s variables, less `drop`."""
  rng = np.random.default_rng(2)
  names = [n for n in official_names(1, 1, with_projection=True) if not n.startswith("cls/")]
  arrays = {n: rng.normal(0, 0.2, tf_shape(n, TINY_OFFICIAL)).astype(np.float32) for n in names}
  arrays.update({n: rng.normal(0, 0.2, shape).astype(np.float32)
                 for n, shape in OFFICIAL_HEADS[head].items() if n not in drop})
  prefix = str(directory / "model.ckpt-best")
  write_tf_checkpoint(prefix, arrays)
  (directory / "albert_config.json").write_text(__import__("json").dumps(TINY_OFFICIAL))
  return prefix, arrays


@pytest.mark.parametrize("head", list(OFFICIAL_HEADS))
def test_load_tf_fine_tuned_heads(tmp_path, head):
  prefix, arrays = fine_tuned_tf_checkpoint(tmp_path, head)
  config, params = convert.load_tf(prefix, str(tmp_path / "albert_config.json"))
  assert "predictions" not in params and "sop_classifier" not in params
  ids = np.array([[2, 5, 7, 3, 0]])
  if head in ("glue", "race"):
    np.testing.assert_array_equal(params["classifier"]["classifier"]["kernel"],
                                  arrays["output_weights"].T)
    model = (modeling.AlbertForSequenceClassification(config, num_labels=3) if head == "glue"
             else modeling.AlbertForMultipleChoice(config))
    out = model.apply({"params": params}, ids if head == "glue" else ids[:, None])["logits"]
    pooled = modeling.AlbertModel(config).apply({"params": params["albert"]}, ids)[
        "pooled_output"]
    np.testing.assert_allclose(out.reshape(1, -1), pooled @ arrays["output_weights"].T
                               + arrays["output_bias"], atol=1e-5)
  elif head == "squad_v1":
    np.testing.assert_array_equal(params["qa_outputs"]["dense"]["bias"],
                                  arrays["cls/squad/output_bias"])
    out = modeling.AlbertForQuestionAnswering(config).apply({"params": params}, ids)
    assert out["start_logits"].shape == (1, 5)
  else:
    squad = params["squad"]
    np.testing.assert_array_equal(squad["end_dense_0"]["kernel"],
                                  arrays["end_logits/dense_0/kernel"])
    np.testing.assert_array_equal(squad["end_LayerNorm"]["scale"],
                                  arrays["end_logits/LayerNorm/gamma"])
    assert "bias" not in squad["answer_class_dense_1"]
    out = modeling.AlbertForQuestionAnsweringV2(config).apply({"params": params}, ids)
    assert out["cls_logits"].shape == (1,)


def test_load_tf_incomplete_fine_tuned_head_names_what_is_missing(tmp_path):
  (tmp_path / "v1").mkdir()
  prefix, _ = fine_tuned_tf_checkpoint(tmp_path / "v1", "glue", drop=("output_bias",))
  with pytest.raises(ValueError, match="missing: classifier.bias"):
    convert.load_tf(prefix, str(tmp_path / "v1" / "albert_config.json"))
  (tmp_path / "v2").mkdir()
  prefix, _ = fine_tuned_tf_checkpoint(tmp_path / "v2", "squad_v2",
                                       drop=("answer_class/dense_1/kernel",))
  with pytest.raises(ValueError, match=r"incomplete official SQuAD v2.0 head: it has "
                                       r"\['answer_class/dense_0/bias'.*\n  missing: "
                                       r"answer_class/dense_1/kernel"):
    convert.load_tf(prefix, str(tmp_path / "v2" / "albert_config.json"))


def test_load_tf_reads_through_the_file_layer(tmp_path):
  # TF's in-memory file system stands for a bucket (gs://): no local path is involved.
  from albert_jax import fileio  # pylint: disable=g-import-not-at-top
  local, arrays = fine_tuned_tf_checkpoint(tmp_path, "glue")
  root = f"ram://load_tf_{os.getpid()}"
  for name in os.listdir(tmp_path):
    fileio.copy(str(tmp_path / name), f"{root}/{name}")
  config, params = convert.load_tf(f"{root}/model.ckpt-best", f"{root}/albert_config.json")
  np.testing.assert_array_equal(params["classifier"]["classifier"]["bias"],
                                arrays["output_bias"])
  from albert_jax.train import checkpoint_kinds  # pylint: disable=g-import-not-at-top
  source = checkpoint_kinds.read(f"{root}/model.ckpt-best", kind="tf")  # its config found beside
  assert source.kind == "tf" and "classifier" in source.params


def _save_layout(model, tmp_path, name):
  path = tmp_path / name
  model.save_pretrained(path)
  return str(path)


def test_hf_layouts_and_missing_heads(tmp_path, caplog):
  pre = hf_model(SMALL | dict(), seed=0)
  ids, mask, types = inputs(seed=6)
  ref = hf_outputs(pre, ids, mask, types)
  full_cfg, full_params = convert.load_hf(_save_layout(pre, tmp_path, "pre"))

  # AlbertModel layout (no "albert." prefix, no MLM/SOP heads).
  base_dir = _save_layout(pre.albert, tmp_path, "base")
  with pytest.raises(ValueError) as err:
    convert.load_hf(base_dir)
  message = str(err.value)
  assert "allow_missing_heads" in message and "missing: predictions.bias" in message
  assert "missing: sop_classifier.classifier.weight" in message
  config, params = convert.load_hf(base_dir, allow_missing_heads=True)
  assert "initialized them randomly" in caplog.text
  out = our_outputs(config, params, ids, mask, types)
  np.testing.assert_allclose(out["sequence_output"], ref["sequence_output"], atol=1e-5)
  np.testing.assert_allclose(out["pooled_output"], ref["pooled_output"], atol=1e-5)

  # AlbertForMaskedLM layout: no pooler and no SOP head.
  mlm = transformers.AlbertForMaskedLM(pre.config)
  mlm.albert.load_state_dict(pre.albert.state_dict(), strict=False)
  mlm.predictions.load_state_dict(pre.predictions.state_dict())
  mlm_dir = _save_layout(mlm, tmp_path, "mlm")
  with pytest.raises(ValueError, match="missing: albert.pooler.weight"):
    convert.load_hf(mlm_dir)
  config, params = convert.load_hf(mlm_dir, allow_missing_heads=True)
  out = our_outputs(config, params, ids, mask, types)
  np.testing.assert_allclose(out["mlm_logits"], ref["mlm_logits"], atol=1e-5)


def test_pytorch_bin_with_position_ids_and_bad_shapes(tmp_path):
  pre = hf_model(SMALL, seed=1)
  state = dict(pre.state_dict())
  state["albert.embeddings.position_ids"] = torch.arange(16)[None]
  os.makedirs(tmp_path / "old")
  torch.save(state, tmp_path / "old" / "pytorch_model.bin")
  pre.config.to_json_file(tmp_path / "old" / "config.json")
  ids, mask, types = inputs(seed=7)
  config, params = convert.load_hf(str(tmp_path / "old"))
  assert_close(our_outputs(config, params, ids, mask, types), hf_outputs(pre, ids, mask, types))

  # Every problem is listed in one error.
  state["albert.pooler.weight"] = torch.zeros(3, 3)
  state["something.else"] = torch.zeros(1)
  del state["predictions.dense.bias"]
  torch.save(state, tmp_path / "old" / "pytorch_model.bin")
  with pytest.raises(ValueError) as err:
    convert.load_hf(str(tmp_path / "old"))
  message = str(err.value)
  assert "missing: predictions.dense.bias" in message
  assert "shape mismatch: albert.pooler.weight" in message
  assert "unexpected: something.else" in message


def test_own_checkpoint_round_trip_and_cli(tmp_path):
  pre = hf_model(SMALL, seed=2)
  hf_dir = _save_layout(pre, tmp_path, "hf")
  ckpt = tmp_path / "ckpt"
  out_hf = tmp_path / "back"
  run = lambda *a: subprocess.run([sys.executable, "-m", "albert_jax.convert", *a], check=True,
                                  capture_output=True, text=True)
  run(f"--hf_dir={hf_dir}", f"--out_checkpoint={ckpt}")
  run(f"--checkpoint={ckpt}", f"--out_hf={out_hf}")
  config, params = convert.load_checkpoint(str(ckpt))
  ids, mask, types = inputs(seed=8)
  ref = hf_outputs(pre, ids, mask, types)
  assert_close(our_outputs(config, params, ids, mask, types), ref)
  back = transformers.AlbertForPreTraining.from_pretrained(str(out_hf),
                                                           attn_implementation="eager")
  assert_close(our_outputs(config, params, ids, mask, types), hf_outputs(back.eval(), ids, mask,
                                                                         types))
  bad = subprocess.run([sys.executable, "-m", "albert_jax.convert", "--hf_dir", str(tmp_path)],
                       capture_output=True, text=True)
  assert bad.returncode != 0 and "--out_hf" in bad.stderr


def _save_best(workdir, params, task):
  """A best/ exactly as fine-tuning writes it (params, model_config.json, task.json)."""
  config = ml_collections.ConfigDict({"model": TASK_CONFIG, "task": task, "model_name": "tiny"})
  files = finetune_files.RunFiles(str(workdir))
  files.save_best(config, params, {"step": 1, "metrics": {}})
  return files.best_dir


def test_cli_exports_a_finetuned_best_with_its_task_head(tmp_path, capsys):
  # RACE's 1-output classifier is STS-B's shape too: only best/task.json tells the class.
  model = modeling.AlbertForMultipleChoice(TASK_CONFIG)
  params = random_params(model, (1, 4, 9), seed=21)
  best = _save_best(tmp_path / "race", params, {"family": "race"})
  convert.main([f"--checkpoint={best}", f"--out_hf={tmp_path / 'hf'}"])
  assert "wrote Hugging Face AlbertForMultipleChoice" in capsys.readouterr().out
  loaded, info = transformers.AlbertForMultipleChoice.from_pretrained(
      str(tmp_path / "hf"), output_loading_info=True, attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, mask, types = (a.reshape(2, 4, 9) for a in inputs(seed=22, batch=8))
  ours = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types)
  with torch.no_grad():
    ref = loaded.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours["logits"]), ref, atol=1e-5, rtol=0)

  # The same weights without task.json: an error that says what is missing, nothing written.
  convert.save_checkpoint(TASK_CONFIG, params, str(tmp_path / "bare"))
  capsys.readouterr()
  assert convert.main([f"--checkpoint={tmp_path / 'bare'}", f"--out_hf={tmp_path / 'hf2'}"]) == 2
  assert re.search("1 output.*task.json", capsys.readouterr().err)
  assert not os.path.exists(tmp_path / "hf2" / "model.safetensors")


def test_cli_squad_v2_refuses_unless_encoder_only(tmp_path, capsys):
  params = random_params(modeling.AlbertForQuestionAnsweringV2(TASK_CONFIG), (1, 9), seed=23)
  best = _save_best(tmp_path / "squad2", params, {"family": "squad", "version": "2.0"})
  assert convert.main([f"--checkpoint={best}", f"--out_hf={tmp_path / 'hf'}"]) == 2
  assert re.search("'squad'.*no Hugging Face counterpart", capsys.readouterr().err)
  convert.main([f"--checkpoint={best}", f"--out_hf={tmp_path / 'hf'}", "--encoder_only"])
  assert "wrote Hugging Face AlbertModel" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    convert.main([f"--checkpoint={best}", f"--out_checkpoint={tmp_path / 'c'}",
                  "--encoder_only"])


def test_export_never_drops_a_tensor_silently(tmp_path, caplog):
  model = modeling.AlbertForSequenceClassification(TASK_CONFIG, num_labels=3)
  params = random_params(model, (1, 9), seed=24)
  task = {"family": "glue", "name": "mnli"}
  convert.save_hf(TASK_CONFIG, params, str(tmp_path / "hf"), task=task)

  # An HF classifier read with allow_missing_heads (as warm starts do) has fresh pretraining
  # heads besides the imported classifier; exporting it again names what the class cannot hold.
  config, both = convert.load_hf(str(tmp_path / "hf"), allow_missing_heads=True)
  assert {"predictions", "sop_classifier", "classifier"} <= set(both)
  np.testing.assert_array_equal(both["classifier"]["classifier"]["kernel"],
                                params["classifier"]["classifier"]["kernel"])
  caplog.clear()
  assert convert.save_hf(config, both, str(tmp_path / "again"),
                         task=task).name == "AlbertForSequenceClassification"
  assert "not exported" in caplog.text and "predictions/bias" in caplog.text

  with pytest.raises(ValueError, match=r"top-level tree\(s\) \['extra'\]"):
    convert.save_hf(TASK_CONFIG, dict(params, extra={"w": np.zeros(2)}), str(tmp_path / "x"))
  extra_leaf = dict(params, classifier={"classifier": dict(params["classifier"]["classifier"],
                                                           scale=np.ones(3, np.float32))})
  with pytest.raises(ValueError, match="classifier/classifier/scale"):
    convert.save_hf(TASK_CONFIG, extra_leaf, str(tmp_path / "x"), task=task)
  with pytest.raises(ValueError, match="GLUE task 'rte' has 2"):
    convert.save_hf(TASK_CONFIG, params, str(tmp_path / "x"), task={"family": "glue",
                                                                     "name": "rte"})
  with pytest.raises(ValueError, match="task family 'squad' does not match"):
    convert.save_hf(TASK_CONFIG, params, str(tmp_path / "x"), task={"family": "squad"})
  no_pooler = dict(params, albert={k: v for k, v in params["albert"].items() if k != "pooler"})
  with pytest.raises(ValueError, match="params lack albert/pooler/kernel"):
    convert.save_hf(TASK_CONFIG, no_pooler, str(tmp_path / "x"), task=task)
