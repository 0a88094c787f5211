"""Hidden Markov models with categorical or Gaussian emissions (as hmmlearn's CategoricalHMM
and GaussianHMM with diagonal covariances).

The model: z_1 ~ pi, z_{t+1} | z_t ~ A[z_t], x_t | z_t ~ p(x | theta_{z_t}). With
log B[t, j] = log p(x_t | z_t = j) the forward and backward recursions in log space are

    alpha_1 = log pi + log B[1],   alpha_t[j] = log B[t, j] + logsumexp_i (alpha_{t-1}[i] + log A[i, j]),
    beta_T = 0,                    beta_t[i] = logsumexp_j (log A[i, j] + log B[t + 1, j] + beta_{t+1}[j]),

log p(x) = logsumexp_j alpha_T[j], and the posteriors are

    gamma_t[j] = p(z_t = j | x) = exp(alpha_t[j] + beta_t[j] - log p(x)),
    xi_t[i, j] = p(z_t = i, z_{t+1} = j | x)
               = exp(alpha_t[i] + log A[i, j] + log B[t + 1, j] + beta_{t+1}[j] - log p(x)).

Viterbi replaces logsumexp by max and reads the best path back. Baum-Welch (EM) re-estimates
pi = gamma_1, A[i, j] = sum_t xi_t[i, j] / sum_t gamma_t[i] (t < T), and the emissions from
the gamma-weighted data: categorical B[j, m] = sum_t gamma_t[j] [x_t = m] / sum_t gamma_t[j];
Gaussian means and variances are the gamma-weighted means and variances (floored at
``min_covar``; the floor keeps each M-step a constrained maximum, so the likelihood never
decreases). Several sequences are given concatenated, with ``lengths``. The NumPy methods run
the forward-backward recursions in probability space normalized at every step (the same
quantities without the logarithms, as hmmlearn's 'scaling' implementation).

The log-likelihood as differentiable ops is :func:`lamina.functional.hmm_log_likelihood`;
:meth:`HiddenMarkovModel.log_likelihood` returns it as a tensor on given parameter tensors.
"""

from __future__ import annotations

import math

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.hmm import hmm_log_likelihood
from lamina.models.statespace._checks import (
    as_float_array,
    check_positive,
    check_shape,
    check_stochastic,
    split_lengths,
)
from lamina.models.statespace._kmeans import kmeans_plus_plus

EMISSIONS = ("categorical", "gaussian")
_NAME = "HiddenMarkovModel"


def _log(p: numpy.ndarray) -> numpy.ndarray:
    with numpy.errstate(divide="ignore"):
        return numpy.log(p)


def scaled_forward_backward(log_pi, log_A, log_B):
    """The forward-backward recursions of one sequence with each step normalized (Rabiner 1989):
    alpha_t / p(x_t | x_1..x_{t-1}) and beta_t scaled to match, so that gamma = alpha * beta.
    Returns (alpha (T, K), beta (T, K), scale (T,), emit (T, K), log p(x)) with emit = B scaled
    per step by exp(-max_j log B[t, j]) to keep it in range; log p(x) = sum_t log scale_t plus
    those shifts."""
    shift = log_B.max(axis=1, keepdims=True)
    shift = numpy.where(numpy.isfinite(shift), shift, 0.0)
    emit, transition = numpy.exp(log_B - shift), numpy.exp(log_A)
    steps = len(log_B)
    alpha, beta, scale = numpy.empty_like(emit), numpy.ones_like(emit), numpy.empty(steps)
    reached = numpy.exp(log_pi) * emit[0]
    for t in range(steps):
        if t:
            reached = (alpha[t - 1] @ transition) * emit[t]
        scale[t] = reached.sum()
        alpha[t] = reached / scale[t] if scale[t] > 0 else reached
    for t in range(steps - 2, -1, -1):
        beta[t] = transition @ (emit[t + 1] * beta[t + 1]) / scale[t + 1]
    with numpy.errstate(divide="ignore"):
        total = float(numpy.log(scale).sum() + shift.sum())
    return alpha, beta, scale, emit, total


