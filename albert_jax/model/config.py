"""The model section of a run config: field names, validation, and the paper's presets.

Field names follow the official `AlbertConfig` (google-research/albert `modeling.py`) so that an
official `albert_config.json` or a Hugging Face `config.json` maps onto them one to one; a few fields
are our own (sharing strategy, dtypes, remat). Modules receive a frozen `ModelConfig`, built from an
ml_collections ConfigDict, a dict or another ModelConfig by `ModelConfig.from_any`, which validates
every field up front so a wrong config fails at construction with the field named.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import ml_collections

# Activation names accepted in `hidden_act`. "gelu" keeps the OFFICIAL meaning: the tanh
# approximation that google-research/albert's modeling.gelu computes (Hugging Face calls the same
# function "gelu_new" and uses "gelu" for the exact erf form, which we call "gelu_exact").
ACTIVATIONS = ("gelu", "gelu_new", "gelu_exact", "relu", "tanh", "silu")
LAYER_SHARING = ("all", "attention", "ffn", "none")
# `attention_impl` values (albert_jax/model/attention.py); the fused ones have no attention dropout.
ATTENTION_IMPLS = ("auto", "xla", "dot_product_attention", "splash", "fused_tpu")
FUSED_ATTENTION = ("dot_product_attention", "splash", "fused_tpu")
DTYPES = ("float32", "bfloat16", "float16")
# Residuals kept by the "matmul_and_layernorm_inputs" remat policy: the operands the backward
# matmuls need and the LayerNorm inputs (tagged with `checkpoint_name` in modeling.py). LayerNorms,
# GELU and the other elementwise work are recomputed, no matmul is.
MATMUL_AND_LAYERNORM_INPUTS = ("query", "key", "value", "attention_probs", "context",
                               "attention_residual", "ffn", "ffn_residual")
# `jax.checkpoint_policies` names exposed through `remat_policy` ("none" disables remat), and
# "matmul_and_layernorm_inputs" (above).
REMAT_POLICIES = (
    "none",
    "nothing_saveable",
    "everything_saveable",
    "dots_saveable",
    "checkpoint_dots",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots_with_no_batch_dims",
    "matmul_and_layernorm_inputs",
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Validated, hashable model hyper-parameters (see module docstring for the naming)."""

  vocab_size: int = 30000
  embedding_size: int = 128
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  num_hidden_groups: int = 1
  inner_group_num: int = 1
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.0
  attention_probs_dropout_prob: float = 0.0
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  # Dropout on the pooled output of task heads (official: hard-coded 0.1 for GLUE/RACE).
  classifier_dropout_prob: float = 0.1
  # E -> H projection. None means "E != H" (official behaviour); Hugging Face always has it.
  use_embedding_projection: Optional[bool] = None
  layer_sharing: str = "all"
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat_policy: str = "none"
  # Steps of the depth scan unrolled per loop iteration (1: a rolled loop, compile time independent
  # of depth; num_hidden_layers: straight-line code like an unrolled Python loop, the group scan
  # and the blocks of remat_scan_blocks unrolled too, so XLA's cost analysis counts every layer).
  scan_unroll: int = 1
  # Each group's depth scan split into this many rematerialized blocks (a scan of scans). The
  # backward pass then keeps one [B, T, H] input per block plus one per layer of the block being
  # recomputed, instead of one per layer: with about sqrt(L/G) blocks, activation memory grows with
  # sqrt(depth) instead of depth, for one extra forward pass. 0 picks the divisor of L/G nearest
  # its square root. Only with layer_sharing="all": stacked per-layer weights and their optimizer
  # state dwarf the per-layer inputs, and blocks would change the stacked parameter layout.
  remat_scan_blocks: int = 1
  # The attention core (albert_jax/model/attention.py): "xla" (einsum, the numerical reference),
  # "dot_product_attention" (jax.nn's; cuDNN flash attention on NVIDIA GPUs), "splash" (the Pallas
  # TPU flash kernel), or "auto": the platform's fused kernel where dropout and shapes allow it.
  attention_impl: str = "auto"

  def __post_init__(self):
    _validate(self)

  @classmethod
  def from_any(cls, config: Any) -> "ModelConfig":
    """Builds a ModelConfig from a ConfigDict, a mapping or a ModelConfig; unknown keys are errors."""
    if isinstance(config, cls):
      return config
    if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
      config = config.to_dict()
    if not isinstance(config, Mapping):
      raise TypeError(f"model config must be a ConfigDict, dict or ModelConfig, got {type(config)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
      raise ValueError(f"unknown model config field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**dict(config))

  def to_config_dict(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(self))

  @property
  def has_embedding_projection(self) -> bool:
    """`use_embedding_projection` resolved (None means E != H, the official rule)."""
    if self.use_embedding_projection is None:
      return self.embedding_size != self.hidden_size
    return self.use_embedding_projection

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def layer_groups(self) -> tuple[int, ...]:
    """The group of each layer: `layer_group(l, L, G)`, the official assignment."""
    return tuple(layer_group(l, self.num_hidden_layers, self.num_hidden_groups)
                 for l in range(self.num_hidden_layers))

  @property
  def uniform_groups(self) -> bool:
    """Whether every group runs L/G consecutive layers (the plain depth scan); otherwise groups
    have unequal lengths (L not divisible by G, or float rounding in the official rule)."""
    l, g = self.num_hidden_layers, self.num_hidden_groups
    return l % g == 0 and self.layer_groups == tuple(i // (l // g) for i in range(l))

  @property
  def group_lengths(self) -> tuple[int, ...]:
    """The number of layers of each group (0 for a group that no layer uses)."""
    groups = self.layer_groups
    return tuple(groups.count(g) for g in range(self.num_hidden_groups))

  @property
  def layers_per_group(self) -> int:
    """The depth scan's length: L/G, or the longest group's length when groups are unequal."""
    return max(self.group_lengths)

  @property
  def straight_line_depth(self) -> bool:
    """Whether `scan_unroll` unrolls every depth loop (groups, blocks and layers)."""
    return self.scan_unroll >= self.num_hidden_layers

  @property
  def depth_blocks(self) -> int:
    """`remat_scan_blocks` resolved (0: the divisor of L/G nearest sqrt(L/G))."""
    if self.remat_scan_blocks:
      return self.remat_scan_blocks
    n = self.layers_per_group
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - n ** 0.5))


def layer_group(layer: int, num_hidden_layers: int, num_hidden_groups: int) -> int:
  """The group whose weights layer `layer` uses, as google-research/albert `modeling.py`
  (`transformer_model`) computes it: int(layer / L * G), in Python floats.

  For any L and G the groups are contiguous runs of layers. The float rounding matters: it is
  not always floor(layer * G / L) (L = G = 22: layer 15 uses group 14, and no layer uses group
  15), and Hugging Face's AlbertTransformer, int(layer / (L / G)), differs from both on some
  shapes (L = 18, G = 14: layer 9 is in group 7 officially, 6 in Hugging Face).
  """
  return int(layer / num_hidden_layers * num_hidden_groups)


def hf_layer_group(layer: int, num_hidden_layers: int, num_hidden_groups: int) -> int:
  """The group of layer `layer` in transformers' AlbertTransformer (modeling_albert.py)."""
  return int(layer / (num_hidden_layers / num_hidden_groups))


def _validate(c: ModelConfig) -> None:
  def fail(field, msg):
    raise ValueError(f"model config field '{field}': {msg}")

  for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "intermediate_size", "num_hidden_groups",
               "inner_group_num", "max_position_embeddings", "type_vocab_size", "scan_unroll"):
    value = getattr(c, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      fail(name, f"must be a positive integer, got {value!r}")
  if c.hidden_size % c.num_attention_heads:
    fail("hidden_size", f"{c.hidden_size} is not divisible by num_attention_heads="
         f"{c.num_attention_heads}")
  if c.num_hidden_groups > c.num_hidden_layers:
    fail("num_hidden_groups", f"{c.num_hidden_groups} groups for num_hidden_layers="
         f"{c.num_hidden_layers}: at most one group per layer")
  if not c.uniform_groups and c.layer_sharing != "all":
    fail("num_hidden_groups", f"groups of unequal length (num_hidden_layers={c.num_hidden_layers}"
         f", num_hidden_groups={c.num_hidden_groups}: {c.group_lengths} layers) need "
         f"layer_sharing='all' (the official model's groups), got {c.layer_sharing!r}")
  if not c.uniform_groups and c.remat_scan_blocks != 1:
    fail("remat_scan_blocks", f"blocks of the depth scan need groups of equal length (got "
         f"{c.group_lengths} layers per group); use remat_scan_blocks=1")
  if c.hidden_act not in ACTIVATIONS:
    fail("hidden_act", f"unknown activation {c.hidden_act!r}; allowed: {ACTIVATIONS}")
  if c.layer_sharing not in LAYER_SHARING:
    fail("layer_sharing", f"unknown sharing strategy {c.layer_sharing!r}; allowed: {LAYER_SHARING}")
  for name in ("dtype", "param_dtype"):
    if getattr(c, name) not in DTYPES:
      fail(name, f"{getattr(c, name)!r} is not one of {DTYPES}")
  if c.remat_policy not in REMAT_POLICIES:
    fail("remat_policy", f"unknown policy {c.remat_policy!r}; allowed: {REMAT_POLICIES}")
  for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
    p = getattr(c, name)
    if not 0.0 <= p < 1.0:
      fail(name, f"must be in [0, 1), got {p}")
  if c.layer_norm_eps <= 0:
    fail("layer_norm_eps", f"must be positive, got {c.layer_norm_eps}")
  if (not isinstance(c.remat_scan_blocks, int) or isinstance(c.remat_scan_blocks, bool)
      or c.remat_scan_blocks < 0):
    fail("remat_scan_blocks", f"must be a non-negative integer, got {c.remat_scan_blocks!r}")
  if c.remat_scan_blocks > 1 and c.layers_per_group % c.remat_scan_blocks:
    fail("remat_scan_blocks", f"{c.remat_scan_blocks} does not divide the "
         f"{c.layers_per_group} layers of a group (num_hidden_layers / num_hidden_groups)")
  if c.remat_scan_blocks != 1 and c.layer_sharing != "all":
    fail("remat_scan_blocks", "blocks of the depth scan need layer_sharing='all' (got "
         f"{c.layer_sharing!r}); use remat_policy alone for stacked layers")
  if c.attention_impl not in ATTENTION_IMPLS:
    fail("attention_impl", f"unknown implementation {c.attention_impl!r}; allowed: "
         f"{ATTENTION_IMPLS}")
  if c.attention_impl in FUSED_ATTENTION and c.attention_probs_dropout_prob > 0:
    fail("attention_impl", f"{c.attention_impl!r} has no attention-probability dropout, but "
         f"'attention_probs_dropout_prob'={c.attention_probs_dropout_prob}; use 'auto' (xla "
         "while that dropout is active) or 'xla', or set attention_probs_dropout_prob=0")
  if c.use_embedding_projection is False and c.embedding_size != c.hidden_size:
    fail("use_embedding_projection", "can only be False when embedding_size == hidden_size "
         f"(got E={c.embedding_size}, H={c.hidden_size})")


# ----------------------------------------------------------------------------------------------
# Presets: the paper's Table 1 shapes (arXiv:1909.11942; FFN, heads as released) and BERT baselines.
# ----------------------------------------------------------------------------------------------

_SHAPES = {  # size: (L, H, heads)
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
    "xlarge": (24, 2048, 16),  # 16 heads as on the TF-Hub page and in HF configs (the tar JSON says 32)
    "xxlarge": (12, 4096, 64),
}

# Parameter counts the paper prints in Table 1 (encoder + pooler, no pretraining heads).
PAPER_PARAMS = {
    "albert_base": 12e6, "albert_large": 18e6, "albert_xlarge": 60e6, "albert_xxlarge": 235e6,
    "bert_base": 108e6, "bert_large": 334e6,
}

PRESETS = tuple(f"albert_{s}" for s in _SHAPES) + ("bert_base", "bert_large", "tiny")


def preset(name: str, version: int = 2) -> ml_collections.ConfigDict:
  """Returns the model ConfigDict of a preset.

  Args:
    name: one of PRESETS ("albert_base" .. "albert_xxlarge", "bert_base", "bert_large", "tiny").
    version: ALBERT release, 1 or 2. It only changes dropout: v1 uses 0.1 except xxlarge (0);
      v2 uses no dropout anywhere (google-research/albert README.md). BERT baselines use 0.1.
  """
  if version not in (1, 2):
    raise ValueError(f"model version must be 1 or 2, got {version!r}")
  if name == "tiny":
    # A laptop-sized ALBERT for tests and the demo: all the structure, none of the cost.
    cfg = ModelConfig(vocab_size=1000, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                      hidden_dropout_prob=0.1 if version == 1 else 0.0,
                      attention_probs_dropout_prob=0.1 if version == 1 else 0.0)
    return cfg.to_config_dict()
  family, _, size = name.partition("_")
  if family not in ("albert", "bert") or size not in _shapes_for(family):
    raise ValueError(f"unknown model preset {name!r}; allowed: {PRESETS}")
  layers, hidden, heads = _SHAPES[size]
  if family == "bert":
    dropout = 0.1
    extra = dict(embedding_size=hidden, layer_sharing="none")
  else:
    dropout = 0.1 if version == 1 and size != "xxlarge" else 0.0
    extra = dict(embedding_size=128, layer_sharing="all")
  cfg = ModelConfig(vocab_size=30000, hidden_size=hidden, num_hidden_layers=layers,
                    num_attention_heads=heads, intermediate_size=4 * hidden,
                    hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **extra)
  return cfg.to_config_dict()


def _shapes_for(family: str):
  return ("base", "large") if family == "bert" else tuple(_SHAPES)
