"""ESRGAN (Wang et al. 2018, "Enhanced Super-Resolution Generative Adversarial Networks"): the
RRDB generator and the losses it is trained with (NHWC, any image size).

* :class:`ResidualDenseBlock` (RDB): five 3x3 convolutions with dense connections,

      x_k = LReLU(conv_k([x, x_1, ..., x_{k-1}]))   k = 1..4  (``growth`` channels each)
      x_5 = conv_5([x, x_1, ..., x_4])                          (``filters`` channels)
      RDB(x) = x + beta x_5                                    (beta = ``res_scale`` = 0.2)

  with leaky ReLUs of slope 0.2 and no batch norm.
* :class:`RRDB` (residual in residual dense block): RRDB(x) = x + beta RDB_3(RDB_2(RDB_1(x))).
* :class:`RRDBNet`: conv_first -> ``blocks`` RRDBs -> conv_body, with a skip from conv_first
  around the RRDBs and conv_body (the trunk residual), then log2(``scale``) x (nearest x2
  upsampling - conv - LReLU), conv_hr - LReLU, conv_last. :func:`rrdbnet_x4` is the published
  x4 network (64 features, 23 RRDBs, growth 32: 16,697,987 parameters), :func:`rrdbnet_tiny`
  one small enough to train on a CPU in seconds.
* :func:`esrgan_discriminator`: the VGG-style critic for 128x128 crops (ten convolutions, two
  dense layers, one logit per image).

The relativistic average discriminator (RaGAN, Jolicoeur-Martineau 2018) for a critic C
(logits): D_Ra(x_r, x_f) = sigma(C(x_r) - E_{x_f}[C(x_f)]), and

    L_D^Ra = -E_{x_r}[log D_Ra(x_r, x_f)] - E_{x_f}[log(1 - D_Ra(x_f, x_r))]
    L_G^Ra = -E_{x_r}[log(1 - D_Ra(x_r, x_f))] - E_{x_f}[log D_Ra(x_f, x_r)]

(:func:`relativistic_discriminator_loss`, :func:`relativistic_generator_loss`). The perceptual
loss compares features **before** the activation (VGG19's conv5_4 in the paper) by their mean
absolute difference (:func:`feature_l1_loss`); the generator's total is
L_G = L_percep + lambda L_G^Ra + eta L_1 with lambda = 5e-3, eta = 1e-2
(:class:`lamina.train.esrgan.ESRGANTrainer`).
"""

from __future__ import annotations

from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import concat, softplus
from lamina.models.blocks import Block, concat_shapes, nhwc, residual_sum
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.perceptual_loss import PerceptualLoss

__all__ = ["RRDB", "RRDBNet", "ResidualDenseBlock", "esrgan_discriminator", "feature_l1_loss",
           "relativistic_discriminator_loss", "relativistic_generator_loss", "rrdbnet_tiny", "rrdbnet_x4"]


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


@register_with_arguments
class ResidualDenseBlock(Block):
    """x + ``res_scale`` conv5([x, x1, .., x4]), x_k = LReLU_0.2(conv_k([x, x1, .., x_{k-1}]))
    (3x3 convolutions; conv1..conv4 give ``growth`` channels, conv5 ``filters``, the input's)."""

    default_name = "rdb"

    def __init__(self, filters: int = 64, growth: int = 32, res_scale: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        self.filters = _positive(filters, "ResidualDenseBlock: filters")
        self.growth = _positive(growth, "ResidualDenseBlock: growth")
        self.res_scale = float(res_scale)
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2D(growth, 3, padding="same", name=f"conv{k}"))
        self.conv5 = nn.Conv2D(filters, 3, padding="same", name="conv5")
        self.act = nn.LeakyReLU(0.2, name="act")

    def _convs(self) -> list:
        return [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5]

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        if shape[3] is not None and shape[3] != self.filters:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected {self.filters} "
                             f"channels (the block was made for filters={self.filters})")
        joined = shape
        for conv in self._convs()[:4]:
            joined = concat_shapes(self, [joined, step(self.act, step(conv, joined))])
        return residual_sum(self, step(self.conv5, joined), shape)

    def forward(self, x) -> Tensor:
        features = [x]
        for conv in self._convs()[:4]:
            joined = features[0] if len(features) == 1 else concat(features, axis=-1)
            features.append(self.act(conv(joined)))
        return x + self.conv5(concat(features, axis=-1)) * self.res_scale


