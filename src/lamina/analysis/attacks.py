"""Iterative attacks on classifiers, as torchattacks and foolbox have them, built on the input
gradients of :mod:`lamina.analysis.adversarial` (FGSM and the notes' targeted attack).

Every attack takes the model, a batch ``x`` and its true ``labels`` y (or, ``targeted``,
the classes t to reach), and returns the adversarial batch, clipped to the valid range
``clip`` (None: unbounded). J is the cross-entropy of the model's logits.

* :func:`pgd`, projected gradient descent (Madry et al. 2018): from a random point of the
  eps-ball, ``steps`` ascent steps of size a on J, each projected back onto the ball and the
  range. L-inf: x' <- proj(x' + a sign(dJ/dx')); L2: x' <- proj(x' + a g / |g|_2).
  Targeted, it descends J(x', t) instead.
* :func:`bim`, the basic iterative method / I-FGSM (Kurakin et al. 2017): L-inf PGD without
  the random start.
* :func:`mifgsm`, momentum iterative FGSM (Dong et al. 2018): g <- mu g + dJ/dx' / |dJ/dx'|_1,
  x' <- proj(x' + a sign(g)).
* :func:`apgd`, APGD-CE (Croce and Hein 2020): L-inf PGD with momentum 0.75 whose step size
  halves at checkpoints where the loss stopped rising, restarting from the best point.
* :func:`cw_l2`, Carlini and Wagner's L2 attack (2017): in tanh space,
  x' = lo + (hi - lo)(tanh(w) + 1) / 2, Adam minimises |x' - x|_2^2 + c f(x') with
  f(x') = max(Z_y - max_{i != y} Z_i, -kappa) (targeted: max(max_{i != t} Z_i - Z_t, -kappa)),
  and a binary search per sample finds the smallest c that succeeds.
* :func:`deepfool` (Moosavi-Dezfooli et al. 2016): linearise the classifier at x', step to
  the nearest linearised boundary, r = (|f_l| / |w_l|^2) w_l with w_k = grad(Z_k - Z_y),
  f_k = Z_k - Z_y and l = argmin_k |f_k| / |w_k|; x' = x + (1 + overshoot) sum r.
* :func:`robust_accuracy`: the fraction of samples classified right both as given and
  after an attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lamina import backend
from lamina import functional as F
from lamina.analysis.adversarial import _check_clip, _check_radius, _clipped
from lamina.analysis.saliency import (
    as_input_batch,
    class_indices,
    gradient_wrt_input,
    input_analysis,
    model_logits,
)
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["apgd", "bim", "cw_l2", "cw_objective", "deepfool", "mifgsm", "pgd", "robust_accuracy"]

NORMS = ("linf", "l2")
_TINY = 1e-12


def _check_steps(steps, fn: str, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {steps!r}")
    return steps


def _check_norm(norm, fn: str) -> str:
    key = norm.lower() if isinstance(norm, str) else norm
    key = {"inf": "linf", "l_inf": "linf", "2": "l2"}.get(key, key)
    if key not in NORMS:
        raise ValueError(f"{fn}: norm must be 'linf' or 'l2', got {norm!r}")
    return key


def _per_sample_norm(a):
    """|a_i|_2 over every axis but the batch axis, shaped to broadcast against a."""
    xp = backend.xp
    flat = a.reshape(len(a), -1)
    return xp.sqrt((flat * flat).sum(axis=1)).reshape((len(a),) + (1,) * (a.ndim - 1))


def _labels(model: Module, x, labels, fn: str):
    if labels is None:
        raise ValueError(f"{fn}: labels are required (the true class, or with targeted=True the target, "
                         "of each sample)")
    with no_grad():
        logits = model_logits(model, tensor(x[:1], dtype=x.dtype)).data
    if logits.ndim != 2:
        raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
    return class_indices(labels, backend.xp.zeros((len(x), logits.shape[1]), dtype=logits.dtype), fn)


def _cross_entropy_gradient(model: Module, x, labels, fn: str):
    """(dJ/dx for J = sum_i CE(z(x_i), y_i), the logits)."""
    def cost(logits: Tensor) -> Tensor:
        return F.categorical_cross_entropy(logits, labels, from_logits=True, reduction="sum")
    return gradient_wrt_input(model, x, cost, fn)


def _project(adversarial, x, epsilon: float, norm: str, clip):
    """The nearest point to ``adversarial`` in the eps-ball around x, then clipped to the range."""
    delta = adversarial - x
    if norm == "linf":
        delta = backend.xp.clip(delta, -epsilon, epsilon)
    else:
        length = _per_sample_norm(delta)
        delta = delta * backend.xp.minimum(1.0, epsilon / backend.xp.maximum(length, _TINY))
    return _clipped(x + delta.astype(x.dtype), clip)


def _random_start(x, epsilon: float, norm: str, rng):
    """Linf: uniform in the cube; L2: a uniform direction at a radius uniform in [0, eps]
    (as torchattacks' PGDL2)."""
    if norm == "linf":
        return rng.uniform(-epsilon, epsilon, x.shape)
    direction = rng.standard_normal(x.shape)
    radius = rng.uniform(0, 1, (len(x),) + (1,) * (x.ndim - 1))
    return direction / _per_sample_norm(direction) * radius * epsilon


def _ascent_direction(grad, norm: str):
    if norm == "linf":
        return backend.xp.sign(grad)
    return grad / backend.xp.maximum(_per_sample_norm(grad), _TINY)


def pgd(model: Module, x, labels, epsilon: float = 8 / 255, step_size: float | None = None, steps: int = 10,
        norm: str = "linf", random_start=True, targeted: bool = False, clip=(0.0, 1.0), seed: int | None = None):
    """Projected gradient descent within |x' - x| <= ``epsilon`` in ``norm`` ('linf' or 'l2').

    ``step_size`` a defaults to 2.5 eps / steps. ``random_start``: True (uniform in the ball,
    from ``seed``), False (start at x) or an array, the starting perturbation itself
    (projected first). ``targeted``: ``labels`` are the classes to reach, and the attack
    descends their cross-entropy."""
    fn = "pgd"
    epsilon = _check_radius(epsilon, fn, "epsilon", allow_zero=True)
    steps = _check_steps(steps, fn)
    norm = _check_norm(norm, fn)
    step_size = _check_radius(2.5 * epsilon / steps if step_size is None else step_size, fn, "step_size",
                              allow_zero=True)
    clip = _check_clip(clip, fn)
    x = as_input_batch(x, fn)
    xp = backend.xp
    with input_analysis(model):
        labels = _labels(model, x, labels, fn)
        if isinstance(random_start, bool):
            start = (_random_start(x, epsilon, norm, xp.random.default_rng(seed)) if random_start
                     else xp.zeros_like(x))
        else:
            start = xp.asarray(random_start, dtype=x.dtype)
            if start.shape != x.shape:
                raise ShapeError(f"{fn}: random_start of shape {start.shape} for inputs of shape {x.shape}; "
                                 "expected the same shape, or True/False")
        adversarial = _project(x + start.astype(x.dtype), x, epsilon, norm, clip)
        sign = -1.0 if targeted else 1.0
        for _ in range(steps):
            grad, _ = _cross_entropy_gradient(model, adversarial, labels, fn)
            adversarial = adversarial + (sign * step_size * _ascent_direction(grad, norm)).astype(x.dtype)
            adversarial = _project(adversarial, x, epsilon, norm, clip)
    return adversarial


def bim(model: Module, x, labels, epsilon: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
        targeted: bool = False, clip=(0.0, 1.0)):
    """The basic iterative method (I-FGSM): L-inf :func:`pgd` from x itself."""
    return pgd(model, x, labels, epsilon, step_size, steps, "linf", random_start=False, targeted=targeted,
               clip=clip)


def mifgsm(model: Module, x, labels, epsilon: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
           decay: float = 1.0, targeted: bool = False, clip=(0.0, 1.0)):
    """Momentum iterative FGSM: g <- decay g + dJ/dx' / mean|dJ/dx'| (per sample), then an
    L-inf step a sign(g), projected onto the eps-ball and the range."""
    fn = "mifgsm"
    epsilon = _check_radius(epsilon, fn, "epsilon", allow_zero=True)
    step_size = _check_radius(step_size, fn, "step_size", allow_zero=True)
    decay = _check_radius(decay, fn, "decay", allow_zero=True)
    steps = _check_steps(steps, fn)
    clip = _check_clip(clip, fn)
    x = as_input_batch(x, fn)
    xp = backend.xp
    momentum = xp.zeros_like(x)
    adversarial = x.copy()
    sign = -1.0 if targeted else 1.0
    with input_analysis(model):
        labels = _labels(model, x, labels, fn)
        for _ in range(steps):
            grad, _ = _cross_entropy_gradient(model, adversarial, labels, fn)
            scale = xp.abs(grad).reshape(len(x), -1).mean(axis=1).reshape((len(x),) + (1,) * (x.ndim - 1))
            momentum = decay * momentum + grad / xp.maximum(scale, _TINY)
            adversarial = adversarial + (sign * step_size * xp.sign(momentum)).astype(x.dtype)
            adversarial = _project(adversarial, x, epsilon, "linf", clip)
    return adversarial


def _apgd_checkpoints(steps: int) -> list[int]:
    """Croce and Hein's checkpoints w_j = ceil(p_j N): p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    return sorted({math.ceil(p * steps - 1e-9) for p in fractions if p <= 1})  # 1e-9: 0.22 + 0.19 is not 0.41


def apgd(model: Module, x, labels, epsilon: float = 8 / 255, steps: int = 100, rho: float = 0.75,
         clip=(0.0, 1.0), seed: int | None = None):
    """APGD-CE (L-inf, untargeted): step size 2 eps at first, momentum alpha = 0.75,
    z = P(x_k + eta sign(grad)), x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1})).
    At each checkpoint w_j the step of a sample halves, and it restarts from its best point,
    when fewer than a fraction ``rho`` of the steps since w_{j-1} raised its loss, or when
    neither its step nor its best loss changed since then. Returns the best points found."""
    fn = "apgd"
    epsilon = _check_radius(epsilon, fn, "epsilon", allow_zero=True)
    steps = _check_steps(steps, fn)
    clip = _check_clip(clip, fn)
    x = as_input_batch(x, fn)
    xp = backend.xp
    n = len(x)
    shape = (n,) + (1,) * (x.ndim - 1)

    def losses_and_grad(points):
        grad, logits = _cross_entropy_gradient(model, points, labels, fn)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        return -log_p[xp.arange(n), labels], grad

    with input_analysis(model):
        labels = _labels(model, x, labels, fn)
        rng = xp.random.default_rng(seed)
        current = _project(x + rng.uniform(-epsilon, epsilon, x.shape).astype(x.dtype), x, epsilon, "linf", clip)
        eta = xp.full(n, 2.0 * epsilon)
        loss, grad = losses_and_grad(current)
        best, best_loss, best_grad = current.copy(), loss.copy(), grad.copy()
        previous = current
        step_one = _project(current + (eta.reshape(shape) * xp.sign(grad)).astype(x.dtype), x, epsilon, "linf",
                            clip)
        checkpoints = _apgd_checkpoints(steps)
        raises = xp.zeros(n)
        last_check, loss_at_check, eta_at_check = 0, best_loss.copy(), eta.copy()
        for k in range(steps):
            if k == 0:
                following = step_one
            else:
                z = _project(current + (eta.reshape(shape) * xp.sign(grad)).astype(x.dtype), x, epsilon, "linf",
                             clip)
                following = current + 0.75 * (z - current) + 0.25 * (current - previous)
                following = _project(following.astype(x.dtype), x, epsilon, "linf", clip)
            previous, current = current, following
            loss_before = loss
            loss, grad = losses_and_grad(current)
            raises += loss > loss_before
            improved = loss > best_loss
            best[improved], best_loss[improved], best_grad[improved] = current[improved], loss[improved], grad[improved]
            if k + 1 in checkpoints and k + 1 > last_check:
                since = k + 1 - last_check
                stalled = (raises < rho * since) | ((eta == eta_at_check) & (best_loss == loss_at_check))
                eta_at_check, loss_at_check = eta.copy(), best_loss.copy()
                eta = xp.where(stalled, eta / 2, eta)
                current[stalled], grad[stalled], loss[stalled] = best[stalled], best_grad[stalled], best_loss[stalled]
                previous[stalled] = current[stalled]
                raises[:] = 0
                last_check = k + 1
    return best


def robust_accuracy(model: Module, x, labels, attack: Callable, batch_size: int = 256) -> float:
    """The fraction of samples the model classifies right both as given and after
    ``attack(model, x, labels)`` (e.g. ``functools.partial(pgd, epsilon=0.1)``), in batches
    of ``batch_size``."""
    fn = "robust_accuracy"
    batch_size = _check_steps(batch_size, fn, "batch_size")
    x = as_input_batch(x, fn)
    labels = backend.xp.asarray(labels)
    if labels.shape != (len(x),):
        raise ShapeError(f"{fn}: labels of shape {labels.shape} for {len(x)} samples; expected ({len(x)},)")
    correct = 0
    with input_analysis(model):
        for start in range(0, len(x), batch_size):
            inputs, truth = x[start:start + batch_size], labels[start:start + batch_size]
            adversarial = attack(model, inputs, truth)
            with no_grad():
                clean = model_logits(model, tensor(inputs, dtype=x.dtype)).data.argmax(axis=1)
                attacked = model_logits(model, tensor(adversarial, dtype=x.dtype)).data.argmax(axis=1)
            correct += int(((clean == truth) & (attacked == truth)).sum())
    return correct / max(len(x), 1)


# -- Carlini and Wagner -----------------------------------------------------------
def _margin(logits, labels, targeted: bool, kappa: float):
    """f per sample: max(Z_y - max_{i != y} Z_i, -kappa), or targeted max(max_{i != t} Z_i - Z_t, -kappa)."""
    xp = backend.xp
    rows = xp.arange(len(labels))
    chosen = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -xp.inf
    best_other = others.max(axis=1)
    gap = best_other - chosen if targeted else chosen - best_other
    return xp.maximum(gap, -kappa)


def _margin_tensor(logits: Tensor, labels, targeted: bool, kappa: float) -> Tensor:
    xp = backend.xp
    mask = xp.zeros(logits.shape, dtype=logits.dtype)
    mask[xp.arange(len(labels)), labels] = 1
    chosen = (logits * tensor(mask, dtype=logits.dtype)).sum(axis=1)
    shut = tensor(mask * -1e30, dtype=logits.dtype)  # the label's own logit never is the best other
    best_other = (logits + shut).max(axis=1)
    gap = best_other - chosen if targeted else chosen - best_other
    return F.clip(gap, -kappa, None)                  # torch's clamp(min=-kappa)


def _from_tanh_space(w, clip):
    low, high = clip
    return low + (high - low) * (backend.xp.tanh(w) + 1) / 2


def _to_tanh_space(x, clip):
    low, high = clip
    inside = (2 * (x - low) / (high - low) - 1) * (1 - 1e-6)
    return backend.xp.arctanh(backend.xp.clip(inside, -1 + 1e-12, 1 - 1e-12))


def cw_objective(model: Module, adversarial, x, labels, c=1.0, kappa: float = 0.0, targeted: bool = False):
    """Carlini and Wagner's objective per sample, |x' - x|_2^2 + c f(x') (see the module notes)."""
    fn = "cw_objective"
    x = as_input_batch(x, fn)
    adversarial = as_input_batch(adversarial, fn)
    with input_analysis(model), no_grad():
        labels = _labels(model, x, labels, fn)
        logits = model_logits(model, tensor(adversarial, dtype=x.dtype)).data
    distance = ((adversarial - x) ** 2).reshape(len(x), -1).sum(axis=1)
    return distance + backend.xp.asarray(c) * _margin(logits, labels, targeted, kappa)


def cw_l2(model: Module, x, labels, c: float = 1e-2, kappa: float = 0.0, steps: int = 100,
          search_steps: int = 5, lr: float = 1e-2, targeted: bool = False, clip=(0.0, 1.0)):
    """Carlini and Wagner's L2 attack: ``search_steps`` rounds of a binary search over c per
    sample (from ``c``: x10 while it fails, then halving the bracket), each ``steps`` Adam
    steps of learning rate ``lr`` in tanh space. Returns, per sample, the closest successful
    adversarial found, or x itself where none was."""
    fn = "cw_l2"
    c = _check_radius(c, fn, "c", allow_zero=False)
    kappa = _check_radius(kappa, fn, "kappa", allow_zero=True)
    lr = _check_radius(lr, fn, "lr", allow_zero=False)
    steps = _check_steps(steps, fn)
    search_steps = _check_steps(search_steps, fn, "search_steps")
    clip = _check_clip(clip, fn)
    if clip is None:
        raise ValueError(f"{fn}: clip must be a finite range (low, high): the attack works in tanh space")
    xp = backend.xp
    x = as_input_batch(x, fn)
    n = len(x)
    half_range = (clip[1] - clip[0]) / 2
    lower, upper, const = xp.zeros(n), xp.full(n, 1e10), xp.full(n, c)
    best, best_distance = x.copy(), xp.full(n, xp.inf)
    beta1, beta2 = 0.9, 0.999
    with input_analysis(model):
        labels = _labels(model, x, labels, fn)

        def objective(logits: Tensor) -> Tensor:
            return (_margin_tensor(logits, labels, targeted, kappa) * tensor(const, dtype=logits.dtype)).sum()

        for _ in range(search_steps):
            w = _to_tanh_space(x.astype(xp.float64), clip)
            m, v = xp.zeros_like(w), xp.zeros_like(w)
            succeeded = xp.zeros(n, dtype=bool)
            for t in range(1, steps + 1):
                adversarial = _from_tanh_space(w, clip).astype(x.dtype)
                grad_margin, logits = gradient_wrt_input(model, adversarial, objective, fn)
                distance = ((adversarial - x).astype(xp.float64) ** 2).reshape(n, -1).sum(axis=1)
                gap = _margin(logits, labels, targeted, xp.inf)
                success = (gap < 0) & (gap <= -kappa)
                closer = success & (distance < best_distance)
                best[closer], best_distance[closer] = adversarial[closer], distance[closer]
                succeeded |= success
                grad = (2 * (adversarial - x) + grad_margin).astype(xp.float64) * half_range * (1 - xp.tanh(w) ** 2)
                m = beta1 * m + (1 - beta1) * grad
                v = beta2 * v + (1 - beta2) * grad * grad
                w = w - lr * (m / (1 - beta1 ** t)) / (xp.sqrt(v / (1 - beta2 ** t)) + 1e-8)
            upper = xp.where(succeeded, xp.minimum(upper, const), upper)
            lower = xp.where(succeeded, lower, xp.maximum(lower, const))
            const = xp.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best


# -- DeepFool -----------------------------------------------------------------------
def _class_gradients(model: Module, x, classes: int, fn: str):
    """(logits (n, C), dZ_k/dx for every class k: (C, *x.shape))."""
    xp = backend.xp
    grads = []
    logits = None
    for k in range(classes):
        def score(out: Tensor, k=k) -> Tensor:
            return out[:, k].sum()
        grad, logits = gradient_wrt_input(model, x, score, fn)
        grads.append(grad)
    return logits, xp.stack(grads)


def deepfool(model: Module, x, labels=None, steps: int = 50, overshoot: float = 0.02, clip=(0.0, 1.0)):
    """DeepFool (see the module notes), every sample at once until each is misclassified or
    ``steps`` linearisations were made; ``labels`` default to the model's predictions.
    Returns x + (1 + overshoot) sum_i r_i, clipped to ``clip``."""
    fn = "deepfool"
    steps = _check_steps(steps, fn)
    overshoot = _check_radius(overshoot, fn, "overshoot", allow_zero=True)
    clip = _check_clip(clip, fn)
    xp = backend.xp
    x = as_input_batch(x, fn)
    n = len(x)
    with input_analysis(model):
        with no_grad():
            clean = model_logits(model, tensor(x, dtype=x.dtype)).data
        if clean.ndim != 2:
            raise ShapeError(f"{fn}: the model's output has shape {clean.shape}; expected (batch, classes)")
        labels = class_indices(labels, clean, fn)
        classes = clean.shape[1]
        total = xp.zeros(x.shape, dtype=xp.float64)
        adversarial = x.copy()
        rows = xp.arange(n)
        for _ in range(steps):
            logits, grads = _class_gradients(model, adversarial, classes, fn)
            active = logits.argmax(axis=1) == labels
            if not active.any():
                break
            w = (grads - grads[labels, rows][None]).astype(xp.float64)          # (C, n, ...)
            f = (logits - logits[rows, labels][:, None]).T.astype(xp.float64)     # (C, n)
            w_norm = xp.sqrt((w.reshape(classes, n, -1) ** 2).sum(axis=2))
            distance = xp.abs(f) / xp.maximum(w_norm, _TINY)
            distance[labels, rows] = xp.inf
            nearest = distance.argmin(axis=0)
            w_l = w[nearest, rows]
            step = ((distance[nearest, rows] + 1e-4) / xp.maximum(w_norm[nearest, rows], _TINY))
            r = step.reshape((n,) + (1,) * (x.ndim - 1)) * w_l
            total[active] += r[active]
            adversarial = _clipped((x + (1 + overshoot) * total).astype(x.dtype), clip)
    return adversarial
