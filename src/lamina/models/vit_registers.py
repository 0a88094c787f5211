"""Register tokens (Darcet et al. 2024, "Vision Transformers Need Registers"): k learnable
tokens appended after the class token, with no position embedding, that the encoder may use
as scratch space; they are dropped at the output.

    z_0 = [x_class + E_pos,0; r_1; ...; r_k; x_1 E + E_pos,1; ...]  (N, 1 + k + P, d)

:class:`RegisterTokens` is the layer inserting them; :class:`ViTWithRegisters` is a
:class:`~lamina.models.vit.VisionTransformer` with one after its embedding, and
:meth:`ViTWithRegisters.forward_features` gives the final tokens without the registers.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import check_input, finish, nhwc
from lamina.models.vit import POSITION_STD, VisionTransformer
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RegisterTokens", "ViTWithRegisters", "drop_registers", "vit_with_registers"]


def drop_registers(tokens, num_registers: int, num_prefix_tokens: int = 1) -> Tensor:
    """(N, p + k + P, d) -> (N, p + P, d): the tokens without the k registers after the p
    prefix tokens."""
    tokens = as_tensor(tokens)
    p, k = num_prefix_tokens, num_registers
    if tokens.ndim != 3 or tokens.shape[1] < p + k:
        raise ShapeError(f"drop_registers: expected tokens (batch, >= {p + k}, features), got {tuple(tokens.shape)}")
    if k == 0:
        return tokens
    return F.concat([F.getitem(tokens, (slice(None), slice(0, p))),
                     F.getitem(tokens, (slice(None), slice(p + k, None)))], axis=1)


@register_layer
class RegisterTokens(Module):
    """(N, p + P, d) -> (N, p + k + P, d): ``num_registers`` = k learned tokens (parameter
    ``registers`` (1, k, d), starting N(0, 0.02^2)) inserted after the ``num_prefix_tokens`` = p
    first tokens (the class token)."""

    default_name = "registers"

    def __init__(self, num_registers: int, num_prefix_tokens: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.num_registers = positive_int(num_registers, "RegisterTokens: num_registers")
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.features: int | None = None

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 3, "tokens (batch, tokens, features)")
        if shape[2] is None:
            raise ShapeError(f"{self._label()}: the features of the input shape {shape} must be known")
        self.features = int(shape[2])
        k, d = self.num_registers, self.features
        self.add_parameter("registers", initializers.normal(POSITION_STD)((1, k, d), k, d,
                                                                          backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        p = self.num_prefix_tokens
        if x.ndim != 3 or x.shape[2] != self.features or x.shape[1] < p:
            raise input_error(self, x, f"tokens (batch, >= {p}, {self.features})")
        registers = F.broadcast_to(self.registers, (x.shape[0], self.num_registers, self.features))
        return F.concat([F.getitem(x, (slice(None), slice(0, p))), registers,
                         F.getitem(x, (slice(None), slice(p, None)))], axis=1)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 3, "tokens (batch, tokens, features)")
        return (shape[0], None if shape[1] is None else shape[1] + self.num_registers, shape[2])

    def get_config(self) -> dict:
        return {"num_registers": self.num_registers, "num_prefix_tokens": self.num_prefix_tokens, "name": self.name}


@register_layer
class ViTWithRegisters(VisionTransformer):
    """A VisionTransformer (same arguments and sub-layers) with ``num_registers`` register
    tokens (sub-layer ``registers``) after the class token; the head reads the class token,
    so the outputs are still (N, num_classes)."""

    default_name = "vit_registers"

    def __init__(self, patch_size, num_classes: int, num_registers: int = 4, **options):
        super().__init__(patch_size, num_classes, **options)
        self.registers = RegisterTokens(num_registers, name="registers")

    @property
    def num_registers(self) -> int:
        return self.registers.num_registers

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        self._check_image(shape)
        shape = step(self.embedding, step(self.flatten_patches, step(self.conv_proj, shape)))
        shape = step(self.encoder, step(self.dropout, step(self.registers, shape)))
        shape = step(self.head, step(self.norm, (shape[0], shape[2])))
        if "predictions" in self._modules:
            shape = step(self.predictions, shape)
        return shape

    def encode(self, x) -> Tensor:
        """The encoder's output tokens (N, 1 + k + P, d), registers included, before ``norm``."""
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        self._check_image(x.shape)
        tokens = self.registers(self.embedding(self.flatten_patches(self.conv_proj(x))))
        return self.encoder(self.dropout(tokens))

    def forward_features(self, x) -> Tensor:
        """The normalized final tokens without the registers: (N, 1 + P, d)."""
        return self.norm(drop_registers(self.encode(x), self.num_registers))

    def forward(self, x) -> Tensor:
        scores = self.head(self.norm(F.getitem(self.encode(x), (slice(None), 0))))
        if "predictions" in self._modules:
            scores = self.predictions(scores)
        return scores

    def get_config(self) -> dict:
        return {**super().get_config(), "num_registers": self.num_registers}


def vit_with_registers(image_size, patch_size, num_classes: int = 1000, num_registers: int = 4, d_model: int = 768,
                       depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072, dropout: float = 0.0,
                       channels: int = 3, classifier_activation: str | None = None) -> ViTWithRegisters:
    """A :class:`ViTWithRegisters` (unbuilt): :func:`lamina.models.vit` with ``num_registers``
    register tokens."""
    h, w = pair(image_size, "vit_with_registers: image_size")
    ph, pw = pair(patch_size, "vit_with_registers: patch_size")
    input_shape = check_input((h, w, channels), "vit_with_registers")
    if min(ph, pw) < 1 or h % ph or w % pw:
        raise ValueError(f"vit_with_registers: the image size {(h, w)} must be a multiple of the patch size "
                         f"{(ph, pw)}")
    model = ViTWithRegisters((ph, pw), num_classes, num_registers=num_registers, d_model=d_model, depth=depth,
                             num_heads=num_heads, mlp_dim=mlp_dim, dropout=dropout,
                             classifier_activation=classifier_activation, name="vit_registers")
    return finish(model, input_shape)
