"""LAMB and AdamW with the official ALBERT semantics, the official LR schedule, and a builder.

Reference: google-research/albert `lamb_optimizer.py` (LAMB) and `optimization.py` (AdamW, the
schedule). Both optimizers differ from optax's stock ones on purpose:

- no Adam bias correction: m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2, u = m / (sqrt(v) + eps);
- decoupled weight decay added to the update, u += wd * w, except for excluded names;
- LAMB only: trust ratio r = ||w|| / ||u|| (1 if either norm is 0, never clipped), except for
  excluded names; then w -= lr * r * u.

Exclusion is a regex *search* on the parameter's name, as in TF. Our names are the leaf paths joined
with "/" (e.g. `albert/embeddings/LayerNorm/scale`, `.../full_layer_layer_norm/bias`,
`predictions/bias`); with the official patterns ("LayerNorm", "layer_norm", "bias") they select
exactly the official excluded set: every LayerNorm gamma/beta, every bias (incl.
`cls/predictions/output_bias` = our `predictions/bias`), and nothing else (embedding tables and all
kernels, incl. `sop_classifier/classifier/kernel`, are decayed and adapted).

Stacked leaves. One official variable is one tensor, but our encoder stacks layers: every encoder
leaf has a leading `groups` axis, and unshared sub-trees also a `layers` axis (modeling.py). The
trust-ratio norms must be per official variable, i.e. over the non-stacked axes only. `lamb` takes
`stacked_axes`, a pytree like the params whose leaves are the number of leading stacked axes, built
from the logical axis names of the boxed params by `stacked_axes_from_params`.

Step counting follows the official code: the k-th update (k = 0, 1, ...) uses lr(k), so with warmup
the first update only moves the Adam moments (lr(0) = 0).
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import PartitionSpec

Params = Any
# A pytree of ints like the params, or a function params -> that pytree (like optax masks).
StackedAxes = Union[Params, Callable[[Params], Params], None]

# Official `exclude_from_weight_decay` (also used for layer adaptation, since LAMB's
# `exclude_from_layer_adaptation` defaults to it).
OFFICIAL_EXCLUDE = ("LayerNorm", "layer_norm", "bias")
# Logical axis names (and module names) of our stacked encoder axes, see modeling.py.
STACKED_AXIS_NAMES = ("groups", "layers")
OPTIMIZERS = ("lamb", "adamw")


# ----------------------------------------------------------------------------------------------
# Parameter names, exclusion, stacked axes.
# ----------------------------------------------------------------------------------------------

def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_names(params: Params) -> Params:
  """The pytree of "/"-joined leaf paths: the names exclusion patterns are matched against."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "/".join(_key_name(k) for k in path), params)


def is_excluded(name: str, exclude: Sequence[str]) -> bool:
  """True when a pattern is found in the name (official `_do_use_weight_decay`, negated)."""
  return any(re.search(pattern, name) is not None for pattern in exclude)


def stacked_axes_from_params(boxed_params: Params) -> Params:
  """Number of leading stacked axes (`groups`, `layers`) of every leaf, from its logical names.

  Args:
    boxed_params: params as returned by `model.init` (or `jax.eval_shape` of it) before
      `nn.unbox`, i.e. with `nn.LogicallyPartitioned` leaves; a tree of logical `PartitionSpec`s
      (`nn.get_partition_spec`) works too. Leaves without names count as unstacked.

  Returns:
    A pytree with the structure of the unboxed params and int leaves, for `lamb(stacked_axes=...)`.
  """

  def count(leaf):
    names = tuple(leaf) if isinstance(leaf, PartitionSpec) else getattr(leaf, "names", ())
    lead = 0
    while lead < len(names) and names[lead] in STACKED_AXIS_NAMES:
      lead += 1
    if any(n in STACKED_AXIS_NAMES for n in names[lead:]):
      raise ValueError(f"stacked axis names {STACKED_AXIS_NAMES} must lead the logical axes, got "
                       f"{names}")
    return lead

  is_box = lambda x: isinstance(x, (nn.meta.AxisMetadata, PartitionSpec))
  return jax.tree.map(count, boxed_params, is_leaf=is_box)


