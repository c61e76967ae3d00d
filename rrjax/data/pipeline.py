"""Batches for training and evaluation, deterministic, resumable and split across processes.

    for batch in batches(source, 256, train=True, seed=0, start_step=step):
      batch["image"]  # float32 [b, S, S, 3] in [0, 1], b = 256 // process_count
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
  what makes resuming mid-epoch exact. `augment=False` replaces the random view by the eval view.
* Eval: one pass in source order (`seed` unused). The last partial batch is padded to full size
  with zero images, label 0, index 0 and `mask` False (`drop_remainder=True` drops it
  instead), so every batch has one shape for `jit` and each example appears exactly once with
  `mask` True.

Batches are produced on a background thread into a small bounded queue, so reading, decoding
and resizing overlap the training step; within a batch, `num_threads` threads split the images
(PIL releases the GIL). An exception in the producer is raised from the consumer's `next()`.
"""

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterator

import jax
import numpy as np

from rrjax import errors
from rrjax.data import source as source_lib
from rrjax.data import views

Batch = dict[str, np.ndarray]

# Distinct first words of the random streams, so no permutation seed equals a view seed.
_PERMUTATION_STREAM = 0
_VIEW_STREAM = 1


def batches(source: source_lib.Source, batch_size: int, *, train: bool, seed: int,
            image_size: int | None = None, start_step: int = 0, num_steps: int | None = None,
            process_index: int | None = None, process_count: int | None = None,
            drop_remainder: bool | None = None, augment: bool = True,
            crop_scale: tuple[float, float] = views.DEFAULT_SCALE,
            crop_ratio: tuple[float, float] = views.DEFAULT_RATIO,
            prefetch: int = 2, num_threads: int = 1) -> Iterator[Batch]:
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
    prefetch: batches prepared ahead (queue size).
    num_threads: threads reading and resizing the images of one batch.

  Yields:
    dict(image=float32 [b, S, S, 3] in [0, 1], label=int32 [b], index=int32 [b],
    mask=bool [b]), b = batch_size // process_count.
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
  if prefetch < 1 or num_threads < 1:
    raise ValueError(f"prefetch {prefetch} and num_threads {num_threads} must be >= 1")
  size = _output_size(source, image_size)
  drop_remainder = train if drop_remainder is None else drop_remainder
  n = len(source)
  local = batch_size // process_count
  offsets = np.arange(process_index * local, (process_index + 1) * local)

  if train:
    if drop_remainder and n < batch_size:
      raise errors.UserError(f"batch_size {batch_size} exceeds the {n} examples of {source.name} "
                             f"{source.split}; use a smaller batch or drop_remainder=False")
    steps_per_epoch = n // batch_size
    total = None
    order = _EpochOrder(n, seed)

    def indices(step):
      if drop_remainder:
        epoch, first = divmod(step, steps_per_epoch)
        return order.epoch(epoch)[first * batch_size + offsets]
      positions = step * batch_size + offsets
      return np.array([order.epoch(p // n)[p % n] for p in positions], dtype=np.int64)

    def view(image, step, offset):
      if not augment:
        return views.eval_view(image, size)
      rng = np.random.default_rng([seed, _VIEW_STREAM, step, offset])
      return views.train_view(image, size, rng, scale=crop_scale, ratio=crop_ratio)
  else:
    total = n // batch_size if drop_remainder else -(-n // batch_size)

    def indices(step):
      positions = step * batch_size + offsets
      return np.where(positions < n, positions, -1)

    def view(image, step, offset):
      del step, offset  # The eval view is deterministic.
      return views.eval_view(image, size)

  stop = total
  if num_steps is not None:
    stop = start_step + num_steps if total is None else min(total, start_step + num_steps)

  def make_batch(step, pool):
    idx = indices(step)
    chunks = np.array_split(np.arange(local), min(num_threads, local))
    parts = pool.map(lambda c: _read_views(source, idx[c], step, offsets[c], view, size),
                     chunks)
    images, labels = zip(*parts)
    images = np.concatenate(images)
    valid = idx >= 0
    return {"image": images.astype(np.float32) / 255, "label": np.concatenate(labels),
            "index": np.where(valid, idx, 0).astype(np.int32), "mask": valid}

  def produce():
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
      step = start_step
      while stop is None or step < stop:
        yield make_batch(step, pool)
        step += 1

  return _prefetch(produce, prefetch)


def load_arrays(source: source_lib.Source, image_size: int | None = None,
                *, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """The eval view of the whole source in memory, for small datasets.

  Returns:
    `(images float32 [N, S, S, 3] in [0, 1], labels int32 [N])`, S = image_size or
    `source.image_size`, in source order.
  """
  size = _output_size(source, image_size)
  n = len(source)
  images = np.empty((n, size, size, 3), np.float32)
  labels = np.empty((n,), np.int32)
  for start in range(0, n, chunk):
    raw, labels[start:start + chunk] = source.get(np.arange(start, min(start + chunk, n)))
    views_ = np.stack([views.eval_view(x, size) for x in raw])
    images[start:start + chunk] = views_.astype(np.float32) / 255
  return images, labels


def _output_size(source: source_lib.Source, image_size: int | None) -> int:
  if image_size is None:
    return source.image_size
  if not isinstance(image_size, (int, np.integer)) or image_size <= 0:
    raise ValueError(f"image_size must be a positive int, got {image_size!r}")
  return int(image_size)


def _read_views(source, indices, step, offsets, view, size):
  """Views uint8 `[m, S, S, 3]` and labels int32 `[m]` of `indices` (-1: zero padding)."""
  images = np.zeros((len(indices), size, size, 3), np.uint8)
  labels = np.zeros((len(indices),), np.int32)
  valid = np.flatnonzero(indices >= 0)
  if valid.size:
    raw, labels[valid] = source.get(indices[valid])
    for k, image in zip(valid, raw):
      images[k] = view(image, step, int(offsets[k]))
  return images, labels


class _EpochOrder:
  """The permutation of each epoch, `default_rng([seed, 0, epoch])`; the last two cached."""

  def __init__(self, n: int, seed: int):
    self._n, self._seed = n, seed
    self._cache: dict[int, np.ndarray] = {}

  def epoch(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      rng = np.random.default_rng([self._seed, _PERMUTATION_STREAM, epoch])
      self._cache = {e: p for e, p in self._cache.items() if e == epoch - 1}
      self._cache[epoch] = rng.permutation(self._n)
    return self._cache[epoch]


_END = object()


def _prefetch(produce: Callable[[], Iterator[Batch]], size: int) -> Iterator[Batch]:
  """Runs `produce()` on a daemon thread, `size` items ahead; re-raises its exceptions."""
  items = queue.Queue(maxsize=size)
  stopped = threading.Event()

  def put(item):
    # Poll so that a consumer which stops early also stops the producer.
    while not stopped.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def worker():
    try:
      for item in produce():
        if not put(item):
          return
      put(_END)
    except BaseException as e:  # pylint: disable=broad-except  # Re-raised by the consumer.
      put(e)

  thread = threading.Thread(target=worker, daemon=True, name="rrjax-data-prefetch")
  thread.start()
  try:
    while True:
      item = items.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stopped.set()
