"""DoRA, weight-decomposed low-rank adaptation (Liu et al. 2024): LoRA's update split into a
direction and a magnitude learned apart.

A Dense layer's weight W0 (n_in, n_out) becomes

    W' = m * (W0 + s A B) / ||W0 + s A B||_c,     s = alpha / r

with ||.||_c the norm of each column (over the input axis, one per output unit, as the peft
library computes it), A, B LoRA's factors (:class:`~lamina.nn.LoRAAdapter`) and m (n_out,)
the trainable magnitude, initialised to ||W0||_c so that W' = W0 at the start. The norm is a
constant for the gradient (the paper's section 4.3, as peft does): m / ||.||_c rescales
without its own derivative, which saves memory and changes little.

With input dropout x~ = dropout(x) in training, the output is peft's

    y = x W0 + b + (m / n - 1) x~ W0 + (m / n) s x~ A B,      n = ||W0 + s A B||_c

which reduces to (m / n) (x W0 + s x A B) + b without dropout; the bias is not rescaled.
Merging writes W' into the layer (keeping m / n to unmerge: W0 = W' n / m - s A B).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.activation import activate_fresh
from lamina.nn.dense import Dense, linear
from lamina.nn.dropout import DropoutFunction
from lamina.nn.layer import register_layer
from lamina.nn.lora import LoRAAdapter, adapted_base_from_config, lora_layer_config
from lamina.nn.module import Module
from lamina.nn.peft_targets import ADAPTED_LAYERS, check_dense, check_rank, replace_dense

__all__ = ["DoRADense", "apply_dora"]


@register_layer
class DoRADense(Module):
    """A built :class:`Dense` ``dense`` (frozen, the sub-module ``base``) adapted by DoRA:
    the LoRA factors in the sub-module ``lora`` and the magnitude ``magnitude`` (n_out,);
    see the module docstring for the formula. The layer's activation acts last. While merged,
    the buffer ``merge_factor`` (n_out,) keeps m / ||W + s A B||_c for :meth:`unmerge`."""

    def __init__(self, dense: Dense, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 name: str | None = None):
        check_dense(dense, "DoRADense")
        super().__init__(name=name or dense.name)
        n_in, n_out = dense.weight.shape
        check_rank(r, n_in, n_out, "DoRADense")
        dense.freeze()
        self.base = dense
        self.lora = LoRAAdapter(n_in, n_out, r, alpha, dropout, dtype=dense.weight.dtype)
        xp = backend.xp
        self.add_parameter("magnitude", xp.sqrt((dense.weight.data ** 2).sum(axis=0)))
        self.built = True

    @property
    def merged(self) -> bool:
        return self.lora.merged

    def _delta(self) -> Tensor:
        return F.matmul(self.lora.A, self.lora.B) * self.lora.scaling

    def weight_norm(self) -> Tensor:
        """||W0 + s A B||_c (n_out,), detached: a constant for the gradient."""
        adapted = self.base.weight + self._delta()
        return F.sqrt(F.sum(adapted * adapted, axis=0)).detach()

    def forward(self, x) -> Tensor:
        base = self.base
        z = base.apply_weights(x, base.weight, activate=False)
        if not self.lora.merged:
            dropped = x
            if self.lora.dropout and self.training:
                dropped = DropoutFunction.apply(x, rate=self.lora.dropout)
            factor = self.magnitude / self.weight_norm()
            low_rank = linear(linear(dropped, self.lora.A), self.lora.B) * self.lora.scaling
            z = z + (factor - 1.0) * linear(dropped, base.weight) + factor * low_rank
        return z if base.activation is None else activate_fresh(base.activation, z)

    def merge(self) -> None:
        """W <- m (W + s A B) / ||W + s A B||_c (the outputs do not change)."""
        if self.lora.merged:
            raise ValueError(f"{self._label()}: the DoRA adapter is already merged")
        with no_grad():
            factor = self.magnitude.data / self.weight_norm().data
            self.base.weight.data = (self.base.weight.data + self.lora.delta_weight()) * factor
        self.register_buffer("merge_factor", factor)
        self.lora.merged = True

    def unmerge(self) -> None:
        """Undo :meth:`merge`: W <- W ||.||_c / m - s A B, with the factor kept at merging."""
        if not self.lora.merged:
            raise ValueError(f"{self._label()}: the DoRA adapter is not merged")
        with no_grad():
            self.base.weight.data = self.base.weight.data / self._buffers.pop("merge_factor") \
                - self.lora.delta_weight()
        self.lora.merged = False

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return lora_layer_config(self)

    @classmethod
    def from_config(cls, config: dict) -> DoRADense:
        """A fresh layer; a merged one holds a placeholder ``merge_factor`` that the state dict replaces."""
        config = dict(config)
        merged = config.pop("merged", False)
        layer = cls(adapted_base_from_config(config), **config)
        if merged:
            layer.register_buffer("merge_factor", backend.xp.ones_like(layer.magnitude.data))
            layer.lora.merged = True
        return layer

    def extra_repr(self) -> str:
        return self.base.extra_repr() + f", r={self.lora.r}, alpha={self.lora.alpha:g}, dora"


def apply_dora(model: Module, r: int = 8, alpha: float = 16.0, target=Dense, dropout: float = 0.0) -> Module:
    """Freeze the built ``model`` and replace the Dense layers ``target`` chooses (a type,
    names or a predicate, as :func:`~lamina.nn.apply_lora`) by :class:`DoRADense` layers.
    Returns the model (the new layer when ``model`` is itself a Dense)."""
    return replace_dense(model, target, lambda dense: DoRADense(dense, r, alpha, dropout), "apply_dora")


ADAPTED_LAYERS.append(DoRADense)
