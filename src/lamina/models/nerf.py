"""NeRF's radiance-field network (Mildenhall et al. 2020), in the original code's layout.

The network maps an encoded point gamma(x) and an encoded viewing direction gamma(d) to a raw
(r, g, b, sigma) (activations are applied by volume rendering, :mod:`lamina.vision.nerf.rendering`):

    h_0 = relu(W_0 gamma(x)),  h_i = relu(W_i h_(i-1)) for i < D,
        with gamma(x) joined to h_i (h_i <- [gamma(x), h_i]) after every layer i in ``skips``;
    with view directions:  sigma = w_a . h_(D-1),  f = W_f h_(D-1),
                           rgb = W_c relu(W_v [f, gamma(d)])   (the density never sees d);
    without:               (rgb, sigma) = W_o h_(D-1).

The input is one row [gamma(x), gamma(d)] of ``input_ch + input_ch_views`` values, as the original's.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.vision.nerf.encoding import encoding_size

__all__ = ["NeRF", "TinyNeRF"]


def _dense(units: int, fan_in: int, name: str, init: str = "he_uniform") -> Dense:
    layer = Dense(units, kernel_init=init, name=name)
    layer.build((None, fan_in))
    return layer


@register_layer
class NeRF(Module):
    """The NeRF MLP (module docstring): ``D`` layers of width ``W``, the encoded point joined
    again after the layers in ``skips``, and (``use_viewdirs``) a view-dependent colour branch of
    width W // 2. (N, input_ch + input_ch_views) -> raw (N, 4) = (r, g, b, sigma)."""

    def __init__(self, D: int = 8, W: int = 256, skips=(4,), input_ch: int = 63, input_ch_views: int = 27,
                 use_viewdirs: bool = True, output_ch: int = 4, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.D, self.W = positive_int(D, f"{who}: D"), positive_int(W, f"{who}: W")
        self.input_ch = positive_int(input_ch, f"{who}: input_ch")
        self.use_viewdirs = bool(use_viewdirs)
        self.input_ch_views = positive_int(input_ch_views, f"{who}: input_ch_views") if use_viewdirs else 0
        self.output_ch = positive_int(output_ch, f"{who}: output_ch")
        self.skips = tuple(int(k) for k in skips)
        if any(k < 0 or k >= D - 1 for k in self.skips):
            raise ValueError(f"{who}: every skip must name a layer in 0..D-2 = 0..{D - 2}, got {self.skips}")
        fan_in = input_ch
        for i in range(D):
            setattr(self, f"pts_linear{i}", _dense(W, fan_in, f"pts_linear{i}"))
            fan_in = W + input_ch if i in self.skips else W
        if self.use_viewdirs:
            if output_ch != 4:
                raise ValueError(f"{who}: with view directions the output is (r, g, b, sigma): output_ch must be 4, "
                                 f"got {output_ch}")
            self.feature_linear = _dense(W, W, "feature_linear", "xavier_uniform")
            self.alpha_linear = _dense(1, W, "alpha_linear", "xavier_uniform")
            self.views_linear = _dense(W // 2, W + self.input_ch_views, "views_linear")
            self.rgb_linear = _dense(3, W // 2, "rgb_linear", "xavier_uniform")
        else:
            self.output_linear = _dense(output_ch, W, "output_linear", "xavier_uniform")
        self.built = True

    @property
    def in_features(self) -> int:
        return self.input_ch + self.input_ch_views

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"{self._label()}: expected inputs of shape (N, input_ch + input_ch_views) = "
                             f"(N, {self.input_ch} + {self.input_ch_views}), got {tuple(x.shape)}")
        points = x[:, :self.input_ch]
        h = points
        for i in range(self.D):
            h = F.relu(self._modules[f"pts_linear{i}"](h))
            if i in self.skips:
                h = F.concat([points, h], axis=-1)
        if not self.use_viewdirs:
            return self.output_linear(h)
        sigma = self.alpha_linear(h)
        features = F.concat([self.feature_linear(h), x[:, self.input_ch:]], axis=-1)
        rgb = self.rgb_linear(F.relu(self.views_linear(features)))
        return F.concat([rgb, sigma], axis=-1)

    def get_config(self) -> dict:
        return {"D": self.D, "W": self.W, "skips": list(self.skips), "input_ch": self.input_ch,
                "input_ch_views": self.input_ch_views or 1, "use_viewdirs": self.use_viewdirs,
                "output_ch": self.output_ch, "name": self.name}

    def extra_repr(self) -> str:
        return (f"D={self.D}, W={self.W}, skips={self.skips}, input_ch={self.input_ch}, "
                f"input_ch_views={self.input_ch_views}, use_viewdirs={self.use_viewdirs}")


@register_layer
class TinyNeRF(NeRF):
    """A small NeRF for CPUs and tests: ``D`` = 3 layers of width 32 with a skip after layer 1,
    for points encoded with ``pos_freqs`` = 6 frequencies and directions with ``dir_freqs`` = 2
    (input_ch = 39, input_ch_views = 15)."""

    def __init__(self, D: int = 3, W: int = 32, skips=(1,), pos_freqs: int = 6, dir_freqs: int = 2,
                 use_viewdirs: bool = True, name: str | None = None):
        super().__init__(D=D, W=W, skips=skips, input_ch=encoding_size(3, pos_freqs),
                         input_ch_views=encoding_size(3, dir_freqs) if use_viewdirs else 1,
                         use_viewdirs=use_viewdirs, name=name)
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs

    def get_config(self) -> dict:
        return {"D": self.D, "W": self.W, "skips": list(self.skips), "pos_freqs": self.pos_freqs,
                "dir_freqs": self.dir_freqs, "use_viewdirs": self.use_viewdirs, "name": self.name}
