"""Loss surfaces of trained networks along chosen directions in weight space (Li et al., 2018,
"Visualizing the Loss Landscape of Neural Nets"; Goodfellow et al., 2015).

With w the model's trainable parameters and J(w) the cost over the data:

* :func:`random_direction`: a Gaussian direction d, filter-wise normalised: every filter d_f
  of d (an output unit: axis 0 of a conv kernel (K, f, f, c_in), a column of a Dense kernel
  (in, out)) is rescaled to the norm of the same filter of the weights,

      d_f <- d_f ||w_f|| / ||d_f||

  so that the plot's scale means the same in every layer whatever the weights' scale. One-axis
  parameters (biases, batch-norm scales and shifts) are zeroed with ``ignore="biasbn"``, or set
  to the weights themselves otherwise (as the paper's code does).
* :func:`loss_surface_1d`: J(w + a d) for each a; :func:`loss_surface_2d`: J(w + a d1 + b d2)
  on a grid.
* :func:`linear_interpolation`: J((1 - a) w_A + a w_B) between two models, batch-norm
  statistics interpolated or recomputed at each a.
* :func:`pca_directions`: the two principal directions of a training trajectory (the
  checkpoints minus the last one), with the trajectory's coordinates along them, for the
  paper's optimizer-path plot.
* :func:`epsilon_sharpness`: Keskar et al. (2017)'s sharpness in the box
  |y_i| <= epsilon (|w_i| + 1), (max_y J(w + y) - J(w)) / (1 + J(w)) x 100, the maximum
  found by a few projected sign-ascent steps.
* :func:`plot_surface`: the curves or the contour plot, written atomically as a PNG.

``data`` is one batch ``(x, y)`` or an iterable of (x, y) batches (a DataLoader); the cost is
the batches' ``loss_fn(model(x), y)`` averaged with their sizes as weights. Losses are
measured in evaluation mode without gradients, and the model's weights are always restored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina.analysis.hessian import _batch_size, _model_input
from lamina.autograd import Tensor, enable_grad, grad, no_grad
from lamina.errors import ShapeError
from lamina.io.atomic import save_figure
from lamina.nn.module import Module, evaluation_mode

__all__ = ["PCADirections", "epsilon_sharpness", "linear_interpolation", "loss_surface_1d", "loss_surface_2d",
           "normalize_direction", "pca_directions", "plot_surface", "random_direction"]

LossFn = Callable[[Tensor, object], Tensor]
IGNORE_CHOICES = ("biasbn", None)
NORM_CHOICES = ("filter", "layer", None)


class PCADirections(NamedTuple):
    """The principal directions of a trajectory (unit vectors, one array per parameter), the
    share of the trajectory's variance each explains, and the checkpoints' coordinates
    (n_checkpoints, n_directions) along them, the last checkpoint at the origin."""

    directions: list[list]
    explained_variance_ratio: np.ndarray
    coordinates: np.ndarray


# -- data, weights and cost ---------------------------------------------------------------------------


def data_batches(data, fn: str) -> list[tuple[object, object]]:
    """``(x, y)`` as one batch, else the (x, y) batches of the iterable ``data``."""
    if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
        return [data]
    if isinstance(data, (Tensor, np.ndarray)) or not isinstance(data, Iterable):
        raise TypeError(f"{fn}: data must be a batch (x, y) or an iterable of (x, y) batches; "
                        f"got {type(data).__name__}")
    batches = [tuple(batch) for batch in data]
    if not batches or any(len(batch) != 2 for batch in batches):
        raise ValueError(f"{fn}: data must hold at least one batch, each an (x, y) pair")
    return batches


def trainable(model: Module, fn: str) -> list:
    if not isinstance(model, Module):
        raise TypeError(f"{fn}: expected a lamina Module, got {type(model).__name__}")
    params = model.parameters(trainable_only=True)
    if not params:
        raise ValueError(f"{fn}: the model has no trainable parameters (not built yet, or all frozen?)")
    return params


def weights_of(model: Module, fn: str = "weights_of") -> list:
    """Copies of the model's trainable parameters."""
    return [backend.xp.array(p.data, copy=True) for p in trainable(model, fn)]


def set_weights(params: Sequence, arrays: Sequence) -> None:
    for param, array in zip(params, arrays):
        backend.xp.copyto(param.data, backend.xp.asarray(array).astype(param.data.dtype, copy=False))


def model_cost(model: Module, loss_fn: LossFn, batches, fn: str) -> float:
    """The sample-weighted mean of ``loss_fn(model(x), y)`` over the batches, in evaluation mode."""
    total, samples = 0.0, 0
    dtype = trainable(model, fn)[0].data.dtype
    with no_grad(), evaluation_mode(model):
        for x, y in batches:
            n = _batch_size(x, fn)
            cost = loss_fn(model(_model_input(x, dtype)), y)
            total += n * float(cost.data if isinstance(cost, Tensor) else cost)
            samples += n
    return total / samples


