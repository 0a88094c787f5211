"""Checks shared by the tests that compare a lamina model with a PyTorch reference written
with Hugging Face's parameter names."""

from __future__ import annotations

import torch

import lamina
from helpers import assert_close, randn
from lamina import functional as F


def backward_with_one_upstream(ours, theirs) -> None:
    """Backpropagate sum(upstream * output) through both outputs with the same random upstream
    gradient (seed 1), so every parameter receives a gradient that depends on every output."""
    upstream = randn(*ours.shape, seed=1)
    F.sum(F.mul(ours, lamina.tensor(upstream))).backward()
    (theirs * torch.tensor(upstream)).sum().backward()


def assert_gradients_match_the_table(model, table, reference_grads, *, every_parameter: bool = False) -> None:
    """Each lamina parameter named in ``table`` has the gradient of its reference weights
    (``reference_grads`` by Hugging Face name, converted as ``table`` says) to rtol 1e-9;
    with ``every_parameter`` the table also names every parameter of ``model``."""
    params = dict(model.named_parameters())
    if every_parameter:
        assert set(table) == set(params)
    for ours_key, weight in table.items():
        expected = weight.convert(*(reference_grads[k] for k in weight.keys))
        assert_close(params[ours_key].grad, expected, 1e-9, ours_key)
