"""Population-based training (Jaderberg et al., 2017) and PB2 exploration (Parker-Holder et al., 2020).

A search that fixes the hyperparameters once per trial cannot find a *schedule*: a large
learning rate early and a small one late. PBT trains a population of members side by side,
each with its own model, optimizer state and configuration. Every ``ready_every`` steps each
member is evaluated and the population is ranked; with n members and q = ``quantile`` the
top and bottom k = min(ceil(q n), floor(n / 2)) members are found, and every bottom member

- **exploits**: copies the weights *and* the optimizer state (momenta, step counts) of a
  member of the top k chosen uniformly at random, and
- **explores**: changes the copied configuration. Each searched hyperparameter is, with
  probability ``resample_probability``, drawn afresh from its distribution; otherwise a
  number is multiplied by one of the ``perturb`` factors (chosen with equal probability) and
  kept inside its range, and a ``Choice`` moves to a neighbouring option (an end one inwards).

With ``explore="pb2"`` the new configuration is instead chosen by a GP-UCB bandit: a Gaussian
process is fitted to the population's history, mapping (time, configuration) to the change in
score over the interval that configuration was trained for, and the candidate with the largest
mu + kappa sigma at the current time wins (candidates: draws from the space and perturbations
of the copied configuration). The new configuration goes to the live optimizer: ``lr`` through
``optimizer.lr`` (group scales kept), any other optimizer hyperparameter (``momentum``,
``weight_decay``, ...) into every parameter group, and any name in ``setters`` through
``setters[name](model, optimizer, value)``; the rest reach ``step`` through the config.

``build(config)`` returns ``(model, optimizer)``; ``step(model, optimizer, config)`` takes one
training step; ``evaluate(model)`` returns the score (larger is better unless ``direction`` is
``"minimize"``).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamina.train.bayesian import UnitCube, gp_surrogate, upper_confidence_bound
from lamina.train.search import DIRECTIONS, SearchResult, Trial
from lamina.train.search_space import (
    Choice,
    IntUniform,
    LogUniform,
    Uniform,
    as_distribution,
    check_space,
    sample_config,
)

__all__ = [
    "Exploit",
    "PBTResult",
    "apply_hyperparameters",
    "copy_member",
    "explore_config",
    "pbt_trainer",
    "plot_pbt",
    "population_based_training",
    "quantile_members",
]

EXPLORERS = ("perturb", "pb2")


@dataclass(frozen=True)
class Exploit:
    """At ``step`` (after ``generation`` rounds), ``member`` copied ``source``'s weights and
    optimizer state and changed configuration ``old`` into ``new``."""

    generation: int
    step: int
    member: int
    source: int
    old: dict[str, Any]
    new: dict[str, Any]


class PBTResult(SearchResult):
    """Every evaluation of every member as a :class:`Trial` (``config_id`` the member,
    ``stage`` the generation, ``resource`` the steps taken), the exploits in the order they
    happened, and the final members' ``(model, optimizer)`` pairs. ``best`` (as for any
    search) is the best evaluation at any time; ``best_member`` is the best at the end."""

    def __init__(self, trials: list[Trial], exploits: list[Exploit], members: list[tuple[Any, Any]],
                 direction: str = "maximize", spaces: Sequence[Mapping] = ()):
        super().__init__(trials, direction, spaces)
        self.exploits = list(exploits)
        self.members = list(members)

    @property
    def generations(self) -> int:
        return max(t.stage for t in self.trials)

    def final_scores(self) -> np.ndarray:
        """The last evaluation's score of every member, by member index."""
        last = [t for t in self.trials if t.stage == self.generations]
        return np.array([t.score for t in sorted(last, key=lambda t: t.config_id)])

    @property
    def best_member(self) -> int:
        scores = self.final_scores()
        return int(np.argmax(scores) if self.direction == "maximize" else np.argmin(scores))

    @property
    def best_model(self):
        return self.members[self.best_member][0]

    def lineage(self, member: int) -> list[int]:
        """Whose weights ``member``'s final weights were trained as in each generation
        1, 2, ...: follow the exploits backwards from the end."""
        owner, owners = member, []
        copied = {(e.generation, e.member): e.source for e in self.exploits}
        for generation in range(self.generations, 0, -1):
            owners.append(owner)
            owner = copied.get((generation - 1, owner), owner)
        return owners[::-1]

    def schedule(self, member: int | None = None) -> list[tuple[int, dict[str, Any]]]:
        """``(first step, config)`` for each generation of the training behind ``member``'s
        final weights (the best member's by default): the hyperparameter schedule PBT found."""
        member = self.best_member if member is None else member
        by_key = {(t.stage, t.config_id): t for t in self.trials}
        schedule = []
        for generation, owner in enumerate(self.lineage(member), start=1):
            start = by_key[(generation - 1, owner)].resource
            schedule.append((int(start), dict(by_key[(generation, owner)].config)))
        return schedule

    def __repr__(self) -> str:
        return (f"PBTResult({len(self.members)} members, {self.generations} generations, "
                f"{len(self.exploits)} exploits, best member {self.best_member} "
                f"with score {self.final_scores()[self.best_member]:.4g})")


