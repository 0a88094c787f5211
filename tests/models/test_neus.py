"""NeuS: the unbiased rendering weights against a float64 torch rewrite (values and gradients in
the SDF values and s) and by centred differences, the geometric initialisation, the Eikonal loss
and its parameter gradients against torch.autograd.grad(create_graph=True), rendering, the
mesh-free surface evaluation, errors, and learning a sphere from its silhouette."""

import time

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, run_readme_section
from lamina import optim
from lamina.errors import ShapeError
from lamina.models import (
    ColorNetwork,
    NeuS,
    SDFNetwork,
    eikonal_loss,
    level_set_points,
    neus_render,
    neus_train_step,
    neus_weights,
    surface_chamfer_distance,
)
from lamina.parallel import one_blas_thread
from lamina.vision.nerf import get_rays, synthetic_nerf_scene
from lamina.vision.nerf.scenes import SphereScene


def torch_neus_weights(sdf, inv_s, eps=1e-5):
    """The paper's discrete opacities and weights, written with torch."""
    cdf = torch.sigmoid(sdf * inv_s)
    prev_cdf, next_cdf = cdf[:, :-1], cdf[:, 1:]
    alpha = torch.clamp((prev_cdf - next_cdf + eps) / (prev_cdf + eps), min=0.0)
    ones = torch.ones(sdf.shape[0], 1, dtype=sdf.dtype)
    transmittance = torch.cumprod(torch.cat([ones, 1.0 - alpha], dim=1), dim=1)[:, :-1]
    return alpha, transmittance * alpha


def _ray_sdf(rays=4, samples=7, seed=0):
    """SDF values along rays: mostly decreasing through zero (a surface), with noise that makes
    some sections rise (clamped opacities)."""
    rng = np.random.default_rng(seed)
    trend = np.linspace(0.6, -0.6, samples + 1)[None] + rng.uniform(-0.3, 0.3, (rays, 1))
    return trend + 0.15 * rng.standard_normal((rays, samples + 1))


def test_weights_match_a_torch_rewrite_in_values_and_gradients():
    sdf, inv_s = _ray_sdf(), np.array([6.0])
    compare_with_torch(lambda f, s: list(neus_weights(f, s)), lambda f, s: list(torch_neus_weights(f, s)),
                       sdf, inv_s, dtype=np.float64, rtol=1e-10)
    alpha, _ = torch_neus_weights(torch.tensor(sdf), torch.tensor(inv_s))
    assert (alpha == 0).any() and (alpha > 0.2).any()          # both branches of the max are exercised


def test_weights_gradient_check_in_float64():
    assert check_gradients(lambda f, s: neus_weights(f, s)[1], _ray_sdf(3, 5, seed=1), np.array([4.0]))
    assert check_gradients(lambda f, s: neus_weights(f, s)[0], _ray_sdf(3, 5, seed=2), np.array([9.0]))


@pytest.mark.parametrize("inv_s", [0.5, 20.0, 5000.0])
def test_weights_are_opacities_that_sum_to_at_most_one(inv_s):
    sdf = _ray_sdf(50, 16, seed=3) * 3.0
    inputs = lamina.tensor(sdf, dtype=np.float64), lamina.tensor([inv_s], dtype=np.float64)
    alpha, weights = (t.numpy() for t in neus_weights(*inputs))
    assert ((alpha >= 0) & (alpha <= 1)).all() and (weights >= 0).all()
    assert (weights.sum(axis=1) <= 1.0 + 1e-12).all()
    if inv_s == 5000.0:                                        # a sharp surface: nearly opaque rays
        crossing = (sdf[:, :-1] > 0) & (sdf[:, 1:] < 0)
        assert (weights.sum(axis=1)[crossing.any(axis=1)] > 0.99).all()


