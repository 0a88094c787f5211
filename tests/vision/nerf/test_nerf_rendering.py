"""Volume rendering: values and gradients against a PyTorch re-implementation of the original
code's raw2outputs, a float64 gradient check, an opaque sample's colour, weights summing to the
opacity, the white background, the raw-output activations and the errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, positive
from lamina.errors import ShapeError
from lamina.vision.nerf import raw_to_outputs, volume_render

RAYS, SAMPLES = 4, 6


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    sigma = positive(RAYS, SAMPLES, seed=seed, low=0.05, high=3.0)
    colors = rng.uniform(0.0, 1.0, (RAYS, SAMPLES, 3))
    z_vals = np.sort(rng.uniform(2.0, 6.0, (RAYS, SAMPLES)), axis=-1)
    rays_d = rng.standard_normal((RAYS, 3))
    return sigma, colors, z_vals, rays_d


def _torch_render(sigma, colors, z_vals, rays_d, white_background=False):
    dists = z_vals[..., 1:] - z_vals[..., :-1]
    dists = torch.cat([dists, torch.full_like(dists[..., :1], 1e10)], -1)
    dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
    alpha = 1.0 - torch.exp(-sigma * dists)
    ones = torch.ones((alpha.shape[0], 1), dtype=alpha.dtype)
    weights = alpha * torch.cumprod(torch.cat([ones, 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    rgb = torch.sum(weights[..., None] * colors, -2)
    depth = torch.sum(weights * z_vals, -1)
    opacity = torch.sum(weights, -1)
    disparity = 1.0 / torch.max(torch.full_like(depth, 1e-10), depth / opacity)
    if white_background:
        rgb = rgb + (1.0 - opacity[..., None])
    return rgb, depth, disparity, opacity, weights


@pytest.mark.parametrize("white_background", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_volume_rendering_matches_torch(dtype, white_background):
    compare_with_torch(lambda *a: list(volume_render(*a, white_background=white_background)),
                       lambda *a: list(_torch_render(*a, white_background=white_background)),
                       *_inputs(), dtype=dtype, grad=[True, True, False, False])


def test_volume_rendering_keeps_float64():
    out = volume_render(*_inputs())
    assert all(value.dtype == np.float64 for value in out)


def test_volume_rendering_gradcheck():
    _, _, z_vals, rays_d = _inputs(1)
    sigma, colors = positive(RAYS, SAMPLES, seed=2, low=0.05, high=2.0), positive(RAYS, SAMPLES, 3, seed=3)

    def rendered(s, c):
        out = volume_render(s, c, z_vals, rays_d, white_background=True)
        return lamina.functional.concat([out.rgb.reshape(-1), out.depth, out.disparity, out.opacity], axis=0)

    assert check_gradients(rendered, sigma, colors)


def test_a_single_opaque_sample_gives_its_colour_and_depth():
    sigma, colors, z_vals, rays_d = _inputs(4)
    sigma = np.zeros_like(sigma)
    opaque = [1, 3, 0, 5]
    sigma[np.arange(RAYS), opaque] = 1e4
    out = volume_render(sigma, colors, z_vals, rays_d)
    np.testing.assert_allclose(out.rgb.numpy(), colors[np.arange(RAYS), opaque], atol=1e-6)
    np.testing.assert_allclose(out.depth.numpy(), z_vals[np.arange(RAYS), opaque], rtol=1e-6)
    np.testing.assert_allclose(out.opacity.numpy(), 1.0, atol=1e-6)


def test_weights_sum_to_the_opacity_which_stays_at_most_one():
    sigma, colors, z_vals, rays_d = _inputs(5)
    sigma[:, -1] = 0.0                    # else the last, infinitely long step makes every ray opaque
    sigma[0] = 0.0
    out = volume_render(sigma, colors, z_vals, rays_d)
    weights = out.weights.numpy()
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), out.opacity.numpy(), rtol=1e-12)
    assert (out.opacity.numpy() <= 1.0).all() and 0.0 < out.opacity.numpy()[1:].min()
    assert out.opacity.numpy()[0] == 0.0 and np.isfinite(out.disparity.numpy()).all()


def test_empty_space_shows_the_background():
    sigma, colors, z_vals, rays_d = _inputs(6)
    sigma[:] = 0.0
    np.testing.assert_array_equal(volume_render(sigma, colors, z_vals, rays_d).rgb.numpy(), 0.0)
    np.testing.assert_array_equal(volume_render(sigma, colors, z_vals, rays_d, white_background=True).rgb.numpy(), 1.0)


def test_raw_outputs_are_activated_then_rendered():
    _, _, z_vals, rays_d = _inputs(7)
    raw = np.random.default_rng(7).standard_normal((RAYS, SAMPLES, 4))
    ours = raw_to_outputs(raw, z_vals, rays_d)
    sigmoid = 1.0 / (1.0 + np.exp(-raw[..., :3]))
    expected = volume_render(np.maximum(raw[..., 3], 0.0), sigmoid, z_vals, rays_d)
    np.testing.assert_allclose(ours.rgb.numpy(), expected.rgb.numpy(), rtol=1e-12)
    noisy = [raw_to_outputs(raw, z_vals, rays_d, raw_noise_std=1.0, rng=3).depth.numpy() for _ in range(2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.allclose(noisy[0], ours.depth.numpy())


def test_bad_rendering_inputs_are_refused():
    sigma, colors, z_vals, rays_d = _inputs()
    with pytest.raises(ShapeError, match=r"volume_render: expected colors of shape \(4, 6, 3\)"):
        volume_render(sigma, colors[:, :-1], z_vals, rays_d)
    with pytest.raises(ShapeError, match=r"volume_render: expected ray directions of shape \(4, 3\)"):
        volume_render(sigma, colors, z_vals, rays_d[:2])
    with pytest.raises(ValueError, match="volume_render: sample depths z_vals must increase"):
        volume_render(sigma, colors, z_vals[:, ::-1], rays_d)
    with pytest.raises(ShapeError, match=r"raw_to_outputs: expected raw network outputs of shape"):
        raw_to_outputs(np.zeros((4, 6, 3)), z_vals, rays_d)
