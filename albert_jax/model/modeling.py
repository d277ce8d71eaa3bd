"""ALBERT in Flax linen: factorized embeddings, a post-LN block shared across depth by `nn.scan`.

Parameter tree of `AlbertModel` (leaf names follow Hugging Face's Flax ALBERT so conversion is by
name; shapes with E = embedding_size, H = hidden_size, I = intermediate_size, G = num_hidden_groups,
N = inner_group_num, L = num_hidden_layers):

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/LayerNorm/{scale,bias}                                   [E]
    encoder/embedding_hidden_mapping_in/{kernel [E,H], bias}            (if use_embedding_projection)
    encoder/groups/layers/albert_layers_{n}/attention/{query,key,value,dense,LayerNorm}
    encoder/groups/layers/albert_layers_{n}/{ffn,ffn_output,full_layer_layer_norm}
    pooler/{kernel,bias}

Every encoder leaf has a leading `groups` axis of size G (contiguous runs of layers: layer l uses
group int(l / L * G), official semantics, for any L and G; see AlbertEncoder). Inside a group the L/G layers are one `nn.scan`: parameters shared across depth are
broadcast (no extra axis) and unshared ones are stacked on a `layers` axis of size L/G. Which
sub-trees are shared is `layer_sharing`: "all" (ALBERT), "attention" (attention + its LayerNorm),
"ffn" (ffn, ffn_output, full_layer_layer_norm) or "none" (BERT when G = 1). With "all" the tree does
not depend on L, so a shallow checkpoint initializes a deeper model (the paper's warm start).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
import numpy as np

from albert_jax.model import attention
from albert_jax.model import heads
from albert_jax.model.layers import activation, constrain, dense, layer_norm
from albert_jax.model.config import MATMUL_AND_LAYERNORM_INPUTS, ModelConfig

Array = jax.Array

# Sub-trees of one layer that `layer_sharing` shares across depth (names as in the tree above).
_SHARED_KEYS = {
    "all": ("attention", "ffn", "ffn_output", "full_layer_layer_norm"),
    "attention": ("attention",),
    "ffn": ("ffn", "ffn_output", "full_layer_layer_norm"),
    "none": (),
}


class AlbertEmbeddings(nn.Module):
  """word (V x E) + token type + position embeddings, LayerNorm and dropout in E-space."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    init = nn.initializers.truncated_normal(cfg.initializer_range)

    def embed(num, name):
      return nn.Embed(num, cfg.embedding_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      embedding_init=nn.with_logical_partitioning(
                          init, ("vocab" if name == "word_embeddings" else None, "embed")),
                      name=name)

    self.word_embeddings = embed(cfg.vocab_size, "word_embeddings")
    self.position_embeddings = embed(cfg.max_position_embeddings, "position_embeddings")
    self.token_type_embeddings = embed(cfg.type_vocab_size, "token_type_embeddings")
    self.layer_norm = layer_norm(cfg, "embed", "LayerNorm")
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
    seq_len = input_ids.shape[-1]
    x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
         + self.position_embeddings(jnp.arange(seq_len))[None])
    x = self.layer_norm(x).astype(self.config.dtype)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: Array) -> Array:
    """Logits against the word embedding table (the MLM output layer is tied to it)."""
    return self.word_embeddings.attend(x)


def _fold_key(key: Optional[Array], *indices) -> Optional[Array]:
  """`key` folded with each index in turn (None stays None: the module's own 'dropout' rng)."""
  for i in indices:
    key = None if key is None else jax.random.fold_in(key, i)
  return key


