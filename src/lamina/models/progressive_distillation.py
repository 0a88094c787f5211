"""Progressive distillation of a diffusion model (Salimans and Ho 2022, "Progressive Distillation
for Fast Sampling of Diffusion Models"): a student learns to do in one deterministic DDIM step
what its teacher does in two, and each round halves the number of sampling steps.

Notation: alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t) of the model's
:class:`~lamina.models.NoiseSchedule`, with alpha = 1, sigma = 0 at t = -1 (the data). A DDIM
step (eta = 0) from z_t with the prediction x^ of x_0 lands on

    z_s = alpha_s x^ + sigma_s (z_t - alpha_t x^) / sigma_t.

Sampling grid (:func:`distillation_grid`): N steps visit t_k = floor(k T / N + 1/2) - 1 for
k = N, ..., 0 (t_N = T - 1, t_0 = -1), so the grid of N / 2 steps is every other point of the
grid of N; :func:`grid_sample` samples on it.

Loss (:func:`progressive_distillation_loss`) for a student of N steps and a teacher of 2N: for
data x, a student step k ~ U{1 .. N} and eps ~ N(0, I), with t = t_k, t' its midpoint and
t'' = t_{k-1} on the teacher's grid, z_t = alpha_t x + sigma_t eps; the teacher's two DDIM steps
z_t -> z_t' -> z_t'' give the target (:func:`distillation_target`)

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t),

the x_0 with which one DDIM step from z_t lands exactly on z_t'' (x~ = z_t'' when t'' = -1). The
student's x-prediction x^ is compared in x-space,

    L = mean over the batch of w(t) ||x~ - x^(z_t)||^2,
    w = max(alpha_t^2 / sigma_t^2, 1)  ('truncated_snr')   or   1 + alpha_t^2 / sigma_t^2  ('snr_plus_one').

'snr_plus_one' is the v-prediction loss: x^ = alpha_t z_t - sigma_t v^ gives
(1 + SNR) ||x~ - x^||^2 = ||v~ - v^||^2.

Parameterisation: the student should predict v (or x_0), not eps. With eps-prediction
x^ = (z_t - sigma_t eps^) / alpha_t, which multiplies the net's error by 1 / alpha_t: at the
noisiest grid point (alpha_{T-1} ~ 1e-3 on the cosine schedule) the student's whole sample
rests on that one step, and with few steps no later step corrects it. All three are accepted
here; v is what the paper (and this module's tests) use. On a 2-D mixture (a 64-step teacher,
4 rounds to 4 steps) the energy distance to the data came out 0.004-0.011 with v, 0.020-0.042
with x_0 and 0.16-0.20 with eps (whose 64-step teacher is already at 0.12-0.33).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion import DiffusionModel, class_labels
from lamina.models.diffusion_schedule import NoiseSchedule
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import as_tensor, evaluation_mode

__all__ = ["DISTILLATION_WEIGHTINGS", "distillation_grid", "distillation_target", "distillation_weight",
           "grid_sample", "progressive_distillation_loss"]

DISTILLATION_WEIGHTINGS = ("snr_plus_one", "truncated_snr")


def distillation_grid(num_timesteps: int, steps: int) -> np.ndarray:
    """The N + 1 = ``steps`` + 1 increasing timesteps t_0 = -1 < t_1 < ... < t_N = T - 1 of N-step
    sampling, t_k = floor(k T / N + 1/2) - 1 (integer arithmetic, so the grid of N / 2 steps is
    exactly every other point of the grid of N)."""
    T = positive_int(num_timesteps, "distillation_grid: num_timesteps")
    N = positive_int(steps, "distillation_grid: steps")
    if N > T:
        raise ValueError(f"distillation_grid: steps={N} exceeds the schedule's {T} timesteps")
    k = np.arange(N + 1, dtype=np.int64)
    return (2 * k * T + N) // (2 * N) - 1


def _alpha_sigma(schedule: NoiseSchedule, t) -> tuple[np.ndarray, np.ndarray]:
    """alpha_t and sigma_t (float64) at timesteps ``t`` (-1: the data, alpha 1, sigma 0)."""
    t = np.asarray(t, dtype=np.int64)
    abar = np.where(t >= 0, schedule.alpha_bars[np.maximum(t, 0)], 1.0)
    return np.sqrt(abar), np.sqrt(1.0 - abar)


def distillation_target(schedule: NoiseSchedule, z_t, t, z_target, t_target) -> np.ndarray:
    """x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t) (module
    notes): the x_0 with which one DDIM step from ``z_t`` at timesteps ``t`` lands on ``z_target``
    at the earlier timesteps ``t_target`` (-1 allowed). NumPy arrays (N, ...) and N (or one)
    timesteps; computed in float64 at least."""
    z_t, z_target = np.asarray(z_t), np.asarray(z_target)
    if z_t.shape != z_target.shape or z_t.ndim < 1:
        raise ShapeError(f"distillation_target: z_t of {describe(z_t)} and z_target of {describe(z_target)} must be "
                         "batches (N, ...) of one shape")
    n = z_t.shape[0]
    steps = schedule.timesteps(t, n, "distillation_target")
    target_steps = np.asarray(t_target, dtype=np.int64)
    target_steps = np.full(n, int(target_steps)) if target_steps.ndim == 0 else target_steps
    if target_steps.shape != (n,) or np.any(target_steps < -1) or np.any(target_steps >= steps):
        raise ValueError(f"distillation_target: t_target must be {n} integers with -1 <= t_target < t, got "
                         f"{describe(target_steps)}")
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    alpha, sigma = (a.reshape(shape) for a in _alpha_sigma(schedule, steps))
    alpha_target, sigma_target = (a.reshape(shape) for a in _alpha_sigma(schedule, target_steps))
    ratio = sigma_target / sigma
    dtype = np.result_type(z_t.dtype, np.float64)
    return (z_target.astype(dtype) - ratio * z_t.astype(dtype)) / (alpha_target - ratio * alpha)


def distillation_weight(schedule: NoiseSchedule, t, weighting: str = "snr_plus_one") -> np.ndarray:
    """w(t) of the x-space loss (module notes): 1 + SNR ('snr_plus_one') or max(SNR, 1)
    ('truncated_snr'), SNR = alpha_t^2 / sigma_t^2, at timesteps ``t`` >= 0 (float64)."""
    if weighting not in DISTILLATION_WEIGHTINGS:
        raise ValueError(f"distillation_weight: weighting must be one of {DISTILLATION_WEIGHTINGS}, got "
                         f"{weighting!r}")
    abar = schedule.alpha_bars[schedule.timesteps(np.asarray(t), np.asarray(t).size, "distillation_weight")]
    snr = abar / (1.0 - abar)
    return 1.0 + snr if weighting == "snr_plus_one" else np.maximum(snr, 1.0)


def check_student(student, teacher: DiffusionModel, who: str) -> None:
    """A TypeError, ValueError or ShapeError naming ``who`` unless ``student`` is a DiffusionModel on the
    teacher's schedule making samples of the teacher's shape."""
    if not isinstance(student, DiffusionModel) or not isinstance(teacher, DiffusionModel):
        raise TypeError(f"{who}: the teacher and the student must be DiffusionModels, got "
                        f"{type(teacher).__name__} and {type(student).__name__}")
    if student.num_timesteps != teacher.num_timesteps or not np.allclose(
            student.schedule.alpha_bars, teacher.schedule.alpha_bars, rtol=1e-12, atol=0):
        raise ValueError(f"{who}: the student's schedule ({student.schedule!r}) differs from the teacher's "
                         f"({teacher.schedule!r}); distillation needs one schedule")
    if None not in (student.sample_shape, teacher.sample_shape) and student.sample_shape != teacher.sample_shape:
        raise ShapeError(f"{who}: the student makes samples of shape {student.sample_shape}, the teacher of "
                         f"{teacher.sample_shape}; they must match")


def _teacher_two_steps(teacher: DiffusionModel, z_t: Tensor, t, t_mid, t_target, labels,
                       guidance_scale) -> np.ndarray:
    """z_t'' after two deterministic DDIM steps of the teacher, t -> t' -> t''."""
    with no_grad(), evaluation_mode(teacher):
        x0, eps = teacher.predict_x0_eps(z_t, t, labels, guidance_scale)
        z_mid = teacher.schedule.ddim_step(x0, eps, t, t_mid)
        x0, eps = teacher.predict_x0_eps(z_mid, t_mid, labels, guidance_scale)
        z_target = teacher.schedule.ddim_step(x0, eps, t_mid, t_target)
    return np.asarray(backend.to_numpy(z_target.data))