def quantile_members(scores, quantile: float = 0.25, direction: str = "maximize") -> tuple[list[int], list[int]]:
    """``(top, bottom)``: the indices of the k best and the k worst scores, k = min(ceil(q n),
    floor(n / 2)), best first and worst first (among ties the lower index counts as better)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 < quantile <= 0.5:
        raise ValueError(f"quantile_members: quantile must be in (0, 0.5], got {quantile!r}")
    if scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"quantile_members: needs a 1-d array of at least 2 scores, got shape {scores.shape}")
    goodness = scores if direction == "maximize" else -scores
    goodness = np.where(np.isnan(goodness), -np.inf, goodness)  # a failed evaluation ranks last
    count = min(math.ceil(quantile * len(scores)), len(scores) // 2)
    best_first = np.argsort(-goodness, kind="stable")
    worst_first = best_first[::-1]  # so tied members never land on both sides
    return [int(i) for i in best_first[:count]], [int(i) for i in worst_first[:count]]


def _perturb_one(distribution, value, factor: float, rng: np.random.Generator):
    if isinstance(distribution, Choice):
        at, last = distribution.options.index(value), len(distribution.options) - 1
        moves = [m for m in (-1, 1) if 0 <= at + m <= last] or [0]  # an end moves inwards
        return distribution.options[at + moves[int(rng.integers(len(moves)))]]
    if isinstance(distribution, IntUniform):
        return int(min(max(round(value * factor), distribution.low), distribution.high))
    if isinstance(distribution, (LogUniform, Uniform)):
        return float(min(max(value * factor, distribution.low), distribution.high))
    raise ValueError(f"explore_config: cannot perturb a {type(distribution).__name__}")


def explore_config(config: Mapping[str, Any], space: Mapping[str, Any], rng: np.random.Generator,
                   perturb: Sequence[float] = (0.8, 1.2), resample_probability: float = 0.25) -> dict[str, Any]:
    """PBT's explore step (module docstring): each searched hyperparameter resampled with
    probability ``resample_probability``, else perturbed by a factor from ``perturb``."""
    new = dict(config)
    for name, value in space.items():
        distribution = as_distribution(value)
        if distribution is None:
            continue
        if rng.random() < resample_probability:
            new[name] = distribution.sample(rng)
        else:
            factor = float(perturb[int(rng.integers(len(perturb)))])
            new[name] = _perturb_one(distribution, config[name], factor, rng)
    return new


def apply_hyperparameters(model, optimizer, config: Mapping[str, Any],
                          setters: Mapping[str, Callable] | None = None) -> None:
    """Put ``config`` into the live optimizer (module docstring); names neither the optimizer
    nor ``setters`` knows are left to ``step``."""
    setters = setters or {}
    for name, value in config.items():
        if name in setters:
            setters[name](model, optimizer, value)
        elif name == "lr":
            optimizer.lr = value
        elif name in getattr(optimizer, "defaults", {}):
            for group in optimizer.param_groups:
                group[name] = value


def copy_member(model, optimizer, source_model, source_optimizer) -> None:
    """PBT's exploit step: overwrite ``model``'s weights and buffers and ``optimizer``'s state
    (and hyperparameters) with copies of the source's, leaving no array shared."""
    model.load_state_dict({k: np.array(v, copy=True) for k, v in source_model.state_dict().items()})
    optimizer.load_state_dict(copy.deepcopy(source_optimizer.state_dict()))


