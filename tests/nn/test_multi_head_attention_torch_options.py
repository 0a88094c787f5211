"""MultiHeadAttention's PyTorch options: add_bias_kv, add_zero_attn, kdim/vdim and averaged
weights against torch.nn.MultiheadAttention (float64, weights copied), with and without
masks; gradient checks; the cache refusing them; configs and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.multi_head_attention import MultiHeadAttention

RTOL = 1e-9
E, HEADS = 8, 2


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layer(rng, t_q, options, use_bias=True):
    """A built float64 layer with every parameter drawn at random (biases included)."""
    layer = MultiHeadAttention(E, HEADS, use_bias=use_bias, **options)
    layer.build((1, t_q, E))
    for p in layer.parameters():
        p.data = 0.5 * rng.standard_normal(p.shape)
    return layer


def _torch_twin(layer):
    """torch.nn.MultiheadAttention holding ``layer``'s weights, and the pairs (lamina
    parameter, torch parameter, lamina array -> torch layout)."""
    ref = torch.nn.MultiheadAttention(E, HEADS, bias=layer.use_bias, add_bias_kv=layer.add_bias_kv,
                                      add_zero_attn=layer.add_zero_attn, kdim=layer.kdim, vdim=layer.vdim,
                                      batch_first=True, dtype=torch.float64)
    transpose, flat = (lambda a: a.T), (lambda a: a)
    pairs = [(layer.out_weight, ref.out_proj.weight, transpose)]
    if layer.separate_projections:
        pairs += [(layer.q_weight, ref.q_proj_weight, transpose), (layer.k_weight, ref.k_proj_weight, transpose),
                  (layer.v_weight, ref.v_proj_weight, transpose)]
    else:
        pairs.append((layer.in_weight, ref.in_proj_weight, transpose))
    if layer.use_bias:
        pairs += [(layer.in_bias, ref.in_proj_bias, flat), (layer.out_bias, ref.out_proj.bias, flat)]
    if layer.add_bias_kv:
        pairs += [(layer.bias_k, ref.bias_k, lambda a: a.reshape(1, 1, E)),
                  (layer.bias_v, ref.bias_v, lambda a: a.reshape(1, 1, E))]
    assert len(pairs) == len(layer.parameters()) == len(list(ref.parameters()))
    with torch.no_grad():
        for ours, theirs, layout in pairs:
            theirs.copy_(torch.from_numpy(np.ascontiguousarray(layout(ours.numpy()))))
    return ref.eval(), pairs


def _masks(kind: str, n: int, t_q: int, t_k: int, rng, whole: bool = True) -> tuple[dict, dict]:
    """(lamina keywords, torch keywords) of one masking: lamina's True = attend, PyTorch's
    True = not allowed; 'padding' pads every key of the last sample when ``whole``."""
    if kind == "none":
        return {}, {}
    if kind == "causal":
        future = np.triu(np.ones((t_q, t_k), dtype=bool), k=1)
        return {"causal": True}, {"attn_mask": torch.from_numpy(future)}
    if kind == "float":
        bias = rng.standard_normal((t_q, t_k))
        return {"mask": bias}, {"attn_mask": torch.from_numpy(bias)}
    padded = np.zeros((n, t_k), dtype=bool)
    padded[0, t_k - 2:] = True
    padded[-1, :] = whole
    attn = rng.random((t_q, t_k)) < 0.3
    attn[:, 0] = False
    return ({"mask": ~attn, "key_mask": ~padded},
            {"attn_mask": torch.from_numpy(attn), "key_padding_mask": torch.from_numpy(padded)})


def _compare(layer, n, t_q, t_k, masking, rng, average=True):
    """Outputs, weights and the gradients of the inputs and of every parameter against torch."""
    ref, pairs = _torch_twin(layer)
    arrays = [rng.standard_normal((n, t_q, E)), rng.standard_normal((n, t_k, layer.kdim)),
              rng.standard_normal((n, t_k, layer.vdim))]
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    extra = layer.add_bias_kv or layer.add_zero_attn      # without them a query seeing no key gives NaN
    mine, torchs = _masks(masking, n, t_q, t_k, rng, whole=extra)
    out, weights = layer(*ours, return_weights=True, average_weights=average, **mine)
    expected, expected_weights = ref(*theirs, need_weights=True, average_attn_weights=average, **torchs)
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "output")
    assert_close(weights.numpy(), expected_weights.detach().numpy(), RTOL, "weights")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.grad, b.grad.numpy(), RTOL, f"gradient of input {k}")
    names = {id(p): name for name, p in layer.named_parameters()}
    for p, tp, layout in pairs:
        assert_close(layout(p.grad), tp.grad.numpy(), RTOL, f"gradient of {names[id(p)]}")
    return out, weights


OPTIONS = [
    {"add_bias_kv": True},
    {"add_zero_attn": True},
    {"add_bias_kv": True, "add_zero_attn": True},
    {"kdim": 5, "vdim": 3},
    {"kdim": 6, "add_bias_kv": True, "add_zero_attn": True},
]


@pytest.mark.parametrize("masking", ["none", "causal", "float", "padding"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_matches_torch(f64, options, masking):
    rng = np.random.default_rng(len(masking) + 7 * len(options))
    extra = bool(options.get("add_bias_kv")) + bool(options.get("add_zero_attn"))
    for n, t_q, t_k in ((1, 4, 4), (3, 3, 5)):
        if masking == "causal" and t_q != t_k:
            continue
        layer = _layer(rng, t_q, options)
        _, weights = _compare(layer, n, t_q, t_k, masking, rng)
        assert weights.shape == (n, t_q, t_k + extra)


@pytest.mark.parametrize("options", OPTIONS[2:4], ids=["bias_kv+zero", "kdim-vdim"])
def test_per_head_weights_and_no_bias_match_torch(f64, options):
    rng = np.random.default_rng(11)
    layer = _layer(rng, 4, options, use_bias=False)
    _, weights = _compare(layer, 2, 4, 4, "padding", rng, average=False)
    assert weights.shape[:2] == (2, HEADS)


def test_extra_positions_rescue_a_fully_padded_sample(f64):
    rng = np.random.default_rng(12)
    q = rng.standard_normal((2, 3, E))
    key_mask = np.ones((2, 3), dtype=bool)
    key_mask[0] = False                                 # sample 0: every key padded
    for options in ({"add_zero_attn": True}, {"add_bias_kv": True}):
        out = _layer(rng, 3, options)(q, key_mask=key_mask)
        assert np.isfinite(out.numpy()).all(), options
    # only the appended zero key is seen: it takes every weight, and its zero value leaves out_bias
    layer = _layer(rng, 3, {"add_zero_attn": True})
    out, weights = layer(q, key_mask=key_mask, return_weights=True)
    np.testing.assert_allclose(weights.numpy()[0, ..., -1], 1.0)
    np.testing.assert_allclose(out.numpy()[0], np.broadcast_to(layer.out_bias.numpy(), (3, E)), atol=1e-12)
    assert (weights.numpy()[1, ..., :3] > 0).all()


def test_appended_positions_differ_from_a_plain_layer(f64):
    rng = np.random.default_rng(13)
    q = rng.standard_normal((2, 4, E))
    plain = _layer(rng, 4, {})
    for options in ({"add_bias_kv": True}, {"add_zero_attn": True}):
        layer = MultiHeadAttention(E, HEADS, **options)
        layer.build(q.shape)
        for name, p in plain.named_parameters():
            getattr(layer, name).data = p.numpy().copy()
        assert not np.allclose(layer(q).numpy(), plain(q).numpy())


@pytest.mark.parametrize("options", [{"add_bias_kv": True, "add_zero_attn": True}, {"kdim": 3, "vdim": 5},
                                     {"add_bias_kv": True, "num_kv_heads": 1}])
def test_gradcheck(f64, options):
    rng = np.random.default_rng(14)
    layer = _layer(rng, 3, options)
    q = lamina.tensor(rng.standard_normal((2, 3, E)), requires_grad=True)
    k = lamina.tensor(rng.standard_normal((2, 4, layer.kdim)), requires_grad=True)
    v = lamina.tensor(rng.standard_normal((2, 4, layer.vdim)), requires_grad=True)
    key_mask = np.array([[True, True, False, True], [True, False, False, False]])
    assert lamina.gradcheck(lambda q_, k_, v_, *_: layer(q_, k_, v_, key_mask=key_mask), q, k, v,
                            *layer.parameters())


def test_keys_values_projected_once_equal_the_call_on_keys(f64):
    rng = np.random.default_rng(15)
    layer = _layer(rng, 3, {"add_bias_kv": True, "add_zero_attn": True, "kdim": 5, "vdim": 6})
    q, k, v = rng.standard_normal((2, 3, E)), rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 6))
    keys, values = layer.project_keys_values(k, v)
    assert keys.shape == values.shape == (2, HEADS, 4, E // HEADS)
    key_mask = np.array([[True, True, False, True], [False, True, True, True]])
    np.testing.assert_allclose(layer(q, keys_values=(keys, values), key_mask=key_mask).numpy(),
                               layer(q, k, v, key_mask=key_mask).numpy(), rtol=1e-12)


def test_options_compose_with_the_layers_own(f64):
    """Grouped-query heads and ALiBi keep their meaning with the extra positions (the
    positions' bias column is 0, the extra key repeated for each group)."""
    rng = np.random.default_rng(16)
    q = rng.standard_normal((2, 5, E))
    layer = _layer(rng, 5, {"add_bias_kv": True, "add_zero_attn": True, "num_kv_heads": 1, "alibi": True})
    out, weights = layer(q, causal=True, return_weights=True)
    assert weights.shape == (2, HEADS, 5, 7)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0)
    assert (weights.numpy()[..., :5][..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0).all()
    assert (weights.numpy()[..., 5:] > 0).all()


def test_the_cache_refuses_the_torch_options():
    for options in ({"add_bias_kv": True}, {"add_zero_attn": True}, {"kdim": 4}, {"vdim": 4}):
        layer = MultiHeadAttention(E, HEADS, **options)
        assert not layer.cacheable
        with pytest.raises(ValueError, match="MultiHeadAttention.*cannot cache keys and values with"):
            layer.start_caching()
        assert not layer.caching
    assert MultiHeadAttention(E, HEADS).cacheable


def test_bad_inputs_raise_named_errors():
    with pytest.raises(ValueError, match="MultiHeadAttention: kdim"):
        MultiHeadAttention(E, HEADS, kdim=0)
    with pytest.raises(ValueError, match="MultiHeadAttention: vdim"):
        MultiHeadAttention(E, HEADS, vdim=-2)
    layer = MultiHeadAttention(E, HEADS, kdim=5, vdim=3)
    q = np.zeros((2, 3, E), np.float32)
    with pytest.raises(ShapeError, match=r"key of shape \(batch, time, 5\)"):
        layer(q)                                           # self-attention: keys of width E, not kdim
    with pytest.raises(ShapeError, match=r"value of shape \(batch, time, 3\)"):
        layer(q, np.zeros((2, 4, 5), np.float32), np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ShapeError, match=r"key of shape \(batch, time, 5\)"):
        layer.project_keys_values(np.zeros((2, 4, E), np.float32))


def test_parameters_configs_and_repr():
    layer = MultiHeadAttention(E, HEADS, add_bias_kv=True, add_zero_attn=True, kdim=5, vdim=3)
    layer.build((2, 3, E))
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {"q_weight": (E, E), "k_weight": (5, E), "v_weight": (3, E), "bias_k": (E,), "bias_v": (E,),
                      "in_bias": (3 * E,), "out_weight": (E, E), "out_bias": (E,)}
    config = layer.get_config()
    assert {key: config[key] for key in ("add_bias_kv", "add_zero_attn", "kdim", "vdim")} == {
        "add_bias_kv": True, "add_zero_attn": True, "kdim": 5, "vdim": 3}
    again = layer_from_config(layer_to_config(layer))
    assert again.get_config() == config
    assert "add_bias_kv=True, add_zero_attn=True, kdim=5, vdim=3" in repr(layer)
    plain = MultiHeadAttention(E, HEADS).get_config()
    assert not {"add_bias_kv", "add_zero_attn", "kdim", "vdim"} & set(plain)
    # PyTorch's scale of bias_k: N(0, 1 / E) (xavier_normal_ of a (1, 1, E) tensor)
    big = MultiHeadAttention(512, 8, add_bias_kv=True)
    big.build((1, 2, 512))
    assert 0.8 < big.bias_k.numpy().std() * np.sqrt(512) < 1.2


def test_float32_keeps_its_dtype_and_matches_torch():
    rng = np.random.default_rng(17)
    layer = MultiHeadAttention(E, HEADS, add_bias_kv=True, add_zero_attn=True, kdim=5)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, E), (2, 4, 5), (2, 4, E)))
    layer.build(q.shape)
    ref = torch.nn.MultiheadAttention(E, HEADS, add_bias_kv=True, add_zero_attn=True, kdim=5, batch_first=True)
    with torch.no_grad():
        for ours, theirs in ((layer.q_weight, ref.q_proj_weight), (layer.k_weight, ref.k_proj_weight),
                             (layer.v_weight, ref.v_proj_weight), (layer.out_weight, ref.out_proj.weight)):
            theirs.copy_(torch.from_numpy(np.ascontiguousarray(ours.numpy().T)))
        for ours, theirs in ((layer.bias_k, ref.bias_k), (layer.bias_v, ref.bias_v)):
            theirs.copy_(torch.from_numpy(ours.numpy()).reshape(1, 1, E))
    key_mask = np.array([[True, True, True, False], [False, False, False, False]])
    out, weights = layer(q, k, v, key_mask=key_mask, return_weights=True, average_weights=True)
    expected, expected_weights = ref(*map(torch.from_numpy, (q, k, v)), key_padding_mask=torch.from_numpy(~key_mask))
    assert out.dtype == weights.dtype == np.float32
    assert_close(out.numpy(), expected.detach().numpy(), 1e-5, "output")
    assert_close(weights.numpy(), expected_weights.detach().numpy(), 1e-5, "weights")


@pytest.mark.parametrize("adapt", [lambda m: nn.apply_lora(m, target=nn.MultiHeadAttention),
                                   lambda m: nn.apply_ia3(m)])
def test_column_adapters_refuse_separate_projections(adapt):
    model = nn.Sequential(nn.MultiHeadAttention(8, 2, kdim=6))
    model.build((2, 3, 8))
    with pytest.raises(NotImplementedError, match=r"kdim=6, vdim=8 different from embed_dim=8"):
        adapt(model)
