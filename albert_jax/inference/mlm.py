"""A checkpoint's masked-LM head, ready for text generation and scoring (inference/generate.py,
inference/score.py).

`MaskedLM.from_loaded(loading.load(path))` takes every checkpoint kind `loading.load` reads;
`MaskedLM(config, params, tokenizer)` takes e.g. the pair `convert.load_hf(directory)` returns. The
model is `modeling.AlbertForMaskedLM` (the encoder and the tied MLM head, `predictions`); the
pooler and SOP head of a pretraining checkpoint are not used. Inputs are padded to length buckets
(powers of two from 16 up to `max_position_embeddings`), slot pieces to powers of two from 8 and
batches to powers of two up to the batch size, so that a run compiles few shapes. The jitted
functions depend only on the architecture and the special pieces (`MlmSpec`), so two checkpoints
of one architecture share them; `compilations()` counts the shapes they have compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax.data import tokenization
from albert_jax.inference.loading import InputError, Loaded
from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig
from albert_jax.train import warm_start

MIN_LENGTH_BUCKET = 16
MIN_SLOT_BUCKET = 8


def next_power_of_two(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


def length_bucket(length: int, limit: int) -> int:
  """The padded sequence length of an input of `length` pieces (a power of two, at most limit)."""
  return min(limit, max(MIN_LENGTH_BUCKET, next_power_of_two(length)))


def slot_bucket(pieces: int, length: int) -> int:
  """The padded number of slot pieces: a power of two from MIN_SLOT_BUCKET, at most length."""
  return min(length, max(MIN_SLOT_BUCKET, next_power_of_two(pieces)))


def batch_bucket(rows: int, batch_size: int) -> int:
  """The padded batch of `rows` inputs: a power of two, at most batch_size."""
  return min(batch_size, next_power_of_two(rows))


def join_pieces(pieces: list[str]) -> str:
  """SentencePiece pieces -> text: "▁" starts a word, any other piece continues the one before."""
  return "".join(pieces).replace(tokenization.SPIECE_UNDERLINE, " ").strip()


def input_labels(texts: Sequence[str], where: Optional[Sequence[str]]) -> list[str]:
  """The label of every input in error messages (default "input N"), the inputs checked."""
  if isinstance(texts, str) or not texts:
    raise InputError("no input texts: pass a non-empty list of strings")
  where = list(where) if where is not None else [f"input {i + 1}" for i in range(len(texts))]
  if len(where) != len(texts):
    raise InputError(f"{len(where)} input labels for {len(texts)} inputs")
  return where


def check_batch_size(batch_size: int) -> None:
  if not isinstance(batch_size, int) or batch_size < 1:
    raise InputError(f"batch_size={batch_size!r}: must be a positive integer")


@dataclasses.dataclass(frozen=True)
class MlmSpec:
  """What compiled code depends on: the architecture and the special pieces' ids (hashable)."""

  config: ModelConfig
  mask_id: int
  control_ids: tuple[int, ...]   # <pad>, <unk>, [CLS], [SEP], [MASK]: never generated

  def logits(self, params: dict, ids: jax.Array, attention_mask: jax.Array,
             positions: jax.Array) -> jax.Array:
    """MLM logits [B, P, V] (float32) at `positions` [B, P] of `ids` [B, T]."""
    return modeling.AlbertForMaskedLM(self.config).apply(
        {"params": params}, ids, attention_mask, masked_positions=positions)["mlm_logits"]

  def banned(self) -> jax.Array:
    """[V] bool: the control pieces."""
    return jnp.zeros((self.config.vocab_size,), bool).at[jnp.array(self.control_ids)].set(True)


# (name, spec) -> the jitted function, shared by every MaskedLM of that architecture.
_JITTED: dict[tuple[str, MlmSpec], Any] = {}


@dataclasses.dataclass
class MaskedLM:
  """Encoder + MLM head parameters, the tokenizer, and the jitted functions run on them."""

  config: Any                     # a ModelConfig or anything ModelConfig.from_any takes
  params: dict                    # a checkpoint's parameters; needs `albert` and `predictions`
  tokenizer: tokenization.SentencePieceTokenizer
  name: str = "the checkpoint"    # used in error messages (e.g. the checkpoint's path)

  def __post_init__(self):
    self.config = ModelConfig.from_any(self.config)
    self.params = nn.unbox(self.params)  # e.g. straight from model.init (logical partitioning)
    if "predictions" not in self.params:
      raise InputError(f"{self.name} has no MLM head ('predictions' parameters; its parts: "
                       f"{sorted(self.params)}): generation and scoring need a pretraining "
                       "checkpoint or a Hugging Face AlbertForMaskedLM/AlbertForPreTraining")
    if self.tokenizer.vocab_size != self.config.vocab_size:
      raise InputError(f"vocabulary mismatch: the SentencePiece model {self.tokenizer.model_file}"
                       f" has {self.tokenizer.vocab_size} pieces but {self.name} has vocab_size "
                       f"{self.config.vocab_size}")
    self.model = modeling.AlbertForMaskedLM(self.config)
    abstract = nn.unbox(jax.eval_shape(self.model.init, jax.random.PRNGKey(0),
                                       jnp.zeros((1, 2), jnp.int32))["params"])
    try:  # the pooler and SOP head of a pretraining checkpoint are left out here
      fitted = warm_start.fit_params(self.params, abstract, False)
    except ValueError as e:
      raise InputError(f"{self.name} does not fit a masked-LM model: {e}") from None
    self.params = jax.device_put(fitted)
    tok = self.tokenizer
    control = {tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id}
    self.spec = MlmSpec(self.config, tok.mask_id, tuple(sorted(control)))
    self._used: set[tuple[str, MlmSpec]] = set()

  @classmethod
  def from_loaded(cls, loaded: Loaded) -> "MaskedLM":
    """The MLM of a checkpoint read by `loading.load` (a fine-tuned one is refused)."""
    if "predictions" not in loaded.params and loaded.task is not None:
      raise InputError(f"--checkpoint {loaded.path} is fine-tuned for {loaded.task.family} (no "
                       "MLM head): generation and scoring need a pretraining checkpoint")
    return cls(loaded.model_config, loaded.params, loaded.tokenizer, f"--checkpoint {loaded.path}")

  @property
  def max_length(self) -> int:
    return self.config.max_position_embeddings

  def jit(self, name: str, make: Callable[[MlmSpec], Callable], **jit_kwargs) -> Callable:
    """`jax.jit(make(spec))`, built once per name and architecture, so compiles can be counted."""
    key = (name, self.spec)
    if key not in _JITTED:
      _JITTED[key] = jax.jit(make(self.spec), **jit_kwargs)
    self._used.add(key)
    return _JITTED[key]

  def compilations(self) -> int:
    """Shapes (and static settings) compiled so far by the jitted functions this model used."""
    return sum(_JITTED[k]._cache_size() for k in self._used)  # pylint: disable=protected-access
