"""rrjax.data.pipeline: batches, deterministic, resumable, split across processes."""

import multiprocessing
import os
import signal

import jax
import numpy as np
import pytest

import rrjax.data
from tests.data.data_util import ArraySource, assert_batches_equal, ids_of, take


def test_train_batches_shapes_dtypes_range():
  source = ArraySource(50)
  batch = next(rrjax.data.batches(source, 8, train=True, seed=0, image_size=12))
  assert batch["image"].shape == (8, 12, 12, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
  assert batch["index"].dtype == np.int32 and batch["index"].max() < 50
  assert batch["mask"].dtype == bool and batch["mask"].all()
  with pytest.raises(ValueError, match="multiple of process_count 3"):
    rrjax.data.batches(source, 8, train=True, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="exceeds the 50 examples"):
    rrjax.data.batches(source, 64, train=True, seed=0)


@pytest.mark.parametrize("train", [True, False])
def test_process_slices_concatenate_to_the_global_batch(train):
  source = ArraySource(30)
  kw = dict(train=train, seed=3, num_steps=4, image_size=10)
  whole = list(rrjax.data.batches(source, 8, process_index=0, process_count=1, **kw))
  parts = [list(rrjax.data.batches(source, 8, process_index=p, process_count=2, **kw))
           for p in range(2)]
  assert len(whole) == 4
  for step, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), batch[key])


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_resume_mid_stream_and_seeds(drop_remainder):
  source = ArraySource(20)
  kw = dict(train=True, image_size=10, drop_remainder=drop_remainder)
  stream = take(rrjax.data.batches(source, 6, seed=1, **kw), 9)
  resumed = take(rrjax.data.batches(source, 6, seed=1, start_step=5, **kw), 4)
  assert_batches_equal(stream[5:], resumed)
  assert_batches_equal(stream, list(rrjax.data.batches(source, 6, seed=1, num_steps=9, **kw)))
  other = take(rrjax.data.batches(source, 6, seed=2, **kw), 9)
  assert not np.array_equal(stream[0]["image"], other[0]["image"])


def test_train_epochs_are_permutations():
  source = ArraySource(20)
  kw = dict(train=True, seed=0, augment=False)
  # drop_remainder: 3 batches of 6 per epoch, distinct examples, a new order each epoch.
  ids = [ids_of(b) for b in take(rrjax.data.batches(source, 6, **kw), 6)]
  first, second = np.concatenate(ids[:3]), np.concatenate(ids[3:])
  assert len(set(first)) == 18 and len(set(second)) == 18
  assert not np.array_equal(first, second)
  # Otherwise the stream runs through whole epochs: every example once per 20 positions.
  flat = np.concatenate([ids_of(b) for b in take(
      rrjax.data.batches(source, 6, drop_remainder=False, **kw), 10)])
  for epoch in range(3):
    assert sorted(flat[20 * epoch:20 * (epoch + 1)]) == list(range(20))
  batch = next(rrjax.data.batches(source, 6, **kw))
  np.testing.assert_array_equal(batch["index"], ids[0])
  np.testing.assert_array_equal(batch["label"], source.labels[ids[0]])


