"""Perceiver and Perceiver IO: Fourier position features, outputs and gradients against a torch
re-implementation (images and masked sets, repeats with shared weights, output queries),
permutation invariance on sets, errors, and learning the digits."""

import math

import numpy as np
import pytest
import torch

import lamina
import set_references as ref
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import models, optim
from lamina.data import ArrayDataset, DataLoader, load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N = 2
MASK = np.array([[True] * 6, [True, False, True, True, False, True]])
SMALL = {"num_latents": 3, "latent_dim": 8, "latent_blocks": 2, "cross_heads": 2, "latent_heads": 2}


def fourier_by_formula(h, w, bands, resolution):
    """Row by row: [y, x, sin(pi f y) .., sin(pi f x) .., cos(pi f y) .., cos(pi f x) ..]."""
    rows = []
    for i in range(h):
        for j in range(w):
            pos = [-1 + 2 * i / (h - 1), -1 + 2 * j / (w - 1)]
            freqs = [[1 + k * (r / 2 - 1) / (bands - 1) for k in range(bands)] for r in resolution]
            angles = [math.pi * f * p for p, fs in zip(pos, freqs) for f in fs]
            rows.append(pos + [math.sin(a) for a in angles] + [math.cos(a) for a in angles])
    return np.array(rows)


def test_fourier_position_features_follow_the_formula():
    features = models.fourier_position_features((3, 5), 4, dtype=np.float64)
    assert features.shape == (15, 2 * (2 * 4 + 1))
    assert_close(features, fourier_by_formula(3, 5, 4, (3, 5)), 1e-12, "features")
    wider = models.fourier_position_features((3, 5), 3, max_resolution=(8, 10), dtype=np.float64)
    assert_close(wider, fourier_by_formula(3, 5, 3, (8, 10)), 1e-12, "features at another resolution")


def torch_encoder(p, x, mask, repeats, share, heads=2, blocks=2, bands=None):
    if x.ndim == 4:
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        if bands is not None:
            features = torch.from_numpy(fourier_by_formula(h, w, bands, (h, w)))
            x = torch.cat([x, features.expand(n, -1, -1)], dim=-1)
    z = p["encoder.latents"].expand(x.shape[0], -1, -1)
    for r in range(repeats):
        cross = min(r, 1) if share else r
        z = ref.perceiver_block(p, f"encoder.cross_attention.{cross}.", z, x, heads, mask=mask)
        for b in range(blocks):
            z = ref.perceiver_block(p, f"encoder.latent_transformers.{0 if share else r}.{b}.", z, None, heads)
    return z


def _compare(model, inputs, torch_fn, mask=None, **call):
    model(*inputs, mask=mask, **call)
    model.double()
    names, values = ref.named_values(model, seed=50)
    k = len(inputs)
    tmask = None if mask is None else torch.from_numpy(mask)

    def ours(*arrays):
        return functional_call(model, dict(zip(names, arrays[k:])), *arrays[:k], mask=mask)

    def theirs(*arrays):
        return torch_fn(dict(zip(names, arrays[k:])), *arrays[:k], tmask)

    # a bias of the keys shifts every score of a query alike: its gradient is 0, roundoff on both sides
    wants = [True] * k + [not name.endswith("to_k.bias") for name in names]
    compare_with_torch(ours, theirs, *inputs, *values, dtype=np.float64, grad=wants)
    return ours, values


@pytest.mark.parametrize("share", [True, False])
def test_perceiver_on_masked_sets_matches_torch(share):
    model = models.Perceiver(4, num_repeats=3, share_weights=share, **SMALL)

    def theirs(p, x, mask):
        return ref.linear(p, "head", torch_encoder(p, x, mask, 3, share).mean(dim=1))

    x = randn(N, 6, 3, seed=1)
    ours, values = _compare(model, [x], theirs, MASK)
    if share:
        assert check_gradients(ours, x, *values, grad=[True] + [False] * len(values))


def test_perceiver_on_images_with_fourier_features_matches_torch():
    model = models.Perceiver(4, num_bands=3, **SMALL)

    def theirs(p, x, mask):
        return ref.linear(p, "head", torch_encoder(p, x, mask, 1, True, bands=3).mean(dim=1))

    image = randn(N, 3, 4, 2, seed=2)
    ours, values = _compare(model, [image], theirs)
    assert check_gradients(ours, image, *values, grad=[True] + [False] * len(values))


