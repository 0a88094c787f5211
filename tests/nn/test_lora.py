"""LoRA: a LoRADense against a torch implementation (values and gradients, only the adapter
learning), merging and unmerging, adapters on attention projections, the adapters' state
dict, and a frozen pretrained MLP adapting to a shifted task through its adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.nn import LoRADense, apply_lora, lora_state_dict, merge_lora, unmerge_lora


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _mlp(seed=0, sizes=(6, 16, 3)):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(sizes[1], activation="tanh"), nn.Dense(sizes[2]))
    model(lamina.tensor(np.zeros((1, sizes[0]))))
    return model


def _perturb_b(model, seed=1):
    """B starts at zero; give it values so that the LoRA term counts in the comparisons."""
    for i, (_, module) in enumerate(model.named_modules()):
        if isinstance(module, nn.LoRAAdapter):
            module.B.data = randn(*module.B.shape, seed=seed + i, scale=0.3).astype(module.B.dtype)


class TorchLoRALinear(torch.nn.Module):
    """y = g(x W + b + (alpha / r) x A B), written in torch from the same arrays."""

    def __init__(self, w, b, a, bb, scaling, activation=None):
        super().__init__()
        self.w, self.b = torch.tensor(w), torch.tensor(b)
        self.a = torch.nn.Parameter(torch.tensor(a))
        self.bb = torch.nn.Parameter(torch.tensor(bb))
        self.scaling, self.activation = scaling, activation

    def forward(self, x):
        z = x @ self.w + self.b + self.scaling * (x @ self.a @ self.bb)
        return z if self.activation is None else self.activation(z)


def test_lora_dense_matches_torch_and_only_the_adapter_learns(f64):
    model = apply_lora(_mlp(), r=4, alpha=8)
    _perturb_b(model)
    layer = model[0]
    assert isinstance(layer, LoRADense) and layer.lora.scaling == 2.0
    ref = TorchLoRALinear(layer.base.weight.numpy(), layer.base.bias.numpy(), layer.lora.A.numpy(),
                          layer.lora.B.numpy(), 2.0, torch.tanh)
    x = randn(5, 6, seed=2)
    up = randn(5, 16, seed=3)
    ours = layer(lamina.tensor(x))
    theirs = ref(torch.tensor(x))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-12)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    assert_close(layer.lora.A.grad, ref.a.grad.numpy(), 1e-12, "dJ/dA")
    assert_close(layer.lora.B.grad, ref.bb.grad.numpy(), 1e-12, "dJ/dB")
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert {name for name, _ in model.named_parameters(trainable_only=True)} == {
        "dense.lora.A", "dense.lora.B", "dense_1.lora.A", "dense_1.lora.B"}


def test_lora_gradcheck_and_initialisation(f64):
    model = apply_lora(_mlp(), r=2, alpha=2)
    adapter = model[0].lora
    assert not adapter.B.numpy().any()
    assert np.abs(adapter.A.numpy()).max() <= 1 / np.sqrt(6)
    _perturb_b(model)
    assert check_gradients(lambda a, b: nn.functional_call(model, {"dense.lora.A": a, "dense.lora.B": b},
                                                           lamina.tensor(randn(3, 6, seed=4))),
                           adapter.A.numpy(), adapter.B.numpy())


def test_an_untrained_adapter_leaves_the_model_unchanged_and_saves_parameters():
    model = _mlp(sizes=(64, 64, 10))
    x = lamina.tensor(randn(4, 64, seed=5).astype(np.float32))
    before = model(x).numpy()
    total = model.num_parameters()
    apply_lora(model, r=2)
    assert_close(model(x).numpy(), before, 1e-6)
    assert model.num_parameters(trainable_only=True) == 2 * (64 + 64) + 2 * (64 + 10)
    assert model.num_parameters() == total + model.num_parameters(trainable_only=True)


def test_merge_and_unmerge_keep_the_outputs(f64):
    model = apply_lora(_mlp(), r=3, target="dense_1")
    _perturb_b(model)
    assert isinstance(model[1], LoRADense) and not isinstance(model[0], LoRADense)
    x = lamina.tensor(randn(4, 6, seed=6))
    adapted = model(x).numpy()
    base = model[1].base.weight.numpy().copy()
    merge_lora(model)
    assert_close(model(x).numpy(), adapted, 1e-12)
    assert not np.allclose(model[1].base.weight.numpy(), base)
    with pytest.raises(ValueError, match="already merged"):
        model[1].merge()
    unmerge_lora(model)
    assert_close(model[1].base.weight.numpy(), base, 1e-12)
    assert_close(model(x).numpy(), adapted, 1e-12)
    plain = merge_lora(model, unload=True)
    assert type(plain[1]) is nn.Dense and not lora_state_dict(plain)
    assert_close(plain(x).numpy(), adapted, 1e-12)


def test_attention_projections_get_query_and_value_adapters(f64):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, causal=True), nn.Dense(3))
    x = lamina.tensor(randn(2, 5, 8, seed=7))
    model(x)
    model.eval()
    plain = model(x).numpy()
    apply_lora(model, r=2, target=nn.MultiHeadAttention)
    attention = model[0].self_attention
    assert set(attention._modules) == {"lora_q", "lora_v"}
    _perturb_b(model)
    adapted = model(x).numpy()
    assert not np.allclose(adapted, plain, atol=1e-3)
    merge_lora(model)
    assert_close(model(x).numpy(), adapted, 1e-12)
    # the merged in-projection equals the base one plus the query and value terms
    unmerge_lora(model)
    w = attention.in_weight.numpy().copy()
    w[:, :8] += attention.lora_q.delta_weight()
    w[:, 16:] += attention.lora_v.delta_weight()
    merge_lora(model, unload=True)
    assert_close(attention.in_weight.numpy(), w, 1e-12)
    assert not attention._modules


def test_grouped_query_attention_adapters_fit_the_narrower_projections(f64):
    layer = nn.MultiHeadAttention(8, 4, num_kv_heads=1)
    x = lamina.tensor(randn(1, 3, 8, seed=8))
    layer(x)
    apply_lora(layer, r=2, target=nn.MultiHeadAttention, attention_parts=("q", "k", "v"))
    assert layer.lora_k.B.shape == (2, 2) and layer.lora_q.B.shape == (2, 8)
    _perturb_b(layer)
    adapted = layer(x).numpy()
    merge_lora(layer)
    assert_close(layer(x).numpy(), adapted, 1e-12)


def test_lora_state_dict_holds_the_adapters_alone_and_loads_back():
    model = apply_lora(_mlp(), r=2)
    _perturb_b(model)
    state = lora_state_dict(model)
    assert list(state) == ["dense.lora.A", "dense.lora.B", "dense_1.lora.A", "dense_1.lora.B"]
    other = apply_lora(_mlp(), r=2)
    other.load_state_dict(state, strict=False)
    x = lamina.tensor(randn(3, 6, seed=9).astype(np.float32))
    assert_close(other(x).numpy(), model(x).numpy(), 1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no weights"):
        LoRADense(nn.Dense(3))
    with pytest.raises(ValueError, match="matches"):
        apply_lora(_mlp(), target="missing")
    with pytest.raises(ValueError, match="rank"):
        apply_lora(_mlp(), r=0)


def _task(rng, n, shift):
    """Three classes by which of three fixed directions x is closest to; ``shift`` rotates the inputs."""
    x = rng.standard_normal((n, 6))
    centres = np.eye(6)[:3] * 2.0
    y = np.argmax(x @ centres.T, axis=1)
    return (x @ shift).astype(np.float32), y


def test_a_frozen_pretrained_mlp_adapts_to_a_shifted_task():
    rng = np.random.default_rng(0)
    shift = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    model = _mlp(sizes=(6, 32, 3))

    def train(params, x, y, steps):
        opt = lamina.optim.Adam(params, lr=0.02)
        for _ in range(steps):
            opt.zero_grad()
            loss = lamina.functional.categorical_cross_entropy(model(lamina.tensor(x)), y, from_logits=True)
            loss.backward()
            opt.step()

    def accuracy(x, y):
        with lamina.no_grad():
            return float((model(lamina.tensor(x)).numpy().argmax(axis=1) == y).mean())

    x, y = _task(rng, 512, np.eye(6))
    train(model.parameters(), x, y, 150)
    assert accuracy(x, y) > 0.9
    xs, ys = _task(rng, 512, shift)
    before = accuracy(xs, ys)
    apply_lora(model, r=4, alpha=8)
    frozen = [p.numpy().copy() for p in (model[0].base.weight, model[1].base.weight)]
    train(model.parameters(trainable_only=True), xs, ys, 150)
    after = accuracy(xs, ys)
    assert after > before + 0.3 and after > 0.85, (before, after)
    assert np.array_equal(frozen[0], model[0].base.weight.numpy())
