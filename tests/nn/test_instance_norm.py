import json

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer

import lamina
from helpers import TOLERANCE, assert_close
from lamina import nn
from lamina.nn.instance_norm import InstanceNorm1D, InstanceNorm2D

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
OPTIONS = [(False, False), (True, False), (False, True), (True, True)]   # (affine, track_running_stats)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _channels_first(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _channels_last(a):
    return np.moveaxis(a, 1, -1)


def _set_affine(layer, seed=0):
    """Gamma and beta away from 1 and 0, so that a mix-up of the two shows."""
    rng = np.random.default_rng(seed)
    dtype = layer.weight.data.dtype
    layer.weight.data = (1 + 0.5 * rng.standard_normal(layer.weight.shape)).astype(dtype)
    layer.bias.data = (0.3 * rng.standard_normal(layer.bias.shape)).astype(dtype)


def _step(layer, torch_module, x, dtype, seed):
    """One call of both on ``x`` (channels last): compare the output and every gradient."""
    rtol = TOLERANCE[dtype]
    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    out = layer(xl)
    xt = torch.tensor(_channels_first(x), requires_grad=True)
    out_t = torch_module(xt)
    assert out.dtype == dtype
    assert_close(out.numpy(), _channels_last(out_t.detach().numpy()), rtol, "output")
    upstream = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    out.backward(upstream)
    (out_t * torch.from_numpy(_channels_first(upstream))).sum().backward()
    assert_close(xl.grad, _channels_last(xt.grad.numpy()), rtol, "input gradient")
    if layer.affine:
        for name in ("weight", "bias"):
            ours, theirs = getattr(layer, name), getattr(torch_module, name)
            assert_close(ours.grad, theirs.grad.numpy(), rtol, f"gradient of {name}")
            ours.grad, theirs.grad = None, None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine, track", OPTIONS)
@pytest.mark.parametrize("layer_class, torch_class, shape", [(InstanceNorm1D, torch.nn.InstanceNorm1d, (3, 7, 4)),
                                                             (InstanceNorm2D, torch.nn.InstanceNorm2d, (2, 5, 3, 4))])
def test_matches_torch_training_then_evaluation(layer_class, torch_class, shape, affine, track, dtype):
    """Three training steps on shifted batches (the running statistics move), then evaluation."""
    lamina.set_default_dtype(dtype)
    layer = layer_class(affine=affine, track_running_stats=track)
    torch_module = torch_class(shape[-1], affine=affine, track_running_stats=track).to(TORCH_DTYPE[dtype])
    rng = np.random.default_rng(1)
    layer.build(shape)
    layer.built = True
    if affine:
        _set_affine(layer)
        with torch.no_grad():
            torch_module.weight.copy_(torch.from_numpy(layer.weight.numpy()))
            torch_module.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    # channels of different means and scales, and a mean that moves from batch to batch
    scale = rng.uniform(0.5, 3.0, shape[-1])
    for step in range(3):
        x = (step + 2.0 * rng.standard_normal(shape) * scale).astype(dtype)
        _step(layer, torch_module, x, dtype, seed=step)
    if track:
        assert_close(layer.running_mean, torch_module.running_mean.numpy(), TOLERANCE[dtype], "running_mean")
        assert_close(layer.running_var, torch_module.running_var.numpy(), TOLERANCE[dtype], "running_var")
        assert not np.allclose(layer.running_mean, 0) and not np.allclose(layer.running_var, 1)
    else:
        assert "running_mean" not in layer.state_dict()
    layer.eval()
    torch_module.eval()
    x = (1.0 + rng.standard_normal((1,) + shape[1:]) * scale).astype(dtype)   # one sample is fine in evaluation
    _step(layer, torch_module, x, dtype, seed=9)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("layer_class, shape", [(InstanceNorm1D, (2, 5, 3)), (InstanceNorm2D, (2, 3, 2, 4))])
def test_gradcheck(f64, layer_class, shape, affine):
    x = 1.0 + 2.0 * np.random.default_rng(2).standard_normal(shape)
    layer = layer_class(affine=affine)
    layer(x)
    if affine:
        _set_affine(layer)
    assert gradcheck_layer(layer, x)


def test_gradcheck_evaluation_with_running_statistics(f64):
    layer = InstanceNorm2D(affine=True, track_running_stats=True)
    rng = np.random.default_rng(3)
    for _ in range(2):
        layer(lamina.tensor(3.0 + rng.standard_normal((2, 3, 3, 4))))
    _set_affine(layer)
    layer.eval()
    assert gradcheck_layer(layer, rng.standard_normal((2, 3, 3, 4)))