def test_perceiver_io_decodes_output_queries_like_torch():
    model = models.PerceiverIO(5, num_outputs=3, query_dim=6, decoder_heads=2, num_repeats=2, **SMALL)

    def theirs(p, x, mask):
        z = torch_encoder(p, x, mask, 2, True)
        queries = p["queries"].expand(x.shape[0], -1, -1)
        return ref.linear(p, "head", ref.perceiver_block(p, "decoder.", queries, z, 2, residual=False))

    _compare(model, [randn(N, 6, 3, seed=1)], theirs, MASK)
    given = randn(N, 4, 6, seed=3)
    with lamina.no_grad():
        out = model(ref.f64(randn(N, 6, 3, seed=1)), mask=MASK, queries=ref.f64(given)).numpy()
    params = {k: torch.from_numpy(v.data) for k, v in model.named_parameters()}
    z = torch_encoder(params, torch.from_numpy(randn(N, 6, 3, seed=1)), torch.from_numpy(MASK), 2, True)
    expected = ref.linear(params, "head", ref.perceiver_block(params, "decoder.", torch.from_numpy(given), z, 2,
                                                                residual=False))
    assert out.shape == (N, 4, 5)
    assert_close(out, expected.numpy(), 1e-10, "outputs for given queries")


def test_weights_are_shared_across_repeats():
    def count(**options):
        model = models.Perceiver(4, **{**SMALL, **options})
        model(randn(N, 6, 3))
        return model.num_parameters()

    assert count(num_repeats=2) == count(num_repeats=5) > count(num_repeats=1)
    latents, head = 3 * 8, 8 * 4 + 4           # held once however many repeats
    assert count(num_repeats=3, share_weights=False) == 3 * count(num_repeats=1) - 2 * (latents + head)
    model = models.Perceiver(4, num_repeats=4, **SMALL)
    assert len(model.encoder.cross_attention) == 2 and len(model.encoder.latent_transformers) == 1


def test_perceiver_on_sets_is_invariant_and_ignores_padding():
    model = models.Perceiver(4, num_repeats=2, **SMALL)
    x = randn(N, 6, 3, seed=4)
    model(x, mask=MASK)
    model.double()
    out = model(ref.f64(x), mask=MASK).numpy()
    perm = np.array([5, 3, 1, 0, 2, 4])
    assert_close(model(ref.f64(x[:, perm]), mask=MASK[:, perm]).numpy(), out, 1e-10, "permuted sets")
    assert_close(model(ref.f64(np.where(MASK[:, :, None], x, 9.0)), mask=MASK).numpy(), out, 1e-10, "padding")


def test_errors_name_the_model():
    model = models.Perceiver(4, **SMALL)
    with pytest.raises(ShapeError, match=r"PerceiverEncoder.*\(2, 6\).*images \(batch, height, width, channels\)"):
        model(randn(N, 6))
    with pytest.raises(ShapeError, match=r"PerceiverEncoder.*mask.*expected booleans of shape \(2, 6\)"):
        model(randn(N, 6, 3), mask=MASK[:, :5])
    io = models.PerceiverIO(5, query_dim=6, **SMALL)
    with pytest.raises(ShapeError, match=r"PerceiverIO.*queries of shape \(2, 4, 5\).*\(2, outputs, 6\)"):
        io(randn(N, 6, 3), queries=randn(N, 4, 5))
    with pytest.raises(ValueError, match="PerceiverBlock: qk_channels 8 is not divisible by num_heads 3"):
        models.Perceiver(4, **{**SMALL, "latent_heads": 3})


def test_perceiver_learns_the_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    model = models.Perceiver(10, num_latents=16, latent_dim=32, latent_blocks=1, latent_heads=2, num_bands=4)
    model(x_train[:2])
    opt = optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(ArrayDataset(x_train, y_train), batch_size=32, seed=0)
    epochs = 8
    for epoch in range(epochs):
        opt.lr = 1.5e-3 * (1 + math.cos(math.pi * epoch / epochs))
        for xb, yb in loader:
            cost = F.categorical_cross_entropy(model(xb), yb, from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    with lamina.no_grad():
        accuracy = float((model(x_test).numpy().argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.9, f"test accuracy {accuracy:.3f}"
