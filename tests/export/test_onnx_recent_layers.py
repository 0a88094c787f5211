"""ONNX export of ScaledStdConv2D, SelfAttention2D, NoisyDense, the Linformer and Nystromformer
attentions and CaiT's LayerScale, talking-heads and class attention and blocks: ONNX Runtime gives
lamina's evaluation outputs for two batch sizes (alone and chained in one model), the export
leaves the weights as they were, and the forms that cannot be written are refused with the
layer named."""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pytest
from onnx_checks import check_export

import lamina
from lamina import models, nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

_check = functools.partial(check_export, build=True, perturb_seed=7)



@pytest.mark.parametrize("options", [dict(), dict(stride=2, padding=1, groups=2, gamma=1.7, eps=1e-5),
                                     dict(padding="same", use_bias=False, activation="relu", dilation=2)])
def test_scaled_std_conv2d_exports(options, tmp_path):
    _check(nn.Sequential(nn.ScaledStdConv2D(4, 3, **options)), tmp_path, (7, 6, 2), f"ScaledStdConv2D {options}")


@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_self_attention2d_exports(pooled, spectral_norm, tmp_path):
    model = nn.Sequential(nn.SelfAttention2D(8, reduction=4, pooled=pooled, spectral_norm=spectral_norm))
    _check(model, tmp_path, (4, 6, 8), f"SelfAttention2D pooled={pooled} spectral_norm={spectral_norm}")


@pytest.mark.parametrize("factorised", [True, False])
def test_noisy_dense_exports_its_mean_weights(factorised, tmp_path):
    model = nn.Sequential(nn.NoisyDense(5, factorised=factorised, activation="tanh"), nn.NoisyDense(3))
    _check(model, tmp_path, (4,), f"NoisyDense factorised={factorised}")


def test_noisy_dense_on_sequences_exports(tmp_path):
    _check(nn.Sequential(nn.NoisyDense(3)), tmp_path, (5, 4), "NoisyDense on sequences")


def test_a_noisy_dense_in_training_mode_is_refused(tmp_path):
    model = nn.Sequential(nn.NoisyDense(3, name="explorer"))
    model(lamina.tensor(np.zeros((1, 4), dtype=np.float32)))
    model.train()
    with pytest.raises(NotImplementedError, match="explorer.*training mode.*eval"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(4,))


@pytest.mark.parametrize("sharing", ["none", "key-value"])
def test_linformer_attention_exports(sharing, tmp_path):
    model = nn.Sequential(nn.LinformerAttention(8, max_seq_len=9, proj_dim=3, num_heads=2, sharing=sharing))
    _check(model, tmp_path, (6, 8), f"Linformer sharing={sharing}")


def test_a_linformer_sequence_longer_than_max_seq_len_is_refused(tmp_path):
    model = nn.Sequential(nn.LinformerAttention(4, max_seq_len=5, proj_dim=2, name="linformer"))
    model.build((None, 5, 4))
    with pytest.raises(NotImplementedError, match="linformer.*max_seq_len 5"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(6, 4))


@pytest.mark.parametrize("conv_kernel_size", [None, 3, 4])
def test_nystrom_attention_exports(conv_kernel_size, tmp_path):
    model = nn.Sequential(nn.NystromAttention(8, num_heads=2, num_landmarks=3, pinv_iterations=4,
                                              conv_kernel_size=conv_kernel_size))
    _check(model, tmp_path, (9, 8), f"Nystrom conv_kernel_size={conv_kernel_size}", rtol=1e-4)


def test_a_nystrom_length_not_divided_by_the_landmarks_is_refused(tmp_path):
    model = nn.Sequential(nn.NystromAttention(4, num_landmarks=3, conv_kernel_size=None, name="nystrom"))
    model.build((None, 6, 4))
    with pytest.raises(NotImplementedError, match="nystrom.*num_landmarks 3"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(7, 4))


def test_cait_layer_scale_and_attentions_export(tmp_path):
    for layer, what in ((models.LayerScale(8, 0.1), "LayerScale"),
                        (models.TalkingHeadsAttention(8, 2), "TalkingHeadsAttention"),
                        (models.TalkingHeadsAttention(8, 4, qkv_bias=False), "TalkingHeadsAttention no bias"),
                        (models.ClassAttention(8, 2), "ClassAttention")):
        _check(nn.Sequential(layer), tmp_path, (5, 8), what)


def test_cait_blocks_export(tmp_path):
    model = nn.Sequential(models.CaiTBlock(8, 2, mlp_ratio=1.5, layer_scale_init=0.1, stochastic_depth_prob=0.2),
                          models.ClassAttentionBlock(8, 2, mlp_ratio=2.0, layer_scale_init=0.1))
    _check(model, tmp_path, (5, 8), "CaiT blocks")


def test_a_model_chaining_the_layers_exports(tmp_path):
    """Conv stem, SAGAN attention, the map as tokens, Nystromformer, Linformer, talking heads,
    LayerScale, class attention and a noisy classifier."""
    model = nn.Sequential(
        nn.ScaledStdConv2D(8, 3, padding=1, gamma=1.7, activation="relu"),
        nn.SelfAttention2D(8, reduction=2),
        nn.Reshape((16, 8)),
        nn.NystromAttention(8, num_heads=2, num_landmarks=4, conv_kernel_size=3),
        nn.LinformerAttention(8, max_seq_len=20, proj_dim=4, num_heads=2),
        models.TalkingHeadsAttention(8, 2),
        models.LayerScale(8, 0.5),
        models.ClassAttention(8, 2),
        nn.Flatten(),
        nn.NoisyDense(3),
    )
    _check(model, tmp_path, (4, 4, 2), "chained model", rtol=1e-4)


def test_the_readme_example_runs(tmp_path, capsys):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exporting CaiT blocks, Nystromformer and SAGAN attention to ONNX", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0].replace("/tmp/", f"{tmp_path}/")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["True"]
