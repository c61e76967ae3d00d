"""Batches for training and evaluation, deterministic, resumable and split across processes.

    for batch in batches(source, 256, train=True, seed=0, start_step=step, num_workers=8):
      batch["image"]  # uint8 [b, S, S, 3], b = 256 // process_count; to_float(x) on device
      batch["label"]  # int32 [b]
      batch["index"]  # int32 [b]: position of each example in the source (e.g. for caches)
      batch["mask"]   # bool [b]: False only on eval padding

Global stream. `batch_size` is the global batch B; step k covers the global positions
`k*B ... k*B + B - 1` and process p of P keeps the contiguous slice `[p*B/P, (p+1)*B/P)`, so the
P local batches of a step concatenate to the single-process batch.

* Train: an endless (or `num_steps`-long) stream of epochs; epoch e visits the source in the
  order `permutation(seed, e)`. With `drop_remainder` (the default) each epoch yields
  `len // B` batches and the last `len % B` examples of its permutation are dropped; without,
  the stream runs on into the next epoch so every batch stays full. Example j of step k is
  viewed with the generator `np.random.default_rng([seed, 1, k, j])` (j global): the batch at
  step k is a pure function of (seed, k), whatever `start_step` and the process count, which is
  what makes resuming mid-epoch exact: the iterator's state is the step, kept by the training
  checkpoint. `augment=False` replaces the random view by the eval view.
* Eval: one pass in source order (`seed` unused). The last partial batch is padded to full size
  with zero images, label 0, index 0 and `mask` False (`drop_remainder=True` drops it
  instead), so every batch has one shape for `jit` and each example appears exactly once with
  `mask` True.

Images stay uint8 on the host (a quarter of float32's bytes to copy); `to_float` turns them
into float32 in [0, 1] inside the jitted consumers, bit for bit `x.astype(float32) / 255`.

The stream is a Grain dataset: `MapDataset.range(steps).map(make_batch)`, one element per
step, read ahead on `num_threads` threads (`prefetch` batches), and with `num_workers > 0` in
that many worker processes (`mp_prefetch`: worker w makes steps w, w + W, ...; Grain
interleaves them back in order). Threads suit small or in-memory sources (PIL releases the GIL,
no start-up cost); worker processes suit decoding JPEGs at scale (about a second to start,
then one core each; `benchmarks/input_pipeline.py`). Errors raised while making a batch reach
the consumer's `next()`.
"""

import os
import signal
from collections.abc import Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from rrjax import errors
from rrjax.data import source as source_lib
from rrjax.data import views

Batch = dict[str, np.ndarray]

# Distinct first words of the random streams, so no permutation seed equals a view seed.
_PERMUTATION_STREAM = 0
_VIEW_STREAM = 1
# The length of an endless stream: more steps than any run takes.
_ENDLESS = 1 << 50
# x / 255 for every uint8 x, as numpy computes it: XLA turns a division by a constant into a
# multiplication by its reciprocal, which differs in the last bit for some x.
_UNIT = np.arange(256, dtype=np.float32) / 255


def to_float(images: jax.Array) -> jax.Array:
  """uint8 `[..., C]` -> float32 in [0, 1] (`x / 255`); floating images pass unchanged."""
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images
  return jnp.asarray(_UNIT)[images.astype(jnp.int32)]


def auto_workers(source: source_lib.Source) -> int:
  """Worker processes for `source` when a config says -1: none for sources held in memory,
  else one per core this process may run on (its CPU affinity) but one, the consumer's. With
  several JAX processes on one host (one per GPU), set `data.num_workers` to share the cores."""
  if source.held_in_memory:
    return 0
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max((cores or 1) - 1, 1)


def batches(source: source_lib.Source, batch_size: int, *, train: bool, seed: int,
            image_size: int | None = None, start_step: int = 0, num_steps: int | None = None,
            process_index: int | None = None, process_count: int | None = None,
            drop_remainder: bool | None = None, augment: bool = True,
            crop_scale: tuple[float, float] = views.DEFAULT_SCALE,
            crop_ratio: tuple[float, float] = views.DEFAULT_RATIO,
            prefetch: int = 2, num_threads: int = 1, num_workers: int = 0) -> Iterator[Batch]:
  """Iterates this process's part of global batches (module docstring).

  Args:
    source: the examples.
    batch_size: the global batch size B, divisible by `process_count`.
    train: the shuffled, augmented, endless training stream; else one ordered eval pass.
    seed: non-negative int seeding the permutations and the views (training only).
    image_size: output size S; default `source.image_size`.
    start_step: first step to yield (resumption).
    num_steps: number of steps to yield; default endless (train) or to the end (eval).
    process_index, process_count: this process's slot; default `jax.process_index()` and
      `jax.process_count()`.
    drop_remainder: drop the incomplete batch (eval) or epoch tail (train); default True for
      training, False for evaluation.
    augment: training view = random resized crop + flip; False: the eval view.
    crop_scale, crop_ratio: the random resized crop's area fraction and aspect-ratio ranges;
      e.g. (0.35, 1) suits 28 px images better than the ImageNet (0.08, 1).
    prefetch: batches prepared ahead (per worker process with `num_workers`).
    num_threads: threads making batches in each process.
    num_workers: worker processes making batches; 0: in this process; -1: `auto_workers`.

  Yields:
    dict(image=uint8 [b, S, S, 3], label=int32 [b], index=int32 [b], mask=bool [b]),
    b = batch_size // process_count.
  """
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple of process_count "
                     f"{process_count}")
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}")
  if start_step < 0 or (num_steps is not None and num_steps < 0):
    raise ValueError(f"start_step {start_step} and num_steps {num_steps} must be >= 0")
  if prefetch < 1 or num_threads < 1 or num_workers < -1:
    raise ValueError(f"prefetch {prefetch} and num_threads {num_threads} must be >= 1, "
                     f"num_workers {num_workers} >= -1")
  if num_workers == -1:
    num_workers = auto_workers(source)
  size = _output_size(source, image_size)
  drop_remainder = train if drop_remainder is None else drop_remainder
  n = len(source)
  if train:
    if drop_remainder and n < batch_size:
      raise errors.UserError(f"batch_size {batch_size} exceeds the {n} examples of {source.name} "
                             f"{source.split}; use a smaller batch or drop_remainder=False")
    total = None
  else:
    total = n // batch_size if drop_remainder else -(-n // batch_size)
  stop = start_step + _ENDLESS if total is None else total
  if num_steps is not None:
    stop = min(stop, start_step + num_steps)
  maker = _BatchMaker(source, batch_size, train=train, seed=int(seed), size=size,
                      process_index=process_index, process_count=process_count,
                      drop_remainder=drop_remainder, augment=augment,
                      crop_scale=tuple(crop_scale), crop_ratio=tuple(crop_ratio))
  dataset = grain.MapDataset.range(start_step, max(stop, start_step)).map(maker)
  stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                     prefetch_buffer_size=prefetch))
  if num_workers:
    _absl_flags_for_grain()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                             per_worker_buffer_size=prefetch),
                                worker_init_fn=_worker_init)
  return _iterate(stream)


