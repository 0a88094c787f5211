"""The curvature of a trained network's loss surface (course notes, Second-order
optimization: the Hessian tells about the curvature), as PyHessian (Yao et al., 2020) studies it.

For the cost J(w) = loss_fn(model(x), y) of a batch, w the model's trainable parameters, the
Hessian H = d^2 J / dw dw has one row and one column per parameter: too large to form for
any real network. Every tool here uses H only through Hessian-vector products, each computed
by differentiating the gradient twice (Pearlmutter's trick):

    H v = d/dw < dJ/dw, v >

with dJ/dw recorded on the graph by ``lamina.autograd.grad(J, w, create_graph=True)``: one
forward and two backward passes, whatever the number of parameters. A vector v over the
parameters is a list of arrays, one per parameter, in ``model.parameters(trainable_only=True)``
order, and <u, v> = sum_i <u_i, v_i>.

* :func:`hessian_vector_product`: H v.
* :func:`hessian_eigenvalues`: the top-k eigenvalues of H (largest |lambda| first) and their
  eigenvectors, by power iteration: v <- H v / ||H v|| converges to the eigenvector of the
  largest |lambda|, which is read off the Rayleigh quotient

      lambda ~ R(v) = <v, H v> / <v, v>

  Iteration stops when R changes by less than ``tol`` relative to its size. The next
  eigenvalues come by deflation: v and H v are kept orthogonal to the eigenvectors already found.
* :func:`lanczos_eigenvalues`: the top-k eigenvalues (largest first) by the Lanczos
  iteration: from a random unit q_1, m products build an orthonormal basis Q of the Krylov
  space span(q_1, H q_1, ..., H^(m-1) q_1) in which Q^T H Q = T is tridiagonal,

      beta_j q_(j+1) = H q_j - alpha_j q_j - beta_(j-1) q_(j-1),   alpha_j = <q_j, H q_j>

  (each new vector re-orthogonalised against all of Q against rounding); the eigenvalues of
  the small T (Ritz values) approximate H's extreme eigenvalues far faster than power iteration.
* :func:`hessian_trace`: tr(H), by Hutchinson's estimator. For v with independent Rademacher
  entries (+1 or -1, each with probability 1/2), E[v v^T] = I, so

      E[v^T H v] = tr(H E[v v^T]) = tr(H)

  and the mean of v^T H v over m draws estimates tr(H), with standard error s / sqrt(m)
  (s the draws' sample standard deviation).

The data is one batch (``x``, ``y``) or, with ``y=None``, an iterable of (x, y) batches (a
:class:`lamina.data.DataLoader`): then H is the Hessian of the cost over all samples, the
batches' Hessians averaged with their sizes as weights (exact for a cost that is a mean over
samples). The batches are read once and kept for the whole computation.

The model runs in the mode the caller left it in, and no parameter's ``grad`` changes. For a
Hessian that does not change between products, put a model with dropout or batch norm in
evaluation mode first (``model.eval()``): in training mode dropout draws new masks on each
pass and batch norm updates its running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, enable_grad, grad, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.parameter import Parameter

__all__ = ["HessianEigenpairs", "TraceEstimate", "hessian_eigenvalues", "hessian_trace", "hessian_vector_product",
           "lanczos_eigenvalues"]

LossFn = Callable[[Tensor, object], Tensor]


class HessianEigenpairs(NamedTuple):
    """Eigenvalues of the Hessian, largest |lambda| first, and for each its unit eigenvector
    (a list of arrays, one per trainable parameter; its sign is arbitrary)."""

    eigenvalues: list[float]
    eigenvectors: list[list]


class TraceEstimate(NamedTuple):
    """Hutchinson's estimate of tr(H) and its standard error (nan for a single sample)."""

    mean: float
    standard_error: float


# -- data and parameters ----------------------------------------------------------------------------


def _batches(x, y, fn: str) -> list[tuple[object, object]]:
    """The (x, y) batches: [(x, y)], or the batches of the iterable ``x`` when ``y`` is None."""
    if y is not None:
        return [(x, y)]
    if isinstance(x, (Tensor, np.ndarray)) or not isinstance(x, Iterable):
        raise TypeError(f"{fn}: y is None, so x must be an iterable of (x, y) batches (a DataLoader); "
                        f"got {type(x).__name__}")
    batches = []
    for i, batch in enumerate(x):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"{fn}: batch {i} of the data is not an (x, y) pair: got {type(batch).__name__}"
                             + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        batches.append((batch[0], batch[1]))
    if not batches:
        raise ValueError(f"{fn}: the data has no batches")
    return batches