class _PB2:
    """GP-UCB over (time, configuration) -> score change (module docstring)."""

    def __init__(self, space: Mapping[str, Any], total_steps: int, kappa: float, candidates: int):
        self.cube = UnitCube(space, "population_based_training")
        self.total_steps, self.kappa, self.candidates = total_steps, kappa, candidates
        self.points: list[np.ndarray] = []
        self.changes: list[float] = []
        self._model, self._fitted_on = None, 0  # one fit serves every exploit of a generation

    def record(self, step: int, config: Mapping[str, Any], change: float) -> None:
        if math.isfinite(change):
            self.points.append(np.concatenate([[step / self.total_steps], self.cube.encode(config)]))
            self.changes.append(change)

    def choose(self, step: int, config: dict, rng: np.random.Generator, perturb, resample_probability) -> dict:
        options = [sample_config(self.cube.space, rng) for _ in range(self.candidates // 2)]
        options += [explore_config(config, self.cube.space, rng, perturb, resample_probability)
                    for _ in range(self.candidates - len(options))]
        if len(self.changes) < 3 or np.ptp(self.changes) == 0:
            return options[int(rng.integers(len(options)))]
        if self._fitted_on != len(self.changes):
            self._model = gp_surrogate(np.array(self.points), np.array(self.changes))
            self._fitted_on = len(self.changes)
        time = np.full((len(options), 1), step / self.total_steps)
        points = np.hstack([time, np.array([self.cube.encode(c) for c in options])])
        mean, std = self._model.predict(points, return_std=True)
        return options[int(np.argmax(upper_confidence_bound(mean, std, self.kappa)))]


def _check_int(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"population_based_training: {name} must be an integer >= {least}, got {value!r}")


def population_based_training(build: Callable[[dict], tuple[Any, Any]], step: Callable[[Any, Any, dict], Any],
                              evaluate: Callable[[Any], float], space: Mapping[str, Any], population: int,
                              generations: int, ready_every: int, quantile: float = 0.25,
                              perturb: Sequence[float] = (0.8, 1.2), resample_probability: float = 0.25,
                              seed: int = 0, direction: str = "maximize", explore: str = "perturb",
                              setters: Mapping[str, Callable] | None = None, kappa: float = 2.0,
                              candidates: int = 64) -> PBTResult:
    """Train ``population`` members for ``generations`` rounds of ``ready_every`` steps,
    exploiting and exploring after every round but the last (module docstring). One
    ``numpy.random.Generator`` seeded with ``seed`` draws the initial configurations and every
    exploit and explore choice, so a seeded ``build`` makes the whole run repeatable."""
    check_space("population_based_training", space)
    _check_int("population", population, 2)
    _check_int("generations", generations, 1)
    _check_int("ready_every", ready_every, 1)
    if direction not in DIRECTIONS:
        raise ValueError(f"population_based_training: direction must be one of {DIRECTIONS}, got {direction!r}")
    if explore not in EXPLORERS:
        raise ValueError(f"population_based_training: explore must be one of {EXPLORERS}, got {explore!r}")
    if not 0 < quantile <= 0.5:
        raise ValueError(f"population_based_training: quantile must be in (0, 0.5], got {quantile!r}")
    if not 0 <= resample_probability <= 1:
        raise ValueError("population_based_training: resample_probability must be in [0, 1], "
                         f"got {resample_probability!r}")
    if len(perturb) == 0 or any(not f > 0 for f in perturb):
        raise ValueError(f"population_based_training: perturb must be positive factors, got {perturb!r}")
    rng = np.random.default_rng(seed)
    configs = [sample_config(space, rng) for _ in range(population)]
    members = [build(dict(c)) for c in configs]
    for (model, optimizer), config in zip(members, configs, strict=True):
        apply_hyperparameters(model, optimizer, config, setters)
    bandit = _PB2(space, generations * ready_every, kappa, candidates) if explore == "pb2" else None
    trials: list[Trial] = []
    exploits: list[Exploit] = []
    scores = np.array([float(evaluate(m)) for m, _ in members])
    trials += [Trial(len(trials) + i, dict(configs[i]), float(scores[i]), stage=0, config_id=i, resource=0)
               for i in range(population)]
    for generation in range(1, generations + 1):
        for i, (model, optimizer) in enumerate(members):
            for _ in range(ready_every):
                step(model, optimizer, dict(configs[i]))
        done = generation * ready_every
        previous, scores = scores, np.array([float(evaluate(m)) for m, _ in members])
        for i in range(population):
            trials.append(Trial(len(trials), dict(configs[i]), float(scores[i]), stage=generation, config_id=i,
                                resource=done))
            if bandit is not None:
                sign = 1.0 if direction == "maximize" else -1.0
                bandit.record(done - ready_every, configs[i], sign * (scores[i] - previous[i]))
        if generation == generations:
            break
        top, bottom = quantile_members(scores, quantile, direction)
        for i in bottom:
            source = top[int(rng.integers(len(top)))]
            copy_member(*members[i], *members[source])
            if bandit is None:
                new = explore_config(configs[source], space, rng, perturb, resample_probability)
            else:
                new = bandit.choose(done, configs[source], rng, perturb, resample_probability)
            apply_hyperparameters(*members[i], new, setters)
            exploits.append(Exploit(generation, done, i, source, dict(configs[i]), dict(new)))
            configs[i] = new
            scores[i] = scores[source]
    return PBTResult(trials, exploits, members, direction, [dict(space)])


def pbt_trainer(build: Callable[[dict], Any], data, val, space: Mapping[str, Any], population: int,
                generations: int, epochs_per_generation: int = 1, batch_size: int = 32,
                metric: str = "val_accuracy", seed: int = 0, direction: str | None = None,
                loss: Any = "categorical_cross_entropy", **options) -> PBTResult:
    """:func:`population_based_training` over :class:`Trainer` runs: ``build(config)`` returns a
    Trainer or ``(model, optimizer)`` (trained with ``loss``), a step is one epoch of ``data``,
    members are ready every ``epochs_per_generation`` epochs and are scored by ``metric`` on
    ``val`` (``val_`` names; ``direction`` as in :func:`lamina.train.search.tune_trainer`).
    ``lamina.manual_seed(seed + member)`` runs before each build. ``options`` go to
    :func:`population_based_training`; ``result.trainers`` holds the members' trainers."""
    import lamina
    from lamina.train.trainer import Trainer

    if val is None:
        raise ValueError("pbt_trainer: val is required; hyperparameters are tuned on validation data")
    if not metric.startswith("val_"):
        raise ValueError(f"pbt_trainer: metric must be a validation metric ('val_...'), got {metric!r}")
    if direction is None:
        direction = "minimize" if metric.endswith("loss") or "error" in metric else "maximize"
    trainers: dict[int, Trainer] = {}

    def build_member(config: dict) -> tuple[Any, Any]:
        lamina.manual_seed(seed + len(trainers))
        trainer = build(config)
        if isinstance(trainer, tuple) and len(trainer) == 2:
            trainer = Trainer(trainer[0], loss, trainer[1], verbose=0)
        if not isinstance(trainer, Trainer):
            raise TypeError(f"pbt_trainer: build(config) must return a Trainer or (model, optimizer), "
                            f"got {type(trainer).__name__}")
        trainers[id(trainer.model)] = trainer
        return trainer.model, trainer.optimizer

    def epoch(model, optimizer, config: dict) -> None:
        trainer = trainers[id(model)]
        done = len(trainer.history.epochs)
        trainer.fit(data, epochs=done + 1, batch_size=batch_size, seed=seed + done, initial_epoch=done)

    def score(model) -> float:
        logs = trainers[id(model)].evaluate(val, batch_size=max(batch_size, 256))
        name = metric[len("val_"):]
        if name not in logs:
            raise KeyError(f"pbt_trainer: metric {metric!r} is not among the validation logs {sorted(logs)}")
        return logs[name]

    result = population_based_training(build_member, epoch, score, space, population, generations,
                                       epochs_per_generation, seed=seed, direction=direction, **options)
    result.trainers = [trainers[id(model)] for model, _ in result.members]
    return result


def plot_pbt(result: PBTResult, path: str | os.PathLike, name: str | None = None) -> Path:
    """Save a PNG (atomically): every member's score over the steps, and the hyperparameter
    ``name`` (the first searched one by default) over the steps, exploits dotted, the best
    member's lineage in black. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamina.io.atomic import save_figure

    space = result.spaces[0] if result.spaces else {}
    searched = [k for k, v in space.items() if as_distribution(v) is not None]
    name = name if name is not None else (searched[0] if searched else next(iter(result.trials[0].config)))
    fig, (score_ax, hp_ax) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    members = sorted({t.config_id for t in result.trials})
    for member in members:
        own = sorted((t for t in result.trials if t.config_id == member), key=lambda t: t.stage)
        steps = [t.resource for t in own]
        score_ax.plot(steps, [t.score for t in own], color=f"C{member % 10}", alpha=0.6, linewidth=1)
        hp_ax.step(steps, [t.config[name] for t in own], where="pre", color=f"C{member % 10}", alpha=0.6)
    for e in result.exploits:
        source_score = [t.score for t in result.trials if t.stage == e.generation and t.config_id == e.source]
        score_ax.plot([e.step], source_score, "k.", markersize=4)
    best = result.schedule()
    hp_ax.step([s for s, _ in best] + [result.trials[-1].resource], [c[name] for _, c in best] + [best[-1][1][name]],
               where="post", color="black", linewidth=2, label=f"best member {result.best_member}")
    if isinstance(as_distribution(space.get(name)), LogUniform):
        hp_ax.set_yscale("log")
    score_ax.set(ylabel="score", title="population-based training")
    hp_ax.set(xlabel="step", ylabel=name)
    hp_ax.legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, path)
