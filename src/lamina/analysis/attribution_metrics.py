"""How trustworthy an attribution is (Yeh et al., "On the (in)fidelity and sensitivity of
explanations", 2019), as Captum's ``infidelity`` and ``sensitivity_max``.

* infidelity: E_I[(I . A - (S(x) - S(x - I)))^2] over random perturbations I: how far the
  attribution A, read as a linear model of S, misses the score's real change. With
  ``normalize``, A is first scaled by the best beta = E[I.A dS] / E[(I.A)^2], so that only
  the attribution's direction is judged.
* max-sensitivity: max over perturbations d, |d|_inf <= r, of |A(x + d) - A(x)| / |A(x)|
  (Frobenius norms): how much the attribution moves when the input barely does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.analysis.perturbation import Scorer, _positive_int, prediction_function
from lamina.analysis.saliency import as_input_batch
from lamina.errors import ShapeError

__all__ = ["infidelity", "sensitivity_max"]


def _finite_positive(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def infidelity(model, x, attributions, target=None, n_perturb_samples: int = 10, noise_scale: float = 0.1,
               perturb_fn: Callable | None = None, normalize: bool = False, seed: int | None = None,
               batch_size: int = 1024):
    """The infidelity of ``attributions`` (the shape of ``x``) for each sample: an array (N,)
    (module docstring). ``model``: a Module or a function of a batch, as
    :func:`lamina.analysis.feature_ablation`; perturbations I ~ N(0, noise_scale^2) per
    value, or ``perturb_fn(copies, rng)`` returning I for a batch of copies of one sample."""
    fn = "infidelity"
    n_perturb_samples = _positive_int(n_perturb_samples, "n_perturb_samples", fn)
    noise_scale = _finite_positive(noise_scale, "noise_scale", fn)
    x = as_input_batch(x, fn)
    attributions = np.asarray(backend.to_numpy(attributions), dtype=np.float64)
    if attributions.shape != x.shape:
        raise ShapeError(f"{fn}: attributions of shape {attributions.shape} for inputs of shape {x.shape}; "
                         "expected the same shape")
    scorer = Scorer(prediction_function(model, fn), x, target, batch_size, fn)
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    xp = backend.xp
    out = np.empty(len(x))
    for i in range(len(x)):
        copies = xp.repeat(x[i][None], n_perturb_samples, axis=0)
        if perturb_fn is None:
            noise = xp.asarray(rng.normal(0.0, noise_scale, copies.shape)).astype(x.dtype)
        else:
            noise = xp.asarray(perturb_fn(copies, rng), dtype=x.dtype)
            if noise.shape != copies.shape:
                raise ShapeError(f"{fn}: perturb_fn gave perturbations of shape {noise.shape} for copies of shape "
                                 f"{copies.shape}; expected the same shape")
        change = float(scorer.clean[i]) - backend.to_numpy(scorer.scores(copies - noise, i))
        explained = np.asarray(backend.to_numpy(noise), dtype=np.float64).reshape(n_perturb_samples, -1) \
            @ attributions[i].reshape(-1)
        if normalize:
            power = (explained * explained).mean()
            explained = explained * ((explained * change).mean() / power if power > 0 else 0.0)
        out[i] = ((explained - change) ** 2).mean()
    return out


def sensitivity_max(explain: Callable, x, perturb_radius: float = 0.02, n_perturb_samples: int = 10,
                    seed: int | None = None):
    """The max-sensitivity of the attribution method ``explain`` (a function of a batch
    returning attributions of its shape, e.g. ``lambda v: integrated_gradients(model, v)``)
    at each sample: an array (N,) (module docstring), perturbations uniform in the L-inf ball
    of radius ``perturb_radius``; 0 where A(x) is all zeros and stays so."""
    fn = "sensitivity_max"
    n_perturb_samples = _positive_int(n_perturb_samples, "n_perturb_samples", fn)
    perturb_radius = _finite_positive(perturb_radius, "perturb_radius", fn)
    x = as_input_batch(x, fn)
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    base = np.asarray(backend.to_numpy(explain(x)), dtype=np.float64)
    if base.shape != x.shape:
        raise ShapeError(f"{fn}: explain gave attributions of shape {base.shape} for inputs of shape {x.shape}; "
                         "expected the same shape")
    base = base.reshape(len(x), -1)
    scale = np.linalg.norm(base, axis=1)
    worst = np.zeros(len(x))
    for _ in range(n_perturb_samples):
        shift = backend.xp.asarray(rng.uniform(-perturb_radius, perturb_radius, x.shape)).astype(x.dtype)
        moved = np.asarray(backend.to_numpy(explain(x + shift)), dtype=np.float64).reshape(len(x), -1)
        distance = np.linalg.norm(moved - base, axis=1)
        worst = np.maximum(worst, np.where(scale > 0, distance / np.where(scale > 0, scale, 1), distance))
    return worst
