"""Embedding, scaled dot-product attention, MultiHeadAttention and Attention against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina import functional as F
from lamina.functional.attention import scaled_dot_product_attention
from lamina.nn.attention import Attention
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding, _scatter_rows_sorted, embedding, scatter_rows
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.optim.adam import Adam

RTOL = {np.float32: 1e-5, np.float64: 1e-9}


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


# -- Embedding ----------------------------------------------------------------------------
IDS = np.array([[1, 4, 4, 0], [7, 1, 4, 2], [0, 0, 9, 1]])      # repeated ids and the padding word 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_matches_torch(dtype, padding_idx):
    lamina.set_default_dtype(dtype)
    layer = Embedding(10, 5, padding_idx=padding_idx)
    out = layer(lamina.tensor(IDS))
    ref = torch.nn.Embedding(10, 5, padding_idx=padding_idx, dtype=torch.float64 if dtype == np.float64 else None)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.numpy()))
    expected = ref(torch.from_numpy(IDS))
    assert out.shape == (3, 4, 5) and out.dtype == dtype
    assert_close(out.numpy(), expected.detach().numpy(), RTOL[dtype], "output")
    up = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(layer.weight.grad, ref.weight.grad.numpy(), RTOL[dtype], "weight gradient")
    if padding_idx is not None:
        assert not layer.weight.numpy()[padding_idx].any() and not layer.weight.grad[padding_idx].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_embedding_matches_torch(dtype):
    table = np.random.default_rng(2).standard_normal((6, 3))
    compare_with_torch(embedding, torch.nn.functional.embedding, IDS % 6, table, dtype=dtype, rtol=RTOL[dtype])


@pytest.mark.parametrize("scatter", [scatter_rows, _scatter_rows_sorted])
def test_scatter_rows_sums_repeats_like_add_at(scatter):
    rng = np.random.default_rng(3)
    for ids in (rng.integers(0, 50, 300), np.full(40, 7), np.arange(20), rng.zipf(1.5, 200) % 30):
        for dtype in (np.float64, np.float32):
            rows = rng.standard_normal((ids.size, 4)).astype(dtype)
            expected = np.zeros((50, 4))
            np.add.at(expected, ids, rows.astype(np.float64))
            got = scatter(ids, rows, 50)
            assert got.dtype == dtype and got.shape == (50, 4) and got.flags.c_contiguous
            tol = 1e-12 if dtype == np.float64 else 1e-5
            np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
        assert not scatter(np.zeros(0, dtype=int), np.zeros((0, 4)), 5).any()


def test_embedding_gradcheck():
    table = np.random.default_rng(4).standard_normal((10, 3))
    assert check_gradients(lambda w: embedding(IDS, w) * embedding(IDS[:, ::-1], w), table)


def test_embedding_errors_name_layer_value_and_range():
    layer = Embedding(10, 4, name="words")
    with pytest.raises(TypeError, match=r"Embedding 'words'.*integer.*float"):
        layer(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"Embedding 'words'.* 10 .*\[0, 10\)"):
        layer(np.array([[1, 10]]))
    with pytest.raises(ValueError, match=r"-1 .*\[0, 10\)"):
        layer(np.array([[-1, 3]]))
    with pytest.raises(ValueError, match="positive int"):
        Embedding(0, 4)
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(5, 4, padding_idx=5)


def test_embedding_config_state_and_init():
    layer = Embedding(1000, 16, padding_idx=2, name="emb")
    y = layer(np.array([[3, 2]]))
    assert layer.compute_output_shape((None, 7)) == (None, 7, 16)
    assert abs(float(layer.weight.numpy().std()) - 1.0) < 0.05          # N(0, 1) by default
    clone = layer_from_config(layer_to_config(layer))
    assert clone.get_config() == layer.get_config() and clone.padding_idx == 2
    clone(np.array([[0]]))
    clone.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(clone(np.array([[3, 2]])).numpy(), y.numpy())
    keras_like = Embedding(100, 8, embeddings_init="uniform")
    keras_like(np.array([0]))
    assert np.abs(keras_like.weight.numpy()).max() <= 0.05


# -- scaled_dot_product_attention ---------------------------------------------------------
def _qkv(t_q=4, t_k=5, d=3, d_v=2, seed=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 3, t_q, d)), rng.standard_normal((2, 3, t_k, d)),
            rng.standard_normal((2, 3, t_k, d_v)))


_KEEP = np.random.default_rng(6).random((2, 1, 4, 5)) > 0.3
_KEEP[..., 0] = True                                   # every query keeps a key
_BIAS = np.random.default_rng(7).standard_normal((4, 5))
SDPA_CASES = {
    "plain": ({}, {}),
    "bool_mask": ({"mask": _KEEP}, {"attn_mask": torch.from_numpy(_KEEP)}),
    "causal": ({"causal": True}, {"is_causal": True}),
    "scale": ({"scale": 0.3}, {"scale": 0.3}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [*SDPA_CASES, "float_mask"])
def test_sdpa_matches_torch(case, dtype):
    if case == "float_mask":
        ours = {"mask": _BIAS.astype(dtype)}
        theirs = {"attn_mask": torch.from_numpy(_BIAS.astype(dtype))}
    else:
        ours, theirs = SDPA_CASES[case]
    compare_with_torch(lambda q, k, v: scaled_dot_product_attention(q, k, v, **ours),
                       lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, **theirs),
                       *_qkv(), dtype=dtype, rtol=RTOL[dtype])


def test_sdpa_square_causal_with_mask_matches_torch():
    q, k, v = _qkv(t_q=5, t_k=5)
    keep = np.random.default_rng(8).random((5, 5)) > 0.4
    keep[:, 0] = True
    allowed = torch.from_numpy(keep & np.tri(5, dtype=bool))
    compare_with_torch(lambda *a: scaled_dot_product_attention(*a, mask=keep, causal=True),
                       lambda *a: torch.nn.functional.scaled_dot_product_attention(*a, attn_mask=allowed),
                       q, k, v, dtype=np.float64, rtol=1e-9)


@pytest.mark.parametrize("kw", [{}, {"mask": _KEEP}, {"mask": _BIAS}, {"causal": True}])
def test_sdpa_gradcheck(kw):
    assert check_gradients(lambda q, k, v: scaled_dot_product_attention(q, k, v, **kw), *_qkv(d=2))


def test_sdpa_dropout_gradcheck_and_weights():
    q, k, v = _qkv(d=2)

    def run(q_, k_, v_):
        lamina.manual_seed(3)
        return scaled_dot_product_attention(q_, k_, v_, dropout=0.4)

    assert check_gradients(run, q, k, v)
    out, weights = scaled_dot_product_attention(q, k, v, mask=_KEEP, return_weights=True)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-6)
    assert not weights.numpy()[~np.broadcast_to(_KEEP, weights.shape)].any()
    assert not weights.requires_grad


def test_sdpa_fully_masked_query_gives_zero_context():
    q, k, v = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in _qkv())
    keep = np.ones((4, 5), dtype=bool)
    keep[2] = False
    out = scaled_dot_product_attention(q, k, v, mask=keep)
    assert not out.numpy()[..., 2, :].any()
    out.sum().backward()
    assert all(np.isfinite(t.grad).all() for t in (q, k, v))


def test_sdpa_shape_errors():
    q, k, v = _qkv()
    with pytest.raises(lamina.ShapeError, match="feature size"):
        scaled_dot_product_attention(q, k[..., :2], v)
    with pytest.raises(lamina.ShapeError, match="broadcast"):
        scaled_dot_product_attention(q, k, v, mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, k, v, mask=np.ones((4, 5), dtype=int))


# -- MultiHeadAttention -------------------------------------------------------------------
def _torch_mha(layer, dtype):
    e = layer.embed_dim
    ref = torch.nn.MultiheadAttention(e, layer.num_heads, bias=layer.use_bias, batch_first=True,
                                      dtype=torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.from_numpy(layer.in_weight.numpy().T))
        ref.out_proj.weight.copy_(torch.from_numpy(layer.out_weight.numpy().T))
        if layer.use_bias:
            ref.in_proj_bias.copy_(torch.from_numpy(layer.in_bias.numpy()))
            ref.out_proj.bias.copy_(torch.from_numpy(layer.out_bias.numpy()))
    return ref


def _compare_mha(dtype, *, t_q=4, t_k=4, cross=False, use_bias=True, ours=None, theirs=None, rng_seed=9):
    ours, theirs = ours or {}, theirs or {}
    lamina.set_default_dtype(dtype)
    rng = np.random.default_rng(rng_seed)
    layer = MultiHeadAttention(8, 2, use_bias=use_bias)
    arrays = [rng.standard_normal((3, t_q, 8)).astype(dtype)]
    if cross:
        arrays += [rng.standard_normal((3, t_k, 8)).astype(dtype), rng.standard_normal((3, t_k, 8)).astype(dtype)]
    xs = [lamina.tensor(a, requires_grad=True, dtype=dtype) for a in arrays]
    out = layer(*xs, **ours)
    if use_bias:  # non-zero biases, so that their gradients and effects are compared
        layer.in_bias.data = rng.standard_normal(layer.in_bias.shape).astype(dtype)
        layer.out_bias.data = rng.standard_normal(layer.out_bias.shape).astype(dtype)
        out = layer(*xs, **ours)
    ref = _torch_mha(layer, dtype)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    q_t = ts[0]
    k_t, v_t = (ts[1], ts[2]) if cross else (q_t, q_t)
    expected, _ = ref(q_t, k_t, v_t, need_weights=False, **theirs)
    rtol = RTOL[dtype]
    assert_close(out.numpy(), expected.detach().numpy(), rtol, "output")
    up = rng.standard_normal(out.shape).astype(dtype)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    for k, (a, b) in enumerate(zip(xs, ts)):
        assert_close(a.grad, b.grad.numpy(), rtol, f"gradient of input {k}")
    assert_close(layer.in_weight.grad, ref.in_proj_weight.grad.numpy().T, rtol, "in_weight gradient")
    assert_close(layer.out_weight.grad, ref.out_proj.weight.grad.numpy().T, rtol, "out_weight gradient")
    if use_bias:
        assert_close(layer.in_bias.grad, ref.in_proj_bias.grad.numpy(), rtol, "in_bias gradient")
        assert_close(layer.out_bias.grad, ref.out_proj.bias.grad.numpy(), rtol, "out_bias gradient")
    return layer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mha_self_attention_matches_torch(dtype):
    _compare_mha(dtype)


def test_mha_cross_attention_without_bias_matches_torch():
    _compare_mha(np.float64, t_q=3, t_k=5, cross=True, use_bias=False)


def test_mha_causal_and_key_mask_match_torch():
    future = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)       # torch: True = ignore
    _compare_mha(np.float64, ours={"causal": True}, theirs={"attn_mask": future})
    key_mask = np.ones((3, 5), dtype=bool)
    key_mask[0, 3:] = False
    key_mask[2, 1] = False
    _compare_mha(np.float64, t_q=3, t_k=5, cross=True, ours={"key_mask": key_mask},
                 theirs={"key_padding_mask": torch.from_numpy(~key_mask)})
    bias = np.random.default_rng(10).standard_normal((3, 4))
    padding = np.where(key_mask[:, :4], 0, -np.inf).astype(np.float32)        # torch: additive, like attn_mask
    _compare_mha(np.float32, t_q=3, cross=True, ours={"mask": bias.astype(np.float32), "key_mask": key_mask[:, :4]},
                 theirs={"attn_mask": torch.from_numpy(bias.astype(np.float32)),
                         "key_padding_mask": torch.from_numpy(padding)})


def test_mha_weights_match_torch_per_head(f64):
    layer = MultiHeadAttention(8, 4)
    x = np.random.default_rng(11).standard_normal((2, 5, 8))
    out, weights = layer(x, return_weights=True)
    ref = _torch_mha(layer, np.float64)
    xt = torch.from_numpy(x)
    expected, w_t = ref(xt, xt, xt, need_weights=True, average_attn_weights=False)
    assert weights.shape == (2, 4, 5, 5)
    assert_close(weights.numpy(), w_t.detach().numpy(), 1e-9, "weights")
    assert_close(out.numpy(), expected.detach().numpy(), 1e-9, "output")


def test_mha_gradcheck(f64):
    layer = MultiHeadAttention(4, 2)
    rng = np.random.default_rng(12)
    x = lamina.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    kv = lamina.tensor(rng.standard_normal((2, 4, 4)), requires_grad=True)
    layer(x, kv)
    layer.in_bias.data = rng.standard_normal(12)
    assert lamina.gradcheck(lambda q, k, *_: layer(q, k, causal=True), x, kv, *layer.parameters())


def test_mha_errors_config_and_state():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
    layer = MultiHeadAttention(8, 2, name="mha", dropout=0.1)
    x = np.random.default_rng(13).standard_normal((2, 3, 8)).astype(np.float32)
    with pytest.raises(lamina.ShapeError, match=r"MultiHeadAttention 'mha'.*\(2, 3\).*\(batch, time, 8\)"):
        layer(x[..., 0])
    y = layer.eval()(x)
    with pytest.raises(lamina.ShapeError, match=r"\(2, 3, 6\)"):
        layer(x[..., :6])
    with pytest.raises(lamina.ShapeError, match="mask"):
        layer(x, mask=np.ones((3, 4), dtype=bool))
    assert layer.compute_output_shape((None, 5, 8)) == (None, 5, 8)
    clone = layer_from_config(layer_to_config(layer))
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(clone.eval()(x).numpy(), y.numpy())
    assert sorted(layer.state_dict()) == ["in_bias", "in_weight", "out_bias", "out_weight"]
    layer.train()
    assert not np.allclose(layer(x).numpy(), y.numpy())                 # dropout on the weights


# -- Attention (Luong) --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_luong_attention_matches_torch(dtype):
    rng = np.random.default_rng(14)
    q, v, k = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 5, 4))
    compare_with_torch(lambda a, b: Attention()([a, b]),
                       lambda a, b: torch.nn.functional.scaled_dot_product_attention(a, b, b, scale=1.0),
                       q, q, dtype=dtype, rtol=RTOL[dtype])
    compare_with_torch(lambda a, b, c: Attention()([a, b, c], causal=True),
                       lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, c, b, is_causal=True,
                                                                                        scale=1.0),
                       q, v, k, dtype=dtype, rtol=RTOL[dtype])
    assert Attention().compute_output_shape([(None, 3, 4), (None, 5, 6), (None, 5, 4)]) == (None, 3, 6)


def test_luong_attention_learned_scale_gradcheck(f64):
    layer = Attention(use_scale=True)
    rng = np.random.default_rng(15)
    q = lamina.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    v = lamina.tensor(rng.standard_normal((2, 5, 4)), requires_grad=True)
    layer([q, v])
    layer.scale.data = np.array(0.7)
    assert lamina.gradcheck(lambda a, b, s: layer([a, b]), q, v, layer.scale)
    assert layer_from_config(layer_to_config(layer)).use_scale


# -- learning -----------------------------------------------------------------------------
def test_embedding_mean_pool_dense_learns_token_classes():
    """Words 0-9 signal class 0, words 10-19 class 1, words 20-29 are noise: the mean of the
    embeddings of a sentence must tell the classes apart."""
    rng = np.random.default_rng(16)
    labels = rng.integers(0, 2, 256)
    ids = rng.integers(20, 30, (256, 8))
    ids[:, :3] = rng.integers(0, 10, (256, 3)) + 10 * labels[:, None]
    ids = np.take_along_axis(ids, rng.random(ids.shape).argsort(1), 1)
    emb, head = Embedding(30, 8), Dense(2)
    params = None
    for _ in range(60):
        logits = head(F.mean(emb(ids), axis=1))
        loss = F.categorical_cross_entropy(logits, labels, from_logits=True)
        if params is None:
            params = Adam(emb.parameters() + head.parameters(), lr=0.05)
        params.zero_grad()
        loss.backward()
        params.step()
    accuracy = float((logits.numpy().argmax(1) == labels).mean())
    assert accuracy > 0.95, accuracy


def test_attention_learns_to_select_the_marked_token():
    """Each sequence has one marked step (feature 0 = 1); the output at every step must be
    the content of the marked step: self-attention has to put its weight there."""
    rng = np.random.default_rng(17)
    n, t, e = 64, 6, 8
    x = np.zeros((n, t, e), dtype=np.float32)
    x[..., 1:] = rng.standard_normal((n, t, e - 1))
    marked = rng.integers(0, t, n)
    x[np.arange(n), marked, 0] = 1.0
    target = x[np.arange(n), marked, 1:]
    layer = MultiHeadAttention(e, 1)
    layer(x)
    opt = Adam(layer.parameters(), lr=0.03)
    for _ in range(150):
        out = layer(x)
        loss = F.mean((F.getitem(out, (slice(None), 0, slice(1, None))) - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.numpy()) < 0.1, float(loss.numpy())
    _, weights = layer(x, return_weights=True)
    assert float(weights.numpy()[np.arange(n), 0, 0, marked].mean()) > 0.8
