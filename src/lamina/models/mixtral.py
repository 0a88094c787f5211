"""Mixtral (Jiang et al., "Mixtral of Experts", 2024) in the layout of Hugging Face's
``MixtralForCausalLM``: a :class:`~lamina.models.Llama` whose feed-forward network is a
sparse mixture of ``num_local_experts`` SwiGLU experts, of which each token uses the
``num_experts_per_tok`` (k) best:

    z = gate(x)                         router logits (E,),  p = softmax(z)
    S = the k experts of largest p_e,   y = sum_{e in S} (p_e / sum_{e' in S} p_e') f_e(x)
    f_e(x) = w2_e(silu(w1_e x) * w3_e x)

(Hugging Face's ``MixtralSparseMoeBlock``; an expert runs only on the tokens routed to it).
The load-balancing loss of Hugging Face's ``load_balancing_loss_func`` (Switch Transformer's,
over the tokens of every block together, M of them):

    aux = E sum_e f_e P_e,  f_e = (1/M) #{tokens whose top k holds e},  P_e = (1/M) sum_x p_e(x)

is ``model.router_aux_loss`` after each call (a scalar on the graph; Hugging Face adds
``router_aux_loss_coef`` times it to the training loss); with a ``key_mask`` only the real
tokens count. The experts are :class:`~lamina.models.LlamaMLP` s, ``w1``, ``w3`` and ``w2``
being their ``gate_proj``, ``up_proj`` and ``down_proj``. In training, ``router_jitter_noise``
eps > 0 multiplies each block's input by noise u ~ U(1 - eps, 1 + eps), drawn per element from
:func:`lamina.backend.rng`, before the router (and the experts, which see the same x u), as
Hugging Face's block does; in evaluation the input passes unchanged.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.hf_weights import HFWeight, build_children, linear
from lamina.models.llama import Llama, LlamaDecoderLayer, LlamaMLP, hf_llama_table, load_hf_decoder_weights
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MIXTRAL_CONFIGS", "Mixtral", "MixtralDecoderLayer", "MixtralSparseMoeBlock", "load_balancing_loss",
           "load_hf_mixtral_state_dict", "mixtral", "mixtral_parameter_count"]

MIXTRAL_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
             "num_local_experts": 4, "num_experts_per_tok": 2},
    "mixtral_8x7b": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
                     "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "num_local_experts": 8,
                     "num_experts_per_tok": 2},
}
"""Hugging Face configurations: a small 'tiny' one (4 experts) and Mixtral-8x7B-v0.1."""


@register_layer
class MixtralSparseMoeBlock(Module):
    """Top-k routed SwiGLU experts on (N, T, hidden_size) (see the module docstring): the
    router ``gate`` (a Dense without bias, hidden -> E) and ``experts`` (a ModuleList of
    :class:`~lamina.models.LlamaMLP`). ``router_logits`` (N T, E) holds the last call's logits.
    ``router_jitter_noise`` eps >= 0: in training, the input times U(1 - eps, 1 + eps) noise."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_local_experts: int = 8,
                 num_experts_per_tok: int = 2, initializer_range: float = 0.02, router_jitter_noise: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "MixtralSparseMoeBlock: hidden_size")
        self.num_local_experts = positive_int(num_local_experts, "MixtralSparseMoeBlock: num_local_experts")
        self.num_experts_per_tok = positive_int(num_experts_per_tok, "MixtralSparseMoeBlock: num_experts_per_tok")
        if num_experts_per_tok > num_local_experts:
            raise ValueError(f"MixtralSparseMoeBlock: num_experts_per_tok {num_experts_per_tok} is more than the "
                             f"{num_local_experts} experts")
        self.initializer_range = float(initializer_range)
        self.router_jitter_noise = _jitter_noise(router_jitter_noise, "MixtralSparseMoeBlock")
        self.gate = Dense(num_local_experts, use_bias=False, kernel_init=initializers.normal(std=initializer_range))
        self.experts = ModuleList([LlamaMLP(hidden_size, intermediate_size, initializer_range=initializer_range)
                                   for _ in range(num_local_experts)])
        self.router_logits = None

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        build_children([(self.gate, shape), *((expert, shape) for expert in self.experts)])
        self.experts.built = True
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        xp = backend.xp
        flat = F.reshape(x, -1, self.hidden_size)
        if self.training and self.router_jitter_noise > 0:
            flat = flat * Tensor._wrap(self._jitter(flat.shape, flat.dtype))
        m, k = flat.shape[0], self.num_experts_per_tok
        logits = self.gate(flat)
        self.router_logits = logits
        probs = F.softmax(logits, axis=-1)
        chosen = xp.argsort(-probs.data, axis=-1, kind="stable")[:, :k]       # (M, k), best first
        top = F.gather(probs, 1, chosen)
        gates = top / top.sum(axis=1, keepdims=True)
        # assignment a = s M + t: slot s of token t; each expert runs on its tokens only
        experts, tokens = chosen.T.reshape(-1), xp.tile(xp.arange(m), k)
        outputs, row_of, filled = [], xp.empty(m * k, dtype=np.int64), 0
        for e, expert in enumerate(self.experts):
            members = xp.nonzero(experts == e)[0]
            if members.size:
                outputs.append(expert(F.take_rows(flat, tokens[members])))
                row_of[members] = filled + xp.arange(members.size)
                filled += members.size
        per_slot = F.reshape(F.take_rows(F.concat(outputs, axis=0), row_of), k, m, self.hidden_size)
        y = (per_slot * F.reshape(F.transpose(gates), k, m, 1)).sum(axis=0)
        return F.reshape(y, *x.shape)

    def _jitter(self, shape, dtype):
        """Noise U(1 - eps, 1 + eps) of ``shape``, eps = ``router_jitter_noise``."""
        eps = self.router_jitter_noise
        return backend.xp.asarray(backend.rng().uniform(1.0 - eps, 1.0 + eps, size=tuple(shape)).astype(dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "intermediate_size": self.experts[0].intermediate_size,
                "num_local_experts": self.num_local_experts, "num_experts_per_tok": self.num_experts_per_tok,
                "initializer_range": self.initializer_range, "router_jitter_noise": self.router_jitter_noise,
                "name": self.name}


def _jitter_noise(value: float, who: str) -> float:
    """``value`` as a float, checked to be a finite number >= 0."""
    eps = float(value)
    if not 0.0 <= eps < float("inf"):
        raise ValueError(f"{who}: router_jitter_noise must be a finite number >= 0, got {value!r}")
    return eps


def load_balancing_loss(router_logits, num_experts: int, top_k: int, token_mask=None) -> Tensor:
    """Hugging Face's ``load_balancing_loss_func``: E sum_e f_e P_e over the router logits of
    every block (a list of (M, E) tensors, the same M tokens in each), f_e the share of
    (token, block) pairs whose top ``top_k`` holds e, P_e the mean probability of e;
    ``token_mask`` (M,) (True = a real token) restricts both means to the real tokens."""
    logits = F.concat(list(router_logits), axis=0)
    probs = F.softmax(logits, axis=-1)
    xp = backend.xp
    chosen = xp.argsort(-probs.data, axis=-1, kind="stable")[:, :top_k]
    picked = xp.zeros(probs.shape, dtype=probs.dtype)
    np.put_along_axis(picked, chosen, 1.0, axis=-1)
    if token_mask is None:
        weights = xp.full((probs.shape[0], 1), 1.0 / probs.shape[0], dtype=probs.dtype)
    else:
        real = xp.tile(xp.asarray(token_mask, dtype=probs.dtype).reshape(-1), len(router_logits))
        weights = (real / real.sum())[:, None]
    share = (picked * weights).sum(axis=0)
    mean_probability = (probs * Tensor._wrap(weights)).sum(axis=0)
    return (mean_probability * Tensor._wrap(share)).sum() * num_experts


@register_layer
class MixtralDecoderLayer(LlamaDecoderLayer):
    """A :class:`~lamina.models.LlamaDecoderLayer` whose MLP is a
    :class:`MixtralSparseMoeBlock`, ``block_sparse_moe`` (Hugging Face's name)."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int, *args,
                 num_local_experts: int = 8, num_experts_per_tok: int = 2, router_jitter_noise: float = 0.0,
                 **kwargs):
        super().__init__(hidden_size, num_attention_heads, intermediate_size, *args, **kwargs)
        del self._modules["mlp"]
        self.block_sparse_moe = MixtralSparseMoeBlock(hidden_size, intermediate_size, num_local_experts,
                                                      num_experts_per_tok, kwargs.get("initializer_range", 0.02),
                                                      router_jitter_noise)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        build_children((layer, shape) for layer in (self.input_layernorm, self.self_attn,
                                                    self.post_attention_layernorm, self.block_sparse_moe))
        self.built = True

    def forward(self, x, key_mask=None, position_ids=None) -> Tensor:
        x = as_tensor(x)
        attended = self.self_attn(self.input_layernorm(x), key_mask=key_mask, causal=True, positions=position_ids)
        x = F.add(x, attended)
        return F.add(x, self.block_sparse_moe(self.post_attention_layernorm(x)))

    def get_config(self) -> dict:
        moe = self.block_sparse_moe
        return {**super().get_config(), "num_local_experts": moe.num_local_experts,
                "num_experts_per_tok": moe.num_experts_per_tok, "router_jitter_noise": moe.router_jitter_noise}


@register_layer
class Mixtral(Llama):
    """Mixtral language model (Hugging Face's ``MixtralForCausalLM``): a :class:`Llama` with
    ``MixtralConfig``'s defaults (Mixtral-8x7B's sizes) whose blocks are
    :class:`MixtralDecoderLayer` s of ``num_local_experts`` experts, ``num_experts_per_tok``
    per token. After each call ``router_aux_loss`` is the load-balancing loss of its tokens
    (see the module docstring) and ``router_aux_loss_coef`` the weight Hugging Face gives it;
    ``router_jitter_noise`` (default 0: none) the training noise on each router's input.
    Other arguments and the call are Llama's."""

    def __init__(self, vocab_size: int = 32000, hidden_size: int = 4096, intermediate_size: int = 14336,
                 num_hidden_layers: int = 32, num_attention_heads: int = 32, num_key_value_heads: int | None = 8,
                 max_position_embeddings: int = 131072, rms_norm_eps: float = 1e-5, rope_theta: float = 1e6,
                 num_local_experts: int = 8, num_experts_per_tok: int = 2, router_aux_loss_coef: float = 0.001,
                 router_jitter_noise: float = 0.0, **options):
        Module.__init__(self, name=options.get("name"))     # the options layer_arguments reads, set first
        self.num_local_experts = positive_int(num_local_experts, "Mixtral: num_local_experts")
        self.num_experts_per_tok = positive_int(num_experts_per_tok, "Mixtral: num_experts_per_tok")
        self.router_aux_loss_coef = float(router_aux_loss_coef)
        self.router_jitter_noise = _jitter_noise(router_jitter_noise, "Mixtral")
        self.router_aux_loss = None
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                         rms_norm_eps=rms_norm_eps, rope_theta=rope_theta, **options)

    def decoder_layer(self, index: int) -> MixtralDecoderLayer:
        return MixtralDecoderLayer(**self.layer_arguments(index), num_local_experts=self.num_local_experts,
                                   num_experts_per_tok=self.num_experts_per_tok,
                                   router_jitter_noise=self.router_jitter_noise)

    def forward(self, ids, key_mask=None, position_ids=None) -> Tensor:
        scores = super().forward(ids, key_mask=key_mask, position_ids=position_ids)
        steps = scores.shape[1]
        mask = key_mask.data if isinstance(key_mask, Tensor) else key_mask
        mask = None if mask is None else np.asarray(mask)[:, -steps:]       # this call's tokens
        self.router_aux_loss = load_balancing_loss([layer.block_sparse_moe.router_logits for layer in self.layers],
                                                   self.num_local_experts, self.num_experts_per_tok, mask)
        return scores

    def get_config(self) -> dict:
        return {**super().get_config(), "num_local_experts": self.num_local_experts,
                "num_experts_per_tok": self.num_experts_per_tok, "router_aux_loss_coef": self.router_aux_loss_coef,
                "router_jitter_noise": self.router_jitter_noise}


