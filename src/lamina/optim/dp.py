r"""DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") around any optimizer.

Each step bounds every sample's influence and hides it in noise: with g_i the gradient of
sample i's loss over all trainable parameters taken as one vector, C = ``max_grad_norm``,
sigma = ``noise_multiplier`` and B the expected batch size,

    g_i  <- g_i * min(1, C / (||g_i||_2 + 1e-6))           # per-sample clipping
    g    =  (sum_i g_i + N(0, sigma^2 C^2 I)) / B          # sum, Gaussian noise, average

and the inner optimizer steps with g as the gradient. The privacy this buys is tracked by
:class:`lamina.optim.privacy.RDPAccountant` when the sampling rate q is known (Poisson
sampling: each sample enters a batch independently with probability q, as
:class:`lamina.data.PoissonSampler` draws them; B = q n).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lamina import backend
from lamina.nn.per_sample import PerSampleGradients
from lamina.optim.lbfgs import LBFGS
from lamina.optim.optimizer import Optimizer
from lamina.optim.privacy import RDPAccountant
from lamina.optim.wrapper import OptimizerWrapper

__all__ = ["DPOptimizer"]

#: Added to a per-sample norm before dividing by it (a zero gradient stays zero).
CLIP_EPS = 1e-6


class DPOptimizer(OptimizerWrapper):
    r"""Differentially private steps (per-sample clipping and Gaussian noise) around ``optimizer``.

    While it exists (until :meth:`detach`), every forward and backward pass through layers
    owning the optimizer's parameters records their per-sample gradients
    (:class:`lamina.nn.PerSampleGradients`): an ordinary training loop, or
    :class:`lamina.train.Trainer`, needs no change::

        opt = DPOptimizer(SGD(model, lr=0.5), noise_multiplier=1.0, max_grad_norm=1.0,
                          expected_batch_size=64, sample_rate=64 / len(x_train))
        for xb, yb in DataLoader(data, sampler=PoissonSampler(64 / len(x_train))):
            opt.zero_grad()
            categorical_cross_entropy(model(xb), yb).backward()
            opt.step()
        opt.epsilon(delta=1e-5)

    ``loss_reduction``: how the loss reduces over the batch ('mean' or 'sum'; see
    :mod:`lamina.nn.per_sample`). ``expected_batch_size``: B in the module docstring; None
    divides by each batch's own size (fixed-size batches). ``sample_rate``: q, for the
    accountant (:meth:`epsilon`); without it the steps are counted but no epsilon is known.
    The noise is drawn from lamina's generator (:func:`lamina.manual_seed`). After a step,
    ``p.grad`` holds the noisy gradient g the inner optimizer used.
    """

    def __init__(self, optimizer: Optimizer, noise_multiplier: float, max_grad_norm: float,
                 expected_batch_size: int | None = None, loss_reduction: str = "mean",
                 sample_rate: float | None = None):
        if not isinstance(optimizer, Optimizer) or isinstance(optimizer, LBFGS):
            raise TypeError(f"DPOptimizer: optimizer must be a first-order lamina optimizer (SGD, Adam...), got "
                            f"{type(optimizer).__name__}")
        if not noise_multiplier >= 0:
            raise ValueError(f"DPOptimizer: noise_multiplier must be >= 0, got {noise_multiplier!r}")
        if not max_grad_norm > 0:
            raise ValueError(f"DPOptimizer: max_grad_norm must be > 0, got {max_grad_norm!r}")
        if expected_batch_size is not None and not expected_batch_size > 0:
            raise ValueError(f"DPOptimizer: expected_batch_size must be > 0 or None, got {expected_batch_size!r}")
        if sample_rate is not None and not 0 < sample_rate <= 1:
            raise ValueError(f"DPOptimizer: sample_rate must lie in (0, 1], got {sample_rate!r}")
        self.optimizer = optimizer
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.expected_batch_size = expected_batch_size
        self.sample_rate = sample_rate
        self.accountant = RDPAccountant()
        pending = optimizer._pending_module          # a model not built yet: its parameters come later
        source = pending if pending is not None else optimizer.params
        # weakly attached: dropping the optimizer stops the recording
        self.tracker = PerSampleGradients(source, loss_reduction=loss_reduction).attach(weak=True)

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    def detach(self) -> None:
        """Stop recording per-sample gradients (the wrapper cannot step afterwards)."""
        self.tracker.detach()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)
        self.tracker.clear()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Clip, sum, add noise, average (module docstring), then the inner optimizer's step.
        A ``closure`` (zero the gradients, cost, backward) runs first and its cost is returned."""
        loss = closure() if closure is not None else None
        params = [p for p in self.optimizer.params if getattr(p, "trainable", True)]
        samples = [self.tracker.grad_sample(p) for p in params]
        present = [g for g in samples if g is not None]
        if not present and any(p.grad is not None for p in params):
            raise RuntimeError("DPOptimizer.step: the parameters have gradients but no per-sample gradients were "
                               "recorded; the backward pass must run while the DPOptimizer is attached, through "
                               "the model's layers (not detached, not under no_grad)")
        xp = backend.xp
        n = present[0].shape[0] if present else 0
        squared = xp.zeros(n, dtype=xp.float64)
        for g in present:
            squared += (g.reshape(n, -1).astype(xp.float64) ** 2).sum(axis=1)
        factors = xp.minimum(1.0, self.max_grad_norm / (xp.sqrt(squared) + CLIP_EPS))
        batch = self.expected_batch_size if self.expected_batch_size is not None else n
        std = self.noise_multiplier * self.max_grad_norm
        for p, g in zip(params, samples):
            total = xp.zeros(p.shape, dtype=xp.float64)
            if g is not None:
                total += xp.tensordot(factors, g.astype(xp.float64), axes=(0, 0))
            if std:
                total += std * backend.rng().standard_normal(p.shape)
            p.grad = (total / max(batch, 1)).astype(p.dtype)
        self.tracker.clear()
        self.optimizer.step()
        if self.sample_rate is not None:
            self.accountant.step(self.noise_multiplier, self.sample_rate)
        return loss

    def epsilon(self, delta: float) -> float:
        """The (epsilon, ``delta``)-DP guarantee of the steps taken so far (RDP accountant)."""
        if self.sample_rate is None:
            raise ValueError("DPOptimizer.epsilon: the sample rate is unknown; give sample_rate= (the probability "
                             "with which each sample enters a batch) when making the DPOptimizer")
        return self.accountant.get_epsilon(delta)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": "DPOptimizer", "inner": self.optimizer.state_dict(),
                "accountant": self.accountant.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        kind = state_dict.get("optimizer")
        if kind != "DPOptimizer":
            raise ValueError(f"DPOptimizer.load_state_dict: the state dict is from a {kind} optimizer, not DPOptimizer")
        self.optimizer.load_state_dict(state_dict["inner"])
        self.accountant.load_state_dict(state_dict["accountant"])
