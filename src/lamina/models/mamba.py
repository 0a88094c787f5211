"""Mamba language models (Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", 2023) in the layout of Hugging Face's ``MambaForCausalLM``, so that its
published weights (state-spaces/mamba-130m-hf ...) load with :func:`load_hf_mamba_state_dict`.

    h_0 = E[x]                                         (no position table)
    h_l = h_{l-1} + mixer(norm(h_{l-1}))               (mixer: :class:`lamina.nn.MambaBlock`)
    logits = norm_f(h_L) E^T                           (the head tied to the embeddings)

with RMSNorms y = x / sqrt(mean(x^2) + eps) * weight. Sub-modules carry Hugging Face's names:
``backbone.embeddings``, ``backbone.layers.N.norm``, ``backbone.layers.N.mixer.in_proj`` ...
``backbone.norm_f`` (and ``lm_head`` when the head is not tied).

Generation: the mixers are recurrent, so :func:`lamina.text.sample_text`, ``sample_texts`` and
the beam search read the prompt once and then one token per call, each mixer carrying its
convolution inputs and its (N, I, S) state (:func:`lamina.text.carrying_states`): constant
work and memory per new token, whatever the length.
"""

from __future__ import annotations

import math

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.hf_weights import HFWeight, copied, linear, load_hf_state_dict, read_state_dict
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.mamba import MambaBlock
from lamina.nn.module import Module, as_tensor
from lamina.nn.rms_norm import RMSNorm
from lamina.text.generation_ids import GenerationMixin

__all__ = ["MAMBA_CONFIGS", "Mamba", "MambaBackbone", "MambaLayer", "load_hf_mamba_state_dict", "mamba",
           "mamba_parameter_count"]

_PILE = {"vocab_size": 50280, "state_size": 16, "expand": 2, "conv_kernel": 4}

MAMBA_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "state_size": 8},
    "130m": {**_PILE, "hidden_size": 768, "num_hidden_layers": 24},
    "370m": {**_PILE, "hidden_size": 1024, "num_hidden_layers": 48},
    "790m": {**_PILE, "hidden_size": 1536, "num_hidden_layers": 48},
    "1.4b": {**_PILE, "hidden_size": 2048, "num_hidden_layers": 48},
    "2.8b": {**_PILE, "hidden_size": 2560, "num_hidden_layers": 64},
}
"""Hugging Face configurations of the state-spaces/mamba-*-hf models trained on the Pile
(vocabulary padded to 50280), and a small 'tiny' one for experiments."""


@register_layer
class MambaLayer(Module):
    """One residual layer (Hugging Face's ``MambaBlock``): x + mixer(norm(x)), ``norm`` an
    RMSNorm and ``mixer`` a :class:`lamina.nn.MambaBlock`; ``mixer_options`` go to it."""

    streamable = True

    def __init__(self, hidden_size: int, layer_norm_epsilon: float = 1e-5, name: str | None = None,
                 **mixer_options):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "MambaLayer: hidden_size")
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.norm = RMSNorm(hidden_size, eps=self.layer_norm_epsilon)
        self.mixer = MambaBlock(hidden_size, **mixer_options)

    def build(self, input_shape) -> None:
        for layer in (self.norm, self.mixer):
            if not layer.built:
                layer.build(tuple(input_shape))
                layer.built = True
        self.built = True

    def forward(self, x, attention_mask=None) -> Tensor:
        x = as_tensor(x)
        return F.add(x, self.mixer(self.norm(x), attention_mask=attention_mask))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        mixer = self.mixer.get_config()
        mixer.pop("name")
        return {**mixer, "layer_norm_epsilon": self.layer_norm_epsilon, "name": self.name}


@register_layer
class MambaBackbone(Module):
    """Hugging Face's ``MambaModel``: token ids (N, T) -> norm_f(h_L) (N, T, hidden_size);
    sub-modules ``embeddings``, ``layers`` (a ModuleList of :class:`MambaLayer`) and
    ``norm_f``. ``layer_options`` go to every layer."""

    streamable = True

    def __init__(self, vocab_size: int, hidden_size: int, num_hidden_layers: int, layer_norm_epsilon: float = 1e-5,
                 initializer_range: float = 0.1, name: str | None = None, **layer_options):
        super().__init__(name=name)
        self.embeddings = Embedding(vocab_size, hidden_size,
                                    embeddings_init=initializers.normal(std=float(initializer_range)))
        self.layers = ModuleList([MambaLayer(hidden_size, layer_norm_epsilon, initializer_range=initializer_range,
                                             **layer_options) for _ in range(num_hidden_layers)])
        self.norm_f = RMSNorm(hidden_size, eps=float(layer_norm_epsilon))

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        hidden = ids + (self.embeddings.output_dim,)
        for layer, shape in ((self.embeddings, ids), *((block, hidden) for block in self.layers),
                             (self.norm_f, hidden)):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids, attention_mask=None) -> Tensor:
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, attention_mask=attention_mask)
        return self.norm_f(x)


