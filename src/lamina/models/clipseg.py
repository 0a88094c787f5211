"""CLIPSeg (Lüddecke & Ecker 2022, "Image segmentation using text and image prompts"): a small
transformer decoder on a frozen :class:`~lamina.models.CLIP` that turns the image tower's
activations into a per-pixel logit map for a prompt given as text or as an example image.

    activations  a_1 .. a_S = the outputs of the image tower's layers ``extract_layers``
                 (N, 1 + P, E), P = g^2 patch tokens, taken without gradient
    prompt       c = the CLIP text embedding t of the prompt (N, D), the image embedding v of
                 a visual prompt, or alpha t + (1 - alpha) v
    decoder      x_1 = FiLM(a_S W_1 + b_1, c) = gamma(c) * (a_S W_1 + b_1) + beta(c)
                 x_k = a_{S+1-k} W_k + b_k + block_{k-1}(x_{k-1})     (skip connections, deepest first)
                 y = block_S(x_S)                                    (post-norm transformer blocks of width d)
    head         the g x g patch tokens of y (the class token dropped) -> a transposed convolution of
                 kernel and stride p (the patch size): logits (N, g p, g p) at the input resolution
    loss         binary cross-entropy of sigmoid(logits) against the binary mask

``conditional_layer`` k_c moves the FiLM before block k_c + 1 (0: before the first, as the
paper). ``complex_head`` (the "refined" variant) puts a 3 x 3 convolution and ReLU before two
transposed convolutions of kernels and strides p_1 p_2 = p (ReLU between). The CLIP is frozen:
its parameters are set untrainable when the model is built and its outputs carry no gradient.

Other image sizes (the paper segments 352 x 352 images with a CLIP trained at 224 x 224): any
H x W whose sides are multiples of p gives a g_h x g_w grid of patches, g_h = H / p, g_w = W / p.
The tower's position embeddings (a class row and an s x s grid, s = image_size / p) are then
interpolated to that grid, bicubic with align_corners False, the class row kept
(:func:`clip_position_embedding`), and the logits come at H x W.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.clip import CLIP, CLIPVisionTransformer, clip
from lamina.models.flexivit import resize_position_embedding
from lamina.models.hf_weights import ConfigBuiltModel, build_children
from lamina.nn.conditioning import FiLM
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.conv import Conv2D
from lamina.nn.conv_transpose import Conv2DTranspose
from lamina.nn.dense import Dense
from lamina.nn.layer import pair, positive_int
from lamina.nn.module import as_tensor
from lamina.nn.transformer import TransformerEncoderLayer

__all__ = ["CLIPSeg", "CLIPSegDecoder", "clip_position_embedding", "clipseg", "clipseg_loss", "clipseg_segment",
           "visual_prompt_images"]


def _head_factors(patch_size: int) -> tuple[int, int]:
    """(p_1, p_2), p_1 p_2 = p, p_1 the largest divisor of p not above sqrt(p): (4, 4) for 16."""
    first = max(d for d in range(1, math.isqrt(patch_size) + 1) if patch_size % d == 0)
    return first, patch_size // first


def clip_position_embedding(vision_model: CLIPVisionTransformer, grid, mode: str = "bicubic") -> Tensor:
    """(1, 1 + g_h g_w, E): the position embeddings of CLIP's image tower for a ``grid``
    (g_h, g_w) of patches: its class row, then its s x s grid of rows (s = image_size /
    patch_size) resized to g_h x g_w by :func:`~lamina.models.resize_position_embedding`
    (``mode`` 'bicubic' or 'bilinear', align_corners False), which leaves them as they are at s x s."""
    if not isinstance(vision_model, CLIPVisionTransformer):
        raise TypeError(f"clip_position_embedding: expected a CLIPVisionTransformer (a CLIP's vision_model), got "
                        f"{type(vision_model).__name__}")
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"clip_position_embedding: mode must be 'bicubic' or 'bilinear', got {mode!r}")
    g_h, g_w = pair(grid, "clip_position_embedding: grid")
    if g_h < 1 or g_w < 1:
        raise ValueError(f"clip_position_embedding: the grid must have positive sides, got {(g_h, g_w)}")
    if not vision_model.built:
        vision_model.build()
    c = vision_model.config
    side = c["image_size"] // c["patch_size"]
    table = F.reshape(vision_model.position_embedding.weight, (1, vision_model.num_positions, c["hidden_size"]))
    return resize_position_embedding(table, (g_h, g_w), (side, side), num_prefix_tokens=1, mode=mode)


@register_with_arguments
class CLIPSegDecoder(ConfigBuiltModel):
    """CLIPSeg's decoder (module docstring): ``decoder(activations, condition, grid=None)``
    with S activations (N, 1 + g_h g_w, ``hidden_size``) in the tower's order (shallow first)
    and a condition (N, ``condition_dim``) -> logits (N, g_h p, g_w p); ``grid`` (g_h, g_w) is
    the patch grid, square (g x g) when None. Sub-modules ``reduces`` (S Dense
    layers to ``reduce_dim``, the first for the deepest activation), ``film``
    (:class:`~lamina.nn.FiLM`), ``blocks`` (post-norm transformer encoder layers without
    dropout, ``num_heads`` heads, feed-forward width ``intermediate_size``, ``activation``)
    and ``head`` (the transposed convolution, or convolution and two transposed ones)."""

    def __init__(self, hidden_size: int, condition_dim: int, num_layers: int, patch_size: int,
                 reduce_dim: int = 64, num_heads: int = 4, intermediate_size: int = 2048, conditional_layer: int = 0,
                 complex_head: bool = False, activation: str = "quick_gelu", layer_norm_eps: float = 1e-5,
                 name: str | None = None):
        super().__init__(name=name)
        who = "CLIPSegDecoder"
        self.hidden_size = positive_int(hidden_size, f"{who}: hidden_size")
        self.condition_dim = positive_int(condition_dim, f"{who}: condition_dim")
        self.num_layers = positive_int(num_layers, f"{who}: num_layers")
        self.patch_size = positive_int(patch_size, f"{who}: patch_size")
        self.reduce_dim = positive_int(reduce_dim, f"{who}: reduce_dim")
        if not 0 <= conditional_layer < num_layers:
            raise ValueError(f"{who}: conditional_layer must lie in [0, {num_layers}), got {conditional_layer}")
        if complex_head and reduce_dim < 2:
            raise ValueError(f"{who}: complex_head halves reduce_dim, which must then be at least 2, got {reduce_dim}")
        self.conditional_layer, self.complex_head = conditional_layer, bool(complex_head)
        self.reduces = ModuleList([Dense(reduce_dim) for _ in range(num_layers)])
        self.film = FiLM(reduce_dim, condition_dim)
        self.blocks = ModuleList([TransformerEncoderLayer(reduce_dim, num_heads, intermediate_size, dropout=0.0,
                                                          activation=activation, layer_norm_eps=layer_norm_eps)
                                  for _ in range(num_layers)])
        if self.complex_head:
            first, second = _head_factors(patch_size)
            self.head = ModuleList([Conv2D(reduce_dim, 3, padding="same"),
                                    Conv2DTranspose(reduce_dim // 2, first, stride=first),
                                    Conv2DTranspose(1, second, stride=second)])
        else:
            self.head = ModuleList([Conv2DTranspose(1, patch_size, stride=patch_size)])

    def build(self, input_shape=None) -> None:
        d = self.reduce_dim
        tokens = (None, None, d)
        grid = [(None, None, None, d)] + ([(None, None, None, d), (None, None, None, d // 2)]
                                          if self.complex_head else [])
        build_children([*((reduce, (None, None, self.hidden_size)) for reduce in self.reduces),
                        (self.film, [tokens, (None, self.condition_dim)]),
                        *((block, tokens) for block in self.blocks), *zip(self.head, grid)])
        self.built = True

    def _check(self, activations: Sequence, condition, grid) -> tuple[list[Tensor], Tensor, tuple[int, int]]:
        acts = [as_tensor(a) for a in activations]
        condition = as_tensor(condition)
        if len(acts) != self.num_layers:
            raise ValueError(f"{self._label()}: expected {self.num_layers} activations, got {len(acts)}")
        first = acts[0].shape
        tokens = first[1] - 1 if len(first) == 3 else -1
        if grid is None:
            side = math.isqrt(max(tokens, 0))
            grid, expected = (side, side), "g^2, a class token and a g x g grid"
        else:
            grid = pair(grid, f"{self._label()}: grid")
            expected = f"{grid[0]} * {grid[1]}, a class token and the grid {grid}"
        if (any(a.shape != first for a in acts) or len(first) != 3 or first[2] != self.hidden_size
                or tokens < 1 or grid[0] * grid[1] != tokens):
            raise ShapeError(f"{self._label()}: the activations must all be (batch, 1 + {expected}, "
                             f"{self.hidden_size}), got {[tuple(a.shape) for a in acts]}")
        if condition.ndim != 2 or condition.shape != (first[0], self.condition_dim):
            raise ShapeError(f"{self._label()}: the condition must be ({first[0]}, {self.condition_dim}) for "
                             f"activations of batch {first[0]}, got {tuple(condition.shape)}")
        return acts, condition, grid

    def forward(self, activations: Sequence, condition, grid=None) -> Tensor:
        self._ensure_built()
        acts, condition, (g_h, g_w) = self._check(activations, condition, grid)
        x = None
        for k, (a, reduce, block) in enumerate(zip(reversed(acts), self.reduces, self.blocks)):
            x = reduce(a) if x is None else F.add(reduce(a), x)
            if k == self.conditional_layer:
                x = self.film(x, condition)
            x = block(x)
        n, _, d = x.shape
        y = F.reshape(F.getitem(x, (slice(None), slice(1, None))), (n, g_h, g_w, d))
        for i, layer in enumerate(self.head):
            y = layer(y) if i == len(self.head) - 1 else F.relu(layer(y))
        return F.reshape(y, y.shape[:3])

    def extra_repr(self) -> str:
        return (f"layers={self.num_layers}, reduce_dim={self.reduce_dim}, conditional_layer={self.conditional_layer}, "
                f"{'complex' if self.complex_head else 'simple'} head")


@register_with_arguments(modules=("clip_model",))
class CLIPSeg(ConfigBuiltModel):
    """CLIPSeg on a frozen :class:`~lamina.models.CLIP` (module docstring): ``model(images,
    text_ids=None, prompt_embeds=None, attention_mask=None)`` -> logits (N, H, W) for NHWC
    images (N, H, W, c), H and W multiples of the patch size (the CLIP's image size or any
    other: module docstring), one prompt per image: text ids (N, T)
    through the text tower, or prompt embeddings (N, D) (D the CLIP's projection_dim; see
    :meth:`prompt_embeddings`). ``extract_layers``: indices (from 0) of the image tower's
    layers whose outputs feed the decoder (ViT-B/16: 3, 6, 9). Sub-modules ``clip`` and
    ``decoder`` (:class:`CLIPSegDecoder`, which the other arguments configure)."""

    default_name = "clipseg"

    def __init__(self, clip_model: CLIP, extract_layers: Sequence[int] = (3, 6, 9), reduce_dim: int = 64,
                 num_heads: int = 4, intermediate_size: int = 2048, conditional_layer: int = 0,
                 complex_head: bool = False, activation: str = "quick_gelu", name: str | None = None):
        super().__init__(name=name)
        if not isinstance(clip_model, CLIP):
            raise TypeError(f"CLIPSeg: clip_model must be a lamina.models.CLIP, got {type(clip_model).__name__}")
        vision = clip_model.vision_config
        layers = [int(i) for i in extract_layers]
        depth = vision["num_hidden_layers"]
        if not layers or any(not 0 <= i < depth for i in layers) or sorted(set(layers)) != layers:
            raise ValueError(f"CLIPSeg: extract_layers must be increasing layer indices in [0, {depth}) of the image "
                             f"tower, got {list(extract_layers)}")
        self.clip, self.extract_layers = clip_model, tuple(layers)
        self.image_size = vision["image_size"]
        self.decoder = CLIPSegDecoder(vision["hidden_size"], clip_model.projection_dim, len(layers),
                                      vision["patch_size"], reduce_dim, num_heads, intermediate_size,
                                      conditional_layer, complex_head, activation, vision["layer_norm_eps"])

    def build(self, input_shape=None) -> None:
        self.clip._ensure_built()
        self.decoder._ensure_built()
        self.clip.freeze()
        self.built = True

    # -- the frozen CLIP ----------------------------------------------------------------
    def patch_grid(self, image_shape) -> tuple[int, int]:
        """(g_h, g_w) = (H / p, W / p) for images of shape (N, H, W, c), H and W multiples of p."""
        c = self.clip.vision_config
        p, channels = c["patch_size"], c["num_channels"]
        shape = tuple(image_shape)
        if len(shape) != 4 or shape[3] != channels or shape[1] < p or shape[2] < p or shape[1] % p or shape[2] % p:
            raise ShapeError(f"{self._label()}: expected NHWC images (batch, H, W, {channels}) with H and W multiples "
                             f"of the patch size {p} (the CLIP's own size: {c['image_size']}), got shape {shape}")
        return shape[1] // p, shape[2] // p

    def image_activations(self, images) -> list[Tensor]:
        """The outputs (N, 1 + g_h g_w, E) of the image tower's ``extract_layers``, without
        gradient, for images (N, H, W, c) of a g_h x g_w grid of patches (:meth:`patch_grid`):
        the tower's embedding (patches, class token, :func:`clip_position_embedding`) and its
        layers up to the last one extracted."""
        self._ensure_built()
        x = as_tensor(images)
        grid = self.patch_grid(x.shape)
        vision = self.clip.vision_model
        n, e = x.shape[0], vision.config["hidden_size"]
        found = []
        with no_grad():
            patches = F.reshape(vision.patch_embedding(x), (n, -1, e))
            token = F.broadcast_to(F.reshape(vision.class_embedding, (1, 1, e)), (n, 1, e))
            z = vision.pre_layrnorm(F.add(F.concat([token, patches], axis=1), clip_position_embedding(vision, grid)))
            for i in range(self.extract_layers[-1] + 1):
                z = vision.layers[i](z)
                if i in self.extract_layers:
                    found.append(z.detach())
        return found

    def prompt_embeddings(self, text_ids=None, prompt_images=None, prompt_masks=None, text_weight=0.5,
                          attention_mask=None, background: float = 0.1) -> Tensor:
        """Prompt embeddings (Q, D) without gradient: CLIP's text embeddings t of ``text_ids``
        (Q, T), its image embeddings v of ``prompt_images`` (Q, H, W, c) (with
        ``prompt_masks``, the backgrounds dimmed as :func:`visual_prompt_images` does), or
        with both alpha t + (1 - alpha) v, alpha = ``text_weight`` (a number or (Q,))."""
        self._ensure_built()
        if text_ids is None and prompt_images is None:
            raise ValueError(f"{self._label()}: prompt_embeddings needs text_ids, prompt_images or both")
        with no_grad():
            text = None if text_ids is None else self.clip.get_text_features(text_ids, attention_mask).numpy()
            visual = None
            if prompt_images is not None:
                if prompt_masks is not None:
                    prompt_images = visual_prompt_images(prompt_images, prompt_masks, background)
                visual = self.clip.get_image_features(prompt_images).numpy()
        if text is None or visual is None:
            return Tensor(backend.xp.asarray(visual if text is None else text))
        if text.shape != visual.shape:
            raise ShapeError(f"{self._label()}: {text.shape[0]} text prompts but {visual.shape[0]} image prompts; "
                             "mixing needs as many of each")
        alpha = np.asarray(text_weight, dtype=text.dtype).reshape(-1, 1)
        return Tensor(backend.xp.asarray(alpha * text + (1 - alpha) * visual))

    def forward(self, images, text_ids=None, prompt_embeds=None, attention_mask=None) -> Tensor:
        if (text_ids is None) == (prompt_embeds is None):
            raise ValueError(f"{self._label()}: give the prompts as text_ids or as prompt_embeds (exactly one)")
        self._ensure_built()
        prompt = self.prompt_embeddings(text_ids, attention_mask=attention_mask) if prompt_embeds is None \
            else as_tensor(prompt_embeds)
        images = as_tensor(images)
        return self.decoder(self.image_activations(images), prompt, grid=self.patch_grid(images.shape))

    def extra_repr(self) -> str:
        return f"extract_layers={self.extract_layers}, image_size={self.image_size}"


def clipseg(config: str = "vit_b_16", extract_layers: Sequence[int] = (3, 6, 9), reduce_dim: int = 64,
            complex_head: bool = False, **options) -> CLIPSeg:
    """CLIPSeg on :func:`~lamina.models.clip` ``(config)`` (ViT-B/16, 224 x 224, by default,
    as the published rd64 models; 'tiny' for tests); ``options`` go to :class:`CLIPSeg`.
    The ViT-B/16 decoder has 1,073,153 parameters (1,127,009 with ``complex_head``). Unbuilt."""
    return CLIPSeg(clip(config), extract_layers, reduce_dim, complex_head=complex_head, **options)


def visual_prompt_images(images, masks, background: float = 0.1) -> np.ndarray:
    """Visual prompts: images (N, H, W, c) with the pixels outside their binary masks (N, H,
    W) scaled by ``background`` (the paper's background dimming: x (m + b (1 - m)))."""
    x = np.asarray(images.numpy() if isinstance(images, Tensor) else images)
    m = np.asarray(masks, dtype=x.dtype)
    if x.ndim != 4 or m.shape != x.shape[:3]:
        raise ShapeError(f"visual_prompt_images: expected images (N, H, W, c) and masks (N, H, W), got {x.shape} "
                         f"and {m.shape}")
    return x * (m + background * (1 - m))[..., None]


def clipseg_loss(logits, masks, pos_weight=None) -> Tensor:
    """mean over pixels of -(w y log sigma(z) + (1 - y) log(1 - sigma(z))), logits z (N, H, W)
    against binary masks y; ``pos_weight`` w (1 by default) weighs the object pixels."""
    z = as_tensor(logits)
    y = np.asarray(masks, dtype=z.dtype)
    if y.shape != tuple(z.shape):
        raise ShapeError(f"clipseg_loss: the masks {y.shape} must have the logits' shape {tuple(z.shape)}")
    weight = None if pos_weight is None else np.asarray([pos_weight], dtype=z.dtype)
    return F.binary_cross_entropy_with_logits(z, y, pos_weight=weight)


def clipseg_segment(model: CLIPSeg, image, text_ids=None, prompt_embeds=None, attention_mask=None,
                    threshold: float | None = 0.5) -> np.ndarray:
    """Masks (Q, H, W) of one image (H, W, c) for Q prompts (text ids (Q, T) or embeddings
    (Q, D)): sigmoid(logits) > ``threshold``, or the probabilities when it is None. The
    image tower runs once."""
    if not isinstance(model, CLIPSeg):
        raise TypeError(f"clipseg_segment: expected a CLIPSeg model, got {type(model).__name__}")
    x = np.asarray(image.numpy() if isinstance(image, Tensor) else image)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ShapeError(f"clipseg_segment: expected one image (H, W, c), got shape {x.shape}")
    if (text_ids is None) == (prompt_embeds is None):
        raise ValueError("clipseg_segment: give the prompts as text_ids or as prompt_embeds (exactly one)")
    with no_grad():
        prompts = model.prompt_embeddings(text_ids, attention_mask=attention_mask) if prompt_embeds is None \
            else as_tensor(prompt_embeds)
        q = prompts.shape[0]
        activations = [F.broadcast_to(a, (q, *a.shape[1:])) for a in model.image_activations(x[None])]
        probabilities = F.sigmoid(model.decoder(activations, prompts, grid=model.patch_grid(x[None].shape))).numpy()
    return probabilities if threshold is None else probabilities > threshold
