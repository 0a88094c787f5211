"""Whisper (Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", 2022)
in the layout of Hugging Face's ``WhisperForConditionalGeneration``, so that its published
weights load with :func:`load_hf_whisper_state_dict`. Its log-mel front end
(:func:`whisper_log_mel_spectrogram`, :func:`pad_or_trim`) lives in
:mod:`lamina.models.whisper_features` and its layers in :mod:`lamina.models.whisper_layers`,
both re-exported here.

Model, pre-norm Transformer encoder-decoder with GELU feed-forwards:

    encoder:  h = gelu(conv2(gelu(conv1(features))))      conv1 k3 p1, conv2 k3 stride 2 p1
              h = h + S[0 .. T - 1]                        S fixed sinusoids (embed_positions)
              per layer  h = h + SelfAttn(LN(h));  h = h + fc2(gelu(fc1(LN(h))))
              enc = LN(h)
    decoder:  g = E[y] + P[0 .. U - 1]                     P learned (embed_positions, 448 rows)
              per layer  g = g + CausalSelfAttn(LN(g));  g = g + CrossAttn(LN(g), enc)
                         g = g + fc2(gelu(fc1(LN(g))))
              logits = LN(g) E^T                           proj_out tied to embed_tokens

Attention is softmax(q k^T / sqrt(d_head)) v per head, with biases on the query, value and
output projections and none on the key projection (``k_proj``).

Generation (:meth:`Whisper.generate`) runs the encoder once; each decoder layer computes the
cross-attention keys and values of the encoder output once and caches its self-attention
keys and values, so each step feeds only the new token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.hf_weights import (
    ConfigBuiltModel,
    HFWeight,
    build_children,
    copied,
    linear,
    load_hf_state_dict,
    main_input_shape,
    read_state_dict,
)
from lamina.models.whisper_features import (
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    pad_or_trim,
    whisper_log_mel_spectrogram,
    whisper_sinusoids,
)
from lamina.models.whisper_layers import (  # noqa: F401  (moved there, importable from here too)
    _NEG,
    INIT_STD,
    WhisperAttention,
    WhisperDecoder,
    WhisperDecoderLayer,
    WhisperEncoder,
    WhisperEncoderLayer,
    WhisperModel,
    _FeedForward,
    _FixedPositions,
    _ids,
    _normal,
)
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor
from lamina.text.beam import beam_search

__all__ = ["N_FRAMES", "N_SAMPLES", "SAMPLE_RATE", "WHISPER_CONFIGS", "Whisper", "WhisperAttention",
           "WhisperDecoder", "WhisperDecoderLayer", "WhisperEncoder", "WhisperEncoderLayer", "WhisperModel",
           "load_hf_whisper_state_dict", "pad_or_trim", "whisper", "whisper_log_mel_spectrogram",
           "whisper_sinusoids"]

WHISPER_CONFIGS = {
    "tiny": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "decoder_layers": 4,
             "decoder_attention_heads": 6, "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536},
    "base": {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "decoder_layers": 6,
             "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048},
    "small": {"d_model": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "decoder_layers": 12,
              "decoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072},
    "test": {"vocab_size": 16, "num_mel_bins": 8, "d_model": 16, "encoder_layers": 2, "encoder_attention_heads": 2,
             "decoder_layers": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 24, "decoder_ffn_dim": 24,
             "max_source_positions": 8, "max_target_positions": 12, "pad_token_id": 13, "bos_token_id": 13,
             "eos_token_id": 13, "decoder_start_token_id": 14},
}
"""Hugging Face's 'openai/whisper-tiny', '-base' and '-small' (multilingual, 51,865 tokens) and
a 'test' size for quick checks."""


# -- the model -------------------------------------------------------------------------------
@register_layer
class Whisper(ConfigBuiltModel):
    """Whisper speech recognizer (HF's ``WhisperForConditionalGeneration``).

    ``model(input_features, decoder_input_ids)`` -> scores (N, U, vocab); features
    (N, num_mel_bins, frames) as :func:`whisper_log_mel_spectrogram` makes them (3000 frames
    for the published models). ``model.loss(input_features, labels)``: the mean cross-entropy
    over labels that are not -100, the decoder fed the labels shifted right (start token
    ``decoder_start_token_id``, -100 read as ``pad_token_id``), as HF. Sub-modules carry HF's
    names (``model.encoder``, ``model.decoder``); the output projection ``proj_out`` is the
    token table ``model.decoder.embed_tokens`` (tied). The arguments are ``WhisperConfig``'s,
    with its defaults (whisper-tiny's sizes); weights start as HF initializes them."""

    def __init__(self, vocab_size: int = 51865, num_mel_bins: int = 80, d_model: int = 384, encoder_layers: int = 4,
                 encoder_attention_heads: int = 6, decoder_layers: int = 4, decoder_attention_heads: int = 6,
                 encoder_ffn_dim: int = 1536, decoder_ffn_dim: int = 1536, max_source_positions: int = 1500,
                 max_target_positions: int = 448, dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, pad_token_id: int = 50257, bos_token_id: int = 50257,
                 eos_token_id: int = 50257, decoder_start_token_id: int = 50258, name: str | None = None):
        super().__init__(name=name)
        self.config = {"vocab_size": positive_int(vocab_size, "Whisper: vocab_size"),
                       "num_mel_bins": num_mel_bins, "d_model": d_model, "encoder_layers": encoder_layers,
                       "encoder_attention_heads": encoder_attention_heads, "decoder_layers": decoder_layers,
                       "decoder_attention_heads": decoder_attention_heads, "encoder_ffn_dim": encoder_ffn_dim,
                       "decoder_ffn_dim": decoder_ffn_dim, "max_source_positions": max_source_positions,
                       "max_target_positions": max_target_positions, "dropout": dropout,
                       "attention_dropout": attention_dropout, "activation_dropout": activation_dropout,
                       "pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
                       "decoder_start_token_id": decoder_start_token_id}
        for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            if not 0 <= self.config[key] < vocab_size:
                raise ValueError(f"Whisper: {key} {self.config[key]} is not a token id of the vocabulary of "
                                 f"{vocab_size}")
        self.vocab_size = vocab_size
        self.pad_token_id, self.eos_token_id = int(pad_token_id), int(eos_token_id)
        self.decoder_start_token_id = int(decoder_start_token_id)
        rates = {"dropout": dropout, "attention_dropout": attention_dropout, "activation_dropout": activation_dropout}
        encoder = WhisperEncoder(num_mel_bins, d_model, positive_int(encoder_layers, "Whisper: encoder_layers"),
                                 encoder_attention_heads, encoder_ffn_dim, max_source_positions, **rates)
        decoder = WhisperDecoder(vocab_size, d_model, positive_int(decoder_layers, "Whisper: decoder_layers"),
                                 decoder_attention_heads, decoder_ffn_dim, max_target_positions, pad_token_id,
                                 **rates)
        self.model = WhisperModel(encoder, decoder)

    @property
    def encoder(self) -> WhisperEncoder:
        return self.model.encoder

    @property
    def decoder(self) -> WhisperDecoder:
        return self.model.decoder

    def build(self, input_shape=None) -> None:
        build_children([(self.model, main_input_shape(input_shape) or (None,))])
        self.built = True

    def encode(self, input_features) -> Tensor:
        """The encoder states (N, ceil(frames / 2), d_model)."""
        if not self.built:
            self.build(np.shape(input_features))
        return self.encoder(input_features)

    def decode(self, decoder_input_ids, encoder_output, caches=None, offset: int = 0,
               cross_attention_scores: list | None = None) -> Tensor:
        """Scores (N, U, vocab) of the decoder fed ``decoder_input_ids`` (after ``offset``
        cached tokens when ``caches``, one dict per decoder layer, is given).
        ``cross_attention_scores`` (a list) receives one array (N, heads, U, encoder positions)
        per decoder layer: its cross-attention scores before the softmax (word alignment)."""
        x = self.decoder(decoder_input_ids, encoder_output, caches, offset, cross_attention_scores)
        return F.matmul(x, F.transpose(self.decoder.embed_tokens.weight, 1, 0))

    def forward(self, input_features, decoder_input_ids) -> Tensor:
        return self.decode(decoder_input_ids, self.encode(input_features))

    def shift_right(self, labels) -> np.ndarray:
        """The decoder input for ``labels``: the start token, then the labels but the last,
        -100 replaced by the pad id."""
        labels = _ids(labels)
        shifted = np.full_like(labels, self.decoder_start_token_id)
        shifted[:, 1:] = labels[:, :-1]
        return np.where(shifted == -100, self.pad_token_id, shifted)

    def loss(self, input_features, labels) -> Tensor:
        """Mean cross-entropy of the scores against ``labels`` (N, U), -100 ignored."""
        logits = self(input_features, self.shift_right(labels))
        return F.categorical_cross_entropy(logits, _ids(labels), from_logits=True, ignore_index=-100)

    # -- generation ------------------------------------------------------------------------
    def generate(self, input_features, max_new_tokens: int = 20, decoder_prompt_ids: Sequence[int] | None = None,
                 beam_width: int = 1, suppress_tokens: Sequence[int] | None = None,
                 begin_suppress_tokens: Sequence[int] | None = None, length_penalty: float = 0.0,
                 use_cache: bool = True, logits_processor: Callable | None = None) -> np.ndarray:
        """Greedy (``beam_width`` 1) or beam-search transcription of each input: ids
        (N, <= len(prompt) + max_new_tokens), the ``decoder_prompt_ids`` (default
        [decoder_start_token_id]; for the published models e.g. [<|startoftranscript|>,
        <|en|>, <|transcribe|>, <|notimestamps|>]) then up to ``max_new_tokens`` tokens, each
        row stopping after ``eos_token_id`` and padded with ``pad_token_id``.
        ``suppress_tokens`` are never generated, ``begin_suppress_tokens`` not as the first
        new token. The encoder runs once; with ``use_cache`` each step feeds only the new
        token (cached self-attention keys and values, cross-attention keys and values
        computed once), otherwise the decoder reruns the whole prefix. Beam search is
        :func:`lamina.text.beam_search` (hypotheses ranked by log-probability over length to
        the power ``length_penalty``). ``logits_processor(ids (B, t), scores (B, vocab))`` rewrites
        each step's scores after the suppression (e.g. the timestamp rules of
        :class:`lamina.models.WhisperTimestampRules`)."""
        who = "Whisper.generate"
        max_new_tokens = positive_int(max_new_tokens, f"{who}: max_new_tokens")
        beam_width = positive_int(beam_width, f"{who}: beam_width")
        prompt = np.asarray([self.decoder_start_token_id] if decoder_prompt_ids is None else decoder_prompt_ids,
                            dtype=np.int64)
        if prompt.ndim != 1 or not len(prompt) or ((prompt < 0) | (prompt >= self.vocab_size)).any():
            raise ValueError(f"{who}: decoder_prompt_ids must be a non-empty list of token ids below "
                             f"{self.vocab_size}, got {decoder_prompt_ids!r}")
        limit = self.decoder.max_target_positions
        if len(prompt) + max_new_tokens > limit:
            raise ValueError(f"{who}: {len(prompt)} prompt tokens + max_new_tokens {max_new_tokens} exceed "
                             f"max_target_positions {limit}")
        features = as_tensor(input_features)
        if features.ndim != 3:
            raise ShapeError(f"{who}: expected log-mel features (batch, num_mel_bins, frames), got shape "
                             f"{tuple(features.shape)}")
        suppress = self._suppression(suppress_tokens, "suppress_tokens")
        begin = suppress | self._suppression(begin_suppress_tokens, "begin_suppress_tokens")
        mode = self.training
        self.eval()
        try:
            with no_grad():
                encoded = self.encode(features)
                if beam_width == 1:
                    rows = self._greedy(encoded, prompt, max_new_tokens, suppress, begin, use_cache,
                                        logits_processor)
                else:
                    rows = [self._beam(encoded[i:i + 1], prompt, max_new_tokens, beam_width, suppress, begin,
                                       length_penalty, use_cache, logits_processor)
                            for i in range(features.shape[0])]
        finally:
            self.train(mode)
        out = np.full((len(rows), max(len(row) for row in rows)), self.pad_token_id, dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out

    def _suppression(self, tokens, what: str) -> np.ndarray:
        """A boolean mask (vocab,) of the ``tokens``."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        if tokens is not None:
            ids = np.asarray(list(tokens), dtype=np.int64)
            if ((ids < 0) | (ids >= self.vocab_size)).any():
                raise ValueError(f"Whisper.generate: {what} must be token ids below {self.vocab_size}, got {tokens!r}")
            mask[ids] = True
        return mask

    def _next_scores(self, ids: np.ndarray, encoded: Tensor, caches, read: int, suppress: np.ndarray,
                     processor: Callable | None = None) -> np.ndarray:
        """The log-probabilities (B, vocab) of the token after each row of ``ids`` (B, t),
        the first ``read`` tokens of which the ``caches`` hold (None: rerun on all)."""
        if caches is None:
            logits = self.decode(ids, encoded)
        else:
            logits = self.decode(ids[:, read:], encoded, caches, read)
        scores = logits.numpy()[:, -1].astype(np.float64)
        scores[:, suppress] = -np.inf
        if processor is not None:
            scores = np.asarray(processor(ids, scores), dtype=np.float64)
        scores = scores - scores.max(axis=-1, keepdims=True)
        return scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))

    def _greedy(self, encoded: Tensor, prompt: np.ndarray, steps: int, suppress: np.ndarray, begin: np.ndarray,
                use_cache: bool, processor: Callable | None = None) -> list[list[int]]:
        batch = encoded.shape[0]
        ids = np.repeat(prompt[None, :], batch, axis=0)
        caches = [{} for _ in self.decoder.layers] if use_cache else None
        done = np.zeros(batch, dtype=bool)
        for step in range(steps):
            read = ids.shape[1] - (len(prompt) if step == 0 else 1)
            scores = self._next_scores(ids, encoded, caches, read, begin if step == 0 else suppress, processor)
            token = np.where(done, self.pad_token_id, scores.argmax(axis=-1))
            ids = np.concatenate([ids, token[:, None]], axis=1)
            done |= token == self.eos_token_id
            if done.all():
                break
        return [list(row) for row in ids]

    def _beam(self, encoded: Tensor, prompt: np.ndarray, steps: int, width: int, suppress: np.ndarray,
              begin: np.ndarray, length_penalty: float, use_cache: bool, processor: Callable | None = None
              ) -> list[int]:
        caches = [{} for _ in self.decoder.layers] if use_cache else None
        read = [0]

        def step(last: np.ndarray, texts: np.ndarray):
            texts = np.concatenate([texts, last[:, None]], axis=1)
            memory = encoded if caches is not None or len(texts) == 1 else F.concat([encoded] * len(texts), axis=0)
            first = texts.shape[1] == len(prompt)
            scores = self._next_scores(texts, memory, caches, read[0], begin if first else suppress, processor)
            read[0] = texts.shape[1]
            return scores, texts

        def select(texts: np.ndarray, rows: np.ndarray) -> np.ndarray:
            if caches is not None:
                for cache in caches:
                    for key, (k, v) in cache.items():
                        cache[key] = (F.index_select(k, 0, rows), F.index_select(v, 0, rows))
            return texts[rows]

        best = beam_search(step, prompt[None, :-1], int(prompt[-1]), self.eos_token_id, width, steps,
                           length_penalty, select)[0]
        return [*prompt.tolist(), *best.ids]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


def whisper(config: str = "tiny", **options) -> Whisper:
    """The Whisper of Hugging Face configuration ``config`` (see :data:`WHISPER_CONFIGS`):
    'tiny' (openai/whisper-tiny, 37,760,640 parameters), 'base' (72,593,920), 'small'
    (241,734,912) or 'test'; ``options`` override :class:`Whisper`'s arguments. Unbuilt:
    ``model.build()`` makes the weights (shape-only inside :func:`lamina.nn.init.meta`)."""
    if config not in WHISPER_CONFIGS:
        raise ValueError(f"whisper: config must be one of {tuple(WHISPER_CONFIGS)}, got {config!r}")
    return Whisper(**{**WHISPER_CONFIGS[config], **options})


# -- Hugging Face weights -------------------------------------------------------------------
def _conv(key: str) -> HFWeight:
    """A PyTorch ``Conv1d`` weight (out, in, k), lamina's Conv1D weight (out, k, in) transposed."""
    return HFWeight((key,), lambda w: w.transpose(0, 2, 1))


def hf_whisper_table(model: Whisper) -> dict[str, HFWeight]:
    """:class:`Whisper`'s state-dict key -> Hugging Face's weight. The names are the same; the
    ``Linear`` and ``Conv1d`` weights are transposed."""
    table: dict[str, HFWeight] = {}
    for key in model.state_dict():
        if key.endswith((".conv1.weight", ".conv2.weight")):
            table[key] = _conv(key)
        elif key.endswith("_proj.weight") or key.endswith((".fc1.weight", ".fc2.weight")):
            table[key] = linear(key)
        else:
            table[key] = copied(key)
    return table


def load_hf_whisper_state_dict(model: Whisper, state_dict, strict: bool = True) -> None:
    """Load Hugging Face ``WhisperForConditionalGeneration`` weights into ``model`` (a mapping
    of arrays or torch tensors, or safetensors files, see
    :func:`lamina.models.hf_weights.read_state_dict`); the keys of a bare ``WhisperModel``
    (without the ``model.`` prefix) are accepted too. ``proj_out.weight``, tied to
    ``model.decoder.embed_tokens.weight``, is ignored. ``strict``: every weight present and
    every key used, else a KeyError listing them; a mis-shaped value raises
    :class:`lamina.ShapeError` naming the weight."""
    who = "load_hf_whisper_state_dict"
    if not isinstance(model, Whisper):
        raise TypeError(f"{who}: expected a Whisper model, got {type(model).__name__}")
    arrays: Mapping = read_state_dict(state_dict, who)
    if arrays and not any(key.startswith("model.") for key in arrays):
        arrays = {key if key == "proj_out.weight" else f"model.{key}": value for key, value in arrays.items()}
    if not model.built:
        model.build()
    load_hf_state_dict(model, arrays, hf_whisper_table(model), lambda key: key == "proj_out.weight", strict, who)
