"""Every checkpoint kind read by every tool that reads checkpoints (convert --checkpoint, predict
--checkpoint, the warm starts' init_from), through checkpoint_kinds.read, and its fallback rule.

The kinds are made by the code that writes them: a tiny pretraining run (its workdir), our own
checkpoint and a Hugging Face directory of its parameters, a fine-tuning workdir written by
finetune_files and the Checkpointer, and official TF1 checkpoints (a release-style prefix with
albert_config.json beside it, a TF-Hub module with assets/albert_config.json).
"""

import json
import os
import re
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from albert_jax.inference import loading
from albert_jax.inference import predict
from albert_jax.interop import convert
from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig
from albert_jax.train import checkpoint_kinds
from albert_jax.train import checkpoints
from albert_jax.train import finetune
from albert_jax.train import finetune_files
from albert_jax.train import pretrain
from albert_jax.train import warm_start

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.test_checkpoint_restore import garble  # noqa: E402
from tests.test_convert import official_names, tf_shape, write_tf_checkpoint  # noqa: E402
from tests.test_hf_parity import hf_outputs, inputs, our_outputs, random_params  # noqa: E402
from tests.trainer_fixtures import tiny_config  # noqa: E402

VOCAB = 4000  # the session SentencePiece fixture's size
TF_CONFIG = dict(vocab_size=VOCAB, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                 num_attention_heads=4, intermediate_size=20, max_position_embeddings=16)
MNLI = {"family": "glue", "name": "mnli"}
KINDS = ["pretraining_workdir", "checkpoint", "hf", "finetuning_workdir", "tf_prefix", "tf_hub"]
DETECTED = {"pretraining_workdir": "workdir", "checkpoint": "checkpoint", "hf": "hf",
            "finetuning_workdir": "workdir", "tf_prefix": "tf", "tf_hub": "tf"}


