"""Language modelling over K parallel streams of codebook indices, as MusicGen (Copet et al.
2023, "Simple and Controllable Music Generation") models the residual-VQ codes of an audio codec
(:class:`~lamina.models.AudioCodec`).

Codes (N, K, T), codebook k at frame t, are laid out as a pattern sequence (N, K, S) whose
step s holds, per codebook, either a code or the special id V (``codebook_size``, "no code
here"):

* ``parallel``: S = T, step t holds every codebook of frame t;
* ``delay``:    S = T + K - 1, codebook k of frame t sits at step t + k, so codebook k + 1 of a
  frame is predicted after codebook k of that frame;
* ``flatten``:  S = K T, codebook k of frame t sits at step t K + k (one code per step).

:func:`build_pattern` lays codes out and :func:`revert_pattern` reads them back exactly.

:class:`MultiStreamLM` reads the pattern sequence shifted right by one step (step 0 is the
start step, all special ids), embeds step s as the sum over codebooks of E_k[id_k(s)], runs a
causal pre-norm transformer and gives K heads' scores; its loss
(:func:`multi_stream_loss`) is the mean over codebooks of the cross-entropy over the valid
(non-special) positions of each codebook:

    L = (1 / K) sum_k  mean_{s: y_k(s) != V}  -log softmax(z_k(s))[y_k(s)]

A class condition c (``num_classes`` > 0) joins the start step as one more embedding, the
null class ``num_classes`` standing for "no condition"; in training the condition is dropped
(replaced by the null class) with probability ``condition_dropout``. Classifier-free guidance
mixes the conditional and unconditional scores with a scale g:

    z = z_cond + (g - 1) (z_cond - z_uncond)   (= z_uncond + g (z_cond - z_uncond))

Example::

    lm = MultiStreamLM(num_codebooks=2, codebook_size=16, d_model=32, pattern="delay")
    loss = lm.loss(codes)                               # codes (N, 2, T) in [0, 16)
    new = lm.generate(8, num_samples=4, temperature=1.0, top_k=8, generator=0)   # (4, 2, 8)
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.schedulers.base import rng_from
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import PositionEmbedding, TransformerEncoderLayer
from lamina.text.generate import caching_keys_values

__all__ = ["CODEBOOK_PATTERNS", "MultiStreamLM", "build_pattern", "multi_stream_loss", "pattern_length",
           "pattern_mask", "pattern_positions", "revert_pattern", "sample_codebooks"]

CODEBOOK_PATTERNS = ("parallel", "delay", "flatten")
IGNORED = -100


def _pattern(pattern: str, who: str) -> str:
    if pattern not in CODEBOOK_PATTERNS:
        raise ValueError(f"{who}: pattern must be one of {CODEBOOK_PATTERNS}, got {pattern!r}")
    return pattern


def pattern_length(pattern: str, num_codebooks: int, num_frames: int) -> int:
    """The steps S of the pattern sequence of T = ``num_frames`` frames of K codebooks:
    T (parallel), T + K - 1 (delay), K T (flatten)."""
    k, t = num_codebooks, num_frames
    return {"parallel": t, "delay": t + k - 1, "flatten": k * t}[_pattern(pattern, "pattern_length")]


def pattern_positions(pattern: str, num_codebooks: int, num_frames: int) -> np.ndarray:
    """(K, T) int: the step of codebook k at frame t: t (parallel), t + k (delay), t K + k
    (flatten)."""
    k = np.arange(num_codebooks)[:, None]
    t = np.arange(num_frames)[None, :]
    steps = {"parallel": t + 0 * k, "delay": t + k, "flatten": t * num_codebooks + k}
    return steps[_pattern(pattern, "pattern_positions")].astype(np.int64)


def pattern_mask(pattern: str, num_codebooks: int, num_frames: int) -> np.ndarray:
    """(K, S) bool: True where the pattern sequence holds a code, False at special steps."""
    mask = np.zeros((num_codebooks, pattern_length(pattern, num_codebooks, num_frames)), dtype=bool)
    np.put_along_axis(mask, pattern_positions(pattern, num_codebooks, num_frames), True, axis=1)
    return mask


def _integer_array(x, ndim: int, who: str, what: str) -> np.ndarray:
    array = np.asarray(backend.to_numpy(x.data) if isinstance(x, Tensor) else x)
    if array.ndim != ndim or array.dtype.kind not in "iu":
        raise ShapeError(f"{who}: {what} must be integer ids of {ndim} axes, got {describe(array)}")
    return array.astype(np.int64)


def build_pattern(codes, pattern: str, special_id: int) -> np.ndarray:
    """Codes (N, K, T) -> the pattern sequence (N, K, S) (module notes), ``special_id`` at the
    steps that hold no code. The codes must not contain ``special_id``."""
    codes = _integer_array(codes, 3, "build_pattern", "codes")
    if np.any(codes == special_id):
        raise ValueError(f"build_pattern: the codes contain the special id {special_id}")
    n, k, t = codes.shape
    sequence = np.full((n, k, pattern_length(pattern, k, t)), special_id, dtype=np.int64)
    positions = np.broadcast_to(pattern_positions(pattern, k, t), codes.shape)
    np.put_along_axis(sequence, positions, codes, axis=2)
    return sequence


def _frames(pattern: str, num_codebooks: int, steps: int, who: str) -> int:
    frames = {"parallel": steps, "delay": steps - num_codebooks + 1, "flatten": steps // num_codebooks}[pattern]
    if frames < 1 or pattern_length(pattern, num_codebooks, frames) != steps:
        raise ShapeError(f"{who}: {steps} steps of {num_codebooks} codebooks are no {pattern} pattern sequence")
    return frames


def revert_pattern(sequence, pattern: str) -> np.ndarray:
    """The pattern sequence (N, K, S) -> the codes (N, K, T) it holds: the inverse of
    :func:`build_pattern` (T from S: S, S - K + 1 or S / K)."""
    sequence = _integer_array(sequence, 3, "revert_pattern", "sequence")
    _pattern(pattern, "revert_pattern")
    n, k, s = sequence.shape
    positions = pattern_positions(pattern, k, _frames(pattern, k, s, "revert_pattern"))
    return np.take_along_axis(sequence, np.broadcast_to(positions, (n, *positions.shape)), axis=2)


def multi_stream_loss(logits, targets, special_id: int) -> Tensor:
    """(1 / K) sum_k of the mean cross-entropy of ``logits`` (N, K, S, V) for ``targets``
    (N, K, S) over the positions of codebook k whose target is not ``special_id``."""
    logits = logits if isinstance(logits, Tensor) else Tensor._wrap(backend.xp.asarray(logits))
    targets = _integer_array(targets, 3, "multi_stream_loss", "targets")
    if logits.ndim != 4 or logits.shape[:3] != targets.shape:
        raise ShapeError(f"multi_stream_loss: need logits (N, K, S, V) and targets (N, K, S), got logits of "
                         f"{describe(logits)} and targets of {describe(targets)}")
    valid = targets != special_id
    if not valid.any(axis=(0, 2)).all():
        raise ValueError("multi_stream_loss: a codebook has no valid (non-special) target")
    ignored = np.where(valid, targets, IGNORED)
    per_codebook = [F.cross_entropy(logits[:, k], ignored[:, k], ignore_index=IGNORED)
                    for k in range(targets.shape[1])]
    return F.mean(F.stack(per_codebook))


def sample_codebooks(logits, generator=None, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
    """One index per row of ``logits`` (..., V): argmax for ``temperature`` 0, else a draw from
    softmax(logits / temperature) kept to the ``top_k`` likeliest (ties at the k-th kept)."""
    z = np.asarray(backend.to_numpy(logits.data) if isinstance(logits, Tensor) else logits, dtype=np.float64)
    if temperature < 0:
        raise ValueError(f"sample_codebooks: temperature must be >= 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= z.shape[-1]:
        raise ValueError(f"sample_codebooks: top_k must lie in [1, {z.shape[-1]}], got {top_k!r}")
    if temperature == 0:
        return np.argmax(z, axis=-1)
    z = z / temperature
    if top_k is not None:
        kth = np.sort(z, axis=-1)[..., -top_k][..., None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)
    u = rng_from(generator).random(z.shape[:-1] + (1,)) * cdf[..., -1:]
    return np.minimum((cdf <= u).sum(axis=-1), z.shape[-1] - 1)


@register_with_arguments
class MultiStreamLM(Module):
    """A causal transformer over the pattern sequences of ``num_codebooks`` streams of codes
    in [0, ``codebook_size``) (module notes). The id ``codebook_size`` (:attr:`special_id`)
    marks steps without a code and the start step. Per codebook an embedding table
    (``codebook_size`` + 1 rows, one :class:`~lamina.nn.Embedding` ``codebooks`` holding the K
    tables one after another) whose rows are summed per step, learned positions (up to
    ``max_len`` steps), ``num_layers`` causal pre-norm :class:`~lamina.nn.TransformerEncoderLayer`
    (``num_heads``, ``dim_feedforward`` = 4 d_model by default, GELU, ``dropout``), a final
    LayerNorm and one Dense ``heads`` of K ``codebook_size`` outputs, the K heads side by side.
    Weights are made at once.

    ``model(ids, labels=None, starts=True)``: input ids (N, K, S) in [0, ``codebook_size``]
    -> scores (N, K, S, ``codebook_size``). With ``num_classes`` > 0 the class ``labels`` (N,)
    (None: the null class ``num_classes``, no condition) join the first step of the call, the
    start step (``starts`` False: the call continues a cached sequence and has none)."""

    def __init__(self, num_codebooks: int, codebook_size: int, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, dim_feedforward: int | None = None, max_len: int = 256,
                 pattern: str = "delay", num_classes: int = 0, condition_dropout: float = 0.0,
                 dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        who = "MultiStreamLM"
        self.num_codebooks = positive_int(num_codebooks, f"{who}: num_codebooks")
        self.codebook_size = positive_int(codebook_size, f"{who}: codebook_size")
        self.d_model = positive_int(d_model, f"{who}: d_model")
        self.num_layers = positive_int(num_layers, f"{who}: num_layers")
        self.max_len = positive_int(max_len, f"{who}: max_len")
        self.pattern = _pattern(pattern, who)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"{who}: num_classes must be an int >= 0, got {num_classes!r}")
        self.num_classes = int(num_classes)
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"{who}: condition_dropout must lie in [0, 1], got {condition_dropout!r}")
        self.condition_dropout = float(condition_dropout)
        self.num_heads, self.dropout = num_heads, dropout
        feedforward = positive_int(dim_feedforward or 4 * self.d_model, f"{who}: dim_feedforward")
        self.codebooks = Embedding(self.num_codebooks * (self.codebook_size + 1), self.d_model, name="codebooks")
        self.conditions = (Embedding(self.num_classes + 1, self.d_model, name="conditions")
                           if self.num_classes else None)
        self.positions = PositionEmbedding(self.max_len, name="positions")
        self.blocks = ModuleList([TransformerEncoderLayer(self.d_model, num_heads, feedforward, dropout=dropout,
                                                          activation="gelu", norm_first=True, causal=True)
                                  for _ in range(self.num_layers)])
        self.norm = LayerNorm(-1, name="norm")
        self.heads = Dense(self.num_codebooks * self.codebook_size, name="heads")
        with no_grad(), evaluation_mode(self):               # every layer's weights now, for optimizers
            self.forward(np.full((1, self.num_codebooks, 1), self.special_id, dtype=np.int64))
        self.built = True

    @property
    def special_id(self) -> int:
        """The id of "no code at this step" and of the start step: ``codebook_size``."""
        return self.codebook_size

    # -- the network ---------------------------------------------------------------------
    def _ids(self, ids) -> np.ndarray:
        ids = _integer_array(ids, 3, f"{self._label()}.forward", "ids")
        if ids.shape[1] != self.num_codebooks or (ids.size and (ids.min() < 0 or ids.max() > self.special_id)):
            raise ShapeError(f"{self._label()}: ids must be (N, {self.num_codebooks}, S) in [0, {self.special_id}] "
                             f"({self.special_id}: special), got {describe(ids)}")
        return ids

    def _labels(self, labels, n: int) -> np.ndarray:
        if labels is None:
            return np.full(n, self.num_classes, dtype=np.int64)
        labels = np.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > self.num_classes:
            raise ShapeError(f"{self._label()}: labels must be ({n},) ints in [0, {self.num_classes}] "
                             f"({self.num_classes}: no condition), got {describe(labels)}")
        return labels.astype(np.int64)

    def embed(self, ids, labels=None, starts: bool = True) -> Tensor:
        """sum_k E_k[ids_k] (N, S, d_model); for a conditional model plus the class embedding
        at the first step when the call ``starts`` with the start step (False for the later
        calls of a sequence read through the key/value cache)."""
        ids = self._ids(ids)
        offsets = (np.arange(self.num_codebooks) * (self.codebook_size + 1))[None, :, None]
        h = F.sum(self.codebooks(ids + offsets), axis=1)
        if self.conditions is None or not starts:
            if labels is not None:
                why = "without classes (num_classes=0)" if self.conditions is None else "past its start step"
                raise ValueError(f"{self._label()}: labels given to a model {why}")
            return h
        n, steps = ids.shape[0], ids.shape[2]
        condition = F.reshape(self.conditions(self._labels(labels, n)), n, 1, self.d_model)
        first_step = np.zeros((1, steps, 1), dtype=backend.get_default_dtype())
        first_step[0, 0, 0] = 1.0
        return h + condition * first_step

    def project(self, hidden) -> Tensor:
        """The K heads: hidden (N, S, d_model) -> scores (N, K, S, ``codebook_size``)."""
        n, s = hidden.shape[0], hidden.shape[1]
        scores = F.reshape(self.heads(hidden), n, s, self.num_codebooks, self.codebook_size)
        return F.transpose(scores, 0, 2, 1, 3)

    def forward(self, ids, labels=None, starts: bool = True) -> Tensor:
        x = self.positions(self.embed(ids, labels, starts))
        for block in self.blocks:
            x = block(x)
        return self.project(self.norm(x))

    # -- training ------------------------------------------------------------------------
    def inputs_and_targets(self, codes) -> tuple[np.ndarray, np.ndarray]:
        """Codes (N, K, T) -> (inputs, targets), both (N, K, S): the targets are the pattern
        sequence, the inputs the same shifted right by one step behind a start step."""
        codes = _integer_array(codes, 3, f"{self._label()}.loss", "codes")
        if codes.shape[1] != self.num_codebooks or (codes.size and (codes.min() < 0
                                                                    or codes.max() >= self.codebook_size)):
            raise ShapeError(f"{self._label()}: codes must be (N, {self.num_codebooks}, T) in "
                             f"[0, {self.codebook_size}), got {describe(codes)}")
        targets = build_pattern(codes, self.pattern, self.special_id)
        start = np.full(targets.shape[:2] + (1,), self.special_id, dtype=np.int64)
        return np.concatenate([start, targets[:, :, :-1]], axis=2), targets

    def loss(self, codes, labels=None, generator=None) -> Tensor:
        """:func:`multi_stream_loss` of the codes (N, K, T) under the model's pattern; in
        training mode each label is replaced by the null class with probability
        ``condition_dropout`` (drawn with ``generator``)."""
        inputs, targets = self.inputs_and_targets(codes)
        if labels is not None and self.training and self.condition_dropout > 0:
            labels = self._labels(labels, inputs.shape[0])
            dropped = rng_from(generator).random(labels.shape) < self.condition_dropout
            labels = np.where(dropped, self.num_classes, labels)
        return multi_stream_loss(self(inputs, labels), targets, self.special_id)

    # -- generation ----------------------------------------------------------------------
    def _step_scores(self, inputs, labels, guidance_scale, first: bool) -> np.ndarray:
        """The scores (N, K, V) of the last step, guided when ``guidance_scale`` is given."""
        n = inputs.shape[0]
        if guidance_scale is None:
            scores = self(inputs, labels if first else None, starts=first)
            return backend.to_numpy(scores.data)[:, :, -1]
        both = np.concatenate([inputs, inputs])
        pairs = np.concatenate([labels, np.full(n, self.num_classes, dtype=np.int64)]) if first else None
        scores = backend.to_numpy(self(both, pairs, starts=first).data)[:, :, -1].astype(np.float64)
        cond, uncond = scores[:n], scores[n:]
        return cond + (guidance_scale - 1.0) * (cond - uncond)

    def generate(self, num_frames: int, num_samples: int | None = None, labels=None,
                 guidance_scale: float | None = None, temperature: float = 1.0, top_k: int | None = None,
                 generator=None, use_cache: bool = True) -> np.ndarray:
        """Codes (N, K, ``num_frames``) drawn step by step along the model's pattern: at each
        step every codebook draws from its head (:func:`sample_codebooks`, ``temperature`` 0
        greedy), the special id is kept where the pattern holds no code, and the step is fed
        back (read once through the key/value cache, or the whole sequence rerun when
        ``use_cache`` is False). ``labels`` (N,) condition a model with classes;
        ``guidance_scale`` g mixes conditional and unconditional scores (module notes), the
        two read as one batch of 2N rows."""
        who = f"{self._label()}.generate"
        num_frames = positive_int(num_frames, f"{who}: num_frames")
        if labels is not None:
            labels = self._labels(labels, len(np.asarray(labels)))
        n = len(labels) if labels is not None else positive_int(num_samples or 1, f"{who}: num_samples")
        if guidance_scale is not None and (self.num_classes == 0 or labels is None):
            raise ValueError(f"{who}: guidance_scale needs a conditional model and labels")
        steps = pattern_length(self.pattern, self.num_codebooks, num_frames)
        if steps > self.max_len:
            raise ValueError(f"{who}: {num_frames} frames take {steps} steps, more than max_len={self.max_len}")
        valid = pattern_mask(self.pattern, self.num_codebooks, num_frames)
        rng = rng_from(generator)
        sequence = np.full((n, self.num_codebooks, steps + 1), self.special_id, dtype=np.int64)
        with no_grad(), evaluation_mode(self):
            if use_cache:
                with caching_keys_values(self):
                    for s in range(steps):
                        scores = self._step_scores(sequence[:, :, s:s + 1], labels, guidance_scale, s == 0)
                        sequence[:, :, s + 1] = self._draw(scores, valid[:, s], rng, temperature, top_k)
            else:
                for s in range(steps):
                    scores = self._step_scores(sequence[:, :, :s + 1], labels, guidance_scale, True)
                    sequence[:, :, s + 1] = self._draw(scores, valid[:, s], rng, temperature, top_k)
        return revert_pattern(sequence[:, :, 1:], self.pattern)

    def _draw(self, scores, valid, rng, temperature, top_k) -> np.ndarray:
        drawn = sample_codebooks(scores, rng, temperature, top_k)
        return np.where(valid[None, :], drawn, self.special_id)

    def generate_audio(self, codec, num_frames: int, **options) -> Tensor:
        """Waveforms (N, num_frames hop_length, channels): :meth:`generate`'s codes decoded by
        an :class:`~lamina.models.AudioCodec` whose quantiser has K stages of
        ``codebook_size`` codes (``options`` go to :meth:`generate`)."""
        config = codec.get_config()
        stages, size = config.get("num_quantizers"), config.get("codebook_size")
        if (stages, size) != (self.num_codebooks, self.codebook_size):
            raise ValueError(f"{self._label()}.generate_audio: the codec codes {stages} stages of {size} codes, the "
                             f"model {self.num_codebooks} of {self.codebook_size}")
        codes = self.generate(num_frames, **options)
        return codec.decode(np.transpose(codes, (0, 2, 1)))
