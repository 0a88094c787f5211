"""All-MLP image classifiers in timm's layouts and names: MLP-Mixer (Tolstikhin et al. 2021,
"MLP-Mixer: An all-MLP Architecture for Vision") and ResMLP (Touvron et al. 2021, "ResMLP:
Feedforward networks for image classification with data-efficient training").

Both cut the (H, W, C) image into P = (H / p)(W / p) patches with one p x p / p convolution
(``stem.proj``) and read its map row by row as P tokens X of D features, then mix in turn
across the patches (the same weights for every channel) and across the channels (the same
weights for every patch). A Mixer block, with MLP(u) = W_2 GELU(W_1 u + b_1) + b_2:

    U = X + MLP_tokens(LN(X)^T)^T          token mixing: an MLP of D_S units over the P patches
    Y = U + MLP_channels(LN(U))            channel mixing: an MLP of D_C units over the D features

with LayerNorms of eps 1e-6 and (D_S, D_C) = (D / 2, 4 D). A ResMLP block replaces the
LayerNorms by Aff(x) = alpha x + beta (alpha, beta one value per feature), the token MLP by
one linear layer over the patches and scales each branch by a learned per-feature layer
scale (``ls1``, ``ls2``, starting at ``init_values``):

    U = X + ls1 (A Aff_1(X)^T)^T + ... ,   Y = U + ls2 MLP_channels(Aff_2(U))

The network: stem, the blocks, a final norm (LayerNorm or Aff), the mean over the patches and
the ``head``. Parameter names are timm's (``stem.proj``, ``blocks.N.norm1``,
``blocks.N.mlp_tokens.fc1``, ``blocks.N.linear_tokens``, ``blocks.N.ls1``, ``norm``,
``head``), so :func:`~lamina.models.load_timm_state_dict` loads timm's weights.

Parameters with 1000 classes at 224x224x3: mixer_s32_224 19,104,624; mixer_s16_224
18,528,264; mixer_b32_224 60,293,428; mixer_b16_224 59,880,472; mixer_l16_224 208,196,168;
resmlp_12_224 15,350,872; resmlp_24_224 30,020,680.
"""

from __future__ import annotations

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, classifier_layers, finish
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MIXER_CONFIGS", "RESMLP_CONFIGS", "Affine", "MixerBlock", "ResMLPBlock", "mixer_b16_224",
           "mixer_b32_224", "mixer_l16_224", "mixer_s16_224", "mixer_s32_224", "mlp_mixer", "resmlp",
           "resmlp_12_224", "resmlp_24_224", "timm_mlp"]

LAYER_NORM_EPS = 1e-6

# variant -> (patch size, width D, blocks)
MIXER_CONFIGS: dict[str, tuple[int, int, int]] = {
    "s32": (32, 512, 8), "s16": (16, 512, 8), "b32": (32, 768, 12), "b16": (16, 768, 12), "l16": (16, 1024, 24),
}
# variant -> (blocks, layer-scale initial value); patches of 16, width 384
RESMLP_CONFIGS: dict[str, tuple[int, float]] = {"12": (12, 0.1), "24": (24, 1e-5)}


def timm_mlp(hidden: int, out: int, name: str) -> nn.Sequential:
    """timm's ``Mlp``: fc1 (``hidden`` units), GELU, fc2 (``out`` units), applied to the last axis."""
    return nn.Sequential(nn.Dense(hidden, name="fc1"), nn.GELU(name="act"), nn.Dense(out, name="fc2"), name=name)


def _tokens_shape(layer: Module, shape, features: int) -> tuple:
    shape = check_shape_ndim(layer, shape, 3, f"tokens (batch, patches, {features})")
    if shape[1] is None or shape[2] not in (None, features):
        raise ShapeError(f"{layer._label()}: got tokens of shape {tuple(shape)}; expected (batch, patches, "
                         f"{features}) with a known number of patches")
    return tuple(shape)


def _across_patches(layer: Module, x: Tensor) -> Tensor:
    """``layer`` applied over the patch axis: (N, P, D) -> transpose -> layer -> transpose back."""
    return F.transpose(layer(F.transpose(x, 0, 2, 1)), 0, 2, 1)


