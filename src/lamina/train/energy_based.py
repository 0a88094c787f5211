"""Sampling and training for deep energy-based models p(x) = exp(-E(x)) / Z.

**SGLD** (:func:`sgld_sample`, stochastic gradient Langevin dynamics). Exact Langevin dynamics
with step size eta,

    x <- x - (eta / 2) grad_x E(x) + sqrt(eta) eps,        eps ~ N(0, I),

samples p as eta -> 0 and steps -> infinity; with a finite eta its stationary law is off by
O(eta) (for E = x^2 / (2 s^2) the chain's variance is s^2 / (1 - eta / (4 s^2)), not s^2).
Deep EBMs (Du & Mordatch 2019; Grathwohl et al. 2020) use the practical variant with the
gradient step and the noise decoupled: ``noise`` (the standard deviation of the added noise)
set far below sqrt(step_size), a few tens of steps from a replay buffer, the gradient's
elements optionally clipped to [-clip, clip] and the samples to ``bounds``. ``noise=None``
gives exact Langevin. Typical deep-EBM settings for data in [-1, 1]: 20 to 60 steps,
step_size = 2 (a gradient step of 1), noise = 0.01 (JEM's), bounds = (-1, 1).

**Replay buffer** (:class:`ReplayBuffer`, :class:`PersistentSampler`): persistent chains
(as persistent CD for RBMs). Each batch starts from buffer entries, 5% of them replaced by fresh
noise so that new modes can still be found; the finished samples go back into the buffer.

**Training**: :class:`EBMTrainer` takes Adam steps on the contrastive divergence loss
E(x+) - E(x-) + alpha (E(x+)^2 + E(x-)^2) (:func:`lamina.functional.contrastive_divergence_loss`),
x- from the persistent sampler; :class:`JEMTrainer` (joint energy model) reads a classifier
f(x) (logits) as the energy E(x) = -logsumexp_y f(x)[y], so p(y | x) is softmax(f(x)), and
adds the cross-entropy of p(y | x) to that generative term on log p(x).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, enable_grad, grad, no_grad
from lamina.errors import ShapeError
from lamina.nn import Module
from lamina.optim import Adam
from lamina.optim.clip import clip_grad_norm

__all__ = ["EBMTrainer", "JEMTrainer", "PersistentSampler", "ReplayBuffer", "jem_energy", "sgld_sample"]


def _generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return backend.rng() if seed is None else np.random.default_rng(seed)


def _positive(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{who}: {name} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


def energies(energy_fn, x: Tensor, who: str) -> Tensor:
    """``energy_fn(x)`` as (n,), checked to give one energy per row of ``x``."""
    n = x.shape[0]
    values = energy_fn(x)
    if not isinstance(values, Tensor) or values.shape not in ((n,), (n, 1)):
        shape = getattr(values, "shape", type(values).__name__)
        raise ShapeError(f"{who}: the energy function must return one energy per sample, (n,) or (n, 1) with "
                         f"n = {n}; it returned {shape}")
    return values.reshape(n)


def _sgld_settings(steps, step_size, noise, clip, bounds, who: str) -> tuple[int, float, float, float | None]:
    """The checked (steps, step_size, noise, clip), noise=None read as sqrt(step_size)."""
    steps = _positive_int(steps, "steps", who)
    step_size = _positive(step_size, "step_size", who)
    noise = math.sqrt(step_size) if noise is None else noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"{who}: noise must be a number >= 0 or None, got {noise!r}")
    if clip is not None:
        clip = _positive(clip, "clip", who)
    if bounds is not None and not (len(bounds) == 2 and bounds[0] < bounds[1]):
        raise ValueError(f"{who}: bounds must be (low, high) with low < high, got {bounds!r}")
    return steps, step_size, float(noise), clip


def sgld_sample(energy_fn, x0, steps: int = 20, step_size: float = 2.0, noise: float | None = 0.01,
                clip: float | None = None, bounds: tuple[float, float] | None = None, seed=None) -> Tensor:
    """``steps`` Langevin steps x <- x - (step_size / 2) g + noise eps from ``x0`` (n, ...),
    g = grad_x E(x) (its elements clipped to [-clip, clip] when ``clip`` is given), eps ~ N(0, I);
    ``noise=None`` is sqrt(step_size), exact Langevin (module notes for the defaults and the
    step-size bias). ``bounds`` (low, high) clamps the samples after each step. ``energy_fn``
    maps a batch to (n,) or (n, 1) energies. ``seed``: an int, a NumPy generator or None
    (lamina's generator). Returns the samples, a constant tensor; the weights' ``grad`` is
    untouched."""
    who = "sgld_sample"
    steps, step_size, noise, clip = _sgld_settings(steps, step_size, noise, clip, bounds, who)
    values = x0.data if isinstance(x0, Tensor) else backend.xp.asarray(x0)
    if values.ndim < 1 or values.shape[0] == 0 or values.dtype.kind != "f":
        raise ShapeError(f"{who}: x0 must be a non-empty floating batch (n, ...), got shape "
                         f"{tuple(values.shape)} of {values.dtype}")
    rng = _generator(seed)
    x = values.copy()
    for _ in range(steps):
        leaf = Tensor(x, requires_grad=True, dtype=x.dtype)
        with enable_grad():
            total = energies(energy_fn, leaf, who).sum()
            (slope,) = grad(total, leaf)
        slope = backend.xp.asarray(slope, dtype=x.dtype)
        if clip is not None:
            slope = backend.xp.clip(slope, -clip, clip)
        x = x - (0.5 * step_size) * slope
        if noise:
            x = x + noise * backend.xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)
        if bounds is not None:
            x = backend.xp.clip(x, bounds[0], bounds[1])
    return Tensor(x, dtype=x.dtype)


class ReplayBuffer:
    """``capacity`` stored samples of shape ``sample_shape``, filled with uniform noise on
    ``bounds`` (JEM's U(-1, 1) by default). :meth:`draw` picks n entries at random and replaces
    a ``reinit_fraction`` of them (5% by default) by fresh noise; :meth:`store` writes the
    finished chains back to the entries they came from."""

    def __init__(self, capacity: int, sample_shape: tuple[int, ...], reinit_fraction: float = 0.05,
                 bounds: tuple[float, float] = (-1.0, 1.0), dtype=None, seed=None):
        who = "ReplayBuffer"
        self.capacity = _positive_int(capacity, "capacity", who)
        if not 0.0 <= reinit_fraction <= 1.0:
            raise ValueError(f"{who}: reinit_fraction must be in [0, 1], got {reinit_fraction!r}")
        if not (len(bounds) == 2 and bounds[0] < bounds[1]):
            raise ValueError(f"{who}: bounds must be (low, high) with low < high, got {bounds!r}")
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.reinit_fraction = float(reinit_fraction)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.dtype = backend.xp.dtype(dtype or backend.get_default_dtype())
        self.rng = _generator(seed)
        self.samples = self.noise(self.capacity)

    def __len__(self) -> int:
        return self.capacity

    def noise(self, n: int):
        """n fresh starting points, uniform on the buffer's bounds."""
        draws = self.rng.uniform(self.bounds[0], self.bounds[1], size=(n, *self.sample_shape))
        return backend.xp.asarray(draws, dtype=self.dtype)

    def draw(self, n: int) -> tuple[Tensor, np.ndarray]:
        """(starting points (n, ...), their buffer indices): stored samples, each replaced by
        noise with probability ``reinit_fraction``."""
        n = _positive_int(n, "n", "ReplayBuffer.draw")
        indices = self.rng.integers(0, self.capacity, size=n)
        starts = self.samples[indices].copy()
        fresh = self.rng.random(n) < self.reinit_fraction
        if fresh.any():
            starts[backend.xp.asarray(fresh)] = self.noise(int(fresh.sum()))
        return Tensor(starts, dtype=self.dtype), indices

    def store(self, samples, indices) -> None:
        """Write ``samples`` (n, ...) back to the buffer entries ``indices`` (n,)."""
        values = samples.data if isinstance(samples, Tensor) else backend.xp.asarray(samples)
        if tuple(values.shape) != (len(indices), *self.sample_shape):
            raise ShapeError(f"ReplayBuffer.store: expected samples of shape {(len(indices), *self.sample_shape)}, "
                             f"got {tuple(values.shape)}")
        self.samples[indices] = values.astype(self.dtype, copy=False)


class PersistentSampler:
    """SGLD chains kept in a :class:`ReplayBuffer`: :meth:`sample` draws starting points, runs
    :func:`sgld_sample` with this sampler's settings and stores the results back."""

    def __init__(self, buffer: ReplayBuffer, steps: int = 20, step_size: float = 2.0, noise: float | None = 0.01,
                 clip: float | None = None, bounds: tuple[float, float] | None = None):
        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"PersistentSampler: buffer must be a ReplayBuffer, got {type(buffer).__name__}")
        _sgld_settings(steps, step_size, noise, clip, bounds, "PersistentSampler")
        self.buffer = buffer
        self.settings = {"steps": steps, "step_size": step_size, "noise": noise, "clip": clip, "bounds": bounds}

    def sample(self, energy_fn, n: int) -> Tensor:
        """n samples of exp(-energy_fn) from the buffer's chains (which advance by ``steps``)."""
        starts, indices = self.buffer.draw(n)
        samples = sgld_sample(energy_fn, starts, seed=self.buffer.rng, **self.settings)
        self.buffer.store(samples, indices)
        return samples


def jem_energy(classifier):
    """The energy E(x) = -logsumexp_y f(x)[y] of a classifier f giving logits (n, classes)."""
    def energy(x):
        return -F.logsumexp(classifier(x), axis=-1)
    return energy


class _AdamEnergyTrainer:
    def __init__(self, model: Module, sampler: PersistentSampler, lr: float, betas: tuple[float, float],
                 alpha: float, clip_norm: float | None):
        who = type(self).__name__
        if not isinstance(model, Module):
            raise TypeError(f"{who}: model must be a lamina Module, got {type(model).__name__}")
        if not isinstance(sampler, PersistentSampler):
            raise TypeError(f"{who}: sampler must be a PersistentSampler, got {type(sampler).__name__}")
        self.model = model
        self.sampler = sampler
        self.lr = _positive(lr, "lr", who)
        self.betas = betas
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"{who}: alpha must be a number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.clip_norm = clip_norm
        self.optimizer: Adam | None = None
        self.history: dict[str, list[float]] = {}

    def _adam_step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_norm is not None:
            clip_grad_norm(self.model, self.clip_norm)
        self.optimizer.step()

    def _prepare(self, x: np.ndarray) -> None:
        if not self.model.built:
            with no_grad():
                self.model(Tensor(backend.xp.asarray(x[:1])))
        if self.optimizer is None:
            self.optimizer = Adam(self.model, lr=self.lr, betas=self.betas)

    def _epochs(self, arrays: tuple, epochs: int, batch_size: int, seed) -> dict[str, list[float]]:
        who = f"{type(self).__name__}.fit"
        epochs = _positive_int(epochs, "epochs", who)
        batch_size = _positive_int(batch_size, "batch_size", who)
        self._prepare(arrays[0])
        order_rng = _generator(seed)
        n = len(arrays[0])
        for _ in range(epochs):
            sums: dict[str, float] = {}
            batches = 0
            order = order_rng.permutation(n)
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                logs = self.train_step(*(a[rows] for a in arrays))
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value
                batches += 1
            for key, value in sums.items():
                self.history.setdefault(key, []).append(value / batches)
        return self.history


def _data(x, who: str) -> np.ndarray:
    x = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ShapeError(f"{who}: the data must be a non-empty batch (n, ...), got shape {tuple(x.shape)}")
    return x.astype(backend.get_default_dtype()) if x.dtype.kind != "f" else x


class EBMTrainer(_AdamEnergyTrainer):
    """Contrastive divergence for a deep energy model ``energy`` (a Module mapping a batch to
    (n,) or (n, 1) energies): each step draws model samples x- from ``sampler`` (persistent
    SGLD) and takes an Adam step (``betas`` (0, 0.999) as Du & Mordatch's) on
    E(x+) - E(x-) + alpha (E(x+)^2 + E(x-)^2). ``clip_norm`` clips the weights' gradient norm."""

    def __init__(self, energy: Module, sampler: PersistentSampler, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.0, 0.999), alpha: float = 0.1, clip_norm: float | None = None):
        super().__init__(energy, sampler, lr, betas, alpha, clip_norm)

    def energy(self, x) -> Tensor:
        return energies(self.model, x, type(self).__name__)

    def train_step(self, x_data) -> dict[str, float]:
        """One step on a data batch; returns 'loss', 'energy_data' and 'energy_samples' (means)."""
        x_data = Tensor(x_data, dtype=x_data.dtype)
        x_model = self.sampler.sample(self.energy, x_data.shape[0])
        e_data, e_model = self.energy(x_data), self.energy(x_model)
        loss = F.contrastive_divergence_loss(e_data, e_model, self.alpha)
        self._adam_step(loss)
        return {"loss": float(loss.item()), "energy_data": float(e_data.mean().item()),
                "energy_samples": float(e_model.mean().item())}

    def fit(self, x, epochs: int = 1, batch_size: int = 64, seed=None) -> dict[str, list[float]]:
        """``epochs`` passes over the data ``x`` (n, ...) in shuffled batches (order from ``seed``);
        returns :attr:`history` (epoch means of :meth:`train_step`'s logs)."""
        return self._epochs((_data(x, "EBMTrainer.fit"),), epochs, batch_size, seed)


