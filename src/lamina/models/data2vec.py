"""data2vec (Baevski et al. 2022, "data2vec: A General Framework for Self-supervised Learning in
Speech, Vision and Language"), with two of data2vec 2.0's efficiency tricks (Baevski et al.
2023): several masks per sample and a light convolutional decoder. The method is the same for
every modality; the encoders are in :mod:`lamina.models.data2vec_encoders`.

    student:  x's tokens e_t, a learned mask embedding m in place of the masked ones
              (t in M), go through the student encoder f_theta; a linear head (or data2vec
              2.0's decoder) maps its outputs to predictions p_t
    teacher:  f_Delta, an exponential moving average of the student, encodes the whole
              input; a_t^l is block l's output at step t (by default the output of the
              feed-forward part before its residual connection, as the paper)
    targets:  y_t = 1/K sum_{l = L-K+1}^{L} norm(a^l)_t, the top K blocks each normalised
              without parameters: instance norm over time,
              norm(a)_td = (a_td - mean_t a_td) / sqrt(var_t a_td + eps), the paper's choice
              for speech (``target_norm="instance"``, the default), or layer norm over the
              features (``"layer"``); optionally a final norm of y (``final_norm``)
    loss:     L = 1/(|M| D) sum_{t in M} sum_d ell(p_td - y_td), masked steps only, with
              ell the smooth L1 of ``beta`` (r^2 / (2 beta) where |r| < beta, else
              |r| - beta / 2) or the square (``loss="mse"``). (The reference sums over the
              D features and scales by 1 / sqrt(D): a constant factor sqrt(D) apart.)
    EMA:      Delta <- tau Delta + (1 - tau) theta after each step, tau rising linearly
              from tau_0 to tau_e over n steps and then constant (``ema_decay`` =
              (tau_0, tau_e, n)); :meth:`Data2Vec.update_teacher`

With M masks per sample (a (M, N, T) mask) the teacher runs once and its targets serve the
M masked copies the student encodes (data2vec 2.0's amortised targets). Unlike data2vec 2.0
the student still encodes the mask embeddings (data2vec's layout), so its decoder reads
every position.

Masks: :func:`data2vec_random_masks` (a fixed fraction of uniformly drawn steps per sample),
:func:`data2vec_span_masks` (wav2vec 2.0's spans, the paper's speech masking: p = 0.065, 10
steps) or,
for images, :func:`lamina.models.beit_block_masking` (the paper masks 60% in blocks).
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.models.data2vec_encoders import TARGET_LAYERS, Data2VecEncoderBase
from lamina.models.ijepa import target_layer_norm
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import layer_from_config, layer_to_config, positive_int
from lamina.nn.module import as_tensor

__all__ = ["Data2Vec", "data2vec_loss", "data2vec_random_masks", "data2vec_span_masks", "data2vec_targets",
           "instance_norm_over_time"]

NORM_EPS = 1e-5
MASK_STD = 0.02
LOSSES = ("smooth_l1", "mse")
NORMS = ("instance", "layer")


def instance_norm_over_time(x, eps: float = NORM_EPS) -> Tensor:
    """(x - mean_t x) / sqrt(var_t x + eps) for x (N, T, D): each sample's feature d normalised
    over the T steps (biased variance, no parameters)."""
    x = as_tensor(x)
    centred = F.sub(x, F.mean(x, axis=1, keepdims=True))
    return F.div(centred, F.sqrt(F.add(F.mean(F.mul(centred, centred), axis=1, keepdims=True), eps)))


def _normalise(x, kind: str | None, eps: float) -> Tensor:
    if kind is None:
        return as_tensor(x)
    return instance_norm_over_time(x, eps) if kind == "instance" else target_layer_norm(x, eps)


def _check_norm(value, fn: str, what: str, allow_none: bool) -> None:
    allowed = NORMS + ((None,) if allow_none else ())
    if value not in allowed:
        raise ValueError(f"{fn}: {what} must be one of {allowed}, got {value!r}")


def data2vec_targets(layer_outputs, top_k: int, target_norm: str = "instance", final_norm: str | None = None,
                     eps: float = NORM_EPS) -> Tensor:
    """y = final_norm(1/K sum over the last K of ``layer_outputs`` of norm(a^l)): a list of L
    (N, T, D) block outputs, ``top_k`` = K <= L (module docstring). A constant (no graph)."""
    fn = "data2vec_targets"
    _check_norm(target_norm, fn, "target_norm", allow_none=False)
    _check_norm(final_norm, fn, "final_norm", allow_none=True)
    outputs = [as_tensor(a) for a in layer_outputs]
    top_k = positive_int(top_k, f"{fn}: top_k")
    if not outputs or top_k > len(outputs):
        raise ValueError(f"{fn}: top_k={top_k} blocks asked of {len(outputs)} block outputs")
    shapes = {tuple(a.shape) for a in outputs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ShapeError(f"{fn}: block outputs must all be (batch, steps, features), got shapes {sorted(shapes)}")
    with no_grad():
        total = _normalise(outputs[-top_k], target_norm, eps)
        for a in outputs[len(outputs) - top_k + 1:]:
            total = F.add(total, _normalise(a, target_norm, eps))
        y = _normalise(F.mul(total, 1.0 / top_k), final_norm, eps)
    return Tensor(y.data)


def data2vec_loss(predictions, targets, mask, loss: str = "smooth_l1", beta: float = 1.0) -> Tensor:
    """The mean of ell(p - y) over the masked steps' features (module docstring): predictions
    and targets (N, T, D), ``mask`` (N, T) booleans, True where the student saw the mask
    embedding."""
    fn = "data2vec_loss"
    if loss not in LOSSES:
        raise ValueError(f"{fn}: loss must be one of {LOSSES}, got {loss!r}")
    p, y = as_tensor(predictions), as_tensor(targets)
    m = np.asarray(backend.to_numpy(mask.data) if isinstance(mask, Tensor) else mask).astype(bool)
    if p.ndim != 3 or tuple(p.shape) != tuple(y.shape) or m.shape != tuple(p.shape[:2]):
        raise ShapeError(f"{fn}: predictions of shape {tuple(p.shape)}, targets of shape {tuple(y.shape)} and mask of "
                         f"shape {m.shape}; expected (N, T, D), (N, T, D) and (N, T)")
    if not m.any():
        raise ValueError(f"{fn}: no step is masked; the loss counts masked steps only")
    rows, cols = np.nonzero(m)
    picked, wanted = F.getitem(p, (rows, cols)), F.getitem(y, (rows, cols))
    if loss == "smooth_l1":
        return F.smooth_l1_loss(picked, wanted, beta=float(beta))
    diff = F.sub(picked, wanted)
    return F.mean(F.mul(diff, diff))


def _rng(rng) -> np.random.Generator:
    if rng is None:
        return backend.rng()
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def data2vec_random_masks(batch: int, length: int, mask_ratio: float, num_masks: int | None = None,
                          rng=None) -> np.ndarray:
    """round(``mask_ratio`` T) uniformly drawn steps masked in each of ``batch`` sequences of
    ``length`` T: (N, T) booleans, or (M, N, T) with ``num_masks`` = M independent masks."""
    fn = "data2vec_random_masks"
    batch, length = positive_int(batch, f"{fn}: batch"), positive_int(length, f"{fn}: length")
    if not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(f"{fn}: mask_ratio must be in (0, 1), got {mask_ratio!r}")
    rng = _rng(rng)
    count = max(1, int(round(mask_ratio * length)))
    copies = 1 if num_masks is None else positive_int(num_masks, f"{fn}: num_masks")
    order = np.argsort(rng.random((copies, batch, length)), axis=-1)
    masks = np.zeros((copies, batch, length), dtype=bool)
    np.put_along_axis(masks, order[..., :count], True, axis=-1)
    return masks[0] if num_masks is None else masks


def data2vec_span_masks(batch: int, length: int, mask_prob: float = 0.065, span: int = 10, rng=None) -> np.ndarray:
    """wav2vec 2.0's span masking: each step starts a span with probability ``mask_prob`` and
    the ``span`` steps from each start are masked (spans may overlap; at least one start per
    sequence): (N, T) booleans."""
    fn = "data2vec_span_masks"
    batch, length = positive_int(batch, f"{fn}: batch"), positive_int(length, f"{fn}: length")
    span = positive_int(span, f"{fn}: span")
    if not 0.0 < float(mask_prob) <= 1.0:
        raise ValueError(f"{fn}: mask_prob must be in (0, 1], got {mask_prob!r}")
    rng = _rng(rng)
    starts = rng.random((batch, length)) < mask_prob
    empty = ~starts.any(axis=1)
    starts[empty, rng.integers(0, length, size=int(empty.sum()))] = True
    masks = np.zeros((batch, length), dtype=bool)
    for offset in range(span):
        masks[:, offset:] |= starts[:, :length - offset]
    return masks


def _schedule(ema_decay) -> tuple[float, float, int]:
    fn = "Data2Vec"
    try:
        start, end, steps = ema_decay
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: ema_decay must be (start, end, steps), got {ema_decay!r}") from None
    for value, what in ((start, "start"), (end, "end")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{fn}: the EMA decay's {what} must be a number in [0, 1], got {value!r}")
    return float(start), float(end), positive_int(steps, f"{fn}: ema_decay steps")


@register_with_arguments(modules=("encoder", "decoder"))
class Data2Vec(Block):
    """data2vec (module docstring) around a student ``encoder`` (a
    :class:`~lamina.models.Data2VecImageEncoder`, a :class:`~lamina.models.Data2VecSequenceEncoder`
    or another :class:`~lamina.models.data2vec_encoders.Data2VecEncoderBase`). Sub-layers
    ``encoder``, ``teacher`` (a frozen copy of the encoder's architecture, given the student's
    weights when built), ``head`` (Dense to D) or ``decoder`` (a
    :class:`~lamina.models.Data2VecDecoder`); parameter ``mask_embedding`` (1, 1, D); buffer
    ``step`` (the updates made so far, which sets the EMA decay).

    ``model(x, mask=mask)``: the loss for ``mask`` (N, T) or (M, N, T) booleans, True at the
    masked steps (patches row by row for images); ``model(x)``: the student's (N, T, D)
    features. Parts: :meth:`targets`, :meth:`predict`, :meth:`update_teacher`,
    :meth:`features`."""

    default_name = "data2vec"

    def __init__(self, encoder: Data2VecEncoderBase, top_k: int = 8, ema_decay=(0.999, 0.9999, 30000),
                 loss: str = "smooth_l1", beta: float = 0.25, target_norm: str = "instance",
                 final_norm: str | None = None, target_layer: str = "ffn", decoder=None, name: str | None = None):
        super().__init__(name=name)
        fn = "Data2Vec"
        if not isinstance(encoder, Data2VecEncoderBase):
            raise TypeError(f"{fn}: encoder must be a Data2VecEncoderBase (Data2VecImageEncoder, "
                            f"Data2VecSequenceEncoder), got {type(encoder).__name__}")
        self.top_k = positive_int(top_k, f"{fn}: top_k")
        if self.top_k > encoder.depth:
            raise ValueError(f"{fn}: top_k={top_k} exceeds the encoder's {encoder.depth} blocks")
        self.ema_start, self.ema_end, self.ema_steps = _schedule(ema_decay)
        if loss not in LOSSES:
            raise ValueError(f"{fn}: loss must be one of {LOSSES}, got {loss!r}")
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or beta <= 0:
            raise ValueError(f"{fn}: beta must be a positive number, got {beta!r}")
        _check_norm(target_norm, fn, "target_norm", allow_none=False)
        _check_norm(final_norm, fn, "final_norm", allow_none=True)
        if target_layer not in TARGET_LAYERS:
            raise ValueError(f"{fn}: target_layer must be one of {TARGET_LAYERS}, got {target_layer!r}")
        self.loss_kind, self.beta = loss, float(beta)
        self.target_norm, self.final_norm, self.target_layer = target_norm, final_norm, target_layer
        self.embed_dim = encoder.embed_dim
        self.encoder = encoder
        self.teacher = layer_from_config(layer_to_config(encoder))
        self.teacher.name = "teacher"
        self.decoder = decoder
        self.head = nn.Dense(self.embed_dim, name="head") if decoder is None else None
        self.register_buffer("step", np.zeros((), dtype=np.int64))

    def trace(self, shape, step):
        tokens = step(self.encoder, tuple(shape))
        step(self.teacher, tuple(shape))
        return step(self.decoder if self.decoder is not None else self.head, tokens)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        shape = (1, 1, self.embed_dim)
        token = initializers.meta_array(shape, dtype) if initializers.is_meta() \
            else initializers.truncated_normal(MASK_STD)(shape, 1, 1, dtype)
        self.add_parameter("mask_embedding", token)
        self.teacher.load_state_dict(self.encoder.state_dict())
        self.teacher.freeze()

    # -- the pieces ---------------------------------------------------------------------------
    def _masks(self, mask, steps: int, batch: int) -> np.ndarray:
        m = np.asarray(backend.to_numpy(mask.data) if isinstance(mask, Tensor) else mask)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[1:] != (batch, steps):
            raise ShapeError(f"{self._label()}: got a mask of shape {np.shape(mask)}; expected ({batch}, {steps}) "
                             f"or (masks, {batch}, {steps}) booleans, one per step of every sample")
        return m.astype(bool)

    def targets(self, x) -> Tensor:
        """y (N, T, D): the teacher's top-K normalised block outputs averaged, a constant."""
        with no_grad():
            _, outputs = self.teacher.encode(self.teacher.embed(x), collect=self.target_layer)
        return data2vec_targets(outputs, self.top_k, self.target_norm, self.final_norm)

    def predict(self, x, mask) -> Tensor:
        """The student's predictions (M N, T, D) for the M masks (M, N, T) (or one (N, T)): the
        tokens of x, the mask embedding at the masked steps, encoded, then the head."""
        tokens = self.encoder.embed(x)
        n, t = tokens.shape[0], tokens.shape[1]
        m = self._masks(mask, t, n)
        copies = m.shape[0]
        if copies > 1:
            tokens = F.concat([tokens] * copies, axis=0)
        where = Tensor(m.reshape(copies * n, t, 1).astype(tokens.dtype))
        keep = Tensor(1.0 - where.data)
        tokens = F.add(F.mul(tokens, keep), F.mul(where, self.mask_embedding))
        z, _ = self.encoder.encode(tokens)
        return self.decoder(z) if self.decoder is not None else self.head(z)

    def loss(self, x, mask) -> Tensor:
        """L of the module docstring over every masked step of the M masks."""
        predictions = self.predict(x, mask)
        y = self.targets(x)
        m = self._masks(mask, y.shape[1], y.shape[0])
        if m.shape[0] > 1:
            y = Tensor(backend.xp.concatenate([y.data] * m.shape[0], axis=0))
        return data2vec_loss(predictions, y, m.reshape(-1, m.shape[2]), self.loss_kind, self.beta)

    def forward(self, x, *, mask=None) -> Tensor:
        return self.encoder(x) if mask is None else self.loss(x, mask)

    def features(self, x, encoder: str = "student") -> Tensor:
        """The mean over steps of an encoder's outputs on whole inputs: (N, D), what a linear
        probe reads (``encoder`` 'student' or 'teacher')."""
        if encoder not in ("student", "teacher"):
            raise ValueError(f"{self._label()}.features: encoder must be 'student' or 'teacher', got {encoder!r}")
        return F.mean((self.encoder if encoder == "student" else self.teacher)(x), axis=1)

    # -- the teacher --------------------------------------------------------------------------
    def ema_decay_at(self, step: int) -> float:
        """tau at update ``step``: tau_0 + (tau_e - tau_0) min(step / n, 1)."""
        return self.ema_start + (self.ema_end - self.ema_start) * min(int(step) / self.ema_steps, 1.0)

    def update_teacher(self) -> float:
        """Delta <- tau Delta + (1 - tau) theta for every parameter, tau = :meth:`ema_decay_at`
        of the current step, which then advances by one; returns tau."""
        if not self.built:
            raise RuntimeError(f"{self._label()}.update_teacher: call the model on a batch first (it is not built)")
        step = int(self._buffers["step"])
        tau = self.ema_decay_at(step)
        for target, source in zip(self.teacher.parameters(), self.encoder.parameters(), strict=True):
            target.data[...] = tau * target.data + (1.0 - tau) * source.data
        self._buffers["step"] = np.asarray(step + 1, dtype=np.int64)
        return tau

    def extra_repr(self) -> str:
        return (f"top_k={self.top_k}, loss={self.loss_kind}, beta={self.beta}, target_norm={self.target_norm}, "
                f"ema=({self.ema_start}, {self.ema_end}, {self.ema_steps})")
