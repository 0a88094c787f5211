"""The Transformer layers' PyTorch options: bias=False on the encoder and decoder layers and
the whole Transformer (against PyTorch's, weights loaded through from_torch_state_dict), and
the Transformer's custom_encoder / custom_decoder."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer
from nn_checks import loaded_from_torch as _loaded

import lamina
from helpers import assert_close
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.transformer import TransformerEncoderLayer
from lamina.nn.transformer_decoder import TransformerDecoderLayer, from_torch_state_dict
from lamina.nn.transformer_model import Transformer, TransformerDecoder, TransformerEncoder

RTOL = 1e-9
T_TGT, T_SRC, D, HEADS = 4, 5, 8, 2


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _randomized(ref: torch.nn.Module, rng) -> torch.nn.Module:
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.from_numpy(0.4 * rng.standard_normal(tuple(p.shape))))
    return ref.eval()


def _inputs(rng, *shapes):
    arrays = [rng.standard_normal(s) for s in shapes]
    return ([lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays],
            [torch.tensor(a, requires_grad=True) for a in arrays])


def _check(out, expected, ours, theirs, model, ref, rng) -> None:
    """Output, input gradients and every parameter's gradient against torch."""
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "output")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.grad, b.grad.numpy(), RTOL, f"gradient of input {k}")
    grads = from_torch_state_dict({name: p.grad for name, p in ref.named_parameters()})
    mine = dict(model.named_parameters())
    assert sorted(grads) == sorted(mine)
    for name, param in mine.items():
        assert_close(param.grad, grads[name], RTOL, f"gradient of {name}")


def _no_biases(model) -> None:
    names = [name for name, _ in model.named_parameters()]
    assert names and not [name for name in names if "bias" in name], names


@pytest.mark.parametrize("n, norm_first, masking", [(1, False, "causal"), (3, True, "padding"), (2, False, "none")])
def test_encoder_layer_without_bias_matches_torch(f64, n, norm_first, masking):
    rng = np.random.default_rng(n)
    ref = _randomized(torch.nn.TransformerEncoderLayer(D, HEADS, 12, dropout=0.0, batch_first=True, bias=False,
                                                       norm_first=norm_first, dtype=torch.float64), rng)
    layer = _loaded(TransformerEncoderLayer(D, HEADS, 12, dropout=0.0, norm_first=norm_first, bias=False), ref,
                    (n, T_SRC, D))
    _no_biases(layer)
    (x,), (xt,) = _inputs(rng, (n, T_SRC, D))
    if masking == "causal":
        out = layer(x, causal=True)
        expected = ref(xt, src_mask=torch.nn.Transformer.generate_square_subsequent_mask(T_SRC, dtype=xt.dtype),
                       is_causal=True)
    elif masking == "padding":
        padded = np.zeros((n, T_SRC), dtype=bool)
        padded[0, 3:] = True
        out = layer(x, key_mask=~padded)
        expected = ref(xt, src_key_padding_mask=torch.from_numpy(padded))
    else:
        out, expected = layer(x), ref(xt)
    _check(out, expected, [x], [xt], layer, ref, rng)


@pytest.mark.parametrize("n, norm_first", [(1, True), (3, False)])
def test_decoder_layer_without_bias_matches_torch(f64, n, norm_first):
    rng = np.random.default_rng(10 + n)
    ref = _randomized(torch.nn.TransformerDecoderLayer(D, HEADS, 12, dropout=0.0, batch_first=True, bias=False,
                                                       norm_first=norm_first, activation="gelu",
                                                       dtype=torch.float64), rng)
    layer = _loaded(TransformerDecoderLayer(D, HEADS, 12, dropout=0.0, norm_first=norm_first, activation="gelu",
                                            bias=False), ref, [(n, T_TGT, D), (n, T_SRC, D)])
    _no_biases(layer)
    (tgt, memory), theirs = _inputs(rng, (n, T_TGT, D), (n, T_SRC, D))
    memory_padding = np.zeros((n, T_SRC), dtype=bool)
    memory_padding[-1, 3:] = True
    masks = {"tgt_mask": Transformer.generate_square_subsequent_mask(T_TGT, np.float64),
             "memory_key_padding_mask": memory_padding}
    out = layer(tgt, memory, **masks)
    expected = ref(*theirs, **{k: torch.from_numpy(v) for k, v in masks.items()})
    _check(out, expected, [tgt, memory], theirs, layer, ref, rng)


