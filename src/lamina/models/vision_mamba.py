"""Vision Mamba (Zhu et al. 2024, "Vision Mamba: Efficient Visual Representation Learning with
Bidirectional State Space Model", Vim): a ViT whose attention blocks are replaced by
bidirectional Mamba mixers.

    t_0 = [x_1 W; ...; x_{M/2} W; t_cls; x_{M/2+1} W; ...; x_M W] + E_pos   (class token in the middle)
    t_l = t_{l-1} + Vim(norm(t_{l-1}))                                    (norm: RMSNorm, eps 1e-5)
    y   = head(norm_f(t_L)[cls])

A Vim mixer (:class:`VimMixer`, the released code's ``bimamba_type='v2'``) projects the tokens
once, [x, z] = in_proj(t), and scans x in both directions with separate weights (convolution,
``x_proj``, ``dt_proj``, A, D for the forward scan; the same with a ``_b`` suffix for the
backward one), each scan a Mamba branch (:func:`lamina.functional.selective_scan`):

    y_f = SSM_f(silu(conv_f(x)))                      (causal depthwise conv, the scan forwards)
    y_b = flip(SSM_b(silu(conv_b(flip(x)))))          (the same on the reversed sequence)
    out = out_proj((y_f + y_b) silu(z) / 2)           (``divide_out``: the released models halve it)

With ``bimamba=False`` only the forward scan runs: a token then sees only the tokens before it,
so a class token at the head of the sequence sees nothing of the image (the reason for the
middle class token and the backward scan). ``cls_position``: 'middle' (the paper's), 'head'
(ViT's), or no class token at all and the head reading the last token ('none') or the mean
of the tokens ('mean').

Presets (16x16 patches, 224x224x3 images, 1000 classes, d_state 16, expand 2, RMSNorm, the
middle class token; the released models' layout): :func:`vim_tiny` (dim 192, 24 blocks):
7,148,008 parameters (the paper: 7M); :func:`vim_small` (dim 384, 24 blocks): 25,796,584 (26M).
Sub-layer and parameter names are those of the released code (``patch_embed.proj``,
``pos_embed``, ``cls_token``, ``layers.N.norm``, ``layers.N.mixer.in_proj`` ... ``A_b_log``,
``norm_f``, ``head``).
"""

from __future__ import annotations

import math

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.selective_scan import selective_scan
from lamina.models.blocks import Block, check_input, finish
from lamina.models.deit import _embed_patches, _patch_embedding, _patch_image_shape, _tokens_shape
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, pair, positive_int
from lamina.nn.mamba import inverse_softplus_time_steps
from lamina.nn.module import Module, as_tensor

__all__ = ["CLS_POSITIONS", "VIM_CONFIGS", "VimBlock", "VimMixer", "VisionMamba", "vim_small", "vim_tiny",
           "vision_mamba_parameter_count"]

CLS_POSITIONS = ("middle", "head", "none", "mean")
POSITION_STD = 0.02
NORMS = ("rms", "layer")

# variant -> (dim, depth); 16x16 patches, d_state 16, expand 2
VIM_CONFIGS: dict[str, tuple[int, int]] = {"tiny": (192, 24), "small": (384, 24)}

_DIRECTIONS = {"forward": "", "backward": "_b"}


def _torch_linear(fan_in: int):
    """PyTorch's default ``Linear`` initialisation, U(+-1/sqrt(fan_in))."""
    return initializers.uniform(1 / math.sqrt(fan_in))


def causal_depthwise_conv(x, conv: nn.Conv1D) -> Tensor:
    """A depthwise causal convolution over the steps of x (N, L, C) with ``conv``'s weight
    (C, k, 1) and optional bias: out_t = sum_i w[:, i] x_{t-k+1+i} (+ b), zeros before the start."""
    k, steps = conv.weight.shape[1], x.shape[1]
    if k > 1:
        x = F.concat([Tensor._wrap(backend.xp.zeros((x.shape[0], k - 1, x.shape[2]), dtype=x.dtype)), x], axis=1)
    out = None
    for i in range(k):
        term = x[:, i:i + steps] * conv.weight[:, i, 0]
        out = term if out is None else out + term
    return out + conv.bias if conv.use_bias else out


