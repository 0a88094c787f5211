"""Survival analysis with the Cox proportional-hazards model (Cox, 1972; DeepSurv, Katzman et
al., 2018): the hazard of subject i at time t is h_0(t) exp(g(x_i)), with g(x_i) = h_i the
log-risk a network predicts. Each subject has a duration t_i and an event indicator e_i (1:
the event happened at t_i; 0: censored, known only to survive past t_i).

The negative partial log-likelihood, averaged over the E events (:func:`cox_ph_loss`), with
R(t) = {j : t_j >= t} the subjects still at risk at t:

    Breslow:  L = -(1/E) sum_{i: e_i = 1} [h_i - log sum_{j in R(t_i)} exp(h_j)]
    Efron:    the d tied events D(t) at one time t take the denominators
              sum_{R(t)} exp(h_j) - (l / d) sum_{D(t)} exp(h_j),  l = 0, ..., d - 1,

which agree when no two events share a time. Evaluation: Harrell's concordance index
(:func:`concordance_index`) and the Breslow estimate of the cumulative baseline hazard,
H_0(t) = sum_{event times t_k <= t} d_k / sum_{j in R(t_k)} exp(h_j), giving the survival
function S(t | x) = exp(-H_0(t) exp(h(x))) (:func:`breslow_baseline_hazard`,
:func:`survival_function`).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import exp, log
from lamina.functional.reduce_more import cumsum
from lamina.functional.shape import concat

__all__ = ["COX_TIES", "breslow_baseline_hazard", "concordance_index", "cox_ph_loss", "survival_function"]

COX_TIES = ("breslow", "efron")


def _numpy(value) -> np.ndarray:
    return np.asarray(backend.to_numpy(value.data if isinstance(value, Tensor) else value))


def _survival_data(fn: str, n: int, durations, events) -> tuple[np.ndarray, np.ndarray]:
    """Durations and events as float64 vectors of length n, checked."""
    t, e = _numpy(durations).astype(np.float64), _numpy(events)
    if t.reshape(-1).shape != (n,) or e.reshape(-1).shape != (n,) or t.ndim > 2 or e.ndim > 2:
        raise ShapeError(f"{fn}: durations {t.shape} and events {e.shape} must each hold one value per subject "
                         f"({n} subjects)")
    t, e = t.reshape(-1), e.reshape(-1)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"{fn}: durations must be finite and >= 0, got the minimum {float(np.min(t))}")
    if not np.all((e == 0) | (e == 1)):
        raise ValueError(f"{fn}: events must be 0 (censored) or 1 (event), got the values "
                         f"{np.unique(e)[:6].tolist()}")
    return t, e.astype(np.float64)


def _log_risk_vector(fn: str, log_risk) -> Tensor:
    h = log_risk if isinstance(log_risk, Tensor) else Tensor(log_risk)
    if h.ndim == 2 and h.shape[1] == 1:
        h = h.reshape((h.shape[0],))
    if h.ndim != 1:
        raise ShapeError(f"{fn}: log_risk must be (N,) or (N, 1), got shape {tuple(h.shape)}")
    return h


def _risk_array(fn: str, risk) -> np.ndarray:
    r = _numpy(risk).astype(np.float64)
    if not (r.ndim == 1 or (r.ndim == 2 and r.shape[1] == 1)):
        raise ShapeError(f"{fn}: expected one risk per subject, (N,) or (N, 1), got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{fn}: the risks must be finite")
    return r.reshape(-1)


def _tie_ranks(t: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each event, l (0, 1, ...: its place among the events at its time, in index order)
    and d (the number of those events); l = 0 and d = 1 for the censored."""
    events = np.flatnonzero(e == 1)
    events = events[np.lexsort((events, t[events]))]       # by time, then index
    times = t[events]
    start = np.searchsorted(times, times, side="left")
    rank, count = np.zeros(len(t)), np.ones(len(t))
    rank[events] = np.arange(len(events)) - start
    count[events] = np.searchsorted(times, times, side="right") - start
    return rank, count


