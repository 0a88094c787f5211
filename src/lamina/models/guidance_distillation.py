"""Guidance distillation (Meng et al. 2023, "On Distillation of Guided Diffusion Models", the
first stage): one student network that takes the guidance weight as an input and matches a
classifier-free-guided teacher in a single call.

A class-conditional teacher trained with label dropout (:class:`~lamina.models.DiffusionModel`)
is guided by evaluating its net twice,

    out_w(z_t, t, y) = (1 + w) out(z_t, t, y) - w out(z_t, t, no class),

in lamina's convention ``guidance_scale`` s = 1 + w: out_u + s (out_c - out_u), s = 1 the plain
conditional model. The student :class:`GuidanceDenoisingMLP` (or :class:`GuidanceDenoisingUNet`
for images) adds to its time (and class) features e(t, y) an embedding of s made like the
timestep's,

    e(t, y, s) = e(t, y) + W_2 silu(W_1 sin/cos(c s) + b_1) + b_2     (c = ``guidance_factor``),

and :class:`GuidanceDistilledDiffusion` runs it once per sampling step with s as that input.
Training (:func:`guidance_distillation_loss`) draws data x with labels y, t ~ U{0 .. T-1},
eps ~ N(0, I) and s ~ U[s_min, s_max], and minimises the mean squared error
||out_student(z_t, t, y, s) - out_w(z_t, t, y)||^2 at z_t = alpha_t x + sigma_t eps. Since x^,
eps^ and v^ are affine in the output with weights that sum to one over (out_c, out_u), matching
the guided output matches the guided x-, eps- and v-predictions alike.
:meth:`GuidanceDistilledDiffusion.from_teacher` copies the teacher's weights into the student
(W_2, b_2 start at zero, so the student starts as the conditional teacher). The second stage,
fewer sampling steps for every scale, is :func:`~lamina.models.progressive_distillation_loss`
with one scale per sample (``ProgressiveDistiller(..., scale_range=...)`` in lamina.train).
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion import DiffusionModel, class_labels
from lamina.models.diffusion_nets import DenoisingMLP, DenoisingUNet, timestep_embedding, unet_down_path
from lamina.models.progressive_distillation import check_student, noise_like
from lamina.nn import Dense
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.module import as_tensor, evaluation_mode

__all__ = ["GuidanceDenoisingMLP", "GuidanceDenoisingUNet", "GuidanceDistilledDiffusion", "guidance_distillation_loss"]


def _scales(guidance, n: int, who: str) -> np.ndarray:
    """The guidance scales as N float64 values (one number is repeated; None: 1, unguided)."""
    values = np.asarray(1.0 if guidance is None else (
        backend.to_numpy(guidance.data) if isinstance(guidance, Tensor) else guidance), dtype=np.float64)
    if values.ndim == 0:
        values = np.full(n, float(values))
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(f"{who}: the guidance scale must be one finite number or {n} of them, got "
                         f"{describe(values)}")
    return values


def _add_guidance_embedding(net, guidance_dim: int | None, guidance_factor: float) -> None:
    """Give ``net`` (a DenoisingMLP or DenoisingUNet) the layers of e_s = W_2 silu(W_1 s(c s) + b_1) + b_2."""
    who = type(net).__name__
    net.guidance_dim = positive_int(guidance_dim or net.time_dim, f"{who}: guidance_dim")
    if isinstance(guidance_factor, bool) or not isinstance(guidance_factor, numbers.Real) or not guidance_factor > 0:
        raise ValueError(f"{who}: guidance_factor must be a number > 0, got {guidance_factor!r}")
    net.guidance_factor = float(guidance_factor)
    net.guidance_in = Dense(net.embed_dim, activation="silu", name="guidance_in")
    net.guidance_out = Dense(net.embed_dim, kernel_init="zeros", name="guidance_out")


def _guidance_features(net, guidance, x: Tensor) -> Tensor:
    """W_2 silu(W_1 s(c s) + b_1) + b_2 for the N scales ``guidance`` (None: 1)."""
    scales = _scales(guidance, x.shape[0], net._label())
    table = timestep_embedding(net.guidance_factor * scales, net.guidance_dim, x.dtype)
    return net.guidance_out(net.guidance_in(Tensor._wrap(table)))


@register_with_arguments
class GuidanceDenoisingMLP(DenoisingMLP):
    """A :class:`~lamina.models.DenoisingMLP` that also takes the guidance scale s (module notes):
    ``forward(x, t, y=None, guidance=None)``, ``guidance`` one number or N (None: 1). ``guidance_dim``:
    the size of the sinusoidal embedding of c s (default ``time_dim``); ``guidance_factor``: c,
    which spreads the few units of s over the embedding's frequencies. Other arguments as
    DenoisingMLP's; its weights keep their names, so a teacher's state dict loads into it."""

    def __init__(self, hidden=(128, 128, 128), time_dim: int = 32, embed_dim: int | None = None,
                 num_classes: int | None = None, guidance_dim: int | None = None, guidance_factor: float = 10.0,
                 name: str | None = None):
        super().__init__(hidden, time_dim, embed_dim, num_classes, name)
        _add_guidance_embedding(self, guidance_dim, guidance_factor)

    def forward(self, x, t, y=None, guidance=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.features:
            raise input_error(self, x, f"(batch, {self.features}) samples")
        e = self.time_features(t, y, x) + _guidance_features(self, guidance, x)
        h = x
        for layer, projection in zip(self.layers, self.time_projections):
            h = F.silu(layer(h) + projection(e))
        return self.head(h)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", guidance_factor={self.guidance_factor}"


@register_with_arguments
class GuidanceDenoisingUNet(DenoisingUNet):
    """A :class:`~lamina.models.DenoisingUNet` that also takes the guidance scale s, added to its
    time (and class) features as in :class:`GuidanceDenoisingMLP`: ``forward(x, t, y=None,
    guidance=None)`` on NHWC images. Other arguments as DenoisingUNet's (whose weights load into
    it by name)."""

    def __init__(self, base_filters: int = 16, multipliers=(1, 2), groups: int = 8, time_dim: int | None = None,
                 embed_dim: int | None = None, num_classes: int | None = None, guidance_dim: int | None = None,
                 guidance_factor: float = 10.0, name: str | None = None):
        super().__init__(base_filters, multipliers, groups, time_dim, embed_dim, num_classes, name)
        _add_guidance_embedding(self, guidance_dim, guidance_factor)

    def forward(self, x, t, y=None, guidance=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[3] != self.channels:
            raise input_error(self, x, f"a 4-D NHWC batch (batch, height, width, {self.channels})")
        self._check_size(x.shape)
        e = self.time_features(t, y, x) + _guidance_features(self, guidance, x)
        skips, h = unet_down_path(self, self.stem(x), e)
        for level in range(len(self.up_blocks) - 1, -1, -1):
            h = self.up_blocks[level](F.concat([skips[level], h], axis=-1), e)
            if level > 0:
                h = self.up_convs[level - 1](self.upsamplers[level - 1](h))
        return self.head(F.silu(self.head_norm(h)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", guidance_factor={self.guidance_factor}"


@register_layer
class GuidanceDistilledDiffusion(DiffusionModel):
    """A :class:`~lamina.models.DiffusionModel` whose net takes the guidance scale as an input
    (called as ``net(x_t, t, y, guidance=s)``, e.g. a :class:`GuidanceDenoisingMLP`): its guided
    output with labels and ``guidance_scale`` s is one net call, so ``sample(..., labels=y,
    guidance_scale=s)`` costs one call per step instead of the teacher's two. Arguments as
    DiffusionModel's (the net needs ``num_classes``)."""

    guidance_as_input = True

    def forward(self, x_t, t, y=None, context=None, guidance=None) -> Tensor:
        if context is not None:
            raise ValueError(f"{self._label()}: takes class labels, not a context sequence")
        return self.net(x_t, t) if y is None else self.net(x_t, t, y, guidance=guidance)

    def guided_output(self, x_t, steps: np.ndarray, labels=None, guidance_scale=1.0, context=None) -> Tensor:
        """The net's output at ``x_t``, ``steps`` and ``labels`` for the scale(s) ``guidance_scale``
        (one number or N): a single call. Without labels, the unconditional output."""
        x_t = as_tensor(x_t)
        if context is not None:
            raise ValueError(f"{self._label()}.guided_output: takes class labels, not a context sequence")
        if labels is None:
            return self(x_t, steps)
        return self(x_t, steps, labels, guidance=_scales(guidance_scale, x_t.shape[0], self._label()))

    @classmethod
    def from_teacher(cls, teacher: DiffusionModel, guidance_dim: int | None = None,
                     guidance_factor: float = 10.0) -> GuidanceDistilledDiffusion:
        """A student for ``teacher`` (a trained DiffusionModel over a class-conditional
        :class:`~lamina.models.DenoisingMLP` or :class:`~lamina.models.DenoisingUNet`): a
        GuidanceDenoisingMLP or GuidanceDenoisingUNet of the same sizes holding the teacher's
        weights, on the teacher's schedule and prediction."""
        who = "GuidanceDistilledDiffusion.from_teacher"
        _check_teacher(teacher, who)
        if type(teacher.net) not in (DenoisingMLP, DenoisingUNet):
            raise TypeError(f"{who}: needs a teacher over a DenoisingMLP or a DenoisingUNet, got "
                            f"{type(teacher.net).__name__}; build a GuidanceDistilledDiffusion around your own "
                            "guidance-conditioned net instead")
        if teacher.sample_shape is None or not teacher.net.built:
            raise RuntimeError(f"{who}: the teacher is not built; train or call it first")
        net = teacher.net
        if isinstance(net, DenoisingMLP):
            student_net = GuidanceDenoisingMLP(net.hidden, net.time_dim, net.embed_dim, net.num_classes,
                                               guidance_dim, guidance_factor)
        else:
            student_net = GuidanceDenoisingUNet(net.base_filters, net.multipliers, net.groups, net.time_dim,
                                                net.embed_dim, net.num_classes, guidance_dim, guidance_factor)
        student = cls(student_net, copy.deepcopy(teacher.schedule), prediction=teacher.prediction,
                      sample_shape=teacher.sample_shape, label_dropout=0.0)
        with no_grad():
            student(np.zeros((1, *teacher.sample_shape), dtype=net.parameters()[0].dtype), np.zeros(1, np.int64),
                    np.zeros(1, np.int64))
        student_net.load_state_dict(net.state_dict(), strict=False)
        return student