@register_with_arguments
class VimMixer(Block):
    """The bidirectional Mamba mixer of Vim on tokens (N, L, ``dim``) -> (N, L, dim) (formulas
    in the module docstring). I = ``expand`` dim inner channels, ``d_state`` S, ``d_conv`` the
    convolution's kernel, ``dt_rank`` ('auto': ceil(dim / 16)). ``bimamba=False`` keeps the
    forward scan only (no ``_b`` weights); ``divide_out`` halves the sum of the two scans.

    Initialisation as mamba_ssm's ``Mamba``: the projections U(+-1/sqrt(fan_in)) (PyTorch's
    ``Linear``), dt_proj.weight U(+-dt_rank^-1/2), softplus(dt_proj.bias) log-uniform in
    [``dt_min``, ``dt_max``], A_log = log(1..S), D = 1, the convolutions U(+-1/sqrt(d_conv)),
    for each direction."""

    default_name = "mixer"

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank="auto",
                 bimamba: bool = True, divide_out: bool = True, dt_min: float = 0.001, dt_max: float = 0.1,
                 name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "VimMixer: dim")
        self.d_state = positive_int(d_state, "VimMixer: d_state")
        self.d_conv = positive_int(d_conv, "VimMixer: d_conv")
        self.expand = positive_int(expand, "VimMixer: expand")
        self.inner = self.expand * self.dim
        self.dt_rank = positive_int(math.ceil(self.dim / 16) if dt_rank == "auto" else dt_rank, "VimMixer: dt_rank")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"VimMixer: expected 0 < dt_min <= dt_max, got {dt_min!r} and {dt_max!r}")
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.bimamba, self.divide_out = bool(bimamba), bool(divide_out)
        inner = self.inner
        self.in_proj = nn.Dense(2 * inner, use_bias=False, kernel_init=_torch_linear(self.dim), name="in_proj")
        for suffix in self._suffixes():
            setattr(self, "conv1d" + suffix, nn.Conv1D(inner, self.d_conv, padding="causal", groups=inner,
                                                       kernel_init=initializers.uniform(1 / math.sqrt(self.d_conv)),
                                                       name="conv1d" + suffix))
            setattr(self, "x_proj" + suffix, nn.Dense(self.dt_rank + 2 * self.d_state, use_bias=False,
                                                      kernel_init=_torch_linear(inner), name="x_proj" + suffix))
            setattr(self, "dt_proj" + suffix, nn.Dense(inner, kernel_init=initializers.uniform(self.dt_rank ** -0.5),
                                                       name="dt_proj" + suffix))
        self.out_proj = nn.Dense(self.dim, use_bias=False, kernel_init=_torch_linear(inner), name="out_proj")

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_b") if self.bimamba else ("",)

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        step(self.in_proj, shape)
        inner = shape[:2] + (self.inner,)
        for suffix in self._suffixes():
            step(getattr(self, "conv1d" + suffix), inner)
            step(getattr(self, "x_proj" + suffix), inner)
            step(getattr(self, "dt_proj" + suffix), shape[:2] + (self.dt_rank,))
        return step(self.out_proj, inner)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype, xp = backend.get_default_dtype(), backend.xp
        for suffix in self._suffixes():
            if initializers.is_meta():
                a_log = initializers.meta_array((self.inner, self.d_state), dtype)
                d = initializers.meta_array((self.inner,), dtype)
            else:
                getattr(self, "dt_proj" + suffix).bias.data = inverse_softplus_time_steps(
                    self.inner, self.dt_min, self.dt_max, 1e-4, dtype)
                a = xp.log(xp.arange(1, self.d_state + 1, dtype=dtype))
                a_log = xp.ascontiguousarray(xp.broadcast_to(a, (self.inner, self.d_state)))
                d = xp.ones(self.inner, dtype=dtype)
            self.add_parameter("A_log" if not suffix else "A_b_log", a_log)
            self.add_parameter("D" + suffix, d)

    def scan(self, hidden, gate, direction: str = "forward") -> Tensor:
        """One direction's branch on the projected x (N, L, I) gated by silu(z) (N, L, I):
        SSM(silu(conv(x))) silu(z) with that direction's weights; 'backward' flips x and z
        along the steps, scans and flips back."""
        if direction not in _DIRECTIONS or (direction == "backward" and not self.bimamba):
            raise ValueError(f"{self._label()}: direction must be one of {self._directions()}, got {direction!r}")
        suffix = _DIRECTIONS[direction]
        if suffix:
            hidden, gate = F.flip(hidden, 1), F.flip(gate, 1)
        x = F.silu(causal_depthwise_conv(hidden, getattr(self, "conv1d" + suffix)))
        rank, states = self.dt_rank, self.d_state
        parameters = getattr(self, "x_proj" + suffix)(x)
        dt, b, c = parameters[..., :rank], parameters[..., rank:rank + states], parameters[..., rank + states:]
        dt_proj = getattr(self, "dt_proj" + suffix)
        a = -F.exp(getattr(self, "A_b_log" if suffix else "A_log"))
        y = selective_scan(x, F.matmul(dt, dt_proj.weight), a, b, c, D=getattr(self, "D" + suffix), z=gate,
                           delta_bias=dt_proj.bias, delta_softplus=True)
        return F.flip(y, 1) if suffix else y

    def _directions(self) -> tuple[str, ...]:
        return ("forward", "backward") if self.bimamba else ("forward",)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.dim or x.shape[1] < 1:
            raise input_error(self, x, f"tokens (batch, length, {self.dim}) with at least one token")
        projected = self.in_proj(x)
        hidden, gate = projected[..., :self.inner], projected[..., self.inner:]
        out = self.scan(hidden, gate, "forward")
        if self.bimamba:
            out = F.add(out, self.scan(hidden, gate, "backward"))
            if self.divide_out:
                out = F.mul(out, 0.5)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, d_state={self.d_state}, d_conv={self.d_conv}, inner={self.inner}, "
                f"dt_rank={self.dt_rank}, bimamba={self.bimamba}")