def test_transformer_without_bias_matches_torch(f64):
    rng = np.random.default_rng(20)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "enable_nested_tensor is True")
        ref = _randomized(torch.nn.Transformer(D, HEADS, 2, 1, 12, dropout=0.0, batch_first=True, bias=False,
                                               dtype=torch.float64), rng)
    model = _loaded(Transformer(D, HEADS, 2, 1, 12, dropout=0.0, bias=False), ref, [(2, T_SRC, D), (2, T_TGT, D)])
    _no_biases(model)
    (src, tgt), theirs = _inputs(rng, (2, T_SRC, D), (2, T_TGT, D))
    src_padding = np.zeros((2, T_SRC), dtype=bool)
    src_padding[0, 4:] = True
    masks = {"tgt_mask": Transformer.generate_square_subsequent_mask(T_TGT, np.float64),
             "src_key_padding_mask": src_padding, "memory_key_padding_mask": src_padding}
    out = model(src, tgt, **masks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Support for mismatched key_padding_mask")
        expected = ref(*theirs, **{k: torch.from_numpy(v) for k, v in masks.items()})
    _check(out, expected, [src, tgt], theirs, model, ref, rng)


def test_decoder_layer_without_bias_gradcheck(f64):
    rng = np.random.default_rng(21)
    layer = TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0, bias=False)
    memory = lamina.tensor(rng.standard_normal((2, 3, 4)))
    layer.build([(2, 2, 4), (2, 3, 4)])
    for p in layer.parameters():
        p.data = p.numpy() + 0.3 * rng.standard_normal(p.shape)
    _no_biases(layer)

    class WithMemory(lamina.nn.Module):
        def forward(self, x):
            return layer(x, memory, tgt_is_causal=True)

    wrapper = WithMemory()
    wrapper.inner = layer
    assert gradcheck_layer(wrapper, rng.standard_normal((2, 2, 4)))


def test_bias_options_save_and_show():
    for layer in (TransformerEncoderLayer(D, HEADS, 12, bias=False), TransformerDecoderLayer(D, HEADS, 12, bias=False)):
        config = layer.get_config()
        assert config["bias"] is False
        again = layer_from_config(layer_to_config(layer))
        assert again.get_config() == config and not again.use_bias
        assert "bias=False" in repr(layer)
        assert "bias" not in type(layer)(D, HEADS, 12).get_config()          # older configs stay as they were
    model = Transformer(D, HEADS, 1, 1, 12, bias=False)
    again = layer_from_config(layer_to_config(model))
    assert again.get_config() == model.get_config() and model.get_config()["bias"] is False
    again.build([(1, 3, D), (1, 2, D)])
    _no_biases(again)
    assert "bias" not in Transformer(D, HEADS, 1, 1, 12).get_config()


def test_custom_encoder_and_decoder(f64):
    rng = np.random.default_rng(22)
    encoder = TransformerEncoder(TransformerEncoderLayer(D, HEADS, 6, dropout=0.0, norm_first=True), 1)
    decoder = TransformerDecoder(TransformerDecoderLayer(D, HEADS, 10, dropout=0.0), 2)
    model = Transformer(D, HEADS, dim_feedforward=12, dropout=0.0, custom_encoder=encoder,
                        custom_decoder=decoder).eval()
    assert model.encoder is encoder and model.decoder is decoder
    src, tgt = rng.standard_normal((2, T_SRC, D)), rng.standard_normal((2, T_TGT, D))
    out = model(src, tgt, tgt_is_causal=True)
    np.testing.assert_allclose(out.numpy(), decoder(tgt, encoder(src), tgt_is_causal=True).numpy(), rtol=1e-12)
    # saved with the stacks given, and loaded with their weights
    again = layer_from_config(layer_to_config(model))
    assert again.get_config() == model.get_config()
    assert again.encoder.layers[0].dim_feedforward == 6 and again.decoder.num_layers == 2
    again(src, tgt)
    again.load_state_dict(model.state_dict())
    np.testing.assert_allclose(again.eval()(src, tgt, tgt_is_causal=True).numpy(), out.numpy(), rtol=1e-12)
    # one custom stack: the other is built from the options
    half = Transformer(D, HEADS, num_encoder_layers=3, dim_feedforward=12, custom_decoder=decoder)
    assert half.encoder.num_layers == 3 and half.decoder is decoder
    assert layer_from_config(layer_to_config(half)).get_config() == half.get_config()
    with pytest.raises(TypeError, match="Transformer: custom_encoder must be a Module or None, got str"):
        Transformer(D, HEADS, custom_encoder="encoder")


def test_encoder_stack_takes_torchs_speed_switches(f64):
    rng = np.random.default_rng(23)
    layer = TransformerEncoderLayer(D, HEADS, 6, dropout=0.0)
    plain = TransformerEncoder(layer, 1).eval()
    switched = TransformerEncoder(layer, 1, enable_nested_tensor=False, mask_check=False).eval()
    src = rng.standard_normal((2, T_SRC, D))
    plain(src)
    switched(src)
    switched.load_state_dict(plain.state_dict())
    padded = np.zeros((2, T_SRC), dtype=bool)
    padded[1, 2:] = True
    np.testing.assert_array_equal(switched(src, src_key_padding_mask=padded).numpy(),
                                  plain(src, src_key_padding_mask=padded).numpy())
    assert switched.get_config() == {**plain.get_config(), "name": switched.name}


def test_cached_decoding_without_bias_gives_the_causal_outputs(f64):
    rng = np.random.default_rng(24)
    model = Transformer(D, HEADS, 1, 2, 12, dropout=0.0, bias=False).eval()
    src, tgt = rng.standard_normal((2, T_SRC, D)), rng.standard_normal((2, T_TGT, D))
    model(src, tgt)
    memory = model.encoder(src)
    whole = model.decoder(tgt, memory, tgt_is_causal=True).numpy()
    model.start_caching()
    with lamina.no_grad():
        pieces = [model.decoder(tgt[:, :1], memory).numpy(), model.decoder(tgt[:, 1:], memory).numpy()]
    model.stop_caching()
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, rtol=1e-10, atol=1e-12)
