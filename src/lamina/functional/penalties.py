"""Penalties on a gradient's size, which need the gradient itself to be differentiable.

The gradient penalty of WGAN-GP (Gulrajani et al., 2017) keeps a critic D 1-Lipschitz, as the
Wasserstein distance it estimates requires, by pulling the norm of its input gradient to 1 at
points x^ = eps x + (1 - eps) x~ between real samples x and made ones x~ (eps ~ U[0, 1], one
per sample):

    GP = (1/m) sum_i (||dD(x^_i)/dx^_i||_2 - 1)^2

The gradient dD/dx^ is computed with ``grad(..., create_graph=True)``, so GP can itself be
differentiated with respect to D's weights: each op of the critic needs a differentiable
backward (``lamina.autograd.differentiable_ops()``).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor, enable_grad, grad
from lamina.errors import ShapeError

_TINY = 1e-12
"""Added under the square root: a zero gradient (a critic flat at x^) then has a finite
derivative of its norm instead of 0/0."""


def _values(x, like_dtype=None):
    data = x.data if isinstance(x, Tensor) else Tensor(x).data       # arrays take the default dtype
    return data if like_dtype is None else data.astype(like_dtype, copy=False)


def _squared_input_gradient_norms(model, x: Tensor, who: str, output: str) -> Tensor:
    """||d model(x)_i / d x_i||^2 for each sample i of the batch ``x`` (m, ...) (which must
    require gradients), on the graph (``create_graph``) so a penalty of it trains the model's
    weights. ``model`` must give one value per sample, (m,) or (m, 1); ``who`` (e.g. "r1_penalty:
    the discriminator") and ``output`` (e.g. "logit per image") name it in the error."""
    m = x.shape[0]
    with enable_grad():
        values = model(x)
        if not isinstance(values, Tensor) or values.shape not in ((m,), (m, 1)):
            shape = getattr(values, "shape", type(values).__name__)
            raise ShapeError(f"{who} must give one {output}, (m,) or (m, 1) with m = {m}; it gave {shape}")
        (slope,) = grad(values.sum(), x, create_graph=True)
        return (slope * slope).reshape(m, -1).sum(axis=1)


def gradient_penalty(critic, real, fake, eps=None, target: float = 1.0) -> Tensor:
    """The WGAN-GP penalty (1/m) sum_i (||dD(x^_i)/dx^_i|| - ``target``)^2 at
    x^ = eps real + (1 - eps) fake, a scalar tensor on the graph of ``critic``'s weights.

    ``critic`` maps a batch (m, ...) to one score per sample ((m,) or (m, 1)); ``real`` and
    ``fake`` are batches of one shape (tensors or arrays; only their values are used, so a
    generator's graph is not reached). ``eps``: the m mixing weights, drawn from lamina's
    generator (``lamina.manual_seed``) when None. The norm runs over every axis but the first
    (as sqrt(sum of squares + 1e-12)).
    """
    real_values = _values(real)
    fake_values = _values(fake, real_values.dtype)
    if real_values.shape != fake_values.shape or real_values.ndim < 2:
        raise ShapeError(f"gradient_penalty: real and fake must be batches (m, ...) of one shape, got "
                         f"{tuple(real_values.shape)} and {tuple(fake_values.shape)}")
    m = real_values.shape[0]
    mix_shape = (m,) + (1,) * (real_values.ndim - 1)
    if eps is None:
        eps = backend.rng().uniform(size=m)
    eps = backend.xp.asarray(eps.data if isinstance(eps, Tensor) else eps, dtype=real_values.dtype)
    if eps.size != m:
        raise ShapeError(f"gradient_penalty: eps must hold one weight per sample ({m}), got shape {eps.shape}")
    eps = eps.reshape(mix_shape)
    mixed = Tensor(eps * real_values + (1 - eps) * fake_values, requires_grad=True, dtype=real_values.dtype)
    with enable_grad():
        squared = _squared_input_gradient_norms(critic, mixed, "gradient_penalty: the critic", "score per sample")
        norms = (squared + _TINY).sqrt()
        return ((norms - target) ** 2).mean()
