"""The training machinery shared by pretraining and fine-tuning.

Pure pieces: `TrainState`, an `Objective` (how a task turns a batch into additive statistics and a
loss), `make_train_step` (gradient accumulation over microbatches, NaN guard) and `make_eval_step`.
Stateful pieces: `create_train_state` (parameters and optimizer state created sharded) and
`compile_step` (ahead-of-time compilation with the memory analysis logged).

Exact gradient accumulation: a task's loss is a sum over examples divided by normalizers that
depend on the batch only (e.g. the sum of MLM weights). The normalizers are taken over the whole
batch first and every microbatch's loss is divided by them, so microbatch losses and gradients add
up exactly to the full-batch ones (up to float summation order).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from albert_jax.train import partitioning

Array = jax.Array
Batch = Mapping[str, Array]


@flax.struct.dataclass
class TrainState:
  step: Array                 # int32: optimizer steps taken (skipped ones included)
  params: Any
  opt_state: Any
  skipped_steps: Array        # int32: steps whose update was dropped for a non-finite loss/grad
  nonfinite_streak: Array     # int32: consecutive such steps up to now


@dataclasses.dataclass(frozen=True)
class Objective:
  """A task's loss, written so that it accumulates exactly over microbatches and hosts.

  forward(params, batch, rng, deterministic) -> model outputs (rng None when deterministic)
  normalizers(batch) -> the loss's denominators, computed from the batch only
  loss_and_sums(outputs, batch, normalizers) -> (loss, additive statistics): the loss of this
      (micro)batch divided by the given normalizers, and sums that add up over batches
  metrics(sums) -> dict of scalars to report, from statistics summed over batches
  """

  forward: Callable[..., Any]
  normalizers: Callable[[Batch], Any]
  loss_and_sums: Callable[[Any, Batch, Any], tuple[Array, dict[str, Array]]]
  metrics: Callable[[Mapping[str, Array]], dict[str, Array]]


def abstract_train_state(init_params: Callable[[Array], Any], tx: optax.GradientTransformation,
                         mesh: Mesh, rules: Any, rng: Array) -> tuple[TrainState, Any]:
  """(abstract state, state shardings) without allocating anything.

  `init_params(rng)` returns the model's boxed parameters (nn.Partitioned leaves): their logical
  names give the parameter shardings; optimizer-state leaves that mirror a parameter (same path
  and shape, e.g. Adam moments) take that parameter's sharding, the rest is replicated.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules_tuple(rules)):
    param_shardings = partitioning.logical_shardings(jax.eval_shape(init_params, rng), mesh,
                                                     rules)
    abstract = jax.eval_shape(_state_init(init_params, tx), rng)
  return abstract, _state_shardings(abstract, param_shardings, partitioning.replicated(mesh))


def _state_init(init_params, tx):
  def init(rng):
    params = nn.unbox(init_params(rng))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), skipped_steps=zero,
                      nonfinite_streak=zero)
  return init


def create_train_state(init_params: Callable[[Array], Any], tx: optax.GradientTransformation,
                       mesh: Mesh, rules: Any, rng: Array) -> tuple[TrainState, Any]:
  """Creates the train state already sharded (see `abstract_train_state`)."""
  _, shardings = abstract_train_state(init_params, tx, mesh, rules, rng)
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules_tuple(rules)):
    state = jax.jit(_state_init(init_params, tx), out_shardings=shardings)(rng)
  return state, shardings


def _dict_path(path) -> tuple[str, ...]:
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def _state_shardings(abstract: TrainState, param_shardings: Any, replicated: NamedSharding):
  by_path = {}
  for path, sharding in jax.tree_util.tree_leaves_with_path(param_shardings):
    by_path[_dict_path(path)] = sharding
  shapes = {_dict_path(p): a.shape for p, a in jax.tree_util.tree_leaves_with_path(
      abstract.params)}

  def opt_sharding(path, leaf):
    key = _dict_path(path)
    if key in by_path and shapes[key] == leaf.shape:
      return by_path[key]
    return replicated

  return TrainState(step=replicated, params=param_shardings,
                    opt_state=jax.tree_util.tree_map_with_path(opt_sharding, abstract.opt_state),
                    skipped_steps=replicated, nonfinite_streak=replicated)


