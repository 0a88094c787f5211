r"""Gradient surgery: one update direction for the shared weights from T task gradients.

In multi-task learning with shared weights, each task i gives its own gradient
:math:`g_i` of the shared parameters (flattened into one vector). Summing them lets a
task with a large gradient, or one pointing against the others, dominate. The methods
here combine the T vectors (the rows of ``grads``, shape ``(T, n)``) into one direction d
instead:

- ``"sum"`` / ``"mean"``: :math:`\sum_i g_i` or its average (equal weighting).
- ``"pcgrad"`` (Yu et al. 2020): each task's gradient is projected onto the normal plane of
  every other task gradient it conflicts with (negative dot product), the others visited in
  random order, and the projected gradients are summed.
- ``"mgda"`` (Sener and Koltun 2018): the minimum-norm point of the convex hull of the
  :math:`g_i`, a common descent direction for all tasks (zero at a Pareto-stationary point).
- ``"cagrad"`` (Liu et al. 2021): the direction that maximises the worst task's improvement
  within a ball of radius :math:`c\,\|g_0\|` around the average gradient :math:`g_0`.
- ``"graddrop"`` (Chen et al. 2020): each coordinate keeps only the gradients of one sign,
  chosen at random with odds given by the sign purity of that coordinate.
- ``"imtl_g"`` (Liu et al. 2021, IMTL-G): the combination :math:`\sum_i \alpha_i g_i`,
  :math:`\sum_i \alpha_i = 1`, whose projections on every unit task gradient are equal.

The scales follow the papers: ``"sum"``, PCGrad and GradDrop add T gradients, while
``"mean"``, MGDA, CAGrad and IMTL-G give a direction on the scale of one gradient (a convex
or affine combination, or one near the average). :func:`combine_task_gradients` dispatches by
name. Everything works on NumPy arrays of the flattened gradients, in float64; the caller writes
the result back into the parameters' ``grad`` (as :class:`lamina.train.MultiTaskTrainer` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend

__all__ = ["SURGERY_METHODS", "cagrad", "combine_task_gradients", "graddrop", "imtl_g", "mgda",
           "min_norm_frank_wolfe", "min_norm_two", "pcgrad", "project_conflicting"]

#: Added to norms that are divided by, so that zero gradients give zero updates.
EPS = 1e-12


def _as_matrix(grads, where: str) -> np.ndarray:
    """The task gradients as a float64 ``(T, n)`` matrix (one row per task)."""
    if isinstance(grads, np.ndarray):
        matrix = grads
    else:
        rows = [np.ravel(backend.to_numpy(g)) for g in grads]
        sizes = {r.size for r in rows}
        if len(sizes) > 1:
            raise ValueError(f"{where}: every task gradient must have the same length; got lengths "
                             f"{[r.size for r in rows]}")
        matrix = np.stack(rows) if rows else np.zeros((0, 0))
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"{where}: expected task gradients of shape (tasks, n) with at least one task; "
                         f"got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{where}: the task gradients contain non-finite values")
    return matrix


def project_conflicting(grads, rng: np.random.Generator | None = None, shuffle: bool = True) -> np.ndarray:
    r"""PCGrad's projected task gradients :math:`g_i^{PC}` (rows), before they are summed.

    For each task i, starting from :math:`g_i^{PC} = g_i` and visiting the other tasks j in
    random order (task order with ``shuffle=False``; ``rng`` defaults to lamina's generator)::

        if g_i^PC . g_j < 0:   g_i^PC = g_i^PC - (g_i^PC . g_j) / ||g_j||^2  g_j

    (projection against the *original* :math:`g_j`, as in the paper's algorithm). With two
    tasks no conflict is left: :math:`g_1^{PC}\cdot g_2 \ge 0` and :math:`g_2^{PC}\cdot g_1 \ge 0`.
    """
    matrix = _as_matrix(grads, "pcgrad")
    generator = backend.rng() if rng is None else rng
    squared_norms = np.einsum("ij,ij->i", matrix, matrix)
    projected = matrix.copy()
    tasks = matrix.shape[0]
    for i in range(tasks):
        others = [j for j in range(tasks) if j != i]
        if shuffle:
            others = [others[k] for k in generator.permutation(len(others))]
        for j in others:
            dot = projected[i] @ matrix[j]
            if dot < 0:
                projected[i] -= dot / (squared_norms[j] + EPS) * matrix[j]
    return projected


def pcgrad(grads, rng: np.random.Generator | None = None, shuffle: bool = True,
           reduction: str = "sum") -> np.ndarray:
    r"""Projecting conflicting gradients (PCGrad; Yu, Kumar, Gupta, Levine, Hausman and Finn, 2020):
    :math:`\sum_i g_i^{PC}` of :func:`project_conflicting` (``reduction="mean"``: their average)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"pcgrad: reduction must be 'sum' or 'mean'; got {reduction!r}")
    projected = project_conflicting(grads, rng, shuffle)
    combined = projected.sum(axis=0)
    return combined / projected.shape[0] if reduction == "mean" else combined


def min_norm_two(gram: np.ndarray) -> np.ndarray:
    r"""Weights (gamma, 1 - gamma) of the minimum-norm point of the segment between two vectors,
    from their 2x2 Gram matrix :math:`M_{ij} = g_i\cdot g_j` (Sener and Koltun's Algorithm 1)::

        gamma = clip( (g_2 - g_1) . g_2 / ||g_1 - g_2||^2 , 0, 1 )
    """
    gram = np.asarray(gram, dtype=np.float64)
    if gram.shape != (2, 2):
        raise ValueError(f"min_norm_two: expected a 2x2 Gram matrix; got shape {gram.shape}")
    distance = gram[0, 0] + gram[1, 1] - 2.0 * gram[0, 1]
    if distance <= EPS:
        return np.array([0.5, 0.5])
    gamma = float(np.clip((gram[1, 1] - gram[0, 1]) / distance, 0.0, 1.0))
    return np.array([gamma, 1.0 - gamma])


def min_norm_frank_wolfe(gram: np.ndarray, max_iter: int = 1000, tol: float = 1e-12) -> np.ndarray:
    r"""Weights :math:`\alpha` on the simplex minimising :math:`\|\sum_i \alpha_i g_i\|^2 = \alpha^T M \alpha`,
    by Frank-Wolfe with exact line search (after Sener and Koltun's Algorithm 2), from the Gram matrix M.

    Each iteration finds the vertex :math:`t = \arg\min_r (M\alpha)_r` the plain method moves
    towards; this version moves weight to t from the active vertex
    :math:`a = \arg\max_{r:\alpha_r>0} (M\alpha)_r` (the *pairwise* step, direction
    :math:`e_t - e_a`, its length the exact minimiser of the quadratic, at most
    :math:`\alpha_a`), which converges linearly where plain steps zigzag. It stops when the
    duality gap :math:`\alpha^T M\alpha - (M\alpha)_t` falls below ``tol`` times the largest
    squared norm, or after ``max_iter`` iterations. Two tasks use :func:`min_norm_two`.
    """
    gram = np.asarray(gram, dtype=np.float64)
    tasks = gram.shape[0] if gram.ndim == 2 else 0
    if tasks < 1 or gram.shape != (tasks, tasks):
        raise ValueError(f"min_norm_frank_wolfe: expected a square Gram matrix; got shape {gram.shape}")
    if tasks == 2:
        return min_norm_two(gram)
    scale = max(float(np.max(np.diag(gram))), EPS)
    weights = np.full(tasks, 1.0 / tasks)
    for _ in range(max_iter):
        scores = gram @ weights
        toward = int(np.argmin(scores))
        if weights @ scores - scores[toward] <= tol * scale:
            break
        active = np.flatnonzero(weights > 0)
        away = int(active[np.argmax(scores[active])])
        curvature = gram[toward, toward] + gram[away, away] - 2.0 * gram[toward, away]
        if curvature <= EPS:
            break
        step = min((scores[away] - scores[toward]) / curvature, weights[away])
        weights[toward] += step
        weights[away] -= step
    return weights


def mgda(grads, max_iter: int = 1000, tol: float = 1e-12) -> np.ndarray:
    r"""Multiple-gradient descent (MGDA-UB's solver; Sener and Koltun, 2018): the minimum-norm
    point :math:`\sum_i \alpha_i g_i` of the convex hull of the task gradients, with
    :math:`\alpha` on the simplex (closed form for two tasks, Frank-Wolfe for more).

    Its negative decreases every task's loss to first order unless it is zero, when the
    point is Pareto-stationary.
    """
    matrix = _as_matrix(grads, "mgda")
    gram = matrix @ matrix.T
    weights = np.ones(1) if matrix.shape[0] == 1 else min_norm_frank_wolfe(gram, max_iter, tol)
    return weights @ matrix


def _project_to_simplex(v: np.ndarray) -> np.ndarray:
    """The Euclidean projection of v onto {w : w >= 0, sum w = 1} (sort-based)."""
    sorted_desc = np.sort(v)[::-1]
    cumulative = np.cumsum(sorted_desc) - 1.0
    index = np.arange(1, v.size + 1)
    last = index[sorted_desc - cumulative / index > 0][-1]
    return np.maximum(v - cumulative[last - 1] / last, 0.0)


def _cagrad_weights(gram: np.ndarray, radius: float, iterations: int) -> np.ndarray:
    """Accelerated projected gradient (FISTA with backtracking) on the simplex for CAGrad's dual
    F(w) = w^T M 1/T + radius * sqrt(w^T M w + 1e-8)."""
    tasks = gram.shape[0]
    mean_column = gram.mean(axis=1)

    def value(w):
        return float(w @ mean_column) + radius * np.sqrt(float(w @ gram @ w) + 1e-8)

    def gradient(w):
        return mean_column + radius * (gram @ w) / np.sqrt(float(w @ gram @ w) + 1e-8)

    largest_step = 1e3 / max(np.linalg.norm(gram, 2), EPS)
    step = largest_step
    weights = np.full(tasks, 1.0 / tasks)
    point, t = weights.copy(), 1.0
    best, best_value = weights, value(weights)
    for _ in range(iterations):
        point_value, point_gradient = value(point), gradient(point)
        for _ in range(60):  # halve the step until the quadratic upper bound holds
            candidate = _project_to_simplex(point - step * point_gradient)
            difference = candidate - point
            candidate_value = value(candidate)
            if candidate_value <= point_value + point_gradient @ difference + difference @ difference / (2 * step):
                break
            step *= 0.5
        if candidate_value < best_value:
            best, best_value = candidate, candidate_value
        if np.max(np.abs(candidate - weights)) < 1e-12:
            break
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        point = candidate + (t - 1.0) / t_next * (candidate - weights)
        weights, t = candidate, t_next
        step = min(2.0 * step, largest_step)
    return best


def cagrad(grads, c: float = 0.5, rescale: int = 1, iterations: int = 500) -> np.ndarray:
    r"""Conflict-averse gradient descent (CAGrad; Liu, Liu, Jin, Stone and Liu, NeurIPS 2021).

    With the average gradient :math:`g_0 = \frac1T\sum_i g_i` and Gram matrix
    :math:`M = G G^T`, the weights w on the simplex minimise the dual

    .. math:: F(w) = g_w^T g_0 + \sqrt{\phi}\,\|g_w\|, \quad g_w = \sum_i w_i g_i,
              \quad \sqrt{\phi} = c\,\|g_0\|,

    (solved here by accelerated projected gradient), and the direction is

    .. math:: d = g_0 + \frac{\sqrt{\phi}}{\|g_w\|}\, g_w,

    divided by :math:`1 + c^2` (``rescale=1``, the reference's default), by :math:`1 + c`
    (``rescale=2``) or left as is (``rescale=0``). ``c=0`` gives the average gradient; d
    stays within :math:`c\|g_0\|` of :math:`g_0` before rescaling.
    """
    matrix = _as_matrix(grads, "cagrad")
    if not (np.isfinite(c) and c >= 0):
        raise ValueError(f"cagrad: c must be a finite number >= 0; got {c!r}")
    if rescale not in (0, 1, 2):
        raise ValueError(f"cagrad: rescale must be 0, 1 or 2; got {rescale!r}")
    gram = matrix @ matrix.T
    mean_gradient = matrix.mean(axis=0)
    radius = c * np.sqrt(gram.mean() + 1e-8)
    weights = _cagrad_weights(gram, radius, iterations)
    combined_weighted = weights @ matrix
    direction = mean_gradient + radius / (np.linalg.norm(combined_weighted) + 1e-8) * combined_weighted
    return direction / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]