class JEMTrainer(_AdamEnergyTrainer):
    """Joint energy model training (Grathwohl et al. 2020) of a ``classifier`` giving logits:
    each Adam step minimises cross_entropy(f(x), y) + generative_weight * [E(x+) - E(x-)
    + alpha (E(x+)^2 + E(x-)^2)], E = -logsumexp f and x- from ``sampler``. alpha = 0 and the
    Adam betas (0.9, 0.999) are JEM's; a small alpha keeps the energies bounded on short runs."""

    def __init__(self, classifier: Module, sampler: PersistentSampler, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), generative_weight: float = 1.0, alpha: float = 0.0,
                 clip_norm: float | None = None):
        super().__init__(classifier, sampler, lr, betas, alpha, clip_norm)
        if not generative_weight >= 0:
            raise ValueError(f"JEMTrainer: generative_weight must be >= 0, got {generative_weight!r}")
        self.generative_weight = float(generative_weight)
        self.energy = jem_energy(classifier)

    def train_step(self, x, labels) -> dict[str, float]:
        """One step on a labelled batch; returns 'loss', 'cross_entropy' and 'generative'."""
        x = Tensor(x, dtype=x.dtype)
        logits = self.model(x)
        cross_entropy = F.categorical_cross_entropy(logits, labels, from_logits=True)
        loss, generative = cross_entropy, 0.0
        if self.generative_weight:
            x_model = self.sampler.sample(self.energy, x.shape[0])
            e_data = -F.logsumexp(logits, axis=-1)
            gen = F.contrastive_divergence_loss(e_data, self.energy(x_model), self.alpha)
            loss, generative = loss + self.generative_weight * gen, float(gen.item())
        self._adam_step(loss)
        return {"loss": float(loss.item()), "cross_entropy": float(cross_entropy.item()), "generative": generative}

    def fit(self, x, labels, epochs: int = 1, batch_size: int = 64, seed=None) -> dict[str, list[float]]:
        """``epochs`` passes over ``x`` (n, ...) with int ``labels`` (n,) in shuffled batches;
        returns :attr:`history`."""
        x = _data(x, "JEMTrainer.fit")
        labels = np.asarray(backend.to_numpy(labels) if isinstance(labels, Tensor) else labels)
        if labels.shape != (len(x),) or labels.dtype.kind not in "iu":
            raise ShapeError(f"JEMTrainer.fit: labels must be {len(x)} ints, got shape {labels.shape} of "
                             f"{labels.dtype}")
        return self._epochs((x, labels), epochs, batch_size, seed)

    def predict_proba(self, x) -> np.ndarray:
        """p(y | x) = softmax(f(x)) as a NumPy array."""
        with no_grad():
            return backend.to_numpy(F.softmax(self.model(Tensor(_data(x, "JEMTrainer.predict_proba"))), axis=-1).data)
