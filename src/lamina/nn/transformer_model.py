"""Stacks of Transformer layers and the whole encoder-decoder model, as PyTorch's with
``batch_first=True``:

* :class:`TransformerEncoder` and :class:`TransformerDecoder`: ``num_layers`` independent
  copies of one layer, applied in turn, with an optional final normalization.
* :class:`Transformer`: an encoder stack and a decoder stack, each ending in a LayerNorm:
  ``model(src, tgt)`` -> (N, T_tgt, d_model).

Masks, names, the loading of PyTorch weights and the key/value cache of incremental
decoding are those of :mod:`lamina.nn.transformer_decoder`: ``start_caching`` on a
:class:`TransformerDecoder` or a :class:`Transformer` starts it in every decoder layer.
"""

from __future__ import annotations

import copy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.activation import activation_config
from lamina.nn.containers import ModuleList
from lamina.nn.layer import layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import TransformerEncoderLayer
from lamina.nn.transformer_decoder import (
    TransformerDecoderLayer,
    _checked_pair,
    _checked_shape,
    _lamina_masks,
    _shape_list,
)

__all__ = ["Transformer", "TransformerDecoder", "TransformerEncoder"]

# -- the stacks ------------------------------------------------------------------------------
class _Stack(Module):
    """``num_layers`` deep copies of one layer (own weights each, built on the first call) in
    ``layers``, and an optional final ``norm``."""

    layer_type: type = Module

    def __init__(self, layer: Module, num_layers: int, norm: Module | None = None, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        if not isinstance(layer, self.layer_type):
            raise TypeError(f"{who}: expected a {self.layer_type.__name__} to copy, got {type(layer).__name__}")
        if norm is not None and not isinstance(norm, Module):
            raise TypeError(f"{who}: norm must be a Module or None, got {type(norm).__name__}")
        self.num_layers = positive_int(num_layers, f"{who}: num_layers")
        self.d_model = layer.d_model
        self.num_heads = layer.num_heads
        self.layers = ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def _build_layers(self, input_shape, shape: tuple) -> None:
        for layer in self.layers:
            if not layer.built:
                layer.build(input_shape)
                layer.built = True
        if self.norm is not None and not self.norm.built:
            self.norm.build(shape)
            self.norm.built = True
        self.built = True

    def _finish(self, x) -> Tensor:
        return x if self.norm is None else self.norm(x)

    def compute_output_shape(self, input_shape):
        shape = _checked_shape(self._label(), "input", _shape_list(input_shape)[0], self.d_model)
        return shape[:-1] + (self.d_model,)

    def _stack_config(self, key: str) -> dict:
        return {key: layer_to_config(self.layers[0]), "num_layers": self.num_layers,
                "norm": None if self.norm is None else layer_to_config(self.norm), "name": self.name}

    @classmethod
    def _from_stack_config(cls, key: str, config: dict) -> Module:
        config = dict(config)
        layer = layer_from_config(config.pop(key))
        norm = config.pop("norm", None)
        return cls(layer, norm=None if norm is None else layer_from_config(norm), **config)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"


@register_layer
class TransformerEncoder(_Stack):
    """A stack of ``num_layers`` copies of a :class:`TransformerEncoderLayer`, then ``norm``
    (if given), as ``torch.nn.TransformerEncoder``: ``encoder(src, mask=None,
    src_key_padding_mask=None, is_causal=None)`` with PyTorch's masks (see the module
    docstring), src (N, T, d_model) -> (N, T, d_model). ``is_causal=None`` leaves each layer
    its own ``causal`` setting; True or False overrides it. PyTorch's ``enable_nested_tensor``
    and ``mask_check`` (speed switches of its padded fast path) are accepted and change
    nothing: lamina has no nested tensors, and the masks are always checked."""

    layer_type = TransformerEncoderLayer

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True, name: str | None = None):
        super().__init__(encoder_layer, num_layers, norm, name=name)

    def build(self, input_shape) -> None:
        shape = _checked_shape(self._label(), "source", _shape_list(input_shape)[0], self.d_model)
        self._build_layers(shape, shape)

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool | None = None) -> Tensor:
        x = as_tensor(src)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ShapeError(f"{self._label()}: src of shape {tuple(x.shape)}; expected (batch, time, {self.d_model})")
        n, t = x.shape[0], x.shape[1]
        attn_mask, key_mask = _lamina_masks(self._label(), ("mask", "src_key_padding_mask"), mask,
                                            src_key_padding_mask, n, t, t, self.num_heads)
        causal = None if is_causal is None else bool(is_causal)
        for layer in self.layers:
            x = layer(x, mask=attn_mask, key_mask=key_mask, causal=causal)
        return self._finish(x)

    def get_config(self) -> dict:
        return self._stack_config("encoder_layer")

    @classmethod
    def from_config(cls, config: dict) -> Module:
        return cls._from_stack_config("encoder_layer", config)


