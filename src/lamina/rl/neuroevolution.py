"""Neuroevolution: a policy network's weights searched by an evolution strategy, scored by
the return of whole episodes (Salimans et al. 2017; Such et al. 2017)."""

from __future__ import annotations

from lamina.nn import Module
from lamina.optim.evolution import EvolutionResult, EvolutionStrategy, evolve_module
from lamina.rl.env import Env
from lamina.rl.evaluation import GreedyPolicy, evaluate_policy

__all__ = ["episode_return", "evolve_policy"]


def episode_return(policy: Module, env: Env, n_episodes: int = 1, seed: int | None = None) -> float:
    """The mean return over ``n_episodes`` episodes of ``policy`` acting greedily in ``env``
    (argmax of its outputs for a Discrete action space, its outputs clipped to the bounds for
    a Box); episode i is reset with ``seed + i`` when ``seed`` is given."""
    return float(evaluate_policy(GreedyPolicy(policy, env.action_space), env, n_episodes, seed=seed).mean())


def evolve_policy(policy: Module, env: Env, strategy: EvolutionStrategy | str = "cma_es", generations: int = 50,
                  n_episodes: int = 1, seed: int | None = 0, target_return: float | None = None,
                  sigma: float = 0.1, **options) -> EvolutionResult:
    """Evolve ``policy``'s weights to maximise :func:`episode_return` in ``env`` (every
    candidate meets the same episode seeds when ``seed`` is given), stopping early once the best
    return reaches ``target_return``. The best weights end up in ``policy``; the result's ``f``
    is minus the best mean return (strategies minimise)."""
    if n_episodes < 1:
        raise ValueError(f"evolve_policy: n_episodes must be >= 1, got {n_episodes}")

    def negative_return(module: Module) -> float:
        return -episode_return(module, env, n_episodes, seed)

    target = None if target_return is None else -target_return
    return evolve_module(policy, negative_return, strategy, generations, sigma=sigma, target=target, **options)
