"""ResidualVQ as a neural codec's quantiser: the residual stages against a NumPy loop, values,
losses and gradients against a torch rewrite, quantizer dropout per example, n_q, encode and
decode, the bitrate, error falling with each stage, and configs saved before these options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def numpy_rvq(z, books, n_q):
    """Nearest-codeword residual quantisation, stage by stage: (sum of codes, indices)."""
    residual, total, codes = z.copy(), np.zeros_like(z), []
    for s in range(n_q):
        k = ((residual[..., None, :] - books[s]) ** 2).sum(-1).argmin(-1)
        total, residual = total + books[s][k], residual - books[s][k]
        codes.append(k)
    return total, np.stack(codes, -1)


def torch_rvq(z, books, beta):
    """A torch rewrite: straight-through output z + (q - z).detach() and the summed stage
    losses mean||sg(r) - q||^2 + beta mean||r - sg(q)||^2."""
    residual, total, loss = z, torch.zeros_like(z), 0
    for book in books:
        q = book[((residual.detach()[..., None, :] - book.detach()) ** 2).sum(-1).argmin(-1)]
        loss = loss + ((residual.detach() - q) ** 2).mean() + beta * ((residual - q.detach()) ** 2).mean()
        total, residual = total + q.detach(), residual - q.detach()
    return z + (total - z).detach(), loss


def books_of(layer):
    return np.stack([np.array(stage.codebook.numpy()) for stage in layer.stages])


@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("n_q", [1, 3])
def test_forward_is_nearest_codeword_residual_quantisation(ema, n_q):
    layer = nn.ResidualVQ(3, 8, 4, ema=ema, seed=0).eval()
    z = randn(2, 5, 4, seed=1).astype(np.float32)
    out = layer(z, n_q=n_q)
    total, codes = numpy_rvq(z, books_of(layer), n_q)
    np.testing.assert_allclose(out.quantized.numpy(), total, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.indices, codes)
    assert out.indices.shape == (2, 5, n_q) and out.indices.dtype == np.int64


def test_encode_decode_round_trip_and_bitrate():
    layer = nn.ResidualVQ(4, 6, 3, ema=True, seed=2).eval()
    z = randn(3, 7, 3, seed=3).astype(np.float32)
    codes = layer.encode(z)
    np.testing.assert_array_equal(codes, layer(z).indices)
    np.testing.assert_allclose(layer.decode(codes).numpy(), layer(z).quantized.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.decode(layer.encode(z, n_q=2)).numpy(), layer(z, n_q=2).quantized.numpy(),
                               rtol=1e-6, atol=1e-6)
    assert layer.bits_per_vector() == pytest.approx(4 * np.log2(6))
    assert layer.bits_per_vector(1) == pytest.approx(np.log2(6))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        layer.decode(np.full((2, 4), 6))
    with pytest.raises(ShapeError, match="ResidualVQ"):
        layer.decode(np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="n_q"):
        layer(z, n_q=5)


def test_values_losses_and_gradients_match_a_torch_rewrite(f64):
    layer = nn.ResidualVQ(3, 5, 4, commitment_cost=0.3).eval()
    for s, stage in enumerate(layer.stages):            # codes on the data's scale
        stage.embeddings.data = randn(5, 4, seed=20 + s)
    z, weights = randn(2, 6, 4, seed=5), randn(2, 6, 4, seed=6)
    books_t = [torch.tensor(book, requires_grad=True) for book in books_of(layer)]
    z_t = torch.tensor(z, requires_grad=True)
    out_t, loss_t = torch_rvq(z_t, books_t, 0.3)
    ((out_t * torch.tensor(weights)).sum() + loss_t).backward()

    z_l = lamina.tensor(z, requires_grad=True)
    out = layer(z_l)
    ((out.quantized * lamina.tensor(weights)).sum() + out.loss).backward()
    np.testing.assert_allclose(out.quantized.numpy(), out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(out.loss.numpy()), float(loss_t.detach()), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(z_l.grad), z_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for stage, book_t in zip(layer.stages, books_t):
        np.testing.assert_allclose(np.asarray(stage.embeddings.grad), book_t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_straight_through_gradient_is_the_upstream_gradient(f64):
    layer = nn.ResidualVQ(2, 4, 3, ema=True, seed=7).eval()
    z = lamina.tensor(randn(4, 3, seed=8), requires_grad=True)
    upstream = randn(4, 3, seed=9)
    (layer(z).quantized * lamina.tensor(upstream)).sum().backward()
    z_t = torch.tensor(z.numpy(), requires_grad=True)
    q = torch.tensor(layer(z.numpy()).quantized.numpy())
    ((z_t + (q - z_t).detach()) * torch.tensor(upstream)).sum().backward()
    np.testing.assert_array_equal(np.asarray(z.grad), z_t.grad.numpy())
    np.testing.assert_array_equal(np.asarray(z.grad), upstream)


def test_float64_gradient_check_of_the_commitment_loss(f64):
    layer = nn.ResidualVQ(2, 5, 3, commitment_cost=0.7, ema=True, seed=10).eval()
    assert check_gradients(lambda x: layer(x).loss, randn(2, 4, 3, seed=11))


def test_quantizer_dropout_uses_a_random_prefix_per_example_in_training_only():
    layer = nn.ResidualVQ(4, 8, 3, commitment_cost=0.5, ema=True, quantizer_dropout=True, seed=16, decay=0.9)
    z = randn(40, 2, 3, seed=17).astype(np.float32)
    books = books_of(layer)
    out = layer(z)
    used = (out.indices >= 0).sum(-1)
    assert out.indices.shape == (40, 2, 4) and (used == used[:, :1]).all()
    assert set(used[:, 0]) == {1, 2, 3, 4}
    expected_loss = 0.0
    for i in range(40):
        n = used[i, 0]
        assert (out.indices[i, :, n:] == -1).all()
        total, codes = numpy_rvq(z[i], books, n)
        np.testing.assert_array_equal(out.indices[i, :, :n], codes)
        np.testing.assert_allclose(out.quantized.numpy()[i], total, rtol=1e-5, atol=1e-5)
    residual = z.astype(np.float64)
    for s, stage in enumerate(layer.stages):             # each stage's loss and EMA step: its examples only
        active = used[:, 0] > s
        k = ((residual[active][..., None, :] - books[s]) ** 2).sum(-1).argmin(-1)
        expected_loss += 0.5 * ((residual[active] - books[s][k]) ** 2).mean()
        residual[active] -= books[s][k]
        assert stage._averages()[0].sum() == pytest.approx(2 * active.sum())
    np.testing.assert_allclose(float(out.loss.numpy()), expected_loss, rtol=1e-5)
    moved = books_of(layer)                              # decode skips the stages marked -1
    decoded = sum(np.where(out.indices[..., s, None] >= 0, moved[s][out.indices[..., s]], 0) for s in range(4))
    np.testing.assert_allclose(layer.decode(out.indices).numpy(), decoded, rtol=1e-6, atol=1e-6)
    layer.eval()
    assert (layer(z).indices >= 0).all() and layer(z).indices.shape == (40, 2, 4)
    layer.train()
    assert layer(z, n_q=2).indices.shape == (40, 2, 2) and (layer(z, n_q=2).indices >= 0).all()


def test_error_falls_strictly_with_each_stage_on_fitted_codebooks():
    layer = nn.ResidualVQ(5, 16, 4, ema=True, seed=14, decay=0.5, dead_code_threshold=0.05)
    z = randn(8, 32, 4, seed=15).astype(np.float32)
    for _ in range(30):                                   # EMA k-means steps on the data
        layer(z)
    layer.eval()
    errors = [float(((layer.decode(layer.encode(z, n_q)).numpy() - z) ** 2).mean()) for n_q in range(1, 6)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0] < 0.5 * float((z ** 2).mean())


def test_configs_without_the_new_options_still_load_and_seeds_differ_per_stage():
    old = {"num_quantizers": 2, "num_embeddings": 4, "dim": 3, "commitment_cost": 0.25, "ema": True,
           "name": None, "decay": 0.9, "seed": 3}
    layer = nn.layer_from_config({"class_name": "ResidualVQ", "config": old})
    assert not layer.quantizer_dropout and layer.seed == 3 and layer.stage0.decay == 0.9
    again = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
    np.testing.assert_array_equal(books_of(again), books_of(layer))
    assert not np.allclose(books_of(layer)[0], books_of(layer)[1])
