"""wav2vec 2.0 (Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
Representations", 2020) with a CTC head, in the layout of Hugging Face's ``Wav2Vec2ForCTC``, so
that its published weights load with
:func:`lamina.models.wav2vec2_weights.load_hf_wav2vec2_state_dict`.

Input: raw 16 kHz audio, each utterance normalised to zero mean and unit variance
(:func:`~lamina.models.wav2vec2_features.wav2vec2_input_values`, as HF's ``Wav2Vec2FeatureExtractor``):

    x = (a - mean(a)) / sqrt(var(a) + 1e-7)        over the utterance's own samples

Model (channels last, (batch, steps, channels) throughout):

    feature encoder   z = gelu(norm(conv_i(z)))   7 conv1d, kernels (10,3,3,3,3,2,2), strides
                      (5,2,2,2,2,2,2), 512 channels (one frame per 320 samples, 20 ms);
                      norm: GroupNorm with one group per channel on the first layer only
                      ('group', base) or a LayerNorm after every conv ('layer', large)
    projection        h = Linear(LN(z))
    positions         p = gelu(drop_last(conv_pos(h)))   grouped conv (kernel 128, 16 groups,
                      padding 64) with weight norm over the kernel axis, w = g v / ||v||; an even
                      kernel gives one extra frame, removed
    encoder (base, post-norm)     h = LN(h + p);  per layer  h = LN(h + Attn(h)); h = LN(h + FF(h))
    encoder (large, stable layer norm, pre-norm)
                      h = h + p;  per layer  h = h + Attn(LN(h)); h = h + FF(LN(h));  h = LN(h)
    feed-forward      FF(h) = output_dense(gelu(intermediate_dense(h)))
    head              logits = lm_head(h)       (batch, frames, vocab), trained with CTC

Attention is softmax(q k^T / sqrt(d_head)) v per head, all four projections biased. Padded
audio (``attention_mask`` (batch, samples), 1 on real samples) gives each utterance
floor((L - k) / s) + 1 frames per conv; the encoder zeroes the padded frames before the
positional convolution and no frame attends to them.

The CTC loss (:meth:`Wav2Vec2ForCTC.loss`) is :func:`lamina.functional.ctc_loss` on the
log-softmax of the logits with the pad token as the blank, as HF. Decode the logits with
:func:`lamina.text.ctc_greedy_decode` or :func:`lamina.text.ctc_prefix_beam_search`.

SpecAugment (HF's ``_mask_hidden_states``), in training only or where ``mask_time_indices`` are
given: the projected features h of the frames of random time spans
(:func:`lamina.models.wav2vec2_masking.compute_mask_indices`, ``mask_time_prob``,
``mask_time_length``, ``mask_time_min_masks``) are replaced by the learned vector
``masked_spec_embed``, and in training the channels of random spans (``mask_feature_*``) are
zeroed; ``apply_spec_augment=False`` turns both off.

The pretraining model (quantizer, contrastive and diversity losses) is
:class:`lamina.models.wav2vec2_pretraining.Wav2Vec2ForPreTraining`; the adapter is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.hf_weights import (
    ConfigBuiltModel,
    build_children,
    main_input_shape,
)
from lamina.models.wav2vec2_features import (
    INIT_STD,
    Wav2Vec2ConvLayer,
    Wav2Vec2FeatureEncoder,
    Wav2Vec2FeatureProjection,
    Wav2Vec2PositionalConvEmbedding,
    batch_shape,
    linear_init,
    wav2vec2_input_values,
)
from lamina.models.wav2vec2_masking import compute_mask_indices
from lamina.models.whisper import WhisperAttention
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["INIT_STD", "SPEC_AUGMENT_DEFAULTS", "WAV2VEC2_CONFIGS", "Wav2Vec2Attention", "Wav2Vec2ConvLayer",
           "Wav2Vec2Encoder", "Wav2Vec2EncoderLayer", "Wav2Vec2FeatureEncoder", "Wav2Vec2FeatureProjection",
           "Wav2Vec2FeedForward", "Wav2Vec2ForCTC", "Wav2Vec2Model", "Wav2Vec2PositionalConvEmbedding", "wav2vec2",
           "wav2vec2_input_values", "wav2vec2_model"]

_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
          "feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True}
WAV2VEC2_CONFIGS = {
    "base": {},
    "large-lv60": _LARGE,
    "test": {"vocab_size": 8, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 24, "conv_dim": (8, 8, 8), "conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2),
             "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4},
}
"""Hugging Face's 'facebook/wav2vec2-base-960h' (the defaults, 94,396,320 parameters),
'facebook/wav2vec2-large-960h-lv60-self' (stable layer norm) and a 'test' size."""

_NEG = -1e9          # added to the scores of padded keys


def _frames_mask(mask) -> np.ndarray | None:
    """A (batch, frames) mask as a boolean array, or None."""
    return None if mask is None else np.asarray(mask).astype(bool)



@register_layer
class Wav2Vec2Attention(WhisperAttention):
    """Multi-head attention with HF's names ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``,
    all four biased (Whisper's ``k_proj`` has no bias), scores scaled by d_head^-0.5."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(embed_dim, num_heads, dropout, name=name)
        self.k_proj = Dense(embed_dim, kernel_init=linear_init())


@register_layer
class Wav2Vec2FeedForward(Module):
    """output_dense(gelu(intermediate_dense(h))), with HF's dropouts."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation_dropout: float = 0.0,
                 hidden_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.sizes = (positive_int(hidden_size, "Wav2Vec2FeedForward: hidden_size"),
                      positive_int(intermediate_size, "Wav2Vec2FeedForward: intermediate_size"))
        self.config = {"hidden_size": hidden_size, "intermediate_size": intermediate_size,
                       "activation_dropout": activation_dropout, "hidden_dropout": hidden_dropout}
        self.intermediate_dropout = Dropout(checked_rate(activation_dropout, "Wav2Vec2FeedForward"))
        self.intermediate_dense = Dense(intermediate_size, kernel_init=linear_init())
        self.output_dense = Dense(hidden_size, kernel_init=linear_init())
        self.output_dropout = Dropout(checked_rate(hidden_dropout, "Wav2Vec2FeedForward"))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.intermediate_dense, shape), (self.output_dense, shape[:-1] + (self.sizes[1],))])
        self.built = True

    def forward(self, x) -> Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class Wav2Vec2EncoderLayer(Module):
    """One Transformer layer: post-norm, h = LN(h + Attn(h)); h = final_LN(h + FF(h)) (HF's
    ``Wav2Vec2EncoderLayer``), or with ``stable_layer_norm`` pre-norm, h = h + Attn(LN(h));
    h = h + FF(final_LN(h)) (``Wav2Vec2EncoderLayerStableLayerNorm``)."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, layer_norm_eps: float = 1e-5,
                 stable_layer_norm: bool = False, hidden_dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.config = {"hidden_size": positive_int(hidden_size, "Wav2Vec2EncoderLayer: hidden_size"),
                       "num_heads": num_heads, "intermediate_size": intermediate_size,
                       "layer_norm_eps": layer_norm_eps, "stable_layer_norm": bool(stable_layer_norm),
                       "hidden_dropout": hidden_dropout, "attention_dropout": attention_dropout,
                       "activation_dropout": activation_dropout}
        self.attention = Wav2Vec2Attention(hidden_size, num_heads, attention_dropout)
        self.dropout = Dropout(checked_rate(hidden_dropout, "Wav2Vec2EncoderLayer"))
        self.layer_norm = LayerNorm(-1, eps=layer_norm_eps)
        self.feed_forward = Wav2Vec2FeedForward(hidden_size, intermediate_size, activation_dropout, hidden_dropout)
        self.final_layer_norm = LayerNorm(-1, eps=layer_norm_eps)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.attention, shape), (self.layer_norm, shape), (self.feed_forward, shape),
                        (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, x, mask=None) -> Tensor:
        """``x`` (batch, frames, hidden); ``mask`` an additive array broadcasting to the scores
        (batch, heads, frames, frames)."""
        x = as_tensor(x)
        if self.config["stable_layer_norm"]:
            x = F.add(x, self.dropout(self.attention(self.layer_norm(x), mask=mask)))
            return F.add(x, self.feed_forward(self.final_layer_norm(x)))
        x = self.layer_norm(F.add(x, self.dropout(self.attention(x, mask=mask))))
        return self.final_layer_norm(F.add(x, self.feed_forward(x)))

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class Wav2Vec2Encoder(Module):
    """Projected features (batch, frames, hidden) -> contextual states: ``pos_conv_embed``,
    ``layers`` and ``layer_norm`` (before the layers when post-norm, after them with
    ``stable_layer_norm``)."""

    def __init__(self, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                 num_conv_pos_embeddings: int = 128, num_conv_pos_embedding_groups: int = 16,
                 layer_norm_eps: float = 1e-5, stable_layer_norm: bool = False, hidden_dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "Wav2Vec2Encoder: hidden_size")
        self.stable_layer_norm = bool(stable_layer_norm)
        self.config = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                       "intermediate_size": intermediate_size, "num_conv_pos_embeddings": num_conv_pos_embeddings,
                       "num_conv_pos_embedding_groups": num_conv_pos_embedding_groups,
                       "layer_norm_eps": layer_norm_eps, "stable_layer_norm": self.stable_layer_norm,
                       "hidden_dropout": hidden_dropout, "attention_dropout": attention_dropout,
                       "activation_dropout": activation_dropout}
        self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(hidden_size, num_conv_pos_embeddings,
                                                              num_conv_pos_embedding_groups)
        self.layer_norm = LayerNorm(-1, eps=layer_norm_eps)
        self.dropout = Dropout(checked_rate(hidden_dropout, "Wav2Vec2Encoder"))
        self.layers = ModuleList([
            Wav2Vec2EncoderLayer(hidden_size, num_heads, intermediate_size, layer_norm_eps, stable_layer_norm,
                                 hidden_dropout, attention_dropout, activation_dropout)
            for _ in range(positive_int(num_layers, "Wav2Vec2Encoder: num_layers"))])

    def build(self, input_shape) -> None:
        shape = batch_shape(input_shape) + (None, self.hidden_size)
        build_children([(self.pos_conv_embed, shape), (self.layer_norm, shape),
                        *((layer, shape) for layer in self.layers)])
        self.built = True

    def forward(self, x, frames_mask=None) -> Tensor:
        """``frames_mask`` (batch, frames), true on real frames: the others are zeroed before the
        positional convolution and hidden from attention."""
        x = as_tensor(x)
        mask = _frames_mask(frames_mask)
        scores_mask = None
        if mask is not None:
            if mask.shape != tuple(x.shape[:2]):
                raise ShapeError(f"{self._label()}: frames_mask of shape {mask.shape} does not match the states "
                                 f"{tuple(x.shape)}; expected (batch, frames) = {tuple(x.shape[:2])}")
            x = F.mul(x, Tensor(mask[:, :, None].astype(x.dtype)))
            scores_mask = np.where(mask, 0.0, _NEG)[:, None, None, :].astype(x.dtype)
        x = F.add(x, self.pos_conv_embed(x))
        if not self.stable_layer_norm:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, scores_mask)
        return self.layer_norm(x) if self.stable_layer_norm else x

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


