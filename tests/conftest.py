"""Shared test set-up: CPU only, float32 matmuls, a fixed root key."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key():
  return jax.random.key(0)
