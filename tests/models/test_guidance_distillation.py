"""Guidance distillation (Meng et al. 2023): the guidance-conditioned denoiser against a float64
torch rewrite and a gradient check, the loss and its gradients against torch, one net evaluation
per sample and step instead of two, learning a class-conditional mixture (and the second stage,
progressive distillation at guidance scales), saving, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import torch_diffusion as ref

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.models import (
    DenoisingMLP,
    DenoisingUNet,
    DiffusionModel,
    GuidanceDenoisingMLP,
    GuidanceDenoisingUNet,
    GuidanceDistilledDiffusion,
    grid_sample,
    guidance_distillation_loss,
    progressive_distillation_loss,
)
from lamina.nn import Module, functional_call
from lamina.optim import Adam
from lamina.train import guidance_distillation, progressive_distillation

T = 64


def _randomized(model, seed=0, scale=0.4):
    model.double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape) * scale
    return model


def torch_student(p, x, t, y, s, factor):
    """The GuidanceDenoisingMLP of two hidden layers, time_dim 4 and guidance_dim 6, in torch."""
    e = ref.time_features(p, t, y, 4, x.dtype)
    g = ref.timestep_embedding(factor * np.asarray(s), 6, x.dtype)
    e = e + ref.dense(p, "guidance_out", TF.silu(ref.dense(p, "guidance_in", g)))
    h = x
    for k in range(2):
        h = TF.silu(ref.dense(p, f"layers.{k}", h) + ref.dense(p, f"time_projections.{k}", e))
    return ref.dense(p, "head", h)


X, TS, Y, S = randn(4, 3, seed=1), np.array([0, 3, 17, 63]), np.array([0, 2, 3, 1]), np.array([1.0, 2.5, 4.0, 0.0])


def test_guidance_mlp_against_torch_and_gradcheck():
    lamina.set_default_dtype(np.float64)
    net = GuidanceDenoisingMLP(hidden=(6, 5), time_dim=4, num_classes=3, guidance_dim=6, guidance_factor=3.0)
    net(X, TS, Y, guidance=S)
    _randomized(net)
    names = [name for name, _ in net.named_parameters()]
    weights = [p.numpy().copy() for p in net.parameters()]

    def ours(x, *params):
        return functional_call(net, dict(zip(names, params)), x, TS, Y, guidance=S)

    def theirs(x, *params):
        return torch_student(dict(zip(names, params)), x, TS, Y, S, 3.0)

    compare_with_torch(ours, theirs, X, *weights, dtype=np.float64)
    assert check_gradients(ours, X, *weights)
    one = net(lamina.tensor(X), TS, Y, guidance=2.0).numpy()      # one scale for the batch
    np.testing.assert_array_equal(one, net(lamina.tensor(X), TS, Y, guidance=np.full(4, 2.0)).numpy())
    assert not np.allclose(one, net(lamina.tensor(X), TS, Y, guidance=3.0).numpy())


def test_guidance_unet_against_torch_and_gradcheck(monkeypatch):
    lamina.set_default_dtype(np.float64)
    net = GuidanceDenoisingUNet(base_filters=4, multipliers=(1, 2), groups=2, time_dim=6, num_classes=2,
                                guidance_factor=2.0)
    x, t, y, s = randn(2, 4, 4, 2, seed=1), np.array([3, 40]), np.array([1, 2]), np.array([1.5, 4.0])
    net(x, t, y, guidance=s)
    _randomized(net, scale=0.3)
    names = [name for name, _ in net.named_parameters()]
    weights = [p.numpy().copy() for p in net.parameters()]
    plain_features = ref.time_features

    def with_guidance(p, t, y, time_dim, dtype):      # e(t, y) + the embedding of 2 s (guidance_dim = time_dim)
        g = ref.timestep_embedding(2.0 * s, 6, dtype)
        return plain_features(p, t, y, time_dim, dtype) + ref.dense(p, "guidance_out",
                                                                    TF.silu(ref.dense(p, "guidance_in", g)))

    monkeypatch.setattr(ref, "time_features", with_guidance)

    def ours(x, *params):
        return functional_call(net, dict(zip(names, params)), x, t, y, guidance=s)

    def theirs(x, *params):
        return ref.denoising_unet(dict(zip(names, params)), x, t, 2, 2, 6, y)

    compare_with_torch(ours, theirs, x, *weights, dtype=np.float64)
    assert check_gradients(lambda x: net(x, t, y, guidance=s), x)


def test_a_unet_student_from_the_teacher_starts_as_the_conditional_teacher():
    lamina.set_default_dtype(np.float64)
    teacher = DiffusionModel(DenoisingUNet(base_filters=4, multipliers=(1, 2), groups=2, num_classes=2), "cosine", T)
    x, t, y = randn(2, 4, 4, 1, seed=1), np.array([3, 40]), np.array([1, 0])
    teacher(x, t, y)
    _randomized(teacher, scale=0.3)
    student = GuidanceDistilledDiffusion.from_teacher(teacher)
    assert type(student.net) is GuidanceDenoisingUNet and student.sample_shape == (4, 4, 1)
    np.testing.assert_array_equal(student(x, t, y, guidance=3.0).numpy(), teacher(x, t, y).numpy())
    assert student.sample(2, steps=2, method="ddim", labels=y, guidance_scale=2.0).shape == (2, 4, 4, 1)


def _teacher(seed=0, prediction="v"):
    teacher = DiffusionModel(DenoisingMLP(hidden=(6, 5), time_dim=4, num_classes=3), "cosine", T,
                             prediction=prediction)
    teacher(randn(1, 3), np.zeros(1, np.int64), np.zeros(1, np.int64))
    return _randomized(teacher, seed)


def test_a_student_from_the_teacher_starts_as_the_conditional_teacher():
    lamina.set_default_dtype(np.float64)
    teacher = _teacher()
    student = GuidanceDistilledDiffusion.from_teacher(teacher)
    assert student.prediction == "v" and student.sample_shape == (3,) and student.label_dropout == 0.0
    expected = teacher(lamina.tensor(X), TS, Y).numpy()
    for scale in (1.0, 4.0):
        np.testing.assert_array_equal(student(lamina.tensor(X), TS, Y, guidance=scale).numpy(), expected)


def test_loss_and_gradients_equal_a_torch_rewrite():
    lamina.set_default_dtype(np.float64)
    teacher = _teacher(seed=1)
    student = _randomized(GuidanceDistilledDiffusion.from_teacher(teacher, guidance_dim=6, guidance_factor=3.0), 2)
    teacher_p = {k: torch.tensor(v) for k, v in teacher.net.state_dict().items()}
    names = [name for name, _ in student.net.named_parameters()]
    weights = [p.numpy().copy() for p in student.net.parameters()]
    noise, x0 = randn(4, 3, seed=3), randn(4, 3, seed=4)

    class Loss(Module):
        def __init__(self):
            super().__init__()
            self.student = student

        def forward(self, x):
            return guidance_distillation_loss(self.student, teacher, x, Y % 3, t=TS, noise=noise, guidance_scale=S)

    loss = Loss()

    def ours(x, *params):
        return functional_call(loss, {f"student.net.{n}": p for n, p in zip(names, params)}, x)

    def theirs(x, *params):
        abar = torch.tensor(teacher.schedule.alpha_bars[TS])[:, None]
        z = torch.sqrt(abar) * x + torch.sqrt(1 - abar) * torch.tensor(noise)
        conditional = ref.denoising_mlp(teacher_p, z, TS, 2, 4, Y % 3)
        unconditional = ref.denoising_mlp(teacher_p, z, TS, 2, 4, np.full(4, 3))
        guided = unconditional + torch.tensor(S)[:, None] * (conditional - unconditional)
        out = torch_student(dict(zip(names, params)), z, TS, Y % 3, S, 3.0)
        return ((out - guided.detach()) ** 2).mean()

    compare_with_torch(ours, theirs, x0, *weights, dtype=np.float64, grad=[False] + [True] * len(weights))


def test_student_evaluates_its_net_once_per_sample_and_step():
    teacher = _teacher()
    student = GuidanceDistilledDiffusion.from_teacher(teacher)
    rows = {"teacher": 0, "student": 0}

    def counting(name, net):
        forward = net.forward

        def watched(x, *args, **kwargs):
            rows[name] += x.shape[0]
            return forward(x, *args, **kwargs)
        net.forward = watched

    counting("teacher", teacher.net)
    counting("student", student.net)
    start = randn(5, 3, seed=2)
    grid_sample(teacher, 5, 8, labels=np.arange(5) % 3, guidance_scale=3.0, start=start)
    student.sample(5, steps=8, method="ddim", labels=np.arange(5) % 3, guidance_scale=3.0, start=start)
    assert rows == {"teacher": 2 * 5 * 8, "student": 5 * 8}       # conditional and unconditional rows: 2x


# -- learning ------------------------------------------------------------------------------------------
CENTERS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def labelled_mixture(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (CENTERS[y] + 0.5 * rng.standard_normal((n, 2))).astype(np.float32), y


def rms(a):
    return float(np.sqrt(np.mean(a ** 2)))


def test_student_matches_the_guided_teacher_on_a_class_conditional_mixture():
    """A class-conditional teacher (label dropout 0.2) and a student distilled for scales s in
    [1, 5]: at random (z_t, t, y, s) the student's one-call output is far closer to the teacher's
    guided output than the teacher's conditional (unguided) output is, and 16-step guided samples
    from the student land near the teacher's; progressive distillation of the student (Meng et al.'s
    second stage) then brings its 4-step guided samples closer to the teacher's 64-step ones."""
    lamina.manual_seed(0)
    x, y = labelled_mixture(2000)
    teacher = DiffusionModel(DenoisingMLP(hidden=(64, 64), time_dim=16, num_classes=3), schedule="cosine",
                             num_timesteps=T, prediction="v", label_dropout=0.2)
    teacher(x[:1], np.zeros(1, dtype=np.int64), y[:1])
    optimizer, rng = Adam(teacher, lr=5e-3), np.random.default_rng(1)
    for step in range(600):
        if step == 400:
            optimizer.lr = 1e-3
        rows = rng.integers(0, len(x), 128)
        loss = teacher.loss(x[rows], labels=y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student = guidance_distillation(teacher, x, y, steps=600, lr=2e-3, seed=0)

    x_test, y_test = labelled_mixture(1000, seed=50)
    draw = np.random.default_rng(3)
    t, s = draw.integers(0, T, 1000), draw.uniform(1, 5, 1000)
    z = teacher.schedule.q_sample(x_test, t, draw.standard_normal((1000, 2)).astype(np.float32))
    with lamina.no_grad():
        conditional = teacher(z, t, y_test).numpy()
        unconditional = teacher(z, t, np.full(1000, 3)).numpy()
        one_call = student(z, t, y_test, guidance=s).numpy()
    guided = unconditional + s[:, None] * (conditional - unconditional)
    error, gap = rms(one_call - guided), rms(guided - conditional)
    # measured (seeds 0-3, Haswell and SkylakeX): error 0.138-0.150, gap 1.91-2.01
    assert error < 0.2 * gap, (error, gap)

    start, labels = np.random.default_rng(8).standard_normal((600, 2)), np.arange(600) % 3
    teacher_guided = grid_sample(teacher, 600, 16, labels=labels, guidance_scale=3.0, start=start)
    teacher_plain = grid_sample(teacher, 600, 16, labels=labels, start=start)
    student_guided = grid_sample(student, 600, 16, labels=labels, guidance_scale=3.0, start=start)
    # measured (seeds 0-3): 0.047-0.075 against 0.454-0.539
    assert rms(student_guided - teacher_guided) < 0.35 * rms(teacher_guided - teacher_plain)

    # the second stage: progressive distillation of the student, 16 -> 8 -> 4 steps at scales in [1, 5]
    few = progressive_distillation(student, x, rounds=2, steps_per_round=200, start_steps=16, labels=y,
                                   scale_range=(1.0, 5.0), lr=2e-3, seed=0)
    reference = grid_sample(teacher, 600, 64, labels=labels, guidance_scale=3.0, start=start)
    four_steps = rms(grid_sample(few, 600, 4, labels=labels, guidance_scale=3.0, start=start) - reference)
    undistilled = rms(grid_sample(student, 600, 4, labels=labels, guidance_scale=3.0, start=start) - reference)
    # measured (seeds 0-3): 0.052-0.074 against the first-stage student's 0.124-0.180 in 4 steps
    assert four_steps < 0.65 * undistilled, (four_steps, undistilled)


# -- saving and errors ---------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    student = GuidanceDistilledDiffusion.from_teacher(_teacher(), guidance_factor=4.0)
    for p in student.parameters():
        p.data = p.data + 0.1
    lamina.save(student, tmp_path / "student.safetensors")
    loaded = lamina.load(tmp_path / "student.safetensors")
    assert type(loaded) is GuidanceDistilledDiffusion and type(loaded.net) is GuidanceDenoisingMLP
    assert loaded.get_config() == student.get_config() and loaded.net.guidance_factor == 4.0
    z = randn(4, 3)
    np.testing.assert_array_equal(loaded(z, TS, Y % 3, guidance=S).numpy(), student(z, TS, Y % 3, guidance=S).numpy())


def test_errors_are_clear():
    unconditional = DiffusionModel(DenoisingMLP(hidden=(4,), time_dim=4), "cosine", T)
    unconditional(randn(1, 2), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="needs a class-conditional teacher .* DenoisingMLP has no classes"):
        GuidanceDistilledDiffusion.from_teacher(unconditional)
    teacher = _teacher()
    student = GuidanceDistilledDiffusion.from_teacher(teacher)
    x = randn(4, 3)
    with pytest.raises(ValueError, match="needs a class-conditional teacher"):
        guidance_distillation_loss(student, unconditional, x, Y % 3)
    with pytest.raises(ValueError, match="needs a class-conditional teacher"):
        guidance_distillation(unconditional, x, Y % 3, steps=1)
    with pytest.raises(TypeError, match="the student must be a GuidanceDistilledDiffusion"):
        guidance_distillation_loss(teacher, teacher, x, Y % 3)
    with pytest.raises(ValueError, match="needs the data's class labels"):
        guidance_distillation_loss(student, teacher, x, None)
    with pytest.raises(ValueError, match=r"guidance scale must be one finite number or 4 of them"):
        student(x, TS, Y % 3, guidance=np.ones(3))
    with pytest.raises(ShapeError, match=r"the teacher makes samples of shape \(3,\)"):
        guidance_distillation_loss(student, teacher, randn(4, 2), Y % 3)
    with pytest.raises(ValueError, match="guidance_factor must be a number > 0"):
        GuidanceDenoisingMLP(guidance_factor=0)
    with pytest.raises(TypeError, match="needs a teacher over a DenoisingMLP or a DenoisingUNet"):
        GuidanceDistilledDiffusion.from_teacher(student)


def test_progressive_loss_at_one_scale_per_sample_needs_a_guidance_distilled_model():
    teacher = _teacher()
    x = randn(4, 3)
    with pytest.raises(ValueError, match="one guidance scale per sample needs a teacher and a student"):
        progressive_distillation_loss(teacher, teacher, x, 4, labels=Y % 3, guidance_scale=S)
    student = GuidanceDistilledDiffusion.from_teacher(teacher)
    lamina.manual_seed(0)
    loss = progressive_distillation_loss(student, student, x, 4, labels=Y % 3, guidance_scale=S)
    assert np.isfinite(loss.item()) and loss.item() > 0
