"""The RDP accountant of the Poisson-subsampled Gaussian mechanism against numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from lamina.optim.privacy import (
    RDPAccountant,
    compute_epsilon,
    get_noise_multiplier,
    rdp_subsampled_gaussian,
    rdp_to_epsilon,
)


def _rdp_by_quadrature(q, sigma, alpha):
    """log E_{z ~ N(0, s^2)}[((1 - q) + q e^{(2z - 1) / (2 s^2)})^alpha] / (alpha - 1), integrated numerically."""
    def integrand(z):
        log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma ** 2))
        return math.exp(stats.norm.logpdf(z, scale=sigma) + alpha * log_ratio)

    # the integrand's mass lies between the two means, widened by 40 standard deviations
    value, _ = integrate.quad(integrand, -40 * sigma, alpha + 40 * sigma, epsabs=0, epsrel=1e-12, limit=400,
                              points=[0.0, 1.0, alpha])
    return math.log(value) / (alpha - 1)


def test_without_subsampling_the_rdp_is_alpha_over_two_sigma_squared():
    orders = [1.5, 2, 3.25, 10, 64]
    np.testing.assert_allclose(rdp_subsampled_gaussian(1.0, 1.3, orders), np.array(orders) / (2 * 1.3 ** 2),
                               rtol=0, atol=0)


@pytest.mark.parametrize("q, sigma", [(0.01, 1.0), (0.05, 0.8), (0.2, 2.0)])
@pytest.mark.parametrize("alpha", [1.5, 2, 3, 4.75, 8, 12.5])
def test_subsampled_rdp_matches_numerical_integration(q, sigma, alpha):
    ours = rdp_subsampled_gaussian(q, sigma, [alpha])[0]
    assert ours == pytest.approx(_rdp_by_quadrature(q, sigma, alpha), rel=1e-7)


def test_epsilon_falls_with_noise_and_grows_with_steps():
    by_noise = [compute_epsilon(s, 0.01, 1000, 1e-5) for s in (0.7, 1.0, 1.5, 3.0)]
    by_steps = [compute_epsilon(1.0, 0.01, n, 1e-5) for n in (10, 100, 1000, 10000)]
    assert all(a > b for a, b in zip(by_noise, by_noise[1:]))
    assert all(a < b for a, b in zip(by_steps, by_steps[1:]))
    assert all(math.isfinite(e) and e > 0 for e in by_noise + by_steps)


def test_the_tighter_conversion_never_exceeds_the_classic_one():
    orders = [2, 4, 8, 16, 32]
    rdp = 100 * rdp_subsampled_gaussian(0.02, 1.1, orders)
    balle, _ = rdp_to_epsilon(orders, rdp, 1e-5)
    classic, order = rdp_to_epsilon(orders, rdp, 1e-5, conversion="classic")
    assert balle < classic
    assert classic == pytest.approx(min(r + math.log(1e5) / (a - 1) for a, r in zip(orders, rdp)))
    assert order in orders


@pytest.mark.parametrize("target", [0.5, 2.0, 8.0])
def test_bisection_finds_the_noise_for_a_target_epsilon(target):
    sigma = get_noise_multiplier(target, 1e-5, 0.01, 2000)
    spent = compute_epsilon(sigma, 0.01, 2000, 1e-5)
    assert target - 0.01 <= spent <= target
    assert compute_epsilon(sigma * 0.97, 0.01, 2000, 1e-5) > target


def test_accountant_composes_steps_of_different_settings():
    accountant = RDPAccountant(orders=[2, 8, 32])
    for _ in range(5):
        accountant.step(1.0, 0.1)
    accountant.step(2.0, 0.2, steps=3)
    expected = 5 * rdp_subsampled_gaussian(0.1, 1.0, [2, 8, 32]) + 3 * rdp_subsampled_gaussian(0.2, 2.0, [2, 8, 32])
    np.testing.assert_allclose(accountant.rdp(), expected, rtol=1e-12)
    assert accountant.steps == 8
    restored = RDPAccountant()
    restored.load_state_dict(accountant.state_dict())
    assert restored.get_epsilon(1e-5) == accountant.get_epsilon(1e-5)
