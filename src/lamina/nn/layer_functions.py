"""PyTorch's functional forms of lamina's layers (``torch.nn.functional.linear``, ``dropout``,
``batch_norm``, ``embedding``, ...): each maps PyTorch's arguments onto the op its lamina
layer runs. Users reach them through :mod:`lamina.nn.functional`.

lamina is channels-last: PyTorch's channel axis 1 is the LAST axis here, so the norms and
channel dropouts take (N, ..., C) inputs and per-channel vectors of length C. ``linear``'s
weight keeps PyTorch's layout (out_features, in_features).
"""

from __future__ import annotations

import math
import numbers

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, is_recomputing
from lamina.errors import ShapeError
from lamina.nn.bilinear import bilinear
from lamina.nn.channel_shuffle import channel_shuffle
from lamina.nn.dense import linear as _dense
from lamina.nn.dropout import DropoutFunction, dropout_mask
from lamina.nn.embedding import embedding as _embedding
from lamina.nn.instance_norm import InstanceNormFunction
from lamina.nn.module import as_tensor
from lamina.nn.noise import AlphaDropout, NoiseFunction
from lamina.nn.normalization import BatchNormFunction, LocalResponseNormFunction
from lamina.nn.sample_norm import GroupNormFunction, LayerNormFunction

__all__ = [
    "alpha_dropout", "batch_norm", "bilinear", "channel_shuffle", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "embedding", "feature_alpha_dropout", "group_norm", "instance_norm", "layer_norm", "linear",
    "local_response_norm",
]


def linear(input, weight, bias=None) -> Tensor:  # noqa: A002
    """y = x W^T + b with ``weight`` W in PyTorch's layout (out_features, in_features), over
    the last axis of x: the Dense layer's op on W^T."""
    x, w = as_tensor(input), as_tensor(weight)
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"linear: input of shape {x.shape} does not fit the weight of shape {w.shape}; expected "
                         f"(..., in_features) and (out_features, in_features)")
    return _dense(x, F.swapaxes(w, 0, 1), bias)


# -- dropout ---------------------------------------------------------------------------------


def _probability(p, op: str, one_allowed: bool = True) -> float:
    high_ok = (lambda v: v <= 1.0) if one_allowed else (lambda v: v < 1.0)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0.0 <= p and high_ok(p)):
        bound = "[0, 1]" if one_allowed else "[0, 1)"
        raise ValueError(f"{op}: p, the probability of dropping, must lie in {bound}, got {p!r}")
    return float(p)