class _BatchMaker:
  """`step -> this process's batch of step`: picklable, for Grain's worker processes."""

  def __init__(self, source, batch_size, *, train, seed, size, process_index, process_count,
               drop_remainder, augment, crop_scale, crop_ratio):
    self.source, self.batch_size, self.train, self.seed = source, batch_size, train, seed
    self.size, self.drop_remainder, self.augment = size, drop_remainder, augment
    self.crop_scale, self.crop_ratio = crop_scale, crop_ratio
    local = batch_size // process_count
    self.offsets = np.arange(process_index * local, (process_index + 1) * local)
    self.order = _EpochOrder(len(source), seed) if train else None

  def indices(self, step: int) -> np.ndarray:
    """Source indices of this process's examples of `step` (-1: eval padding)."""
    n, positions = len(self.source), step * self.batch_size + self.offsets
    if not self.train:
      return np.where(positions < n, positions, -1)
    if self.drop_remainder:
      epoch, first = divmod(step, n // self.batch_size)
      return self.order.epoch(epoch)[first * self.batch_size + self.offsets]
    return np.array([self.order.epoch(p // n)[p % n] for p in positions], dtype=np.int64)

  def view(self, image, step: int, offset: int) -> np.ndarray:
    if not (self.train and self.augment):
      return views.eval_view(image, self.size)
    rng = np.random.default_rng([self.seed, _VIEW_STREAM, step, offset])
    return views.train_view(image, self.size, rng, scale=self.crop_scale,
                            ratio=self.crop_ratio)

  def __call__(self, step) -> Batch:
    step = int(step)
    idx = self.indices(step)
    images = np.zeros((len(idx), self.size, self.size, 3), np.uint8)
    labels = np.zeros((len(idx),), np.int32)
    valid = np.flatnonzero(idx >= 0)
    if valid.size:
      raw, labels[valid] = self.source.read(idx[valid])
      for k, image in zip(valid, raw):
        try:
          images[k] = self.view(image, step, int(self.offsets[k]))
        except (OSError, ValueError) as e:  # PIL's errors on a file it cannot decode.
          raise errors.UserError(f"{self.source.name} {self.source.split}: cannot decode "
                                 f"{self.source.describe(int(idx[k]))}: "
                                 f"{errors.one_line(e, 160)}") from e
    ok = idx >= 0
    return {"image": images, "label": labels,
            "index": np.where(ok, idx, 0).astype(np.int32), "mask": ok}


def _iterate(stream) -> Iterator[Batch]:
  """Iterates a Grain dataset, closing its threads and worker processes however it ends."""
  iterator = iter(stream)
  try:
    yield from iterator
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()


def _worker_init(worker_index: int, worker_count: int) -> None:
  """In each worker process: SIGTERM and SIGINT are the main process's to handle. A signal to
  the whole process group (a cluster's preemption) must not kill the workers under a main
  process that is finishing its step and checkpointing (`rrjax.parallel.preemption`); they end
  with it."""
  del worker_index, worker_count
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _absl_flags_for_grain() -> None:
  """Grain's worker processes read absl flags; outside an absl app they are the defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _output_size(source: source_lib.Source, image_size: int | None) -> int:
  if image_size is None:
    return source.image_size
  if not isinstance(image_size, (int, np.integer)) or image_size <= 0:
    raise ValueError(f"image_size must be a positive int, got {image_size!r}")
  return int(image_size)


class _EpochOrder:
  """The permutation of each epoch, `default_rng([seed, 0, epoch])`; the last two cached."""

  def __init__(self, n: int, seed: int):
    self._n, self._seed = n, seed
    self._cache: dict[int, np.ndarray] = {}

  def epoch(self, epoch: int) -> np.ndarray:
    cache = self._cache  # One read: other threads may replace it meanwhile.
    if epoch in cache:
      return cache[epoch]
    order = np.random.default_rng([self._seed, _PERMUTATION_STREAM, epoch]).permutation(self._n)
    self._cache = {**{e: p for e, p in cache.items() if e == epoch - 1}, epoch: order}
    return order
