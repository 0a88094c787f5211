"""SpatialTransformer: the identity at the start, PyTorch's localization -> affine_grid ->
grid_sample in outputs and input and weight gradients, a gradient check, learning to undo a
translation of digits, shape inference, config and save/load, user localization networks and
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.nn.spatial_transformer import IDENTITY_THETA, SpatialTransformer
from lamina.train import Trainer

TF = torch.nn.functional


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _move_off_identity(layer, seed=1, scale=0.1):
    """Random small weights in the last Dense: theta then depends on the input and is no longer
    the identity (whose sampling points sit exactly on the pixel centres, the kernel's kinks)."""
    rng = np.random.default_rng(seed)
    last = layer.localization[-1]
    last.weight.data = (scale * rng.standard_normal(last.weight.shape)).astype(last.weight.dtype)
    last.bias.data = (np.asarray(IDENTITY_THETA) + scale * rng.standard_normal(6)).astype(last.bias.dtype)


class _TorchSTN(torch.nn.Module):
    """The default localization network (on features flattened in NHWC order, as lamina's
    Flatten) feeding affine_grid and grid_sample."""

    def __init__(self, n_in, out_hw, mode, padding_mode, align_corners):
        super().__init__()
        self.hidden, self.theta = torch.nn.Linear(n_in, 32), torch.nn.Linear(32, 6)
        self.out_hw, self.options = out_hw, {"mode": mode, "padding_mode": padding_mode,
                                             "align_corners": align_corners}

    def forward(self, x):  # NCHW
        features = x.permute(0, 2, 3, 1).flatten(1)
        theta = self.theta(torch.relu(self.hidden(features))).view(-1, 2, 3)
        n, c, h, w = x.shape
        grid = TF.affine_grid(theta, (n, c, *(self.out_hw or (h, w))), align_corners=self.options["align_corners"])
        return TF.grid_sample(x, grid, **self.options)


@pytest.mark.parametrize("align_corners", [False, True])
def test_starts_as_the_identity(align_corners):
    layer = SpatialTransformer(align_corners=align_corners)
    x = _x((3, 7, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), x, atol=1e-5)
    last = layer.localization[-1]
    np.testing.assert_array_equal(last.weight.numpy(), 0.0)
    np.testing.assert_array_equal(last.bias.numpy(), [1, 0, 0, 0, 1, 0])


def test_identity_on_a_larger_output_is_bilinear_upsampling(f64):
    """Half-pixel centres and border padding: the identity onto a 2x grid is upsample2d's bilinear."""
    x = _x((2, 4, 5, 3))
    layer = SpatialTransformer(output_size=(8, 10), padding_mode="border")
    np.testing.assert_allclose(layer(x).numpy(), F.upsample2d(lamina.tensor(x), 2, "bilinear").numpy(), atol=1e-12)


@pytest.mark.parametrize("out_hw, mode, padding_mode, align_corners", [
    (None, "bilinear", "zeros", False), ((5, 3), "bilinear", "reflection", True), ((6, 8), "bilinear", "border", False),
    (None, "nearest", "zeros", True)])
def test_matches_torch(f64, out_hw, mode, padding_mode, align_corners):
    x = _x((3, 6, 5, 2))
    layer = SpatialTransformer(output_size=out_hw, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    layer.build(x.shape)
    layer.built = True
    _move_off_identity(layer, scale=0.2)
    reference = _TorchSTN(6 * 5 * 2, out_hw, mode, padding_mode, align_corners)
    pairs = [("localization.dense.weight", reference.hidden.weight, (1, 0)),
             ("localization.dense.bias", reference.hidden.bias, None),
             ("localization.dense_1.weight", reference.theta.weight, (1, 0)),
             ("localization.dense_1.bias", reference.theta.bias, None)]
    out, _ = compare_layer(layer, reference, x, pairs)
    assert out.shape == (3, *(out_hw or (6, 5)), 2)


def test_gradcheck(f64):
    layer = SpatialTransformer(output_size=(4, 3), padding_mode="reflection")
    x = _x((2, 4, 4, 1), 2)
    layer(x)
    _move_off_identity(layer, seed=3)
    assert gradcheck_layer(layer, x)


def test_learns_to_undo_a_translation_of_digits():
    """Digits drawn 2 rows lower and 1 column further right than in the targets: the layer
    learns theta's translation (t_x, t_y) = (1, 2) pixels of a 12-pixel image in half-widths."""
    digits, _ = lamina.data.load_digits(size=8)
    digits = digits[:512].astype(np.float32) / 255.0
    target = np.zeros((len(digits), 12, 12, 1), np.float32)
    target[:, 2:10, 2:10] = digits
    shifted = np.zeros_like(target)
    shifted[:, 4:12, 3:11] = digits
    lamina.manual_seed(0)
    model = nn.Sequential(SpatialTransformer())

    def loss():
        with lamina.no_grad():
            return float(F.mean_squared_error(model(shifted), target).numpy())

    before = loss()
    Trainer(model, "mse", optim.Adam(model.parameters(), lr=0.01), verbose=0).fit((shifted, target), epochs=10,
                                                                                 batch_size=64, seed=0)
    assert loss() < before / 5
    with lamina.no_grad():
        theta = model[0].localization(shifted).numpy().mean(axis=0).reshape(2, 3)
    np.testing.assert_allclose(theta, [[1, 0, 2 / 12], [0, 1, 4 / 12]], atol=0.04)


def test_output_shape_inference_and_summary():
    layer = SpatialTransformer(output_size=(4, 5))
    assert layer.compute_output_shape((None, 8, 8, 3)) == (None, 4, 5, 3)
    assert SpatialTransformer().compute_output_shape((2, 8, 6, 1)) == (2, 8, 6, 1)
    model = nn.Sequential(SpatialTransformer(output_size=(6, 6)), nn.Conv2D(2, 3), nn.Flatten(), nn.Dense(3))
    assert model.compute_output_shape((None, 9, 7, 1)) == (None, 3)
    table = summary(model, (9, 7, 1))
    assert table.layers[-1]["output_shape"] == [3]
    assert sum(row["params"] for row in table.layers) == (63 * 32 + 32) + (32 * 6 + 6) + (9 * 2 + 2) + (32 * 3 + 3)
    y = model(_x((2, 9, 7, 1)).astype(np.float32))
    assert y.shape == (2, 3)


def test_config_round_trip_and_save_load(tmp_path):
    layer = SpatialTransformer(output_size=(6, 5), mode="Nearest", padding_mode="border", align_corners=True,
                               name="stn")
    config = nn.layer_to_config(layer)
    again = nn.layer_from_config(config)
    assert type(again) is SpatialTransformer and again.get_config() == layer.get_config()
    assert {k: v for k, v in layer.get_config().items() if k != "localization"} == {
        "output_size": [6, 5], "mode": "nearest", "padding_mode": "border", "align_corners": True,
        "identity_init": True, "name": "stn"}
    x = _x((2, 6, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(again(x).numpy(), x, atol=1e-6)        # rebuilt: the identity again
    assert repr(layer).startswith("SpatialTransformer(output_size=(6, 5), mode='nearest', padding_mode='border', "
                                  "align_corners=True")

    model = nn.Sequential(SpatialTransformer(padding_mode="reflection"), nn.Conv2D(2, 3, padding="same"))
    model(x)
    _move_off_identity(model[0], scale=0.3)
    before = model(x).numpy()
    lamina.save(model, tmp_path / "stn.lamina")
    loaded = lamina.load(tmp_path / "stn.lamina")
    assert isinstance(loaded[0], SpatialTransformer) and loaded[0].padding_mode == "reflection"
    np.testing.assert_array_equal(loaded(x).numpy(), before)


class _FixedZoom(nn.Module):
    """An unregistered localization: the same zoom-in by 2 about the centre for every image."""

    def forward(self, x):
        return lamina.tensor(np.tile([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], (x.shape[0], 1, 1)))


def test_user_localization_networks():
    x = np.arange(16.0, dtype=np.float32).reshape(1, 4, 4, 1)
    layer = SpatialTransformer(_FixedZoom(), align_corners=True, name="zoom")
    assert layer.identity_init is False
    # the centre half of the image, corners aligned: source pixels 0.75, 1.25, 1.75, 2.25 per axis
    axis = np.array([0.75, 1.25, 1.75, 2.25])
    np.testing.assert_allclose(layer(x).numpy()[0, :, :, 0], 4 * axis[:, None] + axis[None, :], atol=1e-6)
    with pytest.raises(ValueError, match=r"SpatialTransformer 'zoom'.get_config: the localization network "
                                         r"_FixedZoom cannot describe its architecture.*register_layer"):
        nn.layer_to_config(layer)

    # a registered network of the user's: identity_init=True sets its last Dense when the layer builds it
    chosen = nn.Sequential(nn.Flatten(), nn.Dense(8, activation="tanh"), nn.Dense(6))
    layer = SpatialTransformer(chosen, identity_init=True)
    x = _x((2, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), x, atol=1e-5)
    assert nn.layer_from_config(nn.layer_to_config(layer)).get_config() == layer.get_config()

    # a network built before is left as it is
    built = nn.Sequential(nn.Flatten(), nn.Dense(6))
    built(x)
    weights = built[-1].weight.numpy().copy()
    SpatialTransformer(built, identity_init=True)(x)
    np.testing.assert_array_equal(built[-1].weight.numpy(), weights)


def test_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"SpatialTransformer: mode must be one of \['bilinear', 'nearest'\], "
                                         r"got 'bicubic'"):
        SpatialTransformer(mode="bicubic")
    with pytest.raises(ValueError, match=r"SpatialTransformer: padding_mode must be one of .*got 'wrap'"):
        SpatialTransformer(padding_mode="wrap")
    with pytest.raises(ValueError, match=r"SpatialTransformer: output_size must be None or a pair of positive "
                                         r"ints \(H_o, W_o\), got \(0, 4\)"):
        SpatialTransformer(output_size=(0, 4))
    with pytest.raises(TypeError, match="SpatialTransformer: expected the localization network as a layer"):
        SpatialTransformer(localization=lambda x: x)
    with pytest.raises(ValueError, match=r"identity_init needs a localization network whose last Dense layer has "
                                         r"6 units \(theta\), found a last Dense layer with 4 units"):
        SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Dense(4)), identity_init=True)
    with pytest.raises(ValueError, match="found no Dense layer"):
        SpatialTransformer(_FixedZoom(), identity_init=True)

    layer = SpatialTransformer(name="stn")
    with pytest.raises(lamina.ShapeError, match=r"SpatialTransformer 'stn'.*\(5, 5, 3\).*4-D NHWC"):
        layer(np.zeros((5, 5, 3), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"SpatialTransformer 'stn'.*\(5, 3\).*4-D NHWC"):
        layer.compute_output_shape((5, 3))
    wrong = SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Dense(5)), name="bad")
    with pytest.raises(lamina.ShapeError, match=r"SpatialTransformer 'bad'.*maps an input shape \(None, 4, 4, 1\) "
                                                r"to \(None, 5\); expected theta of shape \(batch, 6\)"):
        wrong.compute_output_shape((None, 4, 4, 1))
    with pytest.raises(lamina.ShapeError, match=r"SpatialTransformer 'bad'.*turned an input of shape \(2, 4, 4, 1\) "
                                                r"into \(2, 5\); expected theta of shape \(2, 6\) or \(2, 2, 3\)"):
        wrong(np.zeros((2, 4, 4, 1), dtype=np.float32))
