"""CLIP (Radford et al., "Learning transferable visual models from natural language
supervision", 2021) in the layout of Hugging Face's ``CLIPModel``, so that its published
weights load with :func:`load_hf_clip_state_dict`.

    vision:  z_0 = [c; patches(x) W_p] + E_pos        (a bias-free patch convolution, class embedding c)
             z_L = encoder(pre_layrnorm(z_0));  v = post_layernorm(z_L[:, 0]) W_v
    text:    h_0 = W_tok[ids] + W_pos[0 .. T - 1]
             h_L = final_layer_norm(causal encoder(h_0));  t = h_L[:, eos] W_t
    logits_per_text = exp(s) (t / |t|)(v / |v|)^T,  logits_per_image = its transpose
    loss = (CE(logits_per_text, diag) + CE(logits_per_image, diag)) / 2

Every encoder layer is pre-norm: x + attention(layer_norm1(x)), then x + fc2(act(fc1(
layer_norm2(x)))), act the config's ``hidden_act``: quick_gelu(z) = z sigma(1.702 z) (the
default, OpenAI's) or the exact gelu(z) = z Phi(z). The text is pooled at its end-of-text
token: the position of the highest id (Hugging Face's rule for the original tokenizer, whose
end-of-text token has the largest id) or, with ``eos_token_id``, the first position of that
id. ``s`` (``logit_scale``) starts at ln(1 / 0.07). Images are NHWC (lamina's layout); the
patch convolution's weight is (K, p, p, c), Hugging Face's (K, c, p, p) transposed on loading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.bert import _key_mask
from lamina.models.hf_weights import (
    ConfigBuiltModel,
    HFWeight,
    build_children,
    copied,
    joined_linear,
    linear,
    load_hf_state_dict,
    read_state_dict,
)
from lamina.models.id_inputs import token_ids
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import TransformerEncoderLayer

__all__ = ["CLIP", "CLIPEncoderLayer", "CLIPOutput", "CLIPTextTransformer", "CLIPVisionTransformer",
           "ZeroShotClassifier", "clip", "clip_parameter_count", "clip_tokenize", "load_hf_clip_state_dict",
           "zero_shot_classifier"]

INITIALIZER_RANGE = 0.02
LOGIT_SCALE_INIT = math.log(1 / 0.07)

HIDDEN_ACTS = ("quick_gelu", "gelu")
"""The feed-forward activations of Hugging Face's CLIP configs: z sigma(1.702 z) (OpenAI's
models) and the exact z Phi(z) (some later ones)."""

TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 8, "max_position_embeddings": 77, "layer_norm_eps": 1e-5,
                 "eos_token_id": None, "hidden_act": "quick_gelu"}
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
                   "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}
_NOT_SIZES = ("layer_norm_eps", "eos_token_id", "hidden_act")

CLIP_CONFIGS = {
    "vit_b_32": {"text_config": {}, "vision_config": {"patch_size": 32}, "projection_dim": 512},
    "vit_b_16": {"text_config": {}, "vision_config": {"patch_size": 16}, "projection_dim": 512},
    "vit_l_14": {"text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
                 "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                   "num_attention_heads": 16, "patch_size": 14},
                 "projection_dim": 768},
    "tiny": {"text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "max_position_embeddings": 16},
             "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "image_size": 16, "patch_size": 4},
             "projection_dim": 16},
}
"""openai/clip-vit-base-patch32, clip-vit-base-patch16, clip-vit-large-patch14, and a tiny one for tests."""


def _normal(std: float):
    return initializers.normal(std=std)


def _config(given: dict | None, defaults: dict, who: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{who}: unknown keys {unknown}; expected some of {sorted(defaults)}")
    config = {**defaults, **given}
    for key, value in config.items():
        if key not in _NOT_SIZES:
            positive_int(value, f"{who}: {key}")
    if config["hidden_act"] not in HIDDEN_ACTS:
        raise ValueError(f"{who}: hidden_act must be one of {HIDDEN_ACTS}, got {config['hidden_act']!r}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ValueError(f"{who}: hidden_size {config['hidden_size']} is not divisible by num_attention_heads "
                         f"{config['num_attention_heads']}")
    return config


@register_layer
class CLIPEncoderLayer(TransformerEncoderLayer):
    """One CLIP encoder layer: x + attention(layer_norm1(x)), then x + fc2(act(fc1(
    layer_norm2(x)))), act ``hidden_act`` ('quick_gelu' or the exact 'gelu'); a pre-norm
    encoder layer without dropout. Weights start as Hugging
    Face's: attention projections N(0, E^-1 (2 L)^-1) (the output projection N(0, E^-1)),
    fc1 N(0, (2 E)^-1), fc2 N(0, E^-1 (2 L)^-1), zero biases (L: ``num_layers`` of the tower)."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                 layer_norm_eps: float = 1e-5, causal: bool = False, num_layers: int = 1,
                 hidden_act: str = "quick_gelu", name: str | None = None):
        if hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"CLIPEncoderLayer: hidden_act must be one of {HIDDEN_ACTS}, got {hidden_act!r}")
        super().__init__(hidden_size, num_attention_heads, intermediate_size, dropout=0.0, activation=hidden_act,
                         norm_first=True, layer_norm_eps=layer_norm_eps, causal=causal, name=name)
        self.hidden_act = hidden_act
        self.num_layers = positive_int(num_layers, "CLIPEncoderLayer: num_layers")
        self._in_std = hidden_size ** -0.5 * (2 * num_layers) ** -0.5
        self.self_attention.kernel_init = _normal(self._in_std)
        self.linear1.kernel_init = _normal((2 * hidden_size) ** -0.5)
        self.linear2.kernel_init = _normal(self._in_std)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        out = self.self_attention.out_weight
        if not initializers.is_meta_array(out):     # the output projection: N(0, E^-1)
            out.data = out.data * ((self.d_model ** -0.5) / self._in_std)

    def _feed_forward(self, x) -> Tensor:
        return self.linear2(self.linear1(x))

    def get_config(self) -> dict:
        return {"hidden_size": self.d_model, "num_attention_heads": self.num_heads,
                "intermediate_size": self.dim_feedforward, "layer_norm_eps": self.layer_norm_eps,
                "causal": self.causal, "num_layers": self.num_layers, "hidden_act": self.hidden_act,
                "name": self.name}


