"""ONNX export of the volumetric layers, Upsample, instance normalization and Unfold/Fold:
ONNX Runtime gives what lamina gives (evaluation mode)."""

import numpy as np
import pytest
from test_onnx import _images, _randomize, _roundtrip

from lamina import nn
from lamina.errors import ShapeError
from lamina.export import export_onnx


def _volumes(n=2, d=5, h=6, w=7, c=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d, h, w, c)).astype(np.float32)


def _sequences(n=3, steps=11, c=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, steps, c)).astype(np.float32)


def _exports_alike(layer, x, tmp_path):
    """``layer`` in a Sequential built for x's shape, its weights moved off their initial
    values, exported and run in ONNX Runtime against lamina; returns the ONNX graph."""
    model = nn.Sequential(layer)
    model.build(x.shape)
    _randomize(model)
    return _roundtrip(model, x, tmp_path, input_shape=x.shape[1:])


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.node]


VOLUMETRIC = {
    "conv_valid": lambda: nn.Conv3D(4, 3),
    "conv_same_stride2_even_kernel": lambda: nn.Conv3D(5, (2, 4, 3), stride=2, padding="same", activation="relu"),
    "conv_explicit_padding": lambda: nn.Conv3D(3, (3, 1, 2), stride=(1, 2, 1), padding=(1, 0, 2)),
    "conv_dilated_same": lambda: nn.Conv3D(3, 3, dilation=(1, 2, 2), padding="same", activation="tanh"),
    "conv_grouped_softmax": lambda: nn.Conv3D(6, 3, groups=2, activation="softmax"),
    "conv_depthwise_no_bias": lambda: nn.Conv3D(8, (1, 3, 3), groups=4, use_bias=False),
    "max_pool_overlapping_padded": lambda: nn.MaxPool3D(3, stride=2, padding=1),
    "avg_pool_padded": lambda: nn.AvgPool3D((2, 3, 3), stride=(1, 2, 2), padding=1),
    "avg_pool_default": lambda: nn.AvgPool3D(2),
    "global_avg_pool": lambda: nn.GlobalAvgPool3D(),
    "conv_then_flatten": lambda: nn.Sequential(nn.Conv3D(2, 1), nn.Flatten(), nn.Dense(3)),
    "stack": lambda: nn.Sequential(nn.Conv3D(4, 3, padding="same", activation="gelu"), nn.MaxPool3D(2),
                                   nn.Conv3D(6, (1, 2, 2)), nn.AvgPool3D((1, 2, 2)), nn.GlobalAvgPool3D(),
                                   nn.Dense(3)),
}


@pytest.mark.parametrize("name", sorted(VOLUMETRIC))
def test_volumetric_layers_export(name, tmp_path):
    _exports_alike(VOLUMETRIC[name](), _volumes(), tmp_path)


def test_a_volumetric_stack_keeps_ndhwc_between_its_layers(tmp_path):
    graph = _exports_alike(VOLUMETRIC["stack"](), _volumes(), tmp_path)
    ops = _ops(graph)
    assert ops.count("Conv") == 2 and ops.count("MaxPool") == 1 and ops.count("AveragePool") == 1
    # a Transpose to NCDHW and one back around each of the four windowed layers, and one in
    # for the global pool, whose (N, C) output needs none back
    assert ops.count("Transpose") == 2 * 4 + 1


