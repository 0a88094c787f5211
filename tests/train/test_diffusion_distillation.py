"""The training loops of diffusion distillation (lamina.train.diffusion_distillation): each
progressive round halves the steps and hands the student on as the next teacher, guidance
distillation trains the scale embedding, and the distillers' errors (learning is tested in
tests/models/test_progressive_distillation.py and test_guidance_distillation.py)."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import randn
from lamina.errors import ShapeError
from lamina.models import DenoisingMLP, DiffusionModel, GuidanceDistilledDiffusion
from lamina.train import ProgressiveDistiller, guidance_distillation, progressive_distillation

T = 64


def _model(num_classes=None):
    model = DiffusionModel(DenoisingMLP(hidden=(8,), time_dim=4, num_classes=num_classes), "cosine", T,
                           prediction="v")
    model(randn(1, 2), np.zeros(1, np.int64), *([] if num_classes is None else [np.zeros(1, np.int64)]))
    return model


def test_each_round_halves_the_steps_and_the_student_becomes_the_teacher():
    lamina.set_default_dtype(np.float64)
    teacher = _model()
    before = {k: v.copy() for k, v in teacher.state_dict().items()}
    distiller = ProgressiveDistiller(teacher, start_steps=16, batch_size=8)
    assert distiller.student is not teacher and distiller.teacher is not teacher
    distiller.fit(randn(32, 2), rounds=2, steps_per_round=3, seed=0)
    assert distiller.teacher_steps == 4 and distiller.history["steps"] == [8, 4] and len(distiller.history["loss"]) == 2
    for name, value in distiller.teacher.state_dict().items():
        np.testing.assert_array_equal(value, distiller.student.state_dict()[name])   # the next teacher
        np.testing.assert_array_equal(teacher.state_dict()[name], before[name])       # the given model is left alone
    assert not np.array_equal(distiller.student.state_dict()["net.head.weight"], before["net.head.weight"])


def test_guidance_distillation_trains_the_scale_embedding():
    lamina.manual_seed(0)
    teacher = _model(num_classes=2)
    rng = np.random.default_rng(0)
    for p in teacher.parameters():          # a teacher whose guided output depends on the scale
        p.data = (rng.standard_normal(p.shape) * 0.5).astype(p.dtype)
    student = guidance_distillation(teacher, randn(16, 2), np.arange(16) % 2, steps=2, batch_size=4, seed=0)
    assert isinstance(student, GuidanceDistilledDiffusion) and not student.training
    assert np.abs(student.net.guidance_out.weight.numpy()).sum() > 0      # zero at the start, trained since


def test_errors_are_clear():
    teacher, x = _model(), randn(8, 2)
    with pytest.raises(ValueError, match="cannot halve an odd number of steps"):
        ProgressiveDistiller(teacher, start_steps=5).distill_round(x, 1)
    with pytest.raises(ValueError, match="12 steps cannot be halved 3 times"):
        progressive_distillation(teacher, x, rounds=3, steps_per_round=1, start_steps=12)
    wrong_shape = DiffusionModel(DenoisingMLP(hidden=(8,), time_dim=4), "cosine", T, sample_shape=(3,))
    with pytest.raises(ShapeError, match=r"student makes samples of shape \(3,\), the teacher of \(2,\)"):
        ProgressiveDistiller(teacher, wrong_shape)
    with pytest.raises(ValueError, match="start_steps=128 exceeds the teacher's 64 timesteps"):
        ProgressiveDistiller(teacher, start_steps=128)
    with pytest.raises(TypeError, match="the teacher must be a DiffusionModel"):
        ProgressiveDistiller(teacher.net)
    with pytest.raises(ValueError, match="needs a class-conditional teacher"):
        guidance_distillation(teacher, x, np.zeros(8, np.int64), steps=1)
    conditional = _model(num_classes=2)
    with pytest.raises(ValueError, match="labels must be 8 integers"):
        guidance_distillation(conditional, x, np.zeros(3, np.int64), steps=1)
    student = GuidanceDistilledDiffusion.from_teacher(conditional)
    with pytest.raises(ValueError, match="scale_range needs a teacher that takes the guidance scale"):
        ProgressiveDistiller(conditional, start_steps=8, scale_range=(1.0, 5.0))
    with pytest.raises(ValueError, match="needs the data's class labels"):
        ProgressiveDistiller(student, start_steps=8, scale_range=(1.0, 5.0)).distill_round(x, 1)
    with pytest.raises(ValueError, match="scale_range must have low <= high"):
        ProgressiveDistiller(student, start_steps=8, scale_range=(5.0, 1.0))
