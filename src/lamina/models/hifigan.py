"""HiFi-GAN (Kong et al. 2020): a GAN vocoder turning mel spectrograms into waveforms.

Sequences are channels-last as in the rest of lamina: mel spectrograms (batch, frames,
n_mels), waveforms (batch, samples). The generator maps

    x = conv_pre(mel)                                         (kernel 7)
    for each upsampling stage i (rate u_i, kernel k_i, channels C / 2^(i + 1)):
        x = ConvTranspose(leaky_relu(x, 0.1))                 (stride u_i, padding (k_i - u_i) / 2)
        x = (1 / R) sum_j ResBlock_j(x)                       (multi-receptive-field fusion)
    wave = tanh(conv_post(leaky_relu(x, 0.01)))               (kernel 7, one channel)

so F frames give F prod(u_i) samples. ResBlock '1' repeats, for each dilation d,
x <- x + conv_1(leaky(conv_d(leaky(x)))) (a conv of dilation d then one of dilation 1);
ResBlock '2' repeats x <- x + conv_d(leaky(x)); every conv keeps the length ('same' padding
d (k - 1) / 2) and slope 0.1. The generator's convolutions carry weight normalisation
w = g v / ||v|| (g per axis-0 channel, as ``torch.nn.utils.weight_norm``'s default dim 0);
:meth:`HiFiGANGenerator.remove_weight_norm` folds it into plain weights for inference.

The discriminators each return (scores, feature maps): one score tensor per sub-discriminator
and, per sub-discriminator, the list of its activations (after each leaky ReLU, then the
output), which the feature-matching loss compares.

* :class:`PeriodDiscriminator` (period p) pads the waveform on the right by reflection to a
  multiple of p, views it as a (T / p, p) image (sample t at row t // p, column t mod p) and
  applies 2-D convolutions with (k, 1) kernels, so each column (the samples p apart) is
  convolved on its own. :class:`MultiPeriodDiscriminator` holds periods 2, 3, 5, 7, 11.
* :class:`ScaleDiscriminator` is a stack of strided, grouped 1-D convolutions;
  :class:`MultiScaleDiscriminator` runs three of them on the raw waveform and on it average
  pooled once and twice (window 4, stride 2, padding 2), the first with spectral
  normalisation and the others with weight normalisation.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import ModuleList
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "HiFiGANGenerator", "HiFiGANResBlock", "MultiPeriodDiscriminator", "MultiScaleDiscriminator",
    "NormalizedConv", "PeriodDiscriminator", "ScaleDiscriminator",
]

_KINDS = ("conv1d", "transpose1d", "period")
_NORMS = (None, "weight", "spectral")
_POWER_WARMUP = 15


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """The padding d (k - 1) / 2 that keeps a stride-1 convolution's length (odd k)."""
    return dilation * (kernel_size - 1) // 2


def _normalize(vector, eps: float = 1e-12):
    return vector / max(float(backend.xp.sqrt((vector * vector).sum())), eps)


