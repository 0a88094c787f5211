"""VectorQuantizer, VectorQuantizerEMA, ResidualVQ and FSQ layers: outputs and gradients
against PyTorch, the EMA updates against a NumPy transcription of sonnet's formulas step by
step, dead-code restarts, residual stages, FSQ round trips, and errors naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError


def test_vector_quantizer_matches_torch_and_learns_codebook_gradient():
    layer = nn.VectorQuantizer(6, 4, commitment_cost=0.4)
    table = randn(6, 4, seed=1)
    z = randn(2, 3, 3, 4, seed=2)

    def ours(z, e):
        layer.embeddings.data = e.data
        out = layer(z)
        return out.quantized, out.loss

    def theirs(z, e):
        codes = e[((z[..., None, :] - e) ** 2).sum(-1).argmin(-1)]
        loss = ((z.detach() - codes) ** 2).mean() + 0.4 * ((z - codes.detach()) ** 2).mean()
        return z + (codes - z).detach(), loss

    compare_with_torch(ours, theirs, z, table, dtype=np.float64, grad=[True, False])
    # the codebook's gradient, through the parameter itself
    layer.embeddings.data = table.copy()
    layer.zero_grad()
    out = layer(lamina.tensor(z, dtype=np.float64))
    out.loss.backward()
    e = torch.tensor(table, requires_grad=True)
    zt = torch.tensor(z)
    codes = e[((zt[..., None, :] - e) ** 2).sum(-1).argmin(-1)]
    (((zt - codes) ** 2).mean() + 0.4 * ((zt - codes.detach()) ** 2).mean()).backward()
    assert_close(layer.embeddings.grad, e.grad.numpy(), 1e-10)
    assert out.indices.shape == (2, 3, 3) and 1 <= out.perplexity <= 6
    assert_close(layer.lookup(out.indices).numpy(), out.quantized.numpy(), 1e-12)


def _sonnet_ema_reference(z_steps, table, decay, eps, beta, zero_debias):
    """sonnet's VectorQuantizerEMA training step, transcribed: hidden EMA states (with the
    counter's debiasing in sonnet 2, seeded with the codebook in sonnet 1)."""
    k = table.shape[0]
    embeddings = table.copy()
    hidden_size = np.zeros(k)
    hidden_dw = np.zeros_like(table) if zero_debias else table.copy()
    results = []
    for t, z in enumerate(z_steps, start=1):
        flat = z.reshape(-1, z.shape[-1])
        distances = (flat ** 2).sum(1, keepdims=True) - 2 * flat @ embeddings.T + (embeddings ** 2).sum(1)
        encodings = np.eye(k)[distances.argmin(1)]
        quantized = embeddings[distances.argmin(1)].reshape(z.shape)
        loss = beta * ((quantized - z) ** 2).mean()
        hidden_size -= (hidden_size - encodings.sum(0)) * (1 - decay)
        hidden_dw -= (hidden_dw - encodings.T @ flat) * (1 - decay)
        debias = 1 - decay ** t if zero_debias else 1.0
        size, dw = hidden_size / debias, hidden_dw / debias
        n = size.sum()
        size = (size + eps) / (n + k * eps) * n
        embeddings = dw / size[:, None]
        results.append((quantized, loss, embeddings.copy()))
    return results


@pytest.mark.parametrize("zero_debias", [True, False])
def test_ema_updates_match_sonnet_step_by_step(zero_debias):
    lamina.set_default_dtype(np.float64)
    layer = nn.VectorQuantizerEMA(5, 3, commitment_cost=0.3, decay=0.8, epsilon=1e-3, zero_debias=zero_debias,
                                  seed=0)
    table = layer.embeddings.copy()
    steps = [randn(4, 2, 3, seed=s) for s in range(4)]
    expected = _sonnet_ema_reference(steps, table, 0.8, 1e-3, 0.3, zero_debias)
    for z, (quantized, loss, embeddings) in zip(steps, expected):
        out = layer(lamina.tensor(z, dtype=np.float64))
        assert_close(out.quantized.numpy(), quantized, 1e-12, "quantized")
        assert_close(out.loss.numpy(), loss, 1e-12, "loss")
        assert_close(layer.embeddings, embeddings, 1e-10, "codebook")
    before = layer.embeddings.copy()
    layer.eval()
    layer(lamina.tensor(steps[0], dtype=np.float64))
    np.testing.assert_array_equal(layer.embeddings, before)


