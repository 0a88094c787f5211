"""DARTS's architecture step (Liu et al. 2019): the bilevel problem

    min_alpha L_val(w*(alpha), alpha)   s.t.   w*(alpha) = argmin_w L_train(w, alpha)

approximated by one virtual weight step w' = w - xi (grad_w L_train(w, alpha) + lambda w):

    dL_val(w', alpha)/dalpha = grad_alpha L_val(w', alpha)
                               - xi grad^2_{alpha,w} L_train(w, alpha) grad_w' L_val(w', alpha)

The second-order term is a finite difference (eps = 0.01 / ||grad_w' L_val||):

    grad^2_{alpha,w} L_train v ~ (grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / (2 eps)

``first_order=True`` (xi = 0) uses grad_alpha L_val(w, alpha) alone. The alphas are updated
by Adam (lr 3e-4, betas (0.5, 0.999), L2 weight decay 1e-3), as the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, grad
from lamina.optim import Adam

__all__ = ["Architect"]


def _gradients(loss: Tensor, params: Sequence[Tensor]) -> list:
    """d loss / d p for each p as arrays (zeros for the ones the loss does not use)."""
    grads = grad(loss, list(params), allow_unused=True)
    return [backend.xp.zeros_like(p.data) if g is None else g for g, p in zip(grads, params)]


class Architect:
    """Computes and applies the architecture gradient of a model that has
    ``arch_parameters()`` and ``weights()`` (a :class:`lamina.nn.nas.SearchNetwork`).

    ``loss_fn(logits, labels)`` defaults to cross-entropy. ``weight_decay`` is the weights'
    L2 decay lambda used in the virtual step (the weight optimizer's); ``fd_scale`` the length
    of the finite-difference step in weight space (eps ||v||, 0.01 in the paper).
    """

    def __init__(self, model, loss_fn: Callable | None = None, arch_lr: float = 3e-4,
                 arch_betas: tuple[float, float] = (0.5, 0.999), arch_weight_decay: float = 1e-3,
                 weight_decay: float = 3e-4, first_order: bool = False, fd_scale: float = 0.01):
        for method in ("arch_parameters", "weights"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"Architect: the model ({type(model).__name__}) needs a {method}() method, "
                                "as lamina.nn.nas.SearchNetwork has")
        self.model = model
        self.loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
        self.weight_decay = float(weight_decay)
        self.first_order = bool(first_order)
        if not fd_scale > 0:
            raise ValueError(f"Architect: fd_scale must be positive, got {fd_scale!r}")
        self.fd_scale = float(fd_scale)
        self.optimizer = Adam(model.arch_parameters(), lr=arch_lr, betas=arch_betas, weight_decay=arch_weight_decay)

    def loss(self, batch) -> Tensor:
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def arch_gradient(self, train_batch, val_batch, xi: float) -> list:
        """dL_val/dalpha for each architecture parameter (arrays): first order, or through the
        virtual step of learning rate ``xi`` with the finite-difference second-order term."""
        alphas = self.model.arch_parameters()
        if self.first_order or xi == 0:
            return _gradients(self.loss(val_batch), alphas)
        weights = self.model.weights()
        saved = [p.data.copy() for p in weights]
        step = _gradients(self.loss(train_batch), weights)
        try:
            for p, w, g in zip(weights, saved, step):
                p.data[...] = w - xi * (g + self.weight_decay * w)
            grads = _gradients(self.loss(val_batch), list(alphas) + list(weights))
            direct, direction = grads[:len(alphas)], grads[len(alphas):]
            mixed = self._mixed_product(train_batch, weights, saved, direction)
        finally:
            for p, w in zip(weights, saved):
                p.data[...] = w
        return [d - xi * m for d, m in zip(direct, mixed)]

    def _mixed_product(self, train_batch, weights, saved, direction) -> list:
        """grad^2_{alpha,w} L_train(w, alpha) v by central differences along v = ``direction``."""
        xp = backend.xp
        norm = float(xp.sqrt(sum(float(xp.sum(v * v)) for v in direction)))
        if norm == 0.0:
            return [xp.zeros_like(a.data) for a in self.model.arch_parameters()]
        eps = self.fd_scale / norm
        sides = []
        for sign in (1.0, -1.0):
            for p, w, v in zip(weights, saved, direction):
                p.data[...] = w + sign * eps * v
            sides.append(_gradients(self.loss(train_batch), self.model.arch_parameters()))
        return [(plus - minus) / (2.0 * eps) for plus, minus in zip(*sides)]

    def step(self, train_batch, val_batch, xi: float) -> list:
        """One Adam step on the alphas along :meth:`arch_gradient`; returns that gradient."""
        grads = self.arch_gradient(train_batch, val_batch, xi)
        for a, g in zip(self.model.arch_parameters(), grads):
            a.grad = g.astype(a.data.dtype, copy=False)
        self.optimizer.step()
        for a in self.model.arch_parameters():
            a.grad = None
        return grads
