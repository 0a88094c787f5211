"""Transformer blocks: the encoder layer against torch.nn.TransformerEncoderLayer, the
position layers against the formula, saving, and a small language model that learns."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import optim
from lamina.models.sequence import transformer_language_model
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.sequential import Sequential
from lamina.nn.transformer import PositionalEncoding, PositionEmbedding, TransformerEncoderLayer

RTOL = {np.float32: 1e-5, np.float64: 1e-9}


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _randomize(layer, rng, dtype):
    """Non-trivial biases and norm scales (they start at 0 and 1), so that each one matters."""
    scales = {id(layer.norm1.weight), id(layer.norm2.weight)}
    for p in layer.parameters():
        if p.ndim == 1:
            base = 1.0 if id(p) in scales else 0.0
            p.data = (base + 0.5 * rng.standard_normal(p.shape)).astype(dtype)


def _torch_twin(layer, dtype, activation):
    """torch.nn.TransformerEncoderLayer holding ``layer``'s weights, and the parameter pairs
    (lamina parameter, torch parameter, transposed)."""
    ref = torch.nn.TransformerEncoderLayer(layer.d_model, layer.num_heads, layer.dim_feedforward, dropout=0.0,
                                           activation=activation, batch_first=True, norm_first=layer.norm_first,
                                           dtype=torch.float64 if dtype == np.float64 else torch.float32)
    attention = layer.self_attention
    pairs = [
        (attention.in_weight, ref.self_attn.in_proj_weight, True),
        (attention.in_bias, ref.self_attn.in_proj_bias, False),
        (attention.out_weight, ref.self_attn.out_proj.weight, True),
        (attention.out_bias, ref.self_attn.out_proj.bias, False),
        (layer.linear1.weight, ref.linear1.weight, True),
        (layer.linear1.bias, ref.linear1.bias, False),
        (layer.linear2.weight, ref.linear2.weight, True),
        (layer.linear2.bias, ref.linear2.bias, False),
        (layer.norm1.weight, ref.norm1.weight, False),
        (layer.norm1.bias, ref.norm1.bias, False),
        (layer.norm2.weight, ref.norm2.weight, False),
        (layer.norm2.bias, ref.norm2.bias, False),
    ]
    assert len(pairs) == len(layer.parameters()) == len(list(ref.parameters()))
    with torch.no_grad():
        for ours, theirs, transposed in pairs:
            value = ours.numpy().T if transposed else ours.numpy()
            theirs.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return ref.eval(), pairs


@pytest.mark.parametrize("masking", ["causal", "padding"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoder_layer_matches_torch(dtype, norm_first, activation, masking):
    lamina.set_default_dtype(dtype)
    rng = np.random.default_rng(1)
    n, t, d = 3, 5, 8
    layer = TransformerEncoderLayer(d, 2, dim_feedforward=12, dropout=0.0, activation=activation,
                                    norm_first=norm_first).eval()
    x = rng.standard_normal((n, t, d)).astype(dtype)
    layer.build(x.shape)
    _randomize(layer, rng, dtype)
    ref, pairs = _torch_twin(layer, dtype, activation)

    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    xt = torch.tensor(x, requires_grad=True)
    if masking == "causal":
        out = layer(xl, causal=True)
        expected = ref(xt, src_mask=torch.nn.Transformer.generate_square_subsequent_mask(t, dtype=xt.dtype),
                       is_causal=True)
    else:
        key_mask = np.ones((n, t), dtype=bool)
        key_mask[0, 3:] = False
        key_mask[2, 1] = False
        out = layer(xl, key_mask=key_mask)
        expected = ref(xt, src_key_padding_mask=torch.from_numpy(~key_mask))
    rtol = RTOL[dtype]
    assert out.dtype == dtype
    assert_close(out.numpy(), expected.detach().numpy(), rtol, "output")

    up = rng.standard_normal(out.shape).astype(dtype)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), rtol, "input gradient")
    names = {id(p): name for name, p in layer.named_parameters()}
    for ours, theirs, transposed in pairs:
        grad = theirs.grad.numpy()
        assert_close(ours.grad, grad.T if transposed else grad, rtol, f"gradient of {names[id(ours)]}")


def test_causal_flag_and_explicit_masks_agree_with_the_call_argument():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    layer = TransformerEncoderLayer(8, 4, 16, dropout=0.0).eval()
    layer(x)
    causal = TransformerEncoderLayer.from_config({**layer.get_config(), "causal": True}).eval()
    causal(x)
    causal.load_state_dict(layer.state_dict())
    lower = np.tril(np.ones((6, 6), dtype=bool))
    by_call = layer(x, causal=True).numpy()
    np.testing.assert_allclose(causal(x).numpy(), by_call, rtol=1e-6)
    np.testing.assert_allclose(layer(x, mask=lower).numpy(), by_call, rtol=1e-6)
    np.testing.assert_allclose(causal(x, causal=False).numpy(), layer(x).numpy(), rtol=1e-6)
    assert not np.allclose(layer(x).numpy(), by_call)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_gradcheck(f64, norm_first):
    rng = np.random.default_rng(3)
    layer = TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, activation="gelu", norm_first=norm_first,
                                    causal=True)
    x = rng.standard_normal((2, 3, 4))
    layer.build(x.shape)
    _randomize(layer, rng, np.float64)
    assert gradcheck_layer(layer, x)


def test_dropout_acts_only_in_training():
    x = np.random.default_rng(4).standard_normal((2, 5, 8)).astype(np.float32)
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.5)
    first, second = layer(x).numpy(), layer(x).numpy()
    assert not np.allclose(first, second)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())
    encoding = PositionalEncoding(16, dropout=0.5)
    assert not np.allclose(encoding(x).numpy(), encoding(x).numpy())
    np.testing.assert_array_equal(encoding.eval()(x).numpy(), x + encoding.encoding[:5])


def test_encoder_layer_errors_shapes_and_macs():
    layer = TransformerEncoderLayer(8, 2, 16, name="enc")
    x = np.zeros((2, 5, 8), dtype=np.float32)
    with pytest.raises(lamina.ShapeError, match=r"TransformerEncoderLayer 'enc'.*\(2, 5\).*\(batch, time, 8\)"):
        layer(x[..., 0])
    layer(x)
    with pytest.raises(lamina.ShapeError, match=r"TransformerEncoderLayer 'enc'.*\(2, 5, 6\).*\(batch, time, 8\)"):
        layer(x[..., :6])
    with pytest.raises(lamina.ShapeError, match=r"\(None, 5, 7\)"):
        layer.compute_output_shape((None, 5, 7))
    with pytest.raises(ValueError, match="not divisible"):
        TransformerEncoderLayer(10, 3)
    with pytest.raises(ValueError, match="dropout"):
        TransformerEncoderLayer(8, 2, dropout=1.0)
    assert layer.compute_output_shape((None, 5, 8)) == (None, 5, 8)
    # per sample: projections 4 T E^2, scores and context 2 T^2 E, feed-forward 2 T E d_ff
    assert layer.macs([(5, 8)], [(5, 8)]) == 4 * 5 * 64 + 2 * 25 * 8 + 2 * 5 * 8 * 16


def test_encoder_layer_config_and_state_round_trip():
    rng = np.random.default_rng(5)
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.2, activation="gelu", norm_first=True, layer_norm_eps=1e-6,
                                    causal=True, name="block")
    x = rng.standard_normal((2, 4, 8)).astype(np.float32)
    y = layer.eval()(x).numpy()
    config = layer_to_config(layer)
    assert config["class_name"] == "TransformerEncoderLayer"
    clone = layer_from_config(config)
    assert clone.get_config() == layer.get_config()
    assert clone.causal and clone.norm_first and clone.norm1.eps == 1e-6 and clone.self_attention.dropout == 0.2
    clone(x)
    assert list(clone.state_dict()) == list(layer.state_dict())
    assert sorted(layer.state_dict()) == sorted(
        [f"self_attention.{k}" for k in ("in_weight", "in_bias", "out_weight", "out_bias")]
        + [f"{m}.{k}" for m in ("linear1", "linear2", "norm1", "norm2") for k in ("weight", "bias")])
    clone.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(clone.eval()(x).numpy(), y)


def _formula(length: int, d: int) -> np.ndarray:
    table = np.zeros((length, d))
    for pos in range(length):
        for i in range(0, d, 2):
            angle = pos / 10000 ** (i / d)
            table[pos, i] = math.sin(angle)
            if i + 1 < d:
                table[pos, i + 1] = math.cos(angle)
    return table


@pytest.mark.parametrize("d", [6, 7])
def test_positional_encoding_values(f64, d):
    layer = PositionalEncoding(max_len=50)
    zeros = np.zeros((2, 40, d))
    out = layer(zeros).numpy()
    assert_close(out[0], _formula(40, d), 1e-12, "encoding")
    np.testing.assert_array_equal(out[0], out[1])
    assert_close(layer.encoding, _formula(50, d), 1e-12, "table")
    np.testing.assert_allclose(out[0, 0], [0, 1, 0, 1, 0, 1, 0][:d], atol=0)
    np.testing.assert_allclose(out[0, 1, :3], [math.sin(1), math.cos(1), math.sin(10000 ** (-2 / d))], rtol=1e-14)
    x = np.random.default_rng(6).standard_normal((2, 3, d))
    np.testing.assert_allclose(layer(x).numpy(), x + _formula(3, d), rtol=1e-13)
    assert layer.parameters() == [] and list(layer.state_dict()) == ["encoding"]


def test_positional_encoding_follows_input_dtype_and_checks_length():
    layer = PositionalEncoding(max_len=8, name="pe")
    assert layer(np.zeros((1, 8, 4), dtype=np.float32)).dtype == np.float32
    assert layer(lamina.tensor(np.zeros((1, 3, 4)), dtype=np.float64)).dtype == np.float64
    with pytest.raises(lamina.ShapeError, match=r"PositionalEncoding 'pe'.*9 steps.*max_len=8"):
        layer(np.zeros((1, 9, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match="max_len=8"):
        layer.compute_output_shape((None, 9, 4))
    with pytest.raises(lamina.ShapeError, match=r"\(batch, time, 4\)"):
        layer(np.zeros((1, 3, 5), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"\(batch, time, features\)"):
        PositionalEncoding()(np.zeros((2, 3), dtype=np.float32))
    clone = layer_from_config(layer_to_config(layer))
    assert clone.get_config() == {"max_len": 8, "dropout": 0.0, "name": "pe"}


def test_position_embedding_learns_and_saves():
    rng = np.random.default_rng(7)
    layer = PositionEmbedding(6, name="pos")
    x = lamina.tensor(rng.standard_normal((3, 4, 5)).astype(np.float32), requires_grad=True)
    out = layer(x)
    assert layer.weight.shape == (6, 5)
    np.testing.assert_allclose(out.numpy(), x.numpy() + layer.weight.numpy()[:4], rtol=1e-6)
    up = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(up)
    np.testing.assert_allclose(layer.weight.grad[:4], up.sum(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(layer.weight.grad[4:], 0)
    np.testing.assert_array_equal(x.grad, up)
    with pytest.raises(lamina.ShapeError, match=r"PositionEmbedding 'pos'.*7 steps.*max_len=6"):
        layer(np.zeros((1, 7, 5), dtype=np.float32))
    clone = layer_from_config(layer_to_config(layer))
    assert clone.get_config() == layer.get_config()
    clone(x.numpy())
    clone.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(clone(x.numpy()).numpy(), out.numpy())


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_language_model_saves_loads_and_summarises(tmp_path, positional):
    model = transformer_language_model(13, d_model=16, num_heads=2, num_layers=2, dim_feedforward=24, max_len=10,
                                       positional=positional, dropout=0.1)
    ids = np.random.default_rng(8).integers(0, 13, (3, 7))
    model(ids)
    model.eval()
    y = model(ids).numpy()
    assert y.shape == (3, 7, 13)
    path = tmp_path / "lm.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert isinstance(loaded, Sequential) and not loaded.training
    np.testing.assert_array_equal(loaded(ids).numpy(), y)
    assert loaded.get_config() == model.get_config()

    from lamina.analysis import summary

    table = summary(model, (7,))
    assert table.total_params == model.num_parameters() and table.uncalled_params == 0
    blocks = [m for m in model if isinstance(m, TransformerEncoderLayer)]
    per_layer = blocks[0].macs([(7, 16)], [(7, 16)])
    assert table.total_macs == 2 * per_layer + 7 * 16 * 13
    types = [r["type"] for r in table.rows]
    assert types.count("MultiHeadAttention") == 2 and "TransformerEncoderLayer" not in types


def test_language_model_errors():
    with pytest.raises(ValueError, match="positional"):
        transformer_language_model(10, positional="absolute")
    with pytest.raises(ValueError, match="not divisible"):
        transformer_language_model(10, d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        transformer_language_model(0)


def test_language_model_is_causal():
    model = transformer_language_model(9, d_model=16, num_heads=2, num_layers=2, dim_feedforward=16, max_len=12)
    ids = np.random.default_rng(9).integers(0, 9, (2, 10))
    base = model(ids).numpy()
    for changed in (0, 4, 9):
        other = ids.copy()
        other[:, changed] = (other[:, changed] + 1) % 9
        out = model(other).numpy()
        np.testing.assert_array_equal(out[:, :changed], base[:, :changed])
        assert not np.allclose(out[:, changed:], base[:, changed:])


def _repeating(rng, n: int, t: int, vocab: int, period: int = 4) -> np.ndarray:
    pattern = rng.integers(0, vocab, (n, period))
    return np.tile(pattern, (1, t // period))


@pytest.mark.parametrize("positional, steps", [("sinusoidal", 200), ("learned", 100)])
def test_language_model_learns_to_continue_a_repeating_pattern(positional, steps):
    """Tokens at t >= 4 repeat the token at t - 4: from step 3 on, the next token is the one
    three steps back, which attention with position information can look up."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(10)
    vocab, t = 8, 12
    model = transformer_language_model(vocab, d_model=32, num_heads=2, num_layers=1, dim_feedforward=32, max_len=t,
                                       positional=positional)
    model(np.zeros((1, t - 1), dtype=np.int64))
    opt = optim.Adam(model, lr=0.01)
    loss = functools.partial(F.categorical_cross_entropy, from_logits=True)
    for _ in range(steps):
        seq = _repeating(rng, 32, t, vocab)
        opt.zero_grad()
        cost = loss(model(seq[:, :-1]), seq[:, 1:])
        cost.backward()
        opt.step()
    model.eval()
    seq = _repeating(rng, 200, t, vocab)
    with lamina.no_grad():
        predicted = model(seq[:, :-1]).numpy().argmax(axis=-1)
    accuracy = (predicted[:, 3:] == seq[:, 4:]).mean()            # predictions of the tokens t >= 4
    assert accuracy > 0.95, accuracy
