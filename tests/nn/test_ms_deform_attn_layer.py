"""MultiScaleDeformableAttention and DeformableTransformerEncoderLayer: the initial offsets are
the paper's pattern; with random weights both match a torch rewrite of the reference modules
(values and the gradients of inputs and parameters; padding masks; reference points and
reference boxes); gradient check, config round trip, errors; a learning check (reading the
maps at a fixed offset from the reference points); the README example."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from tests.functional.test_ms_deform_attn import starts_of, torch_ms_deform_attn
from tests.helpers import assert_close, check_gradients, run_readme_section

import lamina
from lamina import ShapeError, nn
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.optim import Adam

SHAPES = [(4, 3), (2, 2)]
S = sum(h * w for h, w in SHAPES)


@contextlib.contextmanager
def _float64():
    before = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    try:
        yield
    finally:
        lamina.backend.set_default_dtype(before)


def _randomised(layer, seed=0, scale=0.3):
    """Every parameter of the (built, float64) layer replaced by random values."""
    rng = np.random.default_rng(seed)
    for _, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return layer


def _msda(seed=0, **options):
    options = {"d_model": 8, "n_levels": 2, "n_heads": 2, "n_points": 3, **options}
    with _float64():
        layer = nn.MultiScaleDeformableAttention(**options)
    return layer


def _dense(x, params, name):
    return x @ params[f"{name}.weight"] + params[f"{name}.bias"]


def torch_msda(params, layer, query, reference_points, input_flatten, shapes, padding_mask=None):
    """The reference MSDeformAttn.forward in torch, weights as (n_in, units) matrices."""
    n, lq, _ = query.shape
    m, levels, points = layer.n_heads, layer.n_levels, layer.n_points
    value = _dense(input_flatten, params, "value_proj")
    if padding_mask is not None:
        value = value.masked_fill(torch.tensor(padding_mask)[..., None], 0.0)
    value = value.view(n, input_flatten.shape[1], m, -1)
    offsets = _dense(query, params, "sampling_offsets").view(n, lq, m, levels, points, 2)
    weights = torch.softmax(_dense(query, params, "attention_weights").view(n, lq, m, levels * points), -1)
    weights = weights.view(n, lq, m, levels, points)
    if reference_points.shape[-1] == 2:
        normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
    else:
        locations = (reference_points[:, :, None, :, None, :2]
                     + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5)
    return _dense(torch_ms_deform_attn(value, shapes, locations, weights), params, "output_proj")


def _compare(layer, torch_fn, arrays, call, rtol=1e-9, seed=0):
    """Values and the gradients of the float inputs and of every parameter, lamina vs torch."""
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    params = {name: torch.tensor(p.data, requires_grad=True) for name, p in layer.named_parameters()}
    out_l, out_t = call(layer, *ours), torch_fn(params, *theirs)
    assert_close(out_l.numpy(), out_t.detach().numpy(), rtol, "output")
    up = np.random.default_rng(seed).standard_normal(out_t.shape)
    (out_l * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (out_t * torch.tensor(up)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.grad, b.grad.numpy(), rtol, f"gradient of input {k}")
    for name, p in layer.named_parameters():
        expected = params[name].grad
        assert_close(p.grad, np.zeros(p.shape) if expected is None else expected.numpy(), rtol, f"gradient of {name}")


def _f64(*arrays):
    return [lamina.tensor(a, dtype=np.float64) for a in arrays]


def _inputs(n=2, lq=5, d=8, boxes=False, seed=1):
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((n, lq, d))
    flat = rng.standard_normal((n, S, d))
    reference = rng.uniform(0.1, 0.9, (n, lq, len(SHAPES), 2))
    if boxes:
        reference = np.concatenate([reference, rng.uniform(0.1, 0.5, (n, lq, len(SHAPES), 2))], axis=-1)
    return query, reference, flat


def test_initial_offsets_are_the_papers_pattern():
    layer = nn.MultiScaleDeformableAttention(d_model=16, n_levels=3, n_heads=8, n_points=4)
    assert not layer.sampling_offsets.weight.numpy().any() and not layer.attention_weights.weight.numpy().any()
    bias = layer.sampling_offsets.bias.numpy().reshape(8, 3, 4, 2)
    for m in range(8):
        direction = np.array([math.cos(2 * math.pi * m / 8), math.sin(2 * math.pi * m / 8)])
        direction /= np.abs(direction).max()
        for p in range(4):
            np.testing.assert_allclose(bias[m, :, p], np.tile(direction * (p + 1), (3, 1)), atol=1e-6)
    assert np.abs(bias).max(axis=-1).min() >= 1 - 1e-6        # on the square, as the reference
    np.testing.assert_array_equal(layer.attention_weights.bias.numpy(), 0)


def test_fresh_layer_samples_the_pattern_with_uniform_weights():
    layer = _msda()
    query, reference, flat = _inputs()
    params = {name: torch.tensor(p.data) for name, p in layer.named_parameters()}
    out = layer(*_f64(query, reference, flat), SHAPES, starts_of(SHAPES)).numpy()
    expected = torch_msda(params, layer, *(torch.tensor(a) for a in (query, reference, flat)), SHAPES)
    assert_close(out, expected.numpy(), 1e-10)


@pytest.mark.parametrize("boxes", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_the_torch_reference_with_random_weights(boxes, masked):
    layer = _randomised(_msda())
    query, reference, flat = _inputs(boxes=boxes)
    mask = np.zeros((2, S), dtype=bool)
    mask[0, 9:12] = mask[1, 14:] = True                       # padded corners of both levels
    mask = mask if masked else None

    def call(layer, q, r, x):
        return layer(q, r, x, SHAPES, starts_of(SHAPES), padding_mask=mask)

    def theirs(params, q, r, x):
        return torch_msda(params, layer, q, r, x, SHAPES, padding_mask=mask)

    _compare(layer, theirs, (query, reference, flat), call)


def test_padding_mask_hides_the_padded_positions():
    layer = _randomised(_msda(), seed=2)
    query, reference, flat = _inputs(n=1)
    mask = np.zeros((1, S), dtype=bool)
    mask[0, 12:] = True
    changed = flat.copy()
    changed[0, 12:] += 5.0
    first = layer(*_f64(query, reference, flat), SHAPES, None, padding_mask=mask).numpy()
    second = layer(*_f64(query, reference, changed), SHAPES, None, padding_mask=mask).numpy()
    np.testing.assert_allclose(first, second, atol=1e-12)
    assert not np.allclose(layer(*_f64(query, reference, changed), SHAPES).numpy(), first)


def test_gradients_numerically():
    layer = _randomised(_msda(d_model=4, n_points=1), seed=3)
    query, reference, flat = _inputs(n=1, lq=2, d=4, seed=4)
    assert check_gradients(lambda q, x: layer(q, *_f64(reference), x, SHAPES, None), query, flat)


def torch_encoder_layer(params, layer, src, pos, reference_points, shapes, padding_mask=None):
    """The reference DeformableTransformerEncoderLayer.forward (dropout off) with the level
    embeddings added to pos as the reference transformer does before its encoder."""
    level_of_row = torch.repeat_interleave(torch.arange(len(shapes)), torch.tensor([h * w for h, w in shapes]))
    pos = pos + params["level_embed"][level_of_row]
    attn = {name.split(".", 1)[1]: p for name, p in params.items() if name.startswith("self_attn.")}
    src2 = torch_msda(attn, layer.self_attn, src + pos, reference_points, src, shapes, padding_mask)

    def norm(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], 1e-5)

    src = norm(src + src2, "norm1")
    ffn = _dense(torch.relu(_dense(src, params, "linear1")), params, "linear2")
    return norm(src + ffn, "norm2")


def test_encoder_layer_matches_the_torch_reference():
    with _float64():
        layer = nn.DeformableTransformerEncoderLayer(d_model=8, d_ffn=12, dropout=0.1, n_levels=2, n_heads=2,
                                                     n_points=2)
    _randomised(layer, seed=5)
    layer.eval()
    rng = np.random.default_rng(6)
    src, pos = rng.standard_normal((2, S, 8)), rng.standard_normal((2, S, 8))
    ratios = np.array([[[1.0, 1.0], [1.0, 1.0]], [[0.75, 0.5], [0.5, 0.5]]])
    reference = lamina.functional.deformable_reference_points(SHAPES, ratios, dtype=np.float64).numpy()
    mask = np.zeros((2, S), dtype=bool)
    mask[1, [2, 5, 8, 9, 10, 11, 13, 14, 15]] = True

    def call(layer, x, p):
        return layer(x, p, *_f64(reference), SHAPES, starts_of(SHAPES), padding_mask=mask)

    def theirs(params, x, p):
        return torch_encoder_layer(params, layer, x, p, torch.tensor(reference), SHAPES, mask)

    _compare(layer, theirs, (src, pos), call, rtol=1e-8)


def test_config_round_trip_and_repr():
    layer = nn.MultiScaleDeformableAttention(d_model=12, n_levels=3, n_heads=3, n_points=2, name="msda")
    again = layer_from_config(layer_to_config(layer))
    assert isinstance(again, nn.MultiScaleDeformableAttention) and again.get_config() == layer.get_config()
    assert "n_points=2" in repr(layer)
    encoder = nn.DeformableTransformerEncoderLayer(d_model=8, d_ffn=16, n_levels=2, n_heads=2, n_points=1)
    twin = layer_from_config(layer_to_config(encoder))
    assert isinstance(twin, nn.DeformableTransformerEncoderLayer) and twin.get_config() == encoder.get_config()


def test_save_and_load_keep_the_weights(tmp_path):
    encoder = nn.DeformableTransformerEncoderLayer(d_model=8, d_ffn=16, n_levels=2, n_heads=2, n_points=2)
    encoder.eval()
    rng = np.random.default_rng(7)
    src, pos = (rng.standard_normal((1, S, 8)).astype(np.float32) for _ in range(2))
    reference = lamina.functional.deformable_reference_points(SHAPES, np.ones((1, 2, 2)))
    assert encoder.built                                          # d_model fixes every shape
    path = tmp_path / "encoder.safetensors"
    lamina.save(encoder, path)
    twin = lamina.load(path)
    twin.eval()
    assert isinstance(twin, nn.DeformableTransformerEncoderLayer)
    with lamina.no_grad():
        np.testing.assert_array_equal(twin(src, pos, reference, SHAPES).numpy(),
                                      encoder(src, pos, reference, SHAPES).numpy())


def test_errors_name_the_problem():
    layer = _msda()
    query, reference, flat = _inputs()
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        nn.MultiScaleDeformableAttention(d_model=10, n_heads=4)
    with pytest.raises(ShapeError, match="reference_points"):
        layer(query, reference[..., :1], flat, SHAPES)
    with pytest.raises(ShapeError, match="expected 2 spatial shapes"):
        layer(query, reference, flat, SHAPES[:1])
    with pytest.raises(ShapeError, match="S=15 rows"):
        layer(query, reference, flat[:, :15], SHAPES)
    with pytest.raises(ShapeError, match="padding_mask"):
        layer(query, reference, flat, SHAPES, padding_mask=np.zeros((2, 3), dtype=bool))
    with pytest.raises(ShapeError, match="query of shape"):
        layer(query[..., :4], reference, flat, SHAPES)


def _smooth_maps(rng, count, size, channels):
    """Random sums of two plane waves, and the same functions read one pixel left and 1.5 down."""
    freq = rng.uniform(-0.7, 0.7, (count, 2, 2, channels))
    phase = rng.uniform(0, 2 * math.pi, (count, 2, channels))
    rows, cols = np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float), indexing="ij")

    def at(r, c):
        waves = (freq[:, :, 0, None, None, :] * r[None, None, :, :, None]
                 + freq[:, :, 1, None, None, :] * c[None, None, :, :, None] + phase[:, :, None, None, :])
        return np.sin(waves).sum(axis=1).reshape(count, size * size, channels)

    return at(rows, cols), at(rows + 1.5, cols - 1.0)


def test_learns_to_read_at_a_fixed_offset():
    size, d = 10, 2
    lamina.manual_seed(0)
    layer = nn.MultiScaleDeformableAttention(d_model=d, n_levels=1, n_heads=2, n_points=2)
    for proj in (layer.value_proj, layer.output_proj):          # identities: the offsets must do the work
        proj.weight.data = np.eye(d, dtype=np.float32)
    reference = lamina.functional.deformable_reference_points([(size, size)], np.ones((1, 1, 2))).numpy()
    rows, cols = np.divmod(np.arange(size * size), size)
    kept = np.flatnonzero((rows + 1.5 <= size - 1) & (cols - 1.0 >= 0))          # targets inside the map
    optimizer = Adam([layer.sampling_offsets.bias, layer.attention_weights.bias], lr=0.05)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(60):
        maps, targets = _smooth_maps(rng, 8, size, d)
        maps, targets = maps.astype(np.float32), targets.astype(np.float32)
        out = layer(np.zeros((8, size * size, d), dtype=np.float32), np.broadcast_to(reference, (8, size * size, 1, 2)),
                    maps, [(size, size)])
        loss = ((out[:, kept] - lamina.tensor(targets[:, kept])) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.numpy()))
    offsets = layer.sampling_offsets.bias.numpy().reshape(2, 2, 2)
    weights = np.exp(layer.attention_weights.bias.numpy().reshape(2, 2))
    weights /= weights.sum(axis=1, keepdims=True)
    read = (offsets * weights[..., None]).sum(axis=1)            # the weighted offset of each head (x, y)
    print(f"loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.4f}, offsets {read.round(2).tolist()}")
    assert np.mean(losses[-5:]) < 0.1 * np.mean(losses[:5])
    np.testing.assert_allclose(read, [[-1.0, 1.5], [-1.0, 1.5]], atol=0.25)


def test_readme_example():
    printed, _ = run_readme_section("Multi-scale deformable attention")
    assert printed.split() == ["(2,", "6,", "32)", "(2,", "85,", "32)"]
