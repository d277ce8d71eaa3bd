"""Name tables between our parameter tree, Hugging Face state-dict keys and official TF1 variables.

Everything is expressed against Hugging Face keys (transformers' `modeling_albert.py`) as the hub:
an official TF1 variable maps to one HF key (the mapping `load_tf_weights_in_albert` implements,
`modeling_albert.py`), and an HF key maps to one slice of one leaf of our tree. An HF "unique layer" is
(group g, inner layer n); in our tree it is a slice of a leaf stacked on the `groups` axis (and on the
`layers` axis when layers are not shared), see `layer_slice`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

from albert_jax.model.config import ModelConfig, hf_layer_group

# The ModelConfig fields that an HF config.json and an official albert_config.json both carry,
# under the same names.
CONFIG_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
                 "num_hidden_groups", "num_attention_heads", "intermediate_size",
                 "inner_group_num", "hidden_dropout_prob", "attention_probs_dropout_prob",
                 "max_position_embeddings", "type_vocab_size", "initializer_range")

# (path inside one of our `albert_layers_{n}` sub-trees, HF suffix after `albert_layers.{n}.`).
_LAYER_LEAVES = tuple(
    [((("attention", m, "kernel")), f"attention.{m}.weight") for m in ("query", "key", "value",
                                                                       "dense")]
    + [((("attention", m, "bias")), f"attention.{m}.bias") for m in ("query", "key", "value",
                                                                     "dense")]
    + [(("attention", "LayerNorm", "scale"), "attention.LayerNorm.weight"),
       (("attention", "LayerNorm", "bias"), "attention.LayerNorm.bias"),
       (("ffn", "kernel"), "ffn.weight"), (("ffn", "bias"), "ffn.bias"),
       (("ffn_output", "kernel"), "ffn_output.weight"), (("ffn_output", "bias"), "ffn_output.bias"),
       (("full_layer_layer_norm", "scale"), "full_layer_layer_norm.weight"),
       (("full_layer_layer_norm", "bias"), "full_layer_layer_norm.bias")])

# Official TF1 scope of each HF layer suffix (below .../group_{g}/inner_group_{n}/).
_TF_LAYER = {
    "attention.query": "attention_1/self/query", "attention.key": "attention_1/self/key",
    "attention.value": "attention_1/self/value", "attention.dense": "attention_1/output/dense",
    "attention.LayerNorm": "LayerNorm", "ffn": "ffn_1/intermediate/dense",
    "ffn_output": "ffn_1/intermediate/output/dense", "full_layer_layer_norm": "LayerNorm_1",
}

# Which head a top-level HF key belongs to (None: part of the encoder, always required).
HEADS = ("pooler", "mlm", "sop")

# Fine-tuning heads that Hugging Face has a class for: our top-level tree -> (HF module, name of
# the Dense inside our head). GLUE, RACE and tagging heads are all `classifier`
# (heads.ClassificationHead; HF AlbertFor{Sequence,Token}Classification, AlbertForMultipleChoice);
# SQuAD v1.1 is `qa_outputs` (heads.SpanHead, HF AlbertForQuestionAnswering). Which HF class a
# `classifier` belongs to is not in the tree: hf_classes.hf_architecture decides it from the task.
TASK_HEADS = {"classifier": ("classifier", "classifier"), "qa_outputs": ("qa_outputs", "dense")}


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One HF tensor: where it lives in our tree and how its layout differs."""

  hf_key: str
  path: tuple[str, ...]           # leaf path in the AlbertForPreTraining tree
  index: tuple[int, ...] = ()     # slice of a stacked leaf (groups[, layers])
  transpose: bool = False         # PyTorch Linear weight [out, in] vs Flax kernel [in, out]
  head: Optional[str] = None      # one of HEADS, a TASK_HEADS tree, or None for the encoder


def hf_layout(cfg: ModelConfig) -> tuple[int, int]:
  """(num_hidden_groups, inner_group_num) of the equivalent HF model.

  Fully shared groups map one to one. Unshared layers ('none') map to one HF group per layer,
  since HF groups are contiguous blocks of layers with their own weights. Partial sharing has no
  HF counterpart.
  """
  if cfg.layer_sharing == "all":
    return cfg.num_hidden_groups, cfg.inner_group_num
  if cfg.layer_sharing == "none":
    return cfg.num_hidden_layers, cfg.inner_group_num
  raise ValueError(f"model config field 'layer_sharing'={cfg.layer_sharing!r} shares only part of "
                   "each layer; Hugging Face and official checkpoints cannot represent it "
                   "(use 'all' or 'none')")


