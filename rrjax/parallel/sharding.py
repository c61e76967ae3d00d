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
  """A 1-D mesh over the first `num_devices` devices (-1: all of them).

  With more than one process the mesh must hold every device: a smaller one could hold only
  process 0's, and the other processes' batch slices would fall outside it. The data axis lists
  the devices process by process (process 0's first), the order in which `global_batch`
  concatenates the processes' slices: checked, not assumed.

  Raises:
    ValueError: `num_devices` out of range, or not every device of a multi-process run
      (`rrjax.config.validate` names the field first), or a device order that interleaves
      processes.
  """
  devices = jax.devices()
  if num_devices == -1:
    num_devices = len(devices)
  if not 1 <= num_devices <= len(devices):
    raise ValueError(f"mesh.data={num_devices} but {len(devices)} devices are visible")
  if jax.process_count() > 1 and num_devices != len(devices):
    # `rrjax.config.validate` refuses such a config first, naming the field.
    raise ValueError(f"mesh.data={num_devices}: a run of {jax.process_count()} processes "
                     f"needs all {len(devices)} devices in the mesh")
  check_process_order(devices[:num_devices])
  return Mesh(np.asarray(devices[:num_devices]), (DATA,))


def check_process_order(devices) -> None:
  """Raises ValueError unless `devices` list each process's devices together, processes in
  increasing order (the batch layout of `rrjax.data.batches` and `global_batch`)."""
  order = [d.process_index for d in devices]
  if order != sorted(order):
    raise ValueError(f"the devices interleave processes along the data axis ({order[:16]}); "
                     "rrjax's batch layout needs each process's devices together, in process "
                     "order")


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
  """Places a pytree (host arrays) on every device of the mesh; in a multi-process run, leaves
  already replicated on it are kept as they are (state is replicated once).

  With several processes each process fills its own devices from its own copy
  (`make_array_from_callback`): `jax.device_put` onto a mesh that spans processes would first
  check, leaf by leaf, that every process holds the same value, gathering each one across
  them. Every process must pass the same values, as they do here (the same seed, checkpoint or
  weights file).
  """
  target = replicated(mesh)

  def put(x):
    if jax.process_count() == 1:
      # Also for an array already there: an equivalent sharding of another kind (one device's)
      # would make a jitted consumer compile again once its outputs come back replicated.
      return jax.device_put(x, target)
    if isinstance(x, jax.Array) and x.sharding == target:
      return x
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])

  return jax.tree.map(put, tree)


def jit_data_parallel(fn, mesh: Mesh, num_args: int, batch_argnums: tuple[int, ...],
                      donate_argnums: tuple[int, ...] = (0,), num_outputs: int = 2):
  """Jits `fn` with its `batch_argnums` arguments split on the data axis, the rest replicated.

  Outputs are replicated (states and scalar metrics).
  """
  rep, data = replicated(mesh), batch_sharding(mesh)
  in_shardings = tuple(data if i in batch_argnums else rep for i in range(num_args))
  return jax.jit(fn, in_shardings=in_shardings, out_shardings=(rep,) * num_outputs,
                 donate_argnums=donate_argnums)