@register_layer
class Mamba(GenerationMixin, Module):
    """Mamba language model (Hugging Face's ``MambaForCausalLM``): token ids (N, T) ->
    next-token scores (N, T, ``vocab_size``) (formulas in the module docstring).

    The arguments are ``MambaConfig``'s, with its defaults: ``state_size`` S,
    ``expand`` (I = expand * hidden_size), ``conv_kernel``, ``time_step_rank`` ('auto':
    ceil(hidden_size / 16)), the dt initialisation (``time_step_min`` / ``max`` / ``floor`` /
    ``scale`` / ``init_scheme``), ``use_bias``, ``use_conv_bias``. The embeddings start
    N(0, ``initializer_range``) (the mixers as :class:`lamina.nn.MambaBlock` says);
    ``rescale_prenorm_residual`` divides each out_proj by sqrt(num_hidden_layers).
    ``tie_word_embeddings`` (default True): the scores are norm_f(h) E^T; False adds an
    ``lm_head`` (Dense without bias). Hugging Face keeps the residual stream in float32
    (``residual_in_fp32``); lamina's models compute in their own dtype throughout.

    ``model(ids, attention_mask=None)``: ``attention_mask`` (N, T), 0 on the padding steps of
    the call (see :class:`lamina.nn.MambaBlock`), so that a left-padded row's scores are those
    of its real tokens alone. There is no context limit (no positions): the samplers of :mod:`lamina.text` carry the
    mixers' states and read one token per call (see the module docstring).
    """

    streamable = True

    def __init__(self, vocab_size: int = 50280, hidden_size: int = 768, state_size: int = 16,
                 num_hidden_layers: int = 32, layer_norm_epsilon: float = 1e-5, expand: int = 2,
                 conv_kernel: int = 4, use_bias: bool = False, use_conv_bias: bool = True,
                 initializer_range: float = 0.1, time_step_rank="auto", time_step_scale: float = 1.0,
                 time_step_min: float = 0.001, time_step_max: float = 0.1, time_step_init_scheme: str = "random",
                 time_step_floor: float = 1e-4, rescale_prenorm_residual: bool = False,
                 tie_word_embeddings: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "Mamba: vocab_size")
        self.hidden_size = positive_int(hidden_size, "Mamba: hidden_size")
        self.num_hidden_layers = positive_int(num_hidden_layers, "Mamba: num_hidden_layers")
        if not float(layer_norm_epsilon) > 0:
            raise ValueError(f"Mamba: layer_norm_epsilon must be > 0, got {layer_norm_epsilon!r}")
        self.rescale_prenorm_residual = bool(rescale_prenorm_residual)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.mixer_options = {
            "state_size": state_size, "expand": expand, "conv_kernel": conv_kernel, "use_bias": bool(use_bias),
            "use_conv_bias": bool(use_conv_bias), "time_step_rank": time_step_rank,
            "time_step_scale": float(time_step_scale), "time_step_min": float(time_step_min),
            "time_step_max": float(time_step_max), "time_step_init_scheme": time_step_init_scheme,
            "time_step_floor": float(time_step_floor)}
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_range = float(initializer_range)
        self.backbone = MambaBackbone(vocab_size, hidden_size, num_hidden_layers, self.layer_norm_epsilon,
                                      self.initializer_range, **self.mixer_options)
        if not self.tie_word_embeddings:
            self.lm_head = Dense(vocab_size, use_bias=False, kernel_init=initializers.normal(std=initializer_range))

    @property
    def mixers(self) -> list[MambaBlock]:
        return [layer.mixer for layer in self.backbone.layers]

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        if not self.backbone.built:
            self.backbone.build(ids)
            self.backbone.built = True
        if not self.tie_word_embeddings and not self.lm_head.built:
            self.lm_head.build(ids + (self.hidden_size,))
            self.lm_head.built = True
        if getattr(self, "build_input_shape", None) is None:      # built directly (by the loader): still saves
            object.__setattr__(self, "build_input_shape", ids)
        if self.rescale_prenorm_residual and not initializers.is_meta():
            for mixer in self.mixers:
                mixer.out_proj.weight.data = mixer.out_proj.weight.data / math.sqrt(self.num_hidden_layers)
        self.built = True

    def forward(self, ids, attention_mask=None) -> Tensor:
        x = self.backbone(ids, attention_mask=attention_mask)
        if self.tie_word_embeddings:
            return F.matmul(x, F.transpose(self.backbone.embeddings.weight, 1, 0))
        return self.lm_head(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers, "layer_norm_epsilon": self.layer_norm_epsilon,
                "initializer_range": self.initializer_range, **self.mixer_options,
                "rescale_prenorm_residual": self.rescale_prenorm_residual,
                "tie_word_embeddings": self.tie_word_embeddings, "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, "
                f"num_hidden_layers={self.num_hidden_layers}, state_size={self.mixer_options['state_size']}")