SPEC_AUGMENT_DEFAULTS = {"apply_spec_augment": True, "mask_time_prob": 0.05, "mask_time_length": 10,
                         "mask_time_min_masks": 2, "mask_feature_prob": 0.0, "mask_feature_length": 10,
                         "mask_feature_min_masks": 0}
"""Hugging Face's ``Wav2Vec2Config`` SpecAugment settings."""


@register_with_arguments(modules=("feature_extractor", "feature_projection", "encoder"))
class Wav2Vec2Model(Module):
    """HF's ``Wav2Vec2Model``: ``feature_extractor``, ``feature_projection``, ``encoder`` and
    ``masked_spec_embed`` (SpecAugment's mask vector). Audio (batch, samples) -> states
    (batch, frames, hidden). ``spec_augment`` holds the masking settings, the keys of
    :data:`SPEC_AUGMENT_DEFAULTS` (those left out take its values)."""

    def __init__(self, feature_extractor: Wav2Vec2FeatureEncoder, feature_projection: Wav2Vec2FeatureProjection,
                 encoder: Wav2Vec2Encoder, masked_spec_embed: bool = True, spec_augment: Mapping | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.feature_extractor = feature_extractor
        self.feature_projection = feature_projection
        self.encoder = encoder
        self.has_masked_spec_embed = bool(masked_spec_embed)
        unknown = set(spec_augment or {}) - set(SPEC_AUGMENT_DEFAULTS)
        if unknown:
            raise ValueError(f"Wav2Vec2Model: unknown spec_augment settings {sorted(unknown)}; expected some of "
                             f"{sorted(SPEC_AUGMENT_DEFAULTS)}")
        self.spec_augment = {**SPEC_AUGMENT_DEFAULTS, **(spec_augment or {})}

    def build(self, input_shape) -> None:
        batch = batch_shape(input_shape)
        conv_dim = self.feature_extractor.conv_layers[-1].config["filters"]
        build_children([(self.feature_extractor, (*batch, None)), (self.feature_projection, (*batch, None, conv_dim)),
                        (self.encoder, (*batch, None, self.encoder.hidden_size))])
        if self.has_masked_spec_embed:
            size = self.encoder.hidden_size
            self.add_parameter("masked_spec_embed", initializers.uniform(0.5)((size,), size, size))
        self.built = True

    def frames_mask(self, attention_mask, frames: int) -> np.ndarray:
        """The (batch, frames) boolean mask of the real frames of audio with ``attention_mask``
        (batch, samples): the first output_lengths(sum of the mask) frames of each row."""
        lengths = self.feature_extractor.output_lengths(np.asarray(attention_mask).sum(axis=-1))
        return np.arange(frames)[None, :] < lengths[:, None]

    def mask_hidden_states(self, states, mask_time_indices=None, frames_mask=None) -> Tensor:
        """SpecAugment on the projected features ``states`` (batch, frames, hidden), as HF's
        ``_mask_hidden_states``: the frames of ``mask_time_indices`` (batch, frames), or in
        training of spans drawn by :func:`compute_mask_indices` over the real frames of
        ``frames_mask``, become ``masked_spec_embed``; in training, channels of spans drawn
        per row are zeroed at every frame. Nothing changes with ``apply_spec_augment`` off."""
        settings = self.spec_augment
        if not settings["apply_spec_augment"]:
            return states
        batch, frames, hidden = states.shape
        if mask_time_indices is None and settings["mask_time_prob"] > 0 and self.training:
            mask_time_indices = compute_mask_indices((batch, frames), settings["mask_time_prob"],
                                                     settings["mask_time_length"], frames_mask,
                                                     settings["mask_time_min_masks"])
        if mask_time_indices is not None:
            masked = np.asarray(getattr(mask_time_indices, "data", mask_time_indices)).astype(bool)
            if masked.shape != (batch, frames):
                raise ShapeError(f"{self._label()}: mask_time_indices of shape {masked.shape} does not match the "
                                 f"(batch, frames) = {(batch, frames)} of the features")
            if not self.has_masked_spec_embed:
                raise ValueError(f"{self._label()}: masking frames needs masked_spec_embed, which a model with "
                                 f"mask_time_prob = mask_feature_prob = 0 does not have")
            states = F.where(masked[:, :, None], self.masked_spec_embed, states)
        if settings["mask_feature_prob"] > 0 and self.training:
            channels = compute_mask_indices((batch, hidden), settings["mask_feature_prob"],
                                            settings["mask_feature_length"],
                                            min_masks=settings["mask_feature_min_masks"])
            states = F.masked_fill(states, channels[:, None, :], 0.0)
        return states

    def encode(self, input_values, attention_mask=None, mask_time_indices=None) -> tuple[Tensor, Tensor]:
        """(states, extract_features): the encoder's output (batch, frames, hidden) and the
        normalised conv features LN(z) (batch, frames, conv_dim[-1]), HF's ``extract_features``."""
        features = self.feature_extractor(input_values)
        mask = None if attention_mask is None else self.frames_mask(attention_mask, features.shape[1])
        states, extract_features = self.feature_projection.project(features)
        states = self.mask_hidden_states(states, mask_time_indices, mask)
        return self.encoder(states, mask), extract_features

    def forward(self, input_values, attention_mask=None, mask_time_indices=None) -> Tensor:
        return self.encode(input_values, attention_mask, mask_time_indices)[0]


ENCODER_CONFIG_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim", "conv_kernel",
    "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm", "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups", "layer_norm_eps", "hidden_dropout", "attention_dropout", "activation_dropout",
    "feat_proj_dropout", "apply_spec_augment", "mask_time_prob", "mask_time_length", "mask_time_min_masks",
    "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks")