def _resolve_stacked_axes(stacked_axes: StackedAxes, params: Params) -> Params:
  """stacked_axes as a pytree of ints matching `params`, validated against the leaf shapes."""
  if stacked_axes is None:
    # Every leaf is one official variable. Refuse our stacked encoder, whose trust ratio would
    # silently mix layers.
    for name in jax.tree.leaves(param_names(params)):
      if set(name.split("/")) & set(STACKED_AXIS_NAMES):
        raise ValueError(f"parameter {name!r} has stacked layer axes; pass "
                         "stacked_axes=stacked_axes_from_params(boxed_params) to lamb")
    return jax.tree.map(lambda _: 0, params)
  tree = stacked_axes(params) if callable(stacked_axes) else stacked_axes
  if jax.tree.structure(tree) != jax.tree.structure(params):
    raise ValueError("stacked_axes must have the structure of the params passed to the optimizer "
                     f"(got {jax.tree.structure(tree)} for params {jax.tree.structure(params)})")

  def check(name, k, p):
    if not isinstance(k, int) or not 0 <= k <= p.ndim:
      raise ValueError(f"stacked_axes for {name!r} must be an int in [0, {p.ndim}], got {k!r}")
    return k

  return jax.tree.map(check, param_names(params), tree, params)


# ----------------------------------------------------------------------------------------------
# The update.
# ----------------------------------------------------------------------------------------------

class OfficialAdamState(NamedTuple):
  """The official slots: `<var>/adam_m` and `<var>/adam_v` (float32, like TF)."""

  m: Params
  v: Params


def _trust_ratio(w: jax.Array, u: jax.Array, stacked: int) -> jax.Array:
  """||w|| / ||u|| per official variable (norms over the non-stacked axes); 1 if either is 0."""
  axes = tuple(range(stacked, w.ndim))
  w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
  u_norm = jnp.sqrt(jnp.sum(jnp.square(u), axis=axes, keepdims=True))
  # Guard the division so a zero norm never produces inf/nan (even in the unselected branch).
  return jnp.where((w_norm > 0) & (u_norm > 0), w_norm / jnp.where(u_norm > 0, u_norm, 1.0), 1.0)


def scale_by_official_adam(b1: float, b2: float, eps: float, weight_decay: float,
                           exclude: Sequence[str], layer_adaptation: bool,
                           stacked_axes: StackedAxes = None) -> optax.GradientTransformation:
  """The official per-variable direction u (or r*u for LAMB), before the learning rate.

  Needs `params` in `update`. Exclusions and stacked axes depend only on the tree's names and
  shapes, so they are resolved in Python at trace time (static under jit).
  """
  exclude = tuple(exclude)

  def init_fn(params):
    if layer_adaptation:  # fail at init, not at the first step, on a wrong stacked_axes
      _resolve_stacked_axes(stacked_axes, params)
    zeros = lambda p: jnp.zeros(p.shape, jnp.float32)
    return OfficialAdamState(m=jax.tree.map(zeros, params), v=jax.tree.map(zeros, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("the official LAMB/AdamW update needs params (weight decay, trust ratio)")
    stacked = (_resolve_stacked_axes(stacked_axes, params) if layer_adaptation
               else jax.tree.map(lambda _: 0, params))

    def one(name, g, m, v, w, k):
      g = g.astype(jnp.float32)
      w32 = w.astype(jnp.float32)
      m = b1 * m + (1.0 - b1) * g
      v = b2 * v + (1.0 - b2) * jnp.square(g)
      u = m / (jnp.sqrt(v) + eps)
      excluded = is_excluded(name, exclude)
      if weight_decay and not excluded:
        u = u + weight_decay * w32
      if layer_adaptation and not excluded:
        u = _trust_ratio(w32, u, k) * u
      return u.astype(w.dtype), m, v

    out = jax.tree.map(one, param_names(params), updates, state.m, state.v, params, stacked)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], params, out)
    return pick(0), OfficialAdamState(m=pick(1), v=pick(2))

  return optax.GradientTransformation(init_fn, update_fn)