def _batch_size(x, fn: str) -> int:
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) == 0:
        raise ShapeError(f"{fn}: an input batch needs a batch axis; got {type(x).__name__} of shape {shape}")
    return int(shape[0])


def _model_input(x, dtype):
    """A floating array or tensor as a tensor of the parameters' dtype; other inputs (integer
    token ids) as a tensor of their own dtype."""
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if data.dtype.kind == "f" and data.dtype != dtype:
        return tensor(data.astype(dtype), dtype=dtype)
    return x if isinstance(x, Tensor) else tensor(data, dtype=data.dtype)


def _trainable_parameters(model: Module, first_input, fn: str) -> list[tuple[str, Parameter]]:
    """The model's (name, parameter) pairs that learn; a model not built yet is built by one
    forward pass in evaluation mode (so that no running statistic moves)."""
    if not isinstance(model, Module):
        raise TypeError(f"{fn}: expected a lamina Module, got {type(model).__name__}")
    if not model.built and not any(m.built for m in model.modules()):
        with no_grad(), evaluation_mode(model):
            model(_model_input(first_input, backend.get_default_dtype()))
    named = list(model.named_parameters(trainable_only=True))
    if not named:
        raise ValueError(f"{fn}: the model has no trainable parameters (all frozen?)")
    return named


def _checked_vectors(vectors, named: list[tuple[str, Parameter]], fn: str) -> list:
    if isinstance(vectors, (Tensor, np.ndarray)) or not isinstance(vectors, Sequence):
        raise TypeError(f"{fn}: vectors must be a list of arrays, one per trainable parameter; "
                        f"got {type(vectors).__name__}")
    if len(vectors) != len(named):
        raise ValueError(f"{fn}: {len(vectors)} vectors for {len(named)} trainable parameters "
                         f"({', '.join(name for name, _ in named)}); expected one per parameter")
    arrays = []
    for vector, (name, param) in zip(vectors, named):
        array = backend.xp.asarray(vector.data if isinstance(vector, Tensor) else vector)
        if array.shape != param.shape:
            raise ShapeError(f"{fn}: the vector for parameter {name!r} has shape {array.shape}; "
                             f"expected the parameter's shape {param.shape}")
        arrays.append(array.astype(param.data.dtype, copy=False))
    return arrays


def _cost(model: Module, loss_fn: LossFn, x, y, dtype, fn: str) -> Tensor:
    cost = loss_fn(model(_model_input(x, dtype)), y)
    if not isinstance(cost, Tensor):
        raise TypeError(f"{fn}: loss_fn must return a Tensor, got {type(cost).__name__}")
    if cost.data.size != 1:
        raise ValueError(f"{fn}: loss_fn must return a scalar cost, got shape {cost.shape}")
    return cost


# -- Hessian-vector products ------------------------------------------------------------------------


def _hvp_over_batches(model: Module, loss_fn: LossFn, batches, named, vectors: list, fn: str) -> list:
    """H v for the cost over all ``batches``: sum_b n_b H_b v / sum_b n_b, each H_b v being
    d/dw <dJ_b/dw, v>."""
    params = [param for _, param in named]
    dtype = params[0].data.dtype
    total = [backend.xp.zeros_like(param.data) for param in params]
    samples = 0
    with enable_grad():
        for x, y in batches:
            n = _batch_size(x, fn)
            cost = _cost(model, loss_fn, x, y, dtype, fn)
            if not cost.requires_grad:
                raise ValueError(f"{fn}: loss_fn's cost does not depend on the model's parameters")
            gradients = grad(cost, params, create_graph=True, allow_unused=True)
            inner = None
            for g, v in zip(gradients, vectors):
                if g is not None:
                    term = (g * tensor(v, dtype=v.dtype)).sum()
                    inner = term if inner is None else inner + term
            if inner is not None and inner.requires_grad:  # else the cost is linear in w: H v = 0
                for i, h_v in enumerate(grad(inner, params, allow_unused=True)):
                    if h_v is not None:
                        total[i] += n * h_v
            samples += n
    return [t / samples for t in total]


