"""Checkpoint interop: Hugging Face and official TF1 ALBERT checkpoints <-> albert_jax parameters.

    config, params = load_hf(hf_dir)                      # config.json + safetensors / .bin
    config, params = load_tf(ckpt_prefix, albert_config_json)
    save_hf(config, params, out_dir)                      # from_pretrained(out_dir) of the class
    save_checkpoint(config, params, dir) / load_checkpoint(dir)   # our own (orbax) format

`params` is the AlbertForPreTraining tree (see modeling.py) or the tree of a fine-tuning model.
Loading is strict and a fine-tuned source loads as our task model (tensors.py); official TF1
checkpoints are read by tf_checkpoint.py. Exporting writes the transformers class that holds the
tree (`hf_classes.hf_architecture`); nothing is left out silently. Config fields missing from a
config.json / albert_config.json take the source's own defaults (the xxlarge shape), as
transformers and the official code do. docs/interop.md has the details.

CLI:
    python -m albert_jax.convert --hf_dir=DIR --out_checkpoint=OUT
    python -m albert_jax.convert --tf_checkpoint=PREFIX --albert_config=JSON --out_hf=OUT
    python -m albert_jax.convert --checkpoint=DIR --out_hf=OUT [--encoder_only]

--checkpoint takes every kind of checkpoint (albert_jax.train.checkpoint_kinds): a pretraining
workdir (its newest readable step), a fine-tuning workdir (its best/), our own checkpoint, a Hugging
Face directory, an official TF checkpoint or TF-Hub module (with the albert_config.json beside it or
--albert_config).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence

from absl import flags
import ml_collections
import numpy as np

from albert_jax import command_line
from albert_jax import fileio
from albert_jax.command_line import InputError
from albert_jax.interop import names
from albert_jax.interop import hf_classes
from albert_jax.model.config import ModelConfig
# The tree <-> tensors core, the official TF1 reader and our own format (which lives with the
# other orbax checkpoints) are this module's API too.
from albert_jax.interop.tensors import (Params, abstract_params,  # noqa: F401
                                        check_weights_fit, hf_tensors_from_params, init_params,
                                        params_from_hf_tensors)
from albert_jax.interop.tf_checkpoint import config_from_official, load_tf  # noqa: F401
from albert_jax.train.checkpoints import (load_checkpoint, read_task, restore_tree,  # noqa: F401
                                          save_checkpoint)

# HF hidden_act -> ours. HF "gelu" is the exact erf form; the official "gelu" is the tanh form.
_HF_ACT_TO_OURS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
                   "gelu_fast": "gelu", "relu": "relu", "tanh": "tanh", "silu": "silu",
                   "swish": "silu"}
_OURS_ACT_TO_HF = {"gelu": "gelu_new", "gelu_new": "gelu_new", "gelu_exact": "gelu",
                   "relu": "relu", "tanh": "tanh", "silu": "silu"}
# Fields shared by name by the official AlbertConfig, HF's AlbertConfig and ours.
# transformers' AlbertConfig defaults (configuration_albert.py, the same in 4.x and 5.x: the
# xxlarge shape). transformers fills a field missing from config.json with these, so we must too:
# ModelConfig's defaults are ALBERT-base's, and a model read with them computes something else.
_HF_DEFAULTS = dict(vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                    num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384,
                    inner_group_num=1, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, max_position_embeddings=512,
                    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
                    classifier_dropout_prob=0.1)

# ------------------------------------------------------------------------------------------------
# Hugging Face
# ------------------------------------------------------------------------------------------------

def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
  """Our config of an HF config.json: transformers' AlbertConfig defaults overlaid with the JSON."""
  # null in the JSON (e.g. classifier_dropout_prob) means "not set": the default applies.
  merged = dict(_HF_DEFAULTS, **{k: v for k, v in hf_config.items()
                                 if k in _HF_DEFAULTS and v is not None})
  act = merged["hidden_act"]
  if act not in _HF_ACT_TO_OURS:
    raise ValueError(f"config.json field 'hidden_act'={act!r} is not supported; "
                     f"allowed: {sorted(_HF_ACT_TO_OURS)}")
  cfg = ModelConfig(**{k: merged[k] for k in names.CONFIG_FIELDS}, hidden_act=_HF_ACT_TO_OURS[act],
                    layer_norm_eps=merged["layer_norm_eps"],
                    classifier_dropout_prob=merged["classifier_dropout_prob"],
                    # HF always has the E -> H projection, even when E == H.
                    use_embedding_projection=True, layer_sharing="all")
  names.check_hf_groups(cfg, "config.json")
  return cfg


