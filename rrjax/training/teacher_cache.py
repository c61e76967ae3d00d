"""Teacher embeddings of clean training images, computed once and cached on disk.

Used when `config.train.teacher == "cache"`: augmentation is then off, so every step sees each
image's fixed eval view and the teacher's output for it never changes. The cache file is keyed
by everything the embeddings depend on (teacher, weights, resolution, dataset, split, image
size); a changed key means a new file, never a stale one.
"""

import hashlib
import io
import json
import os

import jax
import numpy as np
from absl import logging
from etils import epath

from rrjax import data, errors
from rrjax.io import files
from rrjax.parallel import multiprocess, preemption, sharding


def cache_key(config, source) -> str:
  """A short hash of what the cached embeddings depend on."""
  fields = {"teacher": config.teacher.name, "weights": config.teacher.weights or "packaged",
            "resolution": config.teacher.resolution, "dataset": source.name,
            "split": source.split, "image_size": source.image_size,
            "data_dir": config.data.data_dir or ""}
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def embeddings(config, teacher, teacher_vars, source, mesh) -> np.ndarray:
  """`[len(source), D]` float32 teacher embeddings of the eval views, from cache or computed.

  The cache is read only if every process sees the file (the default directory is on each
  host's own disk; `train.cache_dir` may be a bucket), decided together (`all_true`), else
  every process computes it, collectively; so no process trains while the others still wait
  in the computation's collectives. A computed cache is written by every process to a local
  directory (each host's own copy, for the next run), by the leader to a bucket. A cache file
  that cannot be read is the same one-line error in every process.
  """
  directory = config.train.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "rrjax")
  path = os.path.join(directory, f"teacher_{cache_key(config, source)}.npy")
  if multiprocess.all_true(epath.Path(path).exists()):
    logging.info("teacher cache: reading %s", path)
    return multiprocess.agreed(lambda: _read(path, len(source)))
  result = compute(teacher, teacher_vars, source, mesh, config.eval.batch_size)
  buffer = io.BytesIO()
  np.save(buffer, result, allow_pickle=False)
  try:
    files.atomic_write(path, buffer.getvalue(), every_process=True)
    logging.info("teacher cache: wrote %s %s", path, result.shape)
  except Exception as e:  # pylint: disable=broad-except  # An optimisation: never fatal alone.
    logging.warning("teacher cache: cannot write %s (%s); the next run computes it again",
                    path, e)
  return result


def _read(path: str, num_examples: int) -> np.ndarray:
  """The cached `[num_examples, D]` float32 array at `path`; UserError naming it otherwise."""
  try:
    cached = np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False)
  except Exception as e:  # pylint: disable=broad-except  # One process's copy: shared by agreed.
    raise errors.UserError(f"teacher cache {path}: cannot read it "
                           f"({errors.one_line(str(e), 120)}); delete it and rerun") from None
  if cached.ndim != 2 or cached.shape[0] != num_examples or cached.dtype != np.float32:
    raise errors.UserError(f"teacher cache {path}: {cached.dtype} {cached.shape}, not float32 "
                           f"[{num_examples}, D]; delete it and rerun")
  return cached


def compute(teacher, teacher_vars, source, mesh, batch_size: int) -> np.ndarray:
  """`[len(source), D]` float32 teacher embeddings of the eval views, batch-sharded on `mesh`."""
  sharding.check_batch_size(batch_size, mesh, "eval.batch_size")
  # Replicated outputs: every process reads the whole global batch's embeddings back.
  apply = jax.jit(lambda v, x: teacher.apply(v, data.to_float(x), train=False),
                  in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                  out_shardings=sharding.replicated(mesh))
  variables = sharding.replicate(teacher_vars, mesh)
  parts = []
  with preemption.deferred():
    for batch in data.batches(source, batch_size, train=False, seed=0, num_workers=-1):
      out = apply(variables, sharding.global_batch({"image": batch["image"]}, mesh)["image"])
      parts.append(np.asarray(jax.device_get(out)))
      preemption.check("the teacher cache")
  # Global batches hold the examples in order; only the last one is padded, at its end.
  return np.concatenate(parts)[:len(source)].astype(np.float32)