def test_geometric_init_starts_as_a_sphere():
    rng = np.random.default_rng(0)
    network = SDFNetwork(width=256, depth=2, radius=0.5, pos_freqs=2, seed=1)
    points = rng.uniform(-1, 1, (400, 3)).astype(np.float32)
    f, truth = network.sdf(points).numpy(), np.linalg.norm(points, axis=1) - 0.5
    # softplus (beta = 100) lifts f by up to ~0.2 near the origin, where every unit sits at its kink
    shell = np.linalg.norm(points, axis=1) > 0.3
    assert np.abs(f - truth)[shell].mean() < 0.15 and np.corrcoef(f, truth)[0, 1] > 0.85
    assert network.sdf(np.zeros((1, 3), np.float32)).item() < -0.2           # the origin is inside
    # averaged over directions and initialisations, f(t u) = t - r (the initialisation's expectation)
    directions = rng.standard_normal((500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    others = [SDFNetwork(width=256, depth=2, radius=0.5, pos_freqs=2, seed=seed) for seed in (2, 3)]
    for t in (0.5, 0.9):
        shell_points = (t * directions).astype(np.float32)
        mean = np.mean([net.sdf(shell_points).numpy().mean() for net in [network, *others]])
        assert abs(mean - (t - 0.5)) < 0.05, t
    surface = level_set_points(network, 400, rng=0)
    assert len(surface) > 300 and abs(np.linalg.norm(surface, axis=1).mean() - 0.5) < 0.05


def _torch_sdf(network: SDFNetwork):
    """The SDF network written with torch from ``network``'s weights (float64)."""
    weights = {name: torch.tensor(p.numpy(), dtype=torch.float64, requires_grad=True)
               for name, p in network.named_parameters()}

    def forward(x):
        if network.pos_freqs:
            parts = [x]
            for k in range(network.pos_freqs):
                parts += [torch.sin(2.0 ** k * x), torch.cos(2.0 ** k * x)]
            x = torch.cat(parts, dim=-1)
        for i in range(network.depth):
            x = torch.nn.functional.softplus(x @ weights[f"linear{i}.weight"] + weights[f"linear{i}.bias"], beta=100)
        return x @ weights["output_linear.weight"] + weights["output_linear.bias"]

    return forward, weights


def test_eikonal_loss_and_its_parameter_gradients_match_torch_autograd_grad():
    model = NeuS(sdf_width=8, sdf_depth=2, feature_size=2, color_width=4, color_depth=1, pos_freqs=1).double()
    rng = np.random.default_rng(0)
    for p in model.sdf_network.parameters():                   # leave the initialisation's symmetry
        p.data = p.data + 0.3 * rng.standard_normal(p.shape)
    points = rng.uniform(-1, 1, (6, 3))
    sdf, features, gradients = model.sdf_with_gradient(points)
    loss = eikonal_loss(gradients)
    loss.backward()

    forward, weights = _torch_sdf(model.sdf_network)
    x = torch.tensor(points, requires_grad=True)
    out = forward(x)
    (normals,) = torch.autograd.grad(out[:, 0].sum(), x, create_graph=True)
    expected = ((normals.norm(dim=-1) - 1.0) ** 2).mean()
    expected.backward()

    assert_close(sdf.numpy(), out[:, 0].detach().numpy(), 1e-10, "sdf")
    assert_close(features.numpy(), out[:, 1:].detach().numpy(), 1e-10, "features")
    assert_close(gradients.numpy(), normals.detach().numpy(), 1e-10, "normals")
    assert_close(loss.item(), expected.item(), 1e-9, "eikonal loss")
    assert expected.item() > 0.01                              # not a trivially zero loss
    for name, p in model.sdf_network.named_parameters():      # the biases of the output do not move grad f
        expected_grad = weights[name].grad
        expected_grad = np.zeros(p.shape) if expected_grad is None else expected_grad.numpy()
        assert_close(np.zeros(p.shape) if p.grad is None else p.grad, expected_grad, 1e-8, f"gradient of {name}")
    assert np.abs(model.sdf_network.linear0.weight.grad).max() > 1e-3


def test_render_weights_opacity_and_depth():
    model = NeuS(sdf_width=256, sdf_depth=1, feature_size=2, color_width=8, color_depth=1, radius=0.4,
                 init_variance=0.6)
    rays_o = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [1.2, 0.0, 2.0]])
    rays_d = np.array([[0.0, 0.0, -1.0], [0.05, 0.0, -1.0], [0.0, 0.0, -1.0]])
    with lamina.no_grad():
        out = neus_render(model, rays_o, rays_d, 1.0, 3.0, n_samples=64, background=(1.0, 1.0, 1.0))
    assert out["rgb"].shape == (3, 3) and out["weights"].shape == (3, 64) and out["z_vals"].shape == (3, 65)
    opacity = out["opacity"].numpy()
    assert np.allclose(opacity, out["weights"].numpy().sum(axis=1)) and (opacity <= 1 + 1e-6).all()
    assert opacity[0] > 0.95 and opacity[2] < 0.05           # through the sphere, beside it
    assert abs(out["depth"].numpy()[0] / opacity[0] - 1.6) < 0.15  # the front of the sphere of radius 0.4
    rgb = out["rgb"].numpy()
    assert ((rgb >= 0) & (rgb <= 1 + 1e-6)).all() and np.allclose(rgb[2], 1.0, atol=0.05)


