"""Permutation-invariant models of sets (batch, n, d), with a padding mask (batch, n) of
booleans (True for the real elements) for sets of different sizes in one batch.

* :class:`DeepSets` (Zaheer et al. 2017): rho(pool_i phi(x_i)), every element encoded alone
  by phi, the codes summed (or averaged, or max-pooled), the result decoded by rho.
* :class:`SetTransformer` (Lee et al. 2019): an encoder of SAB or ISAB blocks in which the
  elements attend to one another, PMA pooling into k vectors, SAB blocks among those and a
  Dense layer, as the authors' reference ``SetTransformer``.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.nn import Dense, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.nn.set_attention import ISAB, PMA, SAB
from lamina.nn.set_layers import DeepSetsPooling, check_set, set_mask

__all__ = ["DeepSets", "SetTransformer"]


@register_with_arguments(modules=("phi", "rho"))
class DeepSets(Module):
    """y = rho(pool_i phi(x_i)) for sets x (batch, n, d): ``phi`` maps each element (any module
    acting on the last axis, e.g. Dense layers; called on (batch, n, d)), ``pool`` ('sum',
    'mean' or 'max') pools the real elements (:class:`lamina.nn.DeepSetsPooling`) and
    ``rho`` maps the pooled (batch, d') code. Called as ``model(x, mask=None)``."""

    def __init__(self, phi: Module, rho: Module, pool: str = "sum", name: str | None = None):
        super().__init__(name=name)
        self.phi, self.rho = phi, rho
        self.pooling = DeepSetsPooling(pool)

    @property
    def pool(self) -> str:
        return self.pooling.pool

    def forward(self, x, mask=None) -> Tensor:
        x = check_set(self, x, "set")
        keep = set_mask(self, mask, x)
        return self.rho(self.pooling(self.phi(x), mask=keep))

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}"


@register_with_arguments
class SetTransformer(Module):
    """The Set Transformer: sets (batch, n, d_in) -> (batch, ``num_outputs``, ``dim_output``).

        encoder: ``num_encoder_blocks`` ISAB_m blocks (SAB blocks when ``num_inducing`` is None)
        decoder: PMA_k (k = ``num_outputs`` seeds), ``num_decoder_blocks`` SAB blocks, Dense

    all of width ``dim_hidden`` with ``num_heads`` heads (and layer norms when ``ln``); the
    defaults are the reference code's (two ISAB with 32 inducing points, width 128, 4 heads,
    two SAB). Called as ``model(x, mask=None)``; the padding is left out of the encoder's
    attention and of the pooling, so the output ignores it and is invariant to the order of
    the elements."""

    def __init__(self, dim_output: int, num_outputs: int = 1, dim_hidden: int = 128, num_heads: int = 4,
                 num_inducing: int | None = 32, num_encoder_blocks: int = 2, num_decoder_blocks: int = 2,
                 ln: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.dim_output = positive_int(dim_output, "SetTransformer: dim_output")
        self.num_outputs = positive_int(num_outputs, "SetTransformer: num_outputs")
        self.num_inducing = num_inducing
        for count, what in ((num_encoder_blocks, "num_encoder_blocks"), (num_decoder_blocks, "num_decoder_blocks")):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"SetTransformer: {what} must be an int >= 0, got {count!r}")

        def encoder_block() -> Module:
            if num_inducing is None:
                return SAB(dim_hidden, num_heads, ln)
            return ISAB(dim_hidden, num_heads, num_inducing, ln)

        self.encoder = ModuleList([encoder_block() for _ in range(num_encoder_blocks)])
        self.pma = PMA(dim_hidden, num_heads, self.num_outputs, ln)
        self.decoder = ModuleList([SAB(dim_hidden, num_heads, ln) for _ in range(num_decoder_blocks)])
        self.head = Dense(self.dim_output, kernel_init="xavier_uniform")

    def forward(self, x, mask=None) -> Tensor:
        h = check_set(self, x, "set")
        keep = set_mask(self, mask, h)
        for block in self.encoder:
            h = block(h, mask=keep)
        h = self.pma(h, mask=keep)
        for block in self.decoder:
            h = block(h)
        return self.head(h)

    def extra_repr(self) -> str:
        return f"dim_output={self.dim_output}, num_outputs={self.num_outputs}, num_inducing={self.num_inducing}"
