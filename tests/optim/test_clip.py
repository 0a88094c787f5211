"""Gradient clipping matches torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lamina.nn import Parameter
from lamina.optim import clip_grad_norm, clip_grad_value

SHAPES = [(3, 4), (4,), (2, 3, 2)]


def _pair(dtype=np.float64, scale: float = 1.0):
    rng = np.random.default_rng(0)
    grads = [scale * rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours, theirs = [], []
    for g in grads:
        p = Parameter(np.zeros(g.shape, dtype=dtype))
        p.grad = g.copy()
        ours.append(p)
        t = torch.zeros(g.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                        requires_grad=True)
        t.grad = torch.tensor(g.copy())
        theirs.append(t)
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    ours, theirs = _pair()
    total = clip_grad_norm(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(float(expected), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_float32_in_place():
    ours, theirs = _pair(np.float32, scale=10.0)
    grads = [p.grad for p in ours]
    total = clip_grad_norm(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert total == pytest.approx(float(expected), rel=1e-5)
    for p, g, t in zip(ours, grads, theirs):
        assert p.grad is g and p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-5)
    joint = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in ours))
    assert joint == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_skips_missing_grads():
    ours, _ = _pair()
    ours.append(Parameter(np.zeros(3)))
    assert clip_grad_norm(ours, 1.0) > 0
    assert clip_grad_norm([Parameter(np.zeros(3))], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    p = Parameter(np.zeros(2))
    p.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        clip_grad_norm([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("clip_value", [0.3, 5.0])
def test_clip_grad_value_matches_torch(clip_value):
    ours, theirs = _pair()
    clip_grad_value(ours, clip_value)
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())


def test_clip_grad_value_rejects_negative():
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value([], -1.0)
