"""The student's training state: parameters, BatchNorm statistics, optimiser state, step."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a training step updates; a pytree, so it shards and checkpoints as one."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation) -> "TrainState":
    params = variables["params"]
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

  def variables(self) -> dict:
    """The Flax variables for `module.apply`."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}


def make_schedule(lr: float, schedule: str, total_steps: int, warmup_steps: int = 0):
  """A constant or warmup-cosine learning rate, as a function of the step."""
  if schedule == "constant":
    return optax.constant_schedule(lr)
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup_steps, 1),
                                              max(total_steps, warmup_steps + 1))
  raise ValueError(f"schedule {schedule!r} not in ('constant', 'cosine')")


def make_optimizer(name: str, schedule, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """Adam(W) or SGD with momentum over a learning-rate `schedule` (paper: Adam, 3e-4, constant).

  The authors' configuration named weight decay 1e-4 and a cosine schedule, but passed neither
  effectively; `weight_decay=0` and a constant schedule reproduce what actually ran.
  """
  if name == "adam":
    return optax.adamw(schedule, weight_decay=weight_decay) if weight_decay else optax.adam(
        schedule)
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=0.9))
  raise ValueError(f"optimizer {name!r} not in ('adam', 'sgd')")


def apply_train(module, params, batch_stats, images):
  """`module` in training mode: `(outputs, new_batch_stats)`; BatchNorm-free modules too."""
  if not batch_stats:
    return module.apply({"params": params}, images, train=True), batch_stats
  out, updates = module.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                              mutable=["batch_stats"])
  return out, updates["batch_stats"]


def update(state: TrainState, tx: optax.GradientTransformation, grads, new_stats) -> TrainState:
  """One optimiser update of `state` with `grads` and the new BatchNorm statistics."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                    batch_stats=new_stats, opt_state=opt_state)
