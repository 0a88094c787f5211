"""The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; ViT): an
image read as a sequence of patches by a Transformer encoder.

    patches:   the (H, W, C) image cut into P = (H / p)(W / p) patches of p x p pixels, each
               flattened and projected to d_model features; one Conv2D with kernel = stride
               = p does both (``conv_proj``), and its (H / p, W / p, d) map is read row by row
               as P tokens (``flatten_patches``)
    z_0 =      [x_class; x_1 E; ...; x_P E] + E_pos: a learned class token prepended and a
               learned position embedding of P + 1 rows added (``embedding``), then dropout
    z_l =      depth pre-norm encoder layers (``encoder``): multi-head self-attention and a
               GELU MLP of ``mlp_dim`` units, each with a LayerNorm before it and a residual
               connection around it
    y =        LN(z_depth^0), the class token's final features (``norm``), through a Dense
               layer to ``num_classes`` scores (``head``)

The class token attends to every patch in every layer, so its final features summarise the
image; the position embedding is the only thing telling the patches' places apart.

:func:`vit_b_16` is ViT-Base/16 with torchvision's sizes (LayerNorm eps 1e-6, biases in the
attention projections): 86,567,656 parameters with 1000 classes at 224x224x3; the defaults
of :func:`vit` are ViT-Base's sizes. The other torchvision variants (:data:`VIT_CONFIGS`;
parameters with 1000 classes at 224x224x3): vit_b_32 88,224,232; vit_l_16 304,326,632;
vit_l_32 306,535,400; vit_h_14 632,045,800. Unlike torchvision's, ``dropout`` also acts on the
attention weights (lamina's encoder layer has one rate for both).
"""

from __future__ import annotations

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["VIT_CONFIGS", "ClassTokenEmbedding", "VisionTransformer", "vit", "vit_b_16", "vit_b_32", "vit_h_14",
           "vit_l_16", "vit_l_32"]

POSITION_STD = 0.02  # the position embedding starts N(0, 0.02^2), as torchvision's

# variant -> (patch size, d_model, depth, num_heads, mlp_dim)
VIT_CONFIGS: dict[str, tuple[int, int, int, int, int]] = {
    "b_16": (16, 768, 12, 12, 3072), "b_32": (32, 768, 12, 12, 3072),
    "l_16": (16, 1024, 24, 16, 4096), "l_32": (32, 1024, 24, 16, 4096),
    "h_14": (14, 1280, 32, 16, 5120),
}