def split_microbatches(batch: Batch, num: int) -> Batch:
  """[B, ...] -> [num, B/num, ...] taking rows m, m+num, ... for microbatch m.

  Strided rows keep every device's contiguous block of the (data-sharded) batch dimension on that
  device, so splitting needs no communication.
  """
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"batch of {x.shape[0]} is not divisible by config field "
                       f"'training.microbatches'={num}")
    return jnp.swapaxes(x.reshape((x.shape[0] // num, num) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, dict(batch))


def make_train_step(objective: Objective, tx: optax.GradientTransformation,
                    learning_rate_fn: Callable[[Array], Array], microbatches: int = 1):
  """(state, batch, rng) -> (state, metrics). Non-finite loss or gradients skip the update."""

  def step_fn(state: TrainState, batch: Batch, rng: Array):
    rng = jax.random.fold_in(rng, state.step)
    normalizers = objective.normalizers(batch)

    def grads_and_sums(params, micro, micro_rng):
      def loss_fn(p):
        return objective.loss_and_sums(objective.forward(p, micro, micro_rng, False), micro,
                                       normalizers)
      (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      return grads, dict(sums, loss=loss)

    if microbatches == 1:
      grads, sums = grads_and_sums(state.params, batch, rng)
    else:
      def accumulate(carry, xs):
        index, micro = xs
        grads, sums = grads_and_sums(state.params, micro, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

      split = split_microbatches(batch, microbatches)
      first = jax.tree.map(lambda x: x[0], split)
      zeros = jax.tree.map(jnp.zeros_like,
                           jax.eval_shape(grads_and_sums, state.params, first, rng))
      (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), split))

    loss = sums.pop("loss")
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    # A skipped step keeps the parameters and moments but still advances the optimizer's update
    # counters (its integer leaves): the learning rate follows the step count, skipped steps
    # included, like the official global_step, so it is the one `learning_rate_fn(step)` reports.
    keep_moments = lambda new, old: jax.tree.map(
        lambda n, o: n if jnp.issubdtype(n.dtype, jnp.integer) else jnp.where(finite, n, o),
        new, old)
    not_finite = (~finite).astype(jnp.int32)
    new_state = state.replace(
        step=state.step + 1, params=keep(new_params, state.params),
        opt_state=keep_moments(new_opt_state, state.opt_state),
        skipped_steps=state.skipped_steps + not_finite,
        nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1))
    metrics = dict(objective.metrics(sums), loss=loss, grad_norm=grad_norm,
                   learning_rate=learning_rate_fn(state.step), finite=finite,
                   skipped_steps=new_state.skipped_steps,
                   nonfinite_streak=new_state.nonfinite_streak)
    return new_state, metrics

  return step_fn


# Counts and intervals of the training loop (config section `training`) that must be >= 1.
_POSITIVE_LOOP_FIELDS = ("global_batch_size", "microbatches", "total_steps", "log_every_steps",
                         "eval_every_steps", "eval_batch_size", "keep_checkpoints",
                         "max_nonfinite_steps")


def check_loop_fields(training: Mapping[str, Any]) -> None:
  """Fails on loop settings that cannot work (a zero interval, keep 0 checkpoints), naming the
  field; `checkpoint_every_steps` may be 0 (no periodic saves)."""
  for field in _POSITIVE_LOOP_FIELDS:
    if training[field] < 1:
      raise ValueError(f"config field 'training.{field}'={training[field]} must be at least 1")
  if training["checkpoint_every_steps"] < 0:
    raise ValueError(f"config field 'training.checkpoint_every_steps'="
                     f"{training['checkpoint_every_steps']} must be >= 0 (0: no periodic saves)")


class NonFiniteLossError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


class NonFiniteGuard:
  """Stops a run after `limit` consecutive non-finite steps (`training.max_nonfinite_steps`).

  Every step's streak is read, one step behind: `after_step` is called once the next step is
  queued, so reading the previous one's streak does not leave the device idle. A run of skipped
  steps between two logging steps is caught too.
  """

  def __init__(self, limit: int):
    self.limit = limit
    self._previous = None

  def after_step(self, step_metrics: Mapping[str, Array], step: int) -> None:
    """Checks the step queued before this one, and remembers this one."""
    if self._previous is not None:
      self.check(*self._previous)
    self._previous = (step_metrics, step)

  def check(self, step_metrics: Mapping[str, Array], step: int) -> None:
    """Raises NonFiniteLossError if the streak up to `step` reached the limit (blocks on it)."""
    streak = int(jax.device_get(step_metrics["nonfinite_streak"]))
    if streak >= self.limit:
      raise NonFiniteLossError(
          f"{streak} consecutive steps up to step {step} had a non-finite loss or gradient "
          f"(config field 'training.max_nonfinite_steps'={self.limit}); the last checkpoint "
          "holds the last good parameters")


def make_eval_step(objective: Objective):
  """(params, batch) -> additive statistics, to be summed over the eval set (then `metrics`)."""

  def eval_fn(params, batch):
    outputs = objective.forward(params, batch, None, True)
    return objective.loss_and_sums(outputs, batch, objective.normalizers(batch))[1]

  return eval_fn


def jit_train_step(step_fn, state_shardings: Any, mesh: Mesh):
  """The step jitted with in/out shardings (batch split over the data axes) and donated state."""
  return jax.jit(step_fn, in_shardings=(state_shardings, partitioning.batch_sharding(mesh),
                                        partitioning.replicated(mesh)),
                 out_shardings=(state_shardings, partitioning.replicated(mesh)),
                 donate_argnums=(0,))


def lower_step(jitted, mesh: Mesh, rules: Any, state: Any, batch: Any, rng: Any):
  """Traces and lowers a jitted step for these (possibly abstract) arguments, not compiling it."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.rules_tuple(rules)):
    return jitted.lower(state, batch, rng)


def compile_step(jitted, mesh: Mesh, rules: Any, state: Any, batch: Any, rng: Any):
  """Compiles a jitted step once ahead of time for these (possibly abstract) arguments."""
  return lower_step(jitted, mesh, rules, state, batch, rng).compile()


def try_compile(lowered) -> tuple[Any, float]:
  """(the executable, or the compiler's one-line message when the program does not fit in device
  memory; seconds): a program too big is an answer when planning, not an error."""
  start = time.perf_counter()
  try:
    return lowered.compile(), time.perf_counter() - start
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return str(e).split("\n")[0], time.perf_counter() - start


def describe_memory(compiled) -> str:
  """One line from the compiled step's memory analysis (per device)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return "train step memory: not reported by this backend"
  return (f"train step memory per device: arguments {analysis.argument_size_in_bytes / 2**20:.1f} "
          f"MiB, outputs {analysis.output_size_in_bytes / 2**20:.1f} MiB, temporaries "
          f"{analysis.temp_size_in_bytes / 2**20:.1f} MiB")
