"""Attributions by perturbing the input: feature ablation and Shapley value sampling (as
Captum's FeatureAblation and ShapleyValueSampling), and what the surrogate-model methods
of :mod:`lamina.analysis.surrogate` share with them.

The model is a lamina Module (its class scores, any final Softmax layer left out) or any
function from a batch (array) to an array of scores, (n,) or (n, classes); ``target``
picks the class: None (each sample's predicted class on x), an int or one class per
sample (None for an (n,) output).

Features are the M groups of a ``feature_mask``: integers the shape of one sample (or
broadcasting to it), equal within a group (superpixels of an image, columns of a table);
by default each input value is its own feature. Removing a feature replaces its values by
the ``baselines``' (zeros by default). Every value of a group gets the group's attribution.

* feature ablation: A_j = S(x) - S(x with group j removed);
* Shapley value sampling (Castro et al., 2009): the mean over ``n_samples`` random orders
  of the features of S's change when group j is added to the groups before it, starting
  from the baseline: an unbiased estimate of the Shapley values
  phi_j = sum_(T not containing j) |T|! (M - |T| - 1)! / M! (v(T + j) - v(T)), with
  v(T) = S(x with only the groups of T kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.analysis.deeplift import broadcast_baseline
from lamina.analysis.saliency import as_input_batch, class_indices, model_logits
from lamina.autograd import no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode

__all__ = ["feature_ablation", "shapley_value_sampling"]


def prediction_function(model, fn: str) -> Callable:
    """``model`` as a function batch -> scores array: a Module runs in evaluation mode
    without the graph, giving the scores before any final Softmax layer."""
    if isinstance(model, Module):
        def predict(batch):
            with evaluation_mode(model), no_grad():
                return model_logits(model, tensor(batch, dtype=batch.dtype)).data
        return predict
    if not callable(model):
        raise TypeError(f"{fn}: model must be a lamina Module or a function of a batch, got {type(model).__name__}")
    return model


class Scorer:
    """S for the rows of a batch of perturbed copies of one sample: the chosen class's
    score, computed ``batch_size`` rows at a time."""

    def __init__(self, predict: Callable, x, target, batch_size: int, fn: str):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{fn}: batch_size must be a positive int, got {batch_size!r}")
        self.predict, self.batch_size, self.fn = predict, batch_size, fn
        clean = self._outputs(x)
        if clean.ndim == 1:
            if target is not None:
                raise ValueError(f"{fn}: the model gives one score per sample (output shape {clean.shape}); "
                                 "target must be None")
            self.classes = None
        elif clean.ndim == 2:
            self.classes = class_indices(target, clean, fn)
        else:
            raise ShapeError(f"{fn}: the model's output has shape {clean.shape}; expected (batch,) or "
                             "(batch, classes)")
        self.clean = self._pick(clean, self.classes)

    def _outputs(self, batch):
        out = backend.xp.asarray(self.predict(batch))
        if out.ndim == 0 or out.shape[0] != len(batch):
            raise ShapeError(f"{self.fn}: the model gave an output of shape {out.shape} for a batch of "
                             f"{len(batch)}; expected one row per sample")
        return out

    @staticmethod
    def _pick(out, classes):
        return out if classes is None else out[backend.xp.arange(len(out)), classes]

    def scores(self, batch, sample: int):
        """S of every row of ``batch``, all copies of sample ``sample``."""
        xp = backend.xp
        parts = []
        for start in range(0, len(batch), self.batch_size):
            out = self._outputs(batch[start:start + self.batch_size])
            chosen = None if self.classes is None else xp.full(len(out), self.classes[sample])
            parts.append(self._pick(out, chosen))
        return xp.concatenate(parts).astype(backend.xp.float64)


def feature_groups(feature_mask, x, fn: str):
    """(labels, M): the group 0..M-1 of each value of one sample (shape x.shape[1:])."""
    xp = backend.xp
    sample_shape = x.shape[1:]
    if feature_mask is None:
        size = math.prod(sample_shape)
        return xp.arange(size).reshape(sample_shape), size
    mask = xp.asarray(feature_mask)
    if mask.dtype.kind not in "iu":
        raise TypeError(f"{fn}: feature_mask must hold integer group labels, got dtype {mask.dtype}")
    if mask.ndim == x.ndim and mask.shape[0] == 1:
        mask = mask[0]
    try:
        mask = xp.broadcast_to(mask, sample_shape)
    except ValueError:
        raise ShapeError(f"{fn}: feature_mask of shape {mask.shape} does not broadcast to one sample's shape "
                         f"{sample_shape} (inputs {x.shape})") from None
    _, labels = np.unique(backend.to_numpy(mask), return_inverse=True)
    labels = xp.asarray(labels.reshape(sample_shape))
    return labels, int(labels.max()) + 1


def compose(coalitions, labels, sample, reference):
    """Copies of ``sample`` (one per row of the 0/1 ``coalitions`` (k, M)) that keep the
    groups marked 1 and take ``reference``'s values elsewhere: (k, *sample shape)."""
    kept = backend.xp.asarray(coalitions, dtype=bool)[:, labels]
    return backend.xp.where(kept, sample[None], reference[None])


