"""Fixtures of the model tests."""

import numpy as np
import pytest

import lamina


@pytest.fixture
def f64():
    """The test builds its layers and tensors in float64 (for tight comparisons with torch)."""
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)