def _norm(kind: str, eps: float, who: str, name: str) -> Module:
    if kind not in NORMS:
        raise ValueError(f"{who}: norm must be one of {NORMS}, got {kind!r}")
    return nn.RMSNorm(axes=1, eps=eps, name=name) if kind == "rms" else nn.LayerNorm(-1, eps=eps, name=name)


@register_with_arguments
class VimBlock(Block):
    """One residual Vim block on tokens (N, L, ``dim``): t + drop_path(mixer(norm(t))), ``norm``
    an RMSNorm (``norm='rms'``, the released models') or a LayerNorm ('layer') of epsilon
    ``eps``, ``mixer`` a :class:`VimMixer` (``mixer_options`` go to it). The released code's
    add-then-norm with a separate residual stream computes the same."""

    default_name = "vim_block"

    def __init__(self, dim: int, norm: str = "rms", eps: float = 1e-5, drop_path: float = 0.0,
                 name: str | None = None, **mixer_options):
        super().__init__(name=name)
        self.dim = positive_int(dim, "VimBlock: dim")
        self.norm = _norm(norm, float(eps), "VimBlock", "norm")
        self.mixer = VimMixer(dim, name="mixer", **mixer_options)
        self.drop_path = nn.StochasticDepth(drop_path, "row", name="drop_path")

    def trace(self, shape, step):
        shape = _tokens_shape(self, shape, self.dim)
        return step(self.drop_path, step(self.mixer, step(self.norm, shape)))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        return F.add(x, self.drop_path(self.mixer(self.norm(x))))