def _float_dtype(x: Tensor):
    return x.dtype if x.dtype.kind == "f" else backend.get_default_dtype()


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Inverted dropout (:class:`lamina.nn.Dropout`'s op): each value zeroed with probability
    ``p`` and the others scaled by 1 / (1 - p) when ``training``; the identity otherwise.
    The mask comes from lamina's generator. ``inplace`` is accepted and ignored."""
    p = _probability(p, "dropout")
    x = as_tensor(input)
    if not training or p == 0.0:
        return x
    return x * 0.0 if p == 1.0 else DropoutFunction.apply(x, rate=p)


def _channel_mask_shape(x: Tensor, spatial: int, op: str) -> tuple:
    """(N, 1, ..., 1, C) for a batch, (1, ..., 1, C) for one sample: one draw per channel."""
    if x.ndim == spatial + 2:
        return (x.shape[0],) + (1,) * spatial + (x.shape[-1],)
    if x.ndim == spatial + 1:
        return (1,) * spatial + (x.shape[-1],)
    raise ShapeError(f"{op}: expected a {spatial + 2}-D batch (N, {'..., ' if spatial > 1 else ''}C) or one "
                     f"{spatial + 1}-D sample, channels last, got shape {x.shape}")


def _channel_dropout(input, p: float, training: bool, spatial: int, op: str) -> Tensor:  # noqa: A002
    p = _probability(p, op)
    x = as_tensor(input)
    shape = _channel_mask_shape(x, spatial, op)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return NoiseFunction.apply(x, scale=dropout_mask(shape, p, _float_dtype(x)), shift=None)


def dropout1d(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Dropout of whole channels of (N, L, C) sequences (or one (L, C) sequence): each
    channel of each sample is zeroed at every step with probability ``p``, the others scaled
    by 1 / (1 - p) (:class:`lamina.nn.SpatialDropout1D`'s draw)."""
    return _channel_dropout(input, p, training, 1, "dropout1d")


def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Dropout of whole channels of NHWC images (or one HWC image), as :func:`dropout1d`."""
    return _channel_dropout(input, p, training, 2, "dropout2d")


def dropout3d(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Dropout of whole channels of NDHWC volumes (or one DHWC volume), as :func:`dropout1d`."""
    return _channel_dropout(input, p, training, 3, "dropout3d")


def _alpha_dropout(input, p: float, training: bool, mask_shape, op: str) -> Tensor:  # noqa: A002
    p = _probability(p, op, one_allowed=False)
    x = as_tensor(input)
    shape = mask_shape(x)
    if not training or p == 0.0:
        return x
    return NoiseFunction.apply(x, **AlphaDropout(p).draw(shape, _float_dtype(x)))


def alpha_dropout(input, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:  # noqa: A002
    """Alpha dropout for SELU networks (:class:`lamina.nn.AlphaDropout`'s op): dropped values
    take SELU's saturation value, then an affine map keeps mean 0 and variance 1. As PyTorch,
    ``training`` defaults to False (the identity)."""
    return _alpha_dropout(input, p, training, lambda x: x.shape, "alpha_dropout")


def feature_alpha_dropout(input, p: float = 0.5, training: bool = False,  # noqa: A002
                          inplace: bool = False) -> Tensor:
    """:func:`alpha_dropout` of whole channels (the last axis): one draw per sample and
    channel, shared by every position of (N, ..., C)."""
    def per_channel(x):
        if x.ndim < 2:
            raise ShapeError(f"feature_alpha_dropout: expected (N, ..., C), channels last, got shape {x.shape}")
        return (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)

    return _alpha_dropout(input, p, training, per_channel, "feature_alpha_dropout")


# -- normalization ---------------------------------------------------------------------------


def _affine(weight, bias, shape: tuple, x: Tensor, op: str) -> tuple[Tensor, Tensor]:
    """gamma and beta as tensors of ``shape``: the given ones (checked) or constants 1 and 0."""
    xp = backend.xp
    gamma = Tensor._wrap(xp.ones(shape, dtype=x.dtype)) if weight is None else as_tensor(weight)
    beta = Tensor._wrap(xp.zeros(shape, dtype=x.dtype)) if bias is None else as_tensor(bias)
    for name, value in (("weight", gamma), ("bias", beta)):
        if value.shape != shape:
            raise ShapeError(f"{op}: {name} must have shape {shape} for the input of shape {x.shape}, got "
                             f"{value.shape}")
    return gamma, beta


def _channels(x: Tensor, op: str) -> int:
    if x.ndim < 2:
        raise ShapeError(f"{op}: expected an input (N, ..., C) with the channels last, got shape {x.shape}")
    return x.shape[-1]


def _update(running, batch, momentum: float) -> None:
    """running <- (1 - momentum) running + momentum batch, in place (PyTorch's momentum)."""
    values = running.data if isinstance(running, Tensor) else running
    values *= 1.0 - momentum
    values += momentum * batch.astype(values.dtype)


def _running(values, c: int, name: str, op: str):
    data = values.data if isinstance(values, Tensor) else values
    if tuple(data.shape) != (c,):
        raise ShapeError(f"{op}: {name} must have shape ({c},), one value per channel (the last axis), got "
                         f"{tuple(data.shape)}")
    return data


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,  # noqa: A002
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over every axis but the last (:class:`lamina.nn.BatchNorm`'s op).

    When ``training`` (or when there are no running statistics) the batch's statistics
    normalise, and ``running_mean`` / ``running_var`` (arrays or tensors of C values, or
    None) are updated in place with PyTorch's momentum: running = (1 - momentum) running +
    momentum batch, the variance unbiased. Otherwise the running statistics normalise."""
    op = "batch_norm"
    x = as_tensor(input)
    c = _channels(x, op)
    gamma, beta = _affine(weight, bias, (c,), x, op)
    if not training and running_mean is not None and running_var is not None:
        return BatchNormFunction.apply(x, gamma, beta, eps=eps, training=False,
                                       running_mean=_running(running_mean, c, "running_mean", op),
                                       running_var=_running(running_var, c, "running_var", op))
    m = x.size // c
    if m < 2:
        raise ShapeError(f"{op}: training needs more than one value per channel, got input of shape {x.shape}")
    stats: dict = {}
    y = BatchNormFunction.apply(x, gamma, beta, eps=eps, training=True, stats=stats)
    if training and not is_recomputing():
        if running_mean is not None:
            _update(_running(running_mean, c, "running_mean", op), stats["mean"], momentum)
        if running_var is not None:
            _update(_running(running_var, c, "running_var", op), stats["var"] * (m / (m - 1)), momentum)
    return y


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,  # noqa: A002
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Instance normalization of (N, ..., C): each sample's channel over its positions
    (:class:`lamina.nn.InstanceNorm2D`'s op). With ``use_input_stats`` the running statistics
    given are updated in place with the batch averages of the per-sample ones (PyTorch's
    momentum, unbiased variances); without, they normalise."""
    op = "instance_norm"
    x = as_tensor(input)
    c = _channels(x, op)
    gamma, beta = _affine(weight, bias, (c,), x, op)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: use_input_stats=False needs running_mean and running_var")
        return BatchNormFunction.apply(x, gamma, beta, eps=eps, training=False,
                                       running_mean=_running(running_mean, c, "running_mean", op),
                                       running_var=_running(running_var, c, "running_var", op))
    m = math.prod(x.shape[1:-1])
    if m < 2:
        raise ShapeError(f"{op}: expected more than one position per channel, got input of shape {x.shape}")
    if running_mean is None and running_var is None:
        return InstanceNormFunction.apply(x, gamma, beta, eps=eps)
    stats: dict = {}
    y = InstanceNormFunction.apply(x, gamma, beta, eps=eps, stats=stats)
    if not is_recomputing():
        if running_mean is not None:
            _update(_running(running_mean, c, "running_mean", op), stats["mean"].mean(axis=0), momentum)
        if running_var is not None:
            _update(_running(running_var, c, "running_var", op), (stats["var"] * (m / (m - 1))).mean(axis=0),
                    momentum)
    return y


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:  # noqa: A002
    """Layer normalization of each sample over its trailing axes ``normalized_shape``
    (:class:`lamina.nn.LayerNorm`'s op); ``weight`` and ``bias`` have that shape."""
    op = "layer_norm"
    x = as_tensor(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if not shape or x.shape[x.ndim - len(shape):] != shape:
        raise ShapeError(f"{op}: normalized_shape {shape} must be the trailing axes of the input of shape {x.shape}")
    gamma, beta = _affine(weight, bias, shape, x, op)
    return LayerNormFunction.apply(x, gamma, beta, eps=eps)


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor:  # noqa: A002
    """Group normalization of (N, ..., C): each sample's ``num_groups`` groups of C / G
    consecutive channels over all positions (:class:`lamina.nn.GroupNorm`'s op)."""
    op = "group_norm"
    x = as_tensor(input)
    c = _channels(x, op)
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1 or c % num_groups:
        raise ValueError(f"{op}: num_groups must be a positive int dividing the {c} channels, got {num_groups!r}")
    gamma, beta = _affine(weight, bias, (c,), x, op)
    return GroupNormFunction.apply(x, gamma, beta, groups=int(num_groups), eps=eps)


def local_response_norm(input, size: int, alpha: float = 1e-4, beta: float = 0.75,  # noqa: A002
                        k: float = 1.0) -> Tensor:
    """AlexNet's normalization across ``size`` neighbouring channels (the last axis):
    b_c = a_c / (k + alpha / size sum a_c'^2)^beta (:class:`lamina.nn.LocalResponseNorm`'s op)."""
    x = as_tensor(input)
    _channels(x, "local_response_norm")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    return LocalResponseNormFunction.apply(x, size=int(size), alpha=float(alpha), beta=float(beta), k=float(k))


# -- embedding -------------------------------------------------------------------------------


def embedding(input, weight, padding_idx: int | None = None, max_norm: float | None = None,  # noqa: A002
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """The rows of ``weight`` (W, A) for integer ids ``input``: shape ids.shape + (A,)
    (:func:`lamina.nn.embedding`); the row ``padding_idx`` gets no gradient. With
    ``max_norm`` the rows looked up whose ``norm_type``-norm exceeds it are first rescaled to
    it in place (by max_norm / (norm + 1e-7), as PyTorch). ``sparse`` is accepted (lamina's
    gradients are dense); ``scale_grad_by_freq`` is not supported."""
    if scale_grad_by_freq:
        raise ValueError("embedding: scale_grad_by_freq=True is not supported")
    if max_norm is not None:
        _renormalize_rows(input, weight, float(max_norm), float(norm_type))
    return _embedding(input, weight, padding_idx=padding_idx)


def _renormalize_rows(ids, weight, max_norm: float, norm_type: float) -> None:
    xp = backend.xp
    table = weight.data if isinstance(weight, Tensor) else weight
    rows = xp.unique(xp.asarray(ids.data if isinstance(ids, Tensor) else ids).reshape(-1))
    norms = xp.linalg.norm(table[rows], ord=norm_type, axis=1)  # the p-norm for any p, inf and 0 included
    too_long = norms > max_norm
    table[rows[too_long]] *= (max_norm / (norms[too_long] + 1e-7))[:, None].astype(table.dtype)
