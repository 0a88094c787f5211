"""Wide & Deep, AutoInt and xDeepFM: the CIN against a float64 torch einsum rewrite and a NumPy
loop over its formula, the interacting layer and the whole models against float64 torch
rewrites (outputs and gradients), Wide & Deep as the sum of its parts, gradient checks,
save/load, errors and the README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, run_readme_section
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models import CIN, AutoInt, InteractingLayer, WideAndDeep, XDeepFM


@pytest.fixture(autouse=True)
def _float64():
    lamina.set_default_dtype(np.float64)


def _randomize(model, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data[...] = rng.normal(0, scale, param.shape)


def _torch_params(model):
    return {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}


def _check_grads(model, p, rtol=1e-9):
    for name, param in model.named_parameters():
        assert p[name].grad is not None, name
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=rtol, atol=1e-12, err_msg=name)


def _run_bce(model, *inputs):
    model.zero_grad()
    logits = model(*inputs)
    labels = (np.arange(logits.shape[0]) % 2).astype(np.float64)
    F.binary_cross_entropy(logits, labels, from_logits=True).backward()
    return logits.numpy(), labels


def _check_bce(model, p, expected, labels, logits):
    TF.binary_cross_entropy_with_logits(expected, torch.tensor(labels)).backward()
    assert_close(logits, expected.detach().numpy(), 1e-12, "logits")
    _check_grads(model, p)


def _field_rows(ids, field_dims):
    return torch.tensor(ids + np.concatenate([[0], np.cumsum(field_dims)[:-1]]))


def _torch_mlp(x, p, prefix, hidden):
    names = [f"{prefix}.dense" + ("" if k == 0 else f"_{k}") for k in range(hidden + 1)]
    for k, name in enumerate(names):
        x = x @ p[f"{name}.weight"] + p[f"{name}.bias"]
        if k < hidden:
            x = torch.relu(x)
    return x


# -- CIN ------------------------------------------------------------------------------------
def _torch_cin(x0, weights, sizes, split_half):
    """X^k_{h,*} = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_{i,*} * X^0_{j,*}) by einsum, W^k as (H, F, H_k)."""
    x, pooled, fields = x0, [], x0.shape[1]
    for k, (w, size) in enumerate(zip(weights, sizes)):
        x = torch.einsum("bid,bjd,ijh->bhd", x, x0, w.reshape(-1, fields, size))
        if split_half and k < len(sizes) - 1:
            pooled.append(x[:, size // 2:].sum(2))
            x = x[:, :size // 2]
        else:
            pooled.append(x.sum(2))
    return torch.cat(pooled, dim=1)


def _numpy_cin(x0, weights, sizes, split_half):
    """The CIN formula by loops over (h, i, j), NumPy."""
    batch, fields, dim = x0.shape
    x, pooled = x0, []
    for k, (w, size) in enumerate(zip(weights, sizes)):
        nxt = np.zeros((batch, size, dim))
        for h in range(size):
            for i in range(x.shape[1]):
                for j in range(fields):
                    nxt[:, h] += w[i * fields + j, h] * x[:, i] * x0[:, j]
        x = nxt
        if split_half and k < len(sizes) - 1:
            pooled.append(x[:, size // 2:].sum(2))
            x = x[:, :size // 2]
        else:
            pooled.append(x.sum(2))
    return np.concatenate(pooled, axis=1)


@pytest.mark.parametrize("sizes,split_half", [((4, 3), True), ((2, 3, 2), False)])
def test_cin_equals_einsum_rewrite_and_loop(sizes, split_half):
    x0 = np.random.default_rng(1).normal(size=(3, 4, 5))
    cin = CIN(4, sizes, split_half=split_half)
    _randomize(cin, seed=2)
    weights = [getattr(cin, f"weight_{k}").data for k in range(len(sizes))]
    x0_t = torch.tensor(x0, requires_grad=True)
    p = _torch_params(cin)
    expected = _torch_cin(x0_t, [p[f"weight_{k}"] for k in range(len(sizes))], sizes, split_half)
    x0_l = lamina.Tensor(x0, requires_grad=True)
    out = cin(x0_l)
    assert out.shape == (3, cin.output_width) == (3, sum(cin.pooled_sizes()))
    assert_close(out.numpy(), expected.detach().numpy(), 1e-12, "CIN vs einsum")
    assert_close(out.numpy(), _numpy_cin(x0, weights, sizes, split_half), 1e-12, "CIN vs loop")
    cotangent = np.random.default_rng(3).normal(size=out.shape)
    (out * cotangent).sum().backward()
    (expected * torch.tensor(cotangent)).sum().backward()
    assert_close(x0_l.grad, x0_t.grad.numpy(), 1e-10, "CIN input grad")
    _check_grads(cin, p)
    check_gradients(lambda t: cin(t), x0)


def test_cin_errors():
    with pytest.raises(ValueError, match="CIN: with split_half every layer size but the last must be even"):
        CIN(3, (3, 2))
    with pytest.raises(ShapeError, match=r"expected embeddings \(batch, 3, dim\)"):
        CIN(3, (2, 2))(np.zeros((2, 4, 5)))


# -- AutoInt --------------------------------------------------------------------------------
def _torch_interacting(x, p, heads, width, residual=True, prefix=""):
    batch, fields, _ = x.shape

    def split(w):
        return (x @ w).reshape(batch, fields, heads, width).transpose(1, 2)

    q, k, v = split(p[prefix + "query"]), split(p[prefix + "key"]), split(p[prefix + "value"])
    mixed = (torch.softmax(q @ k.transpose(2, 3), dim=-1) @ v).transpose(1, 2).reshape(batch, fields, -1)
    return torch.relu(mixed + x @ p[prefix + "residual"]) if residual else torch.relu(mixed)


@pytest.mark.parametrize("use_residual", [True, False])
def test_interacting_layer_matches_torch(use_residual):
    x = np.random.default_rng(4).normal(size=(3, 4, 5))
    layer = InteractingLayer(5, attention_dim=3, num_heads=2, use_residual=use_residual)
    _randomize(layer, seed=5)
    p = _torch_params(layer)
    xt = torch.tensor(x, requires_grad=True)
    expected = _torch_interacting(xt, p, 2, 3, use_residual)
    xl = lamina.Tensor(x, requires_grad=True)
    out = layer(xl)
    assert out.shape == (3, 4, 6) == layer.compute_output_shape((3, 4, 5))
    assert_close(out.numpy(), expected.detach().numpy(), 1e-12, "interacting layer")
    cotangent = np.random.default_rng(6).normal(size=out.shape)
    (out * cotangent).sum().backward()
    (expected * torch.tensor(cotangent)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-10, "interacting input grad")
    _check_grads(layer, p)
    check_gradients(lambda t: layer(t), x)


@pytest.mark.parametrize("num_dense", [0, 2])
def test_autoint_matches_torch(num_dense):
    field_dims, ids = (3, 4, 2), np.array([[0, 3, 1], [2, 0, 0], [1, 1, 1], [2, 3, 0]])
    dense = np.random.default_rng(7).normal(size=(4, num_dense)) if num_dense else None
    model = AutoInt(field_dims, embed_dim=4, num_layers=2, num_heads=2, attention_dim=3, num_dense=num_dense)
    _randomize(model, seed=8)
    logits, labels = _run_bce(model, ids, dense)
    p = _torch_params(model)
    x = p["embedding.table.weight"][_field_rows(ids, field_dims)]
    if num_dense:
        x = torch.cat([x, torch.tensor(dense)[:, :, None] * p["dense_embedding"]], dim=1)
    for layer in range(2):
        x = _torch_interacting(x, p, 2, 3, prefix=f"interacting.{layer}.")
    expected = (x.reshape(4, -1) @ p["head.weight"] + p["head.bias"])[:, 0]
    _check_bce(model, p, expected, labels, logits)


# -- xDeepFM --------------------------------------------------------------------------------
@pytest.mark.parametrize("num_dense", [0, 1])
def test_xdeepfm_matches_torch(num_dense):
    field_dims, ids = (3, 4, 2), np.array([[0, 3, 1], [2, 0, 0], [1, 1, 1], [2, 3, 0]])
    dense = np.random.default_rng(9).normal(size=(4, num_dense)) if num_dense else None
    model = XDeepFM(field_dims, embed_dim=3, cin_layer_sizes=(4, 2), mlp_dims=(5,), num_dense=num_dense)
    _randomize(model, seed=10)
    logits, labels = _run_bce(model, ids, dense)
    p = _torch_params(model)
    rows = _field_rows(ids, field_dims)
    e = p["embedding.table.weight"][rows]
    linear = p["first_order.table.weight"][rows].sum(dim=(1, 2)) + p["bias"]
    x = e.reshape(4, -1)
    if num_dense:
        x = torch.cat([x, torch.tensor(dense)], dim=1)
        linear = linear + (torch.tensor(dense) @ p["dense_linear.weight"])[:, 0]
    cin = _torch_cin(e, [p["cin.weight_0"], p["cin.weight_1"]], (4, 2), True) @ p["cin_head.weight"]
    expected = linear + cin[:, 0] + _torch_mlp(x, p, "deep", 1)[:, 0]
    _check_bce(model, p, expected, labels, logits)


# -- Wide & Deep ----------------------------------------------------------------------------
def test_wide_and_deep_is_the_sum_of_its_parts():
    field_dims, ids = (3, 4, 2), np.array([[0, 3, 1], [2, 0, 0], [1, 1, 1], [2, 3, 1]])
    dense = np.random.default_rng(11).normal(size=(4, 2))
    crosses = ((0, 1), (2, 0, 1))
    model = WideAndDeep(field_dims, embed_dim=3, mlp_dims=(5, 4), cross_fields=crosses, num_dense=2)
    _randomize(model, seed=12)
    # the wide part by hand: one weight per field value and per combination of a cross's values
    first = model.first_order.table.weight.data[:, 0]
    cross_table = model.cross_weights.table.weight.data[:, 0]
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    wide = first[ids + offsets].sum(1) + model.bias.data[0] + dense @ model.dense_linear.weight.data[:, 0]
    combos = [{}, {}]
    for c, cross in enumerate(crosses):
        for values in np.ndindex(*(field_dims[f] for f in cross)):
            combos[c][values] = len(combos[c]) + (0 if c == 0 else 12)    # row order: mixed radix, cross 0 first
    for b in range(4):
        wide[b] += sum(cross_table[combos[c][tuple(ids[b, f] for f in cross)]] for c, cross in enumerate(crosses))
    assert_close(model.wide_logit(ids, dense).numpy(), wide, 1e-12, "wide part")
    # the deep part against torch, and the whole as their sum
    logits, labels = _run_bce(model, ids, dense)
    p = _torch_params(model)
    rows = _field_rows(ids, field_dims)
    x = torch.cat([p["embedding.table.weight"][rows].reshape(4, -1), torch.tensor(dense)], dim=1)
    deep = _torch_mlp(x, p, "deep", 2)[:, 0]
    assert_close(model.deep_logit(ids, dense).numpy(), deep.detach().numpy(), 1e-12, "deep part")
    first_t, cross_t = p["first_order.table.weight"][:, 0], p["cross_weights.table.weight"][:, 0]
    cross_rows = torch.tensor([[combos[c][tuple(ids[b, f] for f in cross)] for c, cross in enumerate(crosses)]
                               for b in range(4)])
    wide_t = (first_t[rows].sum(1) + p["bias"] + (torch.tensor(dense) @ p["dense_linear.weight"])[:, 0]
              + cross_t[cross_rows].sum(1))
    _check_bce(model, p, wide_t + deep, labels, logits)
    wide_ids = {id(q) for q in model.wide_parameters()}
    assert wide_ids.isdisjoint(id(q) for q in model.deep_parameters())
    assert len(wide_ids) + len(model.deep_parameters()) == len(list(model.parameters()))


def test_wide_and_deep_gradients_by_finite_differences():
    model = WideAndDeep((3, 2), embed_dim=2, mlp_dims=(3,), cross_fields=((0, 1),), num_dense=2)
    _randomize(model, seed=13)
    ids = np.array([[0, 1], [2, 0], [1, 1]])
    check_gradients(lambda d: model(ids, d), np.random.default_rng(14).normal(size=(3, 2)))


def test_wide_and_deep_errors():
    with pytest.raises(ValueError, match="WideAndDeep: a cross must name two or more distinct fields"):
        WideAndDeep((3, 2), cross_fields=((0, 0),))
    with pytest.raises(ValueError, match="field 1 has id 5"):
        WideAndDeep((3, 2))(np.array([[0, 5]]))


@pytest.mark.parametrize("make", [
    lambda: WideAndDeep((3, 4), embed_dim=2, mlp_dims=(3,), cross_fields=((0, 1),), num_dense=1),
    lambda: AutoInt((3, 4), embed_dim=2, num_layers=2, attention_dim=2, num_dense=1),
    lambda: XDeepFM((3, 4), embed_dim=2, cin_layer_sizes=(2, 3), mlp_dims=(3,), num_dense=1),
])
def test_models_save_and_load(make, tmp_path):
    model = make()
    _randomize(model, seed=15)
    ids, dense = np.array([[0, 3], [2, 1]]), np.array([[0.5], [-1.0]])
    lamina.save(model, tmp_path / "ctr.safetensors")
    twin = lamina.load(tmp_path / "ctr.safetensors")
    assert type(twin) is type(model) and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(ids, dense).numpy(), model(ids, dense).numpy())


def test_readme_example():
    printed, names = run_readme_section("Wide & Deep, AutoInt and xDeepFM")
    lines = printed.split("\n")
    assert lines[0] == "(4,) (4,) (4,)" and lines[1] == "(4, 4)"
    assert isinstance(names["cin"], CIN)