@register_layer
class TransformerDecoder(_Stack):
    """A stack of ``num_layers`` copies of a :class:`TransformerDecoderLayer`, then ``norm``
    (if given), as ``torch.nn.TransformerDecoder``: ``decoder(tgt, memory, tgt_mask=None,
    memory_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    tgt_is_causal=False, memory_is_causal=False)``, every layer attending over the same
    memory; tgt (N, T_tgt, d_model) -> (N, T_tgt, d_model).

    :meth:`start_caching` starts every layer's key/value cache: consecutive calls then
    continue one target sequence against one memory, in evaluation mode under ``no_grad``,
    and a call on T new steps gives the last T rows of one causal call on the whole target
    (the rules are :class:`TransformerDecoderLayer`'s; the final norm acts on each step).
    """

    layer_type = TransformerDecoderLayer
    cacheable = True

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None,
                 name: str | None = None):
        super().__init__(decoder_layer, num_layers, norm, name=name)

    def build(self, input_shape) -> None:
        shapes = _shape_list(input_shape)
        shape = _checked_shape(self._label(), "target", shapes[0], self.d_model)
        self._build_layers(input_shape, shape)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        x, memory = as_tensor(tgt), as_tensor(memory)
        _checked_pair(self._label(), ("tgt", "memory"), x, memory, self.d_model)
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                      memory_is_causal=memory_is_causal)
        return self._finish(x)

    # -- key/value cache ---------------------------------------------------------
    @property
    def caching(self) -> bool:
        """Whether consecutive calls continue one target sequence through the layers' caches."""
        return any(layer.caching for layer in self.layers)

    @property
    def cached_steps(self) -> int:
        """The number of target steps s cached (0 when not caching)."""
        return self.layers[0].cached_steps

    def start_caching(self) -> None:
        """Start every layer's cache, empty: the next call reads the first target steps."""
        if self.caching:
            raise ValueError(f"{self._label()}: start_caching while already caching; stop_caching first")
        for layer in self.layers:
            layer.start_caching()

    def stop_caching(self) -> None:
        """Drop every layer's cache; calls are independent again."""
        for layer in self.layers:
            layer.stop_caching()

    def reorder_cache(self, rows) -> None:
        """Keep the cached rows ``rows`` of every layer, in that order
        (:meth:`TransformerDecoderLayer.reorder_cache`). Refused when not caching."""
        if not self.caching:
            raise ValueError(f"{self._label()}: reorder_cache needs a key/value cache, and the decoder is not "
                             "caching; call start_caching first")
        for layer in self.layers:
            layer.reorder_cache(rows)

    def get_config(self) -> dict:
        return self._stack_config("decoder_layer")

    @classmethod
    def from_config(cls, config: dict) -> Module:
        return cls._from_stack_config("decoder_layer", config)


