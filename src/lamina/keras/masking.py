"""Keras's masks: which time steps of a sequence are real, carried from layer to layer.

A mask is a boolean (N, T) array, True at the steps to use. Layers make one
(``Embedding(mask_zero=True)``: ids != 0; :class:`Masking`: some feature != ``mask_value``),
pass it on, or use it:

* a layer with a ``compute_mask(inputs, mask)`` method says its output's mask itself (the
  layers that make or use masks here);
* a layer that acts on each step alone keeps the mask (Keras's ``supports_masking``):
  Dense, TimeDistributed, dropout and noise layers, activations, normalizations, Rescaling,
  and any layer with ``supports_masking = True``;
* Add and Concatenate (on the feature axis) give the steps every masked input keeps;
* any other layer drops the mask (its output has none).

The mask rides along with the output tensor, as Keras's ``_keras_mask`` does, in a table
keyed by the tensor (:func:`mask_of`, :func:`set_mask`); the layers that use a mask
(recurrent layers, Bidirectional, GlobalAveragePooling1D, MultiHeadAttention) read their
input's. While a Keras model runs (:func:`tracking_masks`), every layer call inside is
intercepted to pass the masks on; a model with no layer that makes masks runs as it is.
The loss then ignores the masked steps of a sequence output (:func:`masked_loss`).
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.activation import _Elementwise
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor, intercept_calls

__all__ = ["Masking", "MaskedLoss", "mask_of", "masked_loss", "set_mask", "tracking_masks", "uses_masks"]

_MASKS: dict[int, tuple[weakref.ref, np.ndarray]] = {}

MASK_KEEPING = (nn.Dense, nn.TimeDistributed, nn.Dropout, nn.SpatialDropout1D, nn.GaussianDropout,
                nn.GaussianNoise, nn.AlphaDropout, _Elementwise, nn.LayerNorm, nn.BatchNorm)
"""Layers that act on each step alone: the output keeps the input's mask."""


def set_mask(tensor: Tensor, mask) -> None:
    """Attach the (N, T) boolean ``mask`` to ``tensor`` (None: remove it)."""
    key = id(tensor)
    if mask is None:
        _MASKS.pop(key, None)
        return
    _MASKS[key] = (weakref.ref(tensor, lambda _, key=key: _MASKS.pop(key, None)), np.asarray(mask, dtype=bool))


def mask_of(value) -> np.ndarray | None:
    """The mask attached to a tensor, or None."""
    entry = _MASKS.get(id(value))
    return entry[1] if entry is not None and entry[0]() is value else None


def _input_masks(inputs: tuple) -> list:
    first = inputs[0] if inputs else None
    if isinstance(first, (list, tuple)):
        return [mask_of(v) for v in first]
    return [mask_of(first)]


def _merged(masks: list) -> np.ndarray | None:
    """The steps that every masked input keeps (Keras's merge layers)."""
    given = [m for m in masks if m is not None]
    return np.logical_and.reduce(given) if given else None


def _output_mask(module: Module, inputs: tuple, output):
    masks = _input_masks(inputs)
    if hasattr(module, "compute_mask"):
        return module.compute_mask(inputs[0] if len(inputs) == 1 else inputs, masks[0])
    if isinstance(module, nn.Add) or (isinstance(module, nn.Concatenate) and module.axis == -1):
        return _merged(masks)
    mask = masks[0]
    keeps = isinstance(module, MASK_KEEPING) or getattr(module, "supports_masking", False)
    if mask is None or not keeps or not isinstance(output, Tensor) or tuple(output.shape[:2]) != mask.shape:
        return None
    return mask


def _pass_masks_on(module: Module, inputs: tuple, kwargs: dict, forward):
    output = forward()
    first = output[0] if isinstance(output, (list, tuple)) and output else output
    # a container's output already has its last inner layer's mask
    if isinstance(first, Tensor) and (hasattr(module, "compute_mask") or mask_of(first) is None):
        set_mask(first, _output_mask(module, inputs, output))
    return output


def uses_masks(model: Module) -> bool:
    """Whether a layer of ``model`` makes masks (``Embedding(mask_zero=True)``, Masking)."""
    return any(getattr(m, "makes_mask", False) for m in model.modules())


@contextlib.contextmanager
def tracking_masks(model: Module):
    """Within the block, masks pass from layer to layer (when ``model`` makes any)."""
    from lamina.nn.module import _CALL_INTERCEPTORS

    if _pass_masks_on in _CALL_INTERCEPTORS or not uses_masks(model):
        yield
        return
    with intercept_calls(_pass_masks_on):
        yield


# -- layers that make masks --------------------------------------------------------------------------
@register_layer(name="KerasMasking")
class Masking(Module):
    """Skip the steps whose features all equal ``mask_value``: mask = any(x != mask_value)
    over the last axis; the output is x with those steps set to 0 (Keras's Masking)."""

    makes_mask = True

    def __init__(self, mask_value: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.mask_value = float(mask_value)

    def compute_mask(self, inputs, mask=None) -> np.ndarray:
        data = np.asarray(inputs.data if isinstance(inputs, Tensor) else inputs)
        return np.any(data != self.mask_value, axis=-1)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        keep = self.compute_mask(x)[..., None].astype(x.dtype)
        return x * Tensor(backend.xp.asarray(keep))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"mask_value": self.mask_value, "name": self.name}


@register_layer(name="KerasEmbedding")
class Embedding(nn.Embedding):
    """lamina's Embedding that, with ``mask_zero=True``, masks the steps of id 0."""

    def __init__(self, *args, mask_zero: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_zero = bool(mask_zero)

    @property
    def makes_mask(self) -> bool:
        return self.mask_zero

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return np.asarray(inputs.data if isinstance(inputs, Tensor) else inputs) != 0

    def get_config(self) -> dict:
        return {**super().get_config(), "mask_zero": self.mask_zero}


# -- the loss ------------------------------------------------------------------------------------------
def masked_loss(fn, y_pred, y_true, mask: np.ndarray, reduction: str = "mean", **options):
    """Keras's loss of a masked sequence output: the per-step losses L (N, T) (each step's
    values averaged over its last axis) weighted by m (N, T), scaled to the mean over the
    unmasked steps, sum(L m) / sum(m). ``reduction="none"``: per step L m N T / sum(m), so
    that a mean over them (and the Trainer's sample weights) gives Keras's value."""
    y_pred = as_tensor(y_pred)
    n, steps = mask.shape
    labels = np.asarray(y_true)
    flat_pred = F.reshape(y_pred, n * steps, *y_pred.shape[2:])
    flat_true = labels.reshape(n * steps, *labels.shape[2:])
    per_step = F.reshape(fn(flat_pred, flat_true, reduction="none", **options), n, steps)
    valid = float(mask.sum())
    weights = mask.astype(per_step.dtype) / max(valid, 1e-7)
    if reduction == "none":
        return per_step * Tensor(weights * (n * steps))
    return (per_step * Tensor(weights)).sum()


class MaskedLoss:
    """A loss ``fn(y_pred, y_true, ...)`` that ignores the masked steps of a sequence output
    (the mask attached to ``y_pred``); as ``fn`` where the output has no mask."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "loss"))

    def __call__(self, y_pred, y_true, reduction: str = "mean", **options):
        mask = mask_of(y_pred)
        if mask is None or np.ndim(y_true) < 2:
            return self.fn(y_pred, y_true, reduction=reduction, **options)
        return masked_loss(self.fn, y_pred, y_true, mask, reduction, **options)
