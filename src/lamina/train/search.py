"""Hyperparameter search (course notes, Hyperparameter tuning and General advice).

A hyperparameter is any choice that shapes the model or its optimization: the number of
layers and units, the learning rate alpha, the initialization, the optimizer's own settings,
the regularization. The notes' recipe, which this module follows:

- tune on the **validation** data: training data fits the parameters, validation data picks
  the hyperparameters, and the test data, never looked at while tuning, measures the result;
- prefer **random search** to grid search: with n trials a grid of d hyperparameters tries
  only n^(1/d) values of each, a random search n values of every one, so the one or two that
  matter most (often the learning rate) are explored far more finely;
- sample scale-like hyperparameters on a **log scale** (``LogUniform``);
- search **coarse to fine**: search the whole range, then again in a smaller box around the
  best configuration found.

``objective(config)`` returns a score (a float) or a dict with a ``"score"`` key and any other
metrics to record. A trial whose objective raises or returns a non-finite score is recorded
as failed with its error and the search goes on; only a search where every trial fails raises.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lamina
from lamina.io import write_bytes_atomic
from lamina.train.pruning import MedianPruner, PruningCallback, TrialPruned
from lamina.train.search_space import as_distribution, check_space, sample_config, zoom_space
from lamina.train.trainer import Trainer

__all__ = ["SearchResult", "Trial", "coarse_to_fine", "grid_search", "random_search", "tune_trainer"]

DIRECTIONS = ("maximize", "minimize")
STRATEGIES = ("random", "bayes", "tpe")
SCHEDULERS = (None, "hyperband", "asha")


@dataclass
class Trial:
    """One evaluated configuration. ``score`` is NaN and ``error`` says why when it failed;
    ``stage`` is the coarse-to-fine round or the Hyperband bracket (0 for a plain search).

    Multi-fidelity searches (:mod:`lamina.train.hyperband`) evaluate one configuration at
    several budgets: ``config_id`` names the configuration, ``rung`` the step of the halving
    and ``resource`` the budget (e.g. epochs) it was trained for; all None elsewhere."""

    index: int
    config: dict[str, Any]
    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    stage: int = 0
    config_id: int | None = None
    rung: int | None = None
    resource: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


class SearchResult:
    """The trials of a search in the order they ran, and the best one by ``direction``.
    ``budget`` is the total resource a multi-fidelity search spent (None for the others)."""

    def __init__(self, trials: list[Trial], direction: str = "maximize", spaces: Iterable[Mapping] = (),
                 budget: float | None = None):
        self.trials = list(trials)
        self.direction = direction
        self.spaces = list(spaces)
        self.budget = budget

    def ranked(self) -> list[Trial]:
        """The successful trials best first (ties in the order they ran), then the failed ones."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        done = sorted((t for t in self.trials if t.ok), key=lambda t: sign * t.score)
        return done + [t for t in self.trials if not t.ok]

    @property
    def best(self) -> Trial:
        ranked = self.ranked()
        if not ranked or not ranked[0].ok:
            raise ValueError("SearchResult.best: no trial succeeded")
        return ranked[0]

    @property
    def best_config(self) -> dict[str, Any]:
        return dict(self.best.config)

    def _columns(self) -> list[str]:
        names = ["trial"] + (["stage"] if any(t.stage for t in self.trials) else [])
        names += ["config", "rung", "resource"] if any(t.resource is not None for t in self.trials) else []
        names += list(dict.fromkeys(k for t in self.trials for k in t.config))
        names += ["score"] + list(dict.fromkeys(k for t in self.trials for k in t.metrics)) + ["seconds"]
        return names + (["error"] if any(not t.ok for t in self.trials) else [])

    def _row(self, trial: Trial) -> dict[str, Any]:
        return {"trial": trial.index, "stage": trial.stage, "config": trial.config_id, "rung": trial.rung,
                "resource": trial.resource, **trial.config, "score": trial.score,
                **trial.metrics, "seconds": trial.seconds, "error": trial.error or ""}

    def table(self, top: int | None = None) -> str:
        """The trials as an aligned text table, best first (failed ones last)."""
        columns = self._columns()
        rows = [[_cell(self._row(t).get(c, "")) for c in columns] for t in self.ranked()[:top]]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        failed = sum(not t.ok for t in self.trials)
        best = f", best score {self.best.score:.4g} at {self.best.config}" if failed < len(self.trials) else ""
        return f"SearchResult({len(self.trials)} trials, {failed} failed, {self.direction}{best})"

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per trial, in the order they ran, to ``path`` (atomically)."""
        columns = self._columns()
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._row(t) for t in self.trials)
        write_bytes_atomic(path, text.getvalue().encode())


def _evaluate(objective: Callable, config: dict, index: int, stage: int) -> Trial:
    started = time.perf_counter()
    score, metrics, error = math.nan, {}, None
    try:
        value = objective(dict(config))
        if isinstance(value, Mapping):
            if "score" not in value:
                raise KeyError(f"the objective returned a dict without a 'score' key: {sorted(value)}")
            metrics = {k: float(v) for k, v in value.items() if k != "score"}
            value = value["score"]
        score = float(value)
        if not math.isfinite(score):
            error = f"non-finite score {score}"
    except Exception as exc:  # a failed trial is a result, not the end of the search
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    return Trial(index, dict(config), score if error is None else math.nan, metrics, seconds, error, stage)


def _run(objective, configs: Iterable[dict], stage: int, trials: list[Trial], direction, callback, csv_path) -> None:
    """Evaluate ``configs`` one by one, appending to ``trials`` (and rewriting the CSV after each)."""
    for config in configs:
        trial = _evaluate(objective, config, len(trials), stage)
        trials.append(trial)
        if csv_path is not None:
            SearchResult(trials, direction).to_csv(csv_path)
        if callback is not None:
            callback(trial)


def _check(who: str, objective, trials, direction) -> None:
    if not callable(objective):
        raise ValueError(f"{who}: objective must be callable as objective(config), got {objective!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1):
        raise ValueError(f"{who}: trials must be a positive integer, got {trials!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"{who}: direction must be one of {DIRECTIONS}, got {direction!r}")


def _finish(who: str, trials: list[Trial], direction: str, spaces: list) -> SearchResult:
    if not any(t.ok for t in trials):
        errors = list(dict.fromkeys(t.error for t in trials))
        raise RuntimeError(f"{who}: all {len(trials)} trials failed: " + "; ".join(errors[:5]))
    return SearchResult(trials, direction, spaces)


def random_search(objective: Callable[[dict], Any], space: Mapping[str, Any], trials: int, seed: int = 0,
                  direction: str = "maximize", callback: Callable[[Trial], None] | None = None,
                  csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Evaluate ``trials`` configurations drawn from ``space`` (see :mod:`lamina.train.search_space`)
    by one ``numpy.random.Generator`` seeded with ``seed``: the same seed draws the same configs.

    ``callback(trial)`` runs after every trial; ``csv_path`` is rewritten after every trial, so
    an interrupted search keeps what it has done.
    """
    _check("random_search", objective, trials, direction)
    check_space("random_search", space)
    rng = np.random.default_rng(seed)
    done: list[Trial] = []
    _run(objective, (sample_config(space, rng) for _ in range(trials)), 0, done, direction, callback, csv_path)
    return _finish("random_search", done, direction, [dict(space)])


