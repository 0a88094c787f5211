"""nn.Rearrange and nn.Reduce: forward and gradients against torch, config round trip, use
inside Sequential with summary shapes, a ViT patch embedding, and ONNX export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.models.vit import VisionTransformer
from lamina.nn import layer_from_config, layer_to_config


def test_rearrange_layer_matches_torch():
    layer = nn.Rearrange("b (h p) (w q) c -> b (h w) (p q c)", p=2, q=2)
    compare_with_torch(layer, lambda x: x.reshape(2, 2, 2, 3, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 6, 12),
                       randn(2, 4, 6, 3))
    assert check_gradients(layer, randn(2, 4, 6, 3))


@pytest.mark.parametrize("reduction, torch_fn", [
    ("max", lambda x: x.reshape(2, 2, 2, 3, 2, 3).amax(dim=(2, 4))),
    ("mean", lambda x: x.reshape(2, 2, 2, 3, 2, 3).mean(dim=(2, 4))),
    ("sum", lambda x: x.reshape(2, 2, 2, 3, 2, 3).sum(dim=(2, 4))),
])
def test_reduce_layer_pools_as_torch(reduction, torch_fn):
    layer = nn.Reduce("b (h 2) (w 2) c -> b h w c", reduction)
    compare_with_torch(layer, torch_fn, randn(2, 4, 6, 3))
    assert check_gradients(layer, randn(2, 4, 6, 3, seed=3))


@pytest.mark.parametrize("make", [
    lambda: nn.Rearrange("b (h p) w c -> b h (p w c)", p=2, name="tokens"),
    lambda: nn.Reduce("b h w c -> b c", "max"),
    lambda: nn.Reduce("b h (w k) c -> b h w c", reduction="sum", k=2),
])
def test_config_round_trip(make):
    layer = make()
    config = json.loads(json.dumps(layer_to_config(layer)))
    rebuilt = layer_from_config(config)
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    x = lamina.tensor(randn(2, 4, 6, 3))
    np.testing.assert_array_equal(rebuilt(x).numpy(), layer(x).numpy())


def test_in_sequential_with_summary_shapes_and_a_saved_architecture():
    model = nn.Sequential(nn.Rearrange("b (h p) (w q) c -> b (h w) (p q c)", p=2, q=2), nn.Dense(5),
                          nn.Reduce("b n d -> b d", "mean"), nn.Dense(3))
    x = lamina.tensor(randn(4, 4, 6, 3))
    out = model(x)
    assert out.shape == (4, 3)
    assert model[0].compute_output_shape((None, 4, 6, 3)) == (None, 6, 12)
    assert model[2].compute_output_shape((None, 6, 5)) == (None, 5)
    rows = model.summary((4, 6, 3)).rows
    assert [tuple(r["output_shape"]) for r in rows][:3] == [(6, 12), (6, 5), (5,)]
    rebuilt = layer_from_config(layer_to_config(model))
    rebuilt.build((None, 4, 6, 3))
    rebuilt.load_state_dict(model.state_dict())
    np.testing.assert_allclose(rebuilt(x).numpy(), out.numpy(), rtol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_vit_patch_embedding_with_rearrange_equals_the_convolution():
    vit = VisionTransformer(patch_size=2, num_classes=3, d_model=8, depth=1, num_heads=2, mlp_dim=8)
    images = lamina.tensor(randn(2, 4, 6, 3))
    vit(images)
    theirs = vit.flatten_patches(vit.conv_proj(images))
    dense = nn.Dense(8)
    ours = nn.Sequential(nn.Rearrange("b (h p) (w q) c -> b (h w) (p q c)", p=2, q=2), dense)
    ours.build((None, 4, 6, 3))
    kernel = vit.conv_proj.weight.data                         # (K, p, p, c_in)
    dense.weight.data[...] = kernel.reshape(kernel.shape[0], -1).T
    dense.bias.data[...] = vit.conv_proj.bias.data
    assert_close(ours(images).numpy(), theirs.numpy(), rtol=1e-5)


def test_bad_patterns_fail_when_the_layer_is_made():
    with pytest.raises(ShapeError, match=r"Rearrange|rearrange\('b h w c -> b q'\)"):
        nn.Rearrange("b h w c -> b q")
    with pytest.raises(ShapeError, match=r"length is given for the axis 'z'"):
        nn.Reduce("b h w c -> b c", "mean", z=2)
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        nn.Reduce("b h w c -> b c", "any")
    with pytest.raises(ShapeError, match=r"shape \(2, 5, 6, 3\).*cannot be split"):
        nn.Reduce("b (h 2) w c -> b h w c", "max")(lamina.tensor(randn(2, 5, 6, 3)))


def test_onnx_round_trip(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from lamina.export import export_onnx

    model = nn.Sequential(nn.Conv2D(4, 3, padding="same"),
                          nn.Rearrange("b (h p) (w q) c -> b (h w) (p q c)", p=2, q=2), nn.Dense(6),
                          nn.Reduce("b n d -> b d 1", "max"), nn.Rearrange("b d o -> (b o) d"),
                          nn.Rearrange("b (d k) -> b k d", k=2), nn.Reduce("b k d -> b d", "mean"))
    x = randn(3, 4, 6, 3).astype(np.float32)
    model.eval()
    with lamina.no_grad():
        expected = model(lamina.tensor(x)).numpy()
    for opset in (17, 18):
        path = export_onnx(model, tmp_path / f"model{opset}.onnx", input_shape=(4, 6, 3), opset=opset)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"input": x})
        assert_close(got, expected, rtol=2e-5)
    (got_one,) = session.run(None, {"input": x[:1]})            # the batch axis stays free
    assert_close(got_one, expected[:1], rtol=2e-5)


def test_onnx_round_trip_with_the_batch_axis_merged(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from lamina.export import export_onnx

    model = nn.Sequential(nn.Rearrange("b h w c -> (b h) w c"), nn.Dense(5),
                          nn.Rearrange("(b h) w c -> b (h w c)", h=4), nn.Dense(3))
    model.build((None, 4, 6, 3))
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=(4, 6, 3))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = randn(n, 4, 6, 3, seed=n).astype(np.float32)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        assert_close(session.run(None, {"input": x})[0], expected, rtol=2e-5)


def test_max_shares_the_gradient_among_ties_as_torch_amax():
    x = np.array([[[[1.0], [2.0]], [[2.0], [0.5]]]])
    compare_with_torch(nn.Reduce("b h w c -> b c", "max"), lambda t: t.amax(dim=(1, 2)), x)
