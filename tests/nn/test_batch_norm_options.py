"""BatchNorm's PyTorch options against torch.nn.BatchNorm2d over several training steps and then
evaluation: frozen running statistics (momentum 1, torch's 0), the cumulative average
(momentum=None), no running statistics (track_running_stats=False), and empty batches."""

import numpy as np
import pytest
import torch

import lamina
from lamina import nn

SHAPES = [(4, 3, 2, 3), (2, 2, 2, 3), (0, 2, 2, 3), (5, 1, 2, 3)]


@pytest.fixture(autouse=True)
def f64():
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(np.float32)


def _step(layer, theirs, x, rng):
    """One forward and backward of both layers on the NHWC batch x; returns both outputs and gradients."""
    ours_x = lamina.tensor(x, dtype=np.float64, requires_grad=True)
    their_x = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
    ours, their = layer(ours_x), theirs(their_x).permute(0, 2, 3, 1)
    up = rng.standard_normal(ours.shape)
    (ours * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (their * torch.tensor(up)).sum().backward()
    return (ours.numpy(), ours_x.grad), (their.detach().numpy(), their_x.grad.permute(0, 2, 3, 1).numpy())


def _assert_running_statistics(layer, theirs):
    np.testing.assert_allclose(layer.running_mean, theirs.running_mean.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.running_var, theirs.running_var.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ours, torch_options", [
    (dict(momentum=1.0), dict(momentum=0.0)),
    (dict(momentum=None), dict(momentum=None)),
    (dict(momentum=0.6), dict(momentum=0.4)),
    (dict(track_running_stats=False), dict(track_running_stats=False)),
    (dict(momentum=None, affine=False), dict(momentum=None, affine=False)),
], ids=["frozen", "cumulative", "momentum", "no-running-stats", "cumulative-no-affine"])
def test_training_steps_then_evaluation_match_torch(ours, torch_options):
    rng = np.random.default_rng(0)
    layer, theirs = nn.BatchNorm(**ours), torch.nn.BatchNorm2d(3, **torch_options).double()
    for step, shape in enumerate(SHAPES):
        x = rng.standard_normal(shape) * (step + 1) + step
        (y, dx), (y_t, dx_t) = _step(layer, theirs, x, rng)
        np.testing.assert_allclose(y, y_t, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, dx_t, rtol=1e-10, atol=1e-12)
        if layer.affine:
            np.testing.assert_allclose(layer.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
        if theirs.track_running_stats:
            _assert_running_statistics(layer, theirs)
    if ours.get("momentum", 0.9) is None:
        assert int(layer.num_batches_tracked) == int(theirs.num_batches_tracked) == len(SHAPES)
    layer.eval()
    theirs.eval()
    (y, dx), (y_t, dx_t) = _step(layer, theirs, rng.standard_normal((3, 2, 2, 3)), rng)
    np.testing.assert_allclose(y, y_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, dx_t, rtol=1e-10, atol=1e-12)


def test_frozen_running_statistics_stay_put():
    layer = nn.BatchNorm(momentum=1.0)
    layer(np.random.default_rng(1).standard_normal((6, 4)) + 3)
    np.testing.assert_array_equal(layer.running_mean, np.zeros(4))
    np.testing.assert_array_equal(layer.running_var, np.ones(4))


def test_an_empty_training_batch_gives_an_empty_output_and_keeps_the_statistics():
    layer = nn.BatchNorm(momentum=0.5)
    layer(np.random.default_rng(2).standard_normal((5, 3)))
    mean, var = layer.running_mean.copy(), layer.running_var.copy()
    x = lamina.tensor(np.zeros((0, 4, 3)), requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 4, 3)
    y.sum().backward()
    np.testing.assert_array_equal(layer.weight.grad, np.zeros(3))
    np.testing.assert_array_equal(layer.running_mean, mean)
    np.testing.assert_array_equal(layer.running_var, var)


def test_without_running_statistics_there_are_no_buffers_and_one_sample_is_refused():
    layer = nn.BatchNorm(track_running_stats=False)
    layer(np.ones((2, 3)))
    assert layer.running_mean is None and layer.running_var is None
    assert sorted(layer.state_dict()) == ["bias", "weight"]
    layer.eval()
    with pytest.raises(lamina.ShapeError, match="more than one value per channel.*track_running_stats=False"):
        layer(np.ones((1, 3)))
    with pytest.raises(ValueError, match="track_running_stats=False: it normalises with the batch statistics"):
        layer.evaluation_affine(np.float64)


def test_config_repr_and_state_dict_keep_the_options():
    layer = nn.BatchNorm(momentum=None, track_running_stats=True)
    layer(np.random.default_rng(3).standard_normal((4, 2)))
    assert sorted(layer.state_dict()) == ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]
    copy = nn.layer_from_config(nn.layer_to_config(layer))
    assert copy.get_config() == layer.get_config() == {"momentum": None, "eps": 1e-5, "affine": True,
                                                       "track_running_stats": True, "name": layer.name}
    copy(np.zeros((2, 2)))
    copy.load_state_dict(layer.state_dict())
    assert int(copy.num_batches_tracked) == 1
    assert repr(layer) == repr(copy) and "momentum=None" in repr(layer)
    no_stats = nn.BatchNorm(track_running_stats=False)
    assert "track_running_stats=False" in repr(no_stats)
    assert nn.layer_from_config(nn.layer_to_config(no_stats)).track_running_stats is False


@pytest.mark.parametrize("momentum", [-0.1, 1.5, True, "0.9"])
def test_momentum_outside_zero_one_is_refused(momentum):
    with pytest.raises(ValueError, match=r"BatchNorm: momentum must be in \[0, 1\]"):
        nn.BatchNorm(momentum=momentum)


def test_what_needs_running_statistics_refuses_a_layer_without_them(tmp_path):
    from lamina.export.onnx import export_onnx
    from lamina.train.test_time_adaptation import adapt_batchnorm

    model = nn.Sequential(nn.Conv2D(3, 3), nn.BatchNorm(track_running_stats=False))
    x = lamina.tensor(np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32))
    model(x)
    message = r"{}: .*BatchNorm.* has track_running_stats=False: .* no running statistics"
    for who, call in [("export_onnx", lambda: export_onnx(model, tmp_path / "m.onnx", (6, 6, 2))),
                      ("fuse_conv_bn", lambda: nn.fuse_conv_bn(model)),
                      ("adapt_batchnorm", lambda: adapt_batchnorm(model, x)),
                      ("evaluation_affine", lambda: model[1].evaluation_affine(np.float32))]:
        with pytest.raises(ValueError, match=message.format(who)):
            call()
    assert not (tmp_path / "m.onnx").exists()
