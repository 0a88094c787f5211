"""RBM: the free energy against torch (values, gradients, float64 gradient check) and against
the energy summed over hidden states; the CD gradient against autograd of the free energy;
scikit-learn's BernoulliRBM on the same weights; Gibbs sampling against the exact
distribution; the exact log partition and AIS; learning on binarized digits; errors."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina import parallel
from lamina.errors import ShapeError
from lamina.models import RBM
from lamina.models.rbm import free_energy


def torch_free_energy(v, w, b, c, visible):
    hidden = torch.nn.functional.softplus(v @ w + c).sum(dim=1)
    if visible == "bernoulli":
        return -v @ b - hidden
    return 0.5 * ((v - b) ** 2).sum(dim=1) - hidden


def random_rbm(n_visible, n_hidden, visible="bernoulli", scale=0.5, seed=0):
    rbm = RBM(n_visible, n_hidden, visible=visible, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    rbm.weight.data[:] = rng.normal(0, scale, rbm.weight.shape)
    rbm.visible_bias.data[:] = rng.normal(0, 0.5, n_visible)
    rbm.hidden_bias.data[:] = rng.normal(0, 0.5, n_hidden)
    return rbm


def binary(*shape, seed=0):
    return (np.random.default_rng(seed).random(shape) < 0.5).astype(np.float64)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The matrices are small: BLAS threads only contend with the other test processes."""
    with parallel.one_blas_thread():
        yield


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.data))
    return (data.data[order] > 7).astype(np.float64), data.target[order], data.data[order]


def softmax_regression_accuracy(train_x, train_y, test_x, test_y, steps=500, lr=2.0, l2=1e-4):
    """Multinomial logistic regression by full-batch gradient descent; the test accuracy."""
    def with_bias(x):
        return np.hstack([x, np.ones((len(x), 1))])

    w = np.zeros((train_x.shape[1] + 1, 10))
    onehot = np.eye(10)[train_y]
    for _ in range(steps):
        logits = with_bias(train_x) @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * (with_bias(train_x).T @ (p - onehot) / len(train_x) + l2 * w)
    return float(((with_bias(test_x) @ w).argmax(axis=1) == test_y).mean())


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_matches_torch_and_gradcheck(visible):
    v = binary(5, 6) if visible == "bernoulli" else randn(5, 6)
    arrays = (v, randn(6, 4, seed=1), randn(6, seed=2), randn(4, seed=3))

    def ours(*a):
        return free_energy(*a, visible=visible)

    def theirs(*a):
        return torch_free_energy(*a, visible)

    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float32)
    assert check_gradients(ours, *arrays)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_sums_the_energy_over_hidden_states(visible):
    rbm = random_rbm(5, 4, visible)
    v = binary(3, 5, seed=4) if visible == "bernoulli" else randn(3, 5, seed=4)
    states = np.array(list(itertools.product((0.0, 1.0), repeat=4)))
    energies = np.stack([rbm.energy(v, np.tile(h, (3, 1))) for h in states], axis=1)   # (3, 16)
    expected = -np.log(np.exp(-energies).sum(axis=1))
    assert_close(rbm.free_energy(v).numpy(), expected, 1e-12)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_cd_gradient_equals_autograd_of_the_free_energy(visible):
    """The closed-form positive minus negative phase equals the gradient of mean F(v_data) -
    mean F(v_model), by lamina's autograd through free_energy and by torch's."""
    rbm = random_rbm(7, 5, visible)
    if visible == "bernoulli":
        v_data, v_model = binary(6, 7, seed=5), binary(4, 7, seed=6)
    else:
        v_data, v_model = randn(6, 7, seed=5), randn(4, 7, seed=6)
    closed = rbm.cd_gradients(v_data, v_model)
    loss = lamina.functional.mean(rbm.free_energy(v_data)) - lamina.functional.mean(rbm.free_energy(v_model))
    rbm.zero_grad()
    loss.backward()
    params = {name: torch.tensor(p.data, requires_grad=True) for name, p in rbm.named_parameters()}
    args = (params["weight"], params["visible_bias"], params["hidden_bias"], visible)
    torch_loss = (torch_free_energy(torch.tensor(v_data), *args).mean()
                  - torch_free_energy(torch.tensor(v_model), *args).mean())
    torch_loss.backward()
    for name, param in rbm.named_parameters():
        assert_close(closed[name], param.grad, 1e-12, f"{name}: closed form vs lamina autograd")
        assert_close(closed[name], params[name].grad.numpy(), 1e-12, f"{name}: closed form vs torch")