def hessian_vector_product(model: Module, loss_fn: LossFn, x, y, vectors: Sequence) -> list:
    """H v, H = d^2 J / dw dw the Hessian of J(w) = loss_fn(model(x), y) with respect to the
    model's trainable parameters w, by H v = d/dw <dJ/dw, v> (two backward passes; H is not formed).

    ``vectors``: v, one array per parameter in ``model.parameters(trainable_only=True)`` order.
    ``loss_fn(prediction, y)`` returns a scalar Tensor, e.g.
    ``lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True)``. With ``y=None``, ``x``
    is an iterable of (x, y) batches. Returns one array per parameter. No parameter's
    ``grad`` changes; the model's mode is left as it is (use ``model.eval()`` for a
    deterministic Hessian with dropout or batch norm)."""
    fn = "hessian_vector_product"
    batches = _batches(x, y, fn)
    named = _trainable_parameters(model, batches[0][0], fn)
    return _hvp_over_batches(model, loss_fn, batches, named, _checked_vectors(vectors, named, fn), fn)


# -- eigenvalues --------------------------------------------------------------------------------------


def _dot(u: list, v: list) -> float:
    return float(sum(float(backend.xp.vdot(a, b)) for a, b in zip(u, v)))


def _norm(v: list) -> float:
    return math.sqrt(_dot(v, v))


def _without(v: list, basis: list[list]) -> list:
    """v minus its projection onto the orthonormal ``basis`` (Gram-Schmidt)."""
    for b in basis:
        along = _dot(v, b)
        v = [vi - along * bi for vi, bi in zip(v, b)]
    return v