def cox_ph_loss(log_risk, durations, events, ties: str = "breslow") -> Tensor:
    """The negative Cox partial log-likelihood per event (module notes) of the log-risks
    ``log_risk`` (N,) or (N, 1) for ``durations`` (>= 0) and ``events`` (0/1) of length N;
    ``ties``: ``'breslow'`` or ``'efron'``. The batch must hold at least one event. The
    maximum log-risk is taken out of the exponentials (a constant: the loss is unchanged)."""
    fn = "cox_ph_loss"
    if ties not in COX_TIES:
        raise ValueError(f"{fn}: ties must be one of {COX_TIES}, got {ties!r}")
    h = _log_risk_vector(fn, log_risk)
    t, e = _survival_data(fn, h.shape[0], durations, events)
    num_events = int(e.sum())
    if num_events == 0:
        raise ValueError(f"{fn}: the batch of {len(t)} subjects has no event (all censored): the partial "
                         "likelihood is empty; use larger batches or batches that hold events")
    dtype = h.dtype
    shift = float(_numpy(h).max())
    w = exp(h - shift)
    order = np.argsort(-t, kind="stable")                   # latest first: a risk set is a prefix
    descending, back = -t[order], np.argsort(order)
    first = np.searchsorted(descending, descending, side="left")[back]  # per subject, the positions of
    last = np.searchsorted(descending, descending, side="right")[back]  # its time, in the sorted order
    cumulative = cumsum(w[order], axis=0)
    denominator = cumulative[last - 1]                      # sum of exp(h_j) over t_j >= t_i
    if ties == "efron":
        tied = concat([Tensor(np.zeros(1), dtype=dtype), cumsum((w * Tensor(e, dtype=dtype))[order], axis=0)])
        tie_sums = tied[last] - tied[first]                 # sum of exp(h_j) over the events at t_i
        rank, count = _tie_ranks(t, e)
        denominator = denominator - Tensor(rank / count, dtype=dtype) * tie_sums
    terms = (h - shift - log(denominator)) * Tensor(e, dtype=dtype)
    return -terms.sum() / num_events


def concordance_index(durations, risk, events) -> float:
    """Harrell's C: the fraction of comparable pairs whose predicted risks are in the order of
    their outcomes. A pair (i, j) is comparable when i's event is observed first: e_i = 1 and
    t_i < t_j, or t_i = t_j with j censored; it is concordant when risk_i > risk_j, and a tie
    in risk counts 1/2 (lifelines' rules; its ``concordance_index(durations, -risk, events)``,
    since it takes scores that grow with survival time). 0.5 is chance, 1 a perfect order."""
    fn = "concordance_index"
    r = _risk_array(fn, risk)
    t, e = _survival_data(fn, r.shape[0], durations, events)
    concordant, comparable = 0.0, 0
    for i in np.flatnonzero(e == 1):
        later = (t > t[i]) | ((t == t[i]) & (e == 0))
        comparable += int(later.sum())
        concordant += float(np.sum(r[i] > r[later]) + 0.5 * np.sum(r[i] == r[later]))
    if comparable == 0:
        raise ValueError(f"{fn}: no comparable pair among the {len(t)} subjects (every pair needs an observed "
                         "event before the other subject's time)")
    return concordant / comparable


def breslow_baseline_hazard(log_risk, durations, events) -> tuple[np.ndarray, np.ndarray]:
    """The Breslow estimate of the cumulative baseline hazard from training data (module
    notes): the distinct event times (ascending) and H_0 at each, as two arrays."""
    fn = "breslow_baseline_hazard"
    h = _risk_array(fn, log_risk)
    t, e = _survival_data(fn, h.shape[0], durations, events)
    times = np.unique(t[e == 1])
    if not len(times):
        raise ValueError(f"{fn}: no event among the {len(t)} subjects")
    w = np.exp(h - h.max())
    deaths = np.array([e[t == time].sum() for time in times])
    at_risk = np.array([w[t >= time].sum() for time in times]) * np.exp(h.max())
    return times, np.cumsum(deaths / at_risk)


def survival_function(log_risk, cumulative_baseline_hazard) -> np.ndarray:
    """S(t | x_i) = exp(-H_0(t) exp(h_i)) for each subject (rows) at the times of
    ``cumulative_baseline_hazard`` (columns): a (N, T) array."""
    h = _risk_array("survival_function", log_risk)
    hazard = np.asarray(cumulative_baseline_hazard, dtype=np.float64).reshape(-1)
    return np.exp(-hazard[None, :] * np.exp(h)[:, None])
