"""Chronos (Ansari et al., "Chronos: Learning the Language of Time Series", 2024): a language
model over quantized values.

A context x_1..x_C is mean-scaled, s = mean over observed t of |x_t| (1 when that is 0 or
undefined), and every scaled value x_t / s is put in one of B uniform bins over
[low_limit, high_limit]: the token of a value is that of the nearest bin centre

    c_j = low + j (high - low) / (B - 1),   j = 0 .. B - 1,   B = n_tokens - 3,
    token(x) = 3 + j,   j = the bin whose centre is nearest x / s (ties go up).

Tokens 0 and 1 are PAD (missing values, which the attention mask hides) and EOS (appended to
each context); token 2 is never produced. A value back from token k is c_{k-3} * s.
:class:`ChronosModel` is a T5 encoder-decoder over these tokens trained with the cross-entropy
of the next token, and forecasts by sampling trajectories token by token;
:class:`ChronosGPT2Model` is the decoder-only variant the paper also evaluates (a GPT-2 reading
the context's tokens followed by the target's).

The paper's data augmentations: :func:`tsmixup` (a convex combination, with Dirichlet
weights, of mean-scaled windows of a few series) and :func:`kernel_synth` (draws of a Gaussian
process whose kernel composes random kernels of a bank by sums and products).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.models.gpt2 import GPT2
from lamina.models.t5 import T5
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["ChronosForecast", "ChronosGPT2Model", "ChronosModel", "MeanScaleUniformBins", "constant_kernel",
           "kernel_synth", "linear_kernel", "periodic_kernel", "rational_quadratic_kernel", "rbf_kernel",
           "sample_gaussian_process", "tsmixup", "white_noise_kernel"]

Kernel = Callable[[np.ndarray], np.ndarray]


class MeanScaleUniformBins:
    """The Chronos tokenizer: mean scaling and uniform bins (module docstring).

    ``input_transform(context)`` -> (token ids, attention mask, scale); ``label_transform(target,
    scale)`` -> (token ids, mask) of a target with the context's scale; ``output_transform(tokens,
    scale)`` -> values (bin centre times scale)."""

    pad_token_id = 0
    eos_token_id = 1
    n_special_tokens = 2

    def __init__(self, n_tokens: int, low_limit: float = -15.0, high_limit: float = 15.0, use_eos_token: bool = True):
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 5:
            raise ValueError(f"MeanScaleUniformBins: n_tokens must be an int >= 5 (3 special tokens and at least "
                             f"two bins), got {n_tokens!r}")
        if not low_limit < high_limit:
            raise ValueError(f"MeanScaleUniformBins: low_limit ({low_limit}) must be below high_limit ({high_limit})")
        self.n_tokens, self.low_limit, self.high_limit = int(n_tokens), float(low_limit), float(high_limit)
        self.use_eos_token = bool(use_eos_token)
        self.centers = np.linspace(self.low_limit, self.high_limit, self.n_tokens - self.n_special_tokens - 1)
        self.boundaries = (self.centers[1:] + self.centers[:-1]) / 2
        self.first_value_token = self.n_special_tokens + 1

    @staticmethod
    def _series(x, who: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"MeanScaleUniformBins.{who}: expected series of shape (batch, time) or (time,), "
                             f"got shape {np.shape(x)}")
        return x

    def scale_of(self, context) -> np.ndarray:
        """The (batch,) mean |x| over each context's observed (not NaN) values; 1 where it is not > 0."""
        context = self._series(context, "scale_of")
        observed = ~np.isnan(context)
        total = np.where(observed, np.abs(context), 0.0).sum(axis=1)
        count = observed.sum(axis=1)
        scale = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return np.where(scale > 0, scale, 1.0)

    def _tokens(self, x: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        observed = ~np.isnan(x)
        scaled = np.where(observed, x, 0.0) / scale[:, None]
        tokens = np.searchsorted(self.boundaries, scaled, side="right") + self.first_value_token
        return np.where(observed, tokens, self.pad_token_id).astype(np.int64), observed

    def _with_eos(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.use_eos_token:
            return tokens, mask
        eos = np.full((tokens.shape[0], 1), self.eos_token_id, dtype=np.int64)
        return np.concatenate([tokens, eos], axis=1), np.concatenate([mask, np.ones_like(eos, bool)], axis=1)

    def input_transform(self, context, context_length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids (batch, time [+ 1 for EOS]), the attention mask (False at missing values) and
        the (batch,) scale of ``context`` (its last ``context_length`` steps when given)."""
        context = self._series(context, "input_transform")
        if context_length is not None:
            context = context[:, -positive_int(context_length, "MeanScaleUniformBins: context_length"):]
        scale = self.scale_of(context)
        tokens, mask = self._tokens(context, scale)
        return (*self._with_eos(tokens, mask), scale)

    def label_transform(self, target, scale) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask of a ``target`` (batch, horizon) scaled by its context's ``scale``."""
        target = self._series(target, "label_transform")
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if scale.shape[0] != target.shape[0]:
            raise ValueError(f"MeanScaleUniformBins.label_transform: {scale.shape[0]} scales for "
                             f"{target.shape[0]} target series")
        return self._with_eos(*self._tokens(target, scale))

    def output_transform(self, tokens, scale) -> np.ndarray:
        """Values c_{k-3} * scale of tokens k (batch, ...) (special tokens read as the lowest bin)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        scale = np.asarray(scale, dtype=np.float64).reshape((-1,) + (1,) * (tokens.ndim - 1))
        index = np.clip(tokens - self.first_value_token, 0, len(self.centers) - 1)
        return self.centers[index] * scale


@dataclass
class ChronosForecast:
    """Sampled trajectories (batch, num_samples, horizon), their quantiles (batch, levels,
    horizon) at ``quantile_levels``, and their mean (batch, horizon)."""

    samples: np.ndarray
    quantiles: np.ndarray
    quantile_levels: tuple[float, ...]
    mean: np.ndarray


def _sample_tokens(scores: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int | None,
                   top_p: float | None) -> np.ndarray:
    """One token per row of ``scores`` (rows, vocab) drawn from softmax(scores / temperature)
    restricted to the ``top_k`` likeliest tokens and to the nucleus of mass ``top_p``."""
    logits = scores / temperature
    if top_k is not None:
        kth = np.sort(logits, axis=1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None:
        order = np.argsort(-logits, axis=1)
        ranked = np.take_along_axis(logits, order, axis=1)
        probs = np.exp(ranked - ranked[:, :1])
        probs /= probs.sum(axis=1, keepdims=True)
        before = np.cumsum(probs, axis=1) - probs          # the mass of the likelier tokens
        drop = np.zeros_like(logits, dtype=bool)
        np.put_along_axis(drop, order, before >= top_p, axis=1)
        logits = np.where(drop, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    draws = rng.random((scores.shape[0], 1))
    return np.minimum((cumulative < draws).sum(axis=1), scores.shape[1] - 1)


_QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class _ChronosForecaster:
    """What both Chronos variants share: tokenizing (context, target) pairs and sampling
    forecasts. A variant gives ``_next_scores(ids, mask, num_samples)``: a function of (the last
    drawn tokens, the step) returning the next-token scores (batch * num_samples, n_tokens)."""

    tokenizer: MeanScaleUniformBins
    context_length: int
    prediction_length: int

    def tokenize(self, context, target=None) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` and ``scale`` of ``context``; with ``target``, also its
        ``labels`` (-100 at missing values; EOS last when the tokenizer appends it)."""
        ids, mask, scale = self.tokenizer.input_transform(context, self.context_length)
        batch = {"input_ids": ids, "attention_mask": mask, "scale": scale}
        if target is not None:
            labels, observed = self.tokenizer.label_transform(target, scale)
            batch["labels"] = np.where(observed, labels, -100)
        return batch

    def predict(self, context, prediction_length: int | None = None, num_samples: int = 20,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                seed: int | None = None, quantile_levels: Sequence[float] = _QUANTILE_LEVELS) -> ChronosForecast:
        """Sample ``num_samples`` trajectories of ``prediction_length`` steps (default: the model's)
        per context row, each token drawn from softmax(scores / temperature) over the value tokens
        (top-k, top-p as :func:`lamina.text.sample_token`) with ``numpy.random.default_rng(seed)``,
        fed back to the model, and mapped back to values."""
        who = f"{type(self).__name__}.predict"
        horizon = positive_int(prediction_length or self.prediction_length, f"{who}: prediction_length")
        num_samples = positive_int(num_samples, f"{who}: num_samples")
        values = len(self.tokenizer.centers)
        if not temperature > 0:
            raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")
        if top_k is not None and not 1 <= top_k <= values:
            raise ValueError(f"{who}: top_k must lie in [1, {values}] (the value tokens), got {top_k!r}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"{who}: top_p must lie in (0, 1], got {top_p!r}")
        levels = tuple(float(q) for q in quantile_levels)
        if not all(0 < q < 1 for q in levels):
            raise ValueError(f"{who}: quantile levels must lie in (0, 1), got {levels}")
        batch = self.tokenize(context)
        ids = batch["input_ids"]
        if not self.built:
            self.build(ids.shape)
        rng = np.random.default_rng(seed)
        first = self.tokenizer.first_value_token
        mode = self.training
        self.eval()
        try:
            with no_grad():
                next_scores = self._next_scores(ids, batch["attention_mask"], num_samples)
                tokens, drawn = None, []
                for step in range(horizon):
                    scores = next_scores(tokens, step)[:, first:].astype(np.float64)
                    tokens = _sample_tokens(scores, rng, float(temperature), top_k, top_p) + first
                    drawn.append(tokens)
        finally:
            self.train(mode)
        scale = np.repeat(batch["scale"], num_samples)
        samples = self.tokenizer.output_transform(np.stack(drawn, axis=1), scale)
        samples = samples.reshape(ids.shape[0], num_samples, horizon)
        quantiles = np.moveaxis(np.quantile(samples, levels, axis=1), 0, 1)
        return ChronosForecast(samples, quantiles, levels, samples.mean(axis=1))


def _check_fixed(options: dict, fixed: tuple[str, ...], who: str) -> None:
    for name in fixed:
        if name in options:
            raise ValueError(f"{who}: {name} is set by the tokenizer; do not pass it")


@register_with_arguments
class ChronosModel(_ChronosForecaster, Module):
    """Chronos over a lamina :class:`~lamina.models.T5` of vocabulary ``n_tokens`` (pad 0, EOS 1,
    decoder start = pad) with the tokenizer :class:`MeanScaleUniformBins`.

    ``model(input_ids, decoder_input_ids, attention_mask=None)`` -> scores (batch, Ty, n_tokens);
    ``model.loss(context, target)`` the mean cross-entropy of the target's tokens (and EOS) given
    the context's, missing target values ignored; ``model.predict(context, ...)`` sampled
    forecasts (the encoder once, the decoder through cached keys and values).
    ``t5_options`` go to T5 (d_model, d_kv, d_ff, num_layers, num_heads, ...)."""

    def __init__(self, n_tokens: int = 4096, low_limit: float = -15.0, high_limit: float = 15.0,
                 context_length: int = 512, prediction_length: int = 64, name: str | None = None, **t5_options):
        super().__init__(name=name)
        self.tokenizer = MeanScaleUniformBins(n_tokens, low_limit, high_limit)
        self.context_length = positive_int(context_length, "ChronosModel: context_length")
        self.prediction_length = positive_int(prediction_length, "ChronosModel: prediction_length")
        _check_fixed(t5_options, ("vocab_size", "pad_token_id", "eos_token_id", "decoder_start_token_id"),
                     "ChronosModel")
        self.t5 = T5(vocab_size=n_tokens, pad_token_id=MeanScaleUniformBins.pad_token_id,
                     eos_token_id=MeanScaleUniformBins.eos_token_id,
                     decoder_start_token_id=MeanScaleUniformBins.pad_token_id, **t5_options)

    def build(self, input_shape) -> None:
        self.t5.build(input_shape)
        self.built = True

    def forward(self, input_ids, decoder_input_ids, attention_mask=None) -> Tensor:
        if not self.built:
            self.build(np.shape(input_ids))
        return self.t5(input_ids, decoder_input_ids, attention_mask)

    def loss(self, context, target) -> Tensor:
        """Mean cross-entropy over the observed target tokens (and EOS) of softmax(scores)."""
        batch = self.tokenize(context, target)
        if not self.built:
            self.build(batch["input_ids"].shape)
        return self.t5.loss(batch["input_ids"], batch["labels"], batch["attention_mask"])

    def _next_scores(self, ids: np.ndarray, mask: np.ndarray, num_samples: int):
        encoded = Tensor(np.repeat(self.t5.encode(ids, mask).numpy(), num_samples, axis=0))
        mask = np.repeat(mask, num_samples, axis=0)
        caches = [{} for _ in range(self.t5.num_decoder_layers)]
        start = np.full((encoded.shape[0], 1), self.t5.decoder_start_token_id, dtype=np.int64)

        def next_scores(tokens, step: int) -> np.ndarray:
            last = start if tokens is None else tokens[:, None]
            return self.t5.decode(last, encoded, mask, caches, step).numpy()[:, -1]
        return next_scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.tokenizer.n_tokens,)


@register_with_arguments
class ChronosGPT2Model(_ChronosForecaster, Module):
    """The decoder-only Chronos: a :class:`~lamina.models.GPT2` of vocabulary ``n_tokens`` reads
    the context's tokens then the target's (no EOS) and learns each next token; the loss counts
    only the target's tokens. ``model(ids, key_mask=None)`` -> scores (batch, T, n_tokens).
    ``n_positions`` defaults to ``context_length + prediction_length``; ``gpt2_options`` go to
    GPT2 (n_embd, n_layer, n_head, ...). Forecasting reruns the whole sequence at each step."""

    def __init__(self, n_tokens: int = 4096, low_limit: float = -15.0, high_limit: float = 15.0,
                 context_length: int = 512, prediction_length: int = 64, name: str | None = None,
                 **gpt2_options):
        super().__init__(name=name)
        self.tokenizer = MeanScaleUniformBins(n_tokens, low_limit, high_limit, use_eos_token=False)
        self.context_length = positive_int(context_length, "ChronosGPT2Model: context_length")
        self.prediction_length = positive_int(prediction_length, "ChronosGPT2Model: prediction_length")
        _check_fixed(gpt2_options, ("vocab_size",), "ChronosGPT2Model")
        gpt2_options.setdefault("n_positions", self.context_length + self.prediction_length)
        self.gpt2 = GPT2(vocab_size=n_tokens, **gpt2_options)

    def build(self, input_shape) -> None:
        self.gpt2.build(input_shape)
        self.built = True

    def forward(self, ids, key_mask=None) -> Tensor:
        if not self.built:
            self.build(np.shape(ids))
        return self.gpt2(ids, key_mask=key_mask)

    def loss(self, context, target) -> Tensor:
        """Mean cross-entropy of the observed target tokens, each given every token before it."""
        batch = self.tokenize(context, target)
        ids = np.concatenate([batch["input_ids"], np.maximum(batch["labels"], 0)], axis=1)
        key_mask = np.concatenate([batch["attention_mask"], batch["labels"] >= 0], axis=1)
        labels = np.concatenate([np.full_like(batch["input_ids"][:, 1:], -100), batch["labels"]], axis=1)
        logits = self(ids[:, :-1], key_mask=key_mask[:, :-1])
        return F.categorical_cross_entropy(logits, labels, from_logits=True, ignore_index=-100)

    def _next_scores(self, ids: np.ndarray, mask: np.ndarray, num_samples: int):
        sequence = {"ids": np.repeat(ids, num_samples, axis=0), "mask": np.repeat(mask, num_samples, axis=0)}

        def next_scores(tokens, step: int) -> np.ndarray:
            if tokens is not None:
                sequence["ids"] = np.concatenate([sequence["ids"], tokens[:, None]], axis=1)
                sequence["mask"] = np.concatenate([sequence["mask"], np.ones_like(tokens[:, None], bool)], axis=1)
            return self.gpt2(sequence["ids"], key_mask=sequence["mask"]).numpy()[:, -1]
        return next_scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.tokenizer.n_tokens,)


# -- data augmentation -----------------------------------------------------------------------
def _generator(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def tsmixup(series: Sequence, rng=None, max_components: int = 3, alpha: float = 1.5, min_length: int = 128,
            max_length: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """TSMixup: k ~ U{1..max_components} series drawn from ``series``, a window of one length
    l ~ U{min_length..max_length} (at most the shortest drawn series) from each, each window
    divided by its mean |x|, combined as sum_i w_i x_i with w ~ Dirichlet(alpha).

    Returns the mixed series (l,) and the weights (k,)."""
    rng = _generator(rng)
    if len(series) == 0:
        raise ValueError("tsmixup: got no series to mix")
    max_components = positive_int(max_components, "tsmixup: max_components")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"tsmixup: expected 1 <= min_length <= max_length, got {min_length} and {max_length}")
    k = int(rng.integers(1, max_components + 1))
    chosen = [np.asarray(series[i], dtype=np.float64) for i in rng.integers(0, len(series), k)]
    shortest = min(len(x) for x in chosen)
    if shortest < min_length:
        raise ValueError(f"tsmixup: a drawn series has {shortest} steps, fewer than min_length={min_length}")
    length = int(rng.integers(min_length, min(max_length, shortest) + 1))
    weights = rng.dirichlet(np.full(k, float(alpha)))
    mixed = np.zeros(length)
    for w, x in zip(weights, chosen, strict=True):
        start = int(rng.integers(0, len(x) - length + 1))
        window = x[start:start + length]
        scale = np.mean(np.abs(window))
        mixed += w * window / (scale if scale > 0 else 1.0)
    return mixed, weights


def constant_kernel(value: float = 1.0) -> Kernel:
    """k(t, t') = value."""
    return lambda t: np.full((len(t), len(t)), float(value))


def white_noise_kernel(noise: float = 0.1) -> Kernel:
    """k(t, t') = noise [t = t']."""
    return lambda t: float(noise) * np.eye(len(t))


def linear_kernel(offset: float = 0.0) -> Kernel:
    """k(t, t') = offset + t t' (t on the unit interval of the series)."""
    return lambda t: float(offset) + np.outer(t, t) / max(len(t) - 1, 1) ** 2


def rbf_kernel(length_scale: float) -> Kernel:
    """k(t, t') = exp(-(t - t')^2 / (2 length_scale^2)), t in steps."""
    return lambda t: np.exp(-np.subtract.outer(t, t) ** 2 / (2 * float(length_scale) ** 2))


def rational_quadratic_kernel(length_scale: float, alpha: float = 1.0) -> Kernel:
    """k(t, t') = (1 + (t - t')^2 / (2 alpha length_scale^2))^-alpha, t in steps."""
    return lambda t: (1 + np.subtract.outer(t, t) ** 2 / (2 * alpha * float(length_scale) ** 2)) ** -float(alpha)


def periodic_kernel(period: float, length_scale: float = 1.0) -> Kernel:
    """k(t, t') = exp(-2 sin^2(pi |t - t'| / period) / length_scale^2), t in steps."""
    return lambda t: np.exp(-2 * np.sin(np.pi * np.abs(np.subtract.outer(t, t)) / float(period)) ** 2
                            / float(length_scale) ** 2)


def sample_gaussian_process(kernel: Kernel, length: int, num_draws: int = 1, rng=None,
                            jitter: float = 1e-6) -> np.ndarray:
    """``num_draws`` draws (num_draws, length) of GP(0, k) at t = 0 .. length - 1."""
    rng = _generator(rng)
    covariance = kernel(np.arange(positive_int(length, "sample_gaussian_process: length"), dtype=np.float64))
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2 + jitter * np.eye(length))
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    return rng.standard_normal((num_draws, length)) @ root.T


def _kernel_bank(length: int) -> list[Kernel]:
    periods = [p for p in (4, 6, 7, 8, 12, 14, 24, 30, 48, 52, 96) if p < length]
    scales = [length * f for f in (0.02, 0.05, 0.1, 0.3, 1.0)]
    return ([constant_kernel(1.0), white_noise_kernel(0.1), white_noise_kernel(1.0), linear_kernel(0.0),
             linear_kernel(1.0)] + [rbf_kernel(s) for s in scales] + [rational_quadratic_kernel(s) for s in scales]
            + [periodic_kernel(p, ls) for p in periods for ls in (0.5, 1.0)])


def kernel_synth(length: int = 1024, max_kernels: int = 5, rng=None) -> np.ndarray:
    """KernelSynth: j ~ U{1..max_kernels} kernels drawn (with replacement) from a bank of
    constant, white-noise, linear, RBF, rational-quadratic and periodic kernels, composed
    left to right by + or * (each with probability 1/2), and one GP draw (length,) with that kernel."""
    rng = _generator(rng)
    bank = _kernel_bank(positive_int(length, "kernel_synth: length"))
    chosen = [bank[i] for i in rng.integers(0, len(bank), int(rng.integers(1, max_kernels + 1)))]
    kernel = chosen[0]
    for other in chosen[1:]:
        kernel = ((lambda a, b: lambda t: a(t) + b(t)) if rng.random() < 0.5
                  else (lambda a, b: lambda t: a(t) * b(t)))(kernel, other)
    return sample_gaussian_process(kernel, length, 1, rng)[0]