def check_hf_groups(cfg: ModelConfig, what: str) -> None:
  """Raises when Hugging Face would run other groups than ours on some layer: its
  AlbertTransformer assigns int(l / (L / G)), we the official int(l / L * G) (config.layer_group);
  the two agree on every divisible shape with equal groups and on most others (e.g. L=5, G=2)."""
  if cfg.layer_sharing != "all":  # one HF group per layer: the identity in both rules
    return
  layers, groups = cfg.num_hidden_layers, cfg.num_hidden_groups
  ours = cfg.layer_groups
  differ = [l for l in range(layers) if hf_layer_group(l, layers, groups) != ours[l]]
  if differ:
    raise ValueError(
        f"{what}: with num_hidden_layers={layers} and num_hidden_groups={groups}, Hugging Face's "
        f"AlbertTransformer runs layer(s) {differ} with other groups (int(l / (L / G))) than the "
        "official model does (int(l / L * G)), which albert_jax follows: the same weights would "
        "compute another function")


def layer_slice(cfg: ModelConfig, hf_group: int) -> tuple[int, ...]:
  """Index into our stacked encoder leaves for HF group `hf_group`."""
  if cfg.layer_sharing == "all":
    return (hf_group,)
  per_group = cfg.layers_per_group
  return (hf_group // per_group, hf_group % per_group)


def tensors(cfg: ModelConfig) -> Iterator[Tensor]:
  """Every HF tensor of AlbertForPreTraining for this config (aliases of tied weights excluded)."""
  emb = ("albert", "embeddings")
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    yield Tensor(f"albert.embeddings.{name}.weight", emb + (name, "embedding"))
  for ours, hf in (("scale", "weight"), ("bias", "bias")):
    yield Tensor(f"albert.embeddings.LayerNorm.{hf}", emb + ("LayerNorm", ours))
  if cfg.has_embedding_projection:
    base = ("albert", "encoder", "embedding_hidden_mapping_in")
    yield Tensor("albert.encoder.embedding_hidden_mapping_in.weight", base + ("kernel",),
                 transpose=True)
    yield Tensor("albert.encoder.embedding_hidden_mapping_in.bias", base + ("bias",))
  groups, inner = hf_layout(cfg)
  for g in range(groups):
    for n in range(inner):
      prefix = f"albert.encoder.albert_layer_groups.{g}.albert_layers.{n}."
      for sub_path, suffix in _LAYER_LEAVES:
        path = ("albert", "encoder", "groups", "layers", f"albert_layers_{n}") + sub_path
        yield Tensor(prefix + suffix, path, layer_slice(cfg, g), transpose=path[-1] == "kernel")
  for ours, hf in (("kernel", "weight"), ("bias", "bias")):
    yield Tensor(f"albert.pooler.{hf}", ("albert", "pooler", ours), transpose=ours == "kernel",
                 head="pooler")
  for module in ("dense", "LayerNorm"):
    for ours, hf in ((("kernel", "weight") if module == "dense" else ("scale", "weight")),
                     ("bias", "bias")):
      yield Tensor(f"predictions.{module}.{hf}", ("predictions", module, ours),
                   transpose=ours == "kernel", head="mlm")
  yield Tensor("predictions.bias", ("predictions", "bias"), head="mlm")
  for ours, hf in (("kernel", "weight"), ("bias", "bias")):
    yield Tensor(f"sop_classifier.classifier.{hf}", ("sop_classifier", "classifier", ours),
                 transpose=ours == "kernel", head="sop")


def task_head_tensors(tree: str) -> Iterator[Tensor]:
  """The HF tensors of the fine-tuning head `tree` (a TASK_HEADS key): one Linear's weight, bias."""
  module, dense = TASK_HEADS[tree]
  for ours, hf in (("kernel", "weight"), ("bias", "bias")):
    yield Tensor(f"{module}.{hf}", (tree, dense, ours), transpose=ours == "kernel", head=tree)


# HF keys that are not parameters of their own: buffers of old checkpoints and tied aliases.
HF_IGNORED = ("albert.embeddings.position_ids",)
HF_TIED_ALIASES = {"predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
                   "predictions.decoder.bias": "predictions.bias"}


def tf_name(hf_key: str) -> str:
  """Official TF1 variable name of an HF key (the inverse of load_tf_weights_in_albert)."""
  fixed = {
      "albert.embeddings.LayerNorm.weight": "bert/embeddings/LayerNorm/gamma",
      "albert.embeddings.LayerNorm.bias": "bert/embeddings/LayerNorm/beta",
      "predictions.LayerNorm.weight": "cls/predictions/transform/LayerNorm/gamma",
      "predictions.LayerNorm.bias": "cls/predictions/transform/LayerNorm/beta",
      "predictions.dense.weight": "cls/predictions/transform/dense/kernel",
      "predictions.dense.bias": "cls/predictions/transform/dense/bias",
      "predictions.bias": "cls/predictions/output_bias",
      "sop_classifier.classifier.weight": "cls/seq_relationship/output_weights",
      "sop_classifier.classifier.bias": "cls/seq_relationship/output_bias",
      "albert.pooler.weight": "bert/pooler/dense/kernel",
      "albert.pooler.bias": "bert/pooler/dense/bias",
      "albert.encoder.embedding_hidden_mapping_in.weight":
          "bert/encoder/embedding_hidden_mapping_in/kernel",
      "albert.encoder.embedding_hidden_mapping_in.bias":
          "bert/encoder/embedding_hidden_mapping_in/bias",
  }
  if hf_key in fixed:
    return fixed[hf_key]
  if hf_key.startswith("albert.embeddings."):  # the three embedding tables
    return "bert/embeddings/" + hf_key.split(".")[2]
  # albert.encoder.albert_layer_groups.{g}.albert_layers.{n}.{module...}.{weight|bias}
  parts = hf_key.split(".")
  group, inner, module, leaf = parts[3], parts[5], ".".join(parts[6:-1]), parts[-1]
  is_norm = module.endswith("LayerNorm") or module == "full_layer_layer_norm"
  tf_leaf = {"weight": "gamma" if is_norm else "kernel", "bias": "beta" if is_norm else "bias"}[leaf]
  return (f"bert/encoder/transformer/group_{group}/inner_group_{inner}/"
          f"{_TF_LAYER[module]}/{tf_leaf}")


def tf_transpose(hf_key: str) -> bool:
  """TF kernels are [in, out] like Flax; HF Linear weights are [out, in]."""
  return tf_name(hf_key).endswith("/kernel")


# Official fine-tuning heads with a Hugging Face counterpart: official TF1 variable -> HF key (both
# [out, in]). run_classifier (classifier_utils.py `create_model`) and run_race (race_utils.py
# `create_model`, one score per choice) keep theirs at the root; run_squad_v1 (squad_utils.py
# `create_v1_model`) under cls/squad/.
TF_TASK_HEAD_KEYS = {"output_weights": "classifier.weight", "output_bias": "classifier.bias",
                     "cls/squad/output_weights": "qa_outputs.weight",
                     "cls/squad/output_bias": "qa_outputs.bias"}
SQUAD_V2_TREE = "squad"  # heads.SquadV2Head in the SQuAD v2.0 model (no Hugging Face class)


def squad_v2_tf_leaves(cfg: ModelConfig) -> Iterator[tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """(official TF1 variable, leaf path in our tree, shape) of the SQuAD v2.0 head: run_squad_v2's
  start_logits/, end_logits/ and answer_class/ scopes (squad_utils.py `create_v2_model`; kernels
  [in, out] as ours, and the same concatenation orders)."""
  h = cfg.hidden_size
  dense = {"start_logits/dense": ("start_dense", h, 1),
           "end_logits/dense_0": ("end_dense_0", 2 * h, h), "end_logits/dense_1": ("end_dense_1", h, 1),
           "answer_class/dense_0": ("answer_class_dense_0", 2 * h, h),
           "answer_class/dense_1": ("answer_class_dense_1", h, 1)}
  for scope, (ours, fan_in, fan_out) in dense.items():
    yield f"{scope}/kernel", (SQUAD_V2_TREE, ours, "kernel"), (fan_in, fan_out)
    if scope != "answer_class/dense_1":  # use_bias=False
      yield f"{scope}/bias", (SQUAD_V2_TREE, ours, "bias"), (fan_out,)
  for tf_leaf, leaf in (("gamma", "scale"), ("beta", "bias")):
    yield f"end_logits/LayerNorm/{tf_leaf}", (SQUAD_V2_TREE, "end_LayerNorm", leaf), (h,)
