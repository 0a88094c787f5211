"""LinformerAttention, NystromAttention and LSHAttention: outputs, input and parameter gradients
against float64 PyTorch multi-head references, finite differences, layerwise sharing of the
Linformer projection, the save/load round trip, the README example and the errors naming the
layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import nn
from lamina.errors import ShapeError
from torch_efficient_attention import depthwise_conv, linformer, lsh, nystrom
from torch_linear_sequence import compare_layer_with_torch, heads, linear, merged


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _qkv(x, params, h, names=("q_proj", "k_proj", "v_proj")):
    return [heads(linear(x, params, name), h) for name in names]


@pytest.mark.parametrize("sharing", ["none", "key-value"])
def test_linformer_layer_matches_torch(f64, sharing):
    layer = nn.LinformerAttention(8, max_seq_len=9, proj_dim=3, num_heads=2, sharing=sharing)

    def reference(x, params):
        e = params["key_projection"]
        f = e if sharing == "key-value" else params["value_projection"]
        return linear(merged(linformer(*_qkv(x, params, 2), e, f)), params, "out_proj")

    compare_layer_with_torch(layer, reference, randn(2, 6, 8))


def test_nystrom_layer_with_its_value_convolution_matches_torch(f64):
    # no biases: the key bias shifts each row of scores by a constant, its gradient is zero up to rounding
    layer = nn.NystromAttention(8, num_heads=2, num_landmarks=3, conv_kernel_size=5, use_bias=False)

    def reference(x, params):
        q, k, v = _qkv(x, params, 2)
        out = nystrom(q, k, v, 3) + depthwise_conv(v, params["conv_kernel"])
        return linear(merged(out), params, "out_proj")

    compare_layer_with_torch(layer, reference, randn(2, 6, 8))


@pytest.mark.parametrize("causal", [False, True])
def test_lsh_layer_matches_torch_with_its_rotations(f64, causal):
    layer = nn.LSHAttention(8, num_heads=2, num_buckets=4, num_hashes=2, chunk_size=2, causal=causal, seed=1)
    rotations = torch.tensor(np.asarray(layer.state_dict()["rotations"]))

    def reference(x, params):
        qk, v = _qkv(x, params, 2, ("qk_proj", "v_proj"))
        n, h, t, d = qk.shape
        out = lsh(qk.reshape(n * h, t, d), v.reshape(n * h, t, d), rotations, 2, causal)
        return linear(merged(out.reshape(n, h, t, d)), params, "out_proj")

    compare_layer_with_torch(layer, reference, randn(2, 8, 8))


def test_gradcheck_of_the_layers(f64):
    for layer in (nn.LinformerAttention(4, 5, proj_dim=2, num_heads=2),
                  nn.NystromAttention(4, 2, num_landmarks=2, conv_kernel_size=3),
                  nn.LSHAttention(4, 2, num_buckets=2, num_hashes=2, chunk_size=2, causal=True, seed=0)):
        layer.build((1, 4, 4))
        assert check_gradients(layer, randn(1, 4, 4))


def test_lsh_redraws_its_rotations():
    layer = nn.LSHAttention(8, num_buckets=4, chunk_size=2, seed=3)
    x = lamina.tensor(randn(1, 8, 8))
    before = layer(x).numpy()
    layer.redraw_rotations(seed=4)
    assert layer.state_dict()["rotations"].shape == (8, 1, 2)
    assert not np.allclose(layer(x).numpy(), before)
    layer.redraw_rotations(seed=3)
    np.testing.assert_array_equal(layer(x).numpy(), before)


def test_layerwise_sharing_uses_one_projection_for_two_layers():
    first, second = (nn.LinformerAttention(4, 6, proj_dim=2, sharing="layerwise") for _ in range(2))
    x = lamina.tensor(randn(1, 6, 4))
    first(x)
    second.share_projection(first)
    assert second.key_projection is first.key_projection
    second(first(x)).sum().backward()
    grad_both = np.array(first.key_projection.grad)
    first.zero_grad()
    second.zero_grad()
    first(x).sum().backward()                               # the first layer alone: a smaller share
    assert not np.allclose(first.key_projection.grad, grad_both)
    with pytest.raises(ValueError, match="share_projection: both layers need sharing='layerwise'"):
        nn.LinformerAttention(4, 6, proj_dim=2).share_projection(first)


@pytest.mark.parametrize("make", [
    lambda: nn.LinformerAttention(4, 8, proj_dim=3, num_heads=2, sharing="key-value"),
    lambda: nn.NystromAttention(4, 2, num_landmarks=2, conv_kernel_size=3),
    lambda: nn.LSHAttention(4, 2, num_buckets=4, num_hashes=2, chunk_size=2, causal=True, seed=5),
])
def test_save_and_load_round_trip(make, tmp_path):
    layer = make()
    x = randn(2, 6, 4).astype(np.float32)
    expected = layer(x).numpy()
    lamina.save(layer, tmp_path / "layer.safetensors")
    twin = lamina.load(tmp_path / "layer.safetensors")
    assert type(twin) is type(layer) and twin.get_config() == layer.get_config()
    np.testing.assert_array_equal(twin(x).numpy(), expected)


def test_readme_example_runs():
    printed, names = run_readme_section("Efficient attention: Linformer, Nystromformer, Reformer")
    assert names["out"].shape == (2, 64, 32)
    assert "LSHAttention" in printed


def test_errors_name_the_layer_and_the_sizes():
    with pytest.raises(ShapeError, match=r"LinformerAttention.*10 steps, more than max_seq_len 8"):
        nn.LinformerAttention(4, 8, proj_dim=2)(randn(1, 10, 4))
    with pytest.raises(ShapeError, match=r"NystromAttention.*num_landmarks 4 must divide the 6 steps"):
        nn.NystromAttention(4, num_landmarks=4)(randn(1, 6, 4))
    with pytest.raises(ShapeError, match=r"LSHAttention.*chunk_size 4 must divide the 6 steps"):
        nn.LSHAttention(4, chunk_size=4)(randn(1, 6, 4))
    with pytest.raises(ValueError, match="LSHAttention: num_buckets must be 1 or even"):
        nn.LSHAttention(4, num_buckets=3)
    with pytest.raises(ValueError, match="LinformerAttention: sharing must be one of"):
        nn.LinformerAttention(4, 8, sharing="headwise")
    with pytest.raises(ShapeError, match=r"NystromAttention.*\(batch, time, 4\)"):
        nn.NystromAttention(4, num_landmarks=1)(randn(2, 4))
