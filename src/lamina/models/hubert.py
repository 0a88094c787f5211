"""HuBERT (Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked
Prediction of Hidden Units", 2021) on the wav2vec 2.0 backbone of :mod:`lamina.models.wav2vec2`.

Targets. Each frame of the feature encoder gets a cluster id ("hidden unit"):

    iteration 1   k-means on MFCC frames (:func:`hubert_targets_from_mfcc`), one MFCC frame per
                  encoder frame: window = the conv stack's receptive field R, hop = its total
                  stride S, no centring, so that both give floor((L - R) / S) + 1 frames
    iteration 2   k-means on the outputs of a Transformer layer of a model trained on the
                  iteration-1 targets (:func:`hubert_targets_from_features`)

k-means (:func:`kmeans_fit`) is Lloyd's algorithm from k-means++ seeds, the best of ``n_init``
runs by the sum of squared distances, reproducible by its seed.

Model (:class:`HuBERTModel`): the wav2vec 2.0 feature encoder and projection, the frames of
random spans replaced by a learned mask embedding (``wav2vec2.masked_spec_embed``), the
Transformer, then

    o_t       = final_proj(h_t)                                  (final_dim)
    logits_tc = cos(o_t, e_c) / tau                               e_c the learned embedding of cluster c
    L_m       = mean over the masked frames of -log softmax(logits_t)[z_t]
    L_u       = mean over the unmasked frames of the same
    L         = alpha L_m + (1 - alpha) L_u                       (alpha = 1: masked frames only)

with tau = 0.1 and the spans drawn as wav2vec 2.0's (p = 0.08, l = 10 in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.hf_weights import ConfigBuiltModel, build_children, main_input_shape
from lamina.models.wav2vec2 import encoder_config, wav2vec2_model
from lamina.models.wav2vec2_masking import compute_mask_indices
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["HUBERT_CONFIGS", "HuBERTModel", "HuBERTOutput", "hubert", "hubert_frame_geometry", "hubert_logits",
           "hubert_loss", "hubert_mfcc_frames", "hubert_targets_from_features", "hubert_targets_from_mfcc",
           "kmeans_fit"]

HUBERT_CONFIGS = {
    "base": {},
    "test": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
             "conv_dim": (16, 16, 16), "conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2),
             "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4, "num_clusters": 8, "final_dim": 8,
             "hidden_dropout": 0.0, "attention_dropout": 0.0, "mask_time_prob": 0.3, "mask_time_length": 2},
}
"""The paper's BASE model (the defaults: 12 layers of 768, 100 clusters, final_dim 256) and a
'test' size."""


# -- k-means ---------------------------------------------------------------------------------
def _kmeans_once(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    centres = [x[rng.integers(len(x))]]
    nearest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):                                    # k-means++ seeds
        total = nearest.sum()
        index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[index])
        nearest = np.minimum(nearest, ((x - x[index]) ** 2).sum(axis=1))
    centres = np.array(centres)
    labels = None
    for _ in range(max_iter):
        distances = (x ** 2).sum(1)[:, None] - 2.0 * x @ centres.T + (centres ** 2).sum(1)[None, :]
        new_labels = distances.argmin(axis=1)
        if labels is not None and (new_labels == labels).all():
            break
        labels = new_labels
        for j in range(k):                                   # an emptied cluster keeps its centre
            members = x[labels == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return labels, centres


def kmeans_fit(x, n_clusters: int, seed: int = 0, n_init: int = 4, max_iter: int = 100
               ) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), centres (n_clusters, D)) of k-means on the rows of ``x`` (N, D): Lloyd's
    iterations from k-means++ seeds, the best of ``n_init`` runs by sum_i ||x_i - c_(label_i)||^2,
    the same for the same ``seed``."""
    x = np.asarray(getattr(x, "data", x), dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"kmeans_fit: expected points (N, D), got shape {x.shape}")
    k = positive_int(n_clusters, "kmeans_fit: n_clusters")
    if k > len(x):
        raise ValueError(f"kmeans_fit: n_clusters {k} is more than the {len(x)} points")
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(positive_int(n_init, "kmeans_fit: n_init")):
        labels, centres = _kmeans_once(x, k, rng, max_iter)
        inertia = ((x - centres[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = (labels.astype(np.int64), centres), inertia
    return best


# -- targets ---------------------------------------------------------------------------------
def hubert_frame_geometry(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> tuple[int, int]:
    """(receptive field R, hop S) in samples of a stack of unpadded 1-D convolutions:
    S = prod(strides), R = 1 + sum_i (k_i - 1) prod_(j < i) s_j; the stack gives
    floor((L - R) / S) + 1 frames for L >= R samples."""
    if len(conv_kernel) != len(conv_stride) or not conv_kernel:
        raise ValueError(f"hubert_frame_geometry: need one stride per kernel, got kernels {tuple(conv_kernel)} "
                         f"and strides {tuple(conv_stride)}")
    field, hop = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride):
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def _waveforms(waveforms, who: str) -> np.ndarray:
    data = np.asarray(getattr(waveforms, "data", waveforms), dtype=np.float64)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise ShapeError(f"{who}: expected waveforms (batch, samples), got shape {data.shape}")
    return data


def hubert_mfcc_frames(waveforms, conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                       conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2), sample_rate: int = 16000,
                       n_mfcc: int = 13, n_mels: int = 23) -> np.ndarray:
    """MFCCs (batch, frames, n_mfcc) of ``waveforms`` (batch, samples) at the frame rate of the
    feature encoder with ``conv_kernel`` and ``conv_stride``: :func:`lamina.functional.mfcc`
    with window n_fft = R and hop S (:func:`hubert_frame_geometry`), not centred."""
    data = _waveforms(waveforms, "hubert_mfcc_frames")
    field, hop = hubert_frame_geometry(conv_kernel, conv_stride)
    if data.shape[1] < field:
        raise ValueError(f"hubert_mfcc_frames: {data.shape[1]} samples are fewer than the receptive field of "
                         f"{field} samples of one frame")
    coefficients = F.mfcc(Tensor(data), sample_rate, n_mfcc, n_fft=field, hop_length=hop, center=False,
                          n_mels=n_mels)
    return np.swapaxes(coefficients.numpy(), 1, 2)


def _standardised_clusters(features: np.ndarray, n_clusters: int, seed: int, n_init: int) -> np.ndarray:
    """k-means labels (batch, frames) of frame features (batch, frames, D), each dimension
    standardised over all the frames first (MFCC coefficients differ in scale by orders of
    magnitude)."""
    batch, frames, size = features.shape
    flat = features.reshape(-1, size)
    flat = (flat - flat.mean(axis=0)) / (flat.std(axis=0) + 1e-8)
    return kmeans_fit(flat, n_clusters, seed, n_init)[0].reshape(batch, frames)


def hubert_targets_from_mfcc(waveforms, n_clusters: int, conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                             conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2), sample_rate: int = 16000,
                             n_mfcc: int = 13, n_mels: int = 23, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """Iteration-1 targets: cluster ids (batch, frames) of k-means (``seed``) on the standardised
    :func:`hubert_mfcc_frames` of ``waveforms`` (batch, samples), aligned with the frames of a
    model with the same ``conv_kernel`` and ``conv_stride`` (a model's ``config`` holds them)."""
    features = hubert_mfcc_frames(waveforms, conv_kernel, conv_stride, sample_rate, n_mfcc, n_mels)
    return _standardised_clusters(features, n_clusters, seed, n_init)


def hubert_targets_from_features(model: HuBERTModel, waveforms, layer: int, n_clusters: int, seed: int = 0,
                                 n_init: int = 4) -> np.ndarray:
    """Iteration-2 targets: cluster ids (batch, frames) of k-means (``seed``) on the outputs (as
    they are, not standardised) of Transformer layer ``layer`` (1 = the first) of ``model`` run
    on the unmasked ``waveforms`` in evaluation mode."""
    data = _waveforms(waveforms, "hubert_targets_from_features")
    training = model.training
    model.eval()
    try:
        with no_grad():
            features = model.layer_output(data.astype(np.float32), layer).numpy()
    finally:
        model.train(training)
    batch, frames, size = features.shape
    return kmeans_fit(features.reshape(-1, size), n_clusters, seed, n_init)[0].reshape(batch, frames)


# -- logits and loss -------------------------------------------------------------------------
def hubert_logits(projected, cluster_embeddings, temperature: float = 0.1) -> Tensor:
    """cos(o_t, e_c) / temperature: (..., frames, clusters) for projected states o
    (..., frames, d) and cluster embeddings e (clusters, d)."""
    projected, embeddings = as_tensor(projected), as_tensor(cluster_embeddings)
    if embeddings.ndim != 2 or projected.shape[-1] != embeddings.shape[-1]:
        raise ShapeError(f"hubert_logits: expected projected states (..., d) and cluster embeddings (clusters, d) "
                         f"with the same d, got {tuple(projected.shape)} and {tuple(embeddings.shape)}")
    if not temperature > 0:
        raise ValueError(f"hubert_logits: temperature must be positive, got {temperature!r}")
    expanded = F.reshape(projected, *projected.shape[:-1], 1, projected.shape[-1])
    return F.cosine_similarity(expanded, embeddings, axis=-1) / temperature


def _mean_cross_entropy(rows: Tensor, labels: np.ndarray, picked: np.ndarray) -> Tensor | None:
    index = np.flatnonzero(picked)
    if len(index) == 0:
        return None
    chosen = F.index_select(rows, 0, index)
    return F.cross_entropy(chosen, labels[index])


def hubert_loss(logits, labels, mask_time_indices, alpha: float = 1.0) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(L, L_m, L_u): L = alpha L_m + (1 - alpha) L_u, L_m (L_u) the mean cross-entropy of
    ``logits`` (batch, frames, clusters) against ``labels`` (batch, frames) over the masked
    (unmasked) frames of ``mask_time_indices`` (batch, frames); labels < 0 are left out. A term
    with no frame (or weight 0) is None and adds nothing."""
    logits = as_tensor(logits)
    labels = np.asarray(getattr(labels, "data", labels)).astype(np.int64)
    masked = np.asarray(getattr(mask_time_indices, "data", mask_time_indices)).astype(bool)
    if logits.ndim != 3 or labels.shape != tuple(logits.shape[:2]) or masked.shape != labels.shape:
        raise ShapeError(f"hubert_loss: expected logits (batch, frames, clusters) with labels and mask_time_indices "
                         f"(batch, frames), got {tuple(logits.shape)}, {labels.shape} and {masked.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"hubert_loss: alpha must be in [0, 1], got {alpha!r}")
    if labels.max(initial=-1) >= logits.shape[-1]:
        raise ValueError(f"hubert_loss: labels go up to {labels.max()}, but there are {logits.shape[-1]} clusters")
    rows, flat_labels = F.reshape(logits, -1, logits.shape[-1]), labels.reshape(-1)
    valid, flat_mask = flat_labels >= 0, masked.reshape(-1)
    masked_loss = _mean_cross_entropy(rows, flat_labels, valid & flat_mask) if alpha > 0 else None
    unmasked_loss = _mean_cross_entropy(rows, flat_labels, valid & ~flat_mask) if alpha < 1 else None
    terms = [w * t for w, t in ((alpha, masked_loss), (1.0 - alpha, unmasked_loss)) if t is not None]
    if not terms:
        raise ValueError("hubert_loss: no frame to score (no labelled frame in the weighted term)")
    total = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return total, masked_loss, unmasked_loss


# -- the model -------------------------------------------------------------------------------
@dataclass
class HuBERTOutput:
    """What :class:`HuBERTModel` returns: the logits (batch, frames, clusters), the mask used
    (batch, frames), and with labels the losses and the accuracy on the masked frames."""

    logits: Tensor
    mask_time_indices: np.ndarray
    loss: Tensor | None = None
    masked_loss: Tensor | None = None
    unmasked_loss: Tensor | None = None
    masked_accuracy: float | None = None


@register_layer
class HuBERTModel(ConfigBuiltModel):
    """HuBERT for masked prediction of cluster ids: sub-modules ``wav2vec2``
    (:class:`lamina.models.Wav2Vec2Model`, whose ``masked_spec_embed`` is the mask embedding) and
    ``final_proj``, and the ``label_embeddings`` (num_clusters, final_dim).

    ``model(input_values, labels=None, mask_time_indices=None, attention_mask=None)`` ->
    :class:`HuBERTOutput`; in training, spans are drawn when no mask is given (``mask_time_*``),
    in evaluation nothing is masked unless a mask is given. The encoder arguments are
    :class:`lamina.models.Wav2Vec2ForCTC`'s; ``alpha`` weighs the masked and unmasked terms."""

    def __init__(self, num_clusters: int = 100, final_dim: int = 256, logit_temperature: float = 0.1,
                 alpha: float = 1.0, hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072,
                 conv_dim: Sequence[int] = (512,) * 7, conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                 conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2),
                 conv_bias: bool = False, feat_extract_norm: str = "group", do_stable_layer_norm: bool = False,
                 num_conv_pos_embeddings: int = 128, num_conv_pos_embedding_groups: int = 16,
                 layer_norm_eps: float = 1e-5, hidden_dropout: float = 0.1, attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0, feat_proj_dropout: float = 0.0, apply_spec_augment: bool = True,
                 mask_time_prob: float = 0.08, mask_time_length: int = 10, mask_time_min_masks: int = 2,
                 mask_feature_prob: float = 0.0, mask_feature_length: int = 10, mask_feature_min_masks: int = 0,
                 name: str | None = None):
        super().__init__(name=name)
        if not logit_temperature > 0:
            raise ValueError(f"HuBERTModel: logit_temperature must be positive, got {logit_temperature!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"HuBERTModel: alpha must be in [0, 1], got {alpha!r}")
        if not mask_time_prob > 0:
            raise ValueError(f"HuBERTModel: mask_time_prob must be positive (masked prediction), got "
                             f"{mask_time_prob!r}")
        self.config = {"num_clusters": positive_int(num_clusters, "HuBERTModel: num_clusters"),
                       "final_dim": positive_int(final_dim, "HuBERTModel: final_dim"),
                       "logit_temperature": float(logit_temperature), "alpha": float(alpha),
                       **encoder_config(locals())}
        self.wav2vec2 = wav2vec2_model(self.config)
        self.final_proj = Dense(final_dim)

    def build(self, input_shape=None) -> None:
        batch = main_input_shape(input_shape)[:1] or (None,)
        c = self.config
        build_children([(self.wav2vec2, (*batch, None)), (self.final_proj, (*batch, None, c["hidden_size"]))])
        self.add_parameter("label_embeddings",
                           initializers.normal(std=1.0)((c["num_clusters"], c["final_dim"]), c["final_dim"],
                                                        c["num_clusters"]))
        self.built = True

    def output_lengths(self, lengths) -> np.ndarray:
        """Frames for utterances of ``lengths`` samples."""
        return self.wav2vec2.feature_extractor.output_lengths(lengths)

    def sample_mask(self, batch: int, frames: int, attention_mask=None, rng=None) -> np.ndarray:
        """Spans to mask (batch, frames) by the config's ``mask_time_*`` (wav2vec 2.0's rule)."""
        c = self.config
        real = None if attention_mask is None else self.wav2vec2.frames_mask(attention_mask, frames)
        generator = rng if isinstance(rng, np.random.Generator) or rng is None else np.random.default_rng(rng)
        return compute_mask_indices((batch, frames), c["mask_time_prob"], c["mask_time_length"], real,
                                    c["mask_time_min_masks"], rng=generator)

    def layer_output(self, input_values, layer: int, mask_time_indices=None) -> Tensor:
        """The output (batch, frames, hidden) of Transformer layer ``layer`` (1 to
        num_hidden_layers) on ``input_values`` (batch, samples)."""
        if not self.built:
            self.build(np.shape(input_values))
        encoder = self.wav2vec2.encoder
        if not 1 <= layer <= len(encoder.layers):
            raise ValueError(f"{self._label()}: layer must be in [1, {len(encoder.layers)}], got {layer!r}")
        states, _ = self.wav2vec2.feature_projection.project(self.wav2vec2.feature_extractor(input_values))
        states = self.wav2vec2.mask_hidden_states(states, mask_time_indices)
        states = F.add(states, encoder.pos_conv_embed(states))
        if not encoder.stable_layer_norm:
            states = encoder.layer_norm(states)
        states = encoder.dropout(states)
        for block in list(encoder.layers)[:layer]:
            states = block(states)
        return states

    def logits(self, states) -> Tensor:
        """hubert_logits(final_proj(states), label_embeddings, logit_temperature)."""
        return hubert_logits(self.final_proj(states), self.label_embeddings, self.config["logit_temperature"])

    def forward(self, input_values, labels=None, mask_time_indices=None, attention_mask=None) -> HuBERTOutput:
        if not self.built:
            self.build(np.shape(input_values))
        batch, samples = np.shape(getattr(input_values, "data", input_values))
        frames = int(self.output_lengths(samples))
        if mask_time_indices is None:
            mask = self.sample_mask(batch, frames, attention_mask) if self.training else np.zeros((batch, frames), bool)
        else:
            mask = np.asarray(getattr(mask_time_indices, "data", mask_time_indices)).astype(bool)
        states, _ = self.wav2vec2.encode(input_values, attention_mask, mask)
        output = HuBERTOutput(self.logits(states), mask)
        if labels is None:
            return output
        labels = np.asarray(getattr(labels, "data", labels)).astype(np.int64)
        if attention_mask is not None:
            labels = np.where(self.wav2vec2.frames_mask(attention_mask, frames), labels, -1)
        output.loss, output.masked_loss, output.unmasked_loss = hubert_loss(output.logits, labels, mask,
                                                                            self.config["alpha"])
        scored = mask & (labels >= 0)
        if scored.any():
            output.masked_accuracy = float((output.logits.data.argmax(-1) == labels)[scored].mean())
        return output

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


def hubert(config: str = "base", **options) -> HuBERTModel:
    """The :class:`HuBERTModel` of configuration ``config`` (see :data:`HUBERT_CONFIGS`);
    ``options`` override its arguments. Unbuilt: ``model.build()`` makes the weights."""
    if config not in HUBERT_CONFIGS:
        raise ValueError(f"hubert: config must be one of {tuple(HUBERT_CONFIGS)}, got {config!r}")
    return HuBERTModel(**{**HUBERT_CONFIGS[config], **options})