@register_with_arguments
class RRDB(Block):
    """Residual in residual dense block: x + ``res_scale`` RDB_3(RDB_2(RDB_1(x))), each RDB
    with its own inner scaling ``res_scale``."""

    default_name = "rrdb"

    def __init__(self, filters: int = 64, growth: int = 32, res_scale: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        self.res_scale = float(res_scale)
        self.rdb1 = ResidualDenseBlock(filters, growth, res_scale, name="rdb1")
        self.rdb2 = ResidualDenseBlock(filters, growth, res_scale, name="rdb2")
        self.rdb3 = ResidualDenseBlock(filters, growth, res_scale, name="rdb3")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        return residual_sum(self, step(self.rdb3, step(self.rdb2, step(self.rdb1, shape))), shape)

    def forward(self, x) -> Tensor:
        return x + self.rdb3(self.rdb2(self.rdb1(x))) * self.res_scale


@register_with_arguments
class RRDBNet(Block):
    """ESRGAN's generator: (N, H, W, ``in_channels``) -> (N, H r, W r, ``out_channels``), r =
    ``scale`` (1, 2, 4, 8, ...). h = conv_first(x); h = h + conv_body(RRDBs(h)); per factor 2 an
    upsampling stage (nearest x2, Conv3x3, LReLU 0.2); conv_hr (Conv3x3, LReLU 0.2); conv_last."""

    default_name = "rrdbnet"

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int = 3, filters: int = 64,
                 blocks: int = 23, growth: int = 32, res_scale: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        _positive(scale, "RRDBNet: scale")
        if scale & (scale - 1):
            raise ValueError(f"RRDBNet: scale must be a power of 2 (1, 2, 4, 8), got {scale!r}")
        self.scale = scale
        self.in_channels = _positive(in_channels, "RRDBNet: in_channels")
        self.out_channels = _positive(out_channels, "RRDBNet: out_channels")
        _positive(blocks, "RRDBNet: blocks")
        self.conv_first = nn.Conv2D(filters, 3, padding="same", name="conv_first")
        self.body = nn.Sequential(*[RRDB(filters, growth, res_scale, name=str(i)) for i in range(blocks)],
                                  name="body")
        self.conv_body = nn.Conv2D(filters, 3, padding="same", name="conv_body")
        stages = []
        for i in range(scale.bit_length() - 1):
            stages += [nn.Upsample(scale_factor=2, mode="nearest", name=f"up{i}"),
                       nn.Conv2D(filters, 3, padding="same", name=f"conv_up{i}"), nn.LeakyReLU(0.2, name=f"act{i}")]
        self.upsampler = nn.Sequential(*stages, name="upsampler")
        self.conv_hr = nn.Conv2D(filters, 3, padding="same", name="conv_hr")
        self.act = nn.LeakyReLU(0.2, name="act")
        self.conv_last = nn.Conv2D(out_channels, 3, padding="same", name="conv_last")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        if shape[3] is not None and shape[3] != self.in_channels:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected "
                             f"{self.in_channels} channels (in_channels={self.in_channels})")
        features = step(self.conv_first, shape)
        features = residual_sum(self, step(self.conv_body, step(self.body, features)), features)
        if self.scale > 1:
            features = step(self.upsampler, features)
        return step(self.conv_last, step(self.act, step(self.conv_hr, features)))

    def forward(self, x) -> Tensor:
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        if self.scale > 1:
            features = self.upsampler(features)
        return self.conv_last(self.act(self.conv_hr(features)))


def rrdbnet_x4(in_channels: int = 3, out_channels: int = 3) -> RRDBNet:
    """The published ESRGAN x4 generator: 64 features, 23 RRDBs, growth 32 (16,697,987 parameters
    for RGB)."""
    return RRDBNet(4, in_channels, out_channels, filters=64, blocks=23, growth=32, name="rrdbnet_x4")


def rrdbnet_tiny(scale: int = 2, in_channels: int = 1, out_channels: int | None = None) -> RRDBNet:
    """A small RRDBNet for CPU experiments: 16 features, 2 RRDBs, growth 8."""
    return RRDBNet(scale, in_channels, in_channels if out_channels is None else out_channels, filters=16,
                   blocks=2, growth=8, name="rrdbnet_tiny")