def graddrop(grads, rng: np.random.Generator | None = None) -> np.ndarray:
    r"""Gradient sign dropout (GradDrop; Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov, 2020).

    Per coordinate, the sign purity :math:`P = \frac12\left(1 + \frac{\sum_i g_i}{\sum_i |g_i|}\right)`
    and one uniform draw U decide: if :math:`P > U` the positive task gradients are kept, else
    the negative ones; the kept ones are summed. (The paper applies it to gradients of a shared
    activation; here it acts on the shared weights' gradients.)
    """
    matrix = _as_matrix(grads, "graddrop")
    generator = backend.rng() if rng is None else rng
    purity = 0.5 * (1.0 + matrix.sum(axis=0) / (np.abs(matrix).sum(axis=0) + EPS))
    keep_positive = purity > generator.uniform(size=matrix.shape[1])
    mask = np.where(keep_positive, matrix > 0, matrix < 0)
    return (matrix * mask).sum(axis=0)


def imtl_g(grads) -> np.ndarray:
    r"""IMTL-G (Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, ICLR 2021): the combination
    :math:`g = \sum_i \alpha_i g_i` with :math:`\sum_i \alpha_i = 1` whose projections
    :math:`g\cdot u_i` on the unit gradients :math:`u_i = g_i/\|g_i\|` are all equal. With
    :math:`D_k = g_1 - g_{k+1}` and :math:`U_k = u_1 - u_{k+1}` (rows, k = 1..T-1)::

        alpha_{2..T} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum(alpha_{2..T})
    """
    matrix = _as_matrix(grads, "imtl_g")
    if matrix.shape[0] == 1:
        return matrix[0].copy()
    units = matrix / (np.linalg.norm(matrix, axis=1, keepdims=True) + EPS)
    differences = matrix[0] - matrix[1:]
    unit_differences = units[0] - units[1:]
    rest = np.linalg.solve((differences @ unit_differences.T).T, unit_differences @ matrix[0])
    weights = np.concatenate([[1.0 - rest.sum()], rest])
    return weights @ matrix


def _sum(grads) -> np.ndarray:
    return _as_matrix(grads, "combine_task_gradients").sum(axis=0)


def _mean(grads) -> np.ndarray:
    return _as_matrix(grads, "combine_task_gradients").mean(axis=0)


SURGERY_METHODS = {"sum": _sum, "mean": _mean, "pcgrad": pcgrad, "mgda": mgda, "cagrad": cagrad,
                   "graddrop": graddrop, "imtl_g": imtl_g}
"""The names :func:`combine_task_gradients` accepts."""


def combine_task_gradients(grads: np.ndarray | Sequence, method: str = "pcgrad", **options) -> np.ndarray:
    """One direction from the task gradients ``grads`` (``(T, n)``, or T flattened arrays) by
    ``method`` (a name in :data:`SURGERY_METHODS`); ``options`` go to that method (``c`` for
    CAGrad, ``rng`` for PCGrad and GradDrop...). Returns a float64 vector of length n."""
    if method not in SURGERY_METHODS:
        raise ValueError(f"combine_task_gradients: unknown method {method!r}; known: {sorted(SURGERY_METHODS)}")
    return SURGERY_METHODS[method](grads, **options)