def mixtral(config: str = "tiny", **options) -> Mixtral:
    """The Mixtral of Hugging Face configuration ``config`` (see :data:`MIXTRAL_CONFIGS`): 'tiny'
    or 'mixtral_8x7b' (46,702,792,704 parameters); ``options`` override :class:`Mixtral`'s
    arguments. Unbuilt, as :func:`lamina.models.llama`."""
    if config not in MIXTRAL_CONFIGS:
        raise ValueError(f"mixtral: config must be one of {tuple(MIXTRAL_CONFIGS)}, got {config!r}")
    return Mixtral(**{**MIXTRAL_CONFIGS[config], **options})


def mixtral_parameter_count(vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                            num_attention_heads: int, num_key_value_heads: int, num_local_experts: int,
                            tie_word_embeddings: bool = False) -> int:
    """The parameters of :class:`Mixtral` by formula, without building it: 2 V E (table and
    head, V E when tied) + L (2 E h d + 2 E g d (attention) + X (3 E F) (experts) + E X (router)
    + 2 E (norms)) + E (norm), d = E / h."""
    e, x = hidden_size, num_local_experts
    d = e // num_attention_heads
    block = 2 * e * e + 2 * e * d * num_key_value_heads + x * 3 * e * intermediate_size + e * x + 2 * e
    return vocab_size * e * (1 if tie_word_embeddings else 2) + num_hidden_layers * block + e


