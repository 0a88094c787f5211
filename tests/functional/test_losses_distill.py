"""distillation_loss: values and gradients against the formula written with PyTorch's ops
(``kl_div(log_softmax(s / T), softmax(t / T), 'batchmean') * T^2 * alpha + (1 - alpha) *
cross_entropy(s, y)``) for each reduction, float64 gradient checks, its limits (alpha = 0
and 1, T = 1, a student equal to its teacher, the large-T gradient that the T^2 factor
keeps of one size) and the errors for bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.functional.losses_distill import distillation_loss

REDUCTIONS = ["mean", "sum", "none"]


def torch_distillation(s, t, y, temperature, alpha, reduction):
    """The cost written with torch ops; a sample of several rows (a sequence) averages them."""
    soft = TF.kl_div(TF.log_softmax(s / temperature, dim=-1), TF.softmax(t / temperature, dim=-1),
                     reduction="none").sum(dim=-1)
    rows = alpha * temperature**2 * soft
    if alpha < 1:
        target = y if y.is_floating_point() else y.long()
        flat_target = target.reshape(-1, s.shape[-1]) if y.is_floating_point() else target.reshape(-1)
        hard = TF.cross_entropy(s.reshape(-1, s.shape[-1]), flat_target, reduction="none")
        rows = rows + (1 - alpha) * hard.reshape(rows.shape)
    if rows.ndim > 1:
        rows = rows.mean(dim=tuple(range(1, rows.ndim)))
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows


def labels(shape, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


def soft_rows(*shape, seed=0):
    p = np.random.default_rng(seed).uniform(0.1, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


CASES = {
    # name: (student logits, teacher logits, labels, temperature, alpha)
    "default": (randn(6, 5, scale=2), randn(6, 5, seed=1, scale=3), labels(6, 5, seed=2), 4.0, 0.9),
    "t2_half": (randn(6, 5, scale=2), randn(6, 5, seed=1, scale=3), labels(6, 5, seed=2), 2.0, 0.5),
    "t1": (randn(4, 3), randn(4, 3, seed=1), labels(4, 3, seed=2), 1.0, 0.3),
    "cold": (randn(4, 7), randn(4, 7, seed=1, scale=2), labels(4, 7, seed=2), 0.5, 0.7),
    "soft_targets": (randn(5, 4), randn(5, 4, seed=1), soft_rows(5, 4, seed=2), 3.0, 0.6),
    "labels_only": (randn(5, 4), randn(5, 4, seed=1), labels(5, 4, seed=2), 4.0, 0.0),
    "soft_only": (randn(5, 4), randn(5, 4, seed=1), labels(5, 4, seed=2), 4.0, 1.0),
    "sequences": (randn(3, 4, 6), randn(3, 4, 6, seed=1, scale=2), labels((3, 4), 6, seed=2), 3.0, 0.8),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_the_formula_in_torch(name, reduction, dtype):
    s, t, y, temperature, alpha = CASES[name]
    compare_with_torch(
        lambda s, t, y: distillation_loss(s, t, y, temperature=temperature, alpha=alpha, reduction=reduction),
        lambda s, t, y: torch_distillation(s, t, y, temperature, alpha, reduction),
        s, t, y, dtype=dtype, grad=[True, False, False],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_without_labels_is_the_soft_term_alone(reduction):
    s, t = randn(6, 5, scale=2), randn(6, 5, seed=1, scale=3)
    compare_with_torch(
        lambda s, t: distillation_loss(s, t, temperature=3.0, alpha=0.4, reduction=reduction),
        lambda s, t: torch_distillation(s, t, None, 3.0, 1.0, reduction),
        s, t, dtype=np.float64, grad=[True, False],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_wrt_the_student_logits(name, reduction):
    s, t, y, temperature, alpha = CASES[name]
    assert check_gradients(lambda s: distillation_loss(s, t, y, temperature=temperature, alpha=alpha,
                                                       reduction=reduction), s)


def test_the_teacher_gets_no_gradient():
    s = lamina.tensor(randn(4, 3), requires_grad=True, dtype=np.float64)
    t = lamina.tensor(randn(4, 3, seed=1), requires_grad=True, dtype=np.float64)
    distillation_loss(s, t, labels(4, 3)).backward()
    assert s.grad is not None and np.abs(s.grad).sum() > 0
    assert t.grad is None


# -- limits ------------------------------------------------------------------------------------


def test_alpha_zero_is_the_cross_entropy_at_any_temperature():
    s, y = randn(6, 5, scale=2), labels(6, 5, seed=2)
    ours = lamina.tensor(s, requires_grad=True, dtype=np.float64)
    plain = lamina.tensor(s, requires_grad=True, dtype=np.float64)
    loss = distillation_loss(ours, randn(6, 5, seed=1), y, temperature=7.0, alpha=0.0)
    expected = F.categorical_cross_entropy(plain, y, from_logits=True)
    loss.backward()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert_close(ours.grad, plain.grad, 1e-12, "gradient")


def test_t1_alpha1_is_the_kl_divergence_of_the_two_softmaxes():
    s, t = randn(6, 5, scale=2), randn(6, 5, seed=1, scale=2)
    ours = lamina.tensor(s, requires_grad=True, dtype=np.float64)
    plain = lamina.tensor(s, requires_grad=True, dtype=np.float64)
    teacher_probs = F.softmax(lamina.tensor(t, dtype=np.float64)).numpy()
    loss = distillation_loss(ours, t, labels(6, 5), temperature=1.0, alpha=1.0)
    expected = F.kl_divergence(F.log_softmax(plain), teacher_probs)
    loss.backward()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert_close(ours.grad, plain.grad, 1e-12, "gradient")
    # KL(p || q) = CE(q; p) - H(p): the cross-entropy with the teacher's probabilities as targets
    entropy = -(teacher_probs * np.log(teacher_probs)).sum(axis=-1).mean()
    cross_entropy = F.categorical_cross_entropy(lamina.tensor(s, dtype=np.float64), teacher_probs,
                                                from_logits=True).item()
    assert loss.item() == pytest.approx(cross_entropy - entropy, rel=1e-10)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_a_student_equal_to_its_teacher_has_no_soft_cost(temperature):
    z = lamina.tensor(randn(5, 4, scale=3), requires_grad=True, dtype=np.float64)
    loss = distillation_loss(z, z.numpy(), temperature=temperature)
    loss.backward()
    assert abs(loss.item()) < 1e-12
    assert np.abs(z.grad).max() < 1e-12


def test_the_t_squared_factor_keeps_the_soft_gradient_of_one_size_at_high_temperature():
    """For large T, alpha T^2 KL has gradient ~ alpha (d - mean_j d_j) / (K m), d = s - t
    (Hinton et al.'s high-temperature limit): the same whatever T."""
    s, t = randn(8, 6), randn(8, 6, seed=1)
    m, classes = s.shape
    d = s - t
    limit = (d - d.mean(axis=-1, keepdims=True)) / (classes * m)
    for temperature in (50.0, 200.0):
        z = lamina.tensor(s, requires_grad=True, dtype=np.float64)
        distillation_loss(z, t, temperature=temperature).backward()
        assert_close(z.grad, limit, 2.0 / temperature, f"gradient at T = {temperature}")


def test_large_logits_stay_finite():
    s = lamina.tensor(np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 1.0]]), requires_grad=True)
    t = np.array([[-1e4, 1e4, 0.0], [3e4, -3e4, 0.0]])
    loss = distillation_loss(s, t, np.array([1, 0]), temperature=2.0, alpha=0.5)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(s.grad).all()


