"""ONNX export of the group-equivariant layers (p4 / p4m convolutions, group pooling and batch
norm) and P4CNN, the deformable convolution (ONNX's DeformConv, opset 19), Conv-TasNet with its
gLN / cLN norms, minGRU / minLSTM (a Scan), differential and multi-head latent attention and the
Hyena operator: ONNX Runtime gives lamina's evaluation outputs for two batch sizes (and other
sequence lengths) and the export leaves the weights as they were. What has no ONNX form (a
DeformConv2D below opset 19, a lone TemporalConvBlock, a caching latent attention) is refused,
named."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from onnx_checks import check_export, perturb

import lamina
from lamina import models, nn
from lamina.export import export_onnx
from lamina.export.onnx_new_layers import DEFORM_CONV_OPSET
from lamina.models.conv_tasnet import ChannelwiseLayerNorm, ConvTasNet, GlobalLayerNorm, TemporalConvBlock

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


_check = check_export
_perturb = perturb


def _train_statistics(model: nn.Module, input_shape) -> nn.Module:
    """Running statistics away from (0, 1): two training-mode passes over shifted random inputs."""
    rng = np.random.default_rng(7)
    model.train()
    for _ in range(2):
        model(lamina.tensor((2.0 * rng.standard_normal((4, *input_shape)) + 0.5).astype(np.float32)))
    return model


# -- group-equivariant layers ------------------------------------------------------------------
@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("stride, padding", [(1, "same"), (2, "valid"), (1, 1)])
def test_group_convolutions_export(group, stride, padding, tmp_path):
    lamina.manual_seed(0)
    lifting, group_conv = (nn.P4ConvZ2, nn.P4ConvP4) if group == "p4" else (nn.P4MConvZ2, nn.P4MConvP4M)
    model = nn.Sequential(lifting(3, 3, stride=stride, padding=padding),
                          group_conv(2, 3, padding=padding, use_bias=False))
    model.build((None, 7, 7, 2))
    _check(_perturb(model), tmp_path, (7, 7, 2), f"{group} convolutions, stride {stride}, padding {padding}")


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_group_pool_and_group_batch_norm_export(reduction, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.P4MConvZ2(3, 3), nn.GroupBatchNorm(), nn.ReLU(), nn.GroupPool(reduction), nn.Dense(2))
    model.build((None, 6, 6, 2))
    _train_statistics(_perturb(model), (6, 6, 2))
    _check(model, tmp_path, (6, 6, 2), f"GroupBatchNorm, GroupPool {reduction}")


@pytest.mark.parametrize("group, reduction", [("p4", "max"), ("p4m", "mean")])
def test_a_p4cnn_exports(group, reduction, tmp_path):
    lamina.manual_seed(0)
    model = models.p4cnn(num_classes=3, channels=(3, 4), group=group, reduction=reduction)
    model.build((None, 8, 8, 1))
    _train_statistics(_perturb(model, 0.1), (8, 8, 1))
    _check(model, tmp_path, (8, 8, 1), f"P4CNN {group}", rtol=1e-4)


# -- deformable convolution --------------------------------------------------------------------
@pytest.mark.parametrize("modulated, offset_groups, stride, padding, dilation", [
    (True, 1, 1, 1, 1), (False, 2, 2, 0, 1), (True, 2, 1, (1, 0), 2)])
def test_deform_conv2d_exports_with_opset_19(modulated, offset_groups, stride, padding, dilation, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.DeformConv2D(3, 3, stride=stride, padding=padding, dilation=dilation,
                                          offset_groups=offset_groups, modulated=modulated, activation="relu"))
    model.build((None, 7, 6, 4))
    _check(_perturb(model, 0.2), tmp_path, (7, 6, 4), f"DeformConv2D modulated={modulated}", rtol=1e-4,
           opset=DEFORM_CONV_OPSET)


def test_deform_conv2d_below_opset_19_is_refused(tmp_path):
    model = nn.Sequential(nn.DeformConv2D(2, 3, name="deform"))
    model.build((None, 5, 5, 1))
    with pytest.raises(NotImplementedError, match="deform.*DeformConv2D.*opset 19.*opset 17"):
        export_onnx(model, tmp_path / "model.onnx")


# -- Conv-TasNet -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [GlobalLayerNorm, ChannelwiseLayerNorm])
def test_the_tasnet_norms_export(norm_type, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(4), norm_type(4))
    model.build((None, 5, 3))
    _check(_perturb(model), tmp_path, (5, 3), norm_type.__name__)


@pytest.mark.parametrize("norm, causal, mask_activation, length", [("gLN", False, "sigmoid", 37),
                                                                   ("cLN", True, "relu", 40)])
def test_a_conv_tasnet_exports(norm, causal, mask_activation, length, tmp_path):
    lamina.manual_seed(0)
    model = ConvTasNet(N=8, L=4, B=4, H=6, P=3, X=2, R=2, num_sources=2, norm=norm, causal=causal,
                       mask_activation=mask_activation)
    _check(_perturb(model, 0.2), tmp_path, (length,), f"ConvTasNet {norm}", rtol=1e-4)


def test_the_reductions_export_at_opset_18(tmp_path):
    """From opset 18 ReduceMean reads its axes as an input: P4CNN's pixel mean, gLN and RMSNorm."""
    lamina.manual_seed(0)
    p4 = models.p4cnn(num_classes=2, channels=(2,), reduction="mean")
    p4.build((None, 6, 6, 1))
    _check(_train_statistics(p4, (6, 6, 1)), tmp_path, (6, 6, 1), "P4CNN at opset 18", rtol=1e-4, opset=18)
    tasnet = ConvTasNet(N=4, L=4, B=4, H=4, P=3, X=1, R=1)
    _check(_perturb(tasnet, 0.2), tmp_path, (21,), "ConvTasNet at opset 18", rtol=1e-4, opset=18)
    attention = nn.Sequential(nn.DifferentialAttention(8, 2))
    attention.build((None, 4, 8))
    _check(attention, tmp_path, (4, 8), "DifferentialAttention at opset 18", rtol=1e-4, opset=18)


