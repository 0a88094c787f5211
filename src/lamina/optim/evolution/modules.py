"""Evolving a network's weights: its parameters as one flat vector searched by a strategy."""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina.nn import Module, parameters_to_vector, vector_to_parameters
from lamina.optim.evolution.base import EvolutionResult, EvolutionStrategy
from lamina.optim.evolution.cma_es import CMAES
from lamina.optim.evolution.nes import SNES, XNES
from lamina.optim.evolution.openai_es import OpenAIES
from lamina.optim.evolution.pgpe import PGPE

__all__ = ["STRATEGIES", "evolve_module", "module_vector", "make_strategy"]

STRATEGIES: dict[str, type[EvolutionStrategy]] = {
    "cma_es": CMAES, "openai_es": OpenAIES, "snes": SNES, "xnes": XNES, "pgpe": PGPE}


def make_strategy(name: str, x0, sigma: float, **options) -> EvolutionStrategy:
    """The strategy registered as ``name`` in :data:`STRATEGIES`, started at ``x0`` with step
    size ``sigma`` (CMA-ES's sigma0) and its other keyword ``options``."""
    if name not in STRATEGIES:
        raise KeyError(f"make_strategy: no strategy {name!r}; known: {sorted(STRATEGIES)}")
    if name == "cma_es":
        return CMAES(x0, sigma0=sigma, **options)
    return STRATEGIES[name](x0, sigma=sigma, **options)


def module_vector(module: Module) -> numpy.ndarray:
    """The module's parameters as one float64 NumPy vector (``parameters_to_vector``'s layout)."""
    return numpy.array(parameters_to_vector(module.parameters()).numpy(), dtype=numpy.float64)


def evolve_module(module: Module, fitness_fn: Callable[[Module], float],
                  strategy: EvolutionStrategy | str = "cma_es", generations: int = 100, sigma: float = 0.1,
                  target: float | None = None, **options) -> EvolutionResult:
    """Search ``module``'s weights with an evolution strategy, minimising ``fitness_fn(module)``
    (called with each candidate's weights loaded; negate a reward). ``strategy``: a strategy
    started at :func:`module_vector` (``module``'s own weights), or a name from
    :data:`STRATEGIES` built there with ``sigma`` and ``options``. Stops after ``generations``,
    when the strategy's ``stop()`` fires or when the best fitness reaches ``target``; the best
    weights found are loaded into ``module`` at the end."""
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, module_vector(module), sigma, **options)
    elif options:
        raise TypeError(f"evolve_module: options {sorted(options)} apply only when strategy is a name")
    parameters = list(module.parameters())
    size = sum(p.size for p in parameters)
    if strategy.dim != size:
        raise ValueError(f"evolve_module: the strategy searches {strategy.dim} values but the module has "
                         f"{size} parameters")

    def fitness(x: numpy.ndarray) -> float:
        vector_to_parameters(x, parameters)
        return float(fitness_fn(module))

    result = strategy.optimize(fitness, generations, target=target)
    vector_to_parameters(result.x, parameters)
    return result