UPSAMPLE = {
    "nearest_scale_2": lambda: nn.Upsample(scale_factor=2),
    "nearest_size": lambda: nn.Upsample(size=(11, 4)),
    "nearest_exact_scale_1_7": lambda: nn.Upsample(scale_factor=1.7, mode="nearest-exact"),
    "nearest_exact_size": lambda: nn.Upsample(size=(5, 13), mode="nearest-exact"),
    "bilinear_scales": lambda: nn.Upsample(scale_factor=(2.5, 0.5), mode="bilinear"),
    "bilinear_size_align_corners": lambda: nn.Upsample(size=(11, 4), mode="bilinear", align_corners=True),
    "bilinear_downscale": lambda: nn.Upsample(size=(3, 2), mode="bilinear"),
    "bicubic_scale": lambda: nn.Upsample(scale_factor=1.5, mode="bicubic"),
    "bicubic_size_align_corners": lambda: nn.Upsample(size=(9, 13), mode="bicubic", align_corners=True),
    "area_pools": lambda: nn.Upsample(size=(3, 2), mode="area"),
    "area_scale_half": lambda: nn.Upsample(scale_factor=0.5, mode="area"),
    "area_repeats": lambda: nn.Upsample(size=(12, 16), mode="area"),
    "area_pools_and_repeats": lambda: nn.Upsample(size=(2, 24), mode="area"),
    "bilinear_between_convs": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.Upsample(scale_factor=2, mode="bilinear"),
                                                    nn.Conv2D(2, 3)),
    "nearest_exact_between_convs": lambda: nn.Sequential(nn.Conv2D(3, 1),
                                                         nn.Upsample(size=(9, 8), mode="nearest-exact"),
                                                         nn.Conv2D(2, 3)),
    "area_after_conv": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.Upsample(size=(3, 16), mode="area")),
}


@pytest.mark.parametrize("name", sorted(UPSAMPLE))
def test_upsample_exports(name, tmp_path):
    _exports_alike(UPSAMPLE[name](), _images(2, 6, 8, 3), tmp_path)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
def test_scale_factors_whose_float32_products_round_across_an_integer_keep_lamina_s_sizes(mode, tmp_path):
    # lamina takes floor(n s) in float64: 90 x 1.3 -> 117 rows and 90 x 0.7 -> 62 columns,
    # where float32 arithmetic gives 116.99999 and 63.0
    assert np.floor(np.float32(90) * np.float32(1.3)) == 116 and np.floor(np.float32(90) * np.float32(0.7)) == 63
    # lamina's source pixels at the boundaries i r = k are kept too (nearest modes); after a
    # convolution, as ONNX Runtime's layout optimizer rejects a shrinking cubic Resize that
    # is the model's first node (it moves the input's Transpose past it)
    model = nn.Sequential(nn.Conv2D(2, 1), nn.Upsample(scale_factor=(1.3, 0.7), mode=mode))
    _exports_alike(model, _images(2, 90, 90, 2), tmp_path)


def test_area_resizing_of_sizes_that_do_not_divide_is_named_and_nothing_is_written(tmp_path):
    model = nn.Sequential(nn.Upsample(size=(4, 5), mode="area", name="shrink"))
    model.build((None, 6, 8, 3))
    target = tmp_path / "model.onnx"
    with pytest.raises(NotImplementedError, match=r"Upsample 'shrink' in mode 'area' resizes \(6, 8\) to \(4, 5\)"):
        export_onnx(model, target)
    assert not target.exists()


def _with_running_stats(model, seed=3):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if getattr(m, "track_running_stats", False):
            m.running_mean = 0.5 * rng.standard_normal(m.running_mean.shape).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2.0, m.running_var.shape).astype(np.float32)
    return model


INSTANCE_NORMS_2D = {
    "plain": lambda: nn.InstanceNorm2D(),
    "affine": lambda: nn.InstanceNorm2D(affine=True, eps=1e-3),
    "after_conv": lambda: nn.Sequential(nn.Conv2D(4, 3), nn.InstanceNorm2D(affine=True), nn.ReLU()),
    "running_stats": lambda: nn.InstanceNorm2D(track_running_stats=True),
    "running_stats_affine_after_conv": lambda: nn.Sequential(nn.Conv2D(4, 1),
                                                             nn.InstanceNorm2D(affine=True, track_running_stats=True)),
}