def grid_search(objective: Callable[[dict], Any], grid: Mapping[str, Any], direction: str = "maximize",
                callback: Callable[[Trial], None] | None = None,
                csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Evaluate every combination of the grid's lists (or ``Choice`` options), constants held
    fixed: ``itertools.product`` order, the last name varying fastest."""
    _check("grid_search", objective, None, direction)
    check_space("grid_search", grid)
    axes = []
    for name, value in grid.items():
        distribution = as_distribution(value)
        if distribution is not None and not hasattr(distribution, "options"):
            raise ValueError(f"grid_search: {name}={value!r} cannot be enumerated; give a list of values")
        axes.append(distribution.options if distribution is not None else (value,))
    configs = (dict(zip(grid, values, strict=True)) for values in itertools.product(*axes))
    done: list[Trial] = []
    _run(objective, configs, 0, done, direction, callback, csv_path)
    return _finish("grid_search", done, direction, [dict(grid)])


def coarse_to_fine(objective: Callable[[dict], Any], space: Mapping[str, Any], trials: int, rounds: int = 2,
                   shrink: float = 0.25, seed: int = 0, direction: str = "maximize",
                   callback: Callable[[Trial], None] | None = None,
                   csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Random search in ``rounds`` rounds of ``trials`` trials each: round 0 searches ``space``,
    each later round a box ``shrink`` times as wide as the previous one (log10 width for
    ``LogUniform``) centred on the best configuration so far, slid to stay inside the range.

    All trials are returned together (``Trial.stage`` is the round); ``result.spaces`` holds
    the space each round searched.
    """
    _check("coarse_to_fine", objective, trials, direction)
    check_space("coarse_to_fine", space)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"coarse_to_fine: rounds must be a positive integer, got {rounds!r}")
    rng = np.random.default_rng(seed)
    done: list[Trial] = []
    spaces = [dict(space)]
    for stage in range(rounds):
        if stage > 0:
            best = _finish("coarse_to_fine", done, direction, spaces).best
            spaces.append(zoom_space(spaces[-1], best.config, shrink))
        configs = (sample_config(spaces[-1], rng) for _ in range(trials))
        _run(objective, configs, stage, done, direction, callback, csv_path)
    return _finish("coarse_to_fine", done, direction, spaces)