def _layers(config: dict, causal: bool) -> ModuleList:
    n = config["num_hidden_layers"]
    return ModuleList([CLIPEncoderLayer(config["hidden_size"], config["num_attention_heads"],
                                        config["intermediate_size"], config["layer_norm_eps"], causal, n,
                                        config["hidden_act"])
                       for _ in range(n)])


@register_layer
class CLIPVisionTransformer(Module):
    """CLIP's image tower (Hugging Face's ``CLIPVisionTransformer``): NHWC images (N,
    image_size, image_size, num_channels) -> (last hidden states (N, 1 + P, E), pooled
    post_layernorm(z[:, 0]) (N, E)). Sub-modules ``patch_embedding`` (a bias-free Conv2D),
    ``position_embedding`` (an Embedding of 1 + P rows), ``pre_layrnorm``, ``layers``,
    ``post_layernorm``; parameter ``class_embedding`` (E,)."""

    def __init__(self, config: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        self.config = _config(config, VISION_DEFAULTS, "CLIPVisionTransformer")
        c = self.config
        if c["image_size"] % c["patch_size"]:
            raise ValueError(f"CLIPVisionTransformer: image_size {c['image_size']} is not a multiple of patch_size "
                             f"{c['patch_size']}")
        e, p = c["hidden_size"], c["patch_size"]
        self.num_positions = (c["image_size"] // p) ** 2 + 1
        self.patch_embedding = Conv2D(e, p, stride=p, use_bias=False, kernel_init=_normal(INITIALIZER_RANGE))
        self.position_embedding = Embedding(self.num_positions, e, embeddings_init=_normal(INITIALIZER_RANGE))
        self.pre_layrnorm = LayerNorm(-1, eps=c["layer_norm_eps"])
        self.layers = _layers(c, causal=False)
        self.post_layernorm = LayerNorm(-1, eps=c["layer_norm_eps"])

    def build(self, input_shape=None) -> None:
        c = self.config
        e, side = c["hidden_size"], c["image_size"]
        tokens = (None, self.num_positions, e)
        build_children([(self.patch_embedding, (None, side, side, c["num_channels"])),
                        (self.position_embedding, (None, self.num_positions)), (self.pre_layrnorm, tokens),
                        *((layer, tokens) for layer in self.layers), (self.post_layernorm, (None, e))])
        self.add_parameter("class_embedding", _normal(e ** -0.5)((e,), e, e, backend.get_default_dtype()))
        self.built = True

    def forward(self, pixel_values) -> tuple[Tensor, Tensor]:
        x = as_tensor(pixel_values)
        c = self.config
        expected = (c["image_size"], c["image_size"], c["num_channels"])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ShapeError(f"{self._label()}: expected NHWC images (batch, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got shape {tuple(x.shape)}")
        n, e = x.shape[0], c["hidden_size"]
        patches = F.reshape(self.patch_embedding(x), (n, -1, e))
        token = F.broadcast_to(F.reshape(self.class_embedding, (1, 1, e)), (n, 1, e))
        positions = np.broadcast_to(np.arange(self.num_positions), (n, self.num_positions))
        z = self.pre_layrnorm(F.add(F.concat([token, patches], axis=1), self.position_embedding(positions)))
        for layer in self.layers:
            z = layer(z)
        return z, self.post_layernorm(F.getitem(z, (slice(None), 0)))

    def get_config(self) -> dict:
        return {"config": dict(self.config), "name": self.name}


@register_layer
class CLIPTextTransformer(Module):
    """CLIP's text tower (Hugging Face's ``CLIPTextTransformer``): ids (N, T), T <=
    max_position_embeddings -> (last hidden states (N, T, E), pooled states at the
    end-of-text token (N, E); see the module docstring). Sub-modules ``token_embedding``,
    ``position_embedding``, ``layers`` (causal), ``final_layer_norm``. ``attention_mask``
    (N, T): 1 on tokens, 0 on padding, which no query attends to."""

    def __init__(self, config: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        self.config = _config(config, TEXT_DEFAULTS, "CLIPTextTransformer")
        c = self.config
        self.token_embedding = Embedding(c["vocab_size"], c["hidden_size"], embeddings_init=_normal(INITIALIZER_RANGE))
        self.position_embedding = Embedding(c["max_position_embeddings"], c["hidden_size"],
                                            embeddings_init=_normal(INITIALIZER_RANGE))
        self.layers = _layers(c, causal=True)
        self.final_layer_norm = LayerNorm(-1, eps=c["layer_norm_eps"])

    def build(self, input_shape=None) -> None:
        c = self.config
        ids, hidden = (None, c["max_position_embeddings"]), (None, c["max_position_embeddings"], c["hidden_size"])
        build_children([(self.token_embedding, ids), (self.position_embedding, ids),
                        *((layer, hidden) for layer in self.layers), (self.final_layer_norm, hidden)])
        self.built = True

    def eos_positions(self, ids: np.ndarray) -> np.ndarray:
        """The pooled position of each row: its highest id's, or the first ``eos_token_id``'s."""
        eos = self.config["eos_token_id"]
        if eos is None:
            return ids.argmax(axis=-1)
        found = ids == eos
        if not found.any(axis=-1).all():
            raise ValueError(f"{self._label()}: a row of the ids has no end-of-text token {eos}")
        return found.argmax(axis=-1)

    def forward(self, input_ids, attention_mask=None) -> tuple[Tensor, Tensor]:
        ids = token_ids(input_ids, self._label())
        n, t = ids.shape
        if t > self.config["max_position_embeddings"]:
            raise ShapeError(f"{self._label()}: the ids of shape {ids.shape} have {t} tokens, more than "
                             f"max_position_embeddings={self.config['max_position_embeddings']}")
        key_mask = _key_mask(attention_mask, ids.shape, self._label())
        h = F.add(self.token_embedding(ids), self.position_embedding(np.broadcast_to(np.arange(t), (n, t))))
        for layer in self.layers:
            h = layer(h, key_mask=key_mask)
        h = self.final_layer_norm(h)
        return h, F.getitem(h, (np.arange(n), self.eos_positions(ids)))

    def get_config(self) -> dict:
        return {"config": dict(self.config), "name": self.name}


@dataclass
class CLIPOutput:
    """What :class:`CLIP` returns: the similarity logits both ways, the normalised embeddings,
    and the symmetric contrastive loss (None unless asked for)."""

    logits_per_image: Tensor
    logits_per_text: Tensor
    image_embeds: Tensor
    text_embeds: Tensor
    loss: Tensor | None = None


def clip_loss(logits_per_text: Tensor) -> Tensor:
    """(CE(S, diag) + CE(S^T, diag)) / 2 for the (N, N) similarities S of N matching pairs."""
    target = np.arange(logits_per_text.shape[0])
    return F.mul(F.add(F.cross_entropy(logits_per_text, target),
                       F.cross_entropy(F.transpose(logits_per_text, 1, 0), target)), 0.5)


@register_layer
class CLIP(ConfigBuiltModel):
    """Hugging Face's ``CLIPModel`` (see the module docstring): ``model(pixel_values,
    input_ids, attention_mask=None, return_loss=False)`` -> :class:`CLIPOutput`.

    ``text_config`` and ``vision_config`` take Hugging Face's ``CLIPTextConfig`` and
    ``CLIPVisionConfig`` keys (hidden_size, intermediate_size, num_hidden_layers,
    num_attention_heads, layer_norm_eps, hidden_act; vocab_size, max_position_embeddings, eos_token_id;
    image_size, patch_size, num_channels); the defaults are ViT-B/32's. Sub-modules
    ``text_model``, ``vision_model``, ``visual_projection``, ``text_projection`` (bias-free);
    parameter ``logit_scale`` (a scalar, the log of the logits' multiplier)."""

    def __init__(self, text_config: dict | None = None, vision_config: dict | None = None,
                 projection_dim: int = 512, logit_scale_init_value: float = LOGIT_SCALE_INIT,
                 name: str | None = None):
        super().__init__(name=name)
        self.projection_dim = positive_int(projection_dim, "CLIP: projection_dim")
        self.logit_scale_init_value = float(logit_scale_init_value)
        self.text_model = CLIPTextTransformer(text_config)
        self.text_config = self.text_model.config
        self._add_image_tower(vision_config)
        self.text_projection = Dense(projection_dim, use_bias=False,
                                     kernel_init=_normal(self.text_config["hidden_size"] ** -0.5))

    # -- the image tower: a subclass with another tower overrides these three -------------------
    def _add_image_tower(self, vision_config: dict | None) -> None:
        self.vision_model = CLIPVisionTransformer(vision_config)
        self.vision_config = self.vision_model.config
        self.visual_projection = Dense(self.projection_dim, use_bias=False,
                                       kernel_init=_normal(self.vision_config["hidden_size"] ** -0.5))

    def _image_tower_shapes(self) -> list:
        return [(self.vision_model, None), (self.visual_projection, (None, self.vision_config["hidden_size"]))]

    def _image_features(self, pixel_values) -> Tensor:
        return self.visual_projection(self.vision_model(pixel_values)[1])

    def build(self, input_shape=None) -> None:
        build_children([(self.text_model, None), *self._image_tower_shapes(),
                        (self.text_projection, (None, self.text_config["hidden_size"]))])
        dtype = backend.get_default_dtype()
        self.add_parameter("logit_scale", backend.xp.asarray(self.logit_scale_init_value, dtype=dtype))
        self.built = True

    def get_image_features(self, pixel_values) -> Tensor:
        """The image tower's embeddings (N, projection_dim), not normalised: here
        visual_projection(pooled image states)."""
        self._ensure_built()
        return self._image_features(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None) -> Tensor:
        """text_projection(pooled text states): (N, projection_dim), not normalised."""
        self._ensure_built()
        return self.text_projection(self.text_model(input_ids, attention_mask)[1])

    def forward(self, pixel_values, input_ids, attention_mask=None, return_loss: bool = False) -> CLIPOutput:
        image_embeds = F.normalize(self.get_image_features(pixel_values), axis=-1)
        text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask), axis=-1)
        logits_per_text = F.mul(F.matmul(text_embeds, F.transpose(image_embeds, 1, 0)), F.exp(self.logit_scale))
        logits_per_image = F.transpose(logits_per_text, 1, 0)
        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ShapeError(f"{self._label()}: return_loss needs as many texts as images (matching pairs), got "
                                 f"{logits_per_text.shape[0]} texts and {logits_per_text.shape[1]} images")
            loss = clip_loss(logits_per_text)
        return CLIPOutput(logits_per_image, logits_per_text, image_embeds, text_embeds, loss)

    def get_config(self) -> dict:
        return {"text_config": dict(self.text_config), "vision_config": dict(self.vision_config),
                "projection_dim": self.projection_dim, "logit_scale_init_value": self.logit_scale_init_value,
                "name": self.name}

    def extra_repr(self) -> str:
        v, t = self.vision_config, self.text_config
        return (f"vision={v['hidden_size']}x{v['num_hidden_layers']} patch {v['patch_size']} at {v['image_size']}, "
                f"text={t['hidden_size']}x{t['num_hidden_layers']}, projection_dim={self.projection_dim}")


def clip(config: str = "vit_b_32", **options) -> CLIP:
    """Hugging Face's CLIP of ``config`` 'vit_b_32' (openai/clip-vit-base-patch32,
    151,277,313 parameters), 'vit_b_16' (149,620,737), 'vit_l_14' (427,616,513) or 'tiny' (a
    few tens of thousands, for tests); ``options`` override :class:`CLIP`'s arguments
    (``text_config`` / ``vision_config`` entries are merged). Unbuilt: the weights are
    created on the first call or by ``model.build()``."""
    if config not in CLIP_CONFIGS:
        raise ValueError(f"clip: config must be one of {tuple(CLIP_CONFIGS)}, got {config!r}")
    base = CLIP_CONFIGS[config]
    merged = {**base, **options}
    for key in ("text_config", "vision_config"):
        merged[key] = {**base[key], **options.get(key, {})}
    return CLIP(**merged)


def _tower_count(config: dict, embeddings: int) -> int:
    e, f = config["hidden_size"], config["intermediate_size"]
    layer = 4 * e * e + 4 * e + 2 * e * f + f + e + 4 * e
    return embeddings + config["num_hidden_layers"] * layer


def clip_parameter_count(config: str = "vit_b_32") -> int:
    """The parameters of :func:`clip` ``(config)`` by formula, without building it:
    text (V + T) E_t + L_t layer + 2 E_t; vision c p^2 E_v + E_v + (P + 1) E_v + L_v layer
    + 4 E_v; projections (E_v + E_t) D; 1 (logit_scale), with layer = 4 E^2 + 4 E + 2 E F + F
    + E + 4 E (attention, MLP, two LayerNorms)."""
    model = clip(config)
    t, v, d = model.text_config, model.vision_config, model.projection_dim
    text = _tower_count(t, (t["vocab_size"] + t["max_position_embeddings"]) * t["hidden_size"] + 2 * t["hidden_size"])
    e = v["hidden_size"]
    patches = v["num_channels"] * v["patch_size"] ** 2 * e
    vision = _tower_count(v, patches + e + model.vision_model.num_positions * e + 4 * e)
    return text + vision + (e + t["hidden_size"]) * d + 1


# -- zero-shot classification ---------------------------------------------------------------
def clip_tokenize(tokenizer, texts: Sequence[str], context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask), both (N, T) with T <= ``context_length``, for ``texts`` by a
    lamina tokenizer (:class:`~lamina.text.BPETokenizer`, :class:`~lamina.text.GPT2Tokenizer`):
    each text framed by the tokenizer's bos (when it has one) and eos ids, cut to
    ``context_length`` keeping the eos last, padded with the pad id (the eos id when there is
    none). ``tokenizer`` may also be a callable giving the ids (N, T) itself."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not hasattr(tokenizer, "encode"):
        ids = np.asarray(tokenizer(texts))
        return ids, np.ones_like(ids)
    eos, bos = tokenizer.eos_id, tokenizer.bos_id
    if eos is None:
        raise ValueError("clip_tokenize: the tokenizer has no eos token, which CLIP pools the text at")
    pad = eos if tokenizer.pad_id is None else tokenizer.pad_id
    rows = []
    for text in texts:
        row = tokenizer.encode(text, add_bos=bos is not None)[:context_length - 1] + [eos]
        rows.append(row)
    length = max(len(row) for row in rows)
    ids = np.full((len(rows), length), pad, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    return ids, mask


class ZeroShotClassifier:
    """Images -> class probabilities softmax(exp(s) (v / |v|) W^T) against ``class_embeddings``
    W (C, D), one normalised text embedding per class."""

    def __init__(self, model: CLIP, class_embeddings: np.ndarray, class_names: Sequence[str]):
        self.model, self.class_embeddings, self.class_names = model, class_embeddings, list(class_names)

    def logits(self, images) -> np.ndarray:
        with no_grad():
            v = F.normalize(self.model.get_image_features(images), axis=-1).numpy()
            scale = float(np.exp(self.model.logit_scale.numpy()))
        return scale * v @ self.class_embeddings.T

    def __call__(self, images) -> np.ndarray:
        z = self.logits(images)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def predict(self, images) -> np.ndarray:
        """The most probable class index of each image."""
        return self.logits(images).argmax(axis=-1)


def zero_shot_classifier(model: CLIP, tokenizer, class_names: Sequence[str],
                         templates: Sequence[str] = ("a photo of a {}.",)) -> ZeroShotClassifier:
    """A zero-shot classifier over ``class_names``: each class's embedding is the mean of the
    normalised text embeddings of ``template.format(name)`` over ``templates``, normalised
    again; the returned :class:`ZeroShotClassifier` maps NHWC images to (N, C) probabilities.
    ``tokenizer``: as :func:`clip_tokenize` takes it."""
    who = "zero_shot_classifier"
    if not isinstance(model, CLIP):
        raise TypeError(f"{who}: expected a CLIP model, got {type(model).__name__}")
    class_names, templates = list(class_names), [templates] if isinstance(templates, str) else list(templates)
    if not class_names or not templates:
        raise ValueError(f"{who}: needs at least one class name and one template, got {len(class_names)} class "
                         f"names and {len(templates)} templates")
    if any("{}" not in t for t in templates):
        raise ValueError(f"{who}: every template needs a '{{}}' for the class name, got {templates}")
    embeddings = []
    context = model.text_config["max_position_embeddings"]
    with no_grad():
        for name in class_names:
            ids, mask = clip_tokenize(tokenizer, [t.format(name) for t in templates], context)
            per_template = F.normalize(model.get_text_features(ids, mask), axis=-1).numpy()
            mean = per_template.mean(axis=0)
            embeddings.append(mean / np.linalg.norm(mean))
    return ZeroShotClassifier(model, np.stack(embeddings), class_names)


# -- Hugging Face weights -------------------------------------------------------------------
def _layer_table(hf: str, ours: str) -> dict[str, HFWeight]:
    qkv = [f"{hf}self_attn.{part}_proj" for part in ("q", "k", "v")]
    return {
        f"{ours}self_attention.in_weight": joined_linear(*(f"{key}.weight" for key in qkv)),
        f"{ours}self_attention.in_bias": joined_linear(*(f"{key}.bias" for key in qkv)),
        f"{ours}self_attention.out_weight": linear(f"{hf}self_attn.out_proj.weight"),
        f"{ours}self_attention.out_bias": copied(f"{hf}self_attn.out_proj.bias"),
        f"{ours}norm1.weight": copied(f"{hf}layer_norm1.weight"), f"{ours}norm1.bias": copied(f"{hf}layer_norm1.bias"),
        f"{ours}linear1.weight": linear(f"{hf}mlp.fc1.weight"), f"{ours}linear1.bias": copied(f"{hf}mlp.fc1.bias"),
        f"{ours}linear2.weight": linear(f"{hf}mlp.fc2.weight"), f"{ours}linear2.bias": copied(f"{hf}mlp.fc2.bias"),
        f"{ours}norm2.weight": copied(f"{hf}layer_norm2.weight"), f"{ours}norm2.bias": copied(f"{hf}layer_norm2.bias"),
    }


def _patch_conv(key: str) -> HFWeight:
    """A PyTorch Conv2d weight (K, c, p, p) as lamina's (K, p, p, c)."""
    return HFWeight((key,), lambda w: np.transpose(w, (0, 2, 3, 1)))


def hf_clip_table(model: CLIP) -> dict[str, HFWeight]:
    """:class:`CLIP`'s state-dict key -> Hugging Face's ``CLIPModel`` weight."""
    table = {"logit_scale": copied("logit_scale"), "visual_projection.weight": linear("visual_projection.weight"),
             "text_projection.weight": linear("text_projection.weight")}
    t, v = "text_model.", "vision_model."
    for ours in ("token_embedding", "position_embedding"):
        table[f"{t}{ours}.weight"] = copied(f"{t}embeddings.{ours}.weight")
    table[f"{v}class_embedding"] = copied(f"{v}embeddings.class_embedding")
    table[f"{v}patch_embedding.weight"] = _patch_conv(f"{v}embeddings.patch_embedding.weight")
    table[f"{v}position_embedding.weight"] = copied(f"{v}embeddings.position_embedding.weight")
    for prefix, norms, config in ((t, ("final_layer_norm",), model.text_config),
                                  (v, ("pre_layrnorm", "post_layernorm"), model.vision_config)):
        for norm in norms:
            table.update({f"{prefix}{norm}.{p}": copied(f"{prefix}{norm}.{p}") for p in ("weight", "bias")})
        for i in range(config["num_hidden_layers"]):
            table.update(_layer_table(f"{prefix}encoder.layers.{i}.", f"{prefix}layers.{i}."))
    return table


def load_hf_clip_state_dict(model: CLIP, state_dict, strict: bool = True) -> None:
    """Load Hugging Face ``CLIPModel`` weights into ``model``: ``state_dict`` maps Hugging
    Face's names ('vision_model.encoder.layers.0.self_attn.q_proj.weight', ...) to arrays or
    torch tensors, or is the path of a .safetensors file. ``Linear`` weights (out, in) are
    transposed; each layer's q, k and v projections are joined into the attention's
    ``in_weight``; the patch convolution (K, c, p, p) becomes (K, p, p, c). The
    ``position_ids`` buffers are ignored. An unbuilt model is built first. ``strict``: every
    weight present and every other key used, else a KeyError listing them; a mis-shaped
    value raises :class:`lamina.ShapeError`."""
    who = "load_hf_clip_state_dict"
    if not isinstance(model, CLIP):
        raise TypeError(f"{who}: expected a CLIP model, got {type(model).__name__}")
    arrays = read_state_dict(state_dict, who)
    model._ensure_built()
    ignored: Callable[[str], bool] = lambda key: key.endswith("position_ids")  # noqa: E731
    load_hf_state_dict(model, arrays, hf_clip_table(model), ignored, strict, who)
