"""Noise layers: statistics of the noise over a million units, the identity in evaluation,
backward through the forward's draw, gradient checks with the noise frozen, AlphaDropout and
the spatial dropouts against PyTorch, configs and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer

import lamina
from helpers import randn
from lamina.errors import ShapeError
from lamina.nn import layer_from_config, layer_to_config
from lamina.nn.noise import AlphaDropout, GaussianDropout, GaussianNoise, SpatialDropout1D, SpatialDropout2D

# alpha' = -lambda alpha of SELU, from the constants of Klambauer et al. (2017)
SELU_SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717

LAYERS = {
    "gaussian_noise": (lambda: GaussianNoise(0.4), (6, 5)),
    "gaussian_dropout": (lambda: GaussianDropout(0.3), (6, 5)),
    "alpha_dropout": (lambda: AlphaDropout(0.3), (6, 5)),
    "spatial_dropout1d": (lambda: SpatialDropout1D(0.4), (3, 4, 5)),
    "spatial_dropout2d": (lambda: SpatialDropout2D(0.4), (3, 2, 3, 5)),
}


def standard_normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def dropped_value(y: np.ndarray) -> float:
    """The value most outputs share: AlphaDropout's value for every dropped unit (kept
    units are a x + b of continuous inputs, all distinct)."""
    values, counts = np.unique(y, return_counts=True)
    assert counts.max() > 10, "no value is shared by many units"
    return values[counts.argmax()]


# -- statistics over a million units ----------------------------------------------------------


def test_gaussian_noise_adds_centred_noise_of_the_given_stddev():
    x = standard_normal(1000, 1000) + 3
    noise = (GaussianNoise(0.5)(x).numpy() - x).astype(np.float64)
    assert abs(noise.mean()) < 3e-3                 # 6 standard errors of the mean
    assert abs(noise.std() - 0.5) < 0.005
    assert abs(np.corrcoef(noise.ravel()[:-1], noise.ravel()[1:])[0, 1]) < 5e-3   # independent draws


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_gaussian_dropout_multiplies_by_noise_of_mean_one_and_variance_rate_over_keep(rate):
    factor = GaussianDropout(rate)(np.ones((1000, 1000), np.float32)).numpy().astype(np.float64)
    variance = rate / (1 - rate)
    assert abs(factor.mean() - 1) < 6 * math.sqrt(variance / factor.size)
    assert abs(factor.var() / variance - 1) < 0.01
    # the mean of any input is kept; on standard normal inputs the second moment grows to
    # 1 / keep_prob, as with inverted dropout (the variance is not preserved)
    x = standard_normal(1000, 1000)
    y = GaussianDropout(rate)(x).numpy().astype(np.float64)
    assert abs(y.mean()) < 0.005
    assert abs((y**2).mean() * (1 - rate) - 1) < 0.01
    shifted = GaussianDropout(rate)(x + 3).numpy().astype(np.float64)
    assert abs(shifted.mean() - (x + 3).mean()) < 0.01


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_mean_zero_and_variance_one(rate):
    x = standard_normal(1000, 1000)
    y = AlphaDropout(rate)(x).numpy().astype(np.float64)
    assert abs(y.mean()) < 0.006
    assert abs(y.var() - 1) < 0.006
    dropped = y == dropped_value(y)
    assert abs(dropped.mean() - rate) < 0.003
    # the variance of the raw input is what changes without the affine correction
    assert abs(np.where(dropped, SELU_SATURATION, x).var() - 1) > 0.05


@pytest.mark.parametrize("layer_class, shape", [(SpatialDropout1D, (1000, 7, 100)),
                                                (SpatialDropout2D, (1000, 3, 3, 100))],
                         ids=["1d", "2d"])
def test_spatial_dropout_drops_whole_channels(layer_class, shape):
    rate = 0.3
    y = layer_class(rate)(np.ones(shape, np.float32)).numpy()
    per_channel = y.reshape(shape[0], -1, shape[-1])                     # (N, steps or pixels, C)
    assert (per_channel == per_channel[:, :1]).all(), "a channel was partly dropped"
    kept = per_channel[:, 0] != 0
    assert abs(kept.mean() - (1 - rate)) < 0.006                        # 1e5 (sample, channel) pairs
    np.testing.assert_allclose(per_channel[:, 0][kept], 1 / (1 - rate), rtol=1e-6)
    # independent draws per sample and per channel, not one per channel or one per sample
    assert np.abs(kept.mean(axis=0) - (1 - rate)).max() < 0.15          # each channel over 1000 samples
    assert np.abs(kept.mean(axis=1) - (1 - rate)).max() < 0.25          # each sample over 100 channels


# -- modes, seeds, dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_evaluation_is_the_identity(name):
    make, shape = LAYERS[name]
    layer = make()
    x = lamina.tensor(randn(*shape))
    assert not np.array_equal(layer(x).numpy(), x.numpy())
    layer.eval()
    assert layer(x) is x
    layer.train()
    assert not np.array_equal(layer(x).numpy(), x.numpy())


@pytest.mark.parametrize("name", list(LAYERS))
def test_no_noise_at_rate_or_stddev_zero(name):
    make, shape = LAYERS[name]
    layer = type(make())(0.0)
    x = lamina.tensor(randn(*shape))
    assert layer.training and layer(x) is x


@pytest.mark.parametrize("name", list(LAYERS))
def test_noise_is_new_on_every_call_and_follows_the_seed(name):
    make, shape = LAYERS[name]
    layer = make()
    x = randn(*shape) + 2
    first, second = layer(x).numpy(), layer(x).numpy()
    assert not np.array_equal(first, second)
    lamina.manual_seed(11)
    again = layer(x).numpy()
    lamina.manual_seed(11)
    np.testing.assert_array_equal(layer(x).numpy(), again)


@pytest.mark.parametrize("name", list(LAYERS))
def test_output_dtype_follows_a_floating_input(name):
    make, shape = LAYERS[name]
    for dtype in (np.float32, np.float64):
        assert make()(lamina.tensor(randn(*shape), dtype=dtype)).dtype == dtype
    assert make()(np.ones(shape, dtype=np.int64)).dtype == np.float32           # the default dtype


# -- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gaussian_dropout", "spatial_dropout1d", "spatial_dropout2d"])
def test_backward_multiplies_by_the_forwards_factor(name):
    make, shape = LAYERS[name]
    x = lamina.tensor(randn(*shape) + 5, requires_grad=True)     # away from 0: y / x is the factor
    y = make()(x)
    upstream = randn(*shape, seed=1)
    y.backward(upstream)
    np.testing.assert_allclose(x.grad, upstream * (y.numpy() / x.numpy()), rtol=1e-5)


def test_gaussian_noise_passes_the_gradient_through():
    x = lamina.tensor(randn(4, 6), requires_grad=True)
    y = GaussianNoise(1.0)(x)
    upstream = randn(4, 6, seed=1)
    y.backward(upstream)
    assert not np.allclose(y.numpy(), x.numpy())
    np.testing.assert_array_equal(x.grad, upstream.astype(np.float32))


def test_alpha_dropout_backward_is_the_slope_where_kept_and_zero_where_dropped():
    x = lamina.tensor(randn(200, 50), requires_grad=True)
    y = AlphaDropout(0.4)(x)
    upstream = randn(200, 50, seed=1)
    y.backward(upstream)
    out, xs = y.numpy().astype(np.float64), x.numpy().astype(np.float64)
    dropped = out == dropped_value(out)
    i, j = np.flatnonzero(~dropped)[:2]
    slope = (out.flat[i] - out.flat[j]) / (xs.flat[i] - xs.flat[j])
    intercept = out.flat[i] - slope * xs.flat[i]
    np.testing.assert_allclose(out[~dropped], slope * xs[~dropped] + intercept, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad[~dropped], slope * upstream[~dropped], rtol=1e-4)
    assert (x.grad[dropped] == 0).all()


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradcheck_with_the_noise_frozen_by_reseeding(name):
    """gradcheck runs the forward once per perturbation; reseeding before each run redraws
    the same noise, so every evaluation sees one fixed function of x."""
    lamina.set_default_dtype(np.float64)
    make, shape = LAYERS[name]
    assert gradcheck_layer(make(), randn(*shape), reseed=4)


# -- PyTorch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_alpha_dropout_matches_torch_on_the_units_both_keep_or_both_drop(rate):
    """torch draws its own mask; recovered from each output, the two must agree wherever the
    masks do (values and gradients), and lamina's output must follow torch's formula."""
    x = randn(300, 200)
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(x, requires_grad=True)
    ours = AlphaDropout(rate)(xl)
    torch.manual_seed(0)
    theirs = torch.nn.functional.alpha_dropout(xt, rate, training=True)
    upstream = randn(300, 200, seed=1)
    ours.backward(upstream)
    theirs.backward(torch.from_numpy(upstream))
    yl, yt = ours.numpy(), theirs.detach().numpy()
    kept_l, kept_t = yl != dropped_value(yl), yt != dropped_value(yt)
    assert dropped_value(yl) == pytest.approx(dropped_value(yt), rel=1e-12)
    both_kept, both_dropped = kept_l & kept_t, ~kept_l & ~kept_t
    assert both_kept.mean() > 0.2 and both_dropped.sum() > 100
    np.testing.assert_allclose(yl[both_kept], yt[both_kept], rtol=1e-12)
    np.testing.assert_allclose(yl[both_dropped], yt[both_dropped], rtol=1e-12)
    np.testing.assert_allclose(xl.grad[both_kept], xt.grad.numpy()[both_kept], rtol=1e-12)
    assert (xl.grad[~kept_l] == 0).all() and (xt.grad.numpy()[~kept_t] == 0).all()
    # torch's formula (ATen's dropout with alpha), evaluated on lamina's own mask
    alpha = 1.7580993408473766
    a = 1 / math.sqrt((alpha**2 * rate + 1) * (1 - rate))
    mask = kept_l.astype(np.float64)
    expected = x * mask * a + (mask - 1) * alpha * a + alpha * a * rate
    np.testing.assert_allclose(yl, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer_class, shape", [(SpatialDropout1D, (40, 6, 30)),
                                                (SpatialDropout2D, (40, 3, 4, 30))], ids=["1d", "2d"])
def test_spatial_dropout_matches_torch_on_the_channels_both_keep_or_both_drop(layer_class, shape):
    """torch's Dropout1d/Dropout2d on channels-first inputs, compared on the (sample,
    channel) pairs where the two independently drawn masks agree."""
    rate = 0.4
    x = randn(*shape) + 3                                    # no zeros: a zero channel was dropped
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    ours = layer_class(rate)(xl)
    channels_first = np.moveaxis(x, -1, 1).copy()
    xt = torch.tensor(channels_first, requires_grad=True)
    torch.manual_seed(0)
    dropout = torch.nn.functional.dropout1d if x.ndim == 3 else torch.nn.functional.dropout2d
    theirs = dropout(xt, rate, training=True)
    upstream = randn(*shape, seed=1)
    ours.backward(upstream)
    theirs.backward(torch.from_numpy(np.moveaxis(upstream, -1, 1).copy()))
    yl = ours.numpy().reshape(shape[0], -1, shape[-1])
    yt = np.moveaxis(theirs.detach().numpy(), 1, -1).reshape(shape[0], -1, shape[-1])
    kept_l, kept_t = (yl != 0).all(axis=1), (yt != 0).all(axis=1)       # (N, C)
    assert ((yl == 0).any(axis=1) == ~kept_l).all() and ((yt == 0).any(axis=1) == ~kept_t).all()
    both = kept_l == kept_t
    assert both.mean() > 0.4
    np.testing.assert_allclose(yl.transpose(0, 2, 1)[both], yt.transpose(0, 2, 1)[both], rtol=1e-12)
    gl = xl.grad.reshape(shape[0], -1, shape[-1]).transpose(0, 2, 1)
    gt = np.moveaxis(xt.grad.numpy(), 1, -1).reshape(shape[0], -1, shape[-1]).transpose(0, 2, 1)
    np.testing.assert_allclose(gl[both], gt[both], rtol=1e-12)


# -- config and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_config_round_trip(name):
    make, shape = LAYERS[name]
    layer = make()
    layer.name = "noisy"
    rebuilt = layer_from_config(layer_to_config(layer))
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    assert rebuilt.name == "noisy"
    assert rebuilt.compute_output_shape((None,) + shape[1:]) == (None,) + shape[1:]
    lamina.manual_seed(3)
    expected = layer(randn(*shape)).numpy()
    lamina.manual_seed(3)
    np.testing.assert_array_equal(rebuilt(randn(*shape)).numpy(), expected)


@pytest.mark.parametrize("layer_class", [GaussianDropout, AlphaDropout, SpatialDropout1D, SpatialDropout2D])
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_rate_outside_zero_one_is_refused(layer_class, rate):
    with pytest.raises(ValueError, match=rf"^{layer_class.__name__}: rate .* must be a number in \[0, 1\), "
                                         rf"got {repr(rate).replace('.', '[.]')}$"):
        layer_class(rate)


@pytest.mark.parametrize("stddev", [-0.1, float("inf"), float("nan"), False, "1"])
def test_gaussian_noise_refuses_a_bad_stddev(stddev):
    with pytest.raises(ValueError, match=r"^GaussianNoise: stddev must be a finite number >= 0"):
        GaussianNoise(stddev)


@pytest.mark.parametrize("layer_class, good, bad, expected", [
    (SpatialDropout1D, (2, 5, 3), (2, 5, 4, 3), r"a 3-D input \(batch, steps, channels\)"),
    (SpatialDropout2D, (2, 4, 4, 3), (2, 4, 3), r"a 4-D NHWC input \(batch, height, width, channels\)"),
], ids=["1d", "2d"])
def test_spatial_dropout_refuses_the_wrong_rank_in_both_modes(layer_class, good, bad, expected):
    layer = layer_class(0.5, name="sd")
    assert layer(np.ones(good, np.float32)).shape == good
    shown = str(bad).replace("(", r"\(").replace(")", r"\)")
    for mode in (True, False):
        layer.train(mode)
        with pytest.raises(ShapeError, match=rf"^{layer_class.__name__} 'sd': got an input of shape {shown} "
                                             rf"\(float32\); expected {expected}"):
            layer(np.ones(bad, np.float32))
    with pytest.raises(ShapeError, match=rf"^{layer_class.__name__} 'sd': got an input shape {shown}; "
                                         rf"expected {expected}"):
        layer.compute_output_shape(bad)
