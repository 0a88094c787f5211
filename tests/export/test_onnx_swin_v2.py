"""ONNX export of the Swin Transformer V2 (its blocks alone, padded and shifted windows, a
small network and swin_v2_t at a small input size): ONNX Runtime gives what lamina gives
(evaluation mode); a subclass of a V2 block is refused by name."""

import math

import numpy as np
import pytest
from test_onnx import _randomize, _roundtrip

from lamina import models, nn
from lamina.export import export_onnx
from lamina.models.swin import MAX_LOGIT_SCALE, PatchMergingV2, ShiftedWindowAttentionV2, SwinTransformerBlockV2

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _images(*shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)


def _ops(graph) -> list[str]:
    return [node.op_type for node in graph.node]


def _clamp_a_temperature(model) -> None:
    """The first head's logit scale above log 100, so that the clamp matters."""
    scale = model.layers[0]._parameters["logit_scale"]
    data = scale.data.copy()
    data[0] = math.log(MAX_LOGIT_SCALE) + 0.5
    scale.data = data


LAYERS = {  # name: (layer factory, one sample's shape, what to change after the weights moved)
    "window_attention": (lambda: ShiftedWindowAttentionV2(8, 2, 0, 2), (4, 6, 8), None),
    "window_attention_shifted": (lambda: ShiftedWindowAttentionV2(8, 3, 1, 2), (6, 6, 8), None),
    "window_attention_shifted_padded": (lambda: ShiftedWindowAttentionV2(8, (3, 2), (1, 1), 4), (7, 5, 8), None),
    "window_attention_shift_skipped_on_one_axis": (lambda: ShiftedWindowAttentionV2(4, 3, 1, 1), (6, 3, 4), None),
    "window_attention_no_qkv_bias": (lambda: ShiftedWindowAttentionV2(8, 2, 1, 2, qkv_bias=False), (4, 4, 8),
                                     None),
    "window_attention_clamped_temperature": (lambda: ShiftedWindowAttentionV2(8, 2, 1, 2), (4, 4, 8),
                                             _clamp_a_temperature),
    "block_shifted": (lambda: SwinTransformerBlockV2(8, 2, 2, 1, mlp_ratio=2.0), (4, 4, 8), None),
    "block_padded": (lambda: SwinTransformerBlockV2(8, 2, 3, 0, mlp_ratio=2.0), (5, 4, 8), None),
    "patch_merging": (lambda: PatchMergingV2(4), (4, 6, 4), None),
    "patch_merging_odd": (lambda: PatchMergingV2(4), (5, 3, 4), None),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_swin_v2_layers_export(name, tmp_path):
    make, shape, adjust = LAYERS[name]
    model = nn.Sequential(make())
    model.build((1, *shape))
    _randomize(model)
    if adjust is not None:
        adjust(model)
    graph = _roundtrip(model, _images(*shape), tmp_path, input_shape=shape)
    ops = _ops(graph)
    if "attention" in name or "block" in name:
        assert "ReduceSum" in ops and "Softmax" in ops
        assert "Sigmoid" not in ops and "Relu" not in ops        # the bias MLP is a constant table


def test_a_small_swin_v2_with_padded_and_shifted_windows_exports(tmp_path):
    model = models.swin_v2(8, (2, 2), (2, 4), window_size=3, patch_size=2, num_classes=3, input_shape=(14, 10, 3))
    model.build((1, 14, 10, 3))
    _randomize(model)
    graph = _roundtrip(model, _images(14, 10, 3), tmp_path, rtol=1e-4)
    assert "Pad" in _ops(graph)


def test_swin_v2_t_exports_at_a_small_input_size(tmp_path):
    model = models.swin_v2_t(num_classes=10, input_shape=(32, 32, 3))
    model.build((1, 32, 32, 3))
    _randomize(model)
    _roundtrip(model, _images(32, 32, 3), tmp_path, rtol=1e-4)


class _OtherSwinV2Block(SwinTransformerBlockV2):
    """A block that computes something else from the same sub-layers."""

    def forward(self, x):
        return self.attn(self.norm1(x))


def test_a_subclass_of_a_v2_block_is_refused_by_name(tmp_path):
    model = nn.Sequential(_OtherSwinV2Block(8, 2, 2, name="other"))
    model.build((1, 4, 4, 8))
    with pytest.raises(NotImplementedError, match="_OtherSwinV2Block 'other' .* has no ONNX converter"):
        export_onnx(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