@register_layer
class NormalizedConv(Module):
    """One convolution of the vocoders with optional weight or spectral normalisation.

    ``kind`` 'conv1d': (batch, steps, c_in) sequences, weight (c_out, k, c_in / groups);
    'transpose1d': a transposed 1-D convolution, weight (c_in, k, c_out); 'period': images
    (batch, rows, p, c_in) convolved along the rows only, weight (c_out, k, 1, c_in).
    ``norm`` 'weight' stores ``weight_v`` and the gains ``weight_g`` (one per axis-0 slice):
    w = g v / ||v||; 'spectral' stores ``weight_orig`` and divides it by sigma = u^T W v, W the
    weight as a (axis 0, rest) matrix, with u, v advanced by one power iteration per training
    call (``torch.nn.utils.spectral_norm``'s order: v <- W^T u, then u <- W v, normalised; for
    kinds 'conv1d' and 'period');
    None stores ``weight``. ``init_std`` draws the weight from N(0, init_std^2); otherwise
    U(-b, b) with b = 1 / sqrt(fan_in) as PyTorch's default. The bias is U(-b, b)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, norm: str | None = "weight",
                 init_std: float | None = None, name: str | None = None):
        super().__init__(name=name)
        if kind not in _KINDS:
            raise ValueError(f"NormalizedConv: kind must be one of {_KINDS}, got {kind!r}")
        if norm not in _NORMS:
            raise ValueError(f"NormalizedConv: norm must be one of {_NORMS}, got {norm!r}")
        self.kind, self.norm = kind, norm
        c_in = self.in_channels = positive_int(in_channels, "NormalizedConv: in_channels")
        c_out = self.out_channels = positive_int(out_channels, "NormalizedConv: out_channels")
        k = self.kernel_size = positive_int(kernel_size, "NormalizedConv: kernel_size")
        self.stride = positive_int(stride, "NormalizedConv: stride")
        self.dilation = positive_int(dilation, "NormalizedConv: dilation")
        self.groups = positive_int(groups, "NormalizedConv: groups")
        self.padding = int(padding)
        self.init_std = init_std
        if c_in % self.groups or c_out % self.groups:
            raise ValueError(f"NormalizedConv: groups={self.groups} must divide in_channels={c_in} and "
                             f"out_channels={c_out}")
        if kind == "transpose1d" and norm == "spectral":
            raise ValueError("NormalizedConv: spectral normalisation is supported for kinds 'conv1d' and 'period', "
                             "not 'transpose1d'")
        if kind != "conv1d" and self.groups != 1:
            raise ValueError(f"NormalizedConv: groups are supported for kind 'conv1d' only, got {kind!r}")
        if kind == "transpose1d":
            shape, fan_in = (c_in, k, c_out), c_out * k          # PyTorch's fan-in of (c_in, c_out, k)
        elif kind == "period":
            shape, fan_in = (c_out, k, 1, c_in), c_in * k
        else:
            shape, fan_in = (c_out, k, c_in // self.groups), c_in // self.groups * k
        dtype = backend.get_default_dtype()
        bound = 1.0 / math.sqrt(fan_in)
        init = initializers.normal(std=init_std) if init_std else initializers.uniform(bound)
        weight = init(shape, fan_in, c_out, dtype)
        self.add_parameter("bias", initializers.uniform(bound)((c_out,), fan_in, c_out, dtype))
        if norm == "weight":
            self.add_parameter("weight_g", backend.xp.sqrt((weight * weight).reshape(shape[0], -1).sum(axis=1)))
            self.add_parameter("weight_v", weight)
        elif norm == "spectral":
            self.add_parameter("weight_orig", weight)
            draw = initializers.normal(std=1.0)
            self.register_buffer("u", _normalize(draw((shape[0],), 1, 1, dtype)))
            self.register_buffer("v", _normalize(draw((weight.size // shape[0],), 1, 1, dtype)))
            self._power_iteration(_POWER_WARMUP)
        else:
            self.add_parameter("weight", weight)
        self.built = True

    def _power_iteration(self, steps: int) -> None:
        matrix = self.weight_orig.data.reshape(self.weight_orig.shape[0], -1)
        u, v = self.u, self.v
        for _ in range(steps):
            v = _normalize(matrix.T @ u)
            u = _normalize(matrix @ v)
        self.u, self.v = u, v

    def compute_weight(self) -> Tensor:
        """The weight the convolution uses (see the class docstring)."""
        if self.norm == "weight":
            v = self.weight_v
            norm = F.sqrt(F.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
            return v * (F.reshape(self.weight_g, (-1,) + (1,) * (v.ndim - 1)) / norm)
        if self.norm == "spectral":
            w = self.weight_orig
            if self.training:
                self._power_iteration(1)
            outer = backend.xp.outer(self.u, self.v).reshape(w.shape).astype(w.dtype)
            return w / F.sum(w * outer)
        return self.weight

    def remove_weight_norm(self) -> None:
        """Replace ``weight_g`` and ``weight_v`` by the plain ``weight`` they compute (a no-op
        without weight normalisation): the outputs stay the same, the forward pass gets cheaper."""
        if self.norm != "weight":
            return
        with no_grad():
            weight = self.compute_weight().data.copy()
        del self.weight_g
        del self.weight_v
        self.add_parameter("weight", weight)
        self.norm = None

    def forward(self, x):
        x = as_tensor(x)
        want = 4 if self.kind == "period" else 3
        if x.ndim != want or x.shape[-1] != self.in_channels:
            layout = "(batch, rows, period, channels)" if self.kind == "period" else "(batch, steps, channels)"
            raise ShapeError(f"{self._label()}: expected {layout} with {self.in_channels} channels last, "
                             f"got shape {tuple(x.shape)}")
        w = self.compute_weight()
        if self.kind == "conv1d":
            return F.conv1d(x, w, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                            groups=self.groups)
        if self.kind == "transpose1d":
            return F.conv_transpose1d(x, w, self.bias, stride=self.stride, padding=self.padding)
        return F.conv2d(x, w, self.bias, stride=(self.stride, 1), padding=((self.padding, self.padding), (0, 0)))

    def get_config(self) -> dict:
        return {"kind": self.kind, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "groups": self.groups, "norm": self.norm, "init_std": self.init_std,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.kind}, {self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, norm={self.norm!r}")


def _remove_weight_norms(module: Module) -> None:
    for sub in module.modules():
        if isinstance(sub, NormalizedConv):
            sub.remove_weight_norm()


@register_layer
class HiFiGANResBlock(Module):
    """A residual block of the multi-receptive-field fusion (module docstring): ``kind`` '1'
    (two convolutions per dilation, the second of dilation 1) or '2' (one per dilation), all
    of ``kernel_size`` taps over ``channels`` channels, leaky ReLU slope 0.1, weights drawn
    from N(0, 0.01^2) as the reference implementation."""

    def __init__(self, channels: int, kernel_size: int = 3, dilations=(1, 3, 5), kind: str = "1",
                 name: str | None = None):
        super().__init__(name=name)
        if str(kind) not in ("1", "2"):
            raise ValueError(f"HiFiGANResBlock: kind must be '1' or '2', got {kind!r}")
        self.kind = str(kind)
        self.channels = positive_int(channels, "HiFiGANResBlock: channels")
        self.kernel_size = positive_int(kernel_size, "HiFiGANResBlock: kernel_size")
        self.dilations = [positive_int(d, "HiFiGANResBlock: dilations") for d in dilations]
        if self.kernel_size % 2 == 0:
            raise ValueError(f"HiFiGANResBlock: kernel_size must be odd to keep the length, got {kernel_size}")

        def conv(d: int) -> NormalizedConv:
            return NormalizedConv("conv1d", channels, channels, kernel_size, padding=same_padding(kernel_size, d),
                                  dilation=d, init_std=0.01)

        self.dilated = ModuleList([conv(d) for d in self.dilations])
        if self.kind == "1":
            self.plain = ModuleList([conv(1) for _ in self.dilations])
        self.built = True

    def forward(self, x):
        for i, dilated in enumerate(self.dilated):
            h = dilated(F.leaky_relu(x, 0.1))
            if self.kind == "1":
                h = self.plain[i](F.leaky_relu(h, 0.1))
            x = x + h
        return x

    def get_config(self) -> dict:
        return {"channels": self.channels, "kernel_size": self.kernel_size, "dilations": list(self.dilations),
                "kind": self.kind, "name": self.name}


@register_layer
class HiFiGANGenerator(Module):
    """HiFi-GAN's generator: mel spectrograms (batch, frames, ``in_channels``) -> waveforms
    (batch, frames prod(upsample_rates)) in (-1, 1) (module docstring). Stage i upsamples by
    ``upsample_rates[i]`` with a transposed convolution of ``upsample_kernel_sizes[i]`` taps
    (k_i - u_i must be even) to ``upsample_initial_channel`` / 2^(i + 1) channels, then
    averages one :class:`HiFiGANResBlock` of type ``resblock`` per entry of
    ``resblock_kernel_sizes`` / ``resblock_dilation_sizes``. The V1 configuration of the paper
    is the default."""

    def __init__(self, upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
                 upsample_initial_channel: int = 512, resblock: str = "1", resblock_kernel_sizes=(3, 7, 11),
                 resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)), in_channels: int = 80,
                 name: str | None = None):
        super().__init__(name=name)
        self.upsample_rates = [positive_int(u, "HiFiGANGenerator: upsample_rates") for u in upsample_rates]
        self.upsample_kernel_sizes = [positive_int(k, "HiFiGANGenerator: upsample_kernel_sizes")
                                      for k in upsample_kernel_sizes]
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(f"HiFiGANGenerator: {len(self.upsample_rates)} upsample_rates but "
                             f"{len(self.upsample_kernel_sizes)} upsample_kernel_sizes; expected one kernel per rate")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if k < u or (k - u) % 2:
                raise ValueError(f"HiFiGANGenerator: upsample kernel {k} for rate {u} must be >= the rate with "
                                 "k - u even, so that each stage multiplies the length exactly by u")
        self.resblock_kernel_sizes = [int(k) for k in resblock_kernel_sizes]
        self.resblock_dilation_sizes = [[int(d) for d in ds] for ds in resblock_dilation_sizes]
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            raise ValueError("HiFiGANGenerator: resblock_kernel_sizes and resblock_dilation_sizes must have the same "
                             f"non-zero length, got {len(self.resblock_kernel_sizes)} and "
                             f"{len(self.resblock_dilation_sizes)}")
        self.resblock = str(resblock)
        self.upsample_initial_channel = positive_int(upsample_initial_channel,
                                                     "HiFiGANGenerator: upsample_initial_channel")
        self.in_channels = positive_int(in_channels, "HiFiGANGenerator: in_channels")
        c = self.upsample_initial_channel
        if c % 2 ** len(self.upsample_rates):
            raise ValueError(f"HiFiGANGenerator: upsample_initial_channel={c} must be divisible by "
                             f"2^{len(self.upsample_rates)} (the channels halve at each stage)")
        self.conv_pre = NormalizedConv("conv1d", self.in_channels, c, 7, padding=3)
        ups, blocks = [], []
        for i, (u, k) in enumerate(zip(self.upsample_rates, self.upsample_kernel_sizes)):
            c_out = c // 2 ** (i + 1)
            ups.append(NormalizedConv("transpose1d", c_out * 2, c_out, k, stride=u, padding=(k - u) // 2,
                                      init_std=0.01))
            blocks.extend(HiFiGANResBlock(c_out, k_r, ds, self.resblock)
                          for k_r, ds in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes))
        self.ups = ModuleList(ups)
        self.resblocks = ModuleList(blocks)
        self.conv_post = NormalizedConv("conv1d", c // 2 ** len(self.upsample_rates), 1, 7, padding=3, init_std=0.01)
        self.built = True

    @property
    def hop_length(self) -> int:
        """Samples per mel frame: the product of the upsampling rates."""
        return math.prod(self.upsample_rates)

    def forward(self, mel):
        mel = as_tensor(mel)
        if mel.ndim != 3 or mel.shape[-1] != self.in_channels:
            raise ShapeError(f"{self._label()}: expected mel spectrograms (batch, frames, {self.in_channels}), "
                             f"got shape {tuple(mel.shape)}")
        x = self.conv_pre(mel)
        n = len(self.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            fused = None
            for j in range(i * n, (i + 1) * n):
                y = self.resblocks[j](x)
                fused = y if fused is None else fused + y
            x = fused / n
        wave = F.tanh(self.conv_post(F.leaky_relu(x, 0.01)))
        return F.reshape(wave, wave.shape[:2])

    def remove_weight_norm(self) -> HiFiGANGenerator:
        """Fold every weight normalisation into plain weights (for inference); returns self."""
        _remove_weight_norms(self)
        return self

    def get_config(self) -> dict:
        return {"upsample_rates": list(self.upsample_rates), "upsample_kernel_sizes": list(self.upsample_kernel_sizes),
                "upsample_initial_channel": self.upsample_initial_channel, "resblock": self.resblock,
                "resblock_kernel_sizes": list(self.resblock_kernel_sizes),
                "resblock_dilation_sizes": [list(d) for d in self.resblock_dilation_sizes],
                "in_channels": self.in_channels, "name": self.name}


def _waveforms(module: Module, wave) -> Tensor:
    wave = as_tensor(wave)
    if wave.ndim != 2:
        raise ShapeError(f"{module._label()}: expected waveforms (batch, samples), got shape {tuple(wave.shape)}")
    return wave


def _scores_and_features(convs, conv_post, x):
    """A sub-discriminator's stack: leaky ReLU 0.1 after each of ``convs``, then ``conv_post``;
    (scores flattened per example, the feature maps of every layer)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return F.reshape(x, (x.shape[0], -1)), features


