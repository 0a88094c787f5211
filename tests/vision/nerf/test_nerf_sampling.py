"""Stratified and hierarchical sampling: bins and perturbation, a delta PDF's samples at its spike,
the deterministic version against a PyTorch re-implementation of the original ``sample_pdf``, the
random version's distribution, and the errors."""

import numpy as np
import pytest
import torch

import lamina
from lamina.errors import ShapeError
from lamina.vision.nerf import sample_pdf, stratified_samples


def test_unperturbed_samples_are_evenly_spaced_and_perturbed_ones_stay_in_their_bins():
    even = stratified_samples(2.0, 6.0, 3, 5, dtype=np.float64)
    np.testing.assert_allclose(even, np.broadcast_to(np.linspace(2.0, 6.0, 5), (3, 5)))
    drawn = stratified_samples(2.0, 6.0, 200, 5, perturb=True, rng=0, dtype=np.float64)
    edges = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    lower, upper = np.r_[2.0, 0.5 * (edges[1:] + edges[:-1])], np.r_[0.5 * (edges[1:] + edges[:-1]), 6.0]
    assert ((drawn >= lower) & (drawn <= upper)).all()
    assert (np.diff(drawn, axis=-1) >= 0).all() and drawn.std(axis=0).min() > 0.1


def test_lindisp_spaces_the_samples_evenly_in_disparity():
    z = stratified_samples(1.0, 4.0, 2, 4, lindisp=True, dtype=np.float64)
    np.testing.assert_allclose(1.0 / z[0], np.linspace(1.0, 0.25, 4))


def test_near_and_far_may_differ_per_ray():
    z = stratified_samples(np.array([1.0, 2.0]), np.array([2.0, 5.0]), 2, 3, dtype=np.float64)
    np.testing.assert_allclose(z, [[1.0, 1.5, 2.0], [2.0, 3.5, 5.0]])


@pytest.mark.parametrize("near, far", [(2.0, 2.0), (3.0, 1.0)])
def test_near_not_below_far_is_refused(near, far):
    with pytest.raises(ValueError, match="stratified_samples: expected near < far"):
        stratified_samples(near, far, 4, 8)


def _torch_sample_pdf_deterministic(bins, weights, n_samples):
    """The original code's sample_pdf with det=True, written with torch."""
    weights = weights + 1e-5
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    u = torch.linspace(0.0, 1.0, n_samples, dtype=bins.dtype).expand(list(cdf.shape[:-1]) + [n_samples]).contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp(inds - 1, min=0)
    above = torch.clamp(inds, max=cdf.shape[-1] - 1)
    inds_g = torch.stack([below, above], -1)
    shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
    cdf_g = torch.gather(cdf.unsqueeze(1).expand(shape), 2, inds_g)
    bins_g = torch.gather(bins.unsqueeze(1).expand(shape), 2, inds_g)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    t = (u - cdf_g[..., 0]) / denom
    return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])


def test_deterministic_sample_pdf_matches_the_original():
    rng = np.random.default_rng(3)
    bins = np.sort(rng.uniform(2.0, 6.0, (5, 9)), axis=-1)
    weights = rng.uniform(0.0, 1.0, (5, 8)) * (rng.uniform(size=(5, 8)) > 0.3)
    ours = sample_pdf(bins, weights, 16, deterministic=True)
    theirs = _torch_sample_pdf_deterministic(torch.tensor(bins), torch.tensor(weights), 16).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours.dtype == np.float64 and (np.diff(ours, axis=-1) >= 0).all()


def test_a_delta_pdf_puts_the_samples_at_its_spike():
    bins = np.tile(np.linspace(0.0, 8.0, 9), (2, 1))
    weights = np.zeros((2, 8))
    weights[0, 5], weights[1, 2] = 1.0, 0.7
    for deterministic, inner in ((True, slice(1, -1)), (False, slice(None))):
        samples = sample_pdf(lamina.tensor(bins), weights, 64, deterministic=deterministic, rng=0)[:, inner]
        assert ((samples[0] >= 5.0) & (samples[0] <= 6.0)).mean() > 0.98
        assert ((samples[1] >= 2.0) & (samples[1] <= 3.0)).mean() > 0.98


def test_random_sample_pdf_follows_the_density():
    bins = np.array([[0.0, 1.0, 3.0, 4.0]])
    weights = np.array([[1.0, 0.0, 3.0]])
    samples = sample_pdf(bins, weights, 20000, rng=np.random.default_rng(1))[0]
    assert abs((samples < 1.0).mean() - 0.25) < 0.02 and abs((samples > 3.0).mean() - 0.75) < 0.02
    upper = samples[samples > 3.0]
    assert abs(upper.mean() - 3.5) < 0.02       # uniform within its bin


def test_sample_pdf_refuses_mismatched_shapes():
    with pytest.raises(ShapeError, match=r"sample_pdf: expected bins of shape \(n_rays, m \+ 1\) and weights of "
                                         r"shape \(n_rays, m\), got \(2, 5\) and \(2, 5\)"):
        sample_pdf(np.zeros((2, 5)), np.ones((2, 5)), 4)
    with pytest.raises(ValueError, match="sample_pdf: weights must be finite and >= 0"):
        sample_pdf(np.zeros((1, 3)), np.array([[1.0, -1.0]]), 4)
