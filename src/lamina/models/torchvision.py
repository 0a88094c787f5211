"""Loading torchvision-style state dicts (PyTorch, NCHW) into the NHWC zoo models.

The zoo models name their layers as torchvision does ('features.0', 'layer1.0.conv1',
'inception3a.branch2.1.conv', 'Mixed_5b.branch_pool.bn', 'fc', ...), so a torchvision key
is the lamina key; only the layouts differ:

* convolution weights: PyTorch (out, in / groups, f_h, f_w) -> lamina (K, f_h, f_w, c_in / groups);
  3-D ones (out, in / groups, f_d, f_h, f_w) -> (K, f_d, f_h, f_w, c_in / groups);
* ``Linear`` weights: (out, in) -> Dense (in, out);
* the first Linear after a flatten of a C x H x W feature map (VGG's classifier.0,
  GoogLeNet's auxiliary fc1) reads its inputs in (C, H, W) order while lamina's Flatten of
  an NHWC map gives (H, W, C): its input rows are permuted accordingly;
* BatchNorm ``weight``, ``bias``, ``running_mean``, ``running_var`` are copied as they are;
  ``num_batches_tracked`` is ignored;
* a per-channel parameter that PyTorch keeps as (C, 1, 1) to broadcast over an NCHW map
  (ConvNeXt's ``layer_scale``) is (C,) in lamina: a layer names such parameters in its
  ``torch_channel_parameters`` attribute;
* a parameter or buffer that has PyTorch's shape already though it has 4 axes (Swin V2's
  ``relative_coords_table``) is copied as it is: a layer names such arrays in its
  ``torch_unchanged`` attribute.

Values may be NumPy arrays or torch tensors (converted with ``.detach().cpu().numpy()``;
torch itself is never imported here).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn import Dense, Flatten
from lamina.nn.module import Module

__all__ = ["flatten_inputs", "load_torchvision_state_dict", "to_numpy"]

IGNORED_SUFFIXES = ("num_batches_tracked",)


def to_numpy(value) -> np.ndarray:
    """A NumPy array from an array-like or a torch tensor (without importing torch)."""
    if all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy")):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":      # NumPy has no bfloat16: widen (exactly) to float32
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def flatten_inputs(model: Module, input_shape=None) -> dict[int, tuple[int, int, int]]:
    """For every Dense layer fed by a Flatten of a 4-D (N, h, w, c) map: ``id(dense) -> (h, w, c)``.

    Found by shape inference: ``model.compute_output_shape`` is run with the Flatten and Dense
    layers' shape inference temporarily instrumented, so whatever the nesting of blocks the
    first Dense met after a Flatten is paired with the volume that Flatten received.
    """
    shape = input_shape if input_shape is not None else model.build_input_shape
    if shape is None:
        shape = getattr(model, "input_shape", None)
    if shape is None:
        raise RuntimeError(f"flatten_inputs: the input shape of {model._label()} is unknown; build the model first")
    found: dict[int, tuple[int, int, int]] = {}
    pending: list = [None]
    patched: list[Module] = []

    def instrument(layer: Module, is_flatten: bool) -> None:
        original = layer.compute_output_shape

        def traced(s):
            s = tuple(s)
            if is_flatten:
                pending[0] = s[1:] if len(s) == 4 else None
            else:
                if pending[0] is not None:
                    found[id(layer)] = pending[0]
                pending[0] = None
            return original(s)

        layer.compute_output_shape = traced
        patched.append(layer)

    for module in model.modules():
        if isinstance(module, (Flatten, Dense)):
            instrument(module, isinstance(module, Flatten))
    try:
        model.compute_output_shape(tuple(shape))
    finally:
        for layer in patched:
            layer.__dict__.pop("compute_output_shape", None)
    return found


def _is_channel_parameter(module: Module, attr: str) -> bool:
    return attr in getattr(module, "torch_channel_parameters", ())


def _is_unchanged(module: Module, attr: str) -> bool:
    return attr in getattr(module, "torch_unchanged", ())


def _expected_torch_shape(module: Module, attr: str, shape: tuple, chw) -> tuple:
    if _is_unchanged(module, attr):
        return tuple(shape)
    if _is_channel_parameter(module, attr):  # (C,) -> (C, 1, 1)
        return (*shape, 1, 1)
    if len(shape) == 4:  # (K, fh, fw, cg) -> (K, cg, fh, fw)
        return (shape[0], shape[3], shape[1], shape[2])
    if len(shape) == 5:  # Conv3D (K, fd, fh, fw, cg) -> (K, cg, fd, fh, fw)
        return (shape[0], shape[4], *shape[1:4])
    if isinstance(module, Dense) and attr == "weight":
        return (shape[1], shape[0])
    return tuple(shape)


def _convert(module: Module, attr: str, value: np.ndarray, chw) -> np.ndarray:
    if _is_unchanged(module, attr):
        return value
    if _is_channel_parameter(module, attr):
        return value.reshape(value.shape[:-2])
    if value.ndim == 4:
        return value.transpose(0, 2, 3, 1)
    if value.ndim == 5:
        return value.transpose(0, 2, 3, 4, 1)
    if isinstance(module, Dense) and attr == "weight":
        if chw is not None and chw[0] * chw[1] > 1:
            h, w, c = chw
            out = value.shape[0]
            # torch input index c*h*w + y*w + x -> lamina index (y*w + x)*c + c'
            return value.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)
        return value.T
    return value


def load_torchvision_state_dict(model: Module, state_dict: Mapping, strict: bool = True) -> None:
    """Copy a torchvision-style ``state_dict`` into a zoo ``model`` (VGG, ResNet, the CIFAR
    ResNets with option-B shortcuts, GoogLeNet, Inception-v3, or any model named the same
    way), converting NCHW layouts to NHWC (see the module docstring).

    An unbuilt model is built first for ``model.input_shape``. Every parameter and buffer
    of the model must be in the dict and every key of the dict (but ``num_batches_tracked``)
    must be used, else a KeyError lists the missing and unexpected keys; ``strict=False``
    loads the keys both sides have and ignores the rest. A value whose shape does not match
    raises :class:`lamina.ShapeError` naming the key, its shape and the expected PyTorch
    shape. Nothing is copied unless every check passes.
    """
    if not model.built:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise RuntimeError(f"load_torchvision_state_dict: {model._label()} has no weights yet; build it "
                               "first (model.build((None, height, width, channels)))")
        model.build(tuple(shape))
        model.built = True
    arrays = {k: v for k, v in state_dict.items() if not str(k).endswith(IGNORED_SUFFIXES)}
    slots = model._state_slots()
    needs_chw = any(isinstance(m, Flatten) for m in model.modules())
    chw_of = flatten_inputs(model) if needs_chw else {}
    missing = [k for k in slots if k not in arrays]
    unexpected = [k for k in arrays if k not in slots]
    if strict and (missing or unexpected):
        raise KeyError(f"load_torchvision_state_dict: missing keys {missing}, unexpected keys {unexpected} "
                       f"(model {model._label()})")
    values: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for key, (module, attr, current) in slots.items():
        if key not in arrays:
            continue
        value = to_numpy(arrays[key])
        expected = _expected_torch_shape(module, attr, tuple(current.shape), chw_of.get(id(module)))
        if tuple(value.shape) != expected:
            bad.append(f"{key!r}: got shape {tuple(value.shape)}, expected {expected} (lamina shape "
                       f"{tuple(current.shape)})")
        values[key] = value
    if bad:
        raise ShapeError("load_torchvision_state_dict: mis-shaped keys: " + "; ".join(bad))
    for key, value in values.items():
        module, attr, current = slots[key]
        result = np.ascontiguousarray(_convert(module, attr, value, chw_of.get(id(module))), dtype=current.dtype)
        if np.may_share_memory(result, value):  # never alias the caller's (or torch's) memory
            result = result.copy()
        result = backend.xp.asarray(result)
        if attr in module._parameters:
            module._parameters[attr].data = result
        else:
            module._buffers[attr] = result