def test_train_view_differs_from_eval_view():
  source = ArraySource(16, size=16)
  augmented = next(rrjax.data.batches(source, 16, train=True, seed=0, image_size=16))
  plain = next(rrjax.data.batches(source, 16, train=True, seed=0, image_size=16,
                                  augment=False))
  np.testing.assert_array_equal(augmented["label"], plain["label"])
  differs = [not np.allclose(a, b) for a, b in zip(augmented["image"], plain["image"])]
  assert sum(differs) >= 12
  # Without augmentation, the images are exactly the eval view (here: the stored pixels).
  ids = ids_of(plain)
  np.testing.assert_array_equal(plain["image"], source.images[ids])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_example_once_with_padding_mask(process_count):
  source = ArraySource(23)
  parts = [list(rrjax.data.batches(source, 8, train=False, seed=0, process_index=p,
                                   process_count=process_count))
           for p in range(process_count)]
  batches = [{k: np.concatenate([part[i][k] for part in parts]) for k in parts[0][i]}
             for i in range(len(parts[0]))]
  assert len(batches) == 3
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 23 and not mask[23:].any()
  ids = np.concatenate([ids_of(b) for b in batches])[mask]
  np.testing.assert_array_equal(ids, np.arange(23))
  index = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(index, np.where(mask, np.arange(24), 0))
  np.testing.assert_array_equal(batches[-1]["image"][~batches[-1]["mask"]], 0)
  dropped = list(rrjax.data.batches(source, 8, train=False, seed=0, drop_remainder=True))
  assert len(dropped) == 2 and all(b["mask"].all() for b in dropped)
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[mask],
                                source.images)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[mask],
                                source.labels)


def test_producer_errors_reach_the_consumer_and_early_exit_stops_the_threads():
  source = ArraySource(20, fail_at=13)
  iterator = rrjax.data.batches(source, 4, train=False, seed=0)
  take(iterator, 3)
  with pytest.raises(RuntimeError, match="cannot read example 13"):
    next(iterator)
  iterator = rrjax.data.batches(ArraySource(20), 4, train=True, seed=0, prefetch=1,
                                num_threads=2)
  next(iterator)
  iterator.close()  # Ends the generator: Grain's iterator is closed with it.
  with pytest.raises(StopIteration):
    next(iterator)


def test_to_float_is_numpy_division_bit_for_bit():
  x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  np.testing.assert_array_equal(np.asarray(jax.jit(rrjax.data.to_float)(x)),
                                x.astype(np.float32) / 255)
  y = np.linspace(0, 1, 5, dtype=np.float32)
  np.testing.assert_array_equal(np.asarray(rrjax.data.to_float(y)), y)


@pytest.mark.parametrize("train", [True, False])
def test_worker_processes_make_the_same_batches(train):
  source = ArraySource(40, size=10)
  kw = dict(train=train, seed=5, num_steps=5, image_size=12)
  threads = list(rrjax.data.batches(source, 8, num_threads=2, **kw))
  workers = list(rrjax.data.batches(source, 8, num_workers=2, **kw))
  assert len(threads) == 5
  assert_batches_equal(threads, workers)


def test_worker_errors_reach_the_consumer():
  source = ArraySource(20, fail_at=13)
  with pytest.raises(Exception, match="cannot read example 13"):
    list(rrjax.data.batches(source, 4, train=False, seed=0, num_workers=2))


def test_in_memory_is_chosen_by_size_and_reads_the_same():
  source = ArraySource(30, size=8)
  held = rrjax.data.in_memory(source, max_bytes=30 * 8 * 8 * 3)
  assert isinstance(held, rrjax.data.source.InMemory)
  assert rrjax.data.in_memory(source, max_bytes=30 * 8 * 8 * 3 - 1) is source
  np.testing.assert_array_equal(held.labels(), source.labels)
  kw = dict(train=True, seed=1, num_steps=3, image_size=6)
  assert_batches_equal(list(rrjax.data.batches(source, 8, **kw)),
                       list(rrjax.data.batches(held, 8, **kw)))


def test_worker_processes_ignore_sigterm():
  """A preemption's SIGTERM to the whole process group leaves the workers to the main process,
  which stops the run at its next check (`rrjax.parallel.preemption`)."""
  source = ArraySource(40, size=10)
  kw = dict(train=True, seed=0, num_steps=8, image_size=10, prefetch=1)
  stream = rrjax.data.batches(source, 4, num_workers=1, **kw)
  first = next(stream)
  workers = multiprocessing.active_children()
  assert workers
  for worker in workers:
    os.kill(worker.pid, signal.SIGTERM)
  rest = list(stream)
  assert_batches_equal([first] + rest, list(rrjax.data.batches(source, 4, **kw)))
