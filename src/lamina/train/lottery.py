"""Lottery tickets by iterative magnitude pruning (Frankle & Carbin 2019), with weight
rewinding (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

    train the dense network from theta_0 (saving theta_k after k steps for rewinding)
    repeat for each round:
        prune the fraction ``rate`` of the weights still kept, of smallest |w| (over all the
        pruned layers together, ``scope='global'``, or per layer, ``scope='layer'``)
        reset the kept weights (and every other parameter and buffer) to theta_0 or theta_k
        train again with the mask fixed

The masks are those of :mod:`lamina.nn.prune`, so each round's mask is the previous one with
more zeros (the masks nest), and after n rounds a fraction 1 - (1 - rate)^n of the pruned
weights is zero (up to the rounding of each round's count). The control of the hypothesis
(``random_reinit=True``) trains, each round, a freshly initialised network (another call of
``model_fn``) under the same mask: a winning ticket learns better than this random
reinitialisation of the same sparse architecture.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lamina import backend
from lamina.autograd import no_grad
from lamina.nn import prune
from lamina.nn.module import Module

__all__ = ["LotteryResult", "LotteryRound", "iterative_magnitude_pruning"]

WHO = "iterative_magnitude_pruning"


@dataclass(frozen=True)
class LotteryRound:
    """One round: 0 is the dense network. ``masks`` maps '<module path>.<name>' to the boolean
    mask of kept weights; ``sparsity`` is the fraction pruned among the pruned parameters;
    ``score`` what ``train_fn`` returned; ``random_reinit_score`` the control's (or None)."""

    index: int
    sparsity: float
    score: float
    masks: dict[str, np.ndarray]
    random_reinit_score: float | None = None


@dataclass
class LotteryResult:
    """The rounds of :func:`iterative_magnitude_pruning` and the final (pruned, trained) model."""

    rounds: list[LotteryRound] = field(default_factory=list)
    model: Module | None = None

    @property
    def sparsities(self) -> list[float]:
        return [r.sparsity for r in self.rounds]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.rounds]

    @property
    def masks(self) -> list[dict[str, np.ndarray]]:
        return [r.masks for r in self.rounds]

    def __str__(self) -> str:
        lines = ["round  sparsity   score  random reinit"]
        for r in self.rounds:
            control = "" if r.random_reinit_score is None else f"{r.random_reinit_score:.4f}"
            lines.append(f"{r.index:>5}  {r.sparsity:>8.1%}  {r.score:.4f}  {control}")
        return "\n".join(lines)


def _default_targets(model: Module) -> list[tuple[str, str]]:
    """Every 'weight' parameter of two or more axes (Dense and convolution kernels)."""
    found = []
    for path, module in model.named_modules():
        param = module._parameters.get("weight")
        if param is not None and param.data.ndim >= 2:
            found.append((path, "weight"))
    return found


def _resolve(model: Module, targets: list[tuple[str, str]]) -> list[tuple[Module, str]]:
    modules = dict(model.named_modules())
    resolved = []
    for path, name in targets:
        if path not in modules:
            raise ValueError(f"{WHO}: no module {path!r} in the model; its modules: {sorted(modules)}")
        resolved.append((modules[path], name))
    return resolved


class _Snapshot:
    """Every parameter's and buffer's values, to write back into the same objects later (a
    pruned parameter keeps its object under the name ``<name>_orig``)."""

    def __init__(self, model: Module):
        self.parameters = [(p, backend.xp.array(p.data, copy=True)) for p in model.parameters()]
        self.buffers = [(module, name, backend.xp.array(value, copy=True))
                        for module in model.modules() for name, value in module._buffers.items()
                        if value is not None and not name.endswith("_mask")]

    def restore(self) -> None:
        for param, values in self.parameters:
            param.data = backend.xp.array(values, copy=True)
            param.grad = None
        for module, name, values in self.buffers:
            module._buffers[name] = backend.xp.array(values, copy=True)


def _masks(targets: list[tuple[Module, str]], names: list[str]) -> dict[str, np.ndarray]:
    return {key: backend.to_numpy(module._buffers[name + "_mask"]) != 0
            for key, (module, name) in zip(names, targets)}


