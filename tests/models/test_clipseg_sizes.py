"""CLIPSeg at other image sizes than its CLIP's: the image tower's position embeddings
interpolated to the new grid of patches (class row kept) against a float64 torch rewrite with
``torch.nn.functional.interpolate`` (values and the table's gradient), unchanged at the CLIP's
own grid, the tower's own outputs there, masks at new square and non-square sizes, a loaded
model at a new size, and the errors for sides that are not multiples of the patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import models
from lamina.autograd import no_grad
from lamina.models import clip_position_embedding

IDS = np.array([[3], [9]])


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _tiny(**options) -> models.CLIPSeg:
    """On models.clip('tiny'): 16 x 16 images, patches of 4 (a 4 x 4 grid), width 32."""
    sizes = {"extract_layers": (0, 1), "reduce_dim": 8, "num_heads": 2, "intermediate_size": 16}
    return models.CLIPSeg(models.clip("tiny"), **{**sizes, **options})


def _images(n=2, h=16, w=16, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


def _vision(seed=0):
    """A tiny CLIP's image tower, built, with a random position table (so no two rows are alike)."""
    vision = models.clip("tiny").vision_model
    vision.build()
    table = vision.position_embedding.weight
    table.data = np.random.default_rng(seed).standard_normal(table.shape).astype(table.dtype)
    return vision


def _torch_positions(table, grid, mode):
    """The class row, then the 4 x 4 grid of rows (row-major) resized by torch (NCHW)."""
    e = table.shape[1]
    cells = table[1:].reshape(1, 4, 4, e).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(cells, size=grid, mode=mode, align_corners=False)
    return torch.cat([table[:1], resized.permute(0, 2, 3, 1).reshape(-1, e)])[None]


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_at_the_clip_grid_the_embedding_is_the_trained_one(mode):
    vision = _vision()
    positions = clip_position_embedding(vision, (4, 4), mode=mode).numpy()
    np.testing.assert_array_equal(positions, vision.position_embedding.weight.numpy()[None])


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("grid", [(6, 6), (3, 5), (9, 2)])
def test_interpolated_embedding_and_gradient_match_torch(float64, mode, grid):
    vision = _vision()
    weight = vision.position_embedding.weight
    upstream = np.random.default_rng(1).standard_normal((1, 1 + grid[0] * grid[1], 32))
    positions = clip_position_embedding(vision, grid, mode=mode)
    (positions * upstream).sum().backward()
    table = torch.tensor(weight.numpy(), dtype=torch.float64, requires_grad=True)
    expected = _torch_positions(table, grid, mode)
    (expected * torch.from_numpy(upstream)).sum().backward()
    assert positions.dtype == np.float64 and positions.shape == (1, 1 + grid[0] * grid[1], 32)
    np.testing.assert_allclose(positions.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(positions.numpy()[0, 0], weight.numpy()[0])      # the class row is kept
    np.testing.assert_allclose(weight.grad, table.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_at_the_clip_size_the_activations_are_the_towers():
    model = _tiny(extract_layers=(0,))
    images = _images()
    activations = model.image_activations(images)
    found = []
    layer = model.clip.vision_model.layers[0]
    handle = layer.register_forward_hook(lambda module, inputs, output: found.append(output.numpy()))
    with no_grad():
        model.clip.vision_model(images)
    handle.remove()
    np.testing.assert_array_equal(activations[0].numpy(), found[0])


@pytest.mark.parametrize("complex_head", [False, True])
def test_masks_at_other_sizes(complex_head):
    model = _tiny(complex_head=complex_head)
    with no_grad():
        assert model(_images(h=24, w=24), IDS).shape == (2, 24, 24)        # 6 x 6 patches
        assert model(_images(h=16, w=28), IDS).shape == (2, 16, 28)        # 4 x 7, not square
        assert model(_images(h=8, w=8), IDS).shape == (2, 8, 8)            # fewer patches than trained
    assert [a.shape for a in model.image_activations(_images(3, 12, 20))] == [(3, 16, 32), (3, 16, 32)]
    masks = models.clipseg_segment(model, _images(1, 20, 32)[0], np.array([[3], [9], [4]]), threshold=None)
    with no_grad():
        one = model(_images(1, 20, 32), np.array([[9]])).numpy()[0]
    assert masks.shape == (3, 20, 32)
    np.testing.assert_allclose(masks[1], 1 / (1 + np.exp(-one)), rtol=1e-5, atol=1e-6)


def test_a_loaded_model_segments_other_sizes_alike(tmp_path):
    model = _tiny()
    model(_images(), IDS)
    lamina.save(model, tmp_path / "clipseg.safetensors")
    twin = lamina.load(tmp_path / "clipseg.safetensors")
    with no_grad():
        np.testing.assert_array_equal(twin(_images(h=24, w=20), IDS).numpy(), model(_images(h=24, w=20), IDS).numpy())


def test_errors_name_the_sizes():
    model = _tiny()
    with pytest.raises(lamina.ShapeError, match=r"CLIPSeg: expected NHWC images \(batch, H, W, 3\) with H and W "
                                                r"multiples of the patch size 4 .*got shape \(2, 18, 18, 3\)"):
        model(_images(h=18, w=18), IDS)
    with pytest.raises(lamina.ShapeError, match=r"got shape \(2, 16, 16, 1\)"):
        model.image_activations(_images()[..., :1])
    with pytest.raises(lamina.ShapeError, match=r"1 \+ 2 \* 2, a class token and the grid \(2, 2\), 32\), got "
                                                r"\[\(1, 7, 32\)"):
        model.decoder([np.zeros((1, 7, 32), np.float32)] * 2, np.zeros((1, 16), np.float32), grid=(2, 2))
    vision = _vision()
    with pytest.raises(ValueError, match="clip_position_embedding: mode must be 'bicubic' or 'bilinear'"):
        clip_position_embedding(vision, 5, mode="nearest")
    with pytest.raises(ValueError, match=r"positive sides, got \(0, 3\)"):
        clip_position_embedding(vision, (0, 3))
    with pytest.raises(TypeError, match="expected a CLIPVisionTransformer"):
        clip_position_embedding(model, 5)
