"""Export a model to ONNX, for ONNX Runtime, TensorRT, OpenVINO and the other engines that
read it (``pip install lamina[onnx]``).

The exporter walks the model's layers in order and writes each as ONNX nodes, its weights as
initializers: a ``Sequential`` of the built-in layers, with nested ``Sequential``\\ s and the
zoo's blocks (``ConvBN``, ResNet's residual blocks, the Inception modules and other branching
networks joined by ``Add`` or ``Concatenate``), so LeNet, AlexNet, MobileNet, GoogLeNet,
Inception-v3 and the ResNets export, as do MobileNet v3, EfficientNet, ConvNeXt, SqueezeNet,
ShuffleNet v2, RegNet, MnasNet, EfficientNetV2 and the FCN / DeepLabv3 segmentation models
(:mod:`lamina.export.onnx_zoo_layers`), and the Swin Transformers (v1,
:mod:`lamina.export.onnx_swin`, and V2, :mod:`lamina.export.onnx_swin_v2`), MaxViT
(:mod:`lamina.export.onnx_maxvit`), MLP-Mixer, ResMLP, ConvMixer and DeiT
(:mod:`lamina.export.onnx_mlp_zoo`) and SegFormer (:mod:`lamina.export.onnx_segformer`); recurrent layers
(SimpleRNN, GRU, LSTM, Bidirectional) become ONNX's RNN operators, Transformer encoder layers
are written out from MatMul and Softmax (with rotary positions, grouped-query heads, ALiBi and
sliding windows), a mixture of experts weighs all its experts by the top-k gates
(:mod:`lamina.export.onnx_experts`), and GPT-2 and BERT (with its masked-LM head) export whole
(:mod:`lamina.export.onnx_gpt2_bert`), as do Llama and Mistral (:mod:`lamina.export.onnx_llama`)
and Qwen2, Phi-3, Gemma, Gemma 2, GPT-NeoX and Mixtral (:mod:`lamina.export.onnx_lm_families`);
spectral convolutions and the Fourier neural operators go through ONNX's DFT
(:mod:`lamina.export.onnx_spectral`, grid sizes fixed at export). The adapters (DoRA, IA3,
LoHa, LoKr, VeRA, bottleneck adapters, GPT-2 prompt tuning) and the quantized Dense export as
the weights they compute now (:mod:`lamina.export.onnx_adapters`), as do SIREN, Fourier features,
the Bayesian layers (their posterior means) and the modern Hopfield layers
(:mod:`lamina.export.onnx_research_layers`) and KANLinear (:mod:`lamina.export.onnx_kan`); the
p4 / p4m group convolutions and P4CNN, DeformConv2D (opset 19) and Conv-TasNet
(:mod:`lamina.export.onnx_new_layers`), and minGRU / minLSTM, differential and multi-head latent
attention and the Hyena operator (:mod:`lamina.export.onnx_new_sequence_layers`), and BitLinear,
the hash-grid encoding and its MLP, the Mamba-2 block, the DiT and TFT's gated residual network
(:mod:`lamina.export.onnx_generative_layers`), and ScaledStdConv2D, SelfAttention2D, NoisyDense (its mean
weights), the Linformer and Nystromformer attentions and CaiT's LayerScale, talking-heads and class
attention (:mod:`lamina.export.onnx_recent_layers`), the whole CaiT and ConvNeXt V2
(:mod:`lamina.export.onnx_cait_convnextv2`) export too, as do PVT v2, CvT and BEiT's classifier
(:mod:`lamina.export.onnx_pvt_cvt_beit`) and the RG-LRU, Griffin's recurrent block and the Hawk
and Griffin language models (an ONNX Scan over time, :mod:`lamina.export.onnx_griffin`); prefix
tuning and the mixture density head's three outputs have no form. The graph reads and writes
what the lamina model does: images NHWC (batch, h, w, c), any batch size; sequences
(batch, time, features) or word ids, any length. ONNX's convolution, pooling
and normalization operators want NCHW, so a value changes layout only where the next layer
needs the other one: a whole convolutional stack costs one Transpose in and one out.
MaxUnpool2D, which reads two inputs (the pooled map and the indices), has no ONNX form.

Layers without a converter raise an error that names them; :func:`register_converter` adds
one: ``fn(graph, layer, value) -> value`` in the style of those in
:mod:`lamina.export.onnx_layers`. A layer reading more than the model's input (a DiT's timesteps
and labels) declares further graph inputs through ``Graph.add_input``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lamina import nn
from lamina.errors import ShapeError
from lamina.export import (  # noqa: F401  (converters)
    onnx_adapters,
    onnx_attention,
    onnx_branching,
    onnx_cait_convnextv2,
    onnx_experts,
    onnx_generative_layers,
    onnx_gpt2_bert,
    onnx_griffin,
    onnx_kan,
    onnx_layers,
    onnx_llama,
    onnx_lm_families,
    onnx_maxvit,
    onnx_mlp_zoo,
    onnx_more_layers,
    onnx_new_layers,
    onnx_new_sequence_layers,
    onnx_pvt_cvt_beit,
    onnx_rearrange,
    onnx_recent_layers,
    onnx_recurrent,
    onnx_reparam,
    onnx_research_layers,
    onnx_segformer,
    onnx_sequence_layers,
    onnx_spatial_layers,
    onnx_spectral,
    onnx_swin,
    onnx_swin_v2,
    onnx_zoo_layers,
)
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter

__all__ = ["export_onnx", "register_converter"]

DEFAULT_OPSET = 17


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple | None = None,
                opset: int = DEFAULT_OPSET, dtype=np.float32, check: bool = True) -> Path:
    """Write ``model`` (its evaluation-mode computation) to ``path`` as an ONNX model.

    ``input_shape``: one sample's shape, e.g. (28, 28, 1) (default: the shape the model was
    built for); the batch axis is left free. Inputs are ``dtype`` (float32 by default) and
    weights are stored in it; a model starting with an Embedding takes int64 ids. The graph
    has the input 'input' (and those a layer adds, e.g. a DiT's 'timestep' and 'label') and
    one output, 'output'. ``check`` runs ONNX's model checker
    before writing. The file is written atomically. Returns the path.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("export_onnx needs the onnx package: pip install 'lamina[onnx]'") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx: expected a lamina model (a Module), got {type(model).__name__}")
    shape = _input_shape(model, input_shape)
    if not model.built:
        model.build(shape)
    nn.prune.apply_masks(model)         # pruned weights as of now, not as of the last call
    first = next((m for m in model.modules() if not isinstance(m, nn.Sequential)), None)
    ids = isinstance(first, nn.Embedding) or isinstance(model, onnx_gpt2_bert.ID_MODELS + onnx_llama.ID_MODELS
                                                           + onnx_lm_families.ID_MODELS + onnx_adapters.ID_MODELS
                                                           + onnx_griffin.ID_MODELS)
    graph = Graph(onnx, dtype, opset)
    value = Value(graph.fresh("input"), shape)
    out = graph.layout(convert(graph, model, value), "nhwc")
    final = graph.node("Identity", [out.name], "output")
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np.int64 if ids else dtype))
    dims = ["batch", *shape[1:]]
    out_dims = ["batch", *out.shape[1:]]
    if _free_length(model):
        dims[1] = "time"
        if len(out.shape) >= 3:             # nothing flattens the steps: axis 1 is still time
            out_dims[1] = "time" if _keeps_length(model, shape, out.shape) else "output_time"
    return graph.save(path, label(model), value.name, elem, dims, final, out_dims, check)


