"""DoRA, IA3, LoHa, LoKr and VeRA on Dense layers: values and gradients against torch
rewrites of their formulas (float64), the model unchanged at initialisation, merging and
unmerging, trainable-parameter counts by hand, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.nn import (
    DoRADense,
    IA3Dense,
    LoHaDense,
    LoKrDense,
    VeRADense,
    apply_dora,
    apply_ia3,
    apply_loha,
    apply_lokr,
    apply_vera,
    merge_adapters,
    unmerge_adapters,
)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _mlp(seed=0, sizes=(6, 12, 4)):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(sizes[1], activation="tanh"), nn.Dense(sizes[2]))
    model(lamina.tensor(np.zeros((1, sizes[0]))))
    return model


def _t(array, grad=False):
    return torch.tensor(np.asarray(array), dtype=torch.float64, requires_grad=grad)


def _perturb(module, names, seed=10, scale=0.3):
    """Give parameters that start at zero (or one) values, so that every term counts."""
    for i, name in enumerate(names):
        p = getattr(module, name)
        p.data = p.data + randn(*p.shape, seed=seed + i, scale=scale)


def _compare(layer, params, torch_fn, n_in, seed=3):
    """The layer's outputs and the gradients of ``params`` (names) against ``torch_fn(x, **tensors)``."""
    x = randn(5, n_in, seed=seed)
    out = layer(lamina.tensor(x))
    up = randn(*out.shape, seed=seed + 1)
    tensors = {name: _t(_get(layer, name.replace("__", ".")).numpy(), grad=True) for name in params}
    theirs = torch_fn(_t(x), **tensors)
    assert_close(out.numpy(), theirs.detach().numpy(), 1e-12)
    (out * lamina.tensor(up)).sum().backward()
    (theirs * _t(up)).sum().backward()
    for name, tensor in tensors.items():
        assert_close(_get(layer, name.replace("__", ".")).grad, tensor.grad.numpy(), 1e-10, f"dJ/d{name}")
    return x


def _get(layer, dotted):
    for part in dotted.split("."):
        layer = getattr(layer, part)
    return layer


# -- DoRA ---------------------------------------------------------------------------------------
def test_dora_matches_torch_with_the_norm_detached(f64):
    model = _mlp()
    before = model(lamina.tensor(randn(3, 6, seed=1))).numpy()
    w0 = model[0].weight.numpy().copy()
    apply_dora(model, r=3, alpha=6)
    layer = model[0]
    assert isinstance(layer, DoRADense)
    assert_close(layer.magnitude.numpy(), np.linalg.norm(w0, axis=0), 1e-12, "m = ||W0||_c")
    assert_close(model(lamina.tensor(randn(3, 6, seed=1))).numpy(), before, 1e-12, "unchanged at init")
    layer.lora.B.data = randn(3, 12, seed=2, scale=0.3)
    layer.magnitude.data = layer.magnitude.data * (1 + randn(12, seed=4, scale=0.1))
    w, b, s = _t(w0), _t(layer.base.bias.numpy()), 2.0

    def dora(x, lora__A, lora__B, magnitude):
        adapted = w + s * lora__A @ lora__B
        norm = adapted.norm(dim=0).detach()
        return torch.tanh(x @ adapted * (magnitude / norm) + b)

    _compare(layer, ["lora__A", "lora__B", "magnitude"], dora, 6)
    assert layer.base.weight.grad is None
    x = lamina.tensor(randn(3, 6, seed=5))
    assert check_gradients(lambda m: nn.functional_call(model, {"dense.magnitude": m}, x), layer.magnitude.numpy())