class AlbertAttention(nn.Module):
  """Multi-head self-attention with output dense, dropout, residual and post-LayerNorm."""

  config: ModelConfig
  init_salt: Optional[Array] = None  # see layers.dense; None when the attention is shared

  @nn.compact
  def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
               dropout_key: Optional[Array] = None) -> Array:
    cfg = self.config
    heads_, head_dim = cfg.num_attention_heads, cfg.head_dim

    def project(name):
      y = dense(cfg, cfg.hidden_size, ("hidden", "heads"), name, init_salt=self.init_salt)(x)
      return checkpoint_name(y.reshape(y.shape[:-1] + (heads_, head_dim)), name)

    dropout = nn.Dropout(cfg.attention_probs_dropout_prob)
    impl = attention.resolve(cfg.attention_impl, dtype=cfg.dtype, seq_len=x.shape[1],
                             dropout_active=cfg.attention_probs_dropout_prob > 0
                             and not deterministic)
    context = attention.attend(impl, project("query"), project("key"), project("value"),
                               attention_mask, lambda probs: dropout(
                                   probs, deterministic, _fold_key(dropout_key, 0)), cfg.dtype)
    context = checkpoint_name(context.reshape(context.shape[:2] + (cfg.hidden_size,)), "context")
    out = dense(cfg, cfg.hidden_size, ("heads", "hidden"), "dense", init_salt=self.init_salt)(
        context)
    out = nn.Dropout(cfg.hidden_dropout_prob)(out, deterministic, _fold_key(dropout_key, 1))
    out = checkpoint_name(out + x, "attention_residual")
    return layer_norm(cfg, "hidden", "LayerNorm")(out).astype(cfg.dtype)


class AlbertLayer(nn.Module):
  """One post-LN Transformer block (official `attention_ffn_block`).

  `step` is the index of this layer's step in the depth scan (or None outside a scan); it salts
  the init of the sub-trees that are not shared across depth. `dropout_key` (None: the module's
  'dropout' rng) is the layer's own dropout key; the depth scan passes one per layer.
  """

  config: ModelConfig
  step: Optional[Array] = None

  @nn.compact
  def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
               dropout_key: Optional[Array] = None) -> Array:
    cfg = self.config
    shared = _SHARED_KEYS[cfg.layer_sharing]
    salt = lambda key: None if key in shared else self.step
    a = AlbertAttention(cfg, init_salt=salt("attention"), name="attention")(
        x, attention_mask, deterministic, _fold_key(dropout_key, 0))
    h = dense(cfg, cfg.intermediate_size, ("hidden", "mlp"), "ffn", init_salt=salt("ffn"))(a)
    h = activation(cfg.hidden_act)(checkpoint_name(h, "ffn"))
    f = dense(cfg, cfg.hidden_size, ("mlp", "hidden"), "ffn_output",
              init_salt=salt("ffn_output"))(h)
    f = nn.Dropout(cfg.hidden_dropout_prob)(f, deterministic, _fold_key(dropout_key, 1))
    f = checkpoint_name(f + a, "ffn_residual")
    out = layer_norm(cfg, "hidden", "full_layer_layer_norm")(f).astype(cfg.dtype)
    return constrain(out, ("act_batch", "act_len", "act_hidden"))