def iterative_magnitude_pruning(model_fn: Callable[[], Module], train_fn: Callable[[Module, Callable[[], None]], float],
                                rounds: int, rate: float = 0.2, rewind_to: str | int = "init",
                                scope: str = "global", parameters: list[tuple[str, str]] | None = None,
                                random_reinit: bool = False) -> LotteryResult:
    """Find a lottery ticket by ``rounds`` rounds of pruning ``rate`` of the remaining weights
    (module docstring).

    ``model_fn()`` returns a new built model with a fresh random initialisation.
    ``train_fn(model, on_step)`` trains the model in place (making its own optimizer) and
    returns its score (validation accuracy); it calls ``on_step()`` after each optimizer step,
    which rewinding to an iteration needs. ``rewind_to``: 'init' (theta_0, Frankle & Carbin)
    or an iteration k (theta_k of the dense run, Frankle et al. 2020). ``scope``: 'global'
    (one magnitude threshold over all the pruned parameters) or 'layer' (the same fraction
    of each). ``parameters``: (module path, parameter name) pairs to prune, default every
    'weight' of two or more axes. ``random_reinit``: also train the random-reinitialisation
    control each round. Returns a :class:`LotteryResult`: round 0 is the dense network."""
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
        raise ValueError(f"{WHO}: rounds must be an int >= 0, got {rounds!r}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 < rate < 1.0:
        raise ValueError(f"{WHO}: rate (the fraction of the remaining weights pruned each round) must be in "
                         f"(0, 1), got {rate!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"{WHO}: scope must be 'global' or 'layer', got {scope!r}")
    if rewind_to != "init" and (isinstance(rewind_to, bool) or not isinstance(rewind_to, numbers.Integral)
                                or rewind_to < 0):
        raise ValueError(f"{WHO}: rewind_to must be 'init' or an iteration >= 0, got {rewind_to!r}")
    rewind_step = 0 if rewind_to == "init" else int(rewind_to)

    model = _fresh(model_fn)
    names = parameters if parameters is not None else _default_targets(model)
    if not names:
        raise ValueError(f"{WHO}: the model has no parameter to prune")
    targets = _resolve(model, list(names))
    keys = [f"{path}.{name}" if path else name for path, name in names]

    state = {"steps": 0, "snapshot": _Snapshot(model) if rewind_step == 0 else None}

    def on_step() -> None:
        state["steps"] += 1
        if state["snapshot"] is None and state["steps"] == rewind_step:
            state["snapshot"] = _Snapshot(model)

    result = LotteryResult()
    score = float(train_fn(model, on_step))
    if state["snapshot"] is None:
        raise ValueError(f"{WHO}: rewind_to={rewind_step} but the dense training took only {state['steps']} steps "
                         "(train_fn must call on_step() after each optimizer step)")
    dense_masks = {key: np.ones(module._parameters[name].data.shape, dtype=bool)
                   for key, (module, name) in zip(keys, targets)}
    result.rounds.append(LotteryRound(0, 0.0, score, dense_masks))

    for index in range(1, rounds + 1):
        if scope == "global":
            prune.global_unstructured(targets, float(rate))
        else:
            for module, name in targets:
                prune.l1_unstructured(module, name, float(rate))
        state["snapshot"].restore()
        prune.apply_masks(model)
        masks = _masks(targets, keys)
        score = float(train_fn(model, lambda: None))
        control = _train_control(model_fn, train_fn, names, masks) if random_reinit else None
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        result.rounds.append(LotteryRound(index, 1.0 - kept / total, score, masks, control))
    result.model = model
    return result


def _fresh(model_fn: Callable[[], Module]) -> Module:
    model = model_fn()
    if not isinstance(model, Module):
        raise ValueError(f"{WHO}: model_fn must return a lamina Module, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{WHO}: model_fn must return a built model (call build(input_shape) in it)")
    return model


def _train_control(model_fn, train_fn, names, masks: dict[str, np.ndarray]) -> float:
    control = _fresh(model_fn)
    for (module, name), mask in zip(_resolve(control, list(names)), masks.values()):
        prune.custom_from_mask(module, name, mask)
    with no_grad():
        prune.apply_masks(control)
    return float(train_fn(control, lambda: None))
