"""ONNX export of adaptive pooling (2-D and 1-D), PixelUnshuffle and SpatialTransformer: ONNX
Runtime gives what lamina gives (evaluation mode) to within 1e-5, and, where PyTorch has the
same layer, what PyTorch gives."""

import numpy as np
import pytest
import torch
from test_onnx import _randomize, _roundtrip

import lamina
from helpers import assert_close
from lamina import nn
from lamina.export import export_onnx
from lamina.functional.grid_sample import affine_grid

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5


def _batch(*shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)


def _exports_alike(layer, x, tmp_path):
    """``layer`` in a Sequential built for x's shape, its weights moved off their initial
    values, exported and run in ONNX Runtime against lamina; returns the ONNX graph."""
    model = nn.Sequential(layer)
    model.build(x.shape)
    _randomize(model)
    return _roundtrip(model, x, tmp_path, rtol=TOLERANCE, input_shape=x.shape[1:])


def _run_onnx(layer, x, tmp_path) -> np.ndarray:
    """ONNX Runtime's output of ``layer`` alone, exported for x's shape."""
    model = nn.Sequential(layer)
    model.build(x.shape)
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=x.shape[1:])
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    return got


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.node]


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


# -- adaptive pooling of images ------------------------------------------------------------
ADAPTIVE_2D = {     # name: (layer, input height and width)
    "max_uneven": (lambda: nn.AdaptiveMaxPool2D(3), (7, 5)),
    "max_more_outputs_than_inputs": (lambda: nn.AdaptiveMaxPool2D((9, 2)), (7, 5)),
    "max_keeps_the_height": (lambda: nn.AdaptiveMaxPool2D((None, 3)), (7, 5)),
    "max_divides": (lambda: nn.AdaptiveMaxPool2D((3, 2)), (6, 8)),
    "max_global": (lambda: nn.AdaptiveMaxPool2D(1), (7, 5)),
    "avg_uneven": (lambda: nn.AdaptiveAvgPool2D((3, 2)), (7, 5)),
    "avg_more_outputs_than_inputs": (lambda: nn.AdaptiveAvgPool2D((4, 8)), (7, 5)),
    "avg_uneven_rows_only": (lambda: nn.AdaptiveAvgPool2D((3, None)), (7, 5)),
    "avg_uneven_columns_only": (lambda: nn.AdaptiveAvgPool2D((6, 3)), (6, 5)),
    "avg_divides": (lambda: nn.AdaptiveAvgPool2D((2, 4)), (6, 8)),
    "stack": (lambda: nn.Sequential(nn.Conv2D(4, 3, padding="same"), nn.AdaptiveMaxPool2D(3), nn.Conv2D(5, 1),
                                    nn.AdaptiveAvgPool2D((2, 3)), nn.Flatten(), nn.Dense(5)), (7, 5)),
}


@pytest.mark.parametrize("name", sorted(ADAPTIVE_2D))
def test_adaptive_2d_pools_export(name, tmp_path):
    layer, hw = ADAPTIVE_2D[name]
    _exports_alike(layer(), _batch(*hw, 4), tmp_path)


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("out_hw", [(3, 4), (9, 2)])
def test_adaptive_2d_pools_use_pytorch_s_windows(kind, out_hw, tmp_path):
    x = _batch(7, 5, 3)
    layer = nn.AdaptiveAvgPool2D(out_hw) if kind == "avg" else nn.AdaptiveMaxPool2D(out_hw)
    pool = torch.nn.AdaptiveAvgPool2d(out_hw) if kind == "avg" else torch.nn.AdaptiveMaxPool2d(out_hw)
    assert_close(_run_onnx(layer, x, tmp_path), _nhwc(pool(_nchw(x))), TOLERANCE)


@pytest.mark.parametrize("layer, pool, other", [
    (lambda: nn.AdaptiveMaxPool2D((3, 2)), "MaxPool", "Gather"),
    (lambda: nn.AdaptiveAvgPool2D((3, 2)), "AveragePool", "MatMul"),
], ids=["max", "avg"])
def test_windows_that_divide_the_image_are_one_plain_pool(layer, pool, other, tmp_path):
    ops = _ops(_exports_alike(layer(), _batch(6, 8, 2), tmp_path))
    assert ops.count(pool) == 1 and other not in ops


# -- adaptive pooling of sequences -----------------------------------------------------------
ADAPTIVE_1D = {     # name: (layer, input steps)
    "avg_uneven": (lambda: nn.AdaptiveAvgPool1D(4), 11),
    "avg_more_outputs_than_steps": (lambda: nn.AdaptiveAvgPool1D(5), 3),
    "max_uneven": (lambda: nn.AdaptiveMaxPool1D(4), 11),
    "max_more_outputs_than_steps": (lambda: nn.AdaptiveMaxPool1D(5), 3),
    "max_keeps_the_steps": (lambda: nn.AdaptiveMaxPool1D(None), 6),
    "stack": (lambda: nn.Sequential(nn.Conv1D(4, 3), nn.AdaptiveMaxPool1D(4), nn.Dense(3), nn.AdaptiveAvgPool1D(3),
                                    nn.Flatten(), nn.Dense(5)), 11),
}


@pytest.mark.parametrize("name", sorted(ADAPTIVE_1D))
def test_adaptive_1d_pools_export(name, tmp_path):
    layer, steps = ADAPTIVE_1D[name]
    _exports_alike(layer(), _batch(steps, 4), tmp_path)


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool1D, nn.AdaptiveMaxPool1D])
def test_adaptive_1d_pools_follow_the_sequence_length_at_run_time(pool, tmp_path):
    model = nn.Sequential(nn.Conv1D(4, 3, padding="same"), pool(4))
    model.build((None, 11, 3))
    _randomize(model)
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_param == "time"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, steps in enumerate([11, 6, 17, 2]):
        x = _batch(steps, 3, seed=seed)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        (got,) = session.run(None, {"input": x})
        assert_close(got, expected, TOLERANCE, f"{steps} steps")


