"""Running over many devices and processes.

Modules: `sharding` (the mesh, with its one `data` axis, and the shardings of batches and
replicated state), `multiprocess` (joining a `jax.distributed` run, the leader process that
writes, errors agreed by every process, preemption).
"""
