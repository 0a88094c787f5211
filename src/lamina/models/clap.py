"""CLAP: contrastive language-audio pre-training (Elizalde et al., "CLAP: learning audio
concepts from natural language supervision", 2023; Wu et al., "Large-scale contrastive
language-audio pretraining with feature fusion and keyword-to-caption augmentation", 2023).

CLIP with an audio tower in place of the image tower:

    a = P_a(encoder(log(mel(x) + eps))),  t = P_t(text tower(ids))      P: two-layer projection MLPs
    logits_per_text = exp(s) (t / |t|)(a / |a|)^T,  logits_per_audio = its transpose
    loss = (CE(logits_per_text, diag) + CE(logits_per_audio, diag)) / 2      (CLIP's, ``loss='softmax'``)
         or SigLIP's -1/N sum_ij log sigmoid(z_ij (logits_ij + b)), z = 2 I - 1     (``loss='sigmoid'``)

The text tower is :class:`~lamina.models.CLIPTextTransformer`; the log-mel front end is
:func:`lamina.functional.mel_spectrogram` followed by log(mel + eps). The default audio
encoder is a small CNN14 (Kong et al., PANNs, 2020): blocks of two 3x3 convolutions with batch
norm and ReLU followed by 2x2 average pooling, then the mean over the mel axis, the max plus the
mean over time, and a ReLU fully connected layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.clip import CLIP, LOGIT_SCALE_INIT, ZeroShotClassifier, clip_loss, clip_tokenize
from lamina.models.hf_weights import build_children
from lamina.models.siglip import sigmoid_pair_scores
from lamina.nn.audio import MelSpectrogram
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.layer import layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode
from lamina.nn.normalization import BatchNorm
from lamina.nn.pooling import AvgPool2D
from lamina.nn.sequential import Sequential

__all__ = ["CLAP", "CLAPOutput", "CNN14Block", "CNN14Encoder", "LogMelFrontEnd", "audio_text_retrieval", "clap",
           "retrieval_recall_at_k", "zero_shot_audio_classifier"]

AUDIO_ENCODERS = {"cnn14-tiny": (16, 32, 64), "cnn14-small": (32, 64, 128, 256),
                  "cnn14": (64, 128, 256, 512, 1024, 2048)}
"""Named CNN14-style encoders: the filters of their blocks (CNN14 itself has six)."""

LOSSES = ("softmax", "sigmoid")

DRY_CALL_FRAMES, DRY_CALL_SAMPLES = 64, 16000
"""The length of the zeros a lazily built audio encoder is first called on (features, waveforms)."""

FRONT_END_DEFAULTS = {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 64, "f_min": 50.0,
                      "f_max": None, "eps": 1e-6}

TINY_TEXT = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 16}


@register_layer
class LogMelFrontEnd(Module):
    """Waveforms (N, samples) -> log-mel features (N, frames, n_mels): log(mel(x) + eps), mel
    the power mel spectrogram of :class:`lamina.nn.MelSpectrogram` (Hann window of n_fft, centred
    frames, HTK mel scale), time first."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160, n_mels: int = 64,
                 f_min: float = 50.0, f_max: float | None = None, eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        if eps <= 0:
            raise ValueError(f"LogMelFrontEnd: eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self.mel = MelSpectrogram(sample_rate, n_fft, hop_length=hop_length, f_min=f_min, f_max=f_max, n_mels=n_mels)
        self.built = True

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    def forward(self, waveforms) -> Tensor:
        x = as_tensor(waveforms)
        if x.ndim != 2:
            raise ShapeError(f"{self._label()}: expected waveforms (batch, samples), got shape {tuple(x.shape)}")
        return F.transpose(F.log(F.add(self.mel(x), self.eps)), 0, 2, 1)

    def get_config(self) -> dict:
        m = self.mel
        return {"sample_rate": m.sample_rate, "n_fft": m.n_fft, "hop_length": m.hop_length, "n_mels": m.n_mels,
                "f_min": m.f_min, "f_max": m.f_max, "eps": self.eps, "name": self.name}


@register_layer
class CNN14Block(Module):
    """One CNN14 block on NHWC maps: avg_pool(relu(bn(conv3x3(relu(bn(conv3x3(x))))))), the
    convolutions bias-free with 'same' padding, the pooling ``pool_size`` x ``pool_size``."""

    def __init__(self, filters: int, pool_size: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "CNN14Block: filters")
        self.pool_size = positive_int(pool_size, "CNN14Block: pool_size")
        self.conv1 = Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn1 = BatchNorm()
        self.conv2 = Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn2 = BatchNorm()
        self.pool = AvgPool2D(pool_size)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        mid = shape[:-1] + (self.filters,)
        build_children([(self.conv1, shape), (self.bn1, mid), (self.conv2, mid), (self.bn2, mid)])
        self.built = True

    def forward(self, x) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.pool(x)

    def get_config(self) -> dict:
        return {"filters": self.filters, "pool_size": self.pool_size, "name": self.name}


@register_layer
class CNN14Encoder(Module):
    """A CNN14-style audio encoder: log-mel features (N, frames, n_mels) -> (N, embed_dim).
    The features get a channel axis and pass one :class:`CNN14Block` per entry of
    ``filters`` (each halving frames and mels), then h = mean over the mel axis,
    h = max_t h + mean_t h, and relu(fc(h)) with ``embed_dim`` units (the last block's filters by
    default)."""

    def __init__(self, filters: Sequence[int] = AUDIO_ENCODERS["cnn14-tiny"], embed_dim: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = tuple(positive_int(f, "CNN14Encoder: filters") for f in filters)
        if not self.filters:
            raise ValueError("CNN14Encoder: needs at least one block, got filters=()")
        self.embed_dim = self.filters[-1] if embed_dim is None else positive_int(embed_dim, "CNN14Encoder: embed_dim")
        self.blocks = Sequential([CNN14Block(f) for f in self.filters])
        self.fc = Dense(self.embed_dim, activation="relu")

    def build(self, input_shape) -> None:
        shape = (None, None, input_shape[-1], 1)
        for block in self.blocks:
            build_children([(block, shape)])
            shape = shape[:-1] + (block.filters,)
        build_children([(self.fc, (None, self.filters[-1]))])
        self.built = True

    def forward(self, features) -> Tensor:
        x = as_tensor(features)
        if x.ndim != 3:
            raise ShapeError(f"{self._label()}: expected log-mel features (batch, frames, n_mels), got shape "
                             f"{tuple(x.shape)}")
        smallest = 2 ** len(self.filters)
        if x.shape[1] < smallest or x.shape[2] < smallest:
            raise ShapeError(f"{self._label()}: {len(self.filters)} blocks pool by 2 each, so frames and n_mels must "
                             f"be >= {smallest}, got features of shape {tuple(x.shape)}")
        h = self.blocks(F.expand_dims(x, -1))
        h = F.mean(h, axis=2)
        return self.fc(F.add(F.max(h, axis=1), F.mean(h, axis=1)))

    def get_config(self) -> dict:
        return {"filters": list(self.filters), "embed_dim": self.embed_dim, "name": self.name}


def projection_mlp(dim: int) -> Sequential:
    """CLAP's projection to the joint space: Dense(dim), ReLU, Dense(dim)."""
    return Sequential([Dense(dim, activation="relu"), Dense(dim)])


@dataclass
class CLAPOutput:
    """What :class:`CLAP` returns: the similarity logits both ways, the normalised embeddings,
    and the contrastive loss (None unless asked for)."""

    logits_per_audio: Tensor
    logits_per_text: Tensor
    audio_embeds: Tensor
    text_embeds: Tensor
    loss: Tensor | None = None


def _audio_encoder(audio_encoder) -> Module:
    if isinstance(audio_encoder, str):
        if audio_encoder not in AUDIO_ENCODERS:
            raise ValueError(f"CLAP: audio_encoder must be one of {tuple(AUDIO_ENCODERS)} or a Module, got "
                             f"{audio_encoder!r}")
        return CNN14Encoder(AUDIO_ENCODERS[audio_encoder])
    if isinstance(audio_encoder, dict):
        return layer_from_config(audio_encoder)
    if isinstance(audio_encoder, Module):
        return audio_encoder
    raise TypeError(f"CLAP: audio_encoder must be a name, a Module or a layer config, got "
                    f"{type(audio_encoder).__name__}")


def _pooled(output, who: str) -> Tensor:
    """An encoder's output as (N, D): a tuple's first item, a ``last_hidden_state``, and (N, T,
    D) hidden states averaged over time."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    output = getattr(output, "last_hidden_state", output)
    if output.ndim == 3:
        return F.mean(output, axis=1)
    if output.ndim != 2:
        raise ShapeError(f"{who}: the audio encoder gave an output of shape {tuple(output.shape)}; expected (batch, "
                         "width) or (batch, time, width)")
    return output


@register_layer
class CLAP(CLIP):
    """CLAP (see the module docstring): ``model(waveforms, input_ids, attention_mask=None,
    return_loss=False)`` -> :class:`CLAPOutput`.

    ``audio_encoder``: a name of :data:`AUDIO_ENCODERS` ('cnn14-tiny', 'cnn14-small', 'cnn14')
    or any lamina Module mapping the log-mel features (N, frames, n_mels) (the waveforms (N,
    samples) with ``front_end=None``) to (N, D) or (N, T, D) (averaged over time; a tuple's
    first item or a ``last_hidden_state`` is used), in which case ``audio_width`` is D.
    ``text_config``: :class:`~lamina.models.CLIPTextTransformer`'s keys. ``front_end``: the
    :class:`LogMelFrontEnd` settings, or None for none. ``loss``: 'softmax' (CLIP's symmetric
    InfoNCE) or 'sigmoid' (SigLIP's, with a learnable bias ``logit_bias``). Sub-modules
    ``front_end``, ``audio_model``, ``audio_projection``, ``text_model``, ``text_projection``
    (projections: Dense, ReLU, Dense); parameter ``logit_scale``."""

    def __init__(self, audio_encoder="cnn14-tiny", text_config: dict | None = None, embed_dim: int = 512,
                 front_end: dict | None = FRONT_END_DEFAULTS, audio_width: int | None = None, loss: str = "softmax",
                 logit_scale_init_value: float = LOGIT_SCALE_INIT, logit_bias_init_value: float = F.SIGLIP_BIAS_INIT,
                 name: str | None = None):
        if loss not in LOSSES:
            raise ValueError(f"CLAP: loss must be one of {LOSSES}, got {loss!r}")
        audio = {"audio_encoder": audio_encoder, "front_end": front_end, "audio_width": audio_width}
        super().__init__(text_config, audio, embed_dim, logit_scale_init_value, name=name)
        self.loss, self.logit_bias_init_value = loss, float(logit_bias_init_value)
        self.text_projection = projection_mlp(embed_dim)

    def _add_image_tower(self, audio: dict) -> None:
        options = audio["front_end"]
        self.front_end_config = None if options is None else {**FRONT_END_DEFAULTS, **options}
        self.front_end = None if options is None else LogMelFrontEnd(**self.front_end_config)
        self.audio_model = _audio_encoder(audio["audio_encoder"])
        self.audio_encoder_name = audio["audio_encoder"] if isinstance(audio["audio_encoder"], str) else None
        if isinstance(self.audio_model, CNN14Encoder):
            self.audio_width = self.audio_model.embed_dim
        elif audio["audio_width"] is None:
            raise ValueError(f"CLAP: audio_width (the width of the audio encoder's output) is needed with an audio "
                             f"encoder of class {type(self.audio_model).__name__}")
        else:
            self.audio_width = positive_int(audio["audio_width"], "CLAP: audio_width")
        self.audio_projection = projection_mlp(self.projection_dim)
        self.vision_config = {}

    def _image_tower_shapes(self) -> list:
        features = (None, None) if self.front_end is None else (None, None, self.front_end.n_mels)
        return [(self.audio_model, features), (self.audio_projection, (None, self.audio_width))]

    def _image_features(self, waveforms) -> Tensor:
        x = as_tensor(waveforms)
        if self.front_end is not None:
            x = self.front_end(x)
        return self.audio_projection(_pooled(self.audio_model(x), self._label()))

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        if not self.audio_model.state_dict():
            self._build_encoder_by_a_call()
        if self.loss == "sigmoid":
            dtype = backend.get_default_dtype()
            self.add_parameter("logit_bias", backend.xp.asarray(self.logit_bias_init_value, dtype=dtype))

    def _build_encoder_by_a_call(self) -> None:
        """Create the weights of an encoder that builds them on its first call (its shapes follow
        from the feature width alone): call it once, in evaluation mode, on zeros."""
        shape = (1, DRY_CALL_FRAMES, self.front_end.n_mels) if self.front_end is not None else (1, DRY_CALL_SAMPLES)
        with no_grad(), evaluation_mode(self.audio_model):
            self.audio_model(Tensor._wrap(backend.xp.zeros(shape, dtype=backend.get_default_dtype())))

    def get_audio_features(self, waveforms) -> Tensor:
        """audio_projection(audio encoder(front end(waveforms))): (N, embed_dim), not normalised."""
        return self.get_image_features(waveforms)

    def forward(self, waveforms, input_ids, attention_mask=None, return_loss: bool = False) -> CLAPOutput:
        if self.loss == "softmax":
            out = super().forward(waveforms, input_ids, attention_mask, return_loss)
            return CLAPOutput(out.logits_per_image, out.logits_per_text, out.image_embeds, out.text_embeds, out.loss)
        audio_embeds = F.normalize(self.get_audio_features(waveforms), axis=-1)
        text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask), axis=-1)
        logits, transposed, loss = sigmoid_pair_scores(self, audio_embeds, text_embeds, return_loss, "clips")
        return CLAPOutput(logits, transposed, audio_embeds, text_embeds, loss)

    def contrastive_loss(self, audio_embeds, text_embeds) -> Tensor:
        """The training loss of unit-length embeddings (N, D) of N matching pairs: CLIP's
        :func:`~lamina.models.clip.clip_loss` of exp(s) t a^T, or :func:`lamina.functional.siglip_loss`."""
        self._ensure_built()
        if self.loss == "sigmoid":
            return F.siglip_loss(audio_embeds, text_embeds, self.logit_scale, self.logit_bias, normalize=False)
        return clip_loss(F.mul(F.matmul(text_embeds, F.transpose(audio_embeds, 1, 0)), F.exp(self.logit_scale)))

    def get_config(self) -> dict:
        encoder = self.audio_encoder_name or layer_to_config(self.audio_model)
        return {"audio_encoder": encoder, "text_config": dict(self.text_config), "embed_dim": self.projection_dim,
                "front_end": None if self.front_end_config is None else dict(self.front_end_config),
                "audio_width": self.audio_width, "loss": self.loss,
                "logit_scale_init_value": self.logit_scale_init_value,
                "logit_bias_init_value": self.logit_bias_init_value, "name": self.name}

    def extra_repr(self) -> str:
        t = self.text_config
        return (f"audio={type(self.audio_model).__name__} ({self.audio_width}), "
                f"text={t['hidden_size']}x{t['num_hidden_layers']}, embed_dim={self.projection_dim}, loss={self.loss}")


def clap(audio_encoder="cnn14-tiny", text: str = "tiny", **options) -> CLAP:
    """A :class:`CLAP` with ``text`` 'tiny' (a 2-layer, 32-wide text tower of 300 ids) or
    'base' (CLIP's 512-wide, 12-layer one); ``options`` override :class:`CLAP`'s arguments
    (``text_config`` entries are merged). Unbuilt."""
    texts = {"tiny": TINY_TEXT, "base": {}}
    if text not in texts:
        raise ValueError(f"clap: text must be one of {tuple(texts)}, got {text!r}")
    options["text_config"] = {**texts[text], **options.get("text_config", {})}
    options.setdefault("embed_dim", 16 if text == "tiny" else 512)
    return CLAP(audio_encoder, **options)


# -- zero-shot classification and retrieval ---------------------------------------------------
def _text_embeddings(model: CLAP, prompts, tokenizer, who: str) -> np.ndarray:
    """Unit-length text embeddings (N, D) of ``prompts``: strings (tokenized by ``tokenizer``,
    as :func:`~lamina.models.clip_tokenize` takes it) or integer ids (N, T)."""
    if isinstance(prompts, np.ndarray) and prompts.dtype.kind in "iu":
        ids, mask = prompts, np.ones_like(prompts)
    else:
        if tokenizer is None:
            raise ValueError(f"{who}: text prompts need a tokenizer (or pass integer ids (N, T))")
        ids, mask = clip_tokenize(tokenizer, list(prompts), model.text_config["max_position_embeddings"])
    with no_grad():
        return F.normalize(model.get_text_features(ids, mask), axis=-1).numpy()


def zero_shot_audio_classifier(model: CLAP, class_prompts, tokenizer=None,
                               class_names: Sequence[str] | None = None) -> ZeroShotClassifier:
    """A zero-shot classifier of waveforms: ``class_prompts`` holds one entry per class, a
    prompt ('the sound of a dog barking'), a list of prompts (their normalised embeddings are
    averaged and normalised again) or a row of integer ids. Returns CLIP's
    :class:`~lamina.models.clip.ZeroShotClassifier`: ``classifier(waveforms)`` -> (N, C)
    probabilities, ``.predict(waveforms)`` -> class indices."""
    who = "zero_shot_audio_classifier"
    if not isinstance(model, CLAP):
        raise TypeError(f"{who}: expected a CLAP model, got {type(model).__name__}")
    model._ensure_built()
    if isinstance(class_prompts, np.ndarray):
        rows = list(_text_embeddings(model, class_prompts, tokenizer, who))
    else:
        rows = []
        for prompts in class_prompts:
            prompts = [prompts] if isinstance(prompts, str) else prompts
            mean = _text_embeddings(model, prompts, tokenizer, who).mean(axis=0)
            rows.append(mean / np.linalg.norm(mean))
    if not rows:
        raise ValueError(f"{who}: needs at least one class")
    names = [str(i) for i in range(len(rows))] if class_names is None else list(class_names)
    if len(names) != len(rows):
        raise ValueError(f"{who}: {len(rows)} classes but {len(names)} class_names")
    return ZeroShotClassifier(model, np.stack(rows), names)


def retrieval_recall_at_k(similarity, k: int = 1) -> float:
    """The fraction of queries (rows of ``similarity`` (N, N)) whose match, the candidate of
    the same index, is among the k most similar candidates (ties counted against the match)."""
    s = np.asarray(similarity.numpy() if isinstance(similarity, Tensor) else similarity)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ShapeError(f"retrieval_recall_at_k: expected square similarities (N, N) of matching pairs, got shape "
                         f"{s.shape}")
    positive_int(k, "retrieval_recall_at_k: k")
    rank = (s > np.diag(s)[:, None]).sum(axis=1) + (s == np.diag(s)[:, None]).sum(axis=1) - 1
    return float((rank < k).mean())


def audio_text_retrieval(model: CLAP, waveforms, prompts, tokenizer=None, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k of N matching (clip, caption) pairs both ways: {'text_to_audio_R@k': ...,
    'audio_to_text_R@k': ...} for each k of ``ks``, from the cosine similarities of the
    embeddings. ``prompts``: captions (with ``tokenizer``) or integer ids (N, T)."""
    who = "audio_text_retrieval"
    if not isinstance(model, CLAP):
        raise TypeError(f"{who}: expected a CLAP model, got {type(model).__name__}")
    model._ensure_built()
    text = _text_embeddings(model, prompts, tokenizer, who)
    with no_grad():
        audio = F.normalize(model.get_audio_features(waveforms), axis=-1).numpy()
    if audio.shape[0] != text.shape[0]:
        raise ShapeError(f"{who}: {audio.shape[0]} clips but {text.shape[0]} captions; expected matching pairs")
    s = text @ audio.T
    results = {}
    for k in ks:
        results[f"text_to_audio_R@{k}"] = retrieval_recall_at_k(s, k)
        results[f"audio_to_text_R@{k}"] = retrieval_recall_at_k(s.T, k)
    return results