def test_a_temporal_conv_block_alone_is_refused(tmp_path):
    model = nn.Sequential(TemporalConvBlock(4, 6, 3, name="tcn"))
    model.build((None, 5, 4))
    with pytest.raises(NotImplementedError, match="tcn.*two tensors"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(5, 4))


# -- sequence layers ---------------------------------------------------------------------------
@pytest.mark.parametrize("layer_type", [nn.MinGRU, nn.MinLSTM])
@pytest.mark.parametrize("mode", ["parallel", "log"])
def test_minimal_recurrent_layers_export_as_a_scan(layer_type, mode, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(layer_type(3, 5, mode=mode), nn.Dense(2))
    model(lamina.tensor(np.zeros((1, 6, 3), dtype=np.float32)))
    _check(model, tmp_path, (6, 3), f"{layer_type.__name__} {mode}", rtol=1e-4, lengths=(1, 9))


@pytest.mark.parametrize("causal, rotary", [(True, False), (False, True), (True, True)])
def test_differential_attention_exports(causal, rotary, tmp_path):
    lamina.manual_seed(0)
    layer = nn.DifferentialAttention(8, 2, layer_index=2, causal=causal, rotary=rotary)
    _perturb(layer, 0.1)
    model = nn.Sequential(layer)
    model.build((None, 5, 8))
    _check(model, tmp_path, (5, 8), f"DifferentialAttention causal={causal} rotary={rotary}", rtol=1e-4,
           lengths=(2, 7))


@pytest.mark.parametrize("q_lora_rank", [None, 6])
def test_multi_head_latent_attention_exports(q_lora_rank, tmp_path):
    lamina.manual_seed(0)
    layer = nn.MultiHeadLatentAttention(8, 2, kv_lora_rank=4, q_lora_rank=q_lora_rank, qk_rope_head_dim=4)
    model = nn.Sequential(_perturb(layer, 0.1))
    model.build((None, 5, 8))
    _check(model, tmp_path, (5, 8), f"MultiHeadLatentAttention q_lora_rank={q_lora_rank}", rtol=1e-4,
           lengths=(1, 8))


def test_a_caching_latent_attention_is_refused(tmp_path):
    layer = nn.MultiHeadLatentAttention(8, 2, kv_lora_rank=4, name="mla")
    model = nn.Sequential(layer)
    model.build((None, 5, 8))
    model.eval()
    layer.start_caching()
    with pytest.raises(NotImplementedError, match="mla.*caching.*stop_caching"):
        export_onnx(model, tmp_path / "model.onnx")


@pytest.mark.parametrize("order, modulate", [(2, True), (3, False)])
def test_the_hyena_operator_exports(order, modulate, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.HyenaOperator(4, l_max=12, order=order, filter_order=8, emb_dim=5, modulate=modulate))
    model.build((None, 7, 4))
    _check(model, tmp_path, (7, 4), f"HyenaOperator order {order}", rtol=1e-4, lengths=(1, 12))


def test_the_readme_example_runs(tmp_path, capsys):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exporting group convolutions, Conv-TasNet and the new sequence layers to ONNX", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0].replace("/tmp/", f"{tmp_path}/")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["True", "True"]
