"""ONNX export of the attention options (rotary positions, grouped-query heads, ALiBi, the
sliding window, LoRA adapters), the mixture of experts, MnasNet's and EfficientNetV2's blocks
and the Swin Transformer (v1): ONNX Runtime gives what lamina gives (evaluation mode); what
still has no ONNX form is refused by name."""

import numpy as np
import pytest
from test_onnx import _randomize as _randomize_weights
from test_onnx import _roundtrip as _image_roundtrip
from test_onnx_sequence import BUILT_LENGTH, _ids, _sequences
from test_onnx_sequence import _randomize as _randomize_sequence_model
from test_onnx_sequence import _roundtrip as _sequence_roundtrip

import lamina
from lamina import models, nn
from lamina.export import export_onnx
from lamina.models.efficientnet import FusedMBConv
from lamina.models.mnasnet import MnasNetBlock
from lamina.models.swin import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _ops(graph) -> list[str]:
    return [node.op_type for node in graph.node]


def _images(*shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)


def _exports_alike(layer, shape, tmp_path, rtol=2e-5):
    """``layer`` (in a Sequential) built for a batch of ``shape``, weights moved off their
    initial values, exported and run in ONNX Runtime against lamina; returns the graph."""
    model = layer if isinstance(layer, nn.Sequential) else nn.Sequential(layer)
    model.build((1, *shape))
    _randomize_weights(model)
    return _image_roundtrip(model, _images(*shape), tmp_path, rtol=rtol, input_shape=shape)


# -- attention options ----------------------------------------------------------------------------
def _language_model(**options):
    sizes = {"d_model": 16, "num_heads": 4, "num_layers": 2, "dim_feedforward": 32, **options}
    return lambda: models.transformer_language_model(20, **sizes)


LANGUAGE_MODELS = {  # name: (model factory, an operator only that option writes)
    "rotary": (_language_model(positional="rotary"), "Cos"),
    "alibi": (_language_model(positional="alibi"), "Abs"),
    "grouped_query": (_language_model(num_kv_heads=2), "Expand"),
    "multi_query": (_language_model(num_kv_heads=1), "Expand"),
    "sliding_window": (_language_model(window=2), "And"),
    "rotary_grouped_window": (_language_model(positional="rotary", num_kv_heads=2, window=3), "Sin"),
    "alibi_three_heads_multi_query_window": (_language_model(positional="alibi", d_model=12, num_heads=3,
                                                             num_kv_heads=1, window=2), "Abs"),
}


@pytest.mark.parametrize("name", sorted(LANGUAGE_MODELS))
def test_language_model_options_export_for_any_length(name, tmp_path):
    make, operator = LANGUAGE_MODELS[name]
    lamina.manual_seed(0)
    model = make()
    model.build((None, BUILT_LENGTH))
    _randomize_sequence_model(model)
    graph = _sequence_roundtrip(model, _ids(20), tmp_path, rtol=1e-4)
    assert operator in _ops(graph)