def _check_count(value, fn: str, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def hessian_eigenvalues(model: Module, loss_fn: LossFn, x, y, top_k: int = 1, max_iter: int = 100,
                        tol: float = 1e-4, seed: int | None = 0) -> HessianEigenpairs:
    """The ``top_k`` eigenvalues of H of largest magnitude, with their unit eigenvectors.

    Power iteration from a random normal start (``seed``): v <- H v / ||H v||, the eigenvalue
    read off the Rayleigh quotient R(v) = <v, H v> for ||v|| = 1, until
    |R_t - R_{t-1}| <= tol |R_t| or ``max_iter`` products. Each next eigenpair is found with v
    and H v kept orthogonal to the eigenvectors already found (deflation). Eigenvalues close
    in magnitude converge slowly: lower ``tol`` and raise ``max_iter`` for accuracy. The
    result is sorted by |lambda|, largest first. See :func:`hessian_vector_product` for
    ``loss_fn``, ``y=None`` and the model's mode.
    """
    fn = "hessian_eigenvalues"
    top_k = _check_count(top_k, fn, "top_k")
    max_iter = _check_count(max_iter, fn, "max_iter")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
        raise ValueError(f"{fn}: tol must be a number >= 0, got {tol!r}")
    batches = _batches(x, y, fn)
    named = _trainable_parameters(model, batches[0][0], fn)
    count = sum(param.size for _, param in named)
    if top_k > count:
        raise ValueError(f"{fn}: top_k={top_k} but the model has only {count} trainable parameters "
                         "(H has that many eigenvalues)")
    rng = np.random.default_rng(seed)
    shapes_dtypes = [(param.shape, param.data.dtype) for _, param in named]

    def product(v: list) -> list:
        return _without(_hvp_over_batches(model, loss_fn, batches, named, v, fn), found)

    eigenvalues: list[float] = []
    found: list[list] = []
    for _ in range(top_k):
        v = _without([backend.xp.asarray(rng.standard_normal(s)).astype(d) for s, d in shapes_dtypes], found)
        v = [vi / _norm(v) for vi in v]
        rayleigh = None
        for _ in range(max_iter):
            h_v = product(v)
            previous, rayleigh = rayleigh, _dot(v, h_v)
            size = _norm(h_v)
            if size == 0.0:  # v lies in H's null space (outside the deflated directions)
                break
            v = [hi / size for hi in h_v]
            if previous is not None and abs(rayleigh - previous) <= tol * abs(rayleigh):
                break
        eigenvalues.append(rayleigh)
        found.append(v)
    order = sorted(range(top_k), key=lambda i: -abs(eigenvalues[i]))
    return HessianEigenpairs([eigenvalues[i] for i in order], [found[i] for i in order])


def lanczos_eigenvalues(model: Module, loss_fn: LossFn, x, y, top_k: int = 1, iterations: int | None = None,
                        which: str = "largest", seed: int | None = 0) -> HessianEigenpairs:
    """The ``top_k`` largest eigenvalues of H (``which="largest"``, as PyHessian's top-k) or
    those of largest magnitude (``"magnitude"``), with their unit Ritz vectors, by ``iterations``
    Lanczos steps (default min(n, max(30, 3 top_k)), n the number of parameters; with n steps
    the result is exact up to rounding). Each Lanczos vector is re-orthogonalised against all
    the earlier ones. See :func:`hessian_vector_product` for ``loss_fn``, ``y=None`` and the mode.
    """
    fn = "lanczos_eigenvalues"
    top_k = _check_count(top_k, fn, "top_k")
    if which not in ("largest", "magnitude"):
        raise ValueError(f"{fn}: which must be 'largest' or 'magnitude', got {which!r}")
    batches = _batches(x, y, fn)
    named = _trainable_parameters(model, batches[0][0], fn)
    count = sum(param.size for _, param in named)
    steps = min(count, max(30, 3 * top_k)) if iterations is None else _check_count(iterations, fn, "iterations")
    if not top_k <= steps <= count:
        raise ValueError(f"{fn}: need top_k <= iterations <= {count} (the number of trainable parameters); "
                         f"got top_k={top_k}, iterations={steps}")
    rng = np.random.default_rng(seed)
    q = [backend.xp.asarray(rng.standard_normal(param.shape)).astype(param.data.dtype) for _, param in named]
    basis = [[qi / _norm(q) for qi in q]]
    alphas: list[float] = []
    betas: list[float] = []
    while True:
        w = _hvp_over_batches(model, loss_fn, batches, named, basis[-1], fn)
        alphas.append(_dot(basis[-1], w))
        w = _without(_without(w, basis), basis)  # twice: one Gram-Schmidt pass leaves rounding behind
        beta = _norm(w)
        if len(basis) == steps or beta <= 1e-12 * max(abs(a) for a in alphas):  # the Krylov space is H-invariant
            break
        betas.append(beta)
        basis.append([wi / beta for wi in w])
    ritz_values, ritz_vectors = np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
    if top_k > len(alphas):
        raise ValueError(f"{fn}: the Krylov space from this start has dimension {len(alphas)} < top_k={top_k}")
    key = -ritz_values if which == "largest" else -np.abs(ritz_values)
    order = np.argsort(key, kind="stable")[:top_k]
    vectors = [[sum(float(ritz_vectors[i, k]) * basis[i][p] for i in range(len(basis))) for p in range(len(named))]
               for k in order]
    return HessianEigenpairs([float(ritz_values[k]) for k in order], vectors)


# -- trace ---------------------------------------------------------------------------------------------


def hessian_trace(model: Module, loss_fn: LossFn, x, y, samples: int = 100, seed: int | None = 0) -> TraceEstimate:
    """Hutchinson's estimate of tr(H): the mean of v^T H v over ``samples`` vectors v of
    independent Rademacher entries (E[v^T H v] = tr(H)), and its standard error s / sqrt(m),
    s the sample standard deviation of the m = ``samples`` draws (nan for m = 1). See
    :func:`hessian_vector_product` for ``loss_fn``, ``y=None`` and the model's mode."""
    fn = "hessian_trace"
    samples = _check_count(samples, fn, "samples")
    batches = _batches(x, y, fn)
    named = _trainable_parameters(model, batches[0][0], fn)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        v = [backend.xp.asarray(rng.choice([-1.0, 1.0], size=param.shape)).astype(param.data.dtype)
             for _, param in named]
        draws.append(_dot(v, _hvp_over_batches(model, loss_fn, batches, named, v, fn)))
    spread = float(np.std(draws, ddof=1)) / math.sqrt(samples) if samples > 1 else math.nan
    return TraceEstimate(float(np.mean(draws)), spread)