class AlbertLayerStep(nn.Module):
  """One step of depth: the N inner layers of a group, each with its own weights.

  Each layer's dropout key is the group's `dropout_key` folded with (step, n), so it depends on
  the layer alone, not on how the depth scan is cut into `remat_scan_blocks`. `length`: the
  group's number of layers when groups are unequal (steps from it on pass `x` through), or None.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
               dropout_key: Optional[Array], step: Array, length: Optional[Array] = None):
    y = x
    for n in range(self.config.inner_group_num):
      y = AlbertLayer(self.config, step=step, name=f"albert_layers_{n}")(
          y, attention_mask, deterministic, _fold_key(dropout_key, step, n))
    # A shorter group's steps past its end are computed and dropped: the scan has one length.
    return (y if length is None else jnp.where(step < length, y, x)), None


def _split_shared(shared_keys):
  """map_variables functions moving the shared sub-trees of each layer to a 'shared' collection.

  A leaf is shared when its path goes through one of `shared_keys` (e.g. .../attention/...).
  """

  def split(target):
    out = {"params": {}, "shared": {}}
    for col, tree in target.items():
      for path, leaf in traverse_util.flatten_dict(tree).items():
        out["shared" if set(path) & set(shared_keys) else "params"][path] = leaf
    return {col: traverse_util.unflatten_dict(flat) for col, flat in out.items()}

  def merge(target):
    flat = {}
    for tree in target.values():
      flat.update(traverse_util.flatten_dict(tree))
    return {"params": traverse_util.unflatten_dict(flat)}

  return split, merge


def _remat(module_cls, policy: str):
  if policy == "matmul_and_layernorm_inputs":
    saveable = jax.checkpoint_policies.save_only_these_names(*MATMUL_AND_LAYERNORM_INPUTS)
  else:
    saveable = getattr(jax.checkpoint_policies, policy)
  # static_argnums counts self: (self, x, attention_mask, deterministic, dropout_key, steps,
  # length).
  return nn.remat(module_cls, prevent_cse=False, static_argnums=(3,), policy=saveable)


def _depth_scan(cfg: ModelConfig, length: int):
  """`length` steps of depth as a scanned module class, sharing per `layer_sharing`.

  The scanned call is (x, attention_mask, deterministic, dropout_key, steps, group length) with
  steps the [length] indices of the steps in the group. No rng is split across steps: broadcast weights must not
  depend on the step, unshared weights are decorrelated by folding the step index into their init
  key, and dropout keys by folding it into `dropout_key`.
  """
  step = AlbertLayerStep if cfg.remat_policy == "none" else _remat(AlbertLayerStep,
                                                                   cfg.remat_policy)
  common = dict(in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
                length=length,
                split_rngs={"params": False, "dropout": False},
                unroll=min(cfg.scan_unroll, length))
  if cfg.layer_sharing == "all":
    return nn.scan(step, variable_broadcast="params", **common)
  stacked = dict(variable_axes={"params": 0}, metadata_params={nn.PARTITION_NAME: "layers"},
                 **common)
  if cfg.layer_sharing == "none":
    return nn.scan(step, **stacked)
  # Partial sharing: inside the scan the shared sub-trees live in a separate 'shared' collection
  # that is broadcast, while 'params' is stacked.
  # AlbertEncoder maps them back (the group scan in between stacks both collections).
  split, merge = _split_shared(_SHARED_KEYS[cfg.layer_sharing])
  inner = nn.map_variables(step, ["params", "shared"], trans_in_fn=merge, trans_out_fn=split,
                           mutable=True)
  return nn.scan(inner, variable_broadcast="shared", **stacked)


class _DepthBlock(nn.Module):
  """One block of `remat_scan_blocks`: a scan over its L/(G*blocks) consecutive layers.

  It shares its scope with that inner scan, so the parameter tree is the one without blocks.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.inner = _depth_scan(cfg, cfg.layers_per_group // cfg.depth_blocks)(cfg)
    nn.share_scope(self, self.inner)

  def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
               dropout_key: Optional[Array], steps: Array, length: Optional[Array] = None):
    return self.inner(x, attention_mask, deterministic, dropout_key, steps, length)