def _check_teacher(teacher, who: str) -> None:
    if not isinstance(teacher, DiffusionModel):
        raise TypeError(f"{who}: the teacher must be a DiffusionModel, got {type(teacher).__name__}")
    if teacher.num_classes is None:
        raise ValueError(f"{who}: guidance distillation needs a class-conditional teacher (a net with "
                         f"num_classes, trained with label dropout); {teacher._label()}'s net "
                         f"{type(teacher.net).__name__} has no classes")


def guidance_distillation_loss(student: GuidanceDistilledDiffusion, teacher: DiffusionModel, x0, labels,
                               scale_range=(1.0, 5.0), t=None, noise=None, guidance_scale=None) -> Tensor:
    """The mean squared error between the student's one-call output at scale s and the teacher's
    guided output out_u + s (out_c - out_u) (module notes), on the data ``x0`` with class
    ``labels``. ``t``, ``noise`` and the scales ``guidance_scale`` (N values; default uniform on
    ``scale_range``) are drawn from lamina's generator unless given."""
    who = "guidance_distillation_loss"
    _check_teacher(teacher, who)
    if not isinstance(student, GuidanceDistilledDiffusion):
        raise TypeError(f"{who}: the student must be a GuidanceDistilledDiffusion (its net takes the scale), got "
                        f"{type(student).__name__}")
    check_student(student, teacher, who)
    x0 = as_tensor(x0)
    if x0.ndim < 2 or (teacher.sample_shape is not None and tuple(x0.shape[1:]) != teacher.sample_shape):
        raise ShapeError(f"{who}: got data of {describe(x0)}; the teacher makes samples of shape "
                         f"{teacher.sample_shape}")
    n, rng = x0.shape[0], backend.rng()
    y = class_labels(labels, n, teacher.num_classes, who)
    if y is None:
        raise ValueError(f"{who}: needs the data's class labels")
    low, high = (float(v) for v in scale_range)
    if not low <= high:
        raise ValueError(f"{who}: scale_range must be (low, high) with low <= high, got {scale_range!r}")
    scales = _scales(rng.uniform(low, high, n) if guidance_scale is None else guidance_scale, n, who)
    steps = rng.integers(0, teacher.num_timesteps, n) if t is None else teacher.schedule.timesteps(t, n, who)
    noise = noise_like(x0, noise, rng, who)
    z_t = teacher.schedule.q_sample(Tensor._wrap(x0.data), steps, noise)
    with no_grad(), evaluation_mode(teacher):
        both = teacher(Tensor._wrap(backend.xp.concatenate([z_t.data, z_t.data])), np.concatenate([steps, steps]),
                       np.concatenate([y, np.full(n, teacher.net.null_class)]))
    conditional, unconditional = backend.to_numpy(both.data[:n]), backend.to_numpy(both.data[n:])
    shape = (-1,) + (1,) * (x0.ndim - 1)
    target = unconditional + scales.reshape(shape) * (conditional - unconditional)
    output = student(z_t, steps, y, guidance=scales)
    if output.shape != x0.shape:
        raise ShapeError(f"{who}: the student gives {describe(output)} for data of {describe(x0)}")
    diff = output - Tensor._wrap(backend.xp.asarray(target.astype(x0.dtype)))
    return (diff * diff).mean()