def checked_direction(direction, params: Sequence, fn: str, name: str = "direction") -> list:
    if isinstance(direction, (Tensor, np.ndarray)) or not isinstance(direction, Sequence):
        raise TypeError(f"{fn}: {name} must be a list of arrays, one per trainable parameter; "
                        f"got {type(direction).__name__}")
    if len(direction) != len(params):
        raise ValueError(f"{fn}: {name} has {len(direction)} arrays for {len(params)} trainable parameters")
    arrays = []
    for i, (part, param) in enumerate(zip(direction, params)):
        array = backend.xp.asarray(part.data if isinstance(part, Tensor) else part)
        if array.shape != param.shape:
            raise ShapeError(f"{fn}: {name}[{i}] has shape {array.shape}; expected the parameter's {param.shape}")
        arrays.append(array.astype(param.data.dtype, copy=False))
    return arrays


# -- directions ------------------------------------------------------------------------------------------


def _filter_axis(array) -> int:
    """The axis that indexes a parameter's filters: a conv kernel's first (K, f, f, c_in), a Dense
    kernel's last (in, out)."""
    return 1 if array.ndim == 2 else 0


def normalize_direction(direction: Sequence, weights: Sequence, norm: str | None = "filter",
                        ignore: str | None = "biasbn") -> list:
    """``direction`` rescaled filter by filter (``norm="filter"``) or parameter by parameter
    (``"layer"``) to the weights' norms; one-axis parameters zeroed (``ignore="biasbn"``) or set
    to the weights. A filter of the direction that is all zeros stays zero."""
    if norm not in NORM_CHOICES or ignore not in IGNORE_CHOICES:
        raise ValueError(f"normalize_direction: norm must be one of {NORM_CHOICES} and ignore one of "
                         f"{IGNORE_CHOICES}; got norm={norm!r}, ignore={ignore!r}")
    xp = backend.xp
    result = []
    for d, w in zip(direction, weights):
        if d.ndim <= 1:
            result.append(xp.zeros_like(d) if ignore == "biasbn" else xp.array(w, dtype=d.dtype, copy=True))
        elif norm is None:
            result.append(xp.array(d, copy=True))
        else:
            axes = tuple(a for a in range(d.ndim) if a != _filter_axis(d)) if norm == "filter" else None
            d_norm = xp.sqrt((d.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
            w_norm = xp.sqrt((w.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
            scale = xp.where(d_norm > 0, w_norm / xp.where(d_norm > 0, d_norm, 1.0), 0.0)
            result.append((d * scale).astype(d.dtype))
    return result


def random_direction(model: Module, norm: str | None = "filter", ignore: str | None = "biasbn",
                     seed: int | None = None) -> list:
    """A standard normal direction over the model's trainable parameters, normalised by
    :func:`normalize_direction` (Li et al.'s filter-wise normalisation by default)."""
    weights = weights_of(model, "random_direction")
    rng = np.random.default_rng(seed)
    raw = [backend.xp.asarray(rng.standard_normal(w.shape)).astype(w.dtype) for w in weights]
    return normalize_direction(raw, weights, norm, ignore)


def _flat(arrays: Sequence) -> np.ndarray:
    return np.concatenate([backend.to_numpy(backend.xp.asarray(a)).astype(np.float64).ravel() for a in arrays])


def pca_directions(checkpoints: Sequence, n_components: int = 2) -> PCADirections:
    """The principal directions of the trajectory w_0, ..., w_T (models or lists of parameter
    arrays): the top right singular vectors of the matrix of rows w_i - w_T, with the variance
    share of each and every checkpoint's coordinates <w_i - w_T, u_k> (Li et al.'s
    optimizer-path plot: draw :func:`loss_surface_2d` around w_T along them)."""
    fn = "pca_directions"
    points = [weights_of(c, fn) if isinstance(c, Module) else list(c) for c in checkpoints]
    if len(points) < 2:
        raise ValueError(f"{fn}: need at least 2 checkpoints, got {len(points)}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or not 1 <= n_components < len(points):
        raise ValueError(f"{fn}: n_components must be an integer in [1, {len(points) - 1}], got {n_components!r}")
    shapes = [np.shape(a) for a in points[-1]]
    if any([np.shape(a) for a in p] != shapes for p in points):
        raise ShapeError(f"{fn}: every checkpoint must have the parameter shapes of the last one, {shapes}")
    final = _flat(points[-1])
    offsets = np.stack([_flat(p) - final for p in points])
    _, singular, vt = np.linalg.svd(offsets, full_matrices=False)
    ratio = singular[:n_components] ** 2 / max(float((singular ** 2).sum()), np.finfo(float).tiny)
    dtype = np.asarray(points[-1][0]).dtype
    splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
    directions = [[backend.xp.asarray(part.reshape(s).astype(dtype)) for part, s in zip(np.split(u, splits), shapes)]
                  for u in vt[:n_components]]
    return PCADirections(directions, ratio, offsets @ vt[:n_components].T)


# -- surfaces ---------------------------------------------------------------------------------------------


def _surface(model: Module, loss_fn: LossFn, data, directions: list[list], grid: Iterable[tuple], fn: str) -> list:
    """J(w + sum_k c_k d_k) for each coefficient tuple c of ``grid``; the weights restored after."""
    batches = data_batches(data, fn)
    params = trainable(model, fn)
    directions = [checked_direction(d, params, fn, f"direction {i}") for i, d in enumerate(directions)]
    origin = weights_of(model, fn)
    losses = []
    try:
        for coefficients in grid:
            shifted = [w.astype(np.float64) for w in origin]
            for c, d in zip(coefficients, directions):
                shifted = [s + float(c) * di for s, di in zip(shifted, d)]
            set_weights(params, shifted)
            losses.append(model_cost(model, loss_fn, batches, fn))
    finally:
        set_weights(params, origin)
    return losses


def loss_surface_1d(model: Module, loss_fn: LossFn, data, direction: Sequence, alphas) -> np.ndarray:
    """J(w + a d) for each a of ``alphas`` (``direction``: one array per trainable parameter,
    e.g. from :func:`random_direction`). Returns an array of the alphas' shape."""
    alphas = np.asarray(alphas, dtype=np.float64)
    losses = _surface(model, loss_fn, data, [direction], ((a,) for a in alphas.ravel()), "loss_surface_1d")
    return np.asarray(losses).reshape(alphas.shape)


def loss_surface_2d(model: Module, loss_fn: LossFn, data, directions: Sequence, alphas, betas) -> np.ndarray:
    """J(w + a d1 + b d2) on the grid alphas x betas (``directions`` = (d1, d2)): an array of
    shape (len(alphas), len(betas))."""
    if len(directions) != 2:
        raise ValueError(f"loss_surface_2d: directions must be a pair (d1, d2), got {len(directions)}")
    alphas, betas = np.ravel(alphas).astype(np.float64), np.ravel(betas).astype(np.float64)
    grid = ((a, b) for a in alphas for b in betas)
    losses = _surface(model, loss_fn, data, list(directions), grid, "loss_surface_2d")
    return np.asarray(losses).reshape(len(alphas), len(betas))


def linear_interpolation(model_a: Module, model_b: Module, alphas, data, loss_fn: LossFn,
                         recompute_bn: bool = False, bn_batch_size: int = 128) -> np.ndarray:
    """J((1 - a) w_A + a w_B) for each a of ``alphas`` (Goodfellow et al., 2015), on a copy of
    ``model_a``. Buffers (batch-norm running statistics) are interpolated the same way, or with
    ``recompute_bn`` recomputed at each a by a pass over the data's inputs in training mode
    (:func:`lamina.optim.update_batch_norm`)."""
    import copy

    fn = "linear_interpolation"
    batches = data_batches(data, fn)
    w_a, w_b = weights_of(model_a, fn), weights_of(model_b, fn)
    if [w.shape for w in w_a] != [w.shape for w in w_b]:
        raise ShapeError(f"{fn}: the models' parameter shapes differ: {[w.shape for w in w_a]} and "
                         f"{[w.shape for w in w_b]}")
    buffers_a, buffers_b = _buffers(model_a), _buffers(model_b)
    between = copy.deepcopy(model_a)
    params, own_buffers = trainable(between, fn), _buffers(between)
    alphas = np.asarray(alphas, dtype=np.float64)
    losses = []
    for a in alphas.ravel():
        set_weights(params, [(1 - a) * x + a * y for x, y in zip(w_a, w_b)])
        for name, (owner, attr, _) in own_buffers.items():
            mixed = (1 - a) * buffers_a[name][2] + a * buffers_b[name][2]
            setattr(owner, attr, mixed.astype(buffers_a[name][2].dtype))
        if recompute_bn:
            recompute_batch_norm(between, batches, bn_batch_size)
        losses.append(model_cost(between, loss_fn, batches, fn))
    return np.asarray(losses).reshape(alphas.shape)


def recompute_batch_norm(model: Module, batches, batch_size: int) -> None:
    """The batch-norm running statistics of ``model`` recomputed from the batches' inputs, cut
    into batches of ``batch_size`` (:func:`lamina.optim.update_batch_norm`)."""
    from lamina.optim.averaging import update_batch_norm

    inputs = [backend.xp.asarray(x.data if isinstance(x, Tensor) else x) for x, _ in batches]
    update_batch_norm(model, backend.xp.concatenate(inputs), batch_size=batch_size)


def _buffers(model: Module) -> dict:
    """Every floating buffer that is set, by dotted name: (owner module, attribute, array)."""
    slots = {}
    for path, owner in model.named_modules():
        for attr, values in owner._buffers.items():
            if values is not None and np.asarray(values).dtype.kind == "f":
                slots[f"{path}.{attr}" if path else attr] = (owner, attr, values)
    return slots


# -- sharpness ---------------------------------------------------------------------------------------------


def epsilon_sharpness(model: Module, loss_fn: LossFn, data, epsilon: float = 1e-3, steps: int = 10,
                      step_size: float | None = None) -> float:
    """Keskar et al.'s epsilon-sharpness, in percent:

        100 (max_{y in C} J(w + y) - J(w)) / (1 + J(w)),   C = {y : |y_i| <= epsilon (|w_i| + 1)}

    the maximum approximated by ``steps`` projected sign-ascent steps from y = 0,
    y <- clip(y + s sign(dJ/dw (w + y)), -bound, bound), the step s a fraction ``step_size``
    of each coordinate's bound (default 2 / steps), keeping the best point met."""
    fn = "epsilon_sharpness"
    if not epsilon > 0 or isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{fn}: epsilon must be > 0 and steps an integer >= 1; got {epsilon!r}, {steps!r}")
    fraction = 2.0 / steps if step_size is None else float(step_size)
    batches = data_batches(data, fn)
    params = trainable(model, fn)
    origin = weights_of(model, fn)
    xp = backend.xp
    bounds = [epsilon * (xp.abs(w) + 1) for w in origin]
    shift = [xp.zeros_like(w) for w in origin]
    try:
        base = best = model_cost(model, loss_fn, batches, fn)
        for _ in range(steps):
            set_weights(params, [w + s for w, s in zip(origin, shift)])
            gradients = _gradient(model, loss_fn, batches, params, fn)
            shift = [xp.clip(s + fraction * b * xp.sign(g), -b, b) for s, b, g in zip(shift, bounds, gradients)]
            set_weights(params, [w + s for w, s in zip(origin, shift)])
            best = max(best, model_cost(model, loss_fn, batches, fn))
    finally:
        set_weights(params, origin)
    return 100.0 * (best - base) / (1.0 + base)


def _gradient(model: Module, loss_fn: LossFn, batches, params, fn: str) -> list:
    """dJ/dw over the batches, in evaluation mode, leaving the parameters' ``grad`` alone."""
    total = [backend.xp.zeros_like(p.data) for p in params]
    samples = 0
    with enable_grad(), evaluation_mode(model):
        for x, y in batches:
            n = _batch_size(x, fn)
            cost = loss_fn(model(_model_input(x, params[0].data.dtype)), y)
            for i, g in enumerate(grad(cost, params, allow_unused=True)):
                if g is not None:
                    total[i] += n * (g.data if isinstance(g, Tensor) else g)
            samples += n
    return [t / samples for t in total]


# -- plots -----------------------------------------------------------------------------------------------


def plot_surface(alphas, losses, path: str | os.PathLike, betas=None, trajectory=None, levels: int = 20,
                 labels: Sequence[str] | None = None, title: str | None = None, dpi: int = 100) -> Path:
    """Draw 1-D curves (``losses`` of shape (len(alphas),) or (n_curves, len(alphas)), one
    label each) or, with ``betas``, the contour plot of a (len(alphas), len(betas)) surface, with
    an optional ``trajectory`` (n, 2) of coordinates drawn over it; written atomically to
    ``path`` as a PNG. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas, losses = np.ravel(alphas), np.asarray(losses, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 4))
    if betas is None:
        curves = losses.reshape(-1, len(alphas))
        names = list(labels) if labels is not None else [None] * len(curves)
        for curve, name in zip(curves, names):
            ax.plot(alphas, curve, marker=".", label=name)
        ax.set_xlabel("alpha")
        ax.set_ylabel("loss")
        if labels is not None:
            ax.legend()
    else:
        betas = np.ravel(betas)
        if losses.shape != (len(alphas), len(betas)):
            plt.close(fig)
            raise ShapeError(f"plot_surface: a surface over {len(alphas)} alphas and {len(betas)} betas must have "
                             f"shape {(len(alphas), len(betas))}, got {losses.shape}")
        contour = ax.contour(alphas, betas, losses.T, levels=levels)
        ax.clabel(contour, fontsize=7)
        if trajectory is not None:
            path_xy = np.asarray(trajectory)
            ax.plot(path_xy[:, 0], path_xy[:, 1], "r.-")
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