# -- bad input ---------------------------------------------------------------------------------


def test_student_and_teacher_of_different_shapes_are_refused():
    with pytest.raises(ShapeError, match=r"distillation_loss.*\(4, 3\).*\(4, 5\)"):
        distillation_loss(randn(4, 3), randn(4, 5), labels(4, 3))
    with pytest.raises(ShapeError, match=r"distillation_loss.*\(4, 3\).*\(3, 3\)"):
        distillation_loss(randn(4, 3), randn(3, 3))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan"), True, "4"])
def test_a_temperature_that_is_not_positive_is_refused(temperature):
    with pytest.raises(ValueError, match="distillation_loss: temperature must be a finite number > 0"):
        distillation_loss(randn(4, 3), randn(4, 3, seed=1), labels(4, 3), temperature=temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), None, False])
def test_an_alpha_outside_0_1_is_refused(alpha):
    with pytest.raises(ValueError, match=r"distillation_loss: alpha .*\[0, 1\]"):
        distillation_loss(randn(4, 3), randn(4, 3, seed=1), labels(4, 3), alpha=alpha)


def test_bad_labels_and_reduction_are_refused():
    s, t = randn(4, 3), randn(4, 3, seed=1)
    with pytest.raises(ValueError, match=r"distillation_loss: labels must lie in \[0, 3\)"):
        distillation_loss(s, t, np.array([0, 1, 2, 3]))
    with pytest.raises(ShapeError, match="distillation_loss"):
        distillation_loss(s, t, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="distillation_loss: reduction"):
        distillation_loss(s, t, labels(4, 3), reduction="batchmean")
    with pytest.raises(ShapeError, match="distillation_loss: student_logits must have a class axis"):
        distillation_loss(np.float64(1.0), np.float64(1.0))


def test_float32_stays_float32():
    s = lamina.tensor(randn(4, 3).astype(np.float32), requires_grad=True)
    loss = distillation_loss(s, randn(4, 3, seed=1), labels(4, 3))
    loss.backward()
    assert loss.dtype == np.float32 and s.grad.dtype == np.float32
    reference = torch_distillation(torch.tensor(s.numpy()), torch.tensor(randn(4, 3, seed=1), dtype=torch.float32),
                                   torch.tensor(labels(4, 3)), 4.0, 0.9, "mean")
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