@register_layer
class ClassTokenEmbedding(Module):
    """z_0 = [x_class; x_1; ...; x_P] + E_pos for patch tokens (N, P, d) -> (N, P + 1, d).

    Parameters, created on the first call for the input's P and d: ``class_token`` x_class
    of shape (1, 1, d), starting at zero, and ``pos_embedding`` E_pos of shape (1, P + 1, d),
    starting N(0, 0.02^2) (torchvision's shapes and initialization)."""

    default_name = "class_token_embedding"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self.num_patches: int | None = None
        self.features: int | None = None

    def _tokens_shape(self, input_shape) -> tuple:
        shape = check_shape_ndim(self, input_shape, 3, "patch tokens (batch, patches, features)")
        expected = (self.num_patches, self.features)
        if self.built and any(n is not None and n != want for n, want in zip(shape[1:], expected)):
            raise ShapeError(f"{self._label()}: got patch tokens of shape {shape}; the layer was built for "
                             f"(batch, {self.num_patches}, {self.features})")
        return shape

    def build(self, input_shape) -> None:
        shape = self._tokens_shape(input_shape)
        if shape[1] is None or shape[2] is None:
            raise ShapeError(f"{self._label()}: the patches and features of the input shape {shape} must be known")
        self.num_patches, self.features = int(shape[1]), int(shape[2])
        dtype = backend.get_default_dtype()
        d, rows = self.features, self.num_patches + 1
        self.add_parameter("class_token", initializers.zeros((1, 1, d), d, d, dtype))
        self.add_parameter("pos_embedding", initializers.normal(POSITION_STD)((1, rows, d), rows, d, dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.num_patches, self.features):
            raise input_error(self, x, f"patch tokens (batch, {self.num_patches}, {self.features})")
        token = F.broadcast_to(self.class_token, (x.shape[0], 1, self.features))
        return F.add(F.concat([token, x], axis=1), self.pos_embedding)

    def compute_output_shape(self, input_shape):
        shape = self._tokens_shape(input_shape)
        return (shape[0], None if shape[1] is None else shape[1] + 1, shape[2])

    def get_config(self) -> dict:
        return {"name": self.name}

    def extra_repr(self) -> str:
        return "" if self.num_patches is None else f"patches={self.num_patches}, features={self.features}"


@register_layer
class VisionTransformer(Block):
    """The whole ViT (see the module docstring) for (N, H, W, channels) images with H and W
    multiples of ``patch_size``: sub-layers ``conv_proj``, ``flatten_patches``, ``embedding``,
    ``dropout``, ``encoder`` (a Sequential of ``depth`` TransformerEncoderLayers named '0',
    '1', ...), ``norm``, ``head`` (and ``predictions`` with ``classifier_activation``).
    Outputs (N, num_classes) scores."""

    default_name = "vit"

    def __init__(self, patch_size, num_classes: int, d_model: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, dropout: float = 0.0, layer_norm_eps: float = 1e-6,
                 classifier_activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.patch_size = pair(patch_size, "VisionTransformer: patch_size")
        if min(self.patch_size) < 1:
            raise ValueError(f"VisionTransformer: patch_size must be positive, got {patch_size!r}")
        self.num_classes = positive_int(num_classes, "VisionTransformer: num_classes")
        self.d_model = positive_int(d_model, "VisionTransformer: d_model")
        self.depth = positive_int(depth, "VisionTransformer: depth")
        self.num_heads = positive_int(num_heads, "VisionTransformer: num_heads")
        self.mlp_dim = positive_int(mlp_dim, "VisionTransformer: mlp_dim")
        if d_model % num_heads:
            raise ValueError(f"VisionTransformer: d_model {d_model} is not divisible by num_heads {num_heads}")
        self.dropout_rate, self.layer_norm_eps = float(dropout), float(layer_norm_eps)
        self.classifier_activation = classifier_activation
        self.conv_proj = nn.Conv2D(d_model, self.patch_size, stride=self.patch_size, name="conv_proj")
        self.flatten_patches = nn.Reshape((-1, d_model), name="flatten_patches")
        self.embedding = ClassTokenEmbedding(name="embedding")
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.encoder = nn.Sequential(
            *[nn.TransformerEncoderLayer(d_model, num_heads, mlp_dim, dropout=dropout, activation="gelu",
                                         norm_first=True, layer_norm_eps=layer_norm_eps, name=str(k))
              for k in range(depth)], name="encoder")
        self.norm = nn.LayerNorm(-1, eps=layer_norm_eps, name="norm")
        self.head = nn.Dense(num_classes, name="head")
        for layer in classifier_layers(classifier_activation):
            setattr(self, layer.name, layer)

    def _check_image(self, shape) -> None:
        h, w = shape[1], shape[2]
        ph, pw = self.patch_size
        if (h is not None and h % ph) or (w is not None and w % pw):
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; their height and width must be "
                             f"multiples of the patch size {self.patch_size}")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        self._check_image(shape)
        shape = step(self.conv_proj, shape)
        shape = step(self.flatten_patches, shape)
        shape = step(self.embedding, shape)
        shape = step(self.encoder, step(self.dropout, shape))
        shape = step(self.head, step(self.norm, (shape[0], shape[2])))
        if "predictions" in self._modules:
            shape = step(self.predictions, shape)
        return shape

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        self._check_image(x.shape)
        tokens = self.embedding(self.flatten_patches(self.conv_proj(x)))
        z = self.encoder(self.dropout(tokens))
        scores = self.head(self.norm(F.getitem(z, (slice(None), 0))))
        if "predictions" in self._modules:
            scores = self.predictions(scores)
        return scores

    def get_config(self) -> dict:
        return {"patch_size": list(self.patch_size), "num_classes": self.num_classes, "d_model": self.d_model,
                "depth": self.depth, "num_heads": self.num_heads, "mlp_dim": self.mlp_dim,
                "dropout": self.dropout_rate, "layer_norm_eps": self.layer_norm_eps,
                "classifier_activation": self.classifier_activation, "name": self.name}

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, d_model={self.d_model}, depth={self.depth}, "
                f"num_heads={self.num_heads}, mlp_dim={self.mlp_dim}")


