"""Test-wide JAX settings: silent broadcasting or dtype promotion fails loudly."""

import os

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def real_data_dir():
    """The folder named by JAXCLF_DATA_DIR; tests that need it skip without it."""
    data_dir = os.environ.get("JAXCLF_DATA_DIR")
    if not data_dir:
        pytest.skip("JAXCLF_DATA_DIR is not set; real CIFAR-10 tests are skipped")
    return data_dir