def test_dora_merge_unmerge_and_errors(f64):
    model = apply_dora(_mlp(), r=2, target="dense_1")
    layer = model[1]
    layer.lora.B.data = randn(2, 4, seed=6, scale=0.5)
    layer.magnitude.data = layer.magnitude.data + 0.3
    x = lamina.tensor(randn(4, 6, seed=7))
    adapted = model(x).numpy()
    w = layer.base.weight.numpy().copy()
    merge_adapters(model)
    assert_close(model(x).numpy(), adapted, 1e-10)
    merged = layer.base.weight.numpy()
    assert_close(np.linalg.norm(merged, axis=0), layer.magnitude.numpy(), 1e-12, "merged column norms = m")
    with pytest.raises(ValueError, match="already merged"):
        merge_adapters(model)
    unmerge_adapters(model)
    assert_close(layer.base.weight.numpy(), w, 1e-12)
    assert_close(model(x).numpy(), adapted, 1e-10)
    assert model.num_parameters(trainable_only=True) == 2 * (12 + 4) + 4
    with pytest.raises(ValueError, match="rank r=5 is larger"):
        apply_dora(_mlp(), r=5, target="dense_1")
    via_lora = nn.apply_lora(_mlp(), r=2, target="dense_1", use_dora=True)
    assert isinstance(via_lora[1], DoRADense) and not isinstance(via_lora[0], DoRADense)
    with pytest.raises(ValueError, match="matches the target 'nope'"):
        apply_dora(_mlp(), target="nope")


# -- IA3 ------------------------------------------------------------------------------------------
def test_ia3_dense_scales_outputs_or_feed_forward_inputs(f64):
    model = _mlp()
    x0 = lamina.tensor(randn(3, 6, seed=1))
    before = model(x0).numpy()
    apply_ia3(model, target=nn.Dense, feedforward="dense_1")
    first, second = model[0], model[1]
    assert isinstance(first, IA3Dense) and not first.feedforward and second.feedforward
    assert_close(model(x0).numpy(), before, 0, "unchanged at init (ones)")
    assert model.num_parameters(trainable_only=True) == 12 + 12    # dense: 12 outputs; dense_1: 12 inputs
    _perturb(first.ia3, ["scaling"], seed=20)
    _perturb(second.ia3, ["scaling"], seed=21)
    w1, b1 = _t(first.base.weight.numpy()), _t(first.base.bias.numpy())
    w2, b2 = _t(second.base.weight.numpy()), _t(second.base.bias.numpy())
    _compare(first, ["ia3__scaling"], lambda x, ia3__scaling: torch.tanh((x @ w1 + b1) * ia3__scaling), 6)
    _compare(second, ["ia3__scaling"], lambda x, ia3__scaling: (x * ia3__scaling) @ w2 + b2, 12)
    x = lamina.tensor(randn(4, 6, seed=8))
    assert check_gradients(lambda a, b: nn.functional_call(model, {"dense.ia3.scaling": a,
                                                                   "dense_1.ia3.scaling": b}, x),
                           first.ia3.scaling.numpy(), second.ia3.scaling.numpy())
    adapted = model(x).numpy()
    weights = [first.base.weight.numpy().copy(), first.base.bias.numpy().copy(), second.base.weight.numpy().copy()]
    merge_adapters(model)
    assert_close(model(x).numpy(), adapted, 1e-10)
    assert_close(first.base.bias.numpy(), weights[1] * first.ia3.scaling.numpy(), 1e-12, "bias scaled")
    unmerge_adapters(model)
    for now, was in zip([first.base.weight, first.base.bias, second.base.weight], weights):
        assert_close(now.numpy(), was, 1e-12)
    with pytest.raises(ValueError, match="not merged"):
        unmerge_adapters(model)


