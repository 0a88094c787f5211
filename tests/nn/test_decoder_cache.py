"""The encoder-decoder Transformer's key/value cache: a decoder fed its target a few steps at
a time against one memory gives the outputs of rerunning it on the whole prefix (and
PyTorch's), projects the memory once and each target step once, and refuses the calls the
cache cannot serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import nn
from lamina.nn import multi_head_attention
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.transformer_decoder import TransformerDecoderLayer, from_torch_state_dict
from lamina.nn.transformer_model import Transformer, TransformerDecoder

N, T_SRC, D, HEADS, FF = 2, 5, 8, 2, 12
RTOL = 1e-12


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _padding(rng) -> np.ndarray:
    """A PyTorch key padding mask (N, T_SRC), True on padding: the second memory is 2 steps shorter."""
    pad = np.zeros((N, T_SRC), dtype=bool)
    pad[1, -2:] = True
    return pad


def _decoder(norm_first: bool, num_layers: int = 2) -> TransformerDecoder:
    """An evaluation-mode decoder stack (dropout everywhere, inactive), built."""
    layer = TransformerDecoderLayer(D, HEADS, FF, dropout=0.3, norm_first=norm_first)
    decoder = TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(-1))
    rng = np.random.default_rng(0)
    decoder(rng.normal(size=(N, 3, D)), rng.normal(size=(N, T_SRC, D)))
    return decoder.eval()


def _greedy(decoder, memory, start, steps: int, pad, cached: bool) -> np.ndarray:
    """Decode ``steps`` steps, each one's output fed back as the next step's input: with the
    cache one new step per call, without it a causal rerun over the whole prefix."""
    target, new, outputs = start, start, []
    if cached:
        decoder.start_caching()
    try:
        for _ in range(steps):
            if cached:
                y = decoder(new, memory, memory_key_padding_mask=pad)
            else:
                y = decoder(target, memory, tgt_is_causal=True, memory_key_padding_mask=pad)[:, -1:]
            new = y.numpy()
            target = np.concatenate([target, new], axis=1)
            outputs.append(new)
    finally:
        if cached:
            decoder.stop_caching()
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_greedy_decoding_with_the_cache_gives_the_rerun_outputs(f64, norm_first):
    decoder = _decoder(norm_first)
    rng = np.random.default_rng(1)
    memory, start, pad = rng.normal(size=(N, T_SRC, D)), rng.normal(size=(N, 1, D)), _padding(rng)
    with lamina.no_grad():
        rerun = _greedy(decoder, memory, start, 6, pad, cached=False)
        cached = _greedy(decoder, memory, start, 6, pad, cached=True)
        assert not decoder.caching and decoder.cached_steps == 0
        unpadded = _greedy(decoder, memory, start, 6, None, cached=True)
    assert_close(cached, rerun, RTOL, "cached greedy outputs")
    assert not np.allclose(unpadded[1], cached[1])          # the padding mask did act at every step
    np.testing.assert_array_equal(unpadded[0], cached[0])   # and only on the padded memory


@pytest.mark.parametrize("norm_first", [False, True])
def test_a_target_fed_in_chunks_gives_pytorchs_causal_outputs(f64, norm_first):
    rng = np.random.default_rng(2)
    ref_layer = torch.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first,
                                                 dtype=torch.float64)
    ref = torch.nn.TransformerDecoder(ref_layer, 2, norm=torch.nn.LayerNorm(D, dtype=torch.float64))
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.from_numpy(0.3 * rng.standard_normal(tuple(p.shape))))
    decoder = _decoder(norm_first)
    decoder.load_state_dict(from_torch_state_dict(ref.state_dict()))
    tgt, memory, pad = rng.normal(size=(N, 6, D)), rng.normal(size=(N, T_SRC, D)), _padding(rng)
    memory_mask = rng.random((6, T_SRC)) < 0.3                 # True = not allowed, as PyTorch's
    memory_mask[:, 0] = False
    ref.eval()
    with torch.no_grad():
        expected = ref(torch.from_numpy(tgt), torch.from_numpy(memory),
                       tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64),
                       memory_mask=torch.from_numpy(memory_mask),
                       memory_key_padding_mask=torch.from_numpy(pad)).numpy()
    pieces = []
    with lamina.no_grad():
        decoder.start_caching()
        # 3 steps with the causal float mask, 1 with none, 2 with the flag: each call's memory_mask its rows
        pieces.append(decoder(tgt[:, :3], memory, tgt_mask=Transformer.generate_square_subsequent_mask(3),
                              memory_mask=memory_mask[:3], memory_key_padding_mask=pad))
        assert decoder.cached_steps == 3
        pieces.append(decoder(tgt[:, 3:4], memory, memory_mask=memory_mask[3:4], memory_key_padding_mask=pad))
        pieces.append(decoder(tgt[:, 4:], memory, tgt_is_causal=True, memory_mask=memory_mask[4:],
                              memory_key_padding_mask=pad))
        assert decoder.cached_steps == 6 and all(layer.cached_steps == 6 for layer in decoder.layers)
        decoder.stop_caching()
    assert_close(np.concatenate([p.numpy() for p in pieces], axis=1), expected, 1e-10, "chunked decoder")


def test_the_whole_model_caches_its_decoder_and_stop_caching_resets_it(f64):
    model = Transformer(D, HEADS, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=FF, dropout=0.2)
    rng = np.random.default_rng(3)
    src, tgt = rng.normal(size=(N, T_SRC, D)), rng.normal(size=(N, 4, D))
    model(src, tgt)
    model.eval()
    with lamina.no_grad():
        full = model(src, tgt, tgt_is_causal=True).numpy()
        memory = model.encoder(src)
        model.start_caching()
        assert model.caching and model.decoder.caching and model.cacheable
        first = model.decoder(tgt[:, :1], memory).numpy()
        rest = model(src, tgt[:, 1:], tgt_is_causal=True).numpy()   # reruns the encoder: an equal memory
        assert model.cached_steps == 4
        model.stop_caching()
        assert not model.caching and model.cached_steps == 0
        again = model(src, tgt, tgt_is_causal=True).numpy()         # an ordinary call again
        other = rng.normal(size=(N, T_SRC, D))                       # a new decode may take another memory
        model.start_caching()
        cached_other = model.decoder(tgt, model.encoder(other)).numpy()
        model.stop_caching()
        rerun_other = model(other, tgt, tgt_is_causal=True).numpy()
    assert_close(np.concatenate([first, rest], axis=1), full, RTOL, "cached model")
    np.testing.assert_array_equal(again, full)
    assert_close(cached_other, rerun_other, RTOL, "second decode")


def test_the_cache_records_no_graph_and_projects_each_step_and_the_memory_once(f64, monkeypatch):
    decoder = _decoder(norm_first=True)
    rng = np.random.default_rng(4)
    memory, start = lamina.tensor(rng.normal(size=(1, T_SRC, D))), rng.normal(size=(1, 1, D))
    rows, key_lengths = [], []
    linear, attention = multi_head_attention.linear, multi_head_attention.scaled_dot_product_attention

    def counting_linear(x, w, b=None):
        rows[-1] += x.shape[0] * x.shape[1]
        return linear(x, w, b)

    def watching_attention(q, k, v, **options):
        key_lengths[-1].append(k.shape[-2])
        return attention(q, k, v, **options)

    monkeypatch.setattr(multi_head_attention, "linear", counting_linear)
    monkeypatch.setattr(multi_head_attention, "scaled_dot_product_attention", watching_attention)
    steps, new = 6, start
    with lamina.no_grad():
        decoder.start_caching()
        for _ in range(steps):
            rows.append(0)
            key_lengths.append([])
            y = decoder(new, memory)
            assert not y.requires_grad and y._ctx is None
            new = y.numpy()
        decoder.stop_caching()
    layers = len(decoder.layers)
    for t, lengths in enumerate(key_lengths, start=1):           # t target keys, then the T_SRC memory keys
        assert lengths == [t, T_SRC] * layers
    # a step: per layer Q, K, V (one product) and the output of its own row, then Q and the output against
    # the memory
    assert rows[1:] == [layers * 4] * (steps - 1)
    assert rows[0] == rows[1] + layers * 2 * T_SRC                # the memory's K and V, once per decode
    assert all(p.grad is None for p in decoder.parameters())


def test_calls_the_cache_cannot_serve_are_refused_and_leave_it_intact(f64):
    layer = TransformerDecoderLayer(D, HEADS, FF, name="dec")
    rng = np.random.default_rng(5)
    memory, tgt = rng.normal(size=(N, T_SRC, D)), rng.normal(size=(N, 3, D))
    layer(tgt, memory)
    layer.eval()
    layer.start_caching()
    with pytest.raises(ValueError, match="'dec'.*evaluation only"):
        layer(tgt, memory)                                          # gradients on
    with lamina.no_grad():
        first = layer(tgt[:, :1], memory).numpy()
        open_mask = np.zeros((2, 2), dtype=bool)                    # nothing hidden: not causal
        with pytest.raises(ValueError, match="TransformerDecoderLayer 'dec': while caching.*tgt_mask must be None or "
                                             r"the causal mask of the 2 new steps.*shape \(2, 2\)"):
            layer(tgt[:, 1:], memory, tgt_mask=open_mask)
        with pytest.raises(ValueError, match="'dec'.*tgt_mask must be None or the causal"):
            layer(tgt[:, 1:], memory, tgt_mask=Transformer.generate_square_subsequent_mask(3))   # wrong size
        with pytest.raises(ValueError, match="'dec': tgt_key_padding_mask is not supported while caching"):
            layer(tgt[:, 1:], memory, tgt_key_padding_mask=np.zeros((N, 2), dtype=bool))
        with pytest.raises(ValueError, match="'dec': memory_is_causal=True is not supported while caching"):
            layer(tgt[:, 1:], memory, memory_is_causal=True)
        with pytest.raises(lamina.ShapeError, match=r"'dec': a memory of shape \(1, 5, 8\) while caching the decode "
                                                    r"of a memory of shape \(2, 5, 8\)"):
            layer(tgt[:1, 1:], memory[:1])
        with pytest.raises(ValueError, match="'dec': the memory differs from the one whose keys and values are cached"):
            layer(tgt[:, 1:], memory + 1.0)
        with pytest.raises(ValueError, match="'dec': start_caching while already caching"):
            layer.start_caching()
        assert layer.cached_steps == 1                              # the refused calls cached nothing
        rest = layer(tgt[:, 1:], memory.copy()).numpy()             # an equal memory is the same memory
        layer.stop_caching()
        full = layer(tgt, memory, tgt_is_causal=True).numpy()
    assert_close(np.concatenate([first, rest], axis=1), full, RTOL, "after refused calls")
    layer.train()
    layer.start_caching()
    with lamina.no_grad(), pytest.raises(ValueError, match="'dec'.*evaluation only"):
        layer(tgt, memory)
    layer.stop_caching()

    decoder = TransformerDecoder(layer, 2, name="stack")
    decoder.start_caching()
    with pytest.raises(ValueError, match="TransformerDecoder 'stack': start_caching while already caching"):
        decoder.start_caching()
    decoder.stop_caching()
    assert not any(layer.caching for layer in decoder.layers)


def test_multi_head_attention_takes_projected_keys_and_values(f64):
    mha = MultiHeadAttention(D, HEADS, name="mha")
    rng = np.random.default_rng(6)
    query, memory = rng.normal(size=(N, 3, D)), rng.normal(size=(N, T_SRC, D))
    value = rng.normal(size=(N, T_SRC, D))
    key_mask = ~_padding(rng)
    keys_values = mha.project_keys_values(memory, value)           # builds the layer on first use
    assert mha.built and [p.shape for p in keys_values] == [(N, HEADS, T_SRC, D // HEADS)] * 2
    direct, direct_weights = mha(query, memory, value, key_mask=key_mask, return_weights=True)
    reused, reused_weights = mha(query, keys_values=keys_values, key_mask=key_mask, return_weights=True)
    assert_close(reused.numpy(), direct.numpy(), RTOL, "attention over projected keys")
    assert_close(reused_weights.numpy(), direct_weights.numpy(), RTOL, "its weights")

    ref = torch.nn.MultiheadAttention(D, HEADS, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.from_numpy(mha.in_weight.numpy().T))
        ref.in_proj_bias.copy_(torch.from_numpy(mha.in_bias.numpy()))
        ref.out_proj.weight.copy_(torch.from_numpy(mha.out_weight.numpy().T))
        ref.out_proj.bias.copy_(torch.from_numpy(mha.out_bias.numpy()))
        expected, _ = ref(*(torch.from_numpy(a) for a in (query, memory, value)),
                          key_padding_mask=torch.from_numpy(~key_mask))
    assert_close(reused.numpy(), expected.numpy(), 1e-10, "against torch")

    with pytest.raises(ValueError, match="MultiHeadAttention 'mha': pass either key and value or their projections"):
        mha(query, memory, keys_values=keys_values)
    with pytest.raises(ValueError, match="'mha': keys_values must be the pair of tensors"):
        mha(query, keys_values=keys_values[0])
    with pytest.raises(lamina.ShapeError, match=r"'mha': keys_values of shapes .* for a query \(1, 3, 8\)"):
        mha(query[:1], keys_values=keys_values)
    mha.eval()
    mha.start_caching()
    with lamina.no_grad(), pytest.raises(ValueError, match="'mha': cannot cache keys and values for cross-attention"):
        mha(query, keys_values=keys_values, causal=True)
    mha.stop_caching()
