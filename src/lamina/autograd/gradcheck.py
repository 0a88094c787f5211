"""Numerical gradient checking with centred differences.

For a function f of tensors, the analytic gradient of the scalar
J = sum(f(x) * r), with r a fixed random upstream gradient, is compared with
dJ/dx_i ~ (J(x + h e_i) - J(x - h e_i)) / (2h) for every element of every input
that requires a gradient. A random r checks the whole VJP, not just its row sums.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.tensor import Tensor
from lamina.errors import GradcheckError


def gradcheck(fn, *inputs: Tensor, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              seed: int = 0) -> bool:
    """Check ``fn``'s gradients with respect to ``inputs``; True, or raise GradcheckError."""
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires a gradient")
    for i, x in enumerate(checked):
        if x.data.dtype != numpy.float64:
            raise TypeError(f"gradcheck: input {i} is {x.data.dtype}; centred differences need float64")
        if not x.data.flags.c_contiguous:  # perturbations go through a flat view of the data
            x.data = backend.xp.ascontiguousarray(x.data)
    out = fn(*inputs)
    upstream = backend.xp.asarray(numpy.random.default_rng(seed).standard_normal(out.shape))

    def objective() -> float:
        with graph.no_grad():
            return float((fn(*inputs).data * upstream).sum())

    for x in checked:
        x.grad = None
    out.backward(upstream)
    for index, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = backend.to_numpy(x.grad) if x.grad is not None else numpy.zeros(x.shape)
        numeric = numpy.zeros(x.shape)
        flat = x.data.reshape(-1)
        for k in range(flat.size):
            original = flat[k].item()
            flat[k] = original + eps
            plus = objective()
            flat[k] = original - eps
            minus = objective()
            flat[k] = original
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        error = numpy.abs(analytic - numeric) - (atol + rtol * numpy.abs(numeric))
        if error.size and error.max() > 0:
            worst = numpy.unravel_index(int(error.argmax()), x.shape)
            raise GradcheckError(
                f"gradcheck: input {index} (shape {x.shape}) at index {tuple(int(i) for i in worst)}: "
                f"analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g} "
                f"(atol={atol}, rtol={rtol})"
            )
    return True


def gradgradcheck(fn, *inputs: Tensor, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
                  seed: int = 0) -> bool:
    """Check the second derivatives of ``fn``: the gradient g_i of J = sum(fn(x) * r) with
    respect to each input, computed with ``create_graph=True``, is contracted with fixed
    random arrays v_i, and :func:`gradcheck` compares the derivative of sum_i <g_i, v_i>
    (Hessian-vector products, recorded by every op's differentiable backward) with
    centred differences."""
    from lamina.autograd.derivatives import grad

    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradgradcheck: no input requires a gradient")
    rng = numpy.random.default_rng(seed + 1)
    with graph.enable_grad():
        shape = fn(*inputs).shape
    upstream = backend.xp.asarray(rng.standard_normal(shape))
    directions = [backend.xp.asarray(rng.standard_normal(x.shape)) for x in checked]

    def gradient_along_directions(*xs):
        with graph.enable_grad():
            grads = grad(fn(*xs), checked, grad_output=upstream, create_graph=True, allow_unused=True)
            total = None
            for g, v in zip(grads, directions):
                if g is not None:
                    term = (g * Tensor._wrap(v)).sum()
                    total = term if total is None else total + term
            if total is None:
                raise ValueError("gradgradcheck: fn's output does not depend on any input")
            return total

    return gradcheck(gradient_along_directions, *inputs, eps=eps, atol=atol, rtol=rtol, seed=seed)