def lamb(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-6, weight_decay: float = 0.01,
         exclude: Sequence[str] = OFFICIAL_EXCLUDE,
         stacked_axes: StackedAxes = None) -> optax.GradientTransformation:
  """Official ALBERT LAMB (`lamb_optimizer.LAMBOptimizer`): w -= lr * r * (m/(sqrt(v)+eps) + wd*w).

  Args:
    learning_rate: a float or a schedule of the update count (see `learning_rate_schedule`).
    b1, b2, eps: Adam moments, without bias correction (official values 0.9, 0.999, 1e-6).
    weight_decay: decoupled decay rate (official 0.01); 0 disables it.
    exclude: regexes searched in the "/"-joined parameter path; matching parameters get neither
      weight decay nor the trust ratio (official: both use the same list).
    stacked_axes: leading stacked axes per leaf (`stacked_axes_from_params`), or a function of
      the params returning them; None only for trees without stacked layers.
  """
  return optax.chain(
      scale_by_official_adam(b1, b2, eps, weight_decay, exclude, True, stacked_axes),
      optax.scale_by_learning_rate(learning_rate))


def adamw(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-6, weight_decay: float = 0.01,
          exclude: Sequence[str] = OFFICIAL_EXCLUDE) -> optax.GradientTransformation:
  """Official `AdamWeightDecayOptimizer` (fine-tuning): LAMB without the trust ratio."""
  return optax.chain(
      scale_by_official_adam(b1, b2, eps, weight_decay, exclude, False),
      optax.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# Learning-rate schedule.
# ----------------------------------------------------------------------------------------------

def learning_rate_schedule(peak: float, warmup_steps: int, total_steps: int, power: float = 1.0,
                           start_warmup_step: int = 0) -> optax.Schedule:
  """Official warmup + polynomial decay (google-research/albert `optimization.create_optimizer`).

  lr(t) = peak * (t - s) / W               if warmup_steps W > 0 and t - s < W
        = peak * (1 - min(t, T) / T)^power  otherwise (TF polynomial_decay to 0, from t = 0)

  So lr(0) = 0, the end of warmup is peak * (1 - W/T)^power (no jump back to peak), lr(T) = 0.
  One deliberate difference: for t < s the official formula gives a negative rate; we return 0.
  """
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  if warmup_steps < 0 or start_warmup_step < 0:
    raise ValueError(f"warmup_steps and start_warmup_step must be >= 0, got {warmup_steps}, "
                     f"{start_warmup_step}")

  def schedule(count):
    count = jnp.asarray(count, jnp.int32)
    # 1 - min(t, T)/T as (T - min(t, T))/T: the integer numerator makes lr(T) exactly 0 even
    # when XLA turns the division into a multiplication by 1/T.
    remaining = (total_steps - jnp.minimum(count, total_steps)).astype(jnp.float32)
    lr = peak * (remaining / float(total_steps)) ** power
    if warmup_steps:
      since = count - start_warmup_step  # integer comparison, as in TF
      warm = peak * jnp.maximum(since, 0).astype(jnp.float32) / float(warmup_steps)
      lr = jnp.where(since < warmup_steps, warm, lr)
    return lr

  return schedule


# ----------------------------------------------------------------------------------------------
# Config section and builder.
# ----------------------------------------------------------------------------------------------

def default_config() -> ml_collections.ConfigDict:
  """The `optimizer` section of a run config, with the paper's pretraining values (§4.5)."""
  c = ml_collections.ConfigDict()
  c.name = "lamb"              # "lamb" (pretraining) or "adamw" (official fine-tuning optimizer)
  c.learning_rate = 0.00176    # peak learning rate (paper: 0.00176 at batch 4096)
  c.warmup_steps = 3125        # linear warmup from 0 over this many updates (0: no warmup)
  c.start_warmup_step = 0      # update count at which the warmup starts (official flag)
  # Updates until the rate decays to 0; None takes the total from the caller (the trainer).
  c.total_steps = ml_collections.config_dict.placeholder(int)
  c.poly_power = 1.0           # decay exponent; 1.0 = linear decay (official)
  c.weight_decay = 0.01        # decoupled weight decay rate; 0 disables it
  c.b1 = 0.9                   # first-moment decay (no bias correction, official)
  c.b2 = 0.999                 # second-moment decay
  c.eps = 1e-6                 # added to sqrt(v)
  c.clip_norm = 1.0            # global-norm gradient clipping before the optimizer; 0 disables it
  # Regexes searched in "/"-joined parameter paths: no weight decay and no LAMB trust ratio.
  c.exclude = OFFICIAL_EXCLUDE
  return c


_FIELDS = tuple(default_config().keys())


def _fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The section as a dict; missing or unknown fields are errors naming them."""
  given = dict(config.items())
  missing = sorted(set(_FIELDS) - set(given))
  unknown = sorted(set(given) - set(_FIELDS))
  if missing or unknown:
    raise ValueError(f"optimizer config: missing field(s) {missing}, unknown field(s) {unknown}; "
                     f"fields are {sorted(_FIELDS)}")
  return given


def _is_int(x: Any) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _fail(field: str, msg: str):
  raise ValueError(f"optimizer config field 'optimizer.{field}': {msg}")


def make_schedule(config: ml_collections.ConfigDict,
                  total_steps: Optional[int] = None) -> optax.Schedule:
  """The learning-rate schedule of an `optimizer` section (also for logging the rate).

  `total_steps` from the caller is used when `config.total_steps` is None; giving both with
  different values is an error.
  """
  c = _fields(config)
  total = c["total_steps"]
  if total is None:
    total = total_steps
  elif total_steps is not None and total_steps != total:
    _fail("total_steps", f"is {total} but the caller passed total_steps={total_steps}")
  if total is None:
    _fail("total_steps", "is None and the caller gave no total_steps")
  if not _is_int(total) or total <= 0:
    _fail("total_steps", f"must be a positive integer, got {total!r}")
  if not c["learning_rate"] > 0:
    _fail("learning_rate", f"must be positive, got {c['learning_rate']}")
  for field in ("warmup_steps", "start_warmup_step"):
    if not _is_int(c[field]) or c[field] < 0:
      _fail(field, f"must be a non-negative integer, got {c[field]!r}")
  if c["start_warmup_step"] + c["warmup_steps"] > total:
    _fail("warmup_steps", f"start_warmup_step + warmup_steps = "
          f"{c['start_warmup_step'] + c['warmup_steps']} exceeds total_steps={total}")
  if not c["poly_power"] > 0:
    _fail("poly_power", f"must be positive, got {c['poly_power']}")
  return learning_rate_schedule(c["learning_rate"], c["warmup_steps"], total, c["poly_power"],
                                c["start_warmup_step"])


def make_optimizer(config: ml_collections.ConfigDict, total_steps: Optional[int] = None,
                   stacked_axes: StackedAxes = None) -> optax.GradientTransformation:
  """clip_by_global_norm(clip_norm) -> LAMB or AdamW with the official schedule.

  Args:
    config: the `optimizer` section (fields and meaning: `default_config`).
    total_steps: number of updates, used when `config.total_steps` is None.
    stacked_axes: for LAMB, leading stacked axes per leaf (`stacked_axes_from_params`);
      AdamW has no per-variable norms and does not need them.
  """
  c = _fields(config)
  schedule = make_schedule(config, total_steps)
  if c["name"] not in OPTIMIZERS:
    _fail("name", f"unknown optimizer {c['name']!r}; allowed: {OPTIMIZERS}")
  for field in ("b1", "b2"):
    if not 0.0 <= c[field] < 1.0:
      _fail(field, f"must be in [0, 1), got {c[field]}")
  if not c["eps"] > 0:
    _fail("eps", f"must be positive, got {c['eps']}")
  if c["weight_decay"] < 0:
    _fail("weight_decay", f"must be >= 0, got {c['weight_decay']}")
  if c["clip_norm"] < 0:
    _fail("clip_norm", f"must be >= 0 (0 disables clipping), got {c['clip_norm']}")
  exclude = tuple(c["exclude"])
  for pattern in exclude:
    try:
      re.compile(pattern)
    except re.error as e:
      _fail("exclude", f"invalid regex {pattern!r}: {e}")
  common = dict(learning_rate=schedule, b1=c["b1"], b2=c["b2"], eps=c["eps"],
                weight_decay=c["weight_decay"], exclude=exclude)
  tx = (lamb(stacked_axes=stacked_axes, **common) if c["name"] == "lamb" else adamw(**common))
  if c["clip_norm"] == 0:
    return tx
  return optax.chain(optax.clip_by_global_norm(c["clip_norm"]), tx)
