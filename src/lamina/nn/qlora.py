"""QLoRA (Dettmers et al. 2023): fine-tune a model whose Dense layers are frozen in 4 bits through
LoRA adapters in float.

    model = quantize_model_4bit(model)              # Dense -> Dense4bit (NF4, double quant)
    model = prepare_model_for_kbit_training(model)  # freeze, float32 for small floats, input grads
    model = apply_lora(model, r=8, alpha=16)        # adapters on the Dense4bit layers
    ... train model.parameters(trainable_only=True) ...
    merge_lora(model, unload=True, dequantize=True) # a float model with the adapters folded in

:func:`lamina.nn.quantize.model_size_bytes` gives the bytes stored before and after.
"""

from __future__ import annotations

import copy

import numpy

from lamina.autograd import Tensor, graph
from lamina.nn.dense import Dense
from lamina.nn.dense4bit import Dense4bit
from lamina.nn.embedding import Embedding
from lamina.nn.lora import _selector
from lamina.nn.module import Module
from lamina.nn.quant4 import _check_blocksize, _check_quant_type
from lamina.nn.quantize import _replace

__all__ = ["prepare_model_for_kbit_training", "quantize_model_4bit"]


def quantize_model_4bit(model: Module, target=(Dense,), quant_type: str = "nf4", blocksize: int = 64,
                        compress_statistics: bool = True, skip=("lm_head",), compute_dtype=None,
                        inplace: bool = False) -> Module:
    """``model`` with its built Dense layers chosen by ``target`` (a type or tuple of types,
    module names, or a predicate ``(path, module) -> bool``, as :func:`lamina.nn.apply_lora`)
    replaced by :class:`Dense4bit` layers of ``quant_type`` ('nf4' or 'fp4'), ``blocksize``
    and ``compress_statistics`` (double quantization). Layers named in ``skip`` (a dotted path
    or its last component; an output head such as 'lm_head' keeps its precision) and layers of
    Dense subclasses stay as they are. A copy unless ``inplace``; the model itself when it is
    a Dense (then its Dense4bit)."""
    who = "quantize_model_4bit"
    if not isinstance(model, Module):
        raise ValueError(f"{who}: expected a lamina Module, got {type(model).__name__}")
    quant_type = _check_quant_type(quant_type, who)
    blocksize = _check_blocksize(blocksize, who)
    skip = (skip,) if isinstance(skip, str) else tuple(skip or ())
    chosen = _selector(target)
    model = model if inplace else copy.deepcopy(model)
    found = []
    for path, module in model.named_modules():
        if type(module) is not Dense or not chosen(path, module):
            continue
        if any(path == name or path.endswith("." + name) for name in skip):
            continue
        if not module.built:
            raise ValueError(f"{who}: {module._label()} ({path or 'the model'}) has no weights yet; call the model "
                             "on a batch first")
        found.append(module)
    if not found:
        raise ValueError(f"{who}: no Dense layer of {model._label()} matches the target {target!r} outside "
                         f"skip={skip!r}")
    replacements = {id(layer): Dense4bit.from_dense(layer, quant_type, blocksize, compress_statistics, compute_dtype)
                    for layer in found}
    return _replace(model, replacements)


def prepare_model_for_kbit_training(model: Module, enable_input_grads: bool = True) -> Module:
    """Ready a 4-bit model for adapter training, as peft's helper: every parameter is frozen
    (the adapters added afterwards learn), floating parameters and the buffers of layers with
    parameters narrower than float32 (float16: norms, biases, embeddings, the head) are cast to
    float32 for stable updates, and with ``enable_input_grads`` the inputs of the first layers
    require gradients (the outputs of the Embedding layers, or the model's floating inputs
    when it has none), so that recomputed segments (:func:`lamina.autograd.checkpoint`) see
    an input to differentiate. Returns the model (changed in place)."""
    if not isinstance(model, Module):
        raise ValueError(f"prepare_model_for_kbit_training: expected a lamina Module, got {type(model).__name__}")
    model.freeze()
    for module in model.modules():
        for param in module._parameters.values():
            if param.data.dtype.kind == "f" and param.data.dtype.itemsize < 4:
                param.data = param.data.astype(numpy.float32)
        for key, buffer in module._buffers.items():
            dtype = getattr(buffer, "dtype", None)
            if module._parameters and dtype is not None and dtype.kind == "f" and dtype.itemsize < 4:
                module._buffers[key] = buffer.astype(numpy.float32)
    if enable_input_grads and not model.__dict__.get("_input_grad_hooks"):
        embeddings = [m for m in model.modules() if isinstance(m, Embedding)]
        if embeddings:
            handles = [m.register_forward_hook(_output_requires_grad) for m in embeddings]
        else:
            handles = [model.register_forward_pre_hook(_inputs_require_grad)]
        object.__setattr__(model, "_input_grad_hooks", handles)
    return model


def _requiring_grad(value):
    """A floating array or constant tensor as a leaf tensor that requires grad (others, and all
    while gradients are off, as they are)."""
    if not graph.is_grad_enabled():
        return value
    if isinstance(value, Tensor):
        if value.requires_grad or value.dtype.kind != "f":
            return value
        value = value.data
    elif not (hasattr(value, "dtype") and value.dtype.kind == "f"):
        return value
    leaf = Tensor._wrap(value)
    leaf.requires_grad = True
    return leaf


def _output_requires_grad(module, inputs, output):
    return _requiring_grad(output)


def _inputs_require_grad(module, inputs):
    return tuple(_requiring_grad(x) for x in inputs)