def config_to_hf(cfg: ModelConfig,
                 arch: Optional[hf_classes.HfArchitecture] = None) -> dict[str, Any]:
  """The config.json of `cfg` for the class `arch` (default AlbertForPreTraining)."""
  arch = arch or hf_classes.HfArchitecture("AlbertForPreTraining")
  names.check_hf_groups(cfg, "export to Hugging Face")
  groups, inner = names.hf_layout(cfg)
  out = {k: getattr(cfg, k) for k in names.CONFIG_FIELDS}
  out.update(num_hidden_groups=groups, inner_group_num=inner,
             hidden_act=_OURS_ACT_TO_HF[cfg.hidden_act], layer_norm_eps=cfg.layer_norm_eps,
             classifier_dropout_prob=cfg.classifier_dropout_prob, model_type="albert",
             architectures=[arch.name], pad_token_id=0, bos_token_id=2,
             eos_token_id=3, tie_word_embeddings=True)
  if arch.num_labels is not None:
    # transformers derives num_labels from id2label (LABEL_i is its own name for unnamed labels).
    labels = arch.labels or tuple(f"LABEL_{i}" for i in range(arch.num_labels))
    out.update(num_labels=arch.num_labels, id2label={str(i): l for i, l in enumerate(labels)},
               label2id={l: i for i, l in enumerate(labels)})
  if arch.problem_type:
    out["problem_type"] = arch.problem_type
  return out


def _read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  files = [f for f in ("model.safetensors.index.json", "model.safetensors",
                       "pytorch_model.bin.index.json", "pytorch_model.bin")
           if os.path.exists(os.path.join(hf_dir, f))]
  if not files:
    raise FileNotFoundError(f"{hf_dir} has no model.safetensors or pytorch_model.bin "
                            "(nor a sharded index of them)")
  path = os.path.join(hf_dir, files[0])
  if path.endswith(".index.json"):
    shards = sorted(set(fileio.read_json(path)["weight_map"].values()))
    paths = [os.path.join(hf_dir, s) for s in shards]
  else:
    paths = [path]
  tensors = {}
  for p in paths:
    if p.endswith(".safetensors"):
      try:
        tensors.update(load_file(p))
      except Exception as e:  # pylint: disable=broad-except  (safetensors' own error types)
        raise InputError(f"{p}: not a readable safetensors file ({e})") from None
    else:
      try:
        import torch  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError(f"reading {p} needs torch (pip install torch); safetensors "
                          "checkpoints need only the safetensors package") from e
      state = torch.load(p, map_location="cpu", weights_only=True)
      tensors.update({k: v.float().numpy() if v.is_floating_point() else v.numpy()
                      for k, v in state.items()})
  # AlbertModel.save_pretrained writes keys without the "albert." prefix.
  if not any(k.startswith("albert.") for k in tensors):
    tensors = {("albert." + k if k.split(".")[0] in ("embeddings", "encoder", "pooler") else k): v
               for k, v in tensors.items()}
  return tensors


def load_hf(hf_dir: str, *, allow_missing_heads: bool = False, strict: bool = True,
            seed: int = 0) -> tuple[ml_collections.ConfigDict, Params]:
  """Loads a Hugging Face ALBERT directory: AlbertForPreTraining/AlbertModel/AlbertForMaskedLM,
  or a fine-tuned AlbertFor{Sequence,Token}Classification/MultipleChoice/QuestionAnswering (the
  tree of our matching task model, see params_from_hf_tensors)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: not a Hugging Face model directory")
  cfg = config_from_hf(fileio.read_json(config_path))
  params = params_from_hf_tensors(cfg, _read_hf_tensors(hf_dir),
                                  allow_missing_heads=allow_missing_heads, strict=strict,
                                  seed=seed, source=hf_dir)
  return cfg.to_config_dict(), params


def save_hf(config: Any, params: Params, out_dir: str, *,
            task: Optional[Mapping[str, Any]] = None,
            encoder_only: bool = False) -> hf_classes.HfArchitecture:
  """Writes config.json + model.safetensors loadable by the transformers class that holds `params`.

  `task`: the fine-tuning task section (best/task.json's "task"), for the class and labels of a
  `classifier` head (see hf_classes.hf_architecture). `encoder_only`: write the encoder alone, as
  AlbertModel.
  Returns the class written.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg = ModelConfig.from_any(config)
  arch = hf_classes.hf_architecture(params, task, encoder_only=encoder_only)
  tensors = hf_tensors_from_params(cfg, params, arch)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config_to_hf(cfg, arch), f, indent=2, sort_keys=True)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  return arch


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def _read_any(path: str, albert_config: Optional[str], allow_missing_heads: bool
              ) -> tuple[ModelConfig, Params, Optional[dict[str, Any]]]:
  """(model config, params, fine-tuning task or None) of --checkpoint, a checkpoint of any kind."""
  # Imported here: checkpoint_kinds reads Hugging Face and TF checkpoints through this module.
  from albert_jax.train import checkpoint_kinds  # pylint: disable=g-import-not-at-top
  source = checkpoint_kinds.read(path, albert_config=albert_config or "",
                                 allow_missing_heads=allow_missing_heads, field="--checkpoint")
  if source.model_config is None:
    raise checkpoint_kinds.CheckpointError(
        f"--checkpoint={path!r} is a workdir from before runs saved their model config: write the "
        "run's config.model to its model_config.json (albert_jax.train.checkpoints."
        "write_model_config) and convert again")
  check_weights_fit(source.model_config, source.params,
                    f"--checkpoint={path} (model_config.json and its weights)")
  # A fine-tuned best/ has its task beside it: which HF class a `classifier` is, its labels.
  return source.model_config, source.params, source.task


