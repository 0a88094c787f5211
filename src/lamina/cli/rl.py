"""``lamina train-rl``: train DQN or PPO on one of :mod:`lamina.rl`'s environments and report
the returns it reaches."""

from __future__ import annotations

import argparse
import time

import numpy

from lamina.backend import manual_seed
from lamina.cli.common import positive_int
from lamina.rl import ENVIRONMENTS, PPO, ActorCritic, Discrete, DQNAgent, evaluate_policy, make, train_dqn, train_ppo


def add_commands(sub) -> None:
    """The ``train-rl`` parser, added to the subparsers ``sub``."""
    p = sub.add_parser("train-rl", help="train a reinforcement-learning agent (DQN or PPO)",
                       description="Train DQN (discrete actions) or PPO on an environment, then print the mean "
                                   "return of the last 20 training episodes and of greedy evaluation episodes.")
    p.add_argument("--algo", choices=("dqn", "ppo"), default="dqn", help="algorithm (default dqn)")
    p.add_argument("--env", choices=sorted(ENVIRONMENTS), default="CartPole-v1", help="environment (default "
                   "CartPole-v1)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="environment steps (default 20000 for dqn, 100000 for ppo)")
    p.add_argument("--num-envs", type=positive_int, default=4, help="PPO's copies of the environment (default 4)")
    p.add_argument("--eval-episodes", type=positive_int, default=10, help="greedy evaluation episodes (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def train_rl(args: argparse.Namespace) -> dict[str, float]:
    """Run ``lamina train-rl``; returns the figures it prints."""
    manual_seed(args.seed)
    env = make(args.env)
    start = time.perf_counter()
    if args.algo == "dqn":
        if not isinstance(env.action_space, Discrete):
            raise SystemExit(f"lamina train-rl: dqn needs discrete actions; {args.env} has {env.action_space} "
                             "(use --algo ppo)")
        steps = args.steps or 20000
        agent = DQNAgent.for_env(env, seed=args.seed)
        returns = train_dqn(env, total_steps=steps, agent=agent, seed=args.seed)
    else:
        steps = args.steps or 100000
        agent = PPO(ActorCritic(env.observation_space.shape[0], env.action_space), seed=args.seed)
        returns = train_ppo(args.env, total_steps=steps, num_envs=args.num_envs, ppo=agent, seed=args.seed)
    seconds = time.perf_counter() - start
    greedy = evaluate_policy(agent, make(args.env), n_episodes=args.eval_episodes, seed=args.seed + 1000)
    figures = {"episodes": len(returns), "last20_return": float(numpy.mean(returns[-20:])) if returns else float("nan"),
               "eval_return": float(greedy.mean()), "seconds": seconds}
    print(f"{args.algo} on {args.env}: {steps} steps, {figures['episodes']} episodes in {seconds:.1f} s; "
          f"mean return of the last 20: {figures['last20_return']:.1f}; greedy evaluation over "
          f"{args.eval_episodes} episodes: {figures['eval_return']:.1f} +- {greedy.std():.1f}")
    return figures