ATTENTION = {
    "rotary": lambda: nn.MultiHeadAttention(8, 2, rotary=True, rotary_base=100.0),
    "alibi_grouped": lambda: nn.MultiHeadAttention(8, 4, alibi=True, num_kv_heads=2),
    "rotary_alibi_multi_query_no_bias": lambda: nn.MultiHeadAttention(8, 2, rotary=True, alibi=True, num_kv_heads=1,
                                                                      use_bias=False),
    "encoder_post_norm_window_grouped": lambda: nn.TransformerEncoderLayer(8, 4, 16, causal=True, window=3,
                                                                           num_kv_heads=2),
}


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_options_without_the_causal_mask_export(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(ATTENTION[name]())
    model.build((None, BUILT_LENGTH, 8))
    _randomize_sequence_model(model)
    _sequence_roundtrip(model, _sequences(8), tmp_path)


def test_a_sliding_window_outside_a_causal_layer_is_refused(tmp_path):
    model = nn.Sequential(nn.MultiHeadAttention(8, 2, window=2, name="windowed"))
    model.build((None, BUILT_LENGTH, 8))
    with pytest.raises(ValueError, match="'windowed' has a sliding window .* causal"):
        export_onnx(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def _nonzero_adapters(model, seed=3):
    """The LoRA adapters' B moved off zero, so that the adapters change the outputs."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, nn.LoRAAdapter):
            module.B.data = rng.standard_normal(module.B.shape).astype(np.float32)


def test_attention_lora_adapters_are_folded_into_the_projections(tmp_path):
    lamina.manual_seed(0)
    model = _language_model(positional="rotary", num_kv_heads=2)()
    model.build((None, BUILT_LENGTH))
    _randomize_sequence_model(model)
    nn.apply_lora(model, r=2, alpha=4.0, target=nn.MultiHeadAttention, attention_parts=("q", "k", "v"))
    _nonzero_adapters(model)
    first = next(m for m in model.modules() if isinstance(m, nn.MultiHeadAttention))
    first.lora_k.merged = True          # as if merged: its term must then not be added again
    with lamina.no_grad():
        first.in_weight.data[:, first.projection_columns(1)] += first.lora_k.delta_weight()
    _sequence_roundtrip(model, _ids(20), tmp_path, rtol=1e-4)


def test_lora_in_a_functional_model_exports(tmp_path):
    lamina.manual_seed(0)
    dense = nn.Dense(8, activation="tanh")
    dense.build((None, BUILT_LENGTH, 8))
    inputs = nn.Input((BUILT_LENGTH, 8))
    hidden = nn.MultiHeadAttention(8, 2)(nn.LoRADense(dense, r=2, alpha=4.0)(inputs))
    model = nn.Model(inputs, nn.Dense(3)(nn.Add()([hidden, inputs])))
    nn.apply_lora(model, r=2, target=nn.MultiHeadAttention)
    _randomize_sequence_model(model)
    _nonzero_adapters(model)
    x = _sequences(8)(BUILT_LENGTH, 0)
    _image_roundtrip(model, x, tmp_path, rtol=1e-4)


# -- mixture of experts -----------------------------------------------------------------------------
EXPERTS = {  # name: (layer factory, one sample's shape)
    "top2_sequences": (lambda: nn.MixtureOfExperts(4, 8, name="experts"), (5, 6)),
    "top1_rows_relu": (lambda: nn.MixtureOfExperts(3, 5, top_k=1, activation="relu"), (6,)),
    "top3_capacity_never_reached": (lambda: nn.MixtureOfExperts(4, 6, top_k=3, capacity_factor=4.0), (5, 6)),
}


@pytest.mark.parametrize("name", sorted(EXPERTS))
def test_mixture_of_experts_exports_its_top_k_gating(name, tmp_path):
    layer, shape = EXPERTS[name]
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(6), layer())
    model.build((1, *shape))
    _randomize_sequence_model(model)
    for p in model.parameters():            # a router with clear preferences: tokens disagree on experts
        p.data = (p.data * 3).astype(p.data.dtype)
    graph = _image_roundtrip(model, _images(*shape), tmp_path, rtol=1e-4, input_shape=shape)
    assert {"TopK", "ScatterElements"} <= set(_ops(graph))


# -- MnasNet and EfficientNetV2 -----------------------------------------------------------------------
BLOCKS = {  # name: (block factory, one sample's shape)
    "mnasnet_block_shortcut": (lambda: MnasNetBlock(8, 8, 3, 1, 3), (5, 5, 8)),
    "mnasnet_block_stride2": (lambda: MnasNetBlock(8, 12, 5, 2, 6), (6, 5, 8)),
    "fused_mbconv_shortcut": (lambda: FusedMBConv(8, 8, 3, 1, 4, stochastic_depth_prob=0.3), (5, 5, 8)),
    "fused_mbconv_stride2": (lambda: FusedMBConv(8, 16, 3, 2, 4), (6, 5, 8)),
    "fused_mbconv_no_expansion": (lambda: FusedMBConv(8, 8, 3, 1, 1), (5, 4, 8)),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_mnasnet_and_fused_mbconv_blocks_export(name, tmp_path):
    block, shape = BLOCKS[name]
    graph = _exports_alike(block(), shape, tmp_path)
    assert _ops(graph).count("Add") == (1 if block().use_shortcut else 0)


MODELS = {
    "mnasnet0_5": lambda: models.mnasnet0_5(num_classes=10, input_shape=(32, 32, 3)),
    "efficientnet_v2_s": lambda: models.efficientnet_v2_s(num_classes=10, input_shape=(32, 32, 3)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mnasnet_and_efficientnet_v2_export(name, tmp_path):
    model = MODELS[name]()
    model.build((1, 32, 32, 3))
    _randomize_weights(model)
    _image_roundtrip(model, _images(32, 32, 3), tmp_path, rtol=1e-4)


# -- Swin Transformer -----------------------------------------------------------------------------------
SWIN_LAYERS = {  # name: (layer factory, one sample's shape)
    "window_attention": (lambda: ShiftedWindowAttention(8, 2, 0, 2), (4, 6, 8)),
    "window_attention_shifted": (lambda: ShiftedWindowAttention(8, 3, 1, 2), (6, 6, 8)),
    "window_attention_shifted_padded": (lambda: ShiftedWindowAttention(8, (3, 2), (1, 1), 4), (7, 5, 8)),
    "window_attention_shift_skipped_on_one_axis": (lambda: ShiftedWindowAttention(4, 3, 1, 1), (6, 3, 4)),
    "block_shifted": (lambda: SwinTransformerBlock(8, 2, 2, 1, mlp_ratio=2.0), (4, 4, 8)),
    "patch_merging": (lambda: PatchMerging(4), (4, 6, 4)),
    "patch_merging_odd": (lambda: PatchMerging(4), (5, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(SWIN_LAYERS))
def test_swin_layers_export(name, tmp_path):
    layer, shape = SWIN_LAYERS[name]
    _exports_alike(layer(), shape, tmp_path)


def test_a_small_swin_with_padded_and_shifted_windows_exports(tmp_path):
    model = models.swin(8, (2, 2), (2, 4), window_size=3, patch_size=2, num_classes=3, input_shape=(14, 10, 3))
    model.build((1, 14, 10, 3))
    _randomize_weights(model)
    graph = _image_roundtrip(model, _images(14, 10, 3), tmp_path, rtol=1e-4)
    assert "Pad" in _ops(graph)


def test_swin_t_exports_at_a_small_input_size(tmp_path):
    model = models.swin_t(num_classes=10, input_shape=(32, 32, 3))
    model.build((1, 32, 32, 3))
    _randomize_weights(model)
    _image_roundtrip(model, _images(32, 32, 3), tmp_path, rtol=1e-4)


# -- what still has no ONNX form ---------------------------------------------------------------------
class _OtherSwinBlock(SwinTransformerBlock):
    """A block that computes something else from the same sub-layers (another Swin version)."""

    def forward(self, x):
        return self.norm1(self.attn(x))


REFUSED = {  # name: (layer factory, one sample's shape, what the message says)
    "max_unpool": (lambda: nn.MaxUnpool2D(2, name="unpool"), (4, 4, 2), "MaxUnpool2D 'unpool' has no ONNX converter"),
    "experts_over_capacity": (lambda: nn.MixtureOfExperts(4, 8, capacity_factor=1.25, name="experts"), (5, 6),
                              "MixtureOfExperts 'experts' has capacity_factor=1.25"),
    "swin_block_subclass": (lambda: _OtherSwinBlock(8, 2, 2, name="other"), (4, 4, 8),
                            "_OtherSwinBlock 'other' .* has no ONNX converter"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_has_no_onnx_form_is_refused_by_name(name, tmp_path):
    layer, shape, message = REFUSED[name]
    model = nn.Sequential(layer())
    model.build((1, *shape))
    with pytest.raises(NotImplementedError, match=message):
        export_onnx(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