PROG = "python -m albert_jax.convert"
_SOURCES = ("hf_dir", "tf_checkpoint", "checkpoint")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (defined only when it is parsed: `command_line.parse`)."""
  for name, help_text in (
      ("hf_dir", "Hugging Face ALBERT directory"),
      ("tf_checkpoint", "official TF1 checkpoint prefix or TF-Hub module dir"),
      ("checkpoint", "a checkpoint of any kind: a pretraining or fine-tuning workdir, an "
                     "albert_jax checkpoint, a Hugging Face directory, an official TF checkpoint "
                     "or TF-Hub module (see albert_jax.train.checkpoint_kinds)"),
      ("albert_config", "albert_config.json (with --tf_checkpoint, or --checkpoint of an "
                        "official TF checkpoint without one beside it)"),
      ("out_hf", "write a Hugging Face directory here"),
      ("out_checkpoint", "write an albert_jax checkpoint here")):
    flags.DEFINE_string(name, None, help_text, flag_values=flag_values)
  flags.DEFINE_bool("allow_missing_heads", False, "initialize heads absent from the source "
                    "instead of failing", flag_values=flag_values)
  flags.DEFINE_bool("encoder_only", False, "with --out_hf: write only the encoder (AlbertModel), "
                    "e.g. for the SQuAD v2.0 head, which Hugging Face has no class for",
                    flag_values=flag_values)


@command_line.boundary
def main(argv: Optional[Sequence[str]] = None) -> None:
  """The command line; `argv`: the arguments after the program name (None: this process's)."""
  args, positional = command_line.parse(define_flags, argv, prog=PROG, doc=__doc__)
  command_line.no_positional(positional, PROG)
  given = [f"--{name}" for name in _SOURCES if args[name].value]
  if len(given) != 1:
    command_line.usage_error("give exactly one of --hf_dir, --tf_checkpoint and --checkpoint"
                             + (f" (got {' and '.join(given)})" if given else ""))
  if not (args.out_hf or args.out_checkpoint):
    command_line.usage_error("give --out_hf and/or --out_checkpoint")
  if args.tf_checkpoint and not args.albert_config:
    command_line.usage_error("--tf_checkpoint needs --albert_config")
  if args.encoder_only and not args.out_hf:
    command_line.usage_error("--encoder_only applies to --out_hf")
  task = None
  if args.hf_dir:
    config, params = load_hf(args.hf_dir, allow_missing_heads=args.allow_missing_heads)
  elif args.tf_checkpoint:
    config, params = load_tf(args.tf_checkpoint, args.albert_config,
                             allow_missing_heads=args.allow_missing_heads)
  else:
    config, params, task = _read_any(args.checkpoint, args.albert_config,
                                     args.allow_missing_heads)
  if args.out_hf:
    arch = save_hf(config, params, args.out_hf, task=task, encoder_only=args.encoder_only)
    print(f"wrote Hugging Face {arch.name} to {args.out_hf}")
  if args.out_checkpoint:
    save_checkpoint(config, params, args.out_checkpoint)
    print(f"wrote albert_jax checkpoint to {args.out_checkpoint}")


def cli() -> None:
  """The command line (also reached through the top-level module of the same name)."""
  command_line.run(main)


if __name__ == "__main__":
  cli()