@pytest.mark.parametrize("name", sorted(INSTANCE_NORMS_2D))
def test_instance_norm_2d_exports(name, tmp_path):
    x = _images(3, 5, 4, 3)
    model = nn.Sequential(INSTANCE_NORMS_2D[name]())
    model.build(x.shape)
    _randomize(_with_running_stats(model))
    _roundtrip(model, 2 * x + 1, tmp_path, input_shape=x.shape[1:])


INSTANCE_NORMS_1D = {
    "plain": lambda: nn.InstanceNorm1D(),
    "affine": lambda: nn.InstanceNorm1D(affine=True),
    "after_conv1d": lambda: nn.Sequential(nn.Conv1D(5, 3), nn.InstanceNorm1D(affine=True)),
    "running_stats_affine": lambda: nn.InstanceNorm1D(affine=True, track_running_stats=True, eps=1e-3),
}


@pytest.mark.parametrize("name", sorted(INSTANCE_NORMS_1D))
def test_instance_norm_1d_exports(name, tmp_path):
    x = _sequences()
    model = nn.Sequential(INSTANCE_NORMS_1D[name]())
    model.build(x.shape)
    _randomize(_with_running_stats(model))
    _roundtrip(model, 2 * x + 1, tmp_path, input_shape=x.shape[1:])


@pytest.mark.parametrize("track, op, other", [(False, "InstanceNormalization", "BatchNormalization"),
                                              (True, "BatchNormalization", "InstanceNormalization")])
def test_instance_norm_uses_the_running_statistics_only_when_it_tracks_them(track, op, other, tmp_path):
    x = _images(3, 5, 4, 3)
    model = nn.Sequential(nn.InstanceNorm2D(track_running_stats=track))
    model.build(x.shape)
    ops = _ops(_roundtrip(_with_running_stats(model), x, tmp_path))
    assert op in ops and other not in ops


WINDOWS = {
    "unfold": lambda: nn.Unfold(3),
    "unfold_strided_dilated_padded": lambda: nn.Unfold((2, 3), dilation=(2, 1), padding=1, stride=(2, 1)),
    "unfold_then_dense": lambda: nn.Sequential(nn.Unfold(2, stride=2), nn.Dense(5)),
    "fold_of_unfold": lambda: nn.Sequential(nn.Unfold(3, padding=1), nn.Fold((7, 6), 3, padding=1)),
    "fold_leaves_a_border": lambda: nn.Sequential(nn.Unfold(2, stride=2), nn.Fold((7, 6), 2, stride=2)),
    "fold_dilated_strided": lambda: nn.Sequential(nn.Unfold((2, 3), dilation=(2, 1), padding=(1, 0), stride=(2, 1)),
                                                  nn.Fold((7, 6), (2, 3), dilation=(2, 1), padding=(1, 0),
                                                          stride=(2, 1))),
    "dense_on_the_windows_then_fold": lambda: nn.Sequential(nn.Unfold(3, padding=1), nn.Dense(18),
                                                            nn.Fold((7, 6), 3, padding=1), nn.Conv2D(2, 1)),
}


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_unfold_and_fold_export(name, tmp_path):
    _exports_alike(WINDOWS[name](), _images(2, 7, 6, 3), tmp_path)


def test_fold_of_rows_that_are_not_its_windows_is_a_shape_error(tmp_path):
    model = nn.Sequential(nn.Unfold(2), nn.Fold((7, 6), 3, name="refold"))
    model.build((None, 7, 6, 3))
    with pytest.raises(ShapeError, match=r"Fold 'refold' expects rows \(batch, 20, f_h f_w C\) .* got a value of "
                                         r"shape \(1, 30, 12\)"):
        export_onnx(model, tmp_path / "model.onnx")


def test_max_unpool_has_no_converter_and_is_named(tmp_path):
    model = nn.Sequential(nn.Conv2D(2, 1), nn.MaxUnpool2D(2, name="unpool"))
    model.build((None, 4, 4, 3))
    with pytest.raises(NotImplementedError, match="MaxUnpool2D 'unpool' has no ONNX converter"):
        export_onnx(model, tmp_path / "model.onnx")
