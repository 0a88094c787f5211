"""Normalizer-free ResNets: activation gains, signal propagation at initialization, the
parameter count against ResNet-18, save / load, and learning digits without batch norm with
adaptive gradient clipping at a learning rate that plain SGD does not survive."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lamina
from helpers import randn, run_readme_section
from lamina import models, nn
from lamina.data import load_digits
from lamina.optim import AGC, SGD


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "tanh"])
def test_activation_gammas_give_unit_variance_on_a_standard_normal(activation):
    """gamma = 1 / std(g(z)), z ~ N(0, 1), by the trapezoidal rule on a fine grid."""
    z = np.linspace(-12.0, 12.0, 240_001)
    weights = np.exp(-0.5 * z**2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    g = models.ScaledActivation(activation)(lamina.tensor(z, dtype=np.float64)).numpy()
    variance = (weights * g**2).sum() - (weights * g).sum() ** 2
    # ReLU's gamma is exact; the others are the reference code's sampled estimates
    assert abs(variance - 1.0) < (1e-6 if activation == "relu" else 3e-3)


def _signal(model, x):
    """The variance of every block's output, run block by block (no gradients)."""
    variances = []
    with lamina.no_grad():
        h = model.stem(lamina.tensor(x))
        for stage in model.stages.layers:
            for block in stage.layers:
                h = block(h)
                variances.append((block, float(h.numpy().var())))
    return variances


def test_nf_blocks_keep_the_signal_at_its_expected_variance_through_depth():
    lamina.manual_seed(0)
    model = models.NFResNet((6, 6), (32, 64), num_classes=3, stem_channels=32, stem_kernel=3, stem_stride=1,
                            stem_pool=False, alpha=0.3)
    x = randn(8, 12, 12, 3, seed=1).astype(np.float32)
    model(lamina.tensor(x))
    measured = _signal(model, x)
    expected_var = 1.0
    for block, variance in measured:
        assert math.isclose(block.beta, math.sqrt(expected_var))
        expected_var = (1.0 if block.is_transition else expected_var) + 0.3**2
        assert abs(variance / expected_var - 1.0) < 0.25, (block.name, variance, expected_var)
    assert math.isclose(model.expected_var, expected_var)
    # the residual branch of every block sees a unit-variance input
    with lamina.no_grad():
        h = model.stem(lamina.tensor(x))
        for stage in model.stages.layers:
            for block in stage.layers:
                branch_in = block.act1(lamina.tensor(h.numpy() / block.beta)).numpy()
                assert abs(branch_in.var() - 1.0) < 0.35
                h = block(h)


def test_without_the_beta_scaling_the_signal_grows():
    lamina.manual_seed(0)
    model = models.NFResNet((8,), (16,), num_classes=2, stem_channels=16, stem_kernel=3, stem_stride=1,
                            stem_pool=False, alpha=1.0)
    x = randn(4, 8, 8, 3, seed=2).astype(np.float32)
    model(lamina.tensor(x))
    var_scaled = _signal(model, x)[-1][1]
    for block in model.stages.layers[0].layers:
        block.beta = 1.0
    assert _signal(model, x)[-1][1] > 2.0 * var_scaled


def test_skipinit_blocks_are_the_identity_at_initialization():
    block = models.NFBlock(4, 4, skipinit=True)
    x = lamina.tensor(randn(2, 5, 5, 4).astype(np.float32))
    np.testing.assert_array_equal(block(x).numpy(), x.numpy())
    assert block.skip_gain.shape == (1,) and float(block.skip_gain.numpy()[0]) == 0.0


def test_nf_resnet18_has_resnet18_parameters_without_batch_norm_plus_biases_and_gains():
    ours = models.nf_resnet18().summary(input_shape=(64, 64, 3)).total_params
    resnet = models.resnet18()
    resnet(lamina.tensor(np.zeros((1, 64, 64, 3), np.float32)))
    convs, batch_norm = 0, 0
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm):
            batch_norm += sum(p.size for p in module.parameters())
        elif isinstance(module, nn.Conv2D):
            convs += 2 * module.filters                     # a bias and a gain per filter
    assert ours == 11_689_512 - batch_norm + convs


def test_the_model_round_trips_through_save_and_load(tmp_path):
    model = models.nf_resnet_cifar(8, num_classes=3, width=4, skipinit=True, activation="gelu")
    x = lamina.tensor(randn(2, 8, 8, 3).astype(np.float32))
    model(x)
    for p in model.parameters():
        p.data = p.data + np.float32(0.1)
    model.eval()
    lamina.save(model, tmp_path / "nf.safetensors")
    twin = lamina.load(tmp_path / "nf.safetensors")
    twin.eval()
    np.testing.assert_array_equal(twin(x).numpy(), model(x).numpy())


def _digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    x = (x - x.mean()) / x.std()
    order = np.random.default_rng(0).permutation(len(y))
    return x, y, order[:1200], order[1200:]


def _train(clipping: float | None, epochs: int = 3, lr: float = 1.0):
    x, y, train, held_out = _digits()
    lamina.manual_seed(0)
    model = models.nf_resnet_cifar(8, num_classes=10, width=8)
    inner = SGD(model, lr=lr, momentum=0.9)
    opt = inner if clipping is None else AGC(inner, clipping=clipping, exclude=model.fc)
    rng = np.random.default_rng(1)
    for _ in range(epochs):
        order = rng.permutation(train)
        for start in range(0, len(order), 64):
            rows = order[start:start + 64]
            loss = lamina.functional.cross_entropy(model(lamina.tensor(x[rows])), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with lamina.no_grad(), np.errstate(all="ignore"):
        scores = model(lamina.tensor(x[held_out])).numpy()
    return float((scores.argmax(axis=1) == y[held_out]).mean()) if np.isfinite(scores).all() else 0.0


def test_an_nf_resnet_with_agc_learns_digits_at_a_large_learning_rate():
    assert _train(clipping=0.05) > 0.85


def test_plain_sgd_at_that_learning_rate_does_not_learn():
    with np.errstate(all="ignore"):
        assert _train(clipping=None, epochs=1) < 0.5


def test_readme_example():
    printed, names = run_readme_section("Normalizer-free networks and GhostNet")
    assert isinstance(names["model"], models.NFResNet) and isinstance(names["opt"], AGC)
    accuracy = float(printed.split()[-1])
    assert accuracy > 0.8
