"""The environment loop shared by the value-based and off-policy agents (DQN, SAC, TD3, DDPG):
the agent acts, the environment steps, the agent observes the transition (and learns when
its schedule says so), episodes restart when they end.

An agent here has ``for_env(env, seed=..., **settings)``, ``act(obs)`` and
``observe(obs, action, reward, next_obs, terminated)``; an ``observe`` that also takes
``truncated`` (Rainbow's n-step buffer, R2D2's sequences) is given it.
"""

from __future__ import annotations

import inspect

from lamina.backend import manual_seed
from lamina.rl.env import Env

__all__ = ["as_env", "make_agent", "observes_truncation", "run_agent"]


def as_env(env) -> Env:
    """An environment, or the registered one of that name (:func:`lamina.rl.registry.make`)."""
    if isinstance(env, str):
        from lamina.rl.registry import make  # the registry builds on the agents' modules
        return make(env)
    return env


def make_agent(agent_class, env: Env, agent, seed: int | None, settings: dict, who: str):
    """``agent`` itself, or a new ``agent_class.for_env(env, seed=seed, **settings)`` (the
    global seed set first when ``seed`` is given); settings beside a ready agent are refused."""
    if agent is None:
        if seed is not None:
            manual_seed(seed)
        return agent_class.for_env(env, seed=seed, **settings)
    if settings:
        raise TypeError(f"{who}: agent settings {sorted(settings)} given with a ready agent")
    return agent


def observes_truncation(agent) -> bool:
    """Whether ``agent.observe`` takes a ``truncated`` argument."""
    parameters = inspect.signature(agent.observe).parameters
    return "truncated" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def run_agent(env: Env, agent, total_steps: int, seed: int | None = None,
              max_episodes: int | None = None) -> list[float]:
    """``total_steps`` environment steps of ``agent`` (fewer when ``max_episodes`` episodes end
    first), the environment reset with ``seed`` at the start. Truncated episodes still
    bootstrap from their last state in ``observe``; terminated ones do not. An agent whose
    ``observe`` takes ``truncated`` is told of truncations too. Returns the return of every
    finished episode."""
    tell_truncation = observes_truncation(agent)
    returns: list[float] = []
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    for _ in range(total_steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        if tell_truncation:
            agent.observe(obs, action, reward, next_obs, terminated, truncated=truncated)
        else:
            agent.observe(obs, action, reward, next_obs, terminated)
        episode_return += reward
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            if max_episodes is not None and len(returns) >= max_episodes:
                break
            obs, _ = env.reset()
            episode_return = 0.0
    return returns
