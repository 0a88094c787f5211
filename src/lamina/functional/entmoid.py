"""entmoid15, the soft step of NODE (Popov, Morozov & Babenko 2019): 1.5-entmax of the two
scores (x, 0), read at the first, in closed form. With a = |x|,

    tau    = (a + sqrt(max(8 - a^2, 0))) / 2
    lower  = max(tau - a, 0)^2 / 4
    y      = 1 - lower   if x >= 0,   lower   otherwise

so y = 0 for x <= -2, y = 1 for x >= 2, and y(-x) = 1 - y(x). The derivative is that of
entmax15 at two scores, with r = sqrt(y) and q = sqrt(1 - y):

    dy/dx = r q / (r + q)
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor

__all__ = ["entmoid15"]


class Entmoid15(Function):
    """y = entmax15((x, 0))_0 elementwise; dy/dx = r q / (r + q), r = sqrt(y), q = sqrt(1 - y)."""

    def forward(self, x):
        xp = backend.xp
        a = xp.abs(x)
        tau = (a + xp.sqrt(xp.maximum(8 - a * a, 0))) / 2
        lower = xp.maximum(tau - a, 0) ** 2 / 4
        self.y = xp.where(x >= 0, 1 - lower, lower)
        return self.y

    def backward(self, dy):
        xp = backend.xp
        r, q = xp.sqrt(self.y), xp.sqrt(1 - self.y)
        return (dy * (r * q / (r + q)),)

    def backward_graph(self, dy):
        # r and q are taken on the open interval 0 < y < 1 only, where their derivatives are
        # finite; outside it the slope is zero and stays zero nearby.
        y = self.recorded_output(self.y)
        inside = Tensor._wrap(((self.y > 0) & (self.y < 1)).astype(self.y.dtype))
        r = (y + (1 - inside)).sqrt() * inside
        q = ((1 - y) + (1 - inside)).sqrt() * inside
        return (dy * (r * q / (r + q + (1 - inside))),)


def entmoid15(x) -> Tensor:
    """The two-score 1.5-entmax soft step of NODE, elementwise: 0 below -2, 1 above 2, 1/2 at 0,
    y(-x) = 1 - y(x) (module docstring)."""
    x = x if isinstance(x, Tensor) else Tensor._constant(x, None)
    return Entmoid15.apply(x)