@register_layer
class Affine(Module):
    """Aff(x) = alpha x + beta over the last axis (ResMLP's normalisation): ``alpha`` starts at
    one, ``beta`` at zero, both of shape (1, 1, D) as timm keeps them."""

    default_name = "affine"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self.features: int | None = None

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 3, "tokens (batch, patches, features)")
        if shape[2] is None:
            raise ShapeError(f"{self._label()}: the features of the input shape {tuple(shape)} must be known")
        self.features = int(shape[2])
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.add_parameter("alpha", xp.ones((1, 1, self.features), dtype=dtype))
        self.add_parameter("beta", xp.zeros((1, 1, self.features), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.features:
            raise input_error(self, x, f"tokens (batch, patches, {self.features})")
        return F.add(F.mul(x, self.alpha), self.beta)

    def compute_output_shape(self, input_shape):
        return tuple(check_shape_ndim(self, input_shape, 3, "tokens (batch, patches, features)"))

    def get_config(self) -> dict:
        return {"name": self.name}

    def extra_repr(self) -> str:
        return "" if self.features is None else str(self.features)


@register_layer
class MixerBlock(Block):
    """One Mixer block on tokens (N, P, ``dim``) (see the module docstring): sub-layers
    ``norm1``, ``mlp_tokens`` (fc1 of ``tokens_hidden`` units over the P patches, fc2 back to
    P), ``norm2``, ``mlp_channels`` (fc1 of ``channels_hidden`` units, fc2 back to ``dim``)."""

    default_name = "mixer_block"

    def __init__(self, dim: int, num_patches: int, tokens_hidden: int, channels_hidden: int,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "MixerBlock: dim")
        self.num_patches = positive_int(num_patches, "MixerBlock: num_patches")
        self.tokens_hidden = positive_int(tokens_hidden, "MixerBlock: tokens_hidden")
        self.channels_hidden = positive_int(channels_hidden, "MixerBlock: channels_hidden")
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.mlp_tokens = timm_mlp(tokens_hidden, num_patches, "mlp_tokens")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp_channels = timm_mlp(channels_hidden, dim, "mlp_channels")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        if shape[1] != self.num_patches:
            raise ShapeError(f"{self._label()}: got {shape[1]} patches; the block was made for {self.num_patches}")
        step(self.mlp_tokens, (shape[0], shape[2], shape[1]))
        step(self.norm1, shape)
        step(self.norm2, shape)
        return step(self.mlp_channels, shape)

    def forward(self, x) -> Tensor:
        x = F.add(x, _across_patches(self.mlp_tokens, self.norm1(x)))
        return F.add(x, self.mlp_channels(self.norm2(x)))

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_patches": self.num_patches, "tokens_hidden": self.tokens_hidden,
                "channels_hidden": self.channels_hidden, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim}, patches={self.num_patches}, hidden=({self.tokens_hidden}, {self.channels_hidden})"


@register_layer
class ResMLPBlock(Block):
    """One ResMLP block on tokens (N, P, ``dim``) (see the module docstring): sub-layers
    ``norm1`` (:class:`Affine`), ``linear_tokens`` (P -> P over the patches), ``norm2``,
    ``mlp_channels`` (``channels_hidden`` units); layer scales ``ls1``, ``ls2`` of shape
    (dim,) starting at ``init_values``."""

    default_name = "resmlp_block"

    def __init__(self, dim: int, num_patches: int, channels_hidden: int, init_values: float = 1e-4,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "ResMLPBlock: dim")
        self.num_patches = positive_int(num_patches, "ResMLPBlock: num_patches")
        self.channels_hidden = positive_int(channels_hidden, "ResMLPBlock: channels_hidden")
        self.init_values = float(init_values)
        self.norm1 = Affine(name="norm1")
        self.linear_tokens = nn.Dense(num_patches, name="linear_tokens")
        self.norm2 = Affine(name="norm2")
        self.mlp_channels = timm_mlp(channels_hidden, dim, "mlp_channels")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        if shape[1] != self.num_patches:
            raise ShapeError(f"{self._label()}: got {shape[1]} patches; the block was made for {self.num_patches}")
        step(self.norm1, shape)
        step(self.linear_tokens, (shape[0], shape[2], shape[1]))
        step(self.norm2, shape)
        return step(self.mlp_channels, shape)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        xp, dtype = backend.xp, backend.get_default_dtype()
        for scale in ("ls1", "ls2"):
            self.add_parameter(scale, xp.full((self.dim,), self.init_values, dtype=dtype))

    def forward(self, x) -> Tensor:
        x = F.add(x, F.mul(_across_patches(self.linear_tokens, self.norm1(x)), self.ls1))
        return F.add(x, F.mul(self.mlp_channels(self.norm2(x)), self.ls2))

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_patches": self.num_patches, "channels_hidden": self.channels_hidden,
                "init_values": self.init_values, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim}, patches={self.num_patches}, hidden={self.channels_hidden}"


