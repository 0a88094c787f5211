"""Diffusion over discrete tokens: D3PM (Austin et al. 2021, "Structured Denoising Diffusion
Models in Discrete State-Spaces") and MDLM (Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models"), with :class:`DiscreteDiffusionLM`, a bidirectional transformer
denoiser for both.

D3PM (:class:`D3PM`), T steps over S states. Row x of the (S, S) matrix Q_t is q(x_t | x_{t-1} = x):

    uniform:    Q_t = (1 - beta_t) I + beta_t 1 1^T / S                  (S = vocab_size)
    absorbing:  Q_t = (1 - beta_t) I + beta_t 1 e_m^T                    (S = vocab_size + 1, m = [MASK])

    q(x_t | x_0) = row x_0 of Qbar_t = Q_1 Q_2 ... Q_t
    q(x_{t-1} | x_t, x_0) = Q_t[:, x_t] * Qbar_{t-1}[x_0, :] / Qbar_t[x_0, x_t]
    p(x_{t-1} | x_t) = sum_x0 q(x_{t-1} | x_t, x0) p(x0 | x_t)        (x0-parameterisation)

x0 that cannot have produced x_t (Qbar_t[x0, x_t] = 0) are left out of the sum and the result
renormalised (a no-op when p(x0 | x_t) gives them no mass). The hybrid loss at a step t drawn
uniformly from 1..T is L_vb + lambda CE, with L_vb = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
for t > 1, -log p(x_0 | x_1) for t = 1, and CE = -log p(x_0 | x_t), averaged over tokens.
:meth:`D3PM.nll_bound` adds up every term plus KL(q(x_T | x_0) || p(x_T)).

MDLM (:class:`MaskedDiffusion`): continuous time t in [0, 1], each token independently kept with
probability alpha_t and replaced by [MASK] (id ``vocab_size``) otherwise, alpha_t = 1 - (1 - eps) g(t)
with g(t) = t ("loglinear", the default) or 1 - cos(pi t / 2) ("cosine"). The SUBS
parameterisation (:func:`subs_log_probs`) gives [MASK] zero probability and copies unmasked tokens,
so the negative ELBO per token is

    L = E_t [ alpha'_t / (1 - alpha_t) * sum over masked l of log p(x0_l | x_t) ] / L_tokens

(alpha'_t / (1 - alpha_t) = -g'(t) / g(t): -1 / t for "loglinear"), a weighted masked
cross-entropy. Ancestral sampling in T steps from t = 1 (all masked) to 0: going from t to
s = t - 1/T a masked token becomes x ~ p(x0 | x_t) with probability (alpha_s - alpha_t) / (1 - alpha_t)
and stays masked otherwise; unmasked tokens never change. With ``cache=True`` the network is not
called again while no token changed (exact for a time-free denoiser, as in the paper).

Example::

    lm = DiscreteDiffusionLM(vocab_size=4, seq_len=8, dim=32, depth=2, heads=4)
    mdlm = MaskedDiffusion(vocab_size=4)
    lamina.train.train_discrete_diffusion(lm, mdlm, tokens, epochs=10, batch_size=64, lr=3e-3)
    samples = mdlm.sample(lm, 16, seq_len=8, steps=32)
    mdlm.nll_bound(lm, tokens)["perplexity"]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import timestep_embedding
from lamina.models.schedulers.base import rng_from
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import describe, positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import PositionEmbedding, TransformerEncoderLayer
from lamina.nn.transformer_model import TransformerEncoder

__all__ = ["D3PM", "DiscreteDiffusionLM", "MaskedDiffusion", "d3pm_betas", "d3pm_transition_matrix",
           "subs_log_probs"]

Denoiser = Callable[[np.ndarray, np.ndarray], Tensor]
TINY = 1e-30


def _as_tensor(logits) -> Tensor:
    return logits if isinstance(logits, Tensor) else Tensor._wrap(backend.xp.asarray(logits))


def _ids(tokens, top: int, who: str) -> np.ndarray:
    ids = np.asarray(backend.to_numpy(tokens.data) if isinstance(tokens, Tensor) else tokens)
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or (ids.size and (ids.min() < 0 or ids.max() > top)):
        raise ShapeError(f"{who}: tokens must be integer ids (N, L) in [0, {top}], got {describe(ids)}")
    return ids.astype(np.int64)


def _x0_log_probs(logits, vocab_size: int, who: str) -> Tensor:
    """log p(x0 | x_t) over the ``vocab_size`` data tokens: a [MASK] column (index vocab_size), if
    present, is dropped (zero probability)."""
    logits = _as_tensor(logits)
    if logits.ndim != 3 or logits.shape[-1] not in (vocab_size, vocab_size + 1):
        raise ShapeError(f"{who}: logits must be (N, L, {vocab_size}) or (N, L, {vocab_size + 1}), got "
                         f"{describe(logits)}")
    return F.log_softmax(logits[..., :vocab_size] if logits.shape[-1] > vocab_size else logits, axis=-1)


def _numpy_probs(log_probs: Tensor) -> np.ndarray:
    return np.exp(np.asarray(backend.to_numpy(log_probs.data), dtype=np.float64))


def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cumulative = np.cumsum(probs / probs.sum(axis=-1, keepdims=True), axis=-1)
    draws = rng.random(cumulative.shape[:-1] + (1,))
    return np.minimum((cumulative < draws).sum(axis=-1), probs.shape[-1] - 1)


# -- D3PM ------------------------------------------------------------------------------------
def d3pm_betas(num_steps: int, schedule: str = "mutual_info", beta_start: float = 0.02,
               beta_end: float = 1.0) -> np.ndarray:
    """beta_1 .. beta_T of a D3PM: "mutual_info" beta_t = 1 / (T - t + 1) (the absorbing kernel's
    schedule; beta_T = 1), "cosine" beta_t = 1 - f(t) / f(t - 1) with f(t) = cos((t / T + 0.008) /
    1.008 pi / 2), "linear" from ``beta_start`` to ``beta_end``."""
    steps = positive_int(num_steps, "d3pm_betas: num_steps")
    t = np.arange(1, steps + 1, dtype=np.float64)
    if schedule == "mutual_info":
        return 1.0 / (steps - t + 1.0)
    if schedule == "cosine":
        f = np.cos((np.arange(steps + 1) / steps + 0.008) / 1.008 * math.pi / 2)
        return np.clip(1.0 - f[1:] / f[:-1], 0.0, 1.0)
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, steps)
    raise ValueError(f"d3pm_betas: schedule must be 'mutual_info', 'cosine' or 'linear', got {schedule!r}")


def d3pm_transition_matrix(beta: float, vocab_size: int, kernel: str = "uniform") -> np.ndarray:
    """One step's (S, S) matrix Q_t (module notes), row x = q(x_t | x_{t-1} = x), float64:
    S = ``vocab_size`` for "uniform", ``vocab_size`` + 1 (the last state [MASK]) for "absorbing"."""
    vocab_size = positive_int(vocab_size, "d3pm_transition_matrix: vocab_size")
    if not 0 <= beta <= 1:
        raise ValueError(f"d3pm_transition_matrix: beta must lie in [0, 1], got {beta!r}")
    if kernel == "uniform":
        return (1 - beta) * np.eye(vocab_size) + beta / vocab_size
    if kernel == "absorbing":
        matrix = (1 - beta) * np.eye(vocab_size + 1)
        matrix[:, vocab_size] += beta
        return matrix
    raise ValueError(f"d3pm_transition_matrix: kernel must be 'uniform' or 'absorbing', got {kernel!r}")


class D3PM:
    """A D3PM forward process and its x0-parameterised reverse (module notes) over tokens from
    ``vocab_size``, with ``num_steps`` steps of the ``kernel`` ("uniform" or "absorbing") and
    ``betas`` (default :func:`d3pm_betas` "mutual_info" for absorbing, "cosine" for uniform);
    ``hybrid_lambda`` weighs the auxiliary cross-entropy. A denoiser is called as
    ``denoiser(x_t, t / T)`` and returns logits (N, L, vocab_size [+ 1])."""

    def __init__(self, vocab_size: int, num_steps: int = 100, kernel: str = "absorbing", betas=None,
                 hybrid_lambda: float = 0.01):
        self.vocab_size = positive_int(vocab_size, "D3PM: vocab_size")
        self.num_steps = positive_int(num_steps, "D3PM: num_steps")
        self.kernel, self.hybrid_lambda = kernel, float(hybrid_lambda)
        if betas is None:
            betas = d3pm_betas(self.num_steps, "mutual_info" if kernel == "absorbing" else "cosine")
        self.betas = np.asarray(betas, dtype=np.float64)
        if self.betas.shape != (self.num_steps,):
            raise ShapeError(f"D3PM: betas must have shape ({self.num_steps},), got {describe(self.betas)}")
        matrices = [d3pm_transition_matrix(float(b), self.vocab_size, kernel) for b in self.betas]
        self.num_states = matrices[0].shape[0]
        eye = np.eye(self.num_states)
        self.step_matrices = np.stack([eye] + matrices)          # [t] = Q_t, [0] = I
        cumulative = [eye]
        for matrix in matrices:
            cumulative.append(cumulative[-1] @ matrix)
        self.cumulative_matrices = np.stack(cumulative)          # [t] = Qbar_t, [0] = I

    @property
    def mask_id(self) -> int | None:
        """[MASK]'s id (``vocab_size``) for the absorbing kernel, None for uniform."""
        return self.vocab_size if self.kernel == "absorbing" else None

    def prior(self) -> np.ndarray:
        """p(x_T): all mass on [MASK] (absorbing) or uniform."""
        if self.kernel == "absorbing":
            return np.eye(self.num_states)[self.vocab_size]
        return np.full(self.num_states, 1.0 / self.num_states)

    def _steps(self, t, n: int) -> np.ndarray:
        t = np.broadcast_to(np.asarray(t), (n,)).astype(np.int64)
        if np.any((t < 1) | (t > self.num_steps)):
            raise ValueError(f"D3PM: steps t must lie in 1..{self.num_steps}, got {describe(t)}")
        return t

    def q_probs(self, x0, t) -> np.ndarray:
        """q(x_t | x_0): (N, L, S) for ids x0 (N, L) and steps t (N,) or one int."""
        x0 = _ids(x0, self.num_states - 1, "D3PM.q_probs")
        return self.cumulative_matrices[self._steps(t, len(x0))[:, None], x0]

    def q_sample(self, x0, t, generator=None) -> np.ndarray:
        """x_t ~ q(x_t | x_0)."""
        return _categorical(self.q_probs(x0, t), rng_from(generator))

    def q_posterior(self, x_t, x0, t) -> np.ndarray:
        """q(x_{t-1} | x_t, x_0): (N, L, S) (module notes)."""
        x_t, x0 = _ids(x_t, self.num_states - 1, "D3PM.q_posterior"), _ids(x0, self.num_states - 1, "D3PM.q_posterior")
        t = self._steps(t, len(x0))[:, None]
        joint = self.step_matrices[t, :, x_t] * self.cumulative_matrices[t - 1, x0]
        evidence = self.cumulative_matrices[t, x0, x_t][..., None]       # 0: x0 cannot give x_t
        return np.where(evidence > 0, joint / np.where(evidence > 0, evidence, 1.0), 0.0)

    def p_posterior(self, x0_probs, x_t, t) -> Tensor:
        """p(x_{t-1} | x_t) = sum_x0 q(x_{t-1} | x_t, x0) p(x0 | x_t) for p(x0 | x_t) ``x0_probs``
        (N, L, vocab_size), a Tensor (differentiable) or array (module notes)."""
        probs = _as_tensor(x0_probs)
        x_t = _ids(x_t, self.num_states - 1, "D3PM.p_posterior")
        t = self._steps(t, len(x_t))
        if probs.ndim != 3 or probs.shape[:2] != x_t.shape or probs.shape[-1] != self.vocab_size:
            raise ShapeError(f"D3PM.p_posterior: x0_probs must be (N, L, {self.vocab_size}) for x_t "
                             f"{describe(x_t)}, got {describe(probs)}")
        dtype = probs.data.dtype
        column = self.cumulative_matrices[t[:, None], :self.vocab_size, x_t]            # Qbar_t[x0, x_t]
        inverse = np.where(column > 0, 1.0 / np.where(column > 0, column, 1.0), 0.0)
        weighted = probs * backend.xp.asarray(inverse.astype(dtype))
        previous = backend.xp.asarray(self.cumulative_matrices[t - 1, :self.vocab_size].astype(dtype))
        summed = F.matmul(weighted, previous) * backend.xp.asarray(
            self.step_matrices[t[:, None], :, x_t].astype(dtype))
        return summed / (summed.sum(axis=-1, keepdims=True) + TINY)

    def _x0_probs(self, denoiser: Denoiser, x_t: np.ndarray, t: np.ndarray) -> Tensor:
        return F.exp(_x0_log_probs(denoiser(x_t, t / self.num_steps), self.vocab_size, "D3PM"))

    def losses(self, logits, x0, x_t, t) -> tuple[Tensor, Tensor]:
        """(L_vb, CE), each the mean over tokens, for the denoiser's ``logits`` at (x_t, t)."""
        x0 = _ids(x0, self.vocab_size - 1, "D3PM.losses")
        t = self._steps(t, len(x0))
        log_probs = _x0_log_probs(logits, self.vocab_size, "D3PM.losses")
        onehot = np.eye(self.vocab_size, dtype=log_probs.data.dtype)[x0]
        nll = -(log_probs * backend.xp.asarray(onehot)).sum(axis=-1)                  # (N, L)
        later = t > 1
        q = self.q_posterior(x_t, x0, np.where(later, t, 2))
        p = self.p_posterior(F.exp(log_probs), x_t, np.where(later, t, 2))
        q_log_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(axis=-1)
        kl = backend.xp.asarray(q_log_q.astype(onehot.dtype)) - (
            backend.xp.asarray(q.astype(onehot.dtype)) * F.log(p + TINY)).sum(axis=-1)
        first = backend.xp.asarray(np.broadcast_to(~later[:, None], nll.shape).astype(onehot.dtype))
        vb = kl * (1 - first) + nll * first
        return vb.mean(), nll.mean()

    def training_loss(self, denoiser: Denoiser, x0, generator=None) -> Tensor:
        """L_vb + lambda CE (module notes) at one uniform step t in 1..T per sequence."""
        rng = rng_from(generator)
        x0 = _ids(x0, self.vocab_size - 1, "D3PM.training_loss")
        t = rng.integers(1, self.num_steps + 1, len(x0))
        x_t = self.q_sample(x0, t, rng)
        vb, ce = self.losses(denoiser(x_t, t / self.num_steps), x0, x_t, t)
        return vb + self.hybrid_lambda * ce

    def nll_bound(self, denoiser: Denoiser, x0, generator=None) -> dict[str, float]:
        """The variational bound on -log p(x_0) in nats per token, one draw of x_t per step:
        KL(q(x_T | x_0) || p(x_T)) + sum_{t>1} KL terms + -log p(x_0 | x_1). Returns ``nll``,
        ``prior`` (the first term) and ``perplexity`` = exp(nll)."""
        rng = rng_from(generator)
        x0 = _ids(x0, self.vocab_size - 1, "D3PM.nll_bound")
        q_last = self.q_probs(x0, self.num_steps)
        prior = np.where(q_last > 0, q_last * (np.log(np.where(q_last > 0, q_last, 1.0))
                                               - np.log(self.prior() + TINY)), 0.0).sum(-1).mean()
        total = float(prior)
        with no_grad():
            for step in range(1, self.num_steps + 1):
                t = np.full(len(x0), step)
                x_t = self.q_sample(x0, t, rng)
                vb, _ = self.losses(denoiser(x_t, t / self.num_steps), x0, x_t, t)
                total += float(vb.item())
        return {"nll": total, "prior": float(prior), "perplexity": math.exp(total)}

    def sample(self, denoiser: Denoiser, n: int, seq_len: int, generator=None) -> np.ndarray:
        """(n, seq_len) ids: x_T ~ p(x_T), then x_{t-1} ~ p(x_{t-1} | x_t) for t = T .. 1."""
        rng = rng_from(generator)
        shape = (positive_int(n, "D3PM.sample: n"), positive_int(seq_len, "D3PM.sample: seq_len"))
        tokens = _categorical(np.broadcast_to(self.prior(), shape + (self.num_states,)), rng)
        with no_grad():
            for step in range(self.num_steps, 0, -1):
                t = np.full(shape[0], step)
                probs = self.p_posterior(self._x0_probs(denoiser, tokens, t), tokens, t)
                tokens = _categorical(np.asarray(backend.to_numpy(probs.data), dtype=np.float64), rng)
        return tokens