def test_matches_scikit_learn_bernoulli_rbm_on_the_same_weights():
    rbm = random_rbm(8, 5)
    reference = BernoulliRBM(n_components=5)
    reference.components_ = rbm.weight.data.T.copy()
    reference.intercept_hidden_ = rbm.hidden_bias.data.copy()
    reference.intercept_visible_ = rbm.visible_bias.data.copy()
    v = binary(6, 8, seed=7)
    assert_close(rbm.transform(v), reference.transform(v), 1e-12, "transform")
    assert_close(rbm.free_energy(v).numpy(), reference._free_energy(v), 1e-12, "free energy")


def test_score_samples_is_the_pseudo_likelihood_of_one_flipped_unit():
    rbm = random_rbm(8, 5)
    v = binary(6, 8, seed=8)
    units = np.random.default_rng(3).integers(0, 8, 6)
    flipped = v.copy()
    flipped[np.arange(6), units] = 1 - flipped[np.arange(6), units]
    fe, fe_flipped = rbm.free_energy(v).numpy(), rbm.free_energy(flipped).numpy()
    expected = 8 * np.log(1 / (1 + np.exp(-(fe_flipped - fe))))
    assert_close(rbm.score_samples(v, seed=3), expected, 1e-12)


def test_exact_partition_normalizes_and_gibbs_chains_sample_the_model():
    """Bernoulli: p(v) = exp(-F(v) - log Z) sums to 1 over all 2^n_visible states, and long Gibbs
    chains visit the states with these probabilities (total variation small)."""
    rbm = random_rbm(4, 3, scale=1.0)
    states = np.array(list(itertools.product((0.0, 1.0), repeat=4)))
    probabilities = np.exp(rbm.log_likelihood(states))
    assert abs(probabilities.sum() - 1) < 1e-12
    rng = np.random.default_rng(0)
    v = binary(400, 4, seed=9)
    counts = np.zeros(16)
    for step in range(60):
        v = rbm.gibbs(v, 1, rng)
        if step >= 10:
            np.add.at(counts, (v @ (2 ** np.arange(3, -1, -1))).astype(int), 1)
    total_variation = 0.5 * np.abs(counts / counts.sum() - probabilities).sum()
    assert total_variation < 0.03, total_variation


def test_gaussian_partition_function_by_quadrature():
    """log Z of a gaussian RBM with one visible unit against a numerical integral of exp(-F(v))."""
    rbm = random_rbm(1, 3, "gaussian")
    grid = np.linspace(-30, 30, 200001)
    density = np.exp(-rbm.free_energy(grid[:, None]).numpy())
    assert abs(np.log(np.trapezoid(density, grid)) - rbm.log_partition()) < 1e-8


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_estimate_is_close_to_the_exact_log_partition(visible):
    rbm = random_rbm(20, 10, visible, scale=0.3 if visible == "bernoulli" else 0.15)
    exact = rbm.log_partition()
    estimate = rbm.ais_log_partition(n_chains=100, n_betas=1000, seed=0)
    print(f"{visible}: exact log Z {exact:.4f}, AIS {estimate:.4f}")
    assert abs(estimate - exact) < 0.05