def spread(values, labels, dtype):
    """Per-group values (M,) written on every value of their group: the sample's shape."""
    return backend.xp.asarray(values)[labels].astype(dtype)


def _positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return int(value)


def _prepare(model, x, target, baselines, feature_mask, batch_size, fn: str):
    x = as_input_batch(x, fn)
    reference = broadcast_baseline(baselines, x, fn)
    labels, groups = feature_groups(feature_mask, x, fn)
    scorer = Scorer(prediction_function(model, fn), x, target, batch_size, fn)
    return x, reference, labels, groups, scorer


def feature_ablation(model, x, target=None, baselines=None, feature_mask=None, batch_size: int = 256):
    """A_j = S(x) - S(x with group j set to the baselines), the shape of ``x`` (module
    docstring). ``baselines``: zeros for None, or anything that broadcasts to x."""
    fn = "feature_ablation"
    x, reference, labels, groups, scorer = _prepare(model, x, target, baselines, feature_mask, batch_size, fn)
    xp = backend.xp
    out = xp.empty_like(x)
    all_but_one = 1 - np.eye(groups, dtype=np.int8)
    for i in range(len(x)):
        ablated = scorer.scores(compose(all_but_one, labels, x[i], reference[i]), i)
        out[i] = spread(scorer.clean[i] - ablated, labels, x.dtype)
    return out


def shapley_value_sampling(model, x, target=None, baselines=None, feature_mask=None, n_samples: int = 25,
                           seed: int | None = None, batch_size: int = 256):
    """Shapley values estimated from ``n_samples`` random orders of the feature groups, the
    shape of ``x`` (module docstring); per sample, sum_j phi_j = S(x) - S(baselines).
    ``seed`` None draws from lamina's generator (:func:`lamina.manual_seed`)."""
    fn = "shapley_value_sampling"
    n_samples = _positive_int(n_samples, "n_samples", fn)
    x, reference, labels, groups, scorer = _prepare(model, x, target, baselines, feature_mask, batch_size, fn)
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    xp = backend.xp
    out = xp.empty_like(x)
    for i in range(len(x)):
        orders = [rng.permutation(groups) for _ in range(n_samples)]
        coalitions = np.zeros((n_samples, groups + 1, groups), dtype=np.int8)
        for k, order in enumerate(orders):
            for step, group in enumerate(order):
                coalitions[k, step + 1:, group] = 1
        values = backend.to_numpy(scorer.scores(compose(coalitions.reshape(-1, groups), labels, x[i], reference[i]),
                                                i)).reshape(n_samples, groups + 1)
        gains = np.diff(values, axis=1)
        phi = np.zeros(groups)
        for k, order in enumerate(orders):
            phi[order] += gains[k]
        out[i] = spread(phi / n_samples, labels, x.dtype)
    return out