def test_each_sample_and_channel_is_standardised_alone():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 5, 2)).astype(np.float32) * [[[[1.0, 10.0]]]] + [[[[5.0, -2.0]]]]
    x[1] *= 100.0                                   # another sample's scale must not matter
    y = InstanceNorm2D()(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, rtol=1e-3)
    alone = InstanceNorm2D()(x[:1]).numpy()
    np.testing.assert_allclose(alone, y[:1], rtol=1e-5, atol=1e-6)


def test_evaluation_without_running_statistics_uses_the_sample():
    layer = InstanceNorm1D(affine=True)
    x = np.random.default_rng(5).standard_normal((2, 6, 3)).astype(np.float32)
    train_out = layer(x).numpy()
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), train_out)


def test_running_statistics_follow_training_calls_under_no_grad():
    """The batch average of the samples' means and unbiased variances, weighted by momentum."""
    layer = InstanceNorm1D(track_running_stats=True, momentum=0.5)
    x = np.array([[[4.0], [6.0], [8.0]], [[0.0], [2.0], [4.0]]], dtype=np.float32)
    with lamina.no_grad():
        layer(x)
    # means 6 and 2 (average 4), unbiased variances 4 (the biased 8/3 would give 11/6)
    np.testing.assert_allclose(layer.running_mean, [0.5 * 0 + 0.5 * 4], rtol=1e-6)
    np.testing.assert_allclose(layer.running_var, [0.5 * 1 + 0.5 * 4], rtol=1e-6)


def test_errors_name_the_layer_and_the_shapes():
    layer = InstanceNorm2D(name="inorm")
    layer(np.zeros((2, 3, 3, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"InstanceNorm2D 'inorm'.*\(2, 3, 3, 5\).*C=4"):
        layer(np.zeros((2, 3, 3, 5), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"InstanceNorm2D 'inorm'.*\(2, 4, 3, 3\).*channels look first"):
        layer(np.zeros((2, 4, 3, 3), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"InstanceNorm2D 'inorm'.*\(2, 9, 4\).*NHWC"):
        layer(np.zeros((2, 9, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"InstanceNorm2D 'inorm'.*\(1, 1, 1, 4\).*more than one position"):
        layer(np.zeros((1, 1, 1, 4), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"InstanceNorm1D.*\(None, 8, 6\).*built for C=2"):
        one_d = InstanceNorm1D()
        one_d(np.ones((1, 3, 2), dtype=np.float32))
        one_d.compute_output_shape((None, 8, 6))
    with pytest.raises(lamina.ShapeError, match=r"InstanceNorm1D.*\(4, 3, 3, 2\).*\(batch, steps, channels\)"):
        InstanceNorm1D().compute_output_shape((4, 3, 3, 2))
    with pytest.raises(ValueError, match="InstanceNorm1D: eps must be a positive number, got 0"):
        InstanceNorm1D(eps=0)
    with pytest.raises(ValueError, match=r"InstanceNorm2D: momentum must be in \[0, 1\]"):
        InstanceNorm2D(momentum=1.5)


def test_a_single_position_is_fine_in_evaluation_with_running_statistics():
    layer = InstanceNorm2D(track_running_stats=True)
    layer(np.random.default_rng(6).standard_normal((2, 2, 2, 3)).astype(np.float32))
    layer.eval()
    y = layer(np.ones((1, 1, 1, 3), dtype=np.float32)).numpy()
    expected = (1 - layer.running_mean) / np.sqrt(layer.running_var + 1e-5)
    np.testing.assert_allclose(y.reshape(3), expected, rtol=1e-6)


def test_config_repr_state_and_saving(tmp_path):
    layer = InstanceNorm2D(eps=1e-3, momentum=0.8, affine=True, track_running_stats=True, name="inst")
    config = json.loads(json.dumps(nn.layer_to_config(layer)))
    again = nn.layer_from_config(config)
    assert type(again) is InstanceNorm2D and again.get_config() == layer.get_config()
    assert again.momentum == 0.8 and again.eps == 1e-3 and again.affine and again.track_running_stats
    assert repr(InstanceNorm1D()) == "InstanceNorm1D(?, eps=1e-05)"
    layer(np.random.default_rng(7).standard_normal((2, 3, 3, 4)).astype(np.float32))
    assert repr(layer) == "InstanceNorm2D(4, eps=0.001, momentum=0.8, track_running_stats=True, affine=True)"
    assert set(layer.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert {"InstanceNorm1D", "InstanceNorm2D"} <= set(nn.registered_layers())

    model = nn.Sequential(nn.Conv1D(4, 3, padding=1), InstanceNorm1D(affine=True, track_running_stats=True),
                          nn.ReLU(), nn.Flatten(), nn.Dense(2))
    x = np.random.default_rng(8).standard_normal((3, 6, 2)).astype(np.float32)
    model(x)
    path = tmp_path / "instance.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    model.eval()
    loaded.eval()
    with lamina.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
