"""The generalized end-to-end loss as a module with its learnable scale and offset
(:func:`lamina.functional.ge2e_loss`, Wan et al. 2018)."""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional.elementwise import clip
from lamina.functional.losses_speaker import ge2e_loss
from lamina.nn.module import Module

__all__ = ["GE2ELoss"]


class GE2ELoss(Module):
    """GE2E loss of embeddings (N speakers, M utterances, D) with parameters ``w`` (init
    ``init_w`` = 10) and ``b`` (init ``init_b`` = -5), the similarity w cos + b; w is clamped to
    at least ``min_w`` (1e-6) in the forward pass so that it stays positive, as the paper asks.
    ``method`` 'softmax' or 'contrast', ``reduction`` 'mean' or 'sum'. Give its parameters to
    the optimizer along with the embedding network's."""

    def __init__(self, init_w: float = 10.0, init_b: float = -5.0, method: str = "softmax",
                 reduction: str = "mean", min_w: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        if method not in ("softmax", "contrast"):
            raise ValueError(f"GE2ELoss: method must be 'softmax' or 'contrast', got {method!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"GE2ELoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        if not init_w > 0 or not min_w > 0:
            raise ValueError(f"GE2ELoss: init_w and min_w must be positive, got init_w={init_w!r}, min_w={min_w!r}")
        dtype = backend.get_default_dtype()
        self.add_parameter("w", backend.xp.asarray(init_w, dtype=dtype))
        self.add_parameter("b", backend.xp.asarray(init_b, dtype=dtype))
        self.method, self.reduction, self.min_w = method, reduction, float(min_w)
        self.built = True

    def forward(self, embeddings) -> Tensor:
        return ge2e_loss(embeddings, clip(self.w, self.min_w, None), self.b, self.method, self.reduction)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, reduction={self.reduction!r}"