def vit(image_size, patch_size, num_classes: int = 1000, d_model: int = 768, depth: int = 12, num_heads: int = 12,
        mlp_dim: int = 3072, dropout: float = 0.0, channels: int = 3,
        classifier_activation: str | None = None) -> VisionTransformer:
    """A Vision Transformer (unbuilt) for ``image_size`` (an int, or (height, width)) images of
    ``channels`` channels cut into ``patch_size`` patches (an int or a pair; the image's sides
    must be multiples of it): ``depth`` pre-norm encoder layers of width ``d_model`` with
    ``num_heads`` heads and GELU MLPs of ``mlp_dim`` units; (N, num_classes) scores (logits
    unless ``classifier_activation``). See the module docstring."""
    h, w = pair(image_size, "vit: image_size")
    ph, pw = pair(patch_size, "vit: patch_size")
    input_shape = check_input((h, w, channels), "vit")
    if min(ph, pw) < 1 or h % ph or w % pw:
        raise ValueError(f"vit: the image size {(h, w)} must be a multiple of the patch size {(ph, pw)}")
    model = VisionTransformer((ph, pw), num_classes, d_model=d_model, depth=depth, num_heads=num_heads,
                              mlp_dim=mlp_dim, dropout=dropout, classifier_activation=classifier_activation,
                              name="vit")
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, image_size, dropout: float,
             classifier_activation: str | None) -> VisionTransformer:
    patch, d_model, depth, num_heads, mlp_dim = VIT_CONFIGS[variant]
    model = vit(image_size, patch, num_classes, d_model=d_model, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim,
                dropout=dropout, channels=3, classifier_activation=classifier_activation)
    model.name = f"vit_{variant}"
    return model


def vit_b_16(num_classes: int = 1000, image_size=224, dropout: float = 0.0,
             classifier_activation: str | None = None) -> VisionTransformer:
    """ViT-Base/16 (unbuilt): 16x16 patches of 224x224x3 images, 12 layers of width 768 with 12
    heads and MLPs of 3072 units; 86,567,656 parameters with 1000 classes, as torchvision's."""
    return _variant("b_16", num_classes, image_size, dropout, classifier_activation)


def vit_b_32(num_classes: int = 1000, image_size=224, dropout: float = 0.0,
             classifier_activation: str | None = None) -> VisionTransformer:
    """ViT-Base/32 (unbuilt): ViT-Base on 32x32 patches; 88,224,232 parameters with 1000 classes
    at 224x224 (about 4.4 G multiply-adds)."""
    return _variant("b_32", num_classes, image_size, dropout, classifier_activation)


def vit_l_16(num_classes: int = 1000, image_size=224, dropout: float = 0.0,
             classifier_activation: str | None = None) -> VisionTransformer:
    """ViT-Large/16 (unbuilt): 24 layers of width 1024 with 16 heads and MLPs of 4096 units on
    16x16 patches; 304,326,632 parameters with 1000 classes at 224x224 (about 61.6 G multiply-adds)."""
    return _variant("l_16", num_classes, image_size, dropout, classifier_activation)


def vit_l_32(num_classes: int = 1000, image_size=224, dropout: float = 0.0,
             classifier_activation: str | None = None) -> VisionTransformer:
    """ViT-Large/32 (unbuilt): ViT-Large on 32x32 patches; 306,535,400 parameters with 1000
    classes at 224x224 (about 15.4 G multiply-adds)."""
    return _variant("l_32", num_classes, image_size, dropout, classifier_activation)


def vit_h_14(num_classes: int = 1000, image_size=224, dropout: float = 0.0,
             classifier_activation: str | None = None) -> VisionTransformer:
    """ViT-Huge/14 (unbuilt): 32 layers of width 1280 with 16 heads and MLPs of 5120 units on
    14x14 patches; 632,045,800 parameters with 1000 classes at 224x224 (about 167.3 G
    multiply-adds). Build it under :func:`lamina.nn.init.meta` to count without allocating."""
    return _variant("h_14", num_classes, image_size, dropout, classifier_activation)