# -- MDLM ------------------------------------------------------------------------------------
def subs_log_probs(logits, x_t, vocab_size: int) -> Tensor:
    """The SUBS parameterisation: log p(x0 | x_t) (N, L, vocab_size) with [MASK] (id
    ``vocab_size``, a logit column of that index is dropped) at zero probability, and an unmasked
    token of x_t copied (log-probability 0 for it, -inf elsewhere)."""
    log_probs = _x0_log_probs(logits, vocab_size, "subs_log_probs")
    x_t = _ids(x_t, vocab_size, "subs_log_probs")
    if x_t.shape != tuple(log_probs.shape[:2]):
        raise ShapeError(f"subs_log_probs: x_t {describe(x_t)} does not match logits {describe(log_probs)}")
    masked = (x_t == vocab_size)[..., None]
    copied = np.where(np.eye(vocab_size + 1)[x_t][..., :vocab_size] > 0, 0.0, -np.inf)
    return F.where(backend.xp.asarray(masked), log_probs,
                   backend.xp.asarray(copied.astype(log_probs.data.dtype)))


class MaskedDiffusion:
    """MDLM's continuous-time absorbing process (module notes) over tokens from ``vocab_size``
    ([MASK] = ``vocab_size``): ``schedule`` "loglinear" or "cosine", ``eps`` = alpha_1, training
    times drawn from [``t_min``, 1]. A denoiser is called as ``denoiser(x_t, t)`` (t of shape (N,))
    and returns logits (N, L, vocab_size [+ 1])."""

    SCHEDULES = ("loglinear", "cosine")

    def __init__(self, vocab_size: int, schedule: str = "loglinear", eps: float = 1e-3, t_min: float = 1e-3):
        self.vocab_size = positive_int(vocab_size, "MaskedDiffusion: vocab_size")
        if schedule not in self.SCHEDULES:
            raise ValueError(f"MaskedDiffusion: schedule must be one of {self.SCHEDULES}, got {schedule!r}")
        if not 0 <= eps < 1 or not 0 < t_min < 1:
            raise ValueError(f"MaskedDiffusion: need 0 <= eps < 1 and 0 < t_min < 1, got {eps!r}, {t_min!r}")
        self.schedule, self.eps, self.t_min = schedule, float(eps), float(t_min)

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def _g(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64)
        if self.schedule == "loglinear":
            return t, np.ones_like(t)
        return 1.0 - np.cos(0.5 * math.pi * t), 0.5 * math.pi * np.sin(0.5 * math.pi * t)

    def alpha(self, t) -> np.ndarray:
        """alpha_t = 1 - (1 - eps) g(t): the probability that a token is still unmasked at t."""
        return 1.0 - (1.0 - self.eps) * self._g(t)[0]

    def alpha_prime(self, t) -> np.ndarray:
        """d alpha_t / dt = -(1 - eps) g'(t)."""
        return -(1.0 - self.eps) * self._g(t)[1]

    def loss_weight(self, t) -> np.ndarray:
        """alpha'_t / (1 - alpha_t) = -g'(t) / g(t) (negative: it multiplies log-probabilities)."""
        g, slope = self._g(t)
        return -slope / g

    def q_sample(self, x0, t, generator=None) -> np.ndarray:
        """x_t: each token of x0 (N, L) replaced by [MASK] with probability 1 - alpha_t, t (N,)."""
        x0 = _ids(x0, self.vocab_size - 1, "MaskedDiffusion.q_sample")
        keep = self.alpha(np.broadcast_to(np.asarray(t, dtype=np.float64), (len(x0),)))[:, None]
        return np.where(rng_from(generator).random(x0.shape) < keep, x0, self.mask_id)

    def sample_times(self, n: int, generator=None) -> np.ndarray:
        """n low-discrepancy times in [t_min, 1]: (u + i / n) mod 1 for one u ~ U(0, 1)."""
        u = (rng_from(generator).random() + np.arange(n) / n) % 1.0
        return self.t_min + (1.0 - self.t_min) * u

    def loss(self, logits, x0, x_t, t) -> Tensor:
        """The negative ELBO estimate per token: mean over (N, L) of alpha'_t / (1 - alpha_t) log
        p(x0 | x_t) at masked positions (module notes); unmasked positions add nothing."""
        x0 = _ids(x0, self.vocab_size - 1, "MaskedDiffusion.loss")
        x_t = _ids(x_t, self.vocab_size, "MaskedDiffusion.loss")
        log_probs = _x0_log_probs(logits, self.vocab_size, "MaskedDiffusion.loss")
        if x0.shape != x_t.shape or tuple(log_probs.shape[:2]) != x0.shape:
            raise ShapeError(f"MaskedDiffusion.loss: x0 {describe(x0)}, x_t {describe(x_t)} and logits "
                             f"{describe(log_probs)} must share (N, L)")
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (len(x0),))
        masked = x_t == self.mask_id
        weights = np.where(masked, self.loss_weight(t)[:, None], 0.0)[..., None] * np.eye(self.vocab_size)[x0]
        return (log_probs * backend.xp.asarray(weights.astype(log_probs.data.dtype))).sum() / x0.size

    def training_loss(self, denoiser: Denoiser, x0, generator=None) -> Tensor:
        """:meth:`loss` at low-discrepancy times (:meth:`sample_times`) and x_t ~ q(x_t | x0)."""
        rng = rng_from(generator)
        x0 = _ids(x0, self.vocab_size - 1, "MaskedDiffusion.training_loss")
        t = self.sample_times(len(x0), rng)
        x_t = self.q_sample(x0, t, rng)
        return self.loss(denoiser(x_t, t), x0, x_t, t)

    def nll_bound(self, denoiser: Denoiser, x0, num_samples: int = 16, batch_size: int = 256,
                  generator=None) -> dict[str, float]:
        """The ELBO bound on -log p(x0) in nats per token, the mean of :meth:`loss` over
        ``num_samples`` draws of (t, x_t) per sequence, and ``perplexity`` = exp(nll)."""
        rng = rng_from(generator)
        x0 = _ids(x0, self.vocab_size - 1, "MaskedDiffusion.nll_bound")
        total = 0.0
        with no_grad():
            for _ in range(positive_int(num_samples, "MaskedDiffusion.nll_bound: num_samples")):
                for first in range(0, len(x0), batch_size):
                    batch = x0[first:first + batch_size]
                    t = self.sample_times(len(batch), rng)
                    x_t = self.q_sample(batch, t, rng)
                    total += float(self.loss(denoiser(x_t, t), batch, x_t, t).item()) * len(batch)
        nll = total / (num_samples * len(x0))
        return {"nll": nll, "perplexity": math.exp(nll)}

    def sample(self, denoiser: Denoiser, n: int, seq_len: int, steps: int = 64, cache: bool = False,
               generator=None, return_calls: bool = False):
        """(n, seq_len) ids by ancestral sampling in ``steps`` steps (module notes). ``cache``:
        reuse p(x0 | x_t) while no token changed (exact for a time-free denoiser). With
        ``return_calls``, also the number of denoiser calls."""
        rng = rng_from(generator)
        n = positive_int(n, "MaskedDiffusion.sample: n")
        seq_len = positive_int(seq_len, "MaskedDiffusion.sample: seq_len")
        steps = positive_int(steps, "MaskedDiffusion.sample: steps")
        tokens = np.full((n, seq_len), self.mask_id, dtype=np.int64)
        probs, calls = None, 0
        with no_grad():
            for k in range(steps, 0, -1):
                t, s = k / steps, (k - 1) / steps
                if probs is None or not cache:
                    log_probs = subs_log_probs(denoiser(tokens, np.full(n, t)), tokens, self.vocab_size)
                    probs, calls = _numpy_probs(log_probs), calls + 1
                alpha_t, alpha_s = float(self.alpha(t)), float(self.alpha(s))
                reveal = (rng.random(tokens.shape) < (alpha_s - alpha_t) / (1.0 - alpha_t)) & (tokens == self.mask_id)
                if reveal.any():
                    tokens = np.where(reveal, _categorical(probs, rng), tokens)
                    probs = None
        return (tokens, calls) if return_calls else tokens