def test_level_set_points_and_chamfer_distance():
    network = SDFNetwork(width=64, depth=1, radius=0.5, seed=2)
    points = level_set_points(network, 300, steps=8, tolerance=1e-3, rng=0)
    assert len(points) > 200 and np.abs(network.sdf(points.astype(np.float32)).numpy()).max() < 1e-3
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(25, 3))
    expected = 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())
    assert surface_chamfer_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert surface_chamfer_distance(a, a) < 1e-6


def test_errors_name_the_function_and_the_shapes():
    with pytest.raises(ShapeError, match=r"neus_weights: .*\(rays, samples \+ 1\).*\(5,\)"):
        neus_weights(np.zeros(5), np.array([1.0]))
    with pytest.raises(ShapeError, match="neus_weights: the inverse deviation must be one number"):
        neus_weights(np.zeros((2, 3)), np.ones(2))
    with pytest.raises(ShapeError, match=r"eikonal_loss: expected .*\(N, 3\), got \(4, 2\)"):
        eikonal_loss(np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="neus_render: expected origins and directions"):
        neus_render(NeuS(8, 1, 2, 8, 1), np.zeros((2, 3)), np.zeros((3, 3)), 1.0, 2.0)
    with pytest.raises(ValueError, match="neus_render: expected near < far"):
        neus_render(NeuS(8, 1, 2, 8, 1), np.zeros((2, 3)), np.ones((2, 3)), 2.0, 1.0)
    with pytest.raises(ShapeError, match=r"ColorNetwork.*\(N, 2\), got \(3, 4\)"):
        ColorNetwork(2, 4, 1)(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="SDFNetwork: radius must be positive"):
        SDFNetwork(radius=0.0)


def _sphere_rays(true_radius):
    scene = synthetic_nerf_scene(8, 16, radius=2.5, scene=SphereScene(
        centers=((0.0, 0.0, 0.0),), radii=(true_radius,), colors=((0.8, 0.3, 0.2),), ambient=1.0))
    rays = [get_rays(16, 16, scene.focal, pose, pixel_centers=True) for pose in scene.poses]
    rays_o = np.concatenate([o.reshape(-1, 3) for o, _ in rays])
    rays_d = np.concatenate([d.reshape(-1, 3) for _, d in rays])
    return rays_o, rays_d, scene.images.reshape(-1, 3)


def test_learning_a_sphere_moves_the_zero_level_set_onto_it():
    true_radius = 0.6
    rays_o, rays_d, colors = _sphere_rays(true_radius)
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((1000, 3))
    truth = true_radius * truth / np.linalg.norm(truth, axis=1, keepdims=True)
    model = NeuS(sdf_width=64, sdf_depth=2, feature_size=4, color_width=64, color_depth=1, radius=0.3)

    def surface_errors():
        points = level_set_points(model.sdf_network, 1000, rng=1)
        radial = np.abs(np.linalg.norm(points, axis=1) - true_radius).mean()
        return radial, surface_chamfer_distance(points, truth)

    radial_before, chamfer_before = surface_errors()
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    schedule = optim.CosineDecay(5e-3, 300, final_lr=5e-4, optimizer=optimizer)  # a constant lr keeps it jittering
    start = time.perf_counter()
    with one_blas_thread():
        for _ in range(300):
            batch = rng.integers(0, len(rays_o), 64)
            stats = neus_train_step(model, optimizer, rays_o[batch], rays_d[batch], colors[batch], 1.5, 3.5,
                                    n_samples=24, background=(1.0, 1.0, 1.0), rng=rng)
            schedule.step()
    seconds = time.perf_counter() - start
    radial_after, chamfer_after = surface_errors()
    assert radial_before > 0.15 and chamfer_before > 0.15     # the start is the sphere of radius 0.3
    # measured on an AMD EPYC host over 9 data seeds: radial error after / before 0.049-0.068 (0.059
    # here), Chamfer 0.166-0.179, Eikonal <= 0.011, s 290-373; a constant lr of 5e-3 for 250 steps
    # left the radial ratio anywhere in 0.14-0.59 (0.44 here)
    assert radial_after < 0.2 * radial_before and chamfer_after < 0.4 * chamfer_before, (
        radial_before, radial_after, chamfer_before, chamfer_after)
    assert stats["eikonal"] < 0.1 and stats["s"] > 50.0, stats  # a distance function, a sharpened surface
    assert seconds < 60.0


def test_readme_example_renders_and_trains():
    printed, names = run_readme_section("Implicit surfaces: NeuS")
    words = printed.split()
    assert words[0] == "opacity" and all(0.0 <= float(w) <= 1.0 for w in words[1:4])
    assert float(words[5]) < 0.5 and isinstance(names["model"], NeuS)
