"""DiffWave's training loss and samplers (Kong et al. 2021, Algorithms 1 and 2 and Section 4).

Training: for a waveform x_0, a step t uniform on 0 .. T-1 and eps ~ N(0, I), the network sees
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps and is trained to predict eps, by the
mean absolute error ('l1', the authors' code) or the mean squared error ('l2', the paper).

Sampling runs a reverse process on a variance schedule eta_1 .. eta_S, with gamma_s = 1 - eta_s
and gamma_bar_s = prod_{s' <= s} gamma_s':

    x_{s-1} = (x_s - eta_s / sqrt(1 - gamma_bar_s) eps_theta(x_s, t_s)) / sqrt(gamma_s) + sigma_s z,
    sigma_s^2 = eta_s (1 - gamma_bar_{s-1}) / (1 - gamma_bar_s)    (no noise at s = 1),

from x_S ~ N(0, I). With eta = the training betas (S = T) this is the full reverse process and
t_s is the step s itself. The fast sampler uses a short user-chosen schedule (S = T_infer, e.g.
:data:`FAST_SCHEDULE`, the paper's six for T = 50) and feeds the network the aligned step
(:func:`align_steps`): for gamma_bar_s between alpha_bar_{t+1} and alpha_bar_t,

    t_s^align = t + (sqrt(alpha_bar_t) - sqrt(gamma_bar_s)) / (sqrt(alpha_bar_t) - sqrt(alpha_bar_{t+1})),

so that the noise level the network sees matches the one it was trained on at that step. Steps
are counted from 0 here (lamina's :class:`~lamina.models.NoiseSchedule`); the paper's t_s^align,
counted from 1, is one more.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion_schedule import NoiseSchedule
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import as_tensor, evaluation_mode

__all__ = ["DIFFWAVE_LOSSES", "FAST_SCHEDULE", "DiffWaveSampling", "align_steps"]

DIFFWAVE_LOSSES = ("l1", "l2")
FAST_SCHEDULE = (1e-4, 1e-3, 1e-2, 5e-2, 0.2, 0.5)    # the paper's T_infer = 6 schedule for T = 50


def align_steps(train_betas, infer_betas) -> np.ndarray:
    """t_s^align (0-based, fractional) of each step of the variance schedule ``infer_betas``
    (eta_1 .. eta_S) on the training schedule ``train_betas`` (module notes). Every gamma_bar_s
    must lie within [alpha_bar_{T-1}, alpha_bar_0]."""
    train = NoiseSchedule(train_betas).alpha_bars
    infer = NoiseSchedule(infer_betas).alpha_bars
    roots = np.sqrt(train)
    aligned = np.zeros(infer.size)
    for s, gamma_bar in enumerate(infer):
        if gamma_bar > train[0] or gamma_bar < train[-1]:
            raise ValueError(f"align_steps: gamma_bar_{s + 1} = {gamma_bar:.6g} lies outside the training "
                             f"schedule's alpha_bar range [{train[-1]:.6g}, {train[0]:.6g}]; choose the "
                             f"variance schedule so that it noises as much as some training step")
        if train.size == 1:
            continue
        # the last t with alpha_bar_t >= gamma_bar (alpha_bar decreases), at most T - 2
        t = min(int(np.searchsorted(-train, -gamma_bar, side="right")) - 1, train.size - 2)
        aligned[s] = t + (roots[t] - np.sqrt(gamma_bar)) / (roots[t] - roots[t + 1])
    return aligned


class DiffWaveSampling:
    """The schedule, loss and samplers of :class:`~lamina.models.DiffWave` (a mixin: the
    network's ``forward(audio, t, mel)`` predicts the noise)."""

    def init_schedule(self, num_timesteps: int, beta_start: float, beta_end: float, loss_type: str) -> None:
        T = positive_int(num_timesteps, f"{type(self).__name__}: num_timesteps")
        if loss_type not in DIFFWAVE_LOSSES:
            raise ValueError(f"{type(self).__name__}: loss_type must be one of {DIFFWAVE_LOSSES}, got {loss_type!r}")
        self.schedule = NoiseSchedule.linear(T, beta_start, beta_end)
        self.loss_type = loss_type

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def loss(self, audio, mel=None, rng: np.random.Generator | None = None) -> Tensor:
        """The noise-prediction loss on waveforms ``audio`` (batch, L): t uniform on 0 .. T-1 and
        eps ~ N(0, I) drawn from ``rng`` (default: a fresh generator), the mean |eps - eps_theta|
        ('l1') or squared difference ('l2')."""
        audio = as_tensor(audio)
        if audio.ndim != 2:
            raise ShapeError(f"{self._label()}.loss: expected waveforms (batch, samples), got {describe(audio)}")
        rng = np.random.default_rng() if rng is None else rng
        t = rng.integers(0, self.num_timesteps, audio.shape[0])
        noise = Tensor._wrap(backend.xp.asarray(rng.standard_normal(audio.shape).astype(audio.dtype)))
        predicted = self(self.schedule.q_sample(audio, t, noise), t, mel)
        if self.loss_type == "l1":
            return F.l1_loss(predicted, noise)
        return F.mse_loss(predicted, noise)

    def sample(self, n: int | None = None, length: int | None = None, mel=None, infer_betas=None,
               seed: int | None = None, clip: float | None = None) -> np.ndarray:
        """Waveforms (n, length) drawn by the reverse process (module notes). Unconditional: give
        ``n`` and ``length``; conditional: ``mel`` (batch, frames, n_mels) sets both.
        ``infer_betas``: None for the full T-step process, else a variance schedule for the fast
        sampler (e.g. :data:`FAST_SCHEDULE`). ``seed`` makes the draw repeatable; ``clip``
        clamps every step to [-clip, clip] (the authors' code uses 1)."""
        if mel is not None:
            mel = as_tensor(mel)
            if mel.ndim != 3 or self.hop_length is None:
                raise ShapeError(f"{self._label()}.sample: mel must be (batch, frames, n_mels) for a conditional "
                                 f"model, got {describe(mel)} (n_mels={self.n_mels})")
            n, length = mel.shape[0], mel.shape[1] * self.hop_length
        if n is None or length is None:
            raise ValueError(f"{self._label()}.sample: give n and length (or mel frames when conditional)")
        n, length = positive_int(n, "DiffWave.sample: n"), positive_int(length, "DiffWave.sample: length")
        if infer_betas is None:
            etas, steps = self.schedule.betas, np.arange(self.num_timesteps, dtype=np.float64)
        else:
            etas = np.asarray(infer_betas, dtype=np.float64)
            steps = align_steps(self.schedule.betas, etas)
        reverse = NoiseSchedule(etas)
        rng = np.random.default_rng(seed)
        dtype = backend.get_default_dtype()
        x = rng.standard_normal((n, length))
        with no_grad(), evaluation_mode(self):
            for s in range(etas.size - 1, -1, -1):
                eps = backend.to_numpy(self(Tensor._wrap(backend.xp.asarray(x.astype(dtype))),
                                            np.full(n, steps[s]), mel).data).astype(np.float64)
                x = (x - etas[s] / np.sqrt(1.0 - reverse.alpha_bars[s]) * eps) / np.sqrt(reverse.alphas[s])
                if s > 0:
                    x = x + np.sqrt(reverse.posterior_variance[s]) * rng.standard_normal(x.shape)
                if clip is not None:
                    x = np.clip(x, -clip, clip)
        return x.astype(dtype)