def period_view(wave, period: int) -> Tensor:
    """Waveforms (batch, T) -> images (batch, ceil(T / p), p, 1): reflect-padded on the right by
    (p - T mod p) mod p samples, sample t at row t // p and column t mod p."""
    wave = as_tensor(wave)
    batch, length = wave.shape
    extra = (-length) % period
    x = F.reshape(wave, (batch, length, 1))
    if extra:
        if extra >= length:
            raise ShapeError(f"period_view: a waveform of {length} samples is too short to reflect-pad by {extra} "
                             f"samples for period {period}; expected more than {extra} samples")
        x = F.pad1d(x, (0, extra), mode="reflect")
    return F.reshape(x, (batch, (length + extra) // period, period, 1))


@register_layer
class PeriodDiscriminator(Module):
    """One sub-discriminator of the multi-period discriminator: the waveform seen as a
    (T / p, p) image (:func:`period_view`) through 2-D convolutions of (``kernel_size``, 1)
    kernels: ``channels`` (default 32, 128, 512, 1024, 1024) with stride ``stride`` on all but
    the last, then a (3, 1) output convolution to one channel; leaky ReLU 0.1 after each
    hidden convolution. Returns (scores (batch, rows' p), feature maps)."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, channels=(32, 128, 512, 1024, 1024),
                 norm: str | None = "weight", name: str | None = None):
        super().__init__(name=name)
        self.period = positive_int(period, "PeriodDiscriminator: period")
        self.kernel_size = positive_int(kernel_size, "PeriodDiscriminator: kernel_size")
        self.stride = positive_int(stride, "PeriodDiscriminator: stride")
        self.channels = [positive_int(c, "PeriodDiscriminator: channels") for c in channels]
        self.norm = norm
        pad = same_padding(self.kernel_size)
        sizes = [1] + self.channels
        self.convs = ModuleList([
            NormalizedConv("period", c_in, c_out, self.kernel_size, self.stride if i < len(self.channels) - 1 else 1,
                           pad, norm=norm)
            for i, (c_in, c_out) in enumerate(zip(sizes[:-1], sizes[1:]))])
        self.conv_post = NormalizedConv("period", self.channels[-1], 1, 3, 1, 1, norm=norm)
        self.built = True

    def forward(self, wave):
        x = period_view(_waveforms(self, wave), self.period)
        return _scores_and_features(self.convs, self.conv_post, x)

    def get_config(self) -> dict:
        return {"period": self.period, "kernel_size": self.kernel_size, "stride": self.stride,
                "channels": list(self.channels), "norm": self.norm, "name": self.name}


class _Ensemble(Module):
    """Runs every sub-discriminator and gathers (scores, feature maps) lists."""

    def _inputs(self, wave):
        raise NotImplementedError

    def forward(self, wave):
        scores, features = [], []
        for discriminator, x in zip(self.discriminators, self._inputs(_waveforms(self, wave))):
            s, f = discriminator(x)
            scores.append(s)
            features.append(f)
        return scores, features


@register_layer
class MultiPeriodDiscriminator(_Ensemble):
    """HiFi-GAN's multi-period discriminator: one :class:`PeriodDiscriminator` per period.
    ``forward(wave)`` returns (a list of score tensors, a list of feature-map lists)."""

    def __init__(self, periods=(2, 3, 5, 7, 11), channels=(32, 128, 512, 1024, 1024), name: str | None = None):
        super().__init__(name=name)
        self.periods = [positive_int(p, "MultiPeriodDiscriminator: periods") for p in periods]
        self.channels = list(channels)
        self.discriminators = ModuleList([PeriodDiscriminator(p, channels=self.channels) for p in self.periods])
        self.built = True

    def _inputs(self, wave):
        return [wave] * len(self.discriminators)

    def get_config(self) -> dict:
        return {"periods": list(self.periods), "channels": list(self.channels), "name": self.name}


_SCALE_KERNELS = (15, 41, 41, 41, 41, 41, 5)
_SCALE_STRIDES = (1, 2, 2, 4, 4, 1, 1)


@register_layer
class ScaleDiscriminator(Module):
    """One sub-discriminator of the multi-scale discriminator (MelGAN's): 1-D convolutions of
    kernels 15, 41 x 5, 5 and strides 1, 2, 2, 4, 4, 1, 1 to ``channels`` (default 128, 128, 256,
    512, 1024, 1024, 1024) in ``groups`` (default 1, 4, 16, 16, 16, 16, 1), leaky ReLU 0.1
    after each, then a 3-tap output convolution to one channel. Returns (scores (batch, steps'),
    feature maps)."""

    def __init__(self, channels=(128, 128, 256, 512, 1024, 1024, 1024), groups=(1, 4, 16, 16, 16, 16, 1),
                 norm: str | None = "weight", name: str | None = None):
        super().__init__(name=name)
        self.channels = [positive_int(c, "ScaleDiscriminator: channels") for c in channels]
        self.groups = [positive_int(g, "ScaleDiscriminator: groups") for g in groups]
        if len(self.channels) != len(_SCALE_KERNELS) or len(self.groups) != len(_SCALE_KERNELS):
            raise ValueError(f"ScaleDiscriminator: expected {len(_SCALE_KERNELS)} channels and groups, got "
                             f"{len(self.channels)} and {len(self.groups)}")
        self.norm = norm
        sizes = [1] + self.channels
        self.convs = ModuleList([
            NormalizedConv("conv1d", c_in, c_out, k, s, same_padding(k), groups=g, norm=norm)
            for c_in, c_out, k, s, g in zip(sizes[:-1], sizes[1:], _SCALE_KERNELS, _SCALE_STRIDES, self.groups)])
        self.conv_post = NormalizedConv("conv1d", self.channels[-1], 1, 3, 1, 1, norm=norm)
        self.built = True

    def forward(self, wave):
        x = _waveforms(self, wave)
        x = F.reshape(x, (*x.shape, 1))
        return _scores_and_features(self.convs, self.conv_post, x)

    def get_config(self) -> dict:
        return {"channels": list(self.channels), "groups": list(self.groups), "norm": self.norm, "name": self.name}


@register_layer
class MultiScaleDiscriminator(_Ensemble):
    """HiFi-GAN's (MelGAN's) multi-scale discriminator: three :class:`ScaleDiscriminator` on the
    waveform, on it average pooled (window 4, stride 2, padding 2, zeros counted) and pooled
    twice; the first uses spectral normalisation, the others weight normalisation."""

    def __init__(self, channels=(128, 128, 256, 512, 1024, 1024, 1024), groups=(1, 4, 16, 16, 16, 16, 1),
                 name: str | None = None):
        super().__init__(name=name)
        self.channels, self.groups = list(channels), list(groups)
        self.discriminators = ModuleList([ScaleDiscriminator(self.channels, self.groups, norm)
                                          for norm in ("spectral", "weight", "weight")])
        self.built = True

    def _inputs(self, wave):
        inputs = [wave]
        for _ in self.discriminators[1:]:
            pooled = F.avg_pool1d(F.reshape(inputs[-1], (*inputs[-1].shape, 1)), 4, 2, padding=2)
            inputs.append(F.reshape(pooled, pooled.shape[:2]))
        return inputs

    def get_config(self) -> dict:
        return {"channels": list(self.channels), "groups": list(self.groups), "name": self.name}