def hf_mixtral_table(model: Mixtral) -> dict[str, HFWeight]:
    """:class:`Mixtral`'s state-dict key -> Hugging Face weight: Llama's table without the MLP,
    with each block's router ``block_sparse_moe.gate`` and experts ``experts.j.w1`` (gate),
    ``w3`` (up) and ``w2`` (down)."""
    table = {key: weight for key, weight in hf_llama_table(model).items() if ".mlp." not in key}
    for i in range(model.num_hidden_layers):
        moe = f"layers.{i}.block_sparse_moe."
        table[moe + "gate.weight"] = linear(moe + "gate.weight")
        for j in range(model.num_local_experts):
            for ours, theirs in (("gate_proj", "w1"), ("up_proj", "w3"), ("down_proj", "w2")):
                table[f"{moe}experts.{j}.{ours}.weight"] = linear(f"{moe}experts.{j}.{theirs}.weight")
    return table


def load_hf_mixtral_state_dict(model: Mixtral, state_dict, strict: bool = True) -> None:
    """Load Hugging Face Mixtral weights (``MixtralForCausalLM``'s names: Llama's attention and
    norms, 'model.layers.0.block_sparse_moe.gate.weight', '...experts.3.w1.weight' ...) into
    ``model``; sources and checks as :func:`lamina.models.load_hf_llama_state_dict`."""
    load_hf_decoder_weights(model, state_dict, Mixtral, hf_mixtral_table, strict, "load_hf_mixtral_state_dict")
