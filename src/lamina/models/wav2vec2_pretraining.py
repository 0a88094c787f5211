"""wav2vec 2.0 self-supervised pretraining (Baevski et al. 2020, section 3), in the layout of
Hugging Face's ``Wav2Vec2ForPreTraining`` so that its published weights load with
:func:`lamina.models.load_hf_wav2vec2_state_dict`.

Quantizer (:class:`Wav2Vec2GumbelVectorQuantizer`). The normalised conv features z = LN(conv(x))
of each frame give logits l = weight_proj(z) for G groups of V codebook entries; per group

    training     p = one_hot(argmax y) with the gradient of y = softmax((l + g) / tau)
                 (hard Gumbel-softmax, straight-through; g = -log E, E ~ Exp(1))
    evaluation   p = one_hot(argmax l)

and the quantized vector q is the concatenation over the groups of sum_v p_gv e_gv (entries
``codevectors`` (1, G V, d / G)). The codevector perplexity sums over the groups
exp(-sum_v m_gv log(m_gv + 1e-7)), m_g the batch average of softmax(l_g) in training (of p in
evaluation) over the masked frames (every frame when no mask is given).

Model (:class:`Wav2Vec2ForPreTraining`). The masked frames' projected features are replaced by
``masked_spec_embed`` before the Transformer; c = project_hid(states) and
q = project_q(quantizer(z)). With negatives q~_k (K frames of the same utterance's masked frames
other than the frame itself, :func:`lamina.models.wav2vec2_masking.sample_negative_indices`),

    logits_t  = [cos(c_t, q_t), cos(c_t, q~_1), ..., cos(c_t, q~_K)] / kappa
                (a negative equal to q_t gets -inf)
    L_m       = sum over the masked frames t of -log softmax(logits_t)_0       (contrastive)
    L_d       = (G V - perplexity) / (G V) * (number of masked frames)          (diversity)
    L         = L_m + alpha L_d

as Hugging Face computes them (the diversity term scaled by the masked frames, like the summed
contrastive term). During training the Gumbel temperature decays per update step,
tau = max(tau_max decay^step, tau_min) (:func:`gumbel_temperature`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.hf_weights import ConfigBuiltModel, build_children, main_input_shape
from lamina.models.wav2vec2 import encoder_config, wav2vec2_model
from lamina.models.wav2vec2_masking import compute_mask_indices, sample_negative_indices
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["WAV2VEC2_PRETRAINING_CONFIGS", "Wav2Vec2ForPreTraining", "Wav2Vec2GumbelVectorQuantizer",
           "Wav2Vec2PreTrainingOutput", "codevector_perplexity", "contrastive_logits", "contrastive_loss",
           "gumbel_temperature", "wav2vec2_pretraining"]

PERPLEXITY_EPS = 1e-7
"""Added to the marginal probabilities before the log in the perplexity, as HF."""

WAV2VEC2_PRETRAINING_CONFIGS = {
    "base": {},
    "test": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 24,
             "conv_dim": (8, 8, 8), "conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2),
             "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4, "codevector_dim": 8,
             "proj_codevector_dim": 8, "num_codevector_groups": 2, "num_codevectors_per_group": 8,
             "num_negatives": 5, "mask_time_prob": 0.4, "mask_time_length": 2},
}
"""Hugging Face's 'facebook/wav2vec2-base' (the defaults; 95,044,608 parameters, a figure
counted here from the architecture: the 94,371,712 of the encoder model plus 410,240 in the
quantizer and 262,656 in project_hid and project_q) and a 'test' size."""


# -- the Gumbel temperature ------------------------------------------------------------------
def gumbel_temperature(step: int, max_temperature: float = 2.0, min_temperature: float = 0.5,
                       decay: float = 0.999995) -> float:
    """tau = max(max_temperature * decay^step, min_temperature): the quantizer's temperature
    after ``step`` update steps (the defaults are those of HF's pretraining example and of the
    paper: from 2 down to 0.5 by a factor 0.999995 per step)."""
    if step < 0 or not 0 < decay <= 1 or not 0 < min_temperature <= max_temperature:
        raise ValueError(f"gumbel_temperature: expected step >= 0, 0 < decay <= 1 and 0 < min_temperature <= "
                         f"max_temperature, got step={step}, decay={decay}, min_temperature={min_temperature}, "
                         f"max_temperature={max_temperature}")
    return max(max_temperature * decay ** step, min_temperature)


# -- the quantizer ---------------------------------------------------------------------------
def _mask_array(mask, who: str, rows: int | None = None) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(getattr(mask, "data", mask)).astype(bool)
    if rows is not None and mask.size != rows:
        raise ShapeError(f"{who}: a mask of shape {mask.shape} does not cover the {rows} frames")
    return mask


def codevector_perplexity(probs, mask=None) -> Tensor:
    """sum over groups g of exp(-sum_v m_gv log(m_gv + 1e-7)), m_g the average of ``probs``
    (frames, G, V) over the frames where ``mask`` (any shape of frames values) is true, or over
    every frame (HF's ``_compute_perplexity``)."""
    probs = as_tensor(probs)
    mask = _mask_array(mask, "codevector_perplexity", probs.shape[0])
    if mask is None:
        marginal = F.mean(probs, axis=0)
    else:
        weights = Tensor(mask.reshape(-1, 1, 1).astype(probs.dtype))
        marginal = F.sum(probs * weights, axis=0) / float(mask.sum())
    entropy = -F.sum(marginal * F.log(marginal + PERPLEXITY_EPS), axis=-1)
    return F.sum(F.exp(entropy))


def _one_hot_of_argmax(scores: np.ndarray) -> np.ndarray:
    """One-hot vectors of the largest score along the last axis (the first one on ties)."""
    return (np.arange(scores.shape[-1]) == scores.argmax(axis=-1)[..., None]).astype(scores.dtype)


@register_layer
class Wav2Vec2GumbelVectorQuantizer(Module):
    """Product quantization of conv features with a Gumbel softmax (HF's
    ``Wav2Vec2GumbelVectorQuantizer``, see the module docstring): ``weight_proj`` (a Dense to
    G V logits, weights ~ N(0, 1), zero bias) and ``codevectors`` (1, G V, d / G) ~ U[0, 1).
    ``model(features, mask_time_indices=None, gumbel_noise=None)`` -> (quantized
    (batch, frames, d), perplexity); ``gumbel_noise`` (batch, frames, G, V) replaces the drawn
    noise (to reproduce a run). ``temperature`` is tau (HF starts at 2)."""

    def __init__(self, num_groups: int = 2, num_vars: int = 320, codevector_dim: int = 256,
                 temperature: float = 2.0, name: str | None = None):
        super().__init__(name=name)
        self.num_groups = positive_int(num_groups, "Wav2Vec2GumbelVectorQuantizer: num_groups")
        self.num_vars = positive_int(num_vars, "Wav2Vec2GumbelVectorQuantizer: num_vars")
        self.codevector_dim = positive_int(codevector_dim, "Wav2Vec2GumbelVectorQuantizer: codevector_dim")
        if codevector_dim % num_groups:
            raise ValueError(f"Wav2Vec2GumbelVectorQuantizer: codevector_dim {codevector_dim} must be divisible by "
                             f"num_groups {num_groups}, the groups' vectors being concatenated")
        self.temperature = float(temperature)
        self.weight_proj = Dense(num_groups * num_vars, kernel_init=initializers.normal(std=1.0))

    def build(self, input_shape) -> None:
        shape = (1, self.num_groups * self.num_vars, self.codevector_dim // self.num_groups)
        build_children([(self.weight_proj, input_shape)])
        if initializers.is_meta():
            codevectors = initializers.meta_array(shape)
        else:
            codevectors = backend.rng().random(shape).astype(backend.get_default_dtype())
        self.add_parameter("codevectors", codevectors)
        self.built = True

    def _noise(self, gumbel_noise, shape: tuple, dtype) -> np.ndarray:
        if gumbel_noise is None:
            return (-np.log(backend.rng().exponential(size=shape))).astype(dtype)
        noise = np.asarray(getattr(gumbel_noise, "data", gumbel_noise), dtype=dtype)
        if noise.size != math.prod(shape):
            raise ShapeError(f"{self._label()}: gumbel_noise of shape {noise.shape} does not match the logits "
                             f"(batch, frames, groups, entries) of {noise.size} values; expected {math.prod(shape)}")
        return noise.reshape(shape)

    def forward(self, features, mask_time_indices=None, gumbel_noise=None) -> tuple[Tensor, Tensor]:
        features = as_tensor(features)
        if features.ndim != 3:
            raise ShapeError(f"{self._label()}: expected features (batch, frames, channels), got shape "
                             f"{tuple(features.shape)}")
        batch, frames, _ = features.shape
        groups, entries = self.num_groups, self.num_vars
        mask = _mask_array(mask_time_indices, self._label(), batch * frames)
        logits = F.reshape(self.weight_proj(features), batch * frames, groups, entries)
        if self.training:
            noisy = (logits + self._noise(gumbel_noise, logits.shape, logits.dtype)) / self.temperature
            soft = F.softmax(noisy, axis=-1)
            probs = soft + Tensor(_one_hot_of_argmax(soft.data) - soft.data)     # straight-through
            perplexity = codevector_perplexity(F.softmax(logits, axis=-1), mask)
        else:
            probs = Tensor(_one_hot_of_argmax(logits.data))
            perplexity = codevector_perplexity(probs, mask)
        codebook = F.reshape(self.codevectors, groups, entries, self.codevector_dim // groups)
        quantized = F.einsum("ngv,gvd->ngd", probs, codebook)
        return F.reshape(quantized, batch, frames, self.codevector_dim), perplexity

    def get_config(self) -> dict:
        return {"num_groups": self.num_groups, "num_vars": self.num_vars, "codevector_dim": self.codevector_dim,
                "temperature": self.temperature, "name": self.name}


# -- the contrastive loss --------------------------------------------------------------------
def contrastive_logits(targets, negatives, predicted, temperature: float = 0.1) -> Tensor:
    """[cos(c, q), cos(c, q~_1), ..., cos(c, q~_K)] / temperature, shape (K + 1, batch, frames),
    for ``targets`` q and ``predicted`` c (batch, frames, d) and ``negatives`` (K, batch,
    frames, d) (HF's ``compute_contrastive_logits``)."""
    targets, negatives, predicted = as_tensor(targets), as_tensor(negatives), as_tensor(predicted)
    candidates = F.concat([F.reshape(targets, 1, *targets.shape), negatives], axis=0)
    return F.cosine_similarity(predicted, candidates, axis=-1) / temperature


def _gather_negatives(quantized: Tensor, negative_indices: np.ndarray) -> Tensor:
    """The (K, batch, frames, d) negatives picked from ``quantized`` (batch, frames, d) by
    indices into its frames flattened to (batch * frames)."""
    batch, frames, size = quantized.shape
    picked = F.index_select(F.reshape(quantized, batch * frames, size), 0, negative_indices.reshape(-1))
    return F.transpose(F.reshape(picked, batch, frames, -1, size), 2, 0, 1, 3)


def contrastive_loss(projected_states, projected_quantized_states, sampled_negative_indices, mask_time_indices,
                     temperature: float = 0.1) -> Tensor:
    """L_m = sum over the masked frames of -log softmax(logits)_0 (the positive first), the
    logits of :func:`contrastive_logits` with the negatives ``sampled_negative_indices``
    (batch, frames, K), indices into the flattened frames, and any negative equal to the
    positive set to -inf (HF's ``Wav2Vec2ForPreTraining`` loss)."""
    states, quantized = as_tensor(projected_states), as_tensor(projected_quantized_states)
    batch, frames, _ = quantized.shape
    indices = np.asarray(getattr(sampled_negative_indices, "data", sampled_negative_indices)).astype(np.int64)
    masked = _mask_array(mask_time_indices, "contrastive_loss")
    if indices.ndim != 3 or indices.shape[:2] != (batch, frames) or masked.shape != (batch, frames):
        raise ShapeError(f"contrastive_loss: expected sampled_negative_indices (batch, frames, K) and "
                         f"mask_time_indices (batch, frames) with (batch, frames) = {(batch, frames)}, got "
                         f"{indices.shape} and {masked.shape}")
    if indices.min() < 0 or indices.max() >= batch * frames:
        raise ValueError(f"contrastive_loss: negative indices must lie in [0, {batch * frames}) (the flattened "
                         f"frames), got values from {indices.min()} to {indices.max()}")
    negatives = _gather_negatives(quantized, indices)
    logits = contrastive_logits(quantized, negatives, states, temperature)
    same = np.all(quantized.data[None] == negatives.data, axis=-1)
    logits = F.masked_fill(logits, np.concatenate([np.zeros_like(same[:1]), same]), -np.inf)
    rows = F.index_select(F.reshape(F.transpose(logits, 1, 2, 0), batch * frames, -1), 0,
                          np.flatnonzero(masked.reshape(-1)))
    return F.sum(F.logsumexp(rows, axis=-1) - rows[:, 0])


# -- the model -------------------------------------------------------------------------------
@dataclass
class Wav2Vec2PreTrainingOutput:
    """What :class:`Wav2Vec2ForPreTraining` returns (HF's ``Wav2Vec2ForPreTrainingOutput``):
    c = project_hid(states) and q = project_q(quantized) (batch, frames, proj_codevector_dim),
    the perplexity, and with negatives the total, contrastive and diversity losses."""

    projected_states: Tensor
    projected_quantized_states: Tensor
    codevector_perplexity: Tensor
    loss: Tensor | None = None
    contrastive_loss: Tensor | None = None
    diversity_loss: Tensor | None = None


def _torch_linear_init(fan_in: int):
    """PyTorch's default ``Linear`` initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return initializers.uniform(1.0 / math.sqrt(fan_in))


@register_layer
class Wav2Vec2ForPreTraining(ConfigBuiltModel):
    """wav2vec 2.0 with its quantizer and contrastive head (HF's ``Wav2Vec2ForPreTraining``):
    sub-modules ``wav2vec2`` (:class:`lamina.models.Wav2Vec2Model`), ``dropout_features``,
    ``quantizer``, ``project_hid`` and ``project_q``.

    ``model(input_values, attention_mask=None, mask_time_indices=None,
    sampled_negative_indices=None)`` -> :class:`Wav2Vec2PreTrainingOutput`; the losses need
    both the mask (batch, frames) and the negatives (batch, frames, num_negatives), which
    :meth:`sample_masks` draws by the config. The arguments are ``Wav2Vec2Config``'s (those
    of :class:`lamina.models.Wav2Vec2ForCTC` without the CTC head) with the values of
    'facebook/wav2vec2-base'."""

    def __init__(self, hidden_size: int = 768, num_hidden_layers: int = 12, num_attention_heads: int = 12,
                 intermediate_size: int = 3072, conv_dim: Sequence[int] = (512,) * 7,
                 conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                 conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2), conv_bias: bool = False,
                 feat_extract_norm: str = "group", do_stable_layer_norm: bool = False,
                 num_conv_pos_embeddings: int = 128, num_conv_pos_embedding_groups: int = 16,
                 layer_norm_eps: float = 1e-5, hidden_dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, feat_proj_dropout: float = 0.0, feat_quantizer_dropout: float = 0.0,
                 apply_spec_augment: bool = True, mask_time_prob: float = 0.05, mask_time_length: int = 10,
                 mask_time_min_masks: int = 2, mask_feature_prob: float = 0.0, mask_feature_length: int = 10,
                 mask_feature_min_masks: int = 0, num_codevector_groups: int = 2, num_codevectors_per_group: int = 320,
                 codevector_dim: int = 256, proj_codevector_dim: int = 256, num_negatives: int = 100,
                 contrastive_logits_temperature: float = 0.1, diversity_loss_weight: float = 0.1,
                 name: str | None = None):
        super().__init__(name=name)
        if contrastive_logits_temperature <= 0:
            raise ValueError(f"Wav2Vec2ForPreTraining: contrastive_logits_temperature must be positive, got "
                             f"{contrastive_logits_temperature!r}")
        self.config = {**encoder_config(locals()), "feat_quantizer_dropout": feat_quantizer_dropout,
                       "num_codevector_groups": num_codevector_groups,
                       "num_codevectors_per_group": num_codevectors_per_group, "codevector_dim": codevector_dim,
                       "proj_codevector_dim": proj_codevector_dim,
                       "num_negatives": positive_int(num_negatives, "Wav2Vec2ForPreTraining: num_negatives"),
                       "contrastive_logits_temperature": contrastive_logits_temperature,
                       "diversity_loss_weight": diversity_loss_weight}
        self.wav2vec2 = wav2vec2_model(self.config)
        self.dropout_features = Dropout(checked_rate(feat_quantizer_dropout, "Wav2Vec2ForPreTraining"))
        self.quantizer = Wav2Vec2GumbelVectorQuantizer(num_codevector_groups, num_codevectors_per_group,
                                                       codevector_dim)
        self.project_hid = Dense(proj_codevector_dim, kernel_init=_torch_linear_init(hidden_size),
                                 bias_init=_torch_linear_init(hidden_size))
        self.project_q = Dense(proj_codevector_dim, kernel_init=_torch_linear_init(codevector_dim),
                               bias_init=_torch_linear_init(codevector_dim))

    def build(self, input_shape=None) -> None:
        batch = main_input_shape(input_shape)[:1] or (None,)
        c = self.config
        build_children([(self.wav2vec2, (*batch, None)), (self.quantizer, (*batch, None, c["conv_dim"][-1])),
                        (self.project_hid, (*batch, None, c["hidden_size"])),
                        (self.project_q, (*batch, None, c["codevector_dim"]))])
        self.built = True

    def set_gumbel_temperature(self, temperature: float) -> None:
        """The quantizer's Gumbel-softmax temperature tau (see :func:`gumbel_temperature`)."""
        if not temperature > 0:
            raise ValueError(f"{self._label()}: the Gumbel temperature must be positive, got {temperature!r}")
        self.quantizer.temperature = float(temperature)

    def output_lengths(self, lengths) -> np.ndarray:
        """Frames for utterances of ``lengths`` samples."""
        return self.wav2vec2.feature_extractor.output_lengths(lengths)

    def sample_masks(self, input_values, attention_mask=None, rng=None) -> tuple[np.ndarray, np.ndarray]:
        """(mask_time_indices (batch, frames), sampled_negative_indices (batch, frames,
        num_negatives)) for a batch of audio (batch, samples), drawn as HF's pretraining
        example draws them: spans by the config's ``mask_time_prob``, ``mask_time_length`` and
        ``mask_time_min_masks`` (the example passes no minimum) over each utterance's real
        frames, then negatives among each row's masked frames. ``rng``: a NumPy Generator or a
        seed (default lamina's generator)."""
        c = self.config
        batch, samples = np.shape(getattr(input_values, "data", input_values))
        frames = int(self.output_lengths(samples))
        real = None if attention_mask is None else self.wav2vec2.frames_mask(attention_mask, frames)
        generator = rng if isinstance(rng, np.random.Generator) or rng is None else np.random.default_rng(rng)
        masked = compute_mask_indices((batch, frames), c["mask_time_prob"], c["mask_time_length"], real,
                                      c["mask_time_min_masks"], rng=generator)
        return masked, sample_negative_indices((batch, frames), c["num_negatives"], masked, rng=generator)

    def forward(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
                gumbel_noise=None) -> Wav2Vec2PreTrainingOutput:
        if not self.built:
            self.build(np.shape(input_values))
        if sampled_negative_indices is not None and mask_time_indices is None:
            raise ValueError(f"{self._label()}: the losses need mask_time_indices with sampled_negative_indices "
                             f"(see sample_masks)")
        states, extract_features = self.wav2vec2.encode(input_values, attention_mask, mask_time_indices)
        projected_states = self.project_hid(states)
        quantized, perplexity = self.quantizer(self.dropout_features(extract_features), mask_time_indices,
                                               gumbel_noise)
        projected_quantized = self.project_q(quantized)
        output = Wav2Vec2PreTrainingOutput(projected_states, projected_quantized, perplexity)
        if sampled_negative_indices is None:
            return output
        c = self.config
        masked = _mask_array(mask_time_indices, self._label())
        output.contrastive_loss = contrastive_loss(projected_states, projected_quantized, sampled_negative_indices,
                                                   masked, c["contrastive_logits_temperature"])
        codebook_size = c["num_codevectors_per_group"] * c["num_codevector_groups"]
        output.diversity_loss = (codebook_size - perplexity) * (float(masked.sum()) / codebook_size)
        output.loss = output.contrastive_loss + c["diversity_loss_weight"] * output.diversity_loss
        return output

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


def wav2vec2_pretraining(config: str = "base", **options) -> Wav2Vec2ForPreTraining:
    """The :class:`Wav2Vec2ForPreTraining` of configuration ``config`` (see
    :data:`WAV2VEC2_PRETRAINING_CONFIGS`): 'base' (facebook/wav2vec2-base, 95,044,608
    parameters by lamina's count) or 'test'; ``options`` override its arguments. Unbuilt: ``model.build()``
    makes the weights."""
    if config not in WAV2VEC2_PRETRAINING_CONFIGS:
        raise ValueError(f"wav2vec2_pretraining: config must be one of {tuple(WAV2VEC2_PRETRAINING_CONFIGS)}, "
                         f"got {config!r}")
    return Wav2Vec2ForPreTraining(**{**WAV2VEC2_PRETRAINING_CONFIGS[config], **options})
