"""NeRF's network against a PyTorch module of the original layout (values and gradients), its
parameter count, the coarse-to-fine renderer (chunking, the fine pass, errors) and learning a
synthetic scene: held-out views well above the mean-colour baseline."""

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import optim
from lamina.errors import ShapeError
from lamina.models import NeRF, NeRFRenderer, TinyNeRF, mse_to_psnr, nerf_train_step
from lamina.parallel import one_blas_thread
from lamina.vision.nerf import encoding_size, get_rays, raw_to_outputs, stratified_samples, synthetic_nerf_scene


class TorchNeRF(torch.nn.Module):
    """The original code's network, written with torch."""

    def __init__(self, D, W, skips, input_ch, input_ch_views, use_viewdirs):
        super().__init__()
        self.input_ch, self.skips, self.use_viewdirs = input_ch, skips, use_viewdirs
        self.pts_linears = torch.nn.ModuleList(
            [torch.nn.Linear(input_ch, W)]
            + [torch.nn.Linear(W + input_ch if i in skips else W, W) for i in range(D - 1)])
        if use_viewdirs:
            self.views_linears = torch.nn.ModuleList([torch.nn.Linear(input_ch_views + W, W // 2)])
            self.feature_linear = torch.nn.Linear(W, W)
            self.alpha_linear = torch.nn.Linear(W, 1)
            self.rgb_linear = torch.nn.Linear(W // 2, 3)
        else:
            self.output_linear = torch.nn.Linear(W, 4)

    def forward(self, x):
        input_pts, input_views = x[:, :self.input_ch], x[:, self.input_ch:]
        h = input_pts
        for i, layer in enumerate(self.pts_linears):
            h = torch.relu(layer(h))
            if i in self.skips:
                h = torch.cat([input_pts, h], -1)
        if not self.use_viewdirs:
            return self.output_linear(h)
        alpha = self.alpha_linear(h)
        h = torch.cat([self.feature_linear(h), input_views], -1)
        h = torch.relu(self.views_linears[0](h))
        return torch.cat([self.rgb_linear(h), alpha], -1)


def _torch_copy(model: NeRF) -> TorchNeRF:
    reference = TorchNeRF(model.D, model.W, model.skips, model.input_ch, model.input_ch_views or 1,
                          model.use_viewdirs).double()
    names = {f"pts_linear{i}": f"pts_linears.{i}" for i in range(model.D)}
    names["views_linear"] = "views_linears.0"
    state = {}
    for name, param in model.named_parameters():
        layer, kind = name.split(".")
        value = torch.tensor(param.numpy(), dtype=torch.float64)
        state[f"{names.get(layer, layer)}.{kind}"] = value.T if kind == "weight" else value
    reference.load_state_dict(state)
    return reference


@pytest.mark.parametrize("use_viewdirs", [True, False])
def test_network_matches_the_original_layout_in_torch(use_viewdirs):
    model = NeRF(D=4, W=16, skips=(1,), input_ch=9, input_ch_views=6, use_viewdirs=use_viewdirs)
    reference = _torch_copy(model)
    x = np.random.default_rng(0).standard_normal((7, model.in_features)).astype(np.float32)
    ours_x = lamina.tensor(x, requires_grad=True)
    theirs_x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ours, theirs = model(ours_x), reference(theirs_x)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-5)
    upstream = np.random.default_rng(1).standard_normal(ours.shape)
    (ours * lamina.tensor(upstream.astype(np.float32))).sum().backward()
    (theirs * torch.tensor(upstream)).sum().backward()
    assert_close(ours_x.grad, theirs_x.grad.numpy(), 1e-5, "input gradient")
    assert_close(model.pts_linear0.weight.grad, reference.pts_linears[0].weight.grad.numpy().T, 1e-5,
                 "first layer's weight gradient")


def test_default_network_has_the_original_parameter_count():
    W, ch, views = 256, 63, 27
    expected = (ch * W + W) + 6 * (W * W + W) + ((W + ch) * W + W) + (W * W + W) + (W + 1) \
        + ((W + views) * (W // 2) + W // 2) + (W // 2 * 3 + 3)
    assert sum(p.size for p in NeRF().parameters()) == expected == 595844
    assert TinyNeRF().input_ch == encoding_size(3, 6) and TinyNeRF().input_ch_views == encoding_size(3, 2)


def test_network_errors_name_the_shapes():
    with pytest.raises(ShapeError, match=r"expected inputs of shape \(N, input_ch \+ input_ch_views\) = "
                                         r"\(N, 39 \+ 15\), got \(2, 40\)"):
        TinyNeRF()(np.zeros((2, 40), dtype=np.float32))
    with pytest.raises(ValueError, match=r"NeRF: every skip must name a layer in 0..D-2"):
        NeRF(D=3, skips=(2,))


def _rays(scene, views):
    pairs = [get_rays(scene.height, scene.width, scene.focal, pose, pixel_centers=True) for pose in views]
    return (np.concatenate([o.reshape(-1, 3) for o, _ in pairs]), np.concatenate([d.reshape(-1, 3) for _, d in pairs]))


def test_evaluation_rendering_is_the_coarse_pipeline_and_chunking_changes_nothing():
    scene = synthetic_nerf_scene(n_views=1, size=4)
    rays_o, rays_d = _rays(scene, scene.poses)
    network = TinyNeRF(W=16)
    whole = NeRFRenderer(network, near=scene.near, far=scene.far, pos_freqs=6, dir_freqs=2, n_samples=8)
    pieces = NeRFRenderer(network, near=scene.near, far=scene.far, pos_freqs=6, dir_freqs=2, n_samples=8,
                          chunk=5, net_chunk=7)
    out = whole.render_rays(rays_o, rays_d)
    # equal to float32 rounding: BLAS may take a different kernel for a chunk's smaller GEMM (measured:
    # 1.5e-6 relative on an AMD EPYC host, 0 on an Intel Xeon)
    np.testing.assert_allclose(pieces.render_rays(rays_o, rays_d)["rgb"].numpy(), out["rgb"].numpy(),
                               rtol=1e-5, atol=1e-7)
    z_vals = stratified_samples(scene.near, scene.far, len(rays_o), 8)
    points = rays_o[:, None] + rays_d[:, None] * z_vals[..., None]
    views = np.broadcast_to((rays_d / np.linalg.norm(rays_d, axis=-1, keepdims=True))[:, None], points.shape)
    encode = lambda p, levels: np.concatenate(                                                 # noqa: E731
        [p] + [f(p * 2.0 ** k) for k in range(levels) for f in (np.sin, np.cos)], axis=-1)
    inputs = np.concatenate([encode(points, 6), encode(views, 2)], axis=-1).reshape(-1, network.in_features)
    raw = network(inputs.astype(np.float32)).reshape(len(rays_o), 8, 4)
    expected = raw_to_outputs(raw, z_vals, rays_d)
    np.testing.assert_allclose(out["rgb"].numpy(), expected.rgb.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["depth"].numpy(), expected.depth.numpy(), rtol=1e-5)


def test_fine_pass_adds_sorted_samples_and_keeps_the_coarse_outputs():
    scene = synthetic_nerf_scene(n_views=1, size=4)
    rays_o, rays_d = _rays(scene, scene.poses)
    renderer = NeRFRenderer(TinyNeRF(W=16), TinyNeRF(W=16), near=scene.near, far=scene.far, pos_freqs=6,
                            dir_freqs=2, n_samples=8, n_importance=5, raw_noise_std=1.0)
    out = renderer.render_rays(rays_o, rays_d)
    assert out["z_vals"].shape == (16, 13) and (np.diff(out["z_vals"], axis=-1) >= 0).all()
    assert out["rgb"].shape == out["rgb_coarse"].shape == (16, 3)
    np.testing.assert_array_equal(renderer.render_rays(rays_o, rays_d)["rgb"].numpy(), out["rgb"].numpy())
    trained = [renderer.render_rays(rays_o, rays_d, training=True, rng=s)["depth"].numpy() for s in (0, 1)]
    assert not np.allclose(trained[0], trained[1])
    assert len(renderer.parameters()) == 2 * len(renderer.coarse.parameters())
    image = renderer.render_image(3, 5, scene.focal, scene.poses[0])
    assert image["rgb"].shape == (3, 5, 3) and image["depth"].shape == (3, 5)


def test_renderer_errors_name_what_is_wrong():
    with pytest.raises(ShapeError, match="NeRFRenderer: with pos_freqs=10 and dir_freqs=4 the network needs "
                                         "input_ch=63 and input_ch_views=27, but TinyNeRF has 39 and 15"):
        NeRFRenderer(TinyNeRF(), near=2.0, far=6.0)
    with pytest.raises(ValueError, match="NeRFRenderer: expected near < far, got near=6.0, far=2.0"):
        NeRFRenderer(TinyNeRF(), near=6.0, far=2.0, pos_freqs=6, dir_freqs=2)
    with pytest.raises(ValueError, match="NeRFRenderer: n_samples must be an int >= 3"):
        NeRFRenderer(TinyNeRF(), near=2.0, far=6.0, pos_freqs=6, dir_freqs=2, n_samples=2, n_importance=4)


def test_tiny_nerf_learns_held_out_views_of_the_synthetic_scene():
    train = synthetic_nerf_scene(n_views=8, size=16)
    held_out = synthetic_nerf_scene(n_views=2, size=16, azimuth_offset=22.5)
    rays_o, rays_d = _rays(train, train.poses)
    colors = train.images.reshape(-1, 3)
    renderer = NeRFRenderer(TinyNeRF(), near=train.near, far=train.far, pos_freqs=6, dir_freqs=2, n_samples=16,
                            white_background=True)
    optimizer = optim.Adam(renderer.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with one_blas_thread():            # small products: BLAS threads would only wait on each other
        for _ in range(300):
            batch = rng.choice(len(rays_o), 256, replace=False)
            metrics = nerf_train_step(renderer, optimizer, rays_o[batch], rays_d[batch], colors[batch], rng)
        seconds = time.perf_counter() - start
        rendered = np.stack([renderer.render_image(16, 16, held_out.focal, pose)["rgb"] for pose in held_out.poses])
    psnr = mse_to_psnr(((rendered - held_out.images) ** 2).mean())
    baseline = mse_to_psnr(((colors.mean(axis=0) - held_out.images) ** 2).mean())
    print(f"held-out PSNR {psnr:.2f} dB, mean-colour baseline {baseline:.2f} dB, train PSNR "
          f"{metrics['psnr']:.2f} dB, {seconds:.1f} s")
    assert psnr > baseline + 5.0


def test_training_with_a_fine_network_lowers_both_losses():
    train = synthetic_nerf_scene(n_views=4, size=8)
    rays_o, rays_d = _rays(train, train.poses)
    colors = train.images.reshape(-1, 3)
    renderer = NeRFRenderer(TinyNeRF(W=16), TinyNeRF(W=16), near=train.near, far=train.far, pos_freqs=6,
                            dir_freqs=2, n_samples=8, n_importance=8, white_background=True, raw_noise_std=0.5)
    optimizer = optim.Adam(renderer.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    with one_blas_thread():
        losses = [nerf_train_step(renderer, optimizer, rays_o, rays_d, colors, rng)["loss"] for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    with pytest.raises(ShapeError, match=r"nerf_train_step: expected target colours of shape \(256, 3\)"):
        nerf_train_step(renderer, optimizer, rays_o, rays_d, colors[:10], rng)