@register_with_arguments
class VisionMamba(Block):
    """Vision Mamba on (N, H, W, C) images of ``image_size`` (H, W), multiples of ``patch_size``
    (formulas in the module docstring): ``patch_embed`` (a Conv2D ``proj`` of kernel = stride =
    patch_size, flattened to M patch tokens), the class token inserted at ``cls_position``,
    ``pos_embed`` (1, M + 1, dim) (M without a class token) added, ``depth`` :class:`VimBlock`
    (``layers``), ``norm_f``, and ``head`` on the class token (the last token for 'none', the
    mean for 'mean'). ``d_state``, ``expand``, ``d_conv``, ``bimamba``, ``divide_out`` go to
    every :class:`VimMixer`; ``drop_path`` rises linearly from 0 to that rate over the blocks.
    Each out_proj starts divided by sqrt(depth) (mamba_ssm's prenorm residual rescaling)."""

    default_name = "vision_mamba"

    def __init__(self, image_size, patch_size: int, dim: int, depth: int, num_classes: int, d_state: int = 16,
                 expand: int = 2, bimamba: bool = True, cls_position: str = "middle", channels: int = 3,
                 d_conv: int = 4, norm: str = "rms", eps: float = 1e-5, divide_out: bool = True,
                 drop_path: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.image_size = pair(image_size, "VisionMamba: image_size")
        self.patch_size = positive_int(patch_size, "VisionMamba: patch_size")
        h, w = self.image_size
        if min(h, w) < 1 or h % self.patch_size or w % self.patch_size:
            raise ValueError(f"VisionMamba: the image size {(h, w)} must be a multiple of the patch size "
                             f"{self.patch_size}")
        if cls_position not in CLS_POSITIONS:
            raise ValueError(f"VisionMamba: cls_position must be one of {CLS_POSITIONS}, got {cls_position!r}")
        self.cls_position = cls_position
        self.dim = positive_int(dim, "VisionMamba: dim")
        self.depth = positive_int(depth, "VisionMamba: depth")
        self.num_classes = positive_int(num_classes, "VisionMamba: num_classes")
        self.channels = positive_int(channels, "VisionMamba: channels")
        self.num_patches = (h // self.patch_size) * (w // self.patch_size)
        self.num_tokens = self.num_patches + (1 if self.has_cls_token else 0)
        self.patch_embed = _patch_embedding(dim, self.patch_size)
        rates = [float(drop_path) * k / max(1, depth - 1) for k in range(depth)]
        self.layers = nn.Sequential(*[VimBlock(dim, norm, eps, rates[k], d_state=d_state, expand=expand,
                                               d_conv=d_conv, bimamba=bimamba, divide_out=divide_out, name=str(k))
                                      for k in range(depth)], name="layers")
        self.norm_f = _norm(norm, float(eps), "VisionMamba", "norm_f")
        self.head = nn.Dense(num_classes, kernel_init=initializers.truncated_normal(POSITION_STD), name="head")
        finish(self, (h, w, self.channels))

    @property
    def has_cls_token(self) -> bool:
        return self.cls_position in ("middle", "head")

    @property
    def cls_index(self) -> int | None:
        """Where the class token sits in the sequence (None without one)."""
        return {"middle": self.num_patches // 2, "head": 0}.get(self.cls_position)

    def _image_shape(self, shape):
        shape = _patch_image_shape(self, shape)
        if tuple(shape[1:]) != (*self.image_size, self.channels):
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; expected (batch, "
                             f"{self.image_size[0]}, {self.image_size[1]}, {self.channels}) as the model was made for")
        return shape

    def trace(self, shape, step):
        patches = step(self.patch_embed, self._image_shape(shape))
        tokens = step(self.norm_f, step(self.layers, (patches[0], self.num_tokens, self.dim)))
        return step(self.head, (tokens[0], self.dim))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d, normal, dtype = self.dim, initializers.truncated_normal(POSITION_STD), backend.get_default_dtype()
        self.add_parameter("pos_embed", normal((1, self.num_tokens, d), self.num_tokens, d, dtype))
        if self.has_cls_token:
            self.add_parameter("cls_token", normal((1, 1, d), d, d, dtype))
        if not initializers.is_meta():
            for block in self.layers:
                weight = block.mixer.out_proj.weight
                weight.data = weight.data / math.sqrt(self.depth)

    def tokens(self, x) -> Tensor:
        """The input sequence t_0 (N, L, dim): patch tokens, the class token at its place, plus
        the position embeddings."""
        x = as_tensor(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.image_size, self.channels):
            raise input_error(self, x, f"images (batch, {self.image_size[0]}, {self.image_size[1]}, "
                                       f"{self.channels}) in {self.patch_size}x{self.patch_size} patches")
        patches = _embed_patches(self, x)
        if self.has_cls_token:
            cls = F.broadcast_to(self.cls_token, (patches.shape[0], 1, self.dim))
            k = self.cls_index
            patches = F.concat([patches[:, :k], cls, patches[:, k:]], axis=1)
        return F.add(patches, self.pos_embed)

    def forward_features(self, x) -> Tensor:
        """The normalized final tokens norm_f(t_L) (N, L, dim)."""
        return self.norm_f(self.layers(self.tokens(x)))

    def forward(self, x) -> Tensor:
        features = self.forward_features(x)
        if self.cls_position == "mean":
            pooled = F.mean(features, axis=1)
        else:
            pooled = features[:, self.num_tokens - 1 if self.cls_index is None else self.cls_index]
        return self.head(pooled)

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, patch_size={self.patch_size}, dim={self.dim}, depth={self.depth}, "
                f"cls_position={self.cls_position!r}")


def vision_mamba_parameter_count(dim: int, depth: int, num_classes: int = 1000, image_size: int = 224,
                                 patch_size: int = 16, channels: int = 3, d_state: int = 16, expand: int = 2,
                                 d_conv: int = 4, bimamba: bool = True, cls_token: bool = True) -> int:
    """The parameters of :class:`VisionMamba` by formula, without building it: patch embedding
    p^2 C D + D, positions (M + 1) D, class token D, per block D (norm) + 2 D I (in_proj) + I D
    (out_proj) + per direction (I k + I (conv) + I (R + 2 S) (x_proj) + R I + I (dt_proj) + I S
    (A_log) + I (D)), then D (norm_f) and the head D K + K; I = expand D, R = ceil(D / 16)."""
    inner, rank = expand * dim, math.ceil(dim / 16)
    direction = inner * (d_conv + 1) + inner * (rank + 2 * d_state) + rank * inner + inner + inner * d_state + inner
    block = dim + 3 * dim * inner + (2 if bimamba else 1) * direction
    tokens = (image_size // patch_size) ** 2 + (1 if cls_token else 0)
    embedding = patch_size * patch_size * channels * dim + dim + tokens * dim + (dim if cls_token else 0)
    return embedding + depth * block + dim + dim * num_classes + num_classes


def _variant(variant: str, num_classes: int, input_shape, options: dict) -> VisionMamba:
    dim, depth = VIM_CONFIGS[variant]
    h, w, c = check_input(input_shape, f"vim_{variant}")
    return VisionMamba((h, w), 16, dim, depth, num_classes, channels=c, name=f"vim_{variant}", **options)


def vim_tiny(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), **options) -> VisionMamba:
    """Vim-Ti: dim 192, 24 blocks, 16x16 patches; 7,148,008 parameters with 1000 classes at
    224x224x3 (the paper: 7M). ``options`` go to :class:`VisionMamba`. Unbuilt."""
    return _variant("tiny", num_classes, input_shape, options)


def vim_small(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), **options) -> VisionMamba:
    """Vim-S: dim 384, 24 blocks, 16x16 patches; 25,796,584 parameters with 1000 classes at
    224x224x3 (the paper: 26M). ``options`` go to :class:`VisionMamba`. Unbuilt."""
    return _variant("small", num_classes, input_shape, options)
