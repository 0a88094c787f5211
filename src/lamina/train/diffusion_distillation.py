"""Training loops that distil a diffusion model (:class:`lamina.models.DiffusionModel`) into
faster samplers:

* :class:`ProgressiveDistiller` / :func:`progressive_distillation` (Salimans and Ho 2022): from a
  teacher sampled with N deterministic DDIM steps, ``rounds`` halvings N -> N/2 -> ...; in each
  round a student (initialised from the teacher) takes ``steps_per_round`` Adam steps on
  :func:`~lamina.models.progressive_distillation_loss`, its learning rate falling linearly from
  ``lr`` to 0, then becomes the next round's teacher. Sample the result with
  :func:`~lamina.models.grid_sample` on N / 2^rounds steps. With ``scale_range`` the teacher is a
  guidance-distilled model and each sample gets a scale drawn from that range (Meng et al.'s
  second stage: a few-step student for every guidance scale).
* :func:`guidance_distillation` (Meng et al. 2023, first stage): a
  :class:`~lamina.models.GuidanceDistilledDiffusion` student learns the class-conditional
  teacher's guided output for scales drawn from ``scale_range``
  (:func:`~lamina.models.guidance_distillation_loss`).

Mini-batches are drawn with replacement from the data by a NumPy generator seeded with
``seed``; timesteps, noise and scales come from lamina's generator.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from lamina import backend
from lamina.models.diffusion import DiffusionModel
from lamina.models.guidance_distillation import GuidanceDistilledDiffusion, guidance_distillation_loss
from lamina.models.progressive_distillation import (
    DISTILLATION_WEIGHTINGS,
    check_student,
    progressive_distillation_loss,
)
from lamina.nn.layer import positive_int
from lamina.optim import Adam, clip_grad_norm
from lamina.train.generative import _samples

__all__ = ["ProgressiveDistiller", "guidance_distillation", "progressive_distillation"]


def _labels_for(labels, n: int, who: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{who}: labels must be {n} integers, one per sample, got shape {labels.shape} "
                         f"({labels.dtype})")
    return labels


def _adam_steps(model, loss_of_batch, x: np.ndarray, labels, steps: int, batch_size: int, lr: float,
                clip_norm: float | None, rng: np.random.Generator) -> list[float]:
    """``steps`` Adam steps on ``loss_of_batch(x_batch, labels_batch)``, the learning rate falling
    linearly from ``lr`` to 0; returns the losses."""
    optimizer = Adam(model, lr=lr)
    losses = []
    for step in range(steps):
        optimizer.lr = lr * (1.0 - step / steps)
        rows = rng.integers(0, len(x), batch_size)
        loss = loss_of_batch(x[rows], None if labels is None else labels[rows])
        optimizer.zero_grad()
        loss.backward()
        if clip_norm is not None:
            clip_grad_norm(model, clip_norm)
        optimizer.step()
        losses.append(float(loss.item()))
    return losses


def _scale_range(scale_range, who: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: scale_range must be a (low, high) pair, got {scale_range!r}") from None
    if not low <= high:
        raise ValueError(f"{who}: scale_range must have low <= high, got {scale_range!r}")
    return low, high


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{what} must be a number > 0, got {value!r}")
    return float(value)


class ProgressiveDistiller:
    """Progressive distillation of ``teacher`` (a trained DiffusionModel) sampled with
    ``start_steps`` = N DDIM steps on :func:`~lamina.models.distillation_grid`.

    ``student``: the first student (default: a copy of the teacher, as in the paper); it must
    share the teacher's schedule and sample shape. ``weighting``: 'snr_plus_one' or
    'truncated_snr'; ``lr``, ``batch_size``, ``clip_norm``: Adam's settings within a round.
    ``scale_range``: None, or (low, high) to distil a :class:`~lamina.models.GuidanceDistilledDiffusion`
    at guidance scales drawn uniformly from it (class labels needed).
    :attr:`teacher_steps` is the current teacher's N, :attr:`history` the per-round ``loss``
    (the mean over the round's last quarter) and ``steps`` (the student's N after the round).
    """

    def __init__(self, teacher: DiffusionModel, student: DiffusionModel | None = None, start_steps: int = 64,
                 lr: float = 1e-3, weighting: str = "snr_plus_one", batch_size: int = 128,
                 clip_norm: float | None = None, scale_range=None):
        who = "ProgressiveDistiller"
        if not isinstance(teacher, DiffusionModel):
            raise TypeError(f"{who}: the teacher must be a DiffusionModel, got {type(teacher).__name__}")
        self.teacher_steps = positive_int(start_steps, f"{who}: start_steps")
        if self.teacher_steps > teacher.num_timesteps:
            raise ValueError(f"{who}: start_steps={start_steps} exceeds the teacher's {teacher.num_timesteps} "
                             "timesteps")
        if weighting not in DISTILLATION_WEIGHTINGS:
            raise ValueError(f"{who}: weighting must be one of {DISTILLATION_WEIGHTINGS}, got {weighting!r}")
        if student is None:
            student = copy.deepcopy(teacher)
        check_student(student, teacher, who)
        self.teacher = copy.deepcopy(teacher)
        self.teacher.eval()
        self.student = student
        self.lr = _positive_number(lr, f"{who}: lr")
        self.weighting = weighting
        self.batch_size = positive_int(batch_size, f"{who}: batch_size")
        self.clip_norm = None if clip_norm is None else _positive_number(clip_norm, f"{who}: clip_norm")
        self.scale_range = None if scale_range is None else _scale_range(scale_range, who)
        if self.scale_range is not None and not getattr(teacher, "guidance_as_input", False):
            raise ValueError(f"{who}: scale_range needs a teacher that takes the guidance scale as an input (a "
                             f"GuidanceDistilledDiffusion), got {type(teacher).__name__}")
        self.history: dict[str, list] = {"loss": [], "steps": []}

    def distill_round(self, x, steps_per_round: int, labels=None, seed: int | None = None) -> DiffusionModel:
        """One halving: the student learns N / 2 steps from the teacher's N, then becomes the
        teacher. Returns the student (its N is :attr:`teacher_steps` afterwards)."""
        who = "ProgressiveDistiller.distill_round"
        if self.teacher_steps % 2:
            raise ValueError(f"{who}: cannot halve an odd number of steps ({self.teacher_steps}); start from a "
                             "power of two times the final steps")
        x = _samples(x, who)
        labels = _labels_for(labels, len(x), who)
        steps_per_round = positive_int(steps_per_round, f"{who}: steps_per_round")
        if self.scale_range is not None and labels is None:
            raise ValueError(f"{who}: distilling at guidance scales (scale_range) needs the data's class labels")
        student_steps = self.teacher_steps // 2
        self.student.train()

        def loss_of_batch(batch, batch_labels):
            scales = 1.0 if self.scale_range is None else backend.rng().uniform(*self.scale_range, len(batch))
            return progressive_distillation_loss(self.student, self.teacher, batch, student_steps, self.weighting,
                                                 labels=batch_labels, guidance_scale=scales)

        losses = _adam_steps(self.student, loss_of_batch, x, labels, steps_per_round, self.batch_size, self.lr,
                             self.clip_norm, np.random.default_rng(seed))
        self.student.eval()
        self.teacher = copy.deepcopy(self.student)
        self.teacher_steps = student_steps
        self.history["loss"].append(float(np.mean(losses[-max(1, len(losses) // 4):])))
        self.history["steps"].append(student_steps)
        return self.student

    def fit(self, x, rounds: int, steps_per_round: int, labels=None, seed: int | None = None) -> DiffusionModel:
        """``rounds`` halvings (N -> N / 2^rounds), each of ``steps_per_round`` Adam steps, on the data
        ``x`` (and class ``labels``). Checks first that N halves that often. Returns the student."""
        rounds = positive_int(rounds, "ProgressiveDistiller.fit: rounds")
        if self.teacher_steps % (2 ** rounds):
            raise ValueError(f"ProgressiveDistiller.fit: {self.teacher_steps} steps cannot be halved {rounds} times "
                             f"(an odd number of steps would be left); use a multiple of {2 ** rounds}")
        seeds = np.random.SeedSequence(seed).spawn(rounds)
        for r in range(rounds):
            self.distill_round(x, steps_per_round, labels, seed=int(seeds[r].generate_state(1)[0]))
        return self.student


def progressive_distillation(teacher: DiffusionModel, x, rounds: int, steps_per_round: int, start_steps: int = 64,
                             student: DiffusionModel | None = None, lr: float = 1e-3,
                             weighting: str = "snr_plus_one", batch_size: int = 128, labels=None,
                             scale_range=None, seed: int | None = None) -> DiffusionModel:
    """Distil ``teacher`` (sampled with ``start_steps`` DDIM steps) over ``rounds`` halvings of
    ``steps_per_round`` Adam steps each (see :class:`ProgressiveDistiller`); returns the student,
    which samples with start_steps / 2^rounds steps by :func:`~lamina.models.grid_sample`.
    ``scale_range``: distil a guidance-distilled teacher at scales drawn from it."""
    distiller = ProgressiveDistiller(teacher, student, start_steps, lr, weighting, batch_size,
                                     scale_range=scale_range)
    return distiller.fit(x, rounds, steps_per_round, labels, seed)


def guidance_distillation(teacher: DiffusionModel, x, labels, steps: int, student: GuidanceDistilledDiffusion
                          | None = None, scale_range=(1.0, 5.0), lr: float = 1e-3, batch_size: int = 128,
                          seed: int | None = None) -> GuidanceDistilledDiffusion:
    """Train a guidance-conditioned student (default
    :meth:`GuidanceDistilledDiffusion.from_teacher`) for ``steps`` Adam steps (learning rate
    falling linearly to 0) to match the class-conditional ``teacher``'s guided output for
    guidance scales in ``scale_range``, on the data ``x`` with class ``labels``. Returns it."""
    who = "guidance_distillation"
    x = _samples(x, who)
    labels = _labels_for(labels, len(x), who)
    if labels is None:
        raise ValueError(f"{who}: needs the data's class labels")
    if student is None:
        student = GuidanceDistilledDiffusion.from_teacher(teacher)
    steps = positive_int(steps, f"{who}: steps")
    teacher.eval()
    student.train()

    def loss_of_batch(batch, batch_labels):
        return guidance_distillation_loss(student, teacher, batch, batch_labels, scale_range)

    _adam_steps(student, loss_of_batch, x, labels, steps, positive_int(batch_size, f"{who}: batch_size"),
                _positive_number(lr, f"{who}: lr"), None, np.random.default_rng(seed))
    student.eval()
    return student