def state_params(workdir, step):
  """The params of a train-state step, read with orbax directly (independently of the readers)."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.StandardCheckpointer().restore(str(path))["params"]


def tf_arrays(seed):
  rng = np.random.default_rng(seed)
  return {n: rng.normal(0, 0.2, tf_shape(n, TF_CONFIG)).astype(np.float32)
          for n in official_names(1, 1, with_projection=True)}


@pytest.fixture(scope="module")
def made(tmp_path_factory, static_records):
  """{kind: (path, model config, expected params, expected task)}; "root" the directory."""
  root = tmp_path_factory.mktemp("kinds")
  config = tiny_config(str(static_records / "*.tfrecord"), total_steps=2,
                       checkpoint_every_steps=1)
  pretrain.run(config, str(root / "pretrain"))
  cfg = ModelConfig.from_any(config.model)
  params = state_params(root / "pretrain", 2)
  out = {"root": root, "pretraining_workdir": (root / "pretrain", cfg, params, None)}
  convert.save_checkpoint(cfg, params, str(root / "checkpoint"))
  out["checkpoint"] = (root / "checkpoint", cfg, params, None)
  convert.save_hf(cfg, params, str(root / "hf"))
  # Hugging Face configs have fields of their own (e.g. the E -> H projection always present).
  out["hf"] = (root / "hf", ModelConfig.from_any(convert.load_hf(str(root / "hf"))[0]), params,
               None)

  # A fine-tuning workdir as fine-tuning writes it: best/ (with task.json) and checkpoints/.
  head = random_params(modeling.AlbertForSequenceClassification(cfg, num_labels=3), (1, 9), 5)
  tuned = {"albert": params["albert"], "classifier": head["classifier"]}
  run_config = ml_collections.ConfigDict({"model": cfg.to_config_dict().to_dict(), "task": MNLI,
                                          "model_name": "tiny"})
  finetune_files.RunFiles(str(root / "finetune")).save_best(run_config, tuned,
                                                            {"step": 1, "metrics": {}})
  ckpt = checkpoints.Checkpointer(str(root / "finetune"), 1, 2, model_config=cfg)
  ckpt.save(1, {"params": jax.tree.map(lambda x: x + 1.0, tuned)})  # not the best: not read
  ckpt.close()
  out["finetuning_workdir"] = (root / "finetune", cfg, tuned, MNLI)

  (root / "tf").mkdir()
  (root / "tf" / "albert_config.json").write_text(json.dumps(TF_CONFIG))
  write_tf_checkpoint(str(root / "tf" / "model.ckpt-best"), tf_arrays(1))
  tf_cfg, tf_params = convert.load_tf(str(root / "tf" / "model.ckpt-best"),
                                      str(root / "tf" / "albert_config.json"))
  out["tf_prefix"] = (root / "tf" / "model.ckpt-best", ModelConfig.from_any(tf_cfg), tf_params,
                      None)
  (root / "hub" / "variables").mkdir(parents=True)
  (root / "hub" / "assets").mkdir()
  (root / "hub" / "assets" / "albert_config.json").write_text(json.dumps(TF_CONFIG))
  write_tf_checkpoint(str(root / "hub" / "variables" / "variables"), tf_arrays(2),
                      module_prefix=True, with_slots=False)
  hub_cfg, hub_params = convert.load_tf(str(root / "hub"),
                                        str(root / "hub" / "assets" / "albert_config.json"))
  out["tf_hub"] = (root / "hub", ModelConfig.from_any(hub_cfg), hub_params, None)
  return out


def assert_same_params(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(np.testing.assert_array_equal, got, want)


def assert_loads_in_transformers(out_dir, cfg, params, task):
  """The exported directory, loaded by its transformers class, computes what our model does."""
  name = json.loads((out_dir / "config.json").read_text())["architectures"][0]
  hf, info = getattr(transformers, name).from_pretrained(str(out_dir), output_loading_info=True,
                                                         attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, mask, types = inputs(seed=3, vocab=cfg.vocab_size)
  if task is None:
    assert name == "AlbertForPreTraining"
    ours, ref = our_outputs(cfg, params, ids, mask, types), hf_outputs(hf.eval(), ids, mask, types)
    keys = ("sequence_output", "mlm_logits", "sop_logits")
  else:
    assert name == "AlbertForSequenceClassification"
    # The labels come from best/task.json: the fine-tuning task was read beside the weights.
    assert hf.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    model = modeling.AlbertForSequenceClassification(cfg, num_labels=3)
    ours = {"logits": np.asarray(model.apply({"params": params}, ids, attention_mask=mask,
                                             token_type_ids=types)["logits"])}
    with torch.no_grad():
      ref = {"logits": hf.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 token_type_ids=torch.tensor(types)).logits.numpy()}
    keys = ("logits",)
  for key in keys:
    np.testing.assert_allclose(ours[key], ref[key], atol=1e-5, rtol=0, err_msg=key)


@pytest.mark.parametrize("kind", KINDS)
def test_detect(made, kind):
  assert checkpoint_kinds.detect(str(made[kind][0])) == DETECTED[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_warm_start_reads_every_kind(made, kind):
  path, cfg, params, _ = made[kind]
  init_from = warm_start.default_config()
  init_from.path = str(path)
  source_cfg, source = warm_start.read_source(init_from)
  assert source_cfg == cfg
  assert_same_params(source, params)
  if kind == "pretraining_workdir":
    # Fine-tuning's init_from takes the architecture of the workdir's saved model config.
    tune = ml_collections.ConfigDict({"model": ModelConfig().to_config_dict().to_dict(),
                                      "model_from_init": True})
    assert finetune.resolve_model_config(tune, source_cfg).model.hidden_size == cfg.hidden_size
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                          params)
    assert_same_params(warm_start.load_params(init_from, cfg, target), params)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_loads_every_kind(made, kind, spm_model):
  path, cfg, params, task = made[kind]
  loaded = loading.load(str(path), spm_model=spm_model)
  assert loaded.model_config == cfg
  assert_same_params(loaded.params, params)
  assert (loaded.task.to_dict() if loaded.task is not None else None) == task


@pytest.mark.parametrize("kind", KINDS)
def test_convert_exports_every_kind(made, kind, tmp_path, capsys):
  path, cfg, params, task = made[kind]
  convert.main([f"--checkpoint={path}", f"--out_hf={tmp_path / 'hf'}"])
  assert "wrote Hugging Face" in capsys.readouterr().out
  assert_loads_in_transformers(tmp_path / "hf", cfg, params, task)
  convert.main([f"--checkpoint={path}", f"--out_checkpoint={tmp_path / 'own'}"])
  config, own = convert.load_checkpoint(str(tmp_path / "own"))
  assert ModelConfig.from_any(config) == cfg
  assert_same_params(own, params)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_generate_and_score_on_every_kind(made, kind, spm_model, capsys):
  """The masked LM's modes read every kind; the output is that of the API on the same model (a
  fine-tuned classifier has no MLM head: one line naming it)."""
  from albert_jax.inference import generate, score  # pylint: disable=g-import-not-at-top
  from albert_jax.inference.mlm import MaskedLM  # pylint: disable=g-import-not-at-top
  path = str(made[kind][0])
  common = [f"--checkpoint={path}", f"--spm_model={spm_model}", "--format=jsonl"]
  text = "the function returns a new list ."
  capsys.readouterr()
  code = predict.main(["score", text, *common])
  out, err = capsys.readouterr()
  if kind == "finetuning_workdir":
    assert code == 2 and "fine-tuned for glue (no MLM head)" in err and len(err.splitlines()) == 1
    return
  lm = MaskedLM.from_loaded(loading.load(path, spm_model=spm_model))
  assert code == 0 and json.loads(out)["pll"] == pytest.approx(score.score(lm, [text])[0].pll)
  code = predict.main(["generate", "the [MASK*2] returns a new list .", "--greedy", *common])
  want = generate.infill(lm, ["the [MASK*2] returns a new list ."],
                         generate.DecodeSettings(greedy=True))[0]
  assert code == 0 and json.loads(capsys.readouterr().out)["text"] == want.text


def test_predict_fill_mask_on_a_pretraining_workdir_needs_no_config(made, spm_model, capsys):
  path = made["pretraining_workdir"][0]
  code = predict.main(["fill-mask", "the [MASK] returns a new list .", f"--checkpoint={path}",
                       f"--spm_model={spm_model}", "--top_k=2"])
  out = capsys.readouterr().out
  assert code == 0 and out.splitlines()[0] == "the [MASK] returns a new list ."
  assert len(out.splitlines()) == 2 and out.splitlines()[1].startswith("  [MASK] 1: ")


# ----------------------------------------------------------------------------------------------
# The fallback rule: the newest readable step; unreadable ones skipped, counted and reported.
# ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_reader_falls_back_over_an_unreadable_step(made, tmp_path, spm_model, caplog,
                                                         capsys):
  workdir = tmp_path / "run"
  shutil.copytree(made["pretraining_workdir"][0], workdir)
  garble(workdir, 2, keep_metadata=False)
  step1 = state_params(made["pretraining_workdir"][0], 1)
  init_from = warm_start.default_config()
  init_from.path = str(workdir)
  readers = {
      "warm start": lambda: warm_start.read_source(init_from)[1],
      "predict": lambda: loading.load(str(workdir), spm_model=spm_model).params,
      "convert": lambda: (convert.main([f"--checkpoint={workdir}",
                                        f"--out_checkpoint={tmp_path / 'own'}"]),
                          convert.load_checkpoint(str(tmp_path / "own"))[1])[1],
  }
  for name, read in readers.items():
    caplog.clear()
    assert_same_params(read(), step1)
    assert "checkpoint step 2 in" in caplog.text and "cannot be read" in caplog.text, name
    assert "read checkpoint step 1" in caplog.text, name
    assert "after skipping 1 unreadable newer step(s): [2]" in caplog.text, name
  # Another run's workdir is only read: nothing is moved aside.
  assert os.path.isdir(workdir / "checkpoints" / "2")
  assert not os.path.exists(workdir / "corrupt_checkpoints")

  garble(workdir, 1, keep_metadata=False)
  with pytest.raises(checkpoint_kinds.CheckpointError,
                     match=r"init_from.path.*steps \[2, 1\] are unreadable"):
    warm_start.read_source(init_from)
  code = predict.main(["fill-mask", "a [MASK] .", f"--checkpoint={workdir}",
                       f"--spm_model={spm_model}"])
  err = capsys.readouterr().err
  assert code == 2 and r"steps [2, 1] are unreadable" in err and len(err.splitlines()) == 1
  # The command line's boundary: one line naming the flag, exit status 2, nothing written.
  assert convert.main([f"--checkpoint={workdir}", f"--out_hf={tmp_path / 'none'}"]) == 2
  err = capsys.readouterr().err
  assert re.search(r"--checkpoint.*steps \[2, 1\]", err) and len(err.splitlines()) == 1
  assert not os.path.exists(tmp_path / "none")


def test_newest_readable_counts_and_reports(caplog, tmp_path):
  def read(step):
    if step > 2:
      raise OSError(f"step {step} is broken")
    return step * 10

  assert checkpoints.newest_readable(str(tmp_path), [1, 2, 3, 4], read) == (2, 20)
  assert caplog.text.count("cannot be read") == 2
  assert "after skipping 2 unreadable newer step(s): [4, 3]" in caplog.text
  assert checkpoints.newest_readable(str(tmp_path), [], read) is None
  with pytest.raises(checkpoints.NoReadableStep, match=r"steps \[4, 3\] are unreadable. hint"):
    checkpoints.newest_readable(str(tmp_path), [3, 4], read, hint="hint")


# ----------------------------------------------------------------------------------------------
# What cannot be read says why, naming where the path came from.
# ----------------------------------------------------------------------------------------------


def test_a_workdir_without_model_config(made, tmp_path, spm_model, capsys):
  workdir = tmp_path / "old"
  shutil.copytree(made["pretraining_workdir"][0], workdir)
  os.remove(workdir / "model_config.json")  # as workdirs were written before it existed
  source = checkpoint_kinds.read(str(workdir))
  assert source.model_config is None and source.step == 2
  assert convert.main([f"--checkpoint={workdir}", f"--out_hf={tmp_path / 'hf'}"]) == 2
  assert "model_config.json" in capsys.readouterr().err
  with pytest.raises(loading.InputError, match="pass --config"):
    loading.load(str(workdir), spm_model=spm_model)
  config = ml_collections.ConfigDict({"model": made["pretraining_workdir"][1].to_config_dict()})
  loaded = loading.load(str(workdir), config=config, spm_model=spm_model)
  assert loaded.model_config == made["pretraining_workdir"][1]


def test_tf_checkpoint_without_albert_config(made, tmp_path):
  prefix = tmp_path / "model.ckpt"
  write_tf_checkpoint(str(prefix), tf_arrays(1))
  init_from = warm_start.default_config()
  init_from.path = str(prefix)
  with pytest.raises(checkpoint_kinds.CheckpointError,
                     match=r"official TF checkpoint.*config field 'init_from.albert_config'"):
    warm_start.read_source(init_from)
  init_from.albert_config = str(made["root"] / "tf" / "albert_config.json")
  _, params = warm_start.read_source(init_from)
  assert_same_params(params, made["tf_prefix"][2])


def test_not_a_checkpoint(tmp_path):
  with pytest.raises(checkpoint_kinds.CheckpointError, match="not a run's workdir"):
    checkpoint_kinds.read(str(tmp_path), field="--checkpoint")
  with pytest.raises(checkpoint_kinds.CheckpointError, match="does not exist"):
    checkpoint_kinds.read(str(tmp_path / "nothing"))
  with pytest.raises(checkpoint_kinds.CheckpointError, match="allowed auto, checkpoint"):
    checkpoint_kinds.read(str(tmp_path), kind="orbax")
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(checkpoint_kinds.CheckpointError, match="holds no checkpoint yet"):
    checkpoint_kinds.read(str(tmp_path))