def noise_like(x0: Tensor, noise, rng, who: str) -> Tensor:
    """The noise eps of a distillation step: ``noise`` (array or tensor) checked to have x0's
    shape and cast to its dtype, or standard normal draws of ``rng`` when None."""
    if noise is None:
        noise = rng.standard_normal(x0.shape)
    noise = Tensor._wrap(backend.xp.asarray(backend.to_numpy(noise.data) if isinstance(noise, Tensor) else noise,
                                            dtype=x0.dtype))
    if noise.shape != x0.shape:
        raise ShapeError(f"{who}: noise of {describe(noise)} does not match x0 of {describe(x0)}")
    return noise


def progressive_distillation_loss(student: DiffusionModel, teacher: DiffusionModel, x0, steps: int,
                                  weighting: str = "snr_plus_one", labels=None, guidance_scale: float = 1.0,
                                  indices=None, noise=None) -> Tensor:
    """The x-space loss of the module notes for a ``student`` of ``steps`` = N DDIM steps and its
    ``teacher`` of 2N, on the data ``x0`` (N_batch, ...). ``indices`` (student steps k in 1 .. N)
    and ``noise`` eps are drawn from lamina's generator unless given. ``labels`` and
    ``guidance_scale`` go to both models (a class-conditional, or guided, teacher); N scales, one
    per sample, need models that take the scale as an input (a
    :class:`~lamina.models.GuidanceDistilledDiffusion`: Meng et al.'s second stage). Gradients
    flow into the student only."""
    who = "progressive_distillation_loss"
    check_student(student, teacher, who)
    steps = positive_int(steps, f"{who}: steps")
    if 2 * steps > teacher.num_timesteps:
        raise ValueError(f"{who}: a student of steps={steps} needs a teacher of {2 * steps} steps, more than the "
                         f"schedule's {teacher.num_timesteps} timesteps")
    if weighting not in DISTILLATION_WEIGHTINGS:
        raise ValueError(f"{who}: weighting must be one of {DISTILLATION_WEIGHTINGS}, got {weighting!r}")
    x0 = as_tensor(x0)
    if x0.ndim < 2:
        raise ShapeError(f"{who}: x0 must be a batch (N, ...), got {describe(x0)}")
    if teacher.sample_shape is not None and tuple(x0.shape[1:]) != teacher.sample_shape:
        raise ShapeError(f"{who}: got data of {describe(x0)}; the teacher makes samples of shape "
                         f"{teacher.sample_shape}")
    n, rng = x0.shape[0], backend.rng()
    if indices is None:
        indices = rng.integers(1, steps + 1, n)
    indices = np.asarray(indices)
    if indices.shape != (n,) or indices.dtype.kind not in "iu" or indices.min() < 1 or indices.max() > steps:
        raise ValueError(f"{who}: indices must be {n} student steps in [1, {steps}], got {describe(indices)}")
    noise = noise_like(x0, noise, rng, who)
    labels = class_labels(labels, n, teacher.num_classes, who)
    if np.ndim(guidance_scale) != 0 and not (getattr(teacher, "guidance_as_input", False)
                                             and getattr(student, "guidance_as_input", False)):
        raise ValueError(f"{who}: one guidance scale per sample needs a teacher and a student that take the scale "
                         f"as an input (GuidanceDistilledDiffusion), got {type(teacher).__name__} and "
                         f"{type(student).__name__}")
    grid = distillation_grid(teacher.num_timesteps, 2 * steps)
    t, t_mid, t_target = grid[2 * indices], grid[2 * indices - 1], grid[2 * indices - 2]
    z_t = teacher.schedule.q_sample(Tensor._wrap(x0.data), t, noise)
    z_target = _teacher_two_steps(teacher, z_t, t, t_mid, t_target, labels, guidance_scale)
    target = distillation_target(teacher.schedule, backend.to_numpy(z_t.data), t, z_target, t_target)
    x_hat, _ = student.predict_x0_eps(z_t, t, labels, guidance_scale)
    if tuple(x_hat.shape) != tuple(x0.shape):
        raise ShapeError(f"{who}: the student gives {describe(x_hat)} for data of {describe(x0)}; it must give "
                         "the data's shape")
    shape = (-1,) + (1,) * (x0.ndim - 1)
    weight = distillation_weight(teacher.schedule, t, weighting).reshape(shape)
    diff = x_hat - Tensor._wrap(backend.xp.asarray(target.astype(x0.dtype)))
    return (Tensor._wrap(backend.xp.asarray(weight.astype(x0.dtype))) * diff * diff).mean()


