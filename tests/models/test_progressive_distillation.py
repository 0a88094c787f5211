"""Progressive distillation (Salimans and Ho 2022): the nested sampling grid, the target x~
against a float64 NumPy derivation (one DDIM step from z_t with x~ lands on the teacher's
z_t''), the loss and its gradients against a float64 torch rewrite and a gradient check,
learning a 2-D mixture in 4 steps from a 64-step teacher, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models import (
    DenoisingMLP,
    DiffusionModel,
    distillation_grid,
    distillation_target,
    distillation_weight,
    grid_sample,
    progressive_distillation_loss,
)
from lamina.nn import Module
from lamina.optim import Adam
from lamina.train import progressive_distillation

T = 64


class TanhNet(Module):
    """net(x, t) = tanh(x W + t / 50) for a given weight W (a tensor or an array)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x, t):
        shift = lamina.tensor(np.asarray(t, dtype=np.float64).reshape(-1, 1) / 50, dtype=x.dtype)
        weight = self.weight if isinstance(self.weight, lamina.Tensor) else lamina.tensor(self.weight, dtype=x.dtype)
        return F.tanh(F.matmul(x, weight) + shift)


def test_grid_is_nested_and_spans_data_to_noise():
    for steps in (64, 32, 16, 8, 4, 2, 1):
        grid = distillation_grid(T, steps)
        assert grid[0] == -1 and grid[-1] == T - 1 and len(grid) == steps + 1 and np.all(np.diff(grid) > 0)
        np.testing.assert_array_equal(grid, np.floor(np.arange(steps + 1) * T / steps + 0.5) - 1)
        if steps > 1:
            np.testing.assert_array_equal(distillation_grid(T, steps // 2), grid[::2])   # every other point
    grid = distillation_grid(1000, 6)            # any T: the halved grid is still nested
    np.testing.assert_array_equal(distillation_grid(1000, 3), grid[::2])
    np.testing.assert_array_equal(distillation_grid(T, T), np.arange(-1, T))


def test_target_makes_one_ddim_step_land_on_the_teacher():
    schedule = lamina.models.make_schedule("cosine", T)
    z_t, z_target = randn(6, 3, seed=1), randn(6, 3, seed=2)
    t, t_target = np.array([63, 40, 17, 5, 1, 63]), np.array([47, -1, 9, 2, 0, -1])
    x_tilde = distillation_target(schedule, z_t, t, z_target, t_target)
    # the NumPy derivation: z'' = a'' x + s'' (z - a x) / s, solved for x
    abar = np.concatenate([[1.0], schedule.alpha_bars])         # index t + 1
    a, s = np.sqrt(abar[t + 1])[:, None], np.sqrt(1 - abar[t + 1])[:, None]
    a2, s2 = np.sqrt(abar[t_target + 1])[:, None], np.sqrt(1 - abar[t_target + 1])[:, None]
    landed = a2 * x_tilde + s2 * (z_t - a * x_tilde) / s
    np.testing.assert_allclose(landed, z_target, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(x_tilde[[1, 5]], z_target[[1, 5]])     # t'' = -1: x~ is z'' itself
    # and lamina's own DDIM step, float64 tensors
    x0 = lamina.tensor(x_tilde, dtype=np.float64)
    eps = schedule.predict_eps(lamina.tensor(z_t, dtype=np.float64), t, x0)
    np.testing.assert_allclose(schedule.ddim_step(x0, eps, t, t_target).numpy(), z_target, rtol=1e-12, atol=1e-12)
    w = distillation_weight(schedule, t)
    snr = schedule.alpha_bars[t] / (1 - schedule.alpha_bars[t])
    np.testing.assert_allclose(w, 1 + snr, rtol=1e-14)
    np.testing.assert_allclose(distillation_weight(schedule, t, "truncated_snr"), np.maximum(snr, 1), rtol=1e-14)


# -- the loss against a float64 torch rewrite ----------------------------------------------------------
STEPS, INDICES = 4, np.array([4, 1, 3, 2, 4])          # student steps k in 1 .. 4 (teacher: 8)


def torch_loss(x0, noise, w_student, w_teacher, abar, prediction, weighting):
    """The paper's procedure written out: two teacher DDIM steps, x~, the weighted x-space MSE."""
    k = torch.tensor(INDICES)
    grid = torch.floor(torch.arange(2 * STEPS + 1, dtype=torch.float64) * T / (2 * STEPS) + 0.5).long() - 1
    t, t_mid, t_target = grid[2 * k], grid[2 * k - 1], grid[2 * k - 2]
    abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.tensor(abar)])

    def alpha_sigma(steps):
        return torch.sqrt(abar[steps + 1])[:, None], torch.sqrt(1 - abar[steps + 1])[:, None]

    def net(z, steps, w):
        return torch.tanh(z @ w + steps.double()[:, None] / 50)

    def ddim(z, steps, to):                       # the teacher predicts v
        a, s = alpha_sigma(steps)
        v = net(z, steps, w_teacher)
        x_hat, eps_hat = a * z - s * v, s * z + a * v
        a2, s2 = alpha_sigma(to)
        return a2 * x_hat + s2 * eps_hat

    a, s = alpha_sigma(t)
    z = a * x0 + s * noise
    z_target = ddim(ddim(z, t, t_mid), t_mid, t_target)
    a2, s2 = alpha_sigma(t_target)
    x_tilde = (z_target - s2 / s * z) / (a2 - s2 / s * a)
    out = net(z, t, w_student)
    x_hat = a * z - s * out if prediction == "v" else (z - s * out) / a
    snr = a ** 2 / s ** 2
    weight = 1 + snr if weighting == "snr_plus_one" else torch.clamp(snr, min=1.0)
    return (weight * (x_hat - x_tilde) ** 2).mean()


@pytest.mark.parametrize("prediction, weighting", [("v", "snr_plus_one"), ("eps", "truncated_snr")])
def test_loss_and_gradients_equal_a_torch_rewrite(prediction, weighting):
    x0, noise = randn(5, 2), randn(5, 2, seed=2)
    w_student, w_teacher = randn(2, 2, seed=1, scale=0.5), randn(2, 2, seed=3, scale=0.5)
    teacher = DiffusionModel(TanhNet(w_teacher), "cosine", T, prediction="v")

    def ours(x, w):
        student = DiffusionModel(TanhNet(w), "cosine", T, prediction=prediction)
        return progressive_distillation_loss(student, teacher, x, STEPS, weighting, indices=INDICES, noise=noise)

    def theirs(x, w):
        return torch_loss(x, torch.tensor(noise), w, torch.tensor(w_teacher), teacher.schedule.alpha_bars,
                          prediction, weighting)

    compare_with_torch(ours, theirs, x0, w_student, dtype=np.float64, grad=[False, True])
    assert check_gradients(lambda w: ours(lamina.tensor(x0, dtype=np.float64), w), w_student)


def test_loss_draws_steps_and_noise_from_lamina_generator():
    teacher = DiffusionModel(TanhNet(randn(2, 2, seed=3)), "cosine", T, prediction="v")
    student = DiffusionModel(TanhNet(randn(2, 2, seed=1)), "cosine", T, prediction="v")
    x0 = randn(8, 2).astype(np.float32)
    lamina.manual_seed(4)
    first = progressive_distillation_loss(student, teacher, x0, 8).item()
    lamina.manual_seed(4)
    assert progressive_distillation_loss(student, teacher, x0, 8).item() == first
    # a student equal to its teacher still has a loss: one of its DDIM steps is not two of them
    same = DiffusionModel(TanhNet(randn(2, 2, seed=3)), "cosine", T, prediction="v")
    assert progressive_distillation_loss(same, teacher, x0, 8).item() > 0


def test_grid_sample_on_all_timesteps_is_ddim_sampling():
    model = DiffusionModel(TanhNet(randn(2, 2, seed=1)), "cosine", T, prediction="v", sample_shape=(2,))
    start = randn(3, 2, seed=5).astype(np.float32)
    np.testing.assert_array_equal(grid_sample(model, 3, T, start=start),
                                  model.sample(3, method="ddim", start=start))
    assert grid_sample(model, 3, 4, start=start).shape == (3, 2)


# -- learning ---------------------------------------------------------------------------------------------
CENTERS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def mixture(n, seed=0):
    rng = np.random.default_rng(seed)
    return (CENTERS[rng.integers(0, 3, n)] + 0.25 * rng.standard_normal((n, 2))).astype(np.float32)


def energy_distance(a, b):
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (the V-statistic of two samples)."""
    def mean_distance(p, q):
        return np.linalg.norm(p[:, None] - q[None], axis=2).mean()
    return 2 * mean_distance(a, b) - mean_distance(a, a) - mean_distance(b, b)


def test_four_step_student_of_a_64_step_teacher_learns_the_mixture():
    """Four rounds (64 -> 32 -> 16 -> 8 -> 4 steps) of 200 Adam steps each: the 4-step student's
    samples are far closer to the data than the teacher's own 4-step samples, and about as close
    as the teacher's 64-step ones."""
    lamina.manual_seed(0)
    x = mixture(2000)
    teacher = DiffusionModel(DenoisingMLP(hidden=(64, 64), time_dim=16), schedule="cosine", num_timesteps=T,
                             prediction="v")
    teacher(x[:1], np.zeros(1, dtype=np.int64))
    optimizer, rng = Adam(teacher, lr=5e-3), np.random.default_rng(1)
    for step in range(900):
        if step == 600:
            optimizer.lr = 1e-3
        loss = teacher.loss(x[rng.integers(0, len(x), 128)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    data, start = mixture(1000, seed=99), np.random.default_rng(5).standard_normal((1000, 2))
    teacher_64 = energy_distance(grid_sample(teacher, 1000, 64, start=start), data)
    teacher_4 = energy_distance(grid_sample(teacher, 1000, 4, start=start), data)
    student = progressive_distillation(teacher, x, rounds=4, steps_per_round=200, start_steps=64, lr=2e-3, seed=0)
    student_4 = energy_distance(grid_sample(student, 1000, 4, start=start), data)
    # measured (seeds 0-3, Haswell and SkylakeX kernels alike): teacher at 64 steps 0.003-0.010,
    # at 4 steps 0.031-0.057; student at 4 steps 0.004-0.011 (two samples of the data: 0.002)
    assert student_4 < 0.35 * teacher_4, (student_4, teacher_4)
    assert student_4 < teacher_64 + 0.005, (student_4, teacher_64)


# -- errors ---------------------------------------------------------------------------------------------
def test_errors_are_clear():
    teacher = DiffusionModel(TanhNet(randn(2, 2)), "cosine", T, prediction="v", sample_shape=(2,))
    x0 = randn(4, 2)
    wrong_shape = DiffusionModel(TanhNet(randn(3, 3)), "cosine", T, prediction="v", sample_shape=(3,))
    with pytest.raises(ShapeError, match=r"student makes samples of shape \(3,\), the teacher of \(2,\)"):
        progressive_distillation_loss(wrong_shape, teacher, x0, 4)
    other_schedule = DiffusionModel(TanhNet(randn(2, 2)), "linear", T, prediction="v")
    with pytest.raises(ValueError, match="student's schedule .* differs from the teacher's"):
        progressive_distillation_loss(other_schedule, teacher, x0, 4)
    student = DiffusionModel(TanhNet(randn(2, 2)), "cosine", T, prediction="v")
    with pytest.raises(ValueError, match="steps=40 needs a teacher of 80 steps, more than the schedule's 64"):
        progressive_distillation_loss(student, teacher, x0, 40)
    with pytest.raises(ValueError, match=r"indices must be 4 student steps in \[1, 4\]"):
        progressive_distillation_loss(student, teacher, x0, 4, indices=np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="weighting must be one of"):
        progressive_distillation_loss(student, teacher, x0, 4, weighting="snr")
    with pytest.raises(ShapeError, match=r"the teacher makes samples of shape \(2,\)"):
        progressive_distillation_loss(student, teacher, randn(4, 3), 4)
    with pytest.raises(ValueError, match="steps=65 exceeds the schedule's 64"):
        distillation_grid(T, 65)
    with pytest.raises(ValueError, match="t_target must be 2 integers with -1 <= t_target < t"):
        distillation_target(teacher.schedule, randn(2, 2), np.array([5, 5]), randn(2, 2), np.array([5, 1]))


def test_readme_example():
    """The section with shorter distillations (60 Adam steps per round, 60 of guidance distillation
    instead of 150 and 300): the four-step student's learning is asserted at full length above."""
    printed, _ = run_readme_section("Diffusion distillation", replace={"steps_per_round=150": "steps_per_round=60",
                                                                       "steps=300": "steps=60"})
    lines = printed.splitlines()
    distances = {line.split(":")[0]: float(line.split(":")[1]) for line in lines[:3]}
    # measured, both BLAS kernels: 0.007 (teacher, 64 steps), 0.022 (teacher, 4 steps), 0.007 (student, 4 steps)
    assert distances["student 4 steps"] < 0.6 * distances["teacher 4 steps"], distances
    assert lines[3] == "(500, 2)"
