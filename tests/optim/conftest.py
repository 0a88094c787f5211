"""Fixtures of the optimizer and schedule tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_scalars_in_float64():
    """torch keeps its step counts and NAdam's running product mu_product in scalars of the
    default dtype (float32): float64 ones, like lamina's Python floats, for tight comparisons."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)