def grid_sample(model: DiffusionModel, n: int, steps: int, labels=None, guidance_scale: float = 1.0,
                start=None) -> np.ndarray:
    """``n`` samples of ``model`` by ``steps`` deterministic DDIM steps along
    :func:`distillation_grid` (the grid its progressive distillation trained), from x_T =
    ``start`` (default N(0, I) from lamina's generator); ``labels`` and ``guidance_scale`` as in
    :meth:`DiffusionModel.sample`. A NumPy array (n, *sample_shape)."""
    who = f"{model._label()}.grid_sample" if isinstance(model, DiffusionModel) else "grid_sample"
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"{who}: model must be a DiffusionModel, got {type(model).__name__}")
    n = positive_int(n, f"{who}: n")
    if model.sample_shape is None:
        raise RuntimeError(f"{who}: the sample shape is unknown; give sample_shape= or train the model first")
    grid = distillation_grid(model.num_timesteps, steps)
    y = class_labels(labels, n, model.num_classes, who)
    params = model.parameters()
    dtype = params[0].dtype if params else backend.get_default_dtype()
    shape = (n, *model.sample_shape)
    start = backend.rng().standard_normal(shape) if start is None else np.asarray(start)
    if start.shape != shape:
        raise ShapeError(f"{who}: start of {describe(start)} must have shape {shape}")
    x = Tensor._wrap(backend.xp.asarray(start, dtype=dtype))
    with no_grad(), evaluation_mode(model):
        for k in range(len(grid) - 1, 0, -1):
            x0, eps = model.predict_x0_eps(x, grid[k], y, guidance_scale)
            x = model.schedule.ddim_step(x0, eps, grid[k], grid[k - 1])
    return np.asarray(backend.to_numpy(x.data))