# -- pixel unshuffle -------------------------------------------------------------------------
PIXEL_UNSHUFFLE = {     # name: (layer, input shape)
    "factor_2": (lambda: nn.PixelUnshuffle(2), (6, 8, 3)),
    "factor_3": (lambda: nn.PixelUnshuffle(3), (6, 9, 2)),
    "one_channel_after_conv": (lambda: nn.Sequential(nn.Conv2D(1, 1), nn.PixelUnshuffle(2)), (6, 8, 3)),
    "stack": (lambda: nn.Sequential(nn.Conv2D(3, 1), nn.PixelUnshuffle(2), nn.Conv2D(4, 1), nn.Flatten(),
                                    nn.Dense(5)), (6, 8, 3)),
}


@pytest.mark.parametrize("name", sorted(PIXEL_UNSHUFFLE))
def test_pixel_unshuffle_exports(name, tmp_path):
    layer, shape = PIXEL_UNSHUFFLE[name]
    _exports_alike(layer(), _batch(*shape), tmp_path)


def test_pixel_unshuffle_keeps_pytorch_s_channel_order(tmp_path):
    x = _batch(4, 6, 3)
    expected = _nhwc(torch.nn.functional.pixel_unshuffle(_nchw(x), 2))
    assert_close(_run_onnx(nn.PixelUnshuffle(2), x, tmp_path), expected, TOLERANCE)


# -- spatial transformer ---------------------------------------------------------------------
ZOOM_OUT_AND_TURN = np.array([1.3, 0.4, 0.2, -0.3, 1.1, -0.25], dtype=np.float32)
"""theta of a map that reads beyond the image's edges (both axes scaled past 1, shifted)."""


def _transformer(x, **options) -> nn.Sequential:
    """A SpatialTransformer built for x, its localization network's weights moved off their
    initial values and the bias of its last Dense set to :data:`ZOOM_OUT_AND_TURN`."""
    model = nn.Sequential(nn.SpatialTransformer(**options))
    model.build(x.shape)
    _randomize(model)
    model[0].localization[-1].bias.data = ZOOM_OUT_AND_TURN.copy()
    return model.eval()


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_spatial_transformer_exports_in_every_mode(mode, padding_mode, align_corners, tmp_path):
    x = _batch(6, 7, 2)
    model = _transformer(x, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    with lamina.no_grad():
        theta = model[0].localization(lamina.tensor(x)).numpy().reshape(-1, 2, 3)
    grid = affine_grid(theta, (3, 6, 7, 2), align_corners).numpy()
    assert np.abs(grid).max() > 1.2                     # some points fall outside the image: padding counts
    _roundtrip(model, x, tmp_path, rtol=TOLERANCE)


def test_spatial_transformer_matches_pytorch(tmp_path):
    x = _batch(6, 7, 2)
    model = _transformer(x, output_size=(4, 9))
    with lamina.no_grad():
        theta = torch.from_numpy(model[0].localization(lamina.tensor(x)).numpy().reshape(-1, 2, 3))
    grid = torch.nn.functional.affine_grid(theta, (3, 2, 4, 9), align_corners=False)
    expected = _nhwc(torch.nn.functional.grid_sample(_nchw(x), grid, align_corners=False))
    path = export_onnx(model, tmp_path / "model.onnx")
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert_close(got, expected, TOLERANCE)


def _convolutional_localization(theta_shape) -> nn.Sequential:
    last = nn.Dense(6, name="theta")
    layers = [nn.Conv2D(4, 3, activation="relu"), nn.GlobalAvgPool2D(), last]
    return nn.Sequential(*layers, nn.Reshape(theta_shape)) if theta_shape else nn.Sequential(*layers)


@pytest.mark.parametrize("theta_shape", [None, (2, 3)], ids=["theta_6", "theta_2x3"])
def test_spatial_transformer_between_convolutions_with_its_own_localization(theta_shape, tmp_path):
    x = _batch(8, 7, 3)
    transformer = nn.SpatialTransformer(_convolutional_localization(theta_shape), output_size=(5, 6),
                                        identity_init=True)
    model = nn.Sequential(nn.Conv2D(4, 1), transformer, nn.Conv2D(3, 3), nn.Flatten(), nn.Dense(5))
    model.build(x.shape)
    _randomize(model)
    transformer.localization[2].bias.data = ZOOM_OUT_AND_TURN.copy()
    _roundtrip(model, x, tmp_path, rtol=TOLERANCE)


# -- what stays without a converter ----------------------------------------------------------
def test_max_unpool_still_has_no_converter_and_is_named(tmp_path):
    model = nn.Sequential(nn.MaxUnpool2D(2, name="unpool"))
    model.build((None, 4, 4, 3))
    with pytest.raises(NotImplementedError, match="MaxUnpool2D 'unpool' has no ONNX converter"):
        export_onnx(model, tmp_path / "model.onnx")


def test_spatial_transformer_at_opset_20_names_the_mode_linear(tmp_path):
    x = _batch(6, 7, 2)
    model = _transformer(x)
    path = export_onnx(model, tmp_path / "model.onnx", opset=20)
    import onnx

    (node,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "GridSample"]
    assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "mode")) == b"linear"
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with lamina.no_grad():
        expected = model(lamina.tensor(x)).numpy()
    assert_close(got, expected, TOLERANCE)