"""The ``Wav2Vec2Config`` fields that :func:`wav2vec2_model` reads, shared by every head."""


def encoder_config(arguments: Mapping) -> dict:
    """The :data:`ENCODER_CONFIG_KEYS` entries of a head's constructor ``arguments``, sequences
    as tuples and flags as bools (what ``get_config`` stores)."""
    config = {key: arguments[key] for key in ENCODER_CONFIG_KEYS}
    for key in ("conv_dim", "conv_kernel", "conv_stride"):
        config[key] = tuple(config[key])
    for key in ("conv_bias", "do_stable_layer_norm", "apply_spec_augment"):
        config[key] = bool(config[key])
    return config


def wav2vec2_model(config: Mapping) -> Wav2Vec2Model:
    """The unbuilt :class:`Wav2Vec2Model` of a config with ``Wav2Vec2Config``'s field names (the
    arguments of :class:`Wav2Vec2ForCTC`)."""
    c = config
    features = Wav2Vec2FeatureEncoder(c["conv_dim"], c["conv_kernel"], c["conv_stride"], c["conv_bias"],
                                      c["feat_extract_norm"])
    projection = Wav2Vec2FeatureProjection(c["hidden_size"], c["layer_norm_eps"], c["feat_proj_dropout"])
    encoder = Wav2Vec2Encoder(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                              c["intermediate_size"], c["num_conv_pos_embeddings"], c["num_conv_pos_embedding_groups"],
                              c["layer_norm_eps"], c["do_stable_layer_norm"], c["hidden_dropout"],
                              c["attention_dropout"], c["activation_dropout"])
    spec_augment = {key: c[key] for key in SPEC_AUGMENT_DEFAULTS}
    return Wav2Vec2Model(features, projection, encoder, c["mask_time_prob"] > 0 or c["mask_feature_prob"] > 0,
                         spec_augment)