# -- LoHa, LoKr, VeRA -----------------------------------------------------------------------------
def test_loha_matches_torch_and_starts_at_zero(f64):
    model = _mlp()
    x0 = lamina.tensor(randn(3, 6, seed=1))
    before = model(x0).numpy()
    apply_loha(model, r=2, alpha=4)
    assert_close(model(x0).numpy(), before, 0)
    layer = model[0]
    assert isinstance(layer, LoHaDense)
    assert model.num_parameters(trainable_only=True) == 2 * 2 * (6 + 12) + 2 * 2 * (12 + 4)
    _perturb(layer, ["B2"])
    w, b = _t(layer.base.weight.numpy()), _t(layer.base.bias.numpy())

    def loha(x, A1, B1, A2, B2):
        return torch.tanh(x @ (w + 2.0 * (A1 @ B1) * (A2 @ B2)) + b)

    _compare(layer, ["A1", "B1", "A2", "B2"], loha, 6)
    x = lamina.tensor(randn(3, 6, seed=9))
    assert check_gradients(lambda a, bb: nn.functional_call(model, {"dense.A1": a, "dense.B2": bb}, x),
                           layer.A1.numpy(), layer.B2.numpy())


def test_lokr_matches_torch_kron(f64):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(6))
    model(lamina.tensor(np.zeros((1, 8))))
    apply_lokr(model, r=1, alpha=2)
    layer = model[0]
    assert isinstance(layer, LoKrDense)
    assert layer.W1.shape == (2, 2) and layer.A2.shape == (4, 1) and layer.B2.shape == (1, 3)
    assert model.num_parameters(trainable_only=True) == 4 + 4 + 3
    assert not layer.delta_weight().numpy().any()
    _perturb(layer, ["W1"])
    w, b = _t(layer.base.weight.numpy()), _t(layer.base.bias.numpy())
    _compare(layer, ["W1", "A2", "B2"], lambda x, W1, A2, B2: x @ (w + 2.0 * torch.kron(W1, A2 @ B2)) + b, 8)
    x = lamina.tensor(randn(2, 8, seed=9))
    adapted = model(x).numpy()
    w_before = layer.base.weight.numpy().copy()
    merge_adapters(model)
    assert_close(model(x).numpy(), adapted, 1e-10)
    unmerge_adapters(model)
    assert_close(layer.base.weight.numpy(), w_before, 1e-12)


def test_vera_shares_frozen_projections_and_learns_two_vectors(f64):
    model = _mlp()
    x0 = lamina.tensor(randn(3, 6, seed=1))
    before = model(x0).numpy()
    apply_vera(model, r=3, projection_seed=7)
    assert_close(model(x0).numpy(), before, 0)
    first, second = model[0], model[1]
    assert isinstance(first, VeRADense)
    assert model.num_parameters(trainable_only=True) == (3 + 12) + (3 + 4)
    assert np.shares_memory(first.A, second.A) and np.shares_memory(first.B, second.B)
    assert_close(first.d.numpy(), np.full(3, 0.1), 0)
    _perturb(second, ["b"])
    a, bb = _t(second.A), _t(second.B)
    w, bias = _t(second.base.weight.numpy()), _t(second.base.bias.numpy())
    _compare(second, ["d", "b"], lambda x, d, b: x @ w + bias + ((x @ a) * d) @ bb * b, 12)
    x = lamina.tensor(randn(3, 6, seed=9))
    assert check_gradients(lambda d, b: nn.functional_call(model, {"dense_1.d": d, "dense_1.b": b}, x),
                           second.d.numpy(), second.b.numpy())
    adapted = model(x).numpy()
    merge_adapters(model)
    assert_close(model(x).numpy(), adapted, 1e-10)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="rank r=7 is larger"):
        apply_loha(_mlp(), r=7, target="dense_1")
    with pytest.raises(ValueError, match="no Dense layer .* matches the target"):
        apply_vera(_mlp(), target=["missing"])
    with pytest.raises(ValueError, match="attention_parts"):
        apply_ia3(_mlp(), attention_parts=("x",))
    model = apply_lokr(_mlp(), r=1)
    merge_adapters(model)
    with pytest.raises(ValueError, match="already merged"):
        model[0].merge()
    with pytest.raises(TypeError, match="expected a Dense"):
        DoRADense(nn.LayerNorm(-1))