# -- the whole model -------------------------------------------------------------------------
@register_layer
class Transformer(Module):
    """The encoder-decoder Transformer, as ``torch.nn.Transformer(batch_first=True)``: an
    encoder of ``num_encoder_layers`` :class:`TransformerEncoderLayer` and a decoder of
    ``num_decoder_layers`` :class:`TransformerDecoderLayer`, each stack followed by a
    LayerNorm (``encoder.norm``, ``decoder.norm``), whatever ``norm_first``.

        memory = encoder(src),   out = decoder(tgt, memory)

    ``model(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    src_is_causal=None, tgt_is_causal=False, memory_is_causal=False)``, src (N, T_src,
    d_model) and tgt (N, T_tgt, d_model) -> (N, T_tgt, d_model), masks as PyTorch's (see the
    module docstring). The embeddings, position signal and output layer are the caller's.
    For teacher forcing pass ``tgt_mask=Transformer.generate_square_subsequent_mask(T_tgt)``
    or ``tgt_is_causal=True``. At inference, encode once with ``memory = model.encoder(src)``;
    then either call ``model.decoder(tgt, memory, tgt_is_causal=True)`` on the growing target
    (a rerun over the prefix at each step), or, in evaluation mode under ``no_grad``, call
    :meth:`start_caching` and feed ``model.decoder(new_steps, memory)`` only the new steps,
    which attend over the cached ones (see :class:`TransformerDecoder`), and
    :meth:`stop_caching` after. The cache is the decoder's: ``model(src, tgt)`` while caching
    reruns the encoder at every call.

    ``bias=False`` (PyTorch's) leaves out every bias of both stacks: the attentions', the
    feed-forward layers' and the norms' (the final ``encoder.norm`` and ``decoder.norm`` too).
    ``custom_encoder`` and ``custom_decoder`` (PyTorch's) replace the stacks the other options
    would build: any modules called as ``encoder(src, mask=, src_key_padding_mask=,
    is_causal=)`` and ``decoder(tgt, memory, tgt_mask=, memory_mask=, tgt_key_padding_mask=,
    memory_key_padding_mask=, tgt_is_causal=, memory_is_causal=)`` returning (N, T, d_model),
    as :class:`TransformerEncoder` and :class:`TransformerDecoder` are (the cache needs the
    decoder's ``start_caching``).
    """

    cacheable = True

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation="relu", norm_first: bool = False,
                 layer_norm_eps: float = 1e-5, custom_encoder: Module | None = None,
                 custom_decoder: Module | None = None, bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        for what, custom in (("custom_encoder", custom_encoder), ("custom_decoder", custom_decoder)):
            if custom is not None and not isinstance(custom, Module):
                raise TypeError(f"Transformer: {what} must be a Module or None, got {type(custom).__name__}")
        options = {"dim_feedforward": dim_feedforward, "dropout": dropout, "activation": activation,
                   "norm_first": norm_first, "layer_norm_eps": layer_norm_eps,
                   **({} if bias else {"bias": False})}     # older configs stay as they were
        self.d_model, self.nhead = d_model, nhead
        norm = {"eps": layer_norm_eps, "bias": bool(bias)}
        self.encoder = custom_encoder if custom_encoder is not None else TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, **options), num_encoder_layers, norm=LayerNorm(-1, **norm))
        self.decoder = custom_decoder if custom_decoder is not None else TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, **options), num_decoder_layers, norm=LayerNorm(-1, **norm))
        self._options = {"d_model": d_model, "nhead": nhead, "num_encoder_layers": num_encoder_layers,
                         "num_decoder_layers": num_decoder_layers, **options}
        self._custom = {"custom_encoder": custom_encoder is not None, "custom_decoder": custom_decoder is not None}

    @staticmethod
    def generate_square_subsequent_mask(size: int, dtype=None):
        """The (size, size) causal float mask: 0 on and below the diagonal, -inf above it (the
        future), to pass as ``tgt_mask``."""
        positive_int(size, "Transformer.generate_square_subsequent_mask: size")
        xp = backend.xp
        future = xp.triu(xp.ones((size, size), dtype=bool), k=1)
        return xp.where(future, -xp.inf, 0.0).astype(dtype or backend.get_default_dtype())

    @property
    def caching(self) -> bool:
        """Whether the decoder's calls continue one target sequence through its cache."""
        return self.decoder.caching

    @property
    def cached_steps(self) -> int:
        """The number of target steps s the decoder has cached (0 when not caching)."""
        return self.decoder.cached_steps

    def start_caching(self) -> None:
        """Start the decoder's key/value cache (:meth:`TransformerDecoder.start_caching`)."""
        self.decoder.start_caching()

    def stop_caching(self) -> None:
        """Drop the decoder's cache; calls are independent again."""
        self.decoder.stop_caching()

    def reorder_cache(self, rows) -> None:
        """Keep the decoder's cached rows ``rows``, in that order
        (:meth:`TransformerDecoder.reorder_cache`)."""
        self.decoder.reorder_cache(rows)

    def build(self, input_shape) -> None:
        """Builds both stacks for ``input_shape``, the list [src shape, tgt shape]."""
        shapes = _shape_list(input_shape)
        if len(shapes) != 2:
            raise ShapeError(f"{self._label()}: build takes the shapes [src, tgt], got {input_shape}")
        src = _checked_shape(self._label(), "src", shapes[0], self.d_model)
        tgt = _checked_shape(self._label(), "tgt", shapes[1], self.d_model)
        if not self.encoder.built:
            self.encoder.build(src)
            self.encoder.built = True
        if not self.decoder.built:
            self.decoder.build([tgt, src])
            self.decoder.built = True
        self.built = True

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal: bool | None = None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        src, tgt = as_tensor(src), as_tensor(tgt)
        _checked_pair(self._label(), ("src", "tgt"), src, tgt, self.d_model)
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    def compute_output_shape(self, input_shape):
        shapes = _shape_list(input_shape)
        if len(shapes) != 2:
            raise ShapeError(f"{self._label()}: expected the shapes [src, tgt], got {input_shape}")
        tgt = _checked_shape(self._label(), "tgt", shapes[1], self.d_model)
        return tgt[:-1] + (self.d_model,)

    def get_config(self) -> dict:
        config = dict(self._options)
        built = [stack for key, stack in (("custom_decoder", self.decoder), ("custom_encoder", self.encoder))
                 if not self._custom[key]]
        if built:                            # the activation as its feed-forward layers save it
            config["activation"] = activation_config(built[0].layers[0].linear1)
        for key, stack in (("custom_encoder", self.encoder), ("custom_decoder", self.decoder)):
            if self._custom[key]:
                config[key] = layer_to_config(stack)
        return {**config, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Module:
        config = dict(config)
        for key in ("custom_encoder", "custom_decoder"):
            if config.get(key) is not None:
                config[key] = layer_from_config(config[key])
        return cls(**config)

    def extra_repr(self) -> str:
        o = self._options
        return (f"d_model={o['d_model']}, nhead={o['nhead']}, num_encoder_layers={o['num_encoder_layers']}, "
                f"num_decoder_layers={o['num_decoder_layers']}")
