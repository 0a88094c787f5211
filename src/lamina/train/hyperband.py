"""Multi-fidelity hyperparameter search: successive halving, Hyperband and ASHA.

A full training run per configuration is the expensive way to find out that most
configurations are bad; a few epochs usually tell. These searches give many configurations a
small **resource** r (epochs, say), keep the best 1/eta of them, give those eta times more,
and so on up to the full resource R (Jamieson & Talwalkar, 2016; Li et al., 2018 and 2020).

**Successive halving** with n configurations from resource r runs rungs i = 0, 1, ..., s:
n_i = floor(n / eta^i) configurations at r_i = r eta^i, the best floor(n_i / eta) going on.

**Hyperband** hedges over how aggressive to be with s_max + 1 brackets, s_max = floor(log_eta R)
and B = (s_max + 1) R; bracket s = s_max, ..., 0 is successive halving from

    n = ceil(B / R * eta^s / (s + 1)) configurations at r = R eta^-s.

For R = 81, eta = 3 the brackets are (n_i, r_i): (81, 1) (27, 3) (9, 9) (3, 27) (1, 81);
(34, 3) (11, 9) (3, 27) (1, 81); (15, 9) (5, 27) (1, 81); (8, 27) (2, 81); (5, 81).

**ASHA** (asynchronous successive halving) never waits for a rung to fill: whenever a worker
is free it promotes a configuration of rung k to rung k + 1 if that configuration is among the
best floor(|rung k| / eta) results rung k has so far and was not promoted before (highest rung
first), else it starts a new configuration at rung 0. Here it runs sequentially, one job at a
time; ``grace_period``, ``reduction_factor`` and ``max_t`` are named as in Ray Tune's
``ASHAScheduler``.

The objective is ``objective(config, resource)``: train ``config`` for ``resource`` units
from scratch and return a score (or a dict with a ``"score"`` key), as for
:func:`~lamina.train.search.random_search`. With ``resume=True`` it is
``objective(config, resource, state)`` instead: ``state`` is None for a configuration's first
run and otherwise what its previous run returned under the dict key ``"state"`` (a model, a
trainer, a checkpoint path; the previous resource is for the objective to keep in it); the
objective continues training up to ``resource`` and returns the new state with its score. A
promotion then costs ``resource - previous resource``, not ``resource``. States are dropped as
soon as their configuration is out of the search.

Every evaluation is a :class:`~lamina.train.search.Trial` with ``config_id``, ``rung``,
``resource`` (and ``stage``: the Hyperband bracket, counted from 0 for s = s_max); a failed one
(it raised or scored NaN) is never promoted. ``SearchResult.budget`` is the resource spent;
``SearchResult.best`` is the best score seen at any resource, as in the paper.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from lamina.train.search import SearchResult, Trial, _check, _evaluate, _finish
from lamina.train.search_space import check_space, sample_config

__all__ = ["ASHA", "asha_search", "hyperband", "hyperband_schedule", "successive_halving"]


def _check_eta(who: str, name: str, eta) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, np.integer)) or eta < 2:
        raise ValueError(f"{who}: {name} must be an integer >= 2, got {eta!r}")


def _check_counts(who: str, trials, direction) -> None:
    """``trials`` and ``direction`` as the other searches check them (the objective is checked
    by :class:`_Runner`, which knows its signature)."""
    _check(who, _check_counts, trials, direction)


def _check_resource(who: str, name: str, value, least: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= least:
        raise ValueError(f"{who}: {name} must be a finite number > {least:g}, got {value!r}")


def _exact(value: Fraction) -> float:
    """A resource as an int when it is whole (epochs), else a float."""
    return int(value) if value.denominator == 1 else float(value)


def _levels(low: Fraction, high: Fraction, eta: int) -> int:
    """The largest s with low * eta^s <= high (exact, no floating-point logarithm)."""
    s = 0
    while low * eta ** (s + 1) <= high:
        s += 1
    return s


def hyperband_schedule(max_resource: float, eta: int = 3) -> list[list[tuple[int, float]]]:
    """Hyperband's brackets, s = s_max first: each a list of (n_i, r_i), the number of
    configurations and the resource of each rung (module docstring)."""
    who = "hyperband_schedule"
    _check_eta(who, "eta", eta)
    _check_resource(who, "max_resource", max_resource)
    top = Fraction(max_resource)
    s_max = _levels(Fraction(1), top, eta)
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))  # ceil(B / R * eta^s / (s + 1)), B = (s_max + 1) R
        brackets.append([(n // eta**i, _exact(top * Fraction(eta) ** (i - s))) for i in range(s + 1)])
    return brackets


class _Runner:
    """Evaluates (configuration, resource) jobs, records them as trials, keeps the states of a
    resumable objective and counts the resource spent."""

    def __init__(self, who: str, objective: Callable, resume: bool, direction: str, callback, csv_path):
        if not callable(objective):
            raise ValueError(f"{who}: objective must be callable as objective(config, resource"
                             f"{', state' if resume else ''}), got {objective!r}")
        self.objective, self.resume, self.direction = objective, bool(resume), direction
        self.callback, self.csv_path = callback, csv_path
        self.trials: list[Trial] = []
        self.configs: dict[int, dict] = {}
        self.states: dict[int, tuple[float, Any]] = {}  # config_id -> (resource reached, state)
        self.budget = 0

    def new_config(self, config: dict) -> int:
        self.configs[len(self.configs)] = config
        return len(self.configs) - 1

    def run(self, config_id: int, resource: float, stage: int = 0, rung: int = 0) -> Trial:
        config = self.configs[config_id]
        reached, state = self.states.pop(config_id, (0, None))
        kept = {}

        def call(given: dict):
            if not self.resume:
                return self.objective(given, resource)
            value = self.objective(given, resource, state)
            if isinstance(value, Mapping) and "state" in value:
                value = dict(value)
                kept["state"] = value.pop("state")
            return value

        trial = _evaluate(call, config, len(self.trials), stage)
        trial.config_id, trial.rung, trial.resource = config_id, rung, resource
        self.budget += resource - reached
        if self.resume and trial.ok:
            self.states[config_id] = (resource, kept.get("state"))
        self.trials.append(trial)
        if self.csv_path is not None:
            self.result([]).to_csv(self.csv_path)
        if self.callback is not None:
            self.callback(trial)
        return trial

    def keep_only(self, config_ids) -> None:
        """Drop the states of every configuration not in ``config_ids``."""
        alive = set(config_ids)
        self.states = {k: v for k, v in self.states.items() if k in alive}

    def ranked(self, trials: list[Trial]) -> list[Trial]:
        """The successful ``trials`` best first, ties in the order they ran."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        return sorted((t for t in trials if t.ok), key=lambda t: sign * t.score)

    def result(self, spaces: list) -> SearchResult:
        return SearchResult(self.trials, self.direction, spaces, budget=self.budget)


