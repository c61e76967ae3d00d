"""Device mesh and shardings, declared once.

rrjax uses one mesh axis, "data": the global batch is split over every device (of every
process); parameters, optimiser state and the frozen teacher are replicated. The step code is
written as if for one device; XLA inserts the collectives, so a loss over the global batch uses
negatives from all shards and is the same number on 1 or N devices.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (-1: all of them)."""
  devices = jax.devices()
  if num_devices == -1:
    num_devices = len(devices)
  if not 1 <= num_devices <= len(devices):
    raise ValueError(f"mesh.data={num_devices} but {len(devices)} devices are visible")
  return Mesh(np.asarray(devices[:num_devices]), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{field}={batch_size} is not divisible by the {n} devices of the mesh")


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Builds global arrays from this process's slice of a batch (leading axis = batch)."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local)


def replicate(tree, mesh: Mesh):
  """Places a host pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def jit_data_parallel(fn, mesh: Mesh, num_args: int, batch_argnums: tuple[int, ...],
                      donate_argnums: tuple[int, ...] = (0,), num_outputs: int = 2):
  """Jits `fn` with its `batch_argnums` arguments split on the data axis, the rest replicated.

  Outputs are replicated (states and scalar metrics).
  """
  rep, data = replicated(mesh), batch_sharding(mesh)
  in_shardings = tuple(data if i in batch_argnums else rep for i in range(num_args))
  return jax.jit(fn, in_shardings=in_shardings, out_shardings=(rep,) * num_outputs,
                 donate_argnums=donate_argnums)
