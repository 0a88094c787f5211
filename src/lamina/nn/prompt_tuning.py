"""Prompt tuning and prefix tuning: a frozen decoder language model steered by a few learned
vectors placed before the text, for GPT-2-style models (token table ``wte``, learned
positions ``wpe``, ``drop``, blocks ``h``, ``ln_f`` and a head tied to ``wte``, such as
:class:`lamina.models.GPT2`) and lamina's other decoder LMs (:class:`lamina.models.Llama` and
the models built like it on ``DecoderLM``, whose rotary positions count the virtual tokens
in the same way); prefix tuning needs only the attention layers and ``position_ids``.

Prompt tuning (Lester et al. 2021): P virtual token embeddings E_p (P, E) go before the
token embeddings, h_0 = [E_p; W_te[x]] + W_pe[0 .. P + T - 1]; the scores of the T real
tokens are returned. E_p starts N(0, 1) (``init='random'``, peft's ``nn.Embedding``), as the
embeddings of random vocabulary tokens (``'vocab'``) or of the token ids ``init_ids`` (a
text's, repeated and cut to P as peft does; ``'text'``). P-tuning (Liu et al. 2021, peft's
``PromptEncoder`` with its MLP) passes them through a small network first, ``prompt_encoder=
'mlp'``: W_3 relu(W_2 relu(W_1 E_p + b_1) + b_2) + b_3 (three Dense layers, hidden width
``encoder_hidden_size``, E by default).

Prefix tuning (Li & Liang 2021): every attention layer l gets P learned keys and values
placed before the sequence's own, K_l = [P_k^l; K_l], V_l = [P_v^l; V_l], seen by every
query (the causal mask applies among the real tokens). The prefixes are one table
(P, L 2 g d) (L layers, g key/value heads of d features) read as peft lays it out,
[layer 0 keys, layer 0 values, layer 1 keys, ...], either learned directly (N(0, 1)) or,
with ``prefix_projection=True``, computed from P learned vectors of E features by
Dense(E -> hidden, tanh) then Dense(hidden -> L 2 g d), the reparameterisation that makes
training stabler.

Positions: the virtual tokens count, as in peft. With prompt tuning they take positions
0 .. P - 1 and the text P .. P + T - 1; with prefix tuning the prefix plays the part of a
key/value cache of P steps (how peft hands it to the model), so the text also starts at
position P. So P + T must fit in the model's context. A ``key_mask`` (N, T) of the text is
extended by P real (True) columns; ``position_ids`` of the text are shifted by P.

Generation: both models cache keys and values (``start_caching`` and the other methods
:func:`lamina.text.caching_keys_values` and ``generate`` use): the first call puts the
virtual tokens (or the prefixes) in the cache, later calls read the new tokens alone.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.dense import Dense
from lamina.nn.layer import (
    build_for_shape,
    input_shape_config,
    layer_from_config,
    layer_to_config,
    positive_int,
    register_layer,
)
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention

__all__ = ["PrefixTuningLM", "PromptTuningLM"]


def _cache_layers(module: Module) -> list:
    if hasattr(module, "start_caching"):
        return [module]
    return [layer for child in module.children() for layer in _cache_layers(child)]


def _ids_array(ids):
    return ids.data if isinstance(ids, Tensor) else backend.xp.asarray(ids)


class _VirtualTokensLM(Module):
    """What prompt and prefix tuning share: the frozen ``model``, P virtual tokens, the
    context check, the masks and positions shifted by P, and the cache protocol."""

    cacheable = True

    def __init__(self, model: Module, num_virtual_tokens: int, who: str):
        super().__init__(name=None)
        positive_int(num_virtual_tokens, f"{who}: num_virtual_tokens")
        if not model.built:
            raise ValueError(f"{who}: {model._label()} has no weights yet; call it on token ids or build it first")
        context = getattr(model, "max_len", None)
        if context is not None and num_virtual_tokens >= context:
            raise ValueError(f"{who}: {num_virtual_tokens} virtual tokens do not fit the model's context of "
                             f"{context} positions (and leave none for the text)")
        model.freeze()
        self.model = model
        self.num_virtual_tokens = num_virtual_tokens
        self._held = None             # the text steps read while caching, else None
        self.built = True

    @property
    def max_len(self) -> int:
        """The longest text the model reads: its context less the P virtual tokens."""
        return self.model.max_len - self.num_virtual_tokens

    @property
    def caching(self) -> bool:
        return self._held is not None

    @property
    def streamable(self) -> bool:
        return self.caching and bool(getattr(self.model, "streamable", True))

    def start_caching(self) -> None:
        for layer in _cache_layers(self.model):
            layer.start_caching()
        self._held = 0

    def stop_caching(self) -> None:
        for layer in _cache_layers(self.model):
            layer.stop_caching()
        self._held = None

    def reorder_cache(self, rows) -> None:
        for layer in _cache_layers(self.model):
            layer.reorder_cache(rows)

    def generate(self, input_ids, **options):
        """:func:`lamina.text.generate_ids` on this model (Hugging Face's ``generate``)."""
        from lamina.text.generation_ids import generate_ids

        return generate_ids(self, input_ids, **options)

    def _check_length(self, steps: int, who: str) -> None:
        p, context = self.num_virtual_tokens, getattr(self.model, "max_len", None)
        held = self._held or 0
        if context is not None and p + held + steps > context:
            raise ShapeError(f"{who}: {p} virtual tokens and {held + steps} text steps need {p + held + steps} "
                             f"positions, more than the model's context of {context}")

    def _key_mask(self, key_mask, n: int):
        """The text's key mask with P True columns before it (None stays None)."""
        if key_mask is None:
            return None
        km = backend.xp.asarray(key_mask.data if isinstance(key_mask, Tensor) else key_mask).astype(bool)
        return backend.xp.concatenate([backend.xp.ones((n, self.num_virtual_tokens), dtype=bool), km], axis=1)

    def _positions(self, position_ids, n: int, t: int):
        """The text's positions: P + position_ids, or P + held + 0 .. t - 1."""
        p, xp = self.num_virtual_tokens, backend.xp
        if position_ids is not None:
            return xp.asarray(_ids_array(position_ids)).astype(xp.int64) + p
        start = p + (self._held or 0)
        return xp.broadcast_to(xp.arange(start, start + t, dtype=xp.int64), (n, t))

    def model_config(self) -> dict:
        """The frozen model's part of the config: its config and the input shape it was built for."""
        return {"model": layer_to_config(self.model), "model_input_shape": input_shape_config(self.model)}

    @staticmethod
    def model_from_config(config: dict) -> Module:
        """The model of :meth:`model_config`, built (fresh weights); pops both keys from ``config``."""
        return build_for_shape(layer_from_config(config.pop("model")), config.pop("model_input_shape"))

    @classmethod
    def from_config(cls, config: dict) -> Module:
        config = dict(config)
        return cls(cls.model_from_config(config), **config)

    def extra_repr(self) -> str:
        return f"num_virtual_tokens={self.num_virtual_tokens}"


@register_layer
class PromptTuningLM(_VirtualTokensLM):
    """A frozen GPT-2-style or DecoderLM ``model`` with ``num_virtual_tokens`` learned input embeddings
    (the parameter ``prompt`` (P, E)) before every text: ``lm(ids, key_mask=None,
    position_ids=None)`` -> the scores (N, T, V) of the text (see the module docstring)."""

    def __init__(self, model: Module, num_virtual_tokens: int = 8, init: str = "random", init_ids=None,
                 prompt_encoder: str | None = None, encoder_hidden_size: int | None = None,
                 name: str | None = None):
        who = "PromptTuningLM"
        gpt2_style = all(a in model._modules for a in ("wte", "wpe", "drop", "h", "ln_f"))
        if not gpt2_style and not all(hasattr(model, a) for a in ("token_embedding", "layers", "final_norm", "logits")):
            raise TypeError(f"{who}: expected a GPT-2-style model (sub-modules wte, wpe, drop, h, ln_f) or a "
                            f"lamina.models.DecoderLM (Llama and its kin); got {type(model).__name__}")
        super().__init__(model, num_virtual_tokens, who)
        self.name = name
        self.gpt2_style = gpt2_style
        table = (model.wte if gpt2_style else model.token_embedding()).weight.data
        p, xp = num_virtual_tokens, backend.xp
        if init == "random":
            prompt = backend.rng().standard_normal((p, table.shape[1]))
        elif init == "vocab":
            prompt = table[backend.rng().integers(0, table.shape[0], p)]
        elif init == "text":
            if init_ids is None or len(init_ids) == 0:
                raise ValueError(f"{who}: init='text' needs the token ids of the text, init_ids")
            ids = [int(i) for i in init_ids]
            if not all(0 <= i < table.shape[0] for i in ids):
                raise ValueError(f"{who}: init_ids must lie in [0, {table.shape[0]}) (the vocabulary), got {ids}")
            ids = (ids * (p // len(ids) + 1))[:p]
            prompt = table[xp.asarray(ids)]
        else:
            raise ValueError(f"{who}: init must be 'random', 'vocab' or 'text', got {init!r}")
        self.add_parameter("prompt", xp.asarray(prompt).astype(table.dtype))
        if prompt_encoder not in (None, "mlp"):
            raise ValueError(f"{who}: prompt_encoder must be None or 'mlp', got {prompt_encoder!r}")
        self.prompt_encoder, self.encoder_hidden_size = prompt_encoder, encoder_hidden_size
        if prompt_encoder == "mlp":
            features = table.shape[1]
            hidden = features if encoder_hidden_size is None else positive_int(
                encoder_hidden_size, f"{who}: encoder_hidden_size")
            self.encoder_hidden = Dense(hidden, activation="relu")
            self.encoder_hidden_2 = Dense(hidden, activation="relu")
            self.encoder_out = Dense(features)
            with no_grad():
                self.virtual_embeddings()
            for layer in (self.encoder_hidden, self.encoder_hidden_2, self.encoder_out):
                for param in layer.parameters():
                    param.data = param.data.astype(table.dtype)

    def get_config(self) -> dict:
        """The model, P and the encoder; the prompt itself (however it was initialised) is a
        parameter of the state dict."""
        return {**self.model_config(), "num_virtual_tokens": self.num_virtual_tokens,
                "prompt_encoder": self.prompt_encoder, "encoder_hidden_size": self.encoder_hidden_size,
                "name": self.name}

    def virtual_embeddings(self) -> Tensor:
        """The P vectors placed before the text: ``prompt``, or with the P-tuning encoder
        W_3 relu(W_2 relu(W_1 prompt + b_1) + b_2) + b_3."""
        if self.prompt_encoder is None:
            return self.prompt
        return self.encoder_out(self.encoder_hidden_2(self.encoder_hidden(self.prompt)))

    def forward(self, ids, key_mask=None, position_ids=None) -> Tensor:
        model, p = self.model, self.num_virtual_tokens
        ids = as_tensor(ids) if not isinstance(ids, Tensor) else ids
        n, t = ids.shape
        self._check_length(t, "PromptTuningLM")
        x = model.wte(ids) if self.gpt2_style else model.token_embedding()(ids)
        first = not self.caching or self._held == 0
        positions = None
        if position_ids is not None:
            positions = self._positions(position_ids, n, t)
        if first:
            prompt = F.broadcast_to(F.reshape(self.virtual_embeddings(), 1, p, x.shape[2]), (n, p, x.shape[2]))
            x = F.concat([prompt, x], axis=1)
            if positions is not None:
                virtual = backend.xp.broadcast_to(backend.xp.arange(p, dtype=positions.dtype), (n, p))
                positions = backend.xp.concatenate([virtual, positions], axis=1)
        km = self._key_mask(key_mask, n)
        if self.gpt2_style:
            h = model.drop(model.wpe(x, positions=positions))
            for block in model.h:
                h = block(h, key_mask=km)
            h = model.ln_f(h)
        else:
            h = x
            for block in model.layers:
                h = block(h, key_mask=km, position_ids=positions)
            h = model.final_norm()(h)
        if first:
            h = F.getitem(h, (slice(None), slice(p, None)))
        if self.caching:
            self._held += t
        if self.gpt2_style:
            return F.matmul(h, F.transpose(model.wte.weight, 1, 0))
        return model.logits(h)


@register_layer
class PrefixTuningLM(_VirtualTokensLM):
    """A frozen causal language ``model`` (called as ``model(ids, key_mask=..., position_ids=...)``)
    whose attention layers read ``num_virtual_tokens`` learned keys and values before the
    text's: ``lm(ids, key_mask=None, position_ids=None)`` -> the model's scores (N, T, V).
    Parameters: ``prefix`` (P, L 2 g d), or with ``prefix_projection`` the vectors ``prefix``
    (P, E) and the Dense layers ``prefix_mlp_hidden`` and ``prefix_mlp_out`` (see the module
    docstring)."""

    def __init__(self, model: Module, num_virtual_tokens: int = 8, prefix_projection: bool = False,
                 encoder_hidden_size: int | None = None, name: str | None = None):
        who = "PrefixTuningLM"
        super().__init__(model, num_virtual_tokens, who)
        self.name = name
        layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
        if not layers:
            raise TypeError(f"{who}: {type(model).__name__} has no MultiHeadAttention layer to give prefixes")
        first = layers[0]
        if any((m.num_kv_heads, m.head_dim) != (first.num_kv_heads, first.head_dim) for m in layers):
            raise ValueError(f"{who}: the attention layers differ in their key/value heads; one prefix table "
                             "needs them alike")
        self.__dict__["_attention_layers"] = layers         # a plain list: the layers stay the model's
        self.num_layers, self.kv_heads, self.head_dim = len(layers), first.num_kv_heads, first.head_dim
        width = self.num_layers * 2 * self.kv_heads * self.head_dim
        dtype = first.in_weight.dtype
        p, rng = num_virtual_tokens, backend.rng()
        self.prefix_projection, self.encoder_hidden_size = bool(prefix_projection), encoder_hidden_size
        if self.prefix_projection:
            features = first.embed_dim
            hidden = features if encoder_hidden_size is None else positive_int(
                encoder_hidden_size, f"{who}: encoder_hidden_size")
            self.add_parameter("prefix", backend.xp.asarray(rng.standard_normal((p, features)).astype(dtype)))
            self.prefix_mlp_hidden = Dense(hidden, activation="tanh", kernel_init="lecun_uniform")
            self.prefix_mlp_out = Dense(width, kernel_init="lecun_uniform")
            with no_grad():
                self.prefix_mlp_out(self.prefix_mlp_hidden(self.prefix))
            for layer in (self.prefix_mlp_hidden, self.prefix_mlp_out):
                for param in layer.parameters():
                    param.data = param.data.astype(dtype)
        else:
            self.add_parameter("prefix", backend.xp.asarray(rng.standard_normal((p, width)).astype(dtype)))

    def get_config(self) -> dict:
        return {**self.model_config(), "num_virtual_tokens": self.num_virtual_tokens,
                "prefix_projection": self.prefix_projection, "encoder_hidden_size": self.encoder_hidden_size,
                "name": self.name}

    def prefix_table(self) -> Tensor:
        """The keys and values of every layer as one tensor (P, L 2 g d)."""
        if self.prefix_projection:
            return self.prefix_mlp_out(self.prefix_mlp_hidden(self.prefix))
        return self.prefix

    def prefix_keys_values(self) -> list[tuple[Tensor, Tensor]]:
        """Per attention layer, its prefix keys and values (1, g, P, d) each."""
        p, g, d = self.num_virtual_tokens, self.kv_heads, self.head_dim
        table = F.transpose(F.reshape(self.prefix_table(), p, 2 * self.num_layers, g, d), 1, 2, 0, 3)
        pairs = []
        for layer in range(self.num_layers):
            k = F.reshape(F.getitem(table, 2 * layer), 1, g, p, d)
            v = F.reshape(F.getitem(table, 2 * layer + 1), 1, g, p, d)
            pairs.append((k, v))
        return pairs

    def forward(self, ids, key_mask=None, position_ids=None) -> Tensor:
        ids = as_tensor(ids) if not isinstance(ids, Tensor) else ids
        n, t = ids.shape
        self._check_length(t, "PrefixTuningLM")
        positions = self._positions(position_ids, n, t)
        if self.caching:
            if self._held == 0:
                self._fill_caches(n)
            out = self.model(ids, key_mask=self._key_mask(key_mask, n), position_ids=positions)
            self._held += t
            return out
        layers = self._attention_layers
        try:
            for layer, pair in zip(layers, self.prefix_keys_values()):
                layer.__dict__["prefix_keys_values"] = pair
            return self.model(ids, key_mask=key_mask, position_ids=positions)
        finally:
            for layer in layers:
                layer.__dict__.pop("prefix_keys_values", None)

    def _fill_caches(self, n: int) -> None:
        """Put each layer's prefix in its key/value cache as P steps already read."""
        xp = backend.xp
        for layer, (k, v) in zip(self._attention_layers, self.prefix_keys_values()):
            shape = (n,) + tuple(k.shape[1:])
            layer._extend_cache(xp.ascontiguousarray(xp.broadcast_to(k.data, shape)),
                                xp.ascontiguousarray(xp.broadcast_to(v.data, shape)))
            layer.__dict__["_steps_read"] += self.num_virtual_tokens