def test_learning_on_digits_pseudo_likelihood_features_and_ais(digits):
    x, y, _ = digits
    train, test = slice(0, 1300), slice(1300, None)
    rbm = RBM(64, 100, seed=0, dtype=np.float64).fit(x[train], epochs=15, batch_size=10, lr=0.1, seed=0)
    likelihood = rbm.history["pseudo_likelihood"]
    assert np.mean(likelihood[-3:]) > likelihood[0] + 3, likelihood
    assert rbm.history["reconstruction_error"][-1] < 0.8 * rbm.history["reconstruction_error"][0]
    accuracy = softmax_regression_accuracy(rbm.transform(x[train]), y[train], rbm.transform(x[test]), y[test])
    pixels = softmax_regression_accuracy(x[train], y[train], x[test], y[test])
    print(f"logistic regression on RBM(64, 100) features: test accuracy {accuracy:.3f} (on the pixels {pixels:.3f})")
    assert accuracy > 0.87

    small = RBM(64, 10, seed=1, dtype=np.float64).fit(x[train], epochs=5, lr=0.05, k=1, persistent=False, seed=1)
    mean = x[train].mean(axis=0).clip(0.01, 0.99)
    exact = small.log_partition()
    estimate = small.ais_log_partition(n_chains=100, n_betas=1000, base_bias=np.log(mean / (1 - mean)), seed=0)
    print(f"RBM(64, 10) on digits: exact log Z {exact:.3f}, AIS {estimate:.3f}, "
          f"test log-likelihood {small.log_likelihood(x[test], exact).mean():.2f}")
    assert abs(estimate - exact) < 0.1


def test_gaussian_rbm_learns_to_reconstruct(digits):
    x = digits[2][:400]
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1)
    rbm = RBM(64, 32, visible="gaussian", seed=0, dtype=np.float64)
    before = np.mean((rbm.reconstruct(x) - x) ** 2)
    rbm.fit(x, epochs=10, batch_size=20, lr=0.05, momentum=0.5, persistent=False, seed=0)
    assert rbm.history["reconstruction_error"][-1] < 0.7 * before


def test_fit_is_reproducible_with_a_seed(digits):
    x = digits[0][:200]
    first = RBM(64, 8, seed=0).fit(x, epochs=2, seed=3, k=2)
    second = RBM(64, 8, seed=0).fit(x, epochs=2, seed=3, k=2)
    assert np.array_equal(first.weight.data, second.weight.data)
    assert first.weight.dtype == np.float32


def test_state_dict_round_trip_and_call_gives_the_free_energy():
    rbm, copy = random_rbm(6, 3), RBM(6, 3, dtype=np.float64)
    copy.load_state_dict(rbm.state_dict())
    v = binary(4, 6, seed=10)
    assert_close(copy(v).numpy(), rbm.free_energy(v).numpy(), 1e-15)
    assert sorted(rbm.state_dict()) == ["hidden_bias", "visible_bias", "weight"]


def test_errors():
    with pytest.raises(ValueError, match="n_hidden must be a positive int"):
        RBM(4, 0)
    with pytest.raises(ValueError, match="visible must be one of"):
        RBM(4, 2, visible="poisson")
    rbm = RBM(4, 2)
    with pytest.raises(ShapeError, match=r"n_visible=4.*\(3, 5\)"):
        rbm.transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="bernoulli visible units take values in"):
        rbm.fit(np.full((3, 4), 2.0))
    with pytest.raises(ValueError, match="pseudo-likelihood needs bernoulli"):
        RBM(4, 2, visible="gaussian").score_samples(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="too many"):
        RBM(4, 21).log_partition()
    with pytest.raises(ShapeError, match="n_hidden=2"):
        rbm.visible_mean(np.zeros((1, 3)))


def test_readme_example_runs():
    """The README's section on energy-based and associative models runs and prints what its
    comments say."""
    printed, _ = run_readme_section("Energy-based and associative models")
    lines = printed.splitlines()
    exact, estimate = (float(v) for v in lines[0].split())
    assert abs(exact - estimate) < 0.1
    assert lines[1] == lines[2] == lines[-1] == "True"