def test_ema_gradient_is_commitment_and_straight_through():
    lamina.set_default_dtype(np.float64)
    layer = nn.VectorQuantizerEMA(4, 2, commitment_cost=0.5, seed=1)
    table = layer.embeddings.copy()
    z = lamina.tensor(randn(6, 2, seed=3), requires_grad=True, dtype=np.float64)
    out = layer(z)
    (out.quantized.sum() + out.loss).backward()
    codes = table[out.indices]
    assert_close(z.grad, 1 + 0.5 * 2 * (z.numpy() - codes) / z.numpy().size, 1e-12)


def test_dead_codes_restart_on_batch_vectors():
    lamina.set_default_dtype(np.float64)
    layer = nn.VectorQuantizerEMA(8, 2, decay=0.9, zero_debias=False, dead_code_threshold=0.05, seed=2)
    layer.embeddings = layer.embeddings + 100.0          # every code far from the data
    z = randn(64, 2, seed=4)
    first = layer(lamina.tensor(z, dtype=np.float64))
    assert first.perplexity == pytest.approx(1.0)
    rows = {tuple(np.round(r, 9)) for r in z}
    restarted = [tuple(np.round(r, 9)) in rows for r in layer.embeddings]
    assert sum(restarted) == 7                           # all but the one code in use
    assert layer(lamina.tensor(z, dtype=np.float64)).perplexity > 3
    plain = nn.VectorQuantizerEMA(8, 2, decay=0.9, zero_debias=False, seed=2)   # unused codes stay away
    plain.embeddings = plain.embeddings + 100.0
    plain(lamina.tensor(z, dtype=np.float64))
    assert plain(lamina.tensor(z, dtype=np.float64)).perplexity == pytest.approx(1.0)


@pytest.mark.parametrize("ema", [False, True])
def test_residual_vq_sums_stages(ema):
    lamina.set_default_dtype(np.float64)
    rvq = nn.ResidualVQ(3, 8, 4, ema=ema)
    z = lamina.tensor(randn(10, 4, seed=5), requires_grad=True, dtype=np.float64)
    rvq.eval()
    out = rvq(z)
    assert out.indices.shape == (10, 3)
    assert_close(rvq.lookup(out.indices).numpy(), out.quantized.numpy(), 1e-12)
    residual = z.numpy()
    for s, stage in enumerate(rvq.stages):                # each stage: the nearest code to what is left
        np.testing.assert_array_equal(out.indices[:, s], lamina.functional.nearest_codes(residual, stage.codebook))
        residual = residual - stage.lookup(out.indices[:, s]).numpy()
    upstream = randn(10, 4, seed=6)
    (out.quantized * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    np.testing.assert_array_equal(z.grad, upstream)


def test_fsq_layer_round_trip():
    layer = nn.FSQ((3, 5, 4))
    assert layer.codebook_size == 60 and layer.num_parameters() == 0
    codes, indices = layer(randn(7, 3, seed=7, scale=3.0))
    assert indices.shape == (7,)
    assert_close(layer.lookup(indices).numpy(), codes.numpy(), 1e-6)


def test_errors_name_the_layer():
    with pytest.raises(ShapeError, match=r"VectorQuantizer.*\(2, 5\).*size 4"):
        nn.VectorQuantizer(6, 4)(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match="VectorQuantizerEMA"):
        nn.VectorQuantizerEMA(6, 4)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"VectorQuantizer.*\[0, 6\)"):
        nn.VectorQuantizer(6, 4).lookup(np.array([0, 6]))
    with pytest.raises(ValueError, match="VectorQuantizerEMA: decay"):
        nn.VectorQuantizerEMA(6, 4, decay=1.0)
    with pytest.raises(ShapeError, match="ResidualVQ"):
        nn.ResidualVQ(2, 6, 4).lookup(np.zeros((3, 3), int))
    with pytest.raises(ShapeError, match="FSQ"):
        nn.FSQ((3, 3))(np.zeros((2, 3), np.float32))