class AlbertGroup(nn.Module):
  """One group of consecutive layers: L/G of them, or `length` (a scanned [G] input) of the
  longest group's `layers_per_group` steps when groups are unequal."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
               length: Optional[Array] = None):
    cfg = self.config
    steps = jnp.arange(cfg.layers_per_group)
    if cfg.depth_blocks == 1:
      scan = _depth_scan(cfg, cfg.layers_per_group)
    else:
      # A scan over rematerialized blocks: the backward pass keeps only each block's input and
      # recomputes the block's forward (saving its per-layer inputs) when it reaches it.
      # (`remat_scan_blocks` > 1 implies layer_sharing="all": every weight is broadcast.)
      scan = nn.scan(_remat(_DepthBlock, "nothing_saveable"), variable_broadcast="params",
                     in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
                     length=cfg.depth_blocks, split_rngs={"params": False, "dropout": False},
                     unroll=cfg.depth_blocks if cfg.straight_line_depth else 1)
      steps = steps.reshape(cfg.depth_blocks, -1)
    # No 'dropout' rng is needed when no rate is positive (v2 configs), as with nn.Dropout.
    drops = cfg.hidden_dropout_prob > 0 or cfg.attention_probs_dropout_prob > 0
    dropout_key = self.make_rng("dropout") if drops and not deterministic else None
    x, _ = scan(cfg, name="layers")(x, attention_mask, deterministic, dropout_key, steps, length)
    return x, None


class AlbertEncoder(nn.Module):
  """E -> H projection, then G groups (an outer scan with per-group weights).

  Layer l uses group int(l / L * G) (config.layer_group, the official rule). When every group
  has L/G layers this is a scan of G groups of an L/G-step scan; otherwise (L not divisible by G)
  each group's scan runs the longest group's length and the steps past a shorter group's end
  pass their input through, so the tree keeps its [G, ...] layout and the one scan.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, attention_mask: Array, deterministic: bool) -> Array:
    cfg = self.config
    if cfg.has_embedding_projection:
      x = dense(cfg, cfg.hidden_size, ("embed", "hidden"), "embedding_hidden_mapping_in")(x)
    x = constrain(x, ("act_batch", "act_len", "act_hidden"))
    uneven = not cfg.uniform_groups
    groups = nn.scan(AlbertGroup, variable_axes={"params": 0, "shared": 0},
                     split_rngs={"params": True, "dropout": True},
                     in_axes=(nn.broadcast, nn.broadcast) + ((0,) if uneven else ()),
                     length=cfg.num_hidden_groups,
                     unroll=cfg.num_hidden_groups if cfg.straight_line_depth else 1,
                     metadata_params={nn.PARTITION_NAME: "groups"})
    if cfg.layer_sharing in ("attention", "ffn"):
      # Partially shared weights cross the group scan in the 'shared' collection (see
      # _depth_scan); merge them back so users only ever see 'params'.
      split, merge = _split_shared(_SHARED_KEYS[cfg.layer_sharing])
      groups = nn.map_variables(groups, ["params", "shared"], trans_in_fn=split,
                                trans_out_fn=merge, mutable=True)
    lengths = (jnp.asarray(cfg.group_lengths, jnp.int32),) if uneven else ()
    x, _ = groups(cfg, name="groups")(x, attention_mask, deterministic, *lengths)
    return x


class _ValidatedConfigModule(nn.Module):
  """Base for modules taking `config`: normalizes it to a validated ModelConfig at construction."""

  config: Any

  def __post_init__(self):
    object.__setattr__(self, "config", ModelConfig.from_any(self.config))
    super().__post_init__()


def _check_ids_in_range(ids: Array, size: int, field: str, what: str) -> None:
  """Out-of-range ids make the embedding lookup return NaN rows (jnp.take fills them), which
  would poison the whole sequence silently. Checked when the ids are concrete (eager calls such
  as init or an un-jitted apply); a jitted step cannot look at values without a device sync."""
  if isinstance(ids, jax.core.Tracer) or ids.size == 0:
    return
  ids = np.asarray(ids)  # numpy: jnp ops would be staged when a jit closes over concrete ids
  low, high = int(ids.min()), int(ids.max())
  if low < 0 or high >= size:
    raise ValueError(f"{what} {high if high >= size else low} is outside [0, {size}) of model "
                     f"config field '{field}'={size}")


class AlbertModel(_ValidatedConfigModule):
  """Embeddings + encoder + pooler. Returns sequence_output [B,T,H] and pooled_output [B,H]."""

  add_pooling_layer: bool = True

  def setup(self):
    cfg = self.config
    self.embeddings = AlbertEmbeddings(cfg)
    self.encoder = AlbertEncoder(cfg)
    if self.add_pooling_layer:
      self.pooler = dense(cfg, cfg.hidden_size, ("hidden", "hidden_out"), "pooler")

  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, deterministic: bool = True):
    cfg = self.config
    if input_ids.shape[-1] > cfg.max_position_embeddings:
      raise ValueError(f"sequence length {input_ids.shape[-1]} exceeds model config field "
                       f"'max_position_embeddings'={cfg.max_position_embeddings}")
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    _check_ids_in_range(input_ids, cfg.vocab_size, "vocab_size", "token id")
    _check_ids_in_range(token_type_ids, cfg.type_vocab_size, "type_vocab_size", "token type id")
    x = self.embeddings(input_ids, token_type_ids, deterministic)
    x = constrain(x, ("act_batch", "act_len", "act_embed"))
    sequence_output = self.encoder(x, attention_mask, deterministic)
    out = {"sequence_output": sequence_output}
    if self.add_pooling_layer:
      out["pooled_output"] = jnp.tanh(self.pooler(sequence_output[:, 0]))
    return out

  def attend(self, x: Array) -> Array:
    return self.embeddings.attend(x)


