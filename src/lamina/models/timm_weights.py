"""Loading timm state dicts (PyTorch, NCHW) into the zoo models named as timm names them:
MLP-Mixer and ResMLP (:mod:`lamina.models.mlp_mixer`), ConvMixer
(:mod:`lamina.models.convmixer`) and DeiT (:mod:`lamina.models.deit`).

The keys are the same on both sides; only the layouts differ, as for torchvision's weights
(:func:`~lamina.models.load_torchvision_state_dict` does the conversion): convolution weights
(out, in / groups, f_h, f_w) -> (K, f_h, f_w, c_in / groups), ``Linear`` weights (out, in) ->
Dense (in, out); class and distillation tokens, position embeddings, ResMLP's Affine
``alpha`` / ``beta`` and layer scales and the BatchNorm statistics are copied as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.errors import ShapeError
from lamina.models.torchvision import load_torchvision_state_dict
from lamina.nn.module import Module

__all__ = ["load_timm_state_dict"]


def load_timm_state_dict(model: Module, state_dict: Mapping, strict: bool = True) -> None:
    """Copy a timm ``state_dict`` (tensors or arrays) into ``model``, converting NCHW
    convolution and Linear layouts to lamina's. ``strict`` and the errors are those of
    :func:`~lamina.models.load_torchvision_state_dict`: missing or unexpected keys raise a
    KeyError, mis-shaped values a ShapeError, and nothing is copied unless every check passes."""
    try:
        load_torchvision_state_dict(model, state_dict, strict=strict)
    except (KeyError, ShapeError, RuntimeError) as exc:
        message = str(exc.args[0]) if exc.args else ""
        raise type(exc)(message.replace("load_torchvision_state_dict", "load_timm_state_dict")) from None
