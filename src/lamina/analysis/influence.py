"""Which training examples a prediction owes to: influence functions and TracIn.

Both score a pair (training example z, test example z_test), from the gradients of the
per-example loss L(z, w) with respect to trainable parameters w (all of them, or the subset
``params`` names: the last layer, say).

* :func:`influence_scores` (Koh & Liang 2017): the influence of up-weighting z on the test loss,

      I(z, z_test) = -grad L(z_test)^T H^-1 grad L(z),

  H the Hessian of the training objective R(w) = (1/n) sum_i L(z_i, w) + l2 ||w||^2, plus
  ``damping`` on its diagonal. Leaving z out (an up-weight of -1/n) changes the test loss by
  about -I(z, z_test) / n: a negative score marks a helpful example, a positive one a harmful one.
  H^-1 v comes from the Hessian itself (``method="exact"``, small parameter counts), from
  conjugate gradients on Hessian-vector products (``"cg"``) or from LiSSA (``"lissa"``, Agarwal
  et al. 2017), the recursion h_j = v + (I - (H_B + lambda I) / s) h_{j-1} on Hessians H_B of random
  training batches, whose limit h / s is (H + lambda I)^-1 v when s exceeds H's largest eigenvalue.
* :func:`self_influence`: grad L(z)^T H^-1 grad L(z) = -I(z, z), how much z's own loss rises
  (times n) when z is left out; mislabelled examples score high.
* :func:`tracin_scores` (Pruthi et al. 2020): sum_k eta_k grad L(z; w_k) . grad L(z_test; w_k)
  over saved checkpoints w_k and their learning rates eta_k; :func:`tracin_self_influence` the
  same with z_test = z.

Representer points and data Shapley values are in :mod:`lamina.analysis.data_valuation`.

Data is an (x, y) pair of arrays with the examples on the leading axis; ``loss_fn(output, y)``
returns the mean loss over a batch and nothing else (a weight penalty goes into ``l2``). Per-example
gradients come from :class:`lamina.nn.PerSampleGradients` (one backward pass per batch) where it
covers every chosen parameter, else from a loop over the examples. The model runs in evaluation
mode (no dropout; batch norm on its running statistics) and its weights and ``grad`` are left alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, enable_grad, grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.parameter import Parameter
from lamina.nn.per_sample import PerSampleGradients

__all__ = ["influence_scores", "self_influence", "tracin_scores", "tracin_self_influence"]

LossFn = Callable[[Tensor, object], Tensor]
METHODS = ("exact", "cg", "lissa")
MAX_EXACT_PARAMETERS = 5000


# -- data, parameters and gradients -------------------------------------------------------------------


def _pair(data, fn: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{fn}: {what} must be an (x, y) pair of arrays, got {type(data).__name__}")
    x, y = (backend.to_numpy(v.data) if isinstance(v, Tensor) else np.asarray(v) for v in data)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ShapeError(f"{fn}: {what} needs x and y with the same leading (example) axis; "
                         f"got x {x.shape} and y {y.shape}")
    if len(x) == 0:
        raise ValueError(f"{fn}: {what} has no examples")
    return x, y


def _chosen_parameters(model: Module, params, fn: str) -> list[Parameter]:
    """The trainable parameters ``params`` picks: all (None), those of a submodule, or those
    named (a name or a module prefix such as ``"2"`` for ``"2.weight"`` and ``"2.bias"``)."""
    if not isinstance(model, Module):
        raise TypeError(f"{fn}: expected a lamina Module, got {type(model).__name__}")
    named = list(model.named_parameters(trainable_only=True))
    if params is None:
        chosen = [p for _, p in named]
    elif isinstance(params, Module):
        chosen = params.parameters(trainable_only=True)
    else:
        wanted = [params] if isinstance(params, (str, Parameter)) else list(params)
        chosen = []
        for entry in wanted:
            if isinstance(entry, Parameter):
                found = [entry]
            else:
                found = [p for name, p in named if name == entry or name.startswith(f"{entry}.")]
                if not found:
                    raise ValueError(f"{fn}: no trainable parameter is named {entry!r} or lies under it; "
                                     f"the model has {[name for name, _ in named]}")
            chosen += [p for p in found if all(p is not q for q in chosen)]
    if not chosen:
        raise ValueError(f"{fn}: no trainable parameter chosen (params={params!r}; all frozen?)")
    return chosen


def _as_input(x: np.ndarray, dtype) -> Tensor:
    return tensor(x, dtype=dtype) if x.dtype.kind == "f" else tensor(x, dtype=x.dtype)


def _cost(model: Module, loss_fn: LossFn, x, y, dtype, fn: str) -> Tensor:
    cost = loss_fn(model(_as_input(x, dtype)), y)
    if not isinstance(cost, Tensor) or cost.data.size != 1:
        raise ValueError(f"{fn}: loss_fn must return a scalar Tensor (the batch's mean loss), got "
                         + (f"shape {cost.shape}" if isinstance(cost, Tensor) else type(cost).__name__))
    return cost


def _flat(arrays: Sequence, params: list[Parameter]) -> np.ndarray:
    return np.concatenate([np.zeros(p.size) if a is None else backend.to_numpy(a).astype(np.float64).ravel()
                           for a, p in zip(arrays, params)])


def _looped_gradients(model, loss_fn, x, y, params, fn) -> np.ndarray:
    dtype = params[0].data.dtype
    rows = []
    for i in range(len(x)):
        cost = _cost(model, loss_fn, x[i:i + 1], y[i:i + 1], dtype, fn)
        rows.append(_flat(grad(cost, params, allow_unused=True) if cost.requires_grad else [None] * len(params),
                          params))
    return np.stack(rows)


def _sample_gradients(model: Module, loss_fn: LossFn, x, y, params: list[Parameter], batch_size: int | None,
                      fn: str) -> np.ndarray:
    """(n, p): row i the flattened gradient of example i's loss over ``params``, by per-sample
    gradients where the tracker covers every parameter, else by a loop over the examples."""
    dtype = params[0].data.dtype
    step = batch_size or len(x)
    blocks = []
    with evaluation_mode(model), enable_grad():
        for start in range(0, len(x), step):
            xb, yb = x[start:start + step], y[start:start + step]
            with PerSampleGradients(params, loss_reduction="mean") as tracker:
                cost = _cost(model, loss_fn, xb, yb, dtype, fn)
                if cost.requires_grad:
                    grad(cost, params, allow_unused=True)
            found = [tracker.grad_sample(p) for p in params]
            if all(g is not None for g in found):
                blocks.append(np.concatenate([backend.to_numpy(g).astype(np.float64).reshape(len(xb), -1)
                                              for g in found], axis=1))
            else:  # a parameter used outside a module call: no per-sample rule sees it
                blocks.append(_looped_gradients(model, loss_fn, xb, yb, params, fn))
    return np.concatenate(blocks)


# -- Hessian products and the inverse ------------------------------------------------------------------


def _hessian_times(model, loss_fn, x, y, params: list[Parameter], vectors: np.ndarray, batch_size, fn) -> np.ndarray:
    """H_data V for V (p, k): the Hessian of the mean loss over (x, y) times each column,
    by d/dw <dJ/dw, v> on one recorded gradient per batch."""
    dtype = params[0].data.dtype
    shapes = [p.shape for p in params]
    cuts = np.cumsum([p.size for p in params])[:-1]
    result = np.zeros_like(vectors)
    step = batch_size or len(x)
    with evaluation_mode(model), enable_grad():
        for start in range(0, len(x), step):
            xb, yb = x[start:start + step], y[start:start + step]
            cost = _cost(model, loss_fn, xb, yb, dtype, fn)
            if not cost.requires_grad:
                continue
            gradients = grad(cost, params, create_graph=True, allow_unused=True)
            for j in range(vectors.shape[1]):
                inner = None
                for g, v, shape in zip(gradients, np.split(vectors[:, j], cuts), shapes):
                    if g is not None:
                        term = (g * tensor(v.reshape(shape), dtype=dtype)).sum()
                        inner = term if inner is None else inner + term
                if inner is not None and inner.requires_grad:  # else the loss is linear in w
                    result[:, j] += len(xb) * _flat(grad(inner, params, retain_graph=True, allow_unused=True),
                                                    params)
    return result / len(x)


def _exact_solve(apply_h, rhs: np.ndarray, ridge: float, damping: float, fn: str) -> np.ndarray:
    size = rhs.shape[0]
    if size > MAX_EXACT_PARAMETERS:
        raise ValueError(f"{fn}: method='exact' forms the {size}x{size} Hessian; above "
                         f"{MAX_EXACT_PARAMETERS} parameters use method='cg' or 'lissa', or restrict params")
    hessian = apply_h(np.eye(size))
    hessian = (hessian + hessian.T) / 2 + ridge * np.eye(size)
    eigenvalues = np.linalg.eigvalsh(hessian)
    largest = np.abs(eigenvalues).max()
    if largest == 0 or np.abs(eigenvalues).min() <= 1e-12 * largest:
        raise ValueError(f"{fn}: the Hessian (plus l2 and damping={damping}) is singular: eigenvalues from "
                         f"{eigenvalues.min():.3g} to {eigenvalues.max():.3g}; pass damping > 0")
    return np.linalg.solve(hessian, rhs)


def _conjugate_gradients(apply_h, rhs: np.ndarray, ridge: float, damping: float, tol: float, max_iter: int,
                         fn: str) -> np.ndarray:
    """Solves (H + ridge I) s = b for every column b of ``rhs`` at once, until
    ||r|| <= tol ||b|| per column."""
    solution = np.zeros_like(rhs)
    residual = rhs.copy()
    direction = residual.copy()
    squared = (residual ** 2).sum(axis=0)
    target = tol * np.sqrt(squared)
    for _ in range(max_iter):
        active = np.flatnonzero(np.sqrt(squared) > target)
        if active.size == 0:
            return solution
        p = direction[:, active]
        a_p = apply_h(p) + ridge * p
        curvature = (p * a_p).sum(axis=0)
        if np.any(curvature <= 0):
            raise ValueError(f"{fn}: conjugate gradients met a direction of curvature {curvature.min():.3g} <= 0: "
                             f"the Hessian plus l2 and damping={damping} is not positive definite; "
                             "raise damping")
        step = squared[active] / curvature
        solution[:, active] += step * p
        residual[:, active] -= step * a_p
        new_squared = (residual[:, active] ** 2).sum(axis=0)
        direction[:, active] = residual[:, active] + (new_squared / squared[active]) * p
        squared[active] = new_squared
    warnings.warn(f"{fn}: conjugate gradients stopped after {max_iter} iterations with relative residual "
                  f"{np.max(np.sqrt(squared) / np.maximum(target / tol, 1e-300)):.3g} > tol={tol}",
                  RuntimeWarning, stacklevel=3)
    return solution


def _lissa(apply_batch_h, n: int, rhs: np.ndarray, ridge: float, scale: float, depth: int, repeats: int,
           batch_size: int, seed, fn: str) -> np.ndarray:
    """The mean over ``repeats`` of h / scale after ``depth`` steps of
    h <- rhs + h - (H_B h + ridge h) / scale, B a random batch of the training examples."""
    rng = np.random.default_rng(seed)
    estimate = np.zeros_like(rhs)
    bound = 1e8 * max(np.abs(rhs).max(), 1e-300)
    for _ in range(repeats):
        h = rhs.copy()
        for _ in range(depth):
            batch = rng.choice(n, size=min(batch_size, n), replace=False)
            h = rhs + h - (apply_batch_h(batch, h) + ridge * h) / scale
            if not np.all(np.isfinite(h)) or np.abs(h).max() > bound:
                raise ValueError(f"{fn}: the LiSSA recursion diverges: lissa_scale={scale} must exceed the "
                                 "largest eigenvalue of the Hessian plus l2 and damping (and the Hessian must "
                                 "be positive definite: raise damping)")
        estimate += h / scale
    return estimate / repeats


def _check_number(value, fn: str, name: str, low: float, strict: bool) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not (value > low if strict else value >= low):
        raise ValueError(f"{fn}: {name} must be a number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _inverse_hessian_times(model, loss_fn, train, params, rhs, method, damping, l2, batch_size, cg_tol,
                           cg_max_iter, lissa_scale, lissa_depth, lissa_repeats, lissa_batch_size, seed, fn):
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    ridge = 2 * _check_number(l2, fn, "l2", 0, False) + _check_number(damping, fn, "damping", 0, False)
    x, y = train

    def apply_h(vectors):
        return _hessian_times(model, loss_fn, x, y, params, vectors, batch_size, fn)

    if method == "exact":
        return _exact_solve(apply_h, rhs, ridge, damping, fn)
    if method == "cg":
        max_iter = cg_max_iter if cg_max_iter is not None else max(10 * rhs.shape[0], 100)
        return _conjugate_gradients(apply_h, rhs, ridge, damping, _check_number(cg_tol, fn, "cg_tol", 0, True),
                                    int(max_iter), fn)

    def apply_batch_h(batch, vectors):
        return _hessian_times(model, loss_fn, x[batch], y[batch], params, vectors, None, fn)

    return _lissa(apply_batch_h, len(x), rhs, ridge, _check_number(lissa_scale, fn, "lissa_scale", 0, True),
                  int(lissa_depth), int(lissa_repeats), int(lissa_batch_size), seed, fn)


# -- influence functions --------------------------------------------------------------------------------


def influence_scores(model: Module, loss_fn: LossFn, train_data, test_data, params=None, method: str = "exact",
                     damping: float = 0.01, *, l2: float = 0.0, batch_size: int | None = None,
                     cg_tol: float = 1e-10, cg_max_iter: int | None = None, lissa_scale: float = 10.0,
                     lissa_depth: int = 1000, lissa_repeats: int = 1, lissa_batch_size: int = 32,
                     seed: int | None = 0) -> np.ndarray:
    """(n_test, n_train): I(z_i, z_t) = -grad L(z_t)^T (H + (2 l2 + damping) I)^-1 grad L(z_i), the
    influence of up-weighting training example i on test example t's loss (Koh & Liang 2017).

    H is the Hessian of the mean of ``loss_fn`` over ``train_data`` with respect to ``params``
    (None: every trainable parameter; a submodule, parameters, or names / name prefixes such as
    ``"2"``); ``l2`` the coefficient of a penalty l2 ||w||^2 in the training objective. Leaving
    example i out and retraining changes the test loss by about -I / n_train. ``method``:
    ``"exact"`` forms the Hessian (p Hessian-vector products); ``"cg"`` conjugate gradients to a
    relative residual ``cg_tol``; ``"lissa"`` the stochastic recursion with ``lissa_scale`` (above
    the largest eigenvalue), ``lissa_depth`` steps on batches of ``lissa_batch_size`` examples,
    averaged over ``lissa_repeats`` runs. ``batch_size`` splits the passes over the training data.
    """
    fn = "influence_scores"
    train = _pair(train_data, fn, "train_data")
    x_test, y_test = _pair(test_data, fn, "test_data")
    chosen = _chosen_parameters(model, params, fn)
    train_gradients = _sample_gradients(model, loss_fn, *train, chosen, batch_size, fn)
    test_gradients = _sample_gradients(model, loss_fn, x_test, y_test, chosen, batch_size, fn)
    solved = _inverse_hessian_times(model, loss_fn, train, chosen, test_gradients.T, method, damping, l2,
                                    batch_size, cg_tol, cg_max_iter, lissa_scale, lissa_depth, lissa_repeats,
                                    lissa_batch_size, seed, fn)
    return -solved.T @ train_gradients.T


def self_influence(model: Module, loss_fn: LossFn, train_data, params=None, method: str = "exact",
                   damping: float = 0.01, *, l2: float = 0.0, batch_size: int | None = None,
                   cg_tol: float = 1e-10, cg_max_iter: int | None = None, lissa_scale: float = 10.0,
                   lissa_depth: int = 1000, lissa_repeats: int = 1, lissa_batch_size: int = 32,
                   seed: int | None = 0) -> np.ndarray:
    """(n_train,): grad L(z_i)^T (H + (2 l2 + damping) I)^-1 grad L(z_i) = -I(z_i, z_i), how much
    example i's own loss would rise (times n) if it were left out of training; the highest
    scores flag mislabelled or atypical examples. Arguments as in :func:`influence_scores`."""
    fn = "self_influence"
    train = _pair(train_data, fn, "train_data")
    chosen = _chosen_parameters(model, params, fn)
    gradients = _sample_gradients(model, loss_fn, *train, chosen, batch_size, fn)
    solved = _inverse_hessian_times(model, loss_fn, train, chosen, gradients.T, method, damping, l2, batch_size,
                                    cg_tol, cg_max_iter, lissa_scale, lissa_depth, lissa_repeats, lissa_batch_size,
                                    seed, fn)
    return np.einsum("ip,pi->i", gradients, solved)


# -- TracIn ------------------------------------------------------------------------------------------------


def _checkpoint_list(checkpoints, fn: str) -> list:
    if isinstance(checkpoints, (Module, dict)) or not isinstance(checkpoints, Iterable):
        raise TypeError(f"{fn}: checkpoints must be a list of models or state dicts, got {type(checkpoints).__name__}")
    checkpoints = list(checkpoints)
    if not checkpoints:
        raise ValueError(f"{fn}: no checkpoints given")
    return checkpoints


def _checkpoint_models(checkpoints: list, model: Module | None, fn: str):
    """Yields each checkpoint as a model: a Module as it is, a state dict loaded into ``model``
    (whose own weights come back afterwards)."""
    saved = None
    try:
        for k, checkpoint in enumerate(checkpoints):
            if isinstance(checkpoint, Module):
                yield checkpoint
                continue
            if not isinstance(checkpoint, dict) or model is None:
                raise TypeError(f"{fn}: checkpoint {k} is a {type(checkpoint).__name__}; expected a Module, or a "
                                "state dict together with model=")
            if saved is None:
                saved = {name: np.array(value, copy=True) for name, value in model.state_dict().items()}
            model.load_state_dict(checkpoint)
            yield model
    finally:
        if saved is not None:
            model.load_state_dict(saved)


def _learning_rates(learning_rates, count: int, fn: str) -> list[float]:
    rates = [learning_rates] * count if np.ndim(learning_rates) == 0 else list(learning_rates)
    if len(rates) != count:
        raise ValueError(f"{fn}: {len(rates)} learning rates for {count} checkpoints; expected one per checkpoint "
                         "(or a single number)")
    return [float(r) for r in rates]


def tracin_scores(checkpoints: Sequence, loss_fn: LossFn, train_data, test_data, learning_rates, params=None,
                  model: Module | None = None, batch_size: int | None = None) -> np.ndarray:
    """(n_test, n_train): TracInCP (Pruthi et al. 2020), sum_k eta_k grad L(z_i; w_k) . grad L(z_t; w_k).

    ``checkpoints``: the models saved during training, or their state dicts loaded in turn into
    ``model``; ``learning_rates`` eta_k, one per checkpoint or one for all. ``params``: names or
    name prefixes of the parameters to use (None: all trainable ones), e.g. ``["2"]`` for the
    last layer of a Sequential. Positive scores: proponents (training on z_i lowered z_t's loss)."""
    fn = "tracin_scores"
    train = _pair(train_data, fn, "train_data")
    test = _pair(test_data, fn, "test_data")
    checkpoints = _checkpoint_list(checkpoints, fn)
    rates = _learning_rates(learning_rates, len(checkpoints), fn)
    total = np.zeros((len(test[0]), len(train[0])))
    for rate, current in zip(rates, _checkpoint_models(checkpoints, model, fn)):
        chosen = _chosen_parameters(current, params, fn)
        g_train = _sample_gradients(current, loss_fn, *train, chosen, batch_size, fn)
        g_test = _sample_gradients(current, loss_fn, *test, chosen, batch_size, fn)
        total += rate * g_test @ g_train.T
    return total


def tracin_self_influence(checkpoints: Sequence, loss_fn: LossFn, train_data, learning_rates, params=None,
                          model: Module | None = None, batch_size: int | None = None) -> np.ndarray:
    """(n_train,): sum_k eta_k ||grad L(z_i; w_k)||^2; the highest scores flag mislabelled
    examples. Arguments as in :func:`tracin_scores`."""
    fn = "tracin_self_influence"
    train = _pair(train_data, fn, "train_data")
    checkpoints = _checkpoint_list(checkpoints, fn)
    rates = _learning_rates(learning_rates, len(checkpoints), fn)
    total = np.zeros(len(train[0]))
    for rate, current in zip(rates, _checkpoint_models(checkpoints, model, fn)):
        g_train = _sample_gradients(current, loss_fn, *train, _chosen_parameters(current, params, fn), batch_size, fn)
        total += rate * (g_train ** 2).sum(axis=1)
    return total