class AlbertForPreTraining(_ValidatedConfigModule):
  """AlbertModel + tied MLM head + SOP head (also the NSP head: same shape, other labels).

  `masked_positions` [B, P] gathers the MLM inputs like the official model (P predictions per
  sequence); with None the MLM logits cover every position ([B, T, V], as in Hugging Face).
  """

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, masked_positions: Optional[Array] = None,
               deterministic: bool = True):
    albert = AlbertModel(self.config, name="albert")
    out = albert(input_ids, attention_mask, token_type_ids, deterministic)
    out["mlm_logits"] = heads.MaskedLMHead(self.config, name="predictions")(
        out["sequence_output"], albert.attend, masked_positions)
    out["sop_logits"] = heads.SentenceOrderHead(self.config, name="sop_classifier")(
        out["pooled_output"])
    return out


class AlbertForMaskedLM(_ValidatedConfigModule):
  """AlbertModel without pooler + tied MLM head (the Hugging Face hub layout)."""

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, masked_positions: Optional[Array] = None,
               deterministic: bool = True):
    albert = AlbertModel(self.config, add_pooling_layer=False, name="albert")
    out = albert(input_ids, attention_mask, token_type_ids, deterministic)
    out["mlm_logits"] = heads.MaskedLMHead(self.config, name="predictions")(
        out["sequence_output"], albert.attend, masked_positions)
    return out


class AlbertForSequenceClassification(_ValidatedConfigModule):
  """Pooled output -> dropout -> `num_labels` logits (num_labels=1: regression, e.g. STS-B)."""

  num_labels: int = 2

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
    out = AlbertModel(self.config, name="albert")(
        input_ids, attention_mask, token_type_ids, deterministic)
    out["logits"] = heads.ClassificationHead(self.config, self.num_labels, name="classifier")(
        out["pooled_output"], deterministic)
    return out


class AlbertForMultipleChoice(_ValidatedConfigModule):
  """Inputs [B, C, T] -> one score per choice [B, C] from the pooled output (RACE)."""

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
    batch, choices, length = input_ids.shape
    flat = lambda a: None if a is None else a.reshape(batch * choices, length)
    out = AlbertModel(self.config, name="albert")(
        flat(input_ids), flat(attention_mask), flat(token_type_ids), deterministic)
    scores = heads.ClassificationHead(self.config, 1, name="classifier")(
        out["pooled_output"], deterministic)
    out["logits"] = scores.reshape(batch, choices)
    return out


class AlbertForQuestionAnswering(_ValidatedConfigModule):
  """SQuAD v1.1 span head: start/end logits [B, T] from every token."""

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
    out = AlbertModel(self.config, add_pooling_layer=False, name="albert")(
        input_ids, attention_mask, token_type_ids, deterministic)
    out.update(heads.SpanHead(self.config, name="qa_outputs")(out["sequence_output"]))
    return out


class AlbertForQuestionAnsweringV2(_ValidatedConfigModule):
  """SQuAD v2.0: the official XLNet-style start/end heads with an answerability classifier."""

  start_n_top: int = 5
  end_n_top: int = 5

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, p_mask=None,
               start_positions=None, deterministic=True):
    out = AlbertModel(self.config, add_pooling_layer=False, name="albert")(
        input_ids, attention_mask, token_type_ids, deterministic)
    if p_mask is None:
      p_mask = jnp.zeros(input_ids.shape, jnp.float32)
    out.update(heads.SquadV2Head(self.config, self.start_n_top, self.end_n_top, name="squad")(
        out["sequence_output"], p_mask, start_positions, deterministic))
    return out


class AlbertForTokenClassification(_ValidatedConfigModule):
  """Sequence labelling (NER, POS): dropout (`classifier_dropout_prob`) + dense on every token's
  sequence output -> logits [B, T, num_labels] (Hugging Face's layout: no pooler, `classifier`)."""

  num_labels: int = 9

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
    out = AlbertModel(self.config, add_pooling_layer=False, name="albert")(
        input_ids, attention_mask, token_type_ids, deterministic)
    out["logits"] = heads.ClassificationHead(self.config, self.num_labels, name="classifier")(
        out["sequence_output"], deterministic)
    return out
