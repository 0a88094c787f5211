"""DeepAR (Salinas et al., 2020): probabilistic forecasts from an autoregressive recurrent network.

For series i, a window z_{i,0..T-1} of T = t0 + H steps is a conditioning range [0, t0) and a
prediction range [t0, T). With the item scale nu_i = 1 + mean_{t < t0} |z_{i,t}|
(:func:`item_scale`), the lags l in ``lags`` (m = max lags) and known covariates x_{i,t},

    h_{i,t} = LSTM(h_{i,t-1}, [z_{i,t-l} / nu_i for l in lags, x_{i,t}, e_i]),   t = m .. T-1
    theta_{i,t} = theta(Dense(h_{i,t}), nu_i)        (scaled as in :mod:`.deepar_likelihoods`)

with e_i a learned embedding of the series id. Training maximises sum_{t >= t0} log
p(z_{i,t} | theta_{i,t}) with the observed z fed in (teacher forcing). Forecasting runs the
network over the conditioning range, then for t = t0 .. T-1 draws z~_{i,t} ~ p(. | theta_{i,t})
and feeds it back as the next step's lagged input; n such sample paths give the mean and the
quantiles of the forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.forecasting._common import constant_tensor
from lamina.models.forecasting.deepar_likelihoods import (
    LIKELIHOODS,
    check_likelihood,
    item_scale,
    likelihood_log_prob,
    likelihood_parameters,
    sample_likelihood,
)
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode

__all__ = ["DeepAR", "DeepARForecast"]


def _built(layer: Module, input_shape: tuple) -> Module:
    layer.build(input_shape)
    layer.built, layer.build_input_shape = True, input_shape
    return layer


def _numpy(values, who: str, what: str) -> np.ndarray:
    array = values.numpy() if isinstance(values, Tensor) else np.asarray(values)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{who}: {what} must be numeric, got dtype {array.dtype}")
    return array


@dataclass
class DeepARForecast:
    """Sample paths (num_samples, batch, horizon), their mean (batch, horizon) and quantiles
    (batch, horizon, len(levels)) at the quantile ``levels``."""

    samples: np.ndarray
    mean: np.ndarray
    quantiles: np.ndarray
    levels: tuple


@register_with_arguments
class DeepAR(Module):
    """DeepAR over windows of ``context_length`` t0 + ``prediction_length`` H steps:
    ``forward(z, covariates=None, series=None)`` -> the network outputs o (batch, T - m, k) at
    the steps t = m .. T-1 (k = 2 parameters, 3 for the Student-t); :meth:`parameters_of` scales
    them into the likelihood's parameters, :meth:`loss` is the mean negative log-likelihood of the
    prediction range, :meth:`sample_paths` and :meth:`forecast` sample forecasts.

    ``z`` (batch, T) the target, ``covariates`` (batch, T, num_covariates) known inputs (None
    when ``num_covariates`` is 0), ``series`` (batch,) ids in [0, num_series) (used when
    ``embedding_dim`` > 0). ``likelihood``: ``"gaussian"``, ``"student_t"`` or
    ``"negative_binomial"`` (counts). ``layers`` stacked LSTMs of ``hidden`` units (the paper
    uses 3 of 40)."""

    def __init__(self, context_length: int, prediction_length: int, likelihood: str = "gaussian",
                 hidden: int = 40, layers: int = 2, lags: Sequence[int] = (1,), num_covariates: int = 0,
                 num_series: int = 1, embedding_dim: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.context_length = positive_int(context_length, "DeepAR: context_length")
        self.prediction_length = positive_int(prediction_length, "DeepAR: prediction_length")
        self.likelihood = check_likelihood(likelihood, "DeepAR")
        self.hidden = positive_int(hidden, "DeepAR: hidden")
        self.layers = positive_int(layers, "DeepAR: layers")
        lags = tuple(lags)
        if not lags or any(isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1 for lag in lags):
            raise ValueError(f"DeepAR: lags must be a non-empty sequence of positive ints, got {lags!r}")
        self.lags = tuple(int(lag) for lag in lags)
        if max(self.lags) >= self.context_length:
            raise ValueError(f"DeepAR: the largest lag ({max(self.lags)}) must be below context_length "
                             f"({self.context_length})")
        if isinstance(num_covariates, bool) or not isinstance(num_covariates, int) or num_covariates < 0:
            raise ValueError(f"DeepAR: num_covariates must be an int >= 0, got {num_covariates!r}")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 0:
            raise ValueError(f"DeepAR: embedding_dim must be an int >= 0, got {embedding_dim!r}")
        self.num_covariates = num_covariates
        self.num_series = positive_int(num_series, "DeepAR: num_series")
        self.embedding_dim = embedding_dim
        if embedding_dim:
            self.embedding = _built(nn.Embedding(self.num_series, embedding_dim), (None,))
        width = len(self.lags) + num_covariates + embedding_dim
        for i in range(self.layers):
            setattr(self, f"lstm{i}", _built(nn.LSTM(self.hidden, return_sequences=True, return_state=True),
                                             (None, None, width if i == 0 else self.hidden)))
        self.head = _built(nn.Dense(LIKELIHOODS[self.likelihood]), (None, self.hidden))
        self.built = True

    # -- inputs ----------------------------------------------------------------------------
    @property
    def max_lag(self) -> int:
        return max(self.lags)

    @property
    def window_length(self) -> int:
        return self.context_length + self.prediction_length

    def _dtype(self):
        return self.head.weight.data.dtype

    def _check(self, z, covariates, series, steps: int, who: str):
        """z (batch, steps) as float64, covariates (batch, T, C) or None, series ids (batch,) or None."""
        z = _numpy(z, who, "z").astype(np.float64)
        if z.ndim != 2 or z.shape[1] != steps:
            raise ShapeError(f"{who}: z has shape {z.shape}; expected (batch, {steps})")
        if self.likelihood == "negative_binomial" and np.any(z < 0):
            raise ValueError(f"{who}: the negative binomial likelihood needs counts z >= 0")
        if self.num_covariates:
            if covariates is None:
                raise ValueError(f"{who}: the model reads {self.num_covariates} covariates; got none")
            covariates = _numpy(covariates, who, "covariates").astype(np.float64)
            expected = (z.shape[0], self.window_length, self.num_covariates)
            if covariates.shape != expected:
                raise ShapeError(f"{who}: covariates have shape {covariates.shape}; expected {expected}")
        if self.embedding_dim:
            series = np.zeros(z.shape[0], np.int64) if series is None else _numpy(series, who, "series")
            if series.shape != (z.shape[0],) or not np.issubdtype(series.dtype, np.integer) or \
                    np.any((series < 0) | (series >= self.num_series)):
                raise ValueError(f"{who}: series must be (batch,) = ({z.shape[0]},) ints in [0, {self.num_series}), "
                                 f"got {series!r}")
        return z, covariates, series

    def _features(self, z, nu, covariates, series, start: int, stop: int) -> Tensor:
        """The inputs of the steps start .. stop-1: (batch, stop - start, len(lags) + C + E)."""
        columns = [z[:, start - lag:stop - lag] / nu for lag in self.lags]
        parts = [np.stack(columns, axis=-1)]
        if self.num_covariates:
            parts.append(covariates[:, start:stop])
        x = constant_tensor(np.concatenate(parts, axis=-1), self._dtype())
        if not self.embedding_dim:
            return x
        e = self.embedding(backend.xp.asarray(series))
        e = F.broadcast_to(F.reshape(e, (len(z), 1, self.embedding_dim)), (len(z), stop - start, self.embedding_dim))
        return F.concat([x, e], axis=-1)

    def _run(self, x: Tensor, states: list | None) -> tuple[Tensor, list]:
        finals = []
        for i in range(self.layers):
            layer = getattr(self, f"lstm{i}")
            x, h, c = layer(x) if states is None else layer(x, initial_state=states[i])
            finals.append((h, c))
        return self.head(x), finals

    # -- training --------------------------------------------------------------------------
    def forward(self, z, covariates=None, series=None) -> Tensor:
        z, covariates, series = self._check(z, covariates, series, self.window_length, "DeepAR")
        nu = item_scale(z, self.context_length)
        outputs, _ = self._run(self._features(z, nu, covariates, series, self.max_lag, self.window_length), None)
        return outputs

    def parameters_of(self, z, covariates=None, series=None) -> list[Tensor]:
        """The scaled likelihood parameters at the steps m .. T-1, each (batch, T - m)."""
        outputs = self(z, covariates, series)
        nu = item_scale(_numpy(z, "DeepAR", "z").astype(np.float64), self.context_length)
        return likelihood_parameters(outputs, nu, self.likelihood)

    def loss(self, z, covariates=None, series=None) -> Tensor:
        """-mean_{i, t >= t0} log p(z_{i,t} | theta_{i,t}): the teacher-forced negative log-likelihood
        of the prediction range."""
        start = self.context_length - self.max_lag
        params = [p[:, start:] for p in self.parameters_of(z, covariates, series)]
        target = _numpy(z, "DeepAR.loss", "z")[:, self.context_length:]
        return -F.mean(likelihood_log_prob(constant_tensor(target, self._dtype()), params, self.likelihood))

    # -- forecasting -----------------------------------------------------------------------
    def sample_paths(self, z_context, covariates=None, series=None, num_samples: int = 100,
                     rng: np.random.Generator | int | None = 0) -> np.ndarray:
        """``num_samples`` ancestral sample paths (num_samples, batch, H) after the conditioning
        range ``z_context`` (batch, t0); ``covariates`` cover the whole window (batch, t0 + H, C).
        ``rng``: a NumPy Generator or a seed; each step draws once for all paths (row s B + i is
        path s of series i), so a seed repeats the paths exactly."""
        positive_int(num_samples, "DeepAR.sample_paths: num_samples")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        z, covariates, series = self._check(z_context, covariates, series, self.context_length, "DeepAR.sample_paths")
        t0, batch = self.context_length, len(z)
        rows = np.tile(np.arange(batch), num_samples)
        paths = np.concatenate([z[rows], np.zeros((len(rows), self.prediction_length))], axis=1)
        nu = item_scale(z, t0)[rows]
        covariates = None if covariates is None else covariates[rows]
        series = None if series is None else series[rows]
        with no_grad(), evaluation_mode(self):
            _, states = self._run(self._features(z, nu[:batch], None if covariates is None else covariates[:batch],
                                                 None if series is None else series[:batch], self.max_lag, t0), None)
            states = [(Tensor._wrap(h.data[rows]), Tensor._wrap(c.data[rows])) for h, c in states]
            for t in range(t0, self.window_length):
                outputs, states = self._run(self._features(paths, nu, covariates, series, t, t + 1), states)
                params = likelihood_parameters(outputs[:, 0], nu[:, 0], self.likelihood)
                paths[:, t] = sample_likelihood([p.numpy() for p in params], self.likelihood, rng)
        return paths[:, t0:].reshape(num_samples, batch, self.prediction_length)

    def forecast(self, z_context, covariates=None, series=None, num_samples: int = 100,
                 quantiles: Sequence[float] = (0.1, 0.5, 0.9), rng: np.random.Generator | int | None = 0
                 ) -> DeepARForecast:
        """The sample paths of :meth:`sample_paths`, their mean and their empirical ``quantiles``."""
        levels = tuple(float(q) for q in quantiles)
        if not levels or any(not 0.0 < q < 1.0 for q in levels):
            raise ValueError(f"DeepAR.forecast: quantiles must be levels in (0, 1), got {quantiles!r}")
        samples = self.sample_paths(z_context, covariates, series, num_samples, rng)
        return DeepARForecast(samples, samples.mean(axis=0), np.moveaxis(np.quantile(samples, levels, axis=0), 0, -1),
                              levels)