def viterbi_log(log_pi, log_A, log_B) -> tuple[numpy.ndarray, float]:
    """The most probable state path (T,) and its log joint probability log p(x, z)."""
    steps, k = log_B.shape
    delta = log_pi + log_B[0]
    pointers = numpy.empty((steps, k), dtype=numpy.int64)
    for t in range(1, steps):
        scores = delta[:, None] + log_A
        pointers[t] = scores.argmax(axis=0)
        delta = scores[pointers[t], numpy.arange(k)] + log_B[t]
    path = numpy.empty(steps, dtype=numpy.int64)
    path[-1] = int(delta.argmax())
    for t in range(steps - 1, 0, -1):
        path[t - 1] = pointers[t, path[t]]
    return path, float(delta.max())


class HiddenMarkovModel:
    """A K-state HMM with ``emission`` 'categorical' (symbols 0..n_symbols-1, ``emissionprob_``
    (K, M)) or 'gaussian' (vectors of n_features, ``means_`` (K, D) and diagonal ``covars_``
    (K, D)); ``startprob_`` (K,) and ``transmat_`` (K, K) in both.

    Parameters given here are the starting point of :meth:`fit` (and are used as they are by
    the other methods); those not given are initialized by :meth:`fit` from the data with
    ``seed``. Observations: ints (T,) for 'categorical', floats (T, D) (or (T,) when D = 1)
    for 'gaussian'; several sequences are concatenated and split by ``lengths``.
    """

    def __init__(self, n_states: int, emission: str = "categorical", *, startprob=None, transmat=None,
                 emissionprob=None, means=None, covars=None, n_iter: int = 100, tol: float = 1e-6,
                 min_covar: float = 1e-3, seed: int | None = 0):
        if int(n_states) != n_states or n_states < 1:
            raise ValueError(f"{_NAME}: n_states must be a positive integer; got {n_states!r}")
        if emission not in EMISSIONS:
            raise ValueError(f"{_NAME}: emission must be one of {EMISSIONS}; got {emission!r}")
        self.n_states, self.emission = int(n_states), emission
        self.n_iter, self.tol, self.min_covar, self.seed = int(n_iter), float(tol), float(min_covar), seed
        k = self.n_states
        self.startprob_ = self.transmat_ = self.emissionprob_ = self.means_ = self.covars_ = None
        if startprob is not None:
            self.startprob_ = as_float_array("startprob", startprob, 1, _NAME)
            check_shape("startprob", self.startprob_, (k,), _NAME)
            check_stochastic("startprob", self.startprob_, _NAME)
        if transmat is not None:
            self.transmat_ = as_float_array("transmat", transmat, 2, _NAME)
            check_shape("transmat", self.transmat_, (k, k), _NAME)
            check_stochastic("transmat (the transition matrix)", self.transmat_, _NAME)
        if emissionprob is not None:
            self.emissionprob_ = as_float_array("emissionprob", emissionprob, 2, _NAME)
            if self.emissionprob_.shape[0] != k:
                raise ShapeError(f"{_NAME}: emissionprob must be (n_states={k}, n_symbols); got "
                                 f"{self.emissionprob_.shape}")
            check_stochastic("emissionprob", self.emissionprob_, _NAME)
        if means is not None:
            self.means_ = as_float_array("means", means, 2, _NAME)
            if self.means_.shape[0] != k:
                raise ShapeError(f"{_NAME}: means must be (n_states={k}, n_features); got {self.means_.shape}")
        if covars is not None:
            self.covars_ = as_float_array("covars", covars, 2, _NAME)
            if self.means_ is not None:
                check_shape("covars (diagonal variances)", self.covars_, self.means_.shape, _NAME)
            check_positive("covars", self.covars_, _NAME)
        self.log_likelihoods_: list[float] = []

    # -- observations and parameters ------------------------------------------------
    def _observations(self, x) -> numpy.ndarray:
        if self.emission == "categorical":
            x = numpy.asarray(x)
            if x.ndim == 2 and x.shape[1] == 1:
                x = x[:, 0]
            if x.ndim != 1 or (x.size and (x.dtype.kind not in "iu" or x.min() < 0)):
                raise ShapeError(f"{_NAME}: categorical observations must be non-negative ints of shape (T,); "
                                 f"got shape {x.shape} dtype {x.dtype}")
            return x.astype(numpy.int64)
        x = as_float_array("observations", x, (1, 2), _NAME)
        return x[:, None] if x.ndim == 1 else x

    def _require_fitted(self, what: str) -> None:
        missing = [name for name in self._parameter_names() if getattr(self, name + "_") is None]
        if missing:
            raise RuntimeError(f"{_NAME}.{what}: the parameters {missing} are not set; give them to the "
                               "constructor or call fit first")

    def _parameter_names(self) -> list[str]:
        tail = ["emissionprob"] if self.emission == "categorical" else ["means", "covars"]
        return ["startprob", "transmat"] + tail

    def log_emissions(self, x) -> numpy.ndarray:
        """log B (T, K): log p(x_t | z_t = j) for every step and state."""
        self._require_fitted("log_emissions")
        x = self._observations(x)
        if self.emission == "categorical":
            m = self.emissionprob_.shape[1]
            if x.size and x.max() >= m:
                raise ValueError(f"{_NAME}: symbol {int(x.max())} is outside the {m} symbols of emissionprob")
            return _log(self.emissionprob_[:, x].T)
        if x.shape[1] != self.means_.shape[1]:
            raise ShapeError(f"{_NAME}: observations have {x.shape[1]} features; the means have "
                             f"{self.means_.shape[1]}")
        var = self.covars_
        squared = ((x[:, None, :] - self.means_[None]) ** 2 / var[None]).sum(axis=2)
        return -0.5 * (squared + numpy.log(var).sum(axis=1)[None] + x.shape[1] * math.log(2 * math.pi))

    def _logs(self):
        self._require_fitted("inference")
        return _log(self.startprob_), _log(self.transmat_)

    # -- inference ------------------------------------------------------------------
    def score(self, x, lengths=None) -> float:
        """log p(x) summed over the sequences."""
        log_pi, log_A = self._logs()
        log_B = self.log_emissions(x)
        spans = split_lengths(len(log_B), lengths, _NAME)
        return sum(scaled_forward_backward(log_pi, log_A, log_B[a:b])[-1] for a, b in spans)

    def predict_proba(self, x, lengths=None) -> numpy.ndarray:
        """The posteriors gamma (T, K) = p(z_t | x) by forward-backward."""
        log_pi, log_A = self._logs()
        log_B = self.log_emissions(x)
        gamma = numpy.empty_like(log_B)
        for a, b in split_lengths(len(log_B), lengths, _NAME):
            alpha, beta, *_ = scaled_forward_backward(log_pi, log_A, log_B[a:b])
            gamma[a:b] = alpha * beta
        return gamma

    def decode(self, x, lengths=None) -> tuple[numpy.ndarray, float]:
        """The Viterbi path (T,) and its log joint probability (summed over the sequences)."""
        log_pi, log_A = self._logs()
        log_B = self.log_emissions(x)
        path, total = numpy.empty(len(log_B), dtype=numpy.int64), 0.0
        for a, b in split_lengths(len(log_B), lengths, _NAME):
            path[a:b], best = viterbi_log(log_pi, log_A, log_B[a:b])
            total += best
        return path, total

    def predict(self, x, lengths=None) -> numpy.ndarray:
        """The Viterbi state path (T,)."""
        return self.decode(x, lengths)[0]

    def log_likelihood(self, log_B, log_pi=None, log_A=None, lengths=None, mask=None) -> Tensor:
        """log p(x) as differentiable ops (:func:`lamina.functional.hmm_log_likelihood`) on the
        emission log-probabilities ``log_B`` (T, K) or (N, T, K), e.g. the output of a network;
        ``log_pi`` and ``log_A`` default to this model's."""
        if log_pi is None or log_A is None:
            self._require_fitted("log_likelihood")
            own_pi, own_A = self._logs()
            log_pi = own_pi if log_pi is None else log_pi
            log_A = own_A if log_A is None else log_A
        return hmm_log_likelihood(log_pi, log_A, log_B, lengths=lengths, mask=mask)

    # -- learning -------------------------------------------------------------------
    def _initialize(self, x: numpy.ndarray, rng: numpy.random.Generator) -> None:
        k = self.n_states
        if self.startprob_ is None:
            self.startprob_ = numpy.full(k, 1.0 / k)
        if self.transmat_ is None:
            self.transmat_ = rng.dirichlet(numpy.ones(k), size=k) * 0.5 + 0.5 / k
        if self.emission == "categorical":
            if self.emissionprob_ is None:
                self.emissionprob_ = rng.dirichlet(numpy.ones(int(x.max()) + 1), size=k)
            return
        if self.means_ is None:
            self.means_ = kmeans_plus_plus(x, k, rng)
        if self.covars_ is None:
            self.covars_ = numpy.tile(numpy.maximum(x.var(axis=0), self.min_covar), (k, 1))

    def fit(self, x, lengths=None) -> HiddenMarkovModel:
        """Baum-Welch: EM steps until log p(x) rises by less than ``tol`` (or ``n_iter`` steps);
        ``log_likelihoods_`` records log p(x) before each M-step (never decreasing)."""
        x = self._observations(x)
        spans = split_lengths(len(x), lengths, _NAME)
        self._initialize(x, numpy.random.default_rng(self.seed))
        self.log_likelihoods_ = []
        for _ in range(self.n_iter):
            total = self._em_step(x, spans)
            previous = self.log_likelihoods_[-1] if self.log_likelihoods_ else -math.inf
            self.log_likelihoods_.append(total)
            if total - previous < self.tol:
                break
        return self

    def _em_step(self, x: numpy.ndarray, spans) -> float:
        log_pi, log_A = self._logs()
        log_B = self.log_emissions(x)
        k = self.n_states
        start, pairs, gamma, total = numpy.zeros(k), numpy.zeros((k, k)), numpy.empty_like(log_B), 0.0
        for a, b in spans:
            alpha, beta, scale, emit, log_p = scaled_forward_backward(log_pi, log_A, log_B[a:b])
            gamma[a:b] = alpha * beta
            start += gamma[a]
            if b - a > 1:       # sum_t xi_t = A * sum_t alpha_t (B_{t+1} beta_{t+1} / scale_{t+1})^T
                pairs += self.transmat_ * (alpha[:-1].T @ (emit[1:] * beta[1:] / scale[1:, None]))
            total += log_p
        self.startprob_ = start / start.sum()
        self.transmat_ = _normalize_rows(pairs, self.transmat_)
        weight = gamma.sum(axis=0)
        if self.emission == "categorical":
            counts = numpy.zeros_like(self.emissionprob_)
            numpy.add.at(counts.T, x, gamma)
            self.emissionprob_ = _normalize_rows(counts, self.emissionprob_)
        else:
            safe = numpy.maximum(weight, 1e-300)[:, None]
            self.means_ = gamma.T @ x / safe
            self.covars_ = numpy.maximum(gamma.T @ x ** 2 / safe - self.means_ ** 2, self.min_covar)
        return total

    def sample(self, n_steps: int, seed: int | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(observations, states) of one sequence of ``n_steps`` drawn from the model."""
        self._require_fitted("sample")
        rng = numpy.random.default_rng(seed)
        states = numpy.empty(n_steps, dtype=numpy.int64)
        state = rng.choice(self.n_states, p=self.startprob_)
        for t in range(n_steps):
            states[t] = state = state if t == 0 else rng.choice(self.n_states, p=self.transmat_[state])
        if self.emission == "categorical":
            m = self.emissionprob_.shape[1]
            return numpy.array([rng.choice(m, p=self.emissionprob_[s]) for s in states], dtype=numpy.int64), states
        noise = rng.standard_normal((n_steps, self.means_.shape[1]))
        return self.means_[states] + noise * numpy.sqrt(self.covars_[states]), states


def _normalize_rows(counts: numpy.ndarray, fallback: numpy.ndarray) -> numpy.ndarray:
    """Rows of ``counts`` scaled to sum 1; a row with no counts keeps its ``fallback`` row."""
    sums = counts.sum(axis=1, keepdims=True)
    return numpy.where(sums > 0, counts / numpy.where(sums > 0, sums, 1.0), fallback)