_SEQUENCE_LAYERS = (nn.SimpleRNN, nn.GRU, nn.LSTM, nn.Bidirectional, nn.MultiHeadAttention,
                    nn.TransformerEncoderLayer, nn.PositionalEncoding, nn.PositionEmbedding, nn.Conv1D, nn.MaxPool1D,
                    nn.AvgPool1D, nn.GlobalAvgPool1D, nn.GlobalMaxPool1D, nn.TimeDistributed, nn.MinGRU, nn.MinLSTM,
                    nn.DifferentialAttention, nn.MultiHeadLatentAttention, nn.HyenaOperator,
                    nn.Mamba2Block, *onnx_griffin.SEQUENCE_LAYERS)
_FIXED_LENGTH_LAYERS = (nn.Flatten, nn.Reshape, nn.Rearrange, nn.Reduce)   # their Reshapes hold the lengths
# layers that read axis 1 as an image's height: outside a TimeDistributed, axis 1 is no time axis
_IMAGE_LAYERS = (nn.Conv2D, nn.DepthwiseConv2D, nn.SeparableConv2D, nn.Conv2DTranspose, nn.MaxPool2D, nn.AvgPool2D,
                 nn.GlobalAvgPool2D, nn.UpSampling2D, nn.ZeroPadding2D, nn.Cropping2D)


def _free_length(model: nn.Module) -> bool:
    """Whether the input's axis 1 is a sequence's time axis that no node fixes: the model
    holds a sequence layer and nothing that fixes the steps (:func:`_fixes_length`). Inside
    a TimeDistributed the layers see one step at a time: they fix nothing."""
    layers = list(_outside_steps(model))
    return (any(isinstance(m, _SEQUENCE_LAYERS) for m in layers)
            and not any(_fixes_length(m) for m in layers))


def _outside_steps(module: nn.Module):
    """``module`` and the modules below it, not entering a TimeDistributed."""
    yield module
    if not isinstance(module, nn.TimeDistributed):
        for child in module.children():
            yield from _outside_steps(child)


def _fixes_length(module: nn.Module) -> bool:
    """Flatten and Reshape fix the steps, and an image layer makes axis 1 a height, kept as
    exported; so does a strided 'same' Conv1D, whose padding the converter computes for the
    length it was built for (max((ceil(L / s) - 1) s + f - L, 0))."""
    if isinstance(module, _FIXED_LENGTH_LAYERS + _IMAGE_LAYERS):
        return True
    return isinstance(module, nn.Conv1D) and module.padding == "same" and module.stride > 1


def _keeps_length(model: nn.Module, shape: tuple, out_shape: tuple) -> bool:
    """Whether the output has as many steps as the input (then both are declared 'time'):
    at the exported length, and at one more step where the model infers its output shape."""
    if out_shape[1] != shape[1]:
        return False
    longer = (None, shape[1] + 1, *shape[2:])
    try:
        return tuple(model.compute_output_shape(longer))[1] == longer[1]
    except (NotImplementedError, ShapeError, ValueError, TypeError, IndexError):
        return True


def _input_shape(model: nn.Module, input_shape) -> tuple:
    if input_shape is not None:
        shape = tuple(input_shape)
        if not shape or any(not isinstance(n, (int, np.integer)) or n < 1 for n in shape):
            raise ValueError(f"export_onnx: input_shape must be one sample's shape of positive ints, e.g. "
                             f"(28, 28, 1), got {input_shape!r}")
        return (1, *(int(n) for n in shape))
    built = model.build_input_shape if model.built else getattr(model, "input_shape", None)
    if built is None or any(n is None for n in tuple(built)[1:]):
        raise ValueError(f"export_onnx: {model._label()} has no known input shape (got {built}); pass "
                         "input_shape=(h, w, c) or build the model first")
    return (1, *tuple(built)[1:])
