"""The Job: everything that defines a compiled train step (mesh, rules, model, objective,
optimizer, shardings), built from a config alone, and the checks of the config fields that every
training job shares (`training.*`, `partitioning.*`, the checkpoint fields).

Pretraining (train/pretrain.py) and fine-tuning (train/finetune.py) build their Job with `build`
from their model, objective and batch spec; the loop (train/loop.py) trains it and
`albert_jax.plan` compiles the same Job ahead of time for other devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from albert_jax.model.config import ModelConfig
from albert_jax.train import optim
from albert_jax.train import partitioning
from albert_jax.train import step as trainer

# Feature name -> (shape without the batch axis, dtype) of a training batch.
BatchSpec = Mapping[str, tuple[tuple[int, ...], Any]]


@dataclasses.dataclass
class Job:
  """Everything that defines the compiled train step, built from the config alone (no data).

  Training and `albert_jax.plan` (ahead-of-time compilation for other devices) use the same Job,
  so the program compiled for planning is the one that trains.
  """

  config: ml_collections.ConfigDict
  model_config: ModelConfig
  mesh: Any
  rules: Any
  model: nn.Module
  objective: trainer.Objective
  init_params: Callable[[jax.Array], Any]
  tx: Any
  learning_rate_fn: Any
  rng: Any
  batch_spec: BatchSpec
  flops_per_example: float    # analytic training FLOPs (forward + backward) of one example
  head: str = ""              # the task head's parameter sub-tree (fine-tuning)

  def abstract_state(self):
    return trainer.abstract_train_state(self.init_params, self.tx, self.mesh, self.rules,
                                        jax.random.fold_in(self.rng, 0))

  def create_state(self):
    return trainer.create_train_state(self.init_params, self.tx, self.mesh, self.rules,
                                      jax.random.fold_in(self.rng, 0))

  def abstract_step_args(self):
    """(state shardings, abstract state, batch, rng): the train step's arguments as shapes with
    shardings, for compiling it ahead of time."""
    abstract, shardings = self.abstract_state()
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         abstract, shardings)
    return (shardings, state, self.abstract_batch(),
            jax.ShapeDtypeStruct(self.rng.shape, self.rng.dtype))

  def jitted_train_step(self, state_shardings):
    """The jitted step."""
    step = trainer.make_train_step(self.objective, self.tx, self.learning_rate_fn,
                                   self.config.training.microbatches)
    return trainer.jit_train_step(step, state_shardings, self.mesh)

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch as the step sees it (shapes, dtypes and sharding)."""
    sharding = partitioning.batch_sharding(self.mesh)
    b = self.config.training.global_batch_size
    return {k: jax.ShapeDtypeStruct((b,) + tuple(shape), dtype, sharding=sharding)
            for k, (shape, dtype) in self.batch_spec.items()}

  @property
  def tokens_per_example(self) -> int:
    """Input tokens of one example (a multiple-choice example holds one sequence per choice)."""
    size = 1
    for n in self.batch_spec["input_ids"][0]:
      size *= n
    return size


def build(config: ml_collections.ConfigDict, model: nn.Module, objective: trainer.Objective,
          batch_spec: BatchSpec, flops_per_example: float, head: str = "",
          devices: Optional[Sequence[Any]] = None) -> Job:
  """The Job of `model` trained on `objective` with the config's optimizer, mesh and seed.

  The parameters are initialized from one example of `batch_spec`'s `input_ids` shape; the
  optimizer's stacked (scanned) axes come from their shapes.
  """
  t = config.training
  mesh = partitioning.create_mesh(config.partitioning.mesh, devices)
  init_ids = jnp.zeros((1,) + tuple(batch_spec["input_ids"][0]), jnp.int32)
  init_params = lambda rng: model.init(rng, init_ids)["params"]
  boxed_shapes = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  tx = optim.make_optimizer(config.optimizer, total_steps=t.total_steps,
                            stacked_axes=optim.stacked_axes_from_params(boxed_shapes))
  return Job(config=config, model_config=ModelConfig.from_any(config.model), mesh=mesh,
             rules=config.partitioning.rules, model=model, objective=objective,
             init_params=init_params, tx=tx,
             learning_rate_fn=optim.make_schedule(config.optimizer, t.total_steps),
             rng=jax.random.PRNGKey(config.seed), batch_spec=dict(batch_spec),
             flops_per_example=flops_per_example, head=head)


def validate_training(config: ml_collections.ConfigDict, num_processes: int,
                      evaluates_batches: bool) -> Any:
  """Fails before compiling on `training.*`, `partitioning.*` and checkpoint fields that cannot
  work, naming the field; returns the mesh of this run's devices.

  `evaluates_batches`: whether the run evaluates in global batches of `training.eval_batch_size`
  (which must then split like the training batch).
  """
  t = config.training
  trainer.check_loop_fields(t)  # intervals, counts, checkpoint_every_steps, keep_checkpoints
  mesh = partitioning.create_mesh(config.partitioning.mesh)
  dp = partitioning.data_parallel_size(mesh)
  if t.global_batch_size % dp:
    raise ValueError(f"config field 'training.global_batch_size'={t.global_batch_size} is not "
                     f"divisible by the data-parallel size {dp} (mesh data x fsdp)")
  if t.global_batch_size % num_processes:
    raise ValueError(f"config field 'training.global_batch_size'={t.global_batch_size} is not "
                     f"divisible by the number of processes {num_processes}")
  if t.global_batch_size % t.microbatches or (t.global_batch_size // t.microbatches) % dp:
    raise ValueError(f"config field 'training.microbatches'={t.microbatches}: each microbatch "
                     f"of a {t.global_batch_size} batch must split over {dp} data-parallel devices")
  if evaluates_batches and (t.eval_batch_size % dp or t.eval_batch_size % num_processes):
    raise ValueError(f"config field 'training.eval_batch_size'={t.eval_batch_size} is not "
                     f"divisible by the data-parallel size {dp} and the number of processes "
                     f"{num_processes}")
  return mesh
