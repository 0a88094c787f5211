r"""How much a membership attack reveals, and what it proves about a DP guarantee.

* :func:`membership_roc`: the ROC curve of attack scores (one point per distinct threshold,
  from (0, 0) to (1, 1)).
* :func:`attack_report`: ROC AUC, the best balanced accuracy max_t (TPR + 1 - FPR) / 2 and the
  TPR at FPR = 1e-3 and 1e-2 (the largest TPR of a threshold whose FPR is at most that);
  Carlini et al. (2022) insist on the low-FPR numbers, since an attack that is confident about
  a few records matters more than a higher AUC. :func:`plot_roc` draws the ROC on log axes.
* :func:`empirical_epsilon` (Jagielski et al. 2020): an (epsilon, delta)-DP mechanism forces
  every test on its output to have FPR + e^eps FNR >= 1 - delta (and the same with FPR and FNR
  swapped), so an attack observed over many trials proves
  eps >= max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR)). With the rates replaced
  by their Clopper-Pearson upper bounds the bound holds with the chosen confidence.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.io.atomic import save_figure

__all__ = ["AttackReport", "EpsilonAudit", "attack_report", "clopper_pearson_interval", "empirical_epsilon",
           "membership_roc", "plot_roc"]

#: The false-positive rates at which :func:`attack_report` gives the TPR.
LOW_FPRS = (1e-3, 1e-2)


class AttackReport(NamedTuple):
    """``auc``; ``balanced_accuracy`` (best over thresholds); ``tpr_at_fpr`` {FPR: TPR};
    ``fpr`` and ``tpr``, the ROC curve."""

    auc: float
    balanced_accuracy: float
    tpr_at_fpr: dict[float, float]
    fpr: np.ndarray
    tpr: np.ndarray


class EpsilonAudit(NamedTuple):
    """``epsilon_lower``: the bound from the Clopper-Pearson upper bounds of the rates (holds
    with confidence 1 - alpha); ``epsilon_point``: the bound from the observed rates;
    ``fpr``, ``fnr`` and their two-sided (1 - alpha) intervals."""

    epsilon_lower: float
    epsilon_point: float
    fpr: float
    fnr: float
    fpr_interval: tuple[float, float]
    fnr_interval: tuple[float, float]


def _numpy(values) -> np.ndarray:
    data = values.data if isinstance(values, Tensor) else values
    return np.asarray(backend.to_numpy(data) if not isinstance(data, (list, tuple)) else data)


def membership_roc(scores, is_member) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): deciding "member" for scores >= thresholds[k] has rates
    fpr[k], tpr[k]; thresholds fall, starting at +inf (nothing flagged)."""
    s = _numpy(scores).astype(np.float64).ravel()
    member = _numpy(is_member).astype(bool).ravel()
    if member.shape != s.shape:
        raise ShapeError(f"membership_roc: {len(s)} scores but is_member has shape {member.shape}")
    if member.all() or not member.any():
        raise ValueError("membership_roc: is_member must hold both members and non-members")
    if not np.isfinite(s).all():
        raise ValueError("membership_roc: scores must be finite")
    order = np.argsort(-s, kind="stable")
    s, member = s[order], member[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    true_pos = np.cumsum(member)[last_of_tie]
    false_pos = (last_of_tie + 1) - true_pos
    tpr = np.r_[0.0, true_pos / member.sum()]
    fpr = np.r_[0.0, false_pos / (~member).sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def attack_report(scores, is_member, path: str | os.PathLike | None = None,
                  fprs: tuple[float, ...] = LOW_FPRS) -> AttackReport:
    """The :class:`AttackReport` of membership ``scores`` (higher: more likely a member)
    against the truth ``is_member``; with ``path``, the ROC is also drawn there
    (:func:`plot_roc`)."""
    fpr, tpr, _ = membership_roc(scores, is_member)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    balanced = float(np.max((tpr + 1.0 - fpr) / 2))
    at_fpr = {float(x): float(tpr[fpr <= x].max()) for x in fprs}
    report = AttackReport(auc, balanced, at_fpr, fpr, tpr)
    if path is not None:
        plot_roc(report, path)
    return report


def plot_roc(reports: AttackReport | dict[str, AttackReport], path: str | os.PathLike, dpi: int = 100) -> Path:
    """Draw one ROC (or several, ``{name: report}``) on log-log axes with the chance diagonal,
    and write it to ``path`` as a PNG, atomically. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    named = reports if isinstance(reports, dict) else {"attack": reports}
    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    smallest = 1.0
    for name, report in named.items():
        if not isinstance(report, AttackReport):
            raise TypeError(f"plot_roc: expected AttackReport values, got {type(report).__name__} for {name!r}")
        positive = report.fpr > 0
        smallest = min(smallest, float(report.fpr[positive].min()))
        ax.plot(report.fpr[positive], report.tpr[positive], label=f"{name} (AUC {report.auc:.3f})")
    floor = 10.0 ** math.floor(math.log10(smallest))
    ax.plot([floor, 1.0], [floor, 1.0], linestyle="--", color="grey", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def _check_count(value, fn: str, name: str, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 \
            or (upper is not None and value > upper):
        limit = f"[0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{fn}: {name} must be an int in {limit}, got {value!r}")
    return int(value)


def clopper_pearson_interval(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """The two-sided (1 - ``alpha``) Clopper-Pearson interval of a binomial proportion:
    (Beta^-1(alpha/2; k, n - k + 1), Beta^-1(1 - alpha/2; k + 1, n - k)), with 0 and 1 at the ends."""
    from scipy.stats import beta

    n = _check_count(trials, "clopper_pearson_interval", "trials")
    k = _check_count(successes, "clopper_pearson_interval", "successes", upper=n)
    if n == 0 or not 0 < alpha < 1:
        raise ValueError(f"clopper_pearson_interval: need trials >= 1 and alpha in (0, 1), got {n} and {alpha!r}")
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _epsilon_bound(fpr: float, fnr: float, delta: float) -> float:
    bounds = [0.0]
    for first, second in ((fpr, fnr), (fnr, fpr)):
        if second == 0:
            if 1 - delta - first > 0:
                return math.inf
            continue
        if 1 - delta - first > 0:
            bounds.append(math.log((1 - delta - first) / second))
    return max(bounds)


def empirical_epsilon(true_positives: int, false_positives: int, positives: int, negatives: int,
                      delta: float = 0.0, alpha: float = 0.05) -> EpsilonAudit:
    """Jagielski et al.'s lower bound on epsilon (module docstring). The attack said "member"
    ``true_positives`` times in ``positives`` trials where the record was in the training set,
    and ``false_positives`` times in ``negatives`` trials where it was not: FPR = FP / negatives,
    FNR = 1 - TP / positives. ``epsilon_lower`` uses the upper ends of the rates' two-sided
    (1 - ``alpha``) Clopper-Pearson intervals, as their code does; bounds below 0 read 0."""
    fn = "empirical_epsilon"
    positives = _check_count(positives, fn, "positives")
    negatives = _check_count(negatives, fn, "negatives")
    if positives == 0 or negatives == 0:
        raise ValueError(f"{fn}: needs trials of both kinds, got {positives} positives and {negatives} negatives")
    true_positives = _check_count(true_positives, fn, "true_positives", upper=positives)
    false_positives = _check_count(false_positives, fn, "false_positives", upper=negatives)
    if not 0 <= delta < 1:
        raise ValueError(f"{fn}: delta must lie in [0, 1), got {delta!r}")
    fpr, fnr = false_positives / negatives, (positives - true_positives) / positives
    fpr_interval = clopper_pearson_interval(false_positives, negatives, alpha)
    fnr_interval = clopper_pearson_interval(positives - true_positives, positives, alpha)
    return EpsilonAudit(_epsilon_bound(fpr_interval[1], fnr_interval[1], delta), _epsilon_bound(fpr, fnr, delta),
                        fpr, fnr, fpr_interval, fnr_interval)