def _halving(runner: _Runner, config_ids: list[int], rungs: list[tuple[int, float]], stage: int) -> None:
    """Successive halving of ``config_ids`` over ``rungs`` [(n_i, r_i), ...]: all at r_0, the best
    n_1 (never a failed one) at r_1, and so on."""
    alive = list(config_ids)
    for i, (_, resource) in enumerate(rungs):
        done = [runner.run(config_id, resource, stage, i) for config_id in alive]
        keep = rungs[i + 1][0] if i + 1 < len(rungs) else 0
        alive = [t.config_id for t in runner.ranked(done)[:keep]]
        runner.keep_only(alive)


def successive_halving(objective: Callable[..., Any], space: Mapping[str, Any], configs: int,
                       min_resource: float, max_resource: float, eta: int = 3, seed: int = 0,
                       direction: str = "maximize", resume: bool = False,
                       callback: Callable[[Trial], None] | None = None,
                       csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Successive halving of ``configs`` configurations drawn from ``space`` (seeded by ``seed``):
    rung i runs floor(configs / eta^i) of them at ``min_resource`` * eta^i, for every i with
    that resource at most ``max_resource``; the best 1/eta go on (module docstring for the
    objective's protocol and ``resume``)."""
    who = "successive_halving"
    _check_counts(who, None, direction)
    if isinstance(configs, bool) or not isinstance(configs, (int, np.integer)) or configs < 1:
        raise ValueError(f"{who}: configs must be a positive integer, got {configs!r}")
    _check_eta(who, "eta", eta)
    _check_resource(who, "min_resource", min_resource)
    _check_resource(who, "max_resource", max_resource)
    if max_resource < min_resource:
        raise ValueError(f"{who}: max_resource ({max_resource!r}) must be >= min_resource ({min_resource!r})")
    check_space(who, space)
    runner = _Runner(who, objective, resume, direction, callback, csv_path)
    low = Fraction(min_resource)
    s = _levels(low, Fraction(max_resource), eta)
    rungs = [(configs // eta**i, _exact(low * eta**i)) for i in range(s + 1)]
    rng = np.random.default_rng(seed)
    ids = [runner.new_config(sample_config(space, rng)) for _ in range(configs)]
    _halving(runner, ids, rungs, 0)
    _finish(who, runner.trials, direction, [])
    return runner.result([dict(space)])


def hyperband(objective: Callable[..., Any], space: Mapping[str, Any], max_resource: float, eta: int = 3,
              seed: int = 0, direction: str = "maximize", resume: bool = False,
              callback: Callable[[Trial], None] | None = None,
              csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Hyperband (Li et al., 2018): successive halving in every bracket of
    :func:`hyperband_schedule` ``(max_resource, eta)``, most aggressive first, each bracket with
    fresh configurations drawn from ``space`` by one generator seeded with ``seed``. Returns a
    :class:`SearchResult` of every evaluation; its ``budget`` is the resource spent,
    sum over brackets of sum_i n_i r_i when restarting from scratch (module docstring)."""
    who = "hyperband"
    _check_counts(who, None, direction)
    check_space(who, space)
    schedule = hyperband_schedule(max_resource, eta)
    runner = _Runner(who, objective, resume, direction, callback, csv_path)
    rng = np.random.default_rng(seed)
    for stage, rungs in enumerate(schedule):
        ids = [runner.new_config(sample_config(space, rng)) for _ in range(rungs[0][0])]
        _halving(runner, ids, rungs, stage)
    _finish(who, runner.trials, direction, [])
    return runner.result([dict(space)])


class ASHA:
    """The promotion rule of asynchronous successive halving (module docstring), apart from any
    training: rung k trains for ``grace_period * reduction_factor^k`` (the rungs below
    ``max_t``, then ``max_t`` itself).

    Ask :meth:`next_job` for work: ``(config_id, rung)`` promotes a configuration, None means
    "start a new configuration at rung 0"; give every result to :meth:`report` (NaN for a
    failed run, which is never promoted).
    """

    def __init__(self, max_t: float = 100, grace_period: float = 1, reduction_factor: int = 4,
                 direction: str = "maximize"):
        who = "ASHA"
        _check_eta(who, "reduction_factor", reduction_factor)
        _check_resource(who, "grace_period", grace_period)
        _check_resource(who, "max_t", max_t)
        if max_t < grace_period:
            raise ValueError(f"ASHA: max_t ({max_t!r}) must be >= grace_period ({grace_period!r})")
        _check_counts(who, None, direction)
        low, top = Fraction(grace_period), Fraction(max_t)
        milestones = [low * reduction_factor**k for k in range(_levels(low, top, reduction_factor) + 1)]
        self.milestones = [_exact(r) for r in milestones if r < top] + [_exact(top)]
        self.reduction_factor, self.direction = reduction_factor, direction
        self.rungs: list[list[tuple[int, float]]] = [[] for _ in self.milestones]  # (config_id, score) as done
        self.promoted: list[set[int]] = [set() for _ in self.milestones]

    def top(self, rung: int) -> list[int]:
        """The configurations among the best floor(|rung| / eta) results of ``rung`` (failed
        runs excluded), ties in the order they were reported."""
        results = self.rungs[rung]
        sign = -1.0 if self.direction == "maximize" else 1.0
        ranked = sorted((r for r in results if math.isfinite(r[1])), key=lambda r: sign * r[1])
        return [config_id for config_id, _ in ranked[:len(results) // self.reduction_factor]]

    def next_job(self) -> tuple[int, int] | None:
        for rung in range(len(self.milestones) - 2, -1, -1):
            for config_id in self.top(rung):
                if config_id not in self.promoted[rung]:
                    self.promoted[rung].add(config_id)
                    return config_id, rung + 1
        return None

    def report(self, config_id: int, rung: int, score: float) -> None:
        self.rungs[rung].append((config_id, float(score)))


def asha_search(objective: Callable[..., Any], space: Mapping[str, Any], trials: int, max_t: float = 100,
                grace_period: float = 1, reduction_factor: int = 4, seed: int = 0, direction: str = "maximize",
                resume: bool = False, callback: Callable[[Trial], None] | None = None,
                csv_path: str | os.PathLike | None = None) -> SearchResult:
    """ASHA run sequentially: promote while :class:`ASHA` finds a promotion, else start a new
    configuration drawn from ``space`` (seeded by ``seed``), until ``trials`` configurations
    have started and nothing is left to promote (module docstring for the objective). With
    ``resume=True`` the state of every configuration below the top rung is kept, as it may
    still be promoted."""
    who = "asha_search"
    _check_counts(who, trials, direction)
    check_space(who, space)
    scheduler = ASHA(max_t, grace_period, reduction_factor, direction)
    runner = _Runner(who, objective, resume, direction, callback, csv_path)
    rng = np.random.default_rng(seed)
    while True:
        job = scheduler.next_job()
        if job is None:
            if len(runner.configs) == trials:
                break
            job = runner.new_config(sample_config(space, rng)), 0
        config_id, rung = job
        trial = runner.run(config_id, scheduler.milestones[rung], 0, rung)
        scheduler.report(config_id, rung, trial.score)
        if rung == len(scheduler.milestones) - 1:  # at the top: never resumed again
            runner.keep_only(set(runner.states) - {config_id})
    _finish(who, runner.trials, direction, [])
    return runner.result([dict(space)])