def esrgan_discriminator(input_shape: tuple[int, int, int] = (128, 128, 3), filters: int = 64) -> nn.Sequential:
    """ESRGAN's VGG-style critic for 128x128 crops (14,499,401 parameters for RGB, counted
    from its layers): five stages,
    stage s (widths f, 2f, 4f, 8f, 8f, f = ``filters``) a Conv3x3 stride 1 and a Conv4x4 stride 2
    (padding 1), each followed by batch norm (not the very first) and LReLU 0.2 (convolutions
    before batch norm have no bias); then Flatten, Dense(100), LReLU 0.2, Dense(1): one logit.
    Height and width must be multiples of 32."""
    height, width, channels = (_positive(n, "esrgan_discriminator: input_shape") for n in input_shape)
    if height % 32 or width % 32:
        raise ValueError(f"esrgan_discriminator: height and width must be multiples of 32, got {input_shape!r}")
    layers: list = []
    for stage, width_s in enumerate((filters, 2 * filters, 4 * filters, 8 * filters, 8 * filters)):
        for kind, (kernel, stride, padding) in enumerate(((3, 1, 1), (4, 2, 1))):
            first = stage == 0 and kind == 0
            layers.append(nn.Conv2D(width_s, kernel, stride=stride, padding=padding, use_bias=first,
                                    name=f"conv{stage}_{kind}"))
            if not first:
                layers.append(nn.BatchNorm(name=f"bn{stage}_{kind}"))
            layers.append(nn.LeakyReLU(0.2, name=f"act{stage}_{kind}"))
    model = nn.Sequential(*layers, nn.Flatten(name="flatten"), nn.Dense(100, name="linear1"),
                          nn.LeakyReLU(0.2, name="act"), nn.Dense(1, name="linear2"), name="esrgan_discriminator")
    model.input_shape = (None, height, width, channels)
    return model


def _logits(value, who: str, what: str) -> Tensor:
    value = value if isinstance(value, Tensor) else Tensor(value)
    if value.ndim < 1 or value.size == 0:
        raise ShapeError(f"{who}: expected a non-empty batch of critic outputs for {what}, got shape {value.shape}")
    return value


def relativistic_discriminator_loss(real_logits, fake_logits) -> Tensor:
    """L_D^Ra = -E_r[log sigma(C(x_r) - E_f[C(x_f)])] - E_f[log(1 - sigma(C(x_f) - E_r[C(x_r)]))],
    with -log sigma(z) = softplus(-z) and -log(1 - sigma(z)) = softplus(z). ``real_logits`` and
    ``fake_logits``: the critic's raw outputs (any shape, e.g. (N, 1) or patch maps); the
    expectations are means over all their entries."""
    real = _logits(real_logits, "relativistic_discriminator_loss", "real images")
    fake = _logits(fake_logits, "relativistic_discriminator_loss", "made images")
    return softplus(fake.mean() - real).mean() + softplus(fake - real.mean()).mean()


def relativistic_generator_loss(real_logits, fake_logits) -> Tensor:
    """L_G^Ra = -E_r[log(1 - sigma(C(x_r) - E_f[C(x_f)]))] - E_f[log sigma(C(x_f) - E_r[C(x_r)])]:
    the discriminator's loss with the labels swapped, so the generator also gains from the real
    images' gradients through E_f[C(x_f)]."""
    real = _logits(real_logits, "relativistic_generator_loss", "real images")
    fake = _logits(fake_logits, "relativistic_generator_loss", "made images")
    return softplus(real - fake.mean()).mean() + softplus(real.mean() - fake).mean()


def feature_l1_loss(perceptual: PerceptualLoss, x, target) -> Tensor:
    """ESRGAN's perceptual loss: sum_j w_j mean |phi_j(x) - phi_j(target)| over the content layers
    of ``perceptual`` (a :class:`~lamina.nn.PerceptualLoss`; give it a layer before its activation,
    e.g. ``layers='conv5_4'`` of VGG19's features); ``target`` is a constant."""
    if not isinstance(perceptual, PerceptualLoss):
        raise TypeError(f"feature_l1_loss: perceptual must be a PerceptualLoss, got {type(perceptual).__name__}")
    feats = perceptual.features(x, perceptual.content_weights)
    target = target.detach() if isinstance(target, Tensor) else Tensor(target)
    targets = perceptual.features(target, perceptual.content_weights)
    total = None
    for key, weight in perceptual.content_weights.items():
        term = (feats[key] - targets[key].detach()).abs().mean() * weight
        total = term if total is None else total + term
    return Tensor(0.0) if total is None else total