def tune_trainer(build: Callable[[dict], Any], data, val, space: Mapping[str, Any], trials: int | None, epochs: int,
                 batch_size: int = 32, metric: str = "val_accuracy", seed: int = 0, direction: str | None = None,
                 loss: Any = "categorical_cross_entropy", callback: Callable[[Trial], None] | None = None,
                 csv_path: str | os.PathLike | None = None, strategy: str = "random", scheduler: str | None = None,
                 eta: int = 3, grace_period: int = 1, pruner: MedianPruner | None = None) -> SearchResult:
    """Search over training runs, each scored on the validation data ``val``.

    ``strategy`` picks the configurations: random search (``'random'``), Bayesian
    optimization (``'bayes'``, :func:`lamina.train.bayesian.bayesian_search`) or TPE
    (``'tpe'``, :func:`lamina.train.tpe.tpe_search`). ``scheduler`` shares out the epochs:
    None trains every configuration for ``epochs`` epochs; ``'hyperband'``
    (:func:`lamina.train.hyperband.hyperband` with ``max_resource=epochs`` and ``eta``; it sets
    its own number of configurations, so ``trials`` must be None) and ``'asha'``
    (:func:`lamina.train.hyperband.asha_search`, ``trials`` configurations, ``max_t=epochs``,
    ``grace_period``, ``reduction_factor=eta``) train many configurations for a few epochs and
    continue the best ones where they stopped (resumed, not retrained). Both schedulers draw
    configurations at random. ``pruner``: a :class:`lamina.train.pruning.MedianPruner` that
    stops a run early when ``metric`` falls behind the median of the completed runs at the same
    epoch (the trial is recorded as failed, its error saying why; with ``scheduler=None`` only).

    For each configuration: ``lamina.manual_seed(seed)`` (every trial starts from the same
    random state, so configurations, not luck, are compared), ``build(config)`` returns a
    :class:`Trainer` or ``(model, optimizer)`` (then trained with ``loss``), the trainer fits
    ``data``, and the score is ``metric`` of the last epoch (``val_``
    names are computed on ``val``); the last epoch's other logs are recorded with it. A run
    whose training cost diverges (NaN or infinite) is a failed trial.

    Pass validation data, never the test set: the test set must stay unseen until the chosen
    configuration is evaluated once at the end. ``direction`` defaults to "minimize" for a
    metric that ends in "loss" or names an error, else "maximize".
    """
    if val is None:
        raise ValueError("tune_trainer: val is required; hyperparameters are tuned on validation data")
    if strategy not in STRATEGIES:
        raise ValueError(f"tune_trainer: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"tune_trainer: scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    if scheduler is not None and strategy != "random":
        raise ValueError(f"tune_trainer: scheduler={scheduler!r} draws configurations at random; "
                         f"strategy={strategy!r} works with scheduler=None only")
    if scheduler is not None and pruner is not None:
        raise ValueError(f"tune_trainer: give a scheduler ({scheduler!r}) or a pruner, not both; both stop runs early")
    if scheduler == "hyperband" and trials is not None:
        raise ValueError(f"tune_trainer: Hyperband sets its own numbers of configurations from epochs and eta; "
                         f"pass trials=None, got trials={trials!r}")
    if direction is None:
        direction = "minimize" if metric.endswith("loss") or "error" in metric else "maximize"
    started = itertools.count()

    def train(config: dict, epochs_to: int, trainer: Trainer | None = None) -> tuple[dict[str, float], Trainer]:
        start = 0 if trainer is None else len(trainer.history.epochs)
        watch = None
        if trainer is None:
            lamina.manual_seed(seed)
            trainer = build(config)
            if isinstance(trainer, tuple) and len(trainer) == 2:
                trainer = Trainer(trainer[0], loss, trainer[1], verbose=0)
            if not isinstance(trainer, Trainer):
                raise TypeError(f"build(config) must return a Trainer or (model, optimizer), "
                                f"got {type(trainer).__name__}")
            if pruner is not None:
                watch = PruningCallback(pruner, next(started), metric)
                watch.set_trainer(trainer)
                trainer.callbacks.append(watch)
        history = trainer.fit(data, val=val, epochs=epochs_to, batch_size=batch_size, seed=seed, initial_epoch=start)
        final = {k: v[-1] for k, v in history.epoch.items() if len(v) == len(history.epochs) and k != "samples_per_s"}
        if not math.isfinite(final.get("loss", math.nan)):
            raise FloatingPointError(f"the training cost diverged to {final.get('loss', math.nan)}")
        if metric not in final:
            raise KeyError(f"metric {metric!r} is not in the last epoch's logs {sorted(final)}")
        if watch is not None and watch.pruned_at is not None:
            raise TrialPruned(watch.message())
        return {"score": final.pop(metric), **final}, trainer

    def objective(config: dict) -> dict[str, float]:
        return train(config, epochs)[0]

    def resumed(config: dict, resource: float, state: Trainer | None) -> dict[str, Any]:
        logs, trainer = train(config, max(1, round(resource)), state)
        return {**logs, "state": trainer}

    options = {"seed": seed, "direction": direction, "callback": callback, "csv_path": csv_path}
    if scheduler is not None:
        from lamina.train.hyperband import asha_search, hyperband  # it builds on this module

        if scheduler == "hyperband":
            return hyperband(resumed, space, epochs, eta=eta, resume=True, **options)
        return asha_search(resumed, space, trials, max_t=epochs, grace_period=grace_period,
                                     reduction_factor=eta, resume=True, **options)
    if strategy == "bayes":
        from lamina.train.bayesian import bayesian_search  # it builds on this module

        return bayesian_search(objective, space, trials, **options)
    if strategy == "tpe":
        from lamina.train.tpe import tpe_search  # it builds on this module

        return tpe_search(objective, space, trials, **options)
    return random_search(objective, space, trials, **options)