# -- the denoiser ----------------------------------------------------------------------------
@register_layer
class DiscreteDiffusionLM(Module):
    """A bidirectional transformer denoiser over ``seq_len`` tokens from ``vocab_size`` plus
    [MASK] (id ``vocab_size``): token embeddings and learned positions, plus (with
    ``time_conditioning``) a two-layer SiLU MLP of the sinusoidal features of 1000 t added to every
    position, ``depth`` pre-norm :class:`~lamina.nn.TransformerEncoderLayer` (``dim``, ``heads``,
    feed-forward ``mlp_ratio`` dim, GELU), a LayerNorm and a Dense head to ``vocab_size`` + 1 logits
    (the last, [MASK]'s, is dropped by the losses). ``model(tokens, t=None)``: t (N,) in [0, 1]."""

    def __init__(self, vocab_size: int, seq_len: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, time_conditioning: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "DiscreteDiffusionLM: vocab_size")
        self.seq_len = positive_int(seq_len, "DiscreteDiffusionLM: seq_len")
        self.dim = positive_int(dim, "DiscreteDiffusionLM: dim")
        self.depth = positive_int(depth, "DiscreteDiffusionLM: depth")
        self.heads, self.mlp_ratio, self.dropout = heads, float(mlp_ratio), float(dropout)
        self.time_conditioning = bool(time_conditioning)
        self.token_embedding = Embedding(self.vocab_size + 1, self.dim, name="token_embedding")
        self.positions = PositionEmbedding(self.seq_len, name="positions")
        if self.time_conditioning:
            self.time_in = Dense(self.dim, name="time_in")
            self.time_out = Dense(self.dim, name="time_out")
        layer = TransformerEncoderLayer(self.dim, heads, max(1, int(round(self.mlp_ratio * self.dim))),
                                        dropout=dropout, activation="gelu", norm_first=True)
        self.encoder = TransformerEncoder(layer, self.depth, name="encoder")
        self.norm = LayerNorm(-1, name="norm")
        self.head = Dense(self.vocab_size + 1, name="head")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def forward(self, tokens, t=None) -> Tensor:
        ids = _ids(tokens, self.vocab_size, f"{self._label()}.forward")
        if ids.shape[1] != self.seq_len:
            raise ShapeError(f"{self._label()}.forward: tokens must be (N, {self.seq_len}), got {describe(ids)}")
        h = self.positions(self.token_embedding(ids))
        if self.time_conditioning:
            times = np.zeros(len(ids)) if t is None else np.broadcast_to(
                np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=np.float64), (len(ids),))
            features = timestep_embedding(1000.0 * times, self.dim, dtype=h.data.dtype)
            h = h + self.time_out(F.silu(self.time_in(features))).reshape(len(ids), 1, self.dim)
        return self.head(self.norm(self.encoder(h)))

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "dim": self.dim, "depth": self.depth,
                "heads": self.heads, "mlp_ratio": self.mlp_ratio, "dropout": self.dropout,
                "time_conditioning": self.time_conditioning, "name": self.name}

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, seq_len={self.seq_len}, dim={self.dim}, depth={self.depth}"