@register_layer
class Wav2Vec2ForCTC(ConfigBuiltModel):
    """wav2vec 2.0 with a CTC head (HF's ``Wav2Vec2ForCTC``): ``model(input_values,
    attention_mask=None)`` -> logits (batch, frames, vocab_size); ``input_values``
    (batch, samples) as :func:`wav2vec2_input_values` makes them. Sub-modules ``wav2vec2``
    (:class:`Wav2Vec2Model`) and ``lm_head``. The arguments are ``Wav2Vec2Config``'s with the
    values of 'facebook/wav2vec2-base-960h'; ``mask_time_prob > 0`` (or
    ``mask_feature_prob > 0``) creates ``masked_spec_embed`` as HF does, and in training
    SpecAugment masks the features (see :meth:`Wav2Vec2Model.mask_hidden_states`)."""

    def __init__(self, vocab_size: int = 32, hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072,
                 conv_dim: Sequence[int] = (512,) * 7, conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                 conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2), conv_bias: bool = False,
                 feat_extract_norm: str = "group", do_stable_layer_norm: bool = False,
                 num_conv_pos_embeddings: int = 128, num_conv_pos_embedding_groups: int = 16,
                 layer_norm_eps: float = 1e-5, hidden_dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, feat_proj_dropout: float = 0.0, final_dropout: float = 0.0,
                 mask_time_prob: float = 0.05, mask_feature_prob: float = 0.0, pad_token_id: int = 0,
                 ctc_loss_reduction: str = "sum", ctc_zero_infinity: bool = False, apply_spec_augment: bool = True,
                 mask_time_length: int = 10, mask_time_min_masks: int = 2, mask_feature_length: int = 10,
                 mask_feature_min_masks: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "Wav2Vec2ForCTC: vocab_size")
        if not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"Wav2Vec2ForCTC: pad_token_id {pad_token_id} (the CTC blank) is not a token id of "
                             f"the vocabulary of {vocab_size}")
        if ctc_loss_reduction not in ("sum", "mean"):
            raise ValueError(f"Wav2Vec2ForCTC: ctc_loss_reduction must be 'sum' or 'mean', got {ctc_loss_reduction!r}")
        self.config = {"vocab_size": vocab_size, **encoder_config(locals()), "final_dropout": final_dropout,
                       "pad_token_id": int(pad_token_id), "ctc_loss_reduction": ctc_loss_reduction,
                       "ctc_zero_infinity": bool(ctc_zero_infinity)}
        self.wav2vec2 = wav2vec2_model(self.config)
        self.dropout = Dropout(checked_rate(final_dropout, "Wav2Vec2ForCTC"))
        self.lm_head = Dense(vocab_size, kernel_init=linear_init())

    def build(self, input_shape=None) -> None:
        batch = batch_shape(input_shape)
        build_children([(self.wav2vec2, (*batch, None)), (self.lm_head, (*batch, None, self.config["hidden_size"]))])
        self.built = True

    def output_lengths(self, lengths) -> np.ndarray:
        """Frames of the logits for utterances of ``lengths`` samples."""
        return self.wav2vec2.feature_extractor.output_lengths(lengths)

    def forward(self, input_values, attention_mask=None, mask_time_indices=None) -> Tensor:
        """Logits; ``mask_time_indices`` (batch, frames), when given, are the frames SpecAugment
        replaces by ``masked_spec_embed`` (in training they are drawn when not given)."""
        if not self.built:
            self.build(np.shape(input_values))
        return self.lm_head(self.dropout(self.wav2vec2(input_values, attention_mask, mask_time_indices)))

    def loss(self, input_values, labels, attention_mask=None, mask_time_indices=None) -> Tensor:
        """CTC loss of the logits against ``labels`` (batch, S), padded with negative values
        (HF's -100), blank = ``pad_token_id``, over each utterance's real frames, reduced by
        ``ctc_loss_reduction`` ('sum' as HF's default; 'mean' divides each loss by its
        number of labels, then averages)."""
        labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels, dtype=np.int64)
        logits = self(input_values, attention_mask, mask_time_indices)
        if labels.ndim != 2 or labels.shape[0] != logits.shape[0]:
            raise ShapeError(f"Wav2Vec2ForCTC.loss: expected labels (batch={logits.shape[0]}, S), got shape "
                             f"{labels.shape}")
        if attention_mask is None:
            frames = np.full(logits.shape[0], logits.shape[1], dtype=np.int64)
        else:
            frames = self.output_lengths(np.asarray(attention_mask).sum(axis=-1))
        kept = labels >= 0
        return F.ctc_loss(F.log_softmax(logits, axis=-1), labels[kept], frames, kept.sum(axis=-1),
                          blank=self.config["pad_token_id"], reduction=self.config["ctc_loss_reduction"],
                          zero_infinity=self.config["ctc_zero_infinity"])

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]
        return (input_shape[0], None if steps is None else int(self.output_lengths(steps)), self.vocab_size)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


def wav2vec2(config: str = "base", **options) -> Wav2Vec2ForCTC:
    """The :class:`Wav2Vec2ForCTC` of configuration ``config`` (see :data:`WAV2VEC2_CONFIGS`):
    'base' (facebook/wav2vec2-base-960h, 94,396,320 parameters), 'large-lv60'
    (facebook/wav2vec2-large-960h-lv60-self, 315,471,520) or 'test'; ``options`` override
    its arguments. Unbuilt: ``model.build()`` makes the weights."""
    if config not in WAV2VEC2_CONFIGS:
        raise ValueError(f"wav2vec2: config must be one of {tuple(WAV2VEC2_CONFIGS)}, got {config!r}")
    return Wav2Vec2ForCTC(**{**WAV2VEC2_CONFIGS[config], **options})
