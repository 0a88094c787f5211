r"""A metric over the whole data and per group of a sensitive feature (fairlearn's MetricFrame).

``MetricFrame(metrics, y_true, y_pred, sensitive_features)`` evaluates each metric
``metric(y_true, y_pred, **sample_params)`` on all samples (:attr:`overall`) and on each group's
(:attr:`by_group`), and summarises the disparity:

* ``difference("between_groups")`` = max_a m_a - min_a m_a; ``difference("to_overall")`` =
  max_a |m_a - m_overall|;
* ``ratio("between_groups")`` = min_a m_a / max_a m_a; ``ratio("to_overall")`` =
  min_a min(m_a / m_overall, m_overall / m_a) (so a ratio is in [0, 1], 1 at parity; 0 / 0 is
  nan);
* ``group_min()``, ``group_max()``.

Sensitive features: one array, a 2-D array (one feature per column), a list of arrays or a
dict ``name -> array``; with several features the groups are their intersections, keyed by
the tuple of values (only combinations that occur are groups). One metric gives numbers and
``{group: number}``; a dict ``name -> metric`` gives a dict of those per name.
``sample_weight`` (or any per-sample ``sample_params``) is split with the samples and passed
to every metric by keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["MetricFrame", "check_lengths", "group_labels"]

METHODS = ("between_groups", "to_overall")


def check_lengths(who: str, **arrays) -> int:
    """The common length of ``arrays`` (1-D or the first axis); ValueError naming each length
    when they differ."""
    lengths = {name: len(value) if not np.isscalar(value) else 1 for name, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{who}: every per-sample array needs the same length; {listed}")
    return next(iter(lengths.values()))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _feature_columns(sensitive_features, who: str) -> list[np.ndarray]:
    if isinstance(sensitive_features, Mapping):
        columns = [np.asarray(v).reshape(-1) for v in sensitive_features.values()]
    elif isinstance(sensitive_features, (list, tuple)) and sensitive_features and \
            all(np.ndim(v) == 1 for v in sensitive_features):
        columns = [np.asarray(v) for v in sensitive_features]
    else:
        array = np.asarray(sensitive_features)
        if array.ndim == 1:
            columns = [array]
        elif array.ndim == 2:
            columns = [array[:, j] for j in range(array.shape[1])]
        else:
            raise ValueError(f"{who}: sensitive_features must be 1-D, 2-D (samples, features), a list or a dict "
                             f"of 1-D arrays; got shape {array.shape}")
    if not columns:
        raise ValueError(f"{who}: needs at least one sensitive feature")
    check_lengths(who, **{f"sensitive feature {j}": c for j, c in enumerate(columns)})
    return columns


def group_labels(sensitive_features, who: str = "group_labels") -> list:
    """Each sample's group: its feature value, or the tuple of its values for several features."""
    columns = _feature_columns(sensitive_features, who)
    if len(columns) == 1:
        return [_plain(v) for v in columns[0]]
    return [tuple(_plain(v) for v in row) for row in zip(*columns, strict=True)]


def _sorted_groups(keys: list) -> list:
    unique = list(dict.fromkeys(keys))
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=repr)


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return float("nan") if a == 0 else float("inf")
    return a / b


class MetricFrame:
    """``metrics`` (a callable or a dict of them) on all samples and on each group; see the
    module docstring for the summaries."""

    def __init__(self, metrics: Callable | Mapping[str, Callable], y_true, y_pred, sensitive_features,
                 sample_weight=None, sample_params: Mapping | None = None):
        who = "MetricFrame"
        self._single = callable(metrics)
        named = {getattr(metrics, "__name__", "metric"): metrics} if self._single else dict(metrics)
        if not named or not all(callable(m) for m in named.values()):
            raise TypeError(f"{who}: metrics must be a callable or a non-empty dict of callables, got {metrics!r}")
        params = dict(sample_params or {})
        if sample_weight is not None:
            params["sample_weight"] = sample_weight
        params = {k: np.asarray(v) for k, v in params.items()}
        y_true = None if y_true is None else np.asarray(y_true)
        y_pred = np.asarray(y_pred)
        keys = group_labels(sensitive_features, who)
        lengths = {"y_pred": y_pred, "sensitive_features": keys, **params}
        if y_true is not None:
            lengths["y_true"] = y_true
        if check_lengths(who, **lengths) == 0:
            raise ValueError(f"{who}: no samples")
        self.groups = _sorted_groups(keys)
        self._overall = {name: self._evaluate(name, m, y_true, y_pred, params, None) for name, m in named.items()}
        self._by_group = {name: {} for name in named}
        for group in self.groups:
            rows = np.array([k == group for k in keys])
            part = {k: v[rows] for k, v in params.items()}
            truth = None if y_true is None else y_true[rows]
            for name, metric in named.items():
                self._by_group[name][group] = self._evaluate(name, metric, truth, y_pred[rows], part, group)

    @staticmethod
    def _evaluate(name, metric, y_true, y_pred, params, group):
        try:
            return float(metric(y_true, y_pred, **params))
        except ValueError as error:
            where = "all samples" if group is None else f"group {group!r}"
            raise ValueError(f"MetricFrame: metric {name!r} on {where}: {error}") from None

    def _shape(self, per_name: dict):
        return next(iter(per_name.values())) if self._single else per_name

    @property
    def overall(self):
        """The metric on all samples (a dict per metric name for several)."""
        return self._shape(self._overall)

    @property
    def by_group(self):
        """``{group: value}`` (a dict of those per metric name for several)."""
        return self._shape({name: dict(values) for name, values in self._by_group.items()})

    def group_min(self):
        return self._shape({name: min(v.values()) for name, v in self._by_group.items()})

    def group_max(self):
        return self._shape({name: max(v.values()) for name, v in self._by_group.items()})

    @staticmethod
    def _check_method(method: str, who: str) -> None:
        if method not in METHODS:
            raise ValueError(f"MetricFrame.{who}: method must be one of {METHODS}, got {method!r}")

    def difference(self, method: str = "between_groups"):
        """max - min over the groups, or the largest |group - overall|."""
        self._check_method(method, "difference")
        result = {}
        for name, values in self._by_group.items():
            v = np.array(list(values.values()))
            result[name] = float(v.max() - v.min()) if method == "between_groups" else \
                float(np.abs(v - self._overall[name]).max())
        return self._shape(result)

    def ratio(self, method: str = "between_groups"):
        """min / max over the groups, or min over groups of min(group/overall, overall/group)."""
        self._check_method(method, "ratio")
        result = {}
        for name, values in self._by_group.items():
            v = list(values.values())
            if method == "between_groups":
                result[name] = _ratio(min(v), max(v))
            else:
                overall = self._overall[name]
                result[name] = min(min(_ratio(g, overall), _ratio(overall, g)) for g in v)
        return self._shape(result)

    def __repr__(self) -> str:
        lines = [f"MetricFrame over {len(self.groups)} groups"]
        for name, values in self._by_group.items():
            lines.append(f"  {name}: overall {self._overall[name]:.4g}; "
                         + ", ".join(f"{g!r}: {v:.4g}" for g, v in values.items()))
        return "\n".join(lines)