def _patch_count(input_shape, patch_size: int, what: str) -> int:
    h, w, _ = input_shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"{what}: the image size {(h, w)} must be a multiple of the patch size {patch_size}")
    return (h // patch_size) * (w // patch_size)


def _network(blocks: list[Module], final_norm: Module, dim: int, patch_size: int, num_classes: int,
             input_shape, classifier_activation: str | None, name: str) -> nn.Sequential:
    stem = nn.Sequential(nn.Conv2D(dim, patch_size, stride=patch_size, name="proj"),
                         nn.Reshape((-1, dim), name="flatten"), name="stem")
    model = nn.Sequential(stem, nn.Sequential(*blocks, name="blocks"), final_norm,
                          nn.GlobalAvgPool1D(name="pool"), nn.Dense(num_classes, name="head"),
                          *classifier_layers(classifier_activation), name=name)
    return finish(model, input_shape)


def mlp_mixer(patch_size: int = 16, dim: int = 768, depth: int = 12, mlp_ratio: tuple[float, float] = (0.5, 4.0),
              num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
              classifier_activation: str | None = None, name: str = "mlp_mixer") -> nn.Sequential:
    """An MLP-Mixer (unbuilt): ``depth`` :class:`MixerBlock`\\ s of width ``dim`` on
    ``patch_size`` patches, token and channel MLPs of int(r D) units for (r_S, r_C) =
    ``mlp_ratio``; sub-layers ``stem`` (``proj``), ``blocks``, ``norm``, ``pool``, ``head``.
    Outputs logits unless ``classifier_activation``."""
    input_shape = check_input(input_shape, name)
    patch_size, dim, depth = (positive_int(v, f"{name}: {what}") for v, what in
                              ((patch_size, "patch_size"), (dim, "dim"), (depth, "depth")))
    patches = _patch_count(input_shape, patch_size, name)
    tokens_hidden, channels_hidden = (int(r * dim) for r in mlp_ratio)
    blocks = [MixerBlock(dim, patches, tokens_hidden, channels_hidden, name=str(k)) for k in range(depth)]
    return _network(blocks, nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm"), dim, patch_size, num_classes,
                    input_shape, classifier_activation, name)


def resmlp(patch_size: int = 16, dim: int = 384, depth: int = 12, mlp_ratio: float = 4.0, init_values: float = 1e-4,
           num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           classifier_activation: str | None = None, name: str = "resmlp") -> nn.Sequential:
    """A ResMLP (unbuilt): ``depth`` :class:`ResMLPBlock`\\ s of width ``dim`` on
    ``patch_size`` patches, channel MLPs of int(``mlp_ratio`` D) units, layer scales starting at
    ``init_values``, a final :class:`Affine` ``norm``. Outputs logits unless ``classifier_activation``."""
    input_shape = check_input(input_shape, name)
    patch_size, dim, depth = (positive_int(v, f"{name}: {what}") for v, what in
                              ((patch_size, "patch_size"), (dim, "dim"), (depth, "depth")))
    patches = _patch_count(input_shape, patch_size, name)
    blocks = [ResMLPBlock(dim, patches, int(mlp_ratio * dim), init_values, name=str(k)) for k in range(depth)]
    return _network(blocks, Affine(name="norm"), dim, patch_size, num_classes, input_shape, classifier_activation,
                    name)


def _mixer(variant: str, num_classes: int, input_shape, classifier_activation: str | None) -> nn.Sequential:
    patch, dim, depth = MIXER_CONFIGS[variant]
    return mlp_mixer(patch, dim, depth, num_classes=num_classes, input_shape=input_shape,
                     classifier_activation=classifier_activation, name=f"mixer_{variant}_224")


def mixer_s32_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """Mixer-S/32: 8 blocks of width 512 on 32x32 patches; 19,104,624 parameters with 1000 classes."""
    return _mixer("s32", num_classes, input_shape, classifier_activation)


def mixer_s16_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """Mixer-S/16: 8 blocks of width 512 on 16x16 patches; 18,528,264 parameters with 1000 classes."""
    return _mixer("s16", num_classes, input_shape, classifier_activation)


def mixer_b32_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """Mixer-B/32: 12 blocks of width 768 on 32x32 patches; 60,293,428 parameters with 1000 classes."""
    return _mixer("b32", num_classes, input_shape, classifier_activation)


def mixer_b16_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """Mixer-B/16: 12 blocks of width 768 on 16x16 patches; 59,880,472 parameters with 1000 classes."""
    return _mixer("b16", num_classes, input_shape, classifier_activation)


def mixer_l16_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """Mixer-L/16: 24 blocks of width 1024 on 16x16 patches; 208,196,168 parameters with 1000 classes."""
    return _mixer("l16", num_classes, input_shape, classifier_activation)


def _resmlp(variant: str, num_classes: int, input_shape, classifier_activation: str | None) -> nn.Sequential:
    depth, init_values = RESMLP_CONFIGS[variant]
    return resmlp(16, 384, depth, init_values=init_values, num_classes=num_classes, input_shape=input_shape,
                  classifier_activation=classifier_activation, name=f"resmlp_{variant}_224")


def resmlp_12_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ResMLP-12: 12 blocks of width 384 on 16x16 patches, layer scales from 0.1; 15,350,872
    parameters with 1000 classes."""
    return _resmlp("12", num_classes, input_shape, classifier_activation)


def resmlp_24_224(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ResMLP-24: 24 blocks of width 384 on 16x16 patches, layer scales from 1e-5; 30,020,680
    parameters with 1000 classes."""
    return _resmlp("24", num_classes, input_shape, classifier_activation)