def mamba(config: str = "tiny", **options) -> Mamba:
    """The Mamba of Hugging Face configuration ``config`` (see :data:`MAMBA_CONFIGS`): 'tiny',
    '130m' (129,135,360 parameters), '370m' (371,516,416), '790m' (793,204,224), '1.4b'
    (1,372,178,432) or '2.8b' (2,768,345,600), all with the head tied; ``options`` override
    :class:`Mamba`'s arguments. Unbuilt: the weights are created on the first call or by
    ``model.build((None, 1))`` (inside :func:`lamina.nn.init.meta` they are shape-only)."""
    if config not in MAMBA_CONFIGS:
        raise ValueError(f"mamba: config must be one of {tuple(MAMBA_CONFIGS)}, got {config!r}")
    return Mamba(**{**MAMBA_CONFIGS[config], **options})


def mamba_parameter_count(vocab_size: int = 50280, hidden_size: int = 768, num_hidden_layers: int = 32,
                          state_size: int = 16, expand: int = 2, conv_kernel: int = 4, time_step_rank="auto",
                          use_bias: bool = False, use_conv_bias: bool = True, tie_word_embeddings: bool = True) -> int:
    """The parameters of :class:`Mamba` by formula, without building it: V E (table) + L (E
    (norm) + 2 E I (in_proj) + I k (+ I) (conv) + I (R + 2 S) (x_proj) + R I + I (dt_proj)
    + I S (A_log) + I (D) + I E (out_proj)) + E (norm_f) (+ V E untied), with I = expand E,
    R = time_step_rank and the in/out projection biases 3 I + E when ``use_bias``."""
    e = hidden_size
    i = expand * e
    r = math.ceil(e / 16) if time_step_rank == "auto" else time_step_rank
    mixer = 2 * e * i + i * conv_kernel + i * (r + 2 * state_size) + r * i + i + i * state_size + i + i * e
    mixer += i if use_conv_bias else 0
    mixer += 2 * i + e if use_bias else 0
    head = 0 if tie_word_embeddings else vocab_size * e
    return vocab_size * e + num_hidden_layers * (e + mixer) + e + head


# -- Hugging Face weights -------------------------------------------------------------------
def _conv_weight(key: str) -> HFWeight:
    """PyTorch's depthwise Conv1d weight (I, 1, k) as lamina's (I, k, 1)."""
    return HFWeight((key,), lambda w: w.transpose(0, 2, 1))


def hf_mamba_table(model: Mamba) -> dict[str, HFWeight]:
    """:class:`Mamba`'s state-dict key -> Hugging Face's ``MambaForCausalLM`` weight: the same
    names, ``Linear`` weights transposed, the conv weight's last two axes swapped."""
    table = {"backbone.embeddings.weight": copied("backbone.embeddings.weight"),
             "backbone.norm_f.weight": copied("backbone.norm_f.weight")}
    if not model.tie_word_embeddings:
        table["lm_head.weight"] = linear("lm_head.weight")
    options = model.mixer_options
    for n in range(model.num_hidden_layers):
        layer = f"backbone.layers.{n}."
        mixer = layer + "mixer."
        table[layer + "norm.weight"] = copied(layer + "norm.weight")
        for name in ("in_proj", "x_proj", "dt_proj", "out_proj"):
            table[f"{mixer}{name}.weight"] = linear(f"{mixer}{name}.weight")
        biases = ["dt_proj"] + (["in_proj", "out_proj"] if options["use_bias"] else [])
        for name in biases:
            table[f"{mixer}{name}.bias"] = copied(f"{mixer}{name}.bias")
        table[mixer + "conv1d.weight"] = _conv_weight(mixer + "conv1d.weight")
        if options["use_conv_bias"]:
            table[mixer + "conv1d.bias"] = copied(mixer + "conv1d.bias")
        table[mixer + "A_log"] = copied(mixer + "A_log")
        table[mixer + "D"] = copied(mixer + "D")
    return table


def load_hf_mamba_state_dict(model: Mamba, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Mamba weights into ``model``: ``state_dict`` maps
    ``MambaForCausalLM``'s names ('backbone.layers.0.mixer.in_proj.weight' ...; the original
    mamba_ssm checkpoints' 'backbone.embedding.weight' is read as 'backbone.embeddings.weight')
    to arrays or torch tensors, or names safetensors files (one file, shards, their index, a
    checkpoint folder; see :func:`lamina.models.hf_weights.read_state_dict`). ``Linear``
    weights (out, in) are transposed to lamina's (in, out), the depthwise conv weight
    (I, 1, k) to (I, k, 1); ``lm_head.weight`` of a tied model (a copy of the table) is
    ignored. An unbuilt model is built first. ``strict``: every weight present and every key
    used, else a KeyError listing them; a mis-shaped value raises :class:`lamina.ShapeError`."""
    who = "load_hf_mamba_state_dict"
    if not isinstance(model, Mamba):
        raise TypeError(f"{who}: expected a Mamba model, got {type(model).__name__}")
    arrays = read_state_dict(state_dict, who)
    arrays = {("backbone.embeddings." + key.removeprefix("backbone.embedding.")
               if key.startswith("backbone.embedding.") else key): value for key, value in arrays.items()}
    if not model.built:
        model.build((None, 1))
    load_hf_state_dict(model, arrays, hf_mamba_table(model),
                       lambda key: model.tie_word_embeddings and key == "lm_head.weight", strict, who)
