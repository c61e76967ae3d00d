"""rrjax.corruptions.kernels: the mask's selection and Threefry against references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.corruptions import kernels


def _rank_reference(keys, count):
  """Marks the `count[b]` smallest keys of row b, ties by position: a stable argsort's ranks."""
  order = np.argsort(keys, axis=1, kind="stable")
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.arange(keys.shape[1])[None], axis=1)
  return rank < count[:, None]


@pytest.mark.parametrize("keys", ["uniform", "few values", "two values", "skewed"])
def test_smallest_takes_exactly_the_count_smallest(keys):
  rng = np.random.default_rng(0)
  n = 300
  draw = {
      "uniform": lambda: rng.integers(0, 2**31, (16, n)),
      "few values": lambda: rng.integers(0, 40, (16, n)),   # Ties at every threshold.
      "two values": lambda: rng.choice([0, 2**31 - 1], (16, n)),
      "skewed": lambda: (rng.uniform(size=(16, n))**12 * 2**31),  # Interpolation misleads.
  }[keys]
  values = np.asarray(draw(), np.uint32)
  count = np.concatenate([[0, 1, n - 1, n], rng.integers(0, n + 1, 12)]).astype(np.int32)
  got = np.asarray(jax.jit(kernels.smallest)(values, count))
  np.testing.assert_array_equal(got.sum(axis=1), count)
  np.testing.assert_array_equal(got, _rank_reference(values, count))


def test_threefry_matches_jax_and_known_answers():
  from jax.extend.random import threefry_2x32
  # Random123's known-answer vectors for Threefry-2x32-20.
  for key, counter, expected in [
      ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
      ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
      ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]:
    got = kernels.threefry2x32(*(jnp.uint32(v) for v in key + counter))
    assert tuple(int(v) for v in got) == expected
  rng = np.random.default_rng(0)
  k = rng.integers(0, 2**32, 2, dtype=np.uint32)
  x = rng.integers(0, 2**32, (2, 1000), dtype=np.uint32)
  ours = jax.jit(kernels.threefry2x32)(k[0], k[1], x[0], x[1])
  np.testing.assert_array_equal(np.concatenate(ours), threefry_2x32(k, x.reshape(-1)))
