"""What DQN and PPO reach on CartPole-v1 (truncated at 500 steps) after a fixed number of
environment steps: the mean return of the last 20 training episodes, the mean return of 10
greedy evaluation episodes, and the wall time.

``dqn`` uses the settings of PyTorch's DQN tutorial (two hidden layers of 128, batch 128, AdamW
lr 3e-4 with amsgrad, tau 0.005, epsilon 0.9 -> 0.01 over ~2500 steps, one update per step);
``dqn-zoo`` the ``"zoo"`` preset (RL Baselines3 Zoo's tuned CartPole-v1 DQN settings with Double
DQN, prioritized replay and a decaying learning rate, see lamina.rl.dqn) for 50,000 steps;
``dqn-zoo-uniform`` the same with uniform replay.
PPO uses 4 copies of the environment, 128 steps each per rollout, 4 epochs of minibatches of 64,
lr 3e-4 and GAE(0.95).

    python benchmarks/rl_cartpole.py [--algo dqn,dqn-zoo,ppo] [--dqn-steps 20000] [--zoo-steps 50000]
                                     [--ppo-steps 100000] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lamina
from lamina.rl import PRESET_STEPS, DQNAgent, evaluate_policy, make, train_dqn, train_ppo
from lamina.rl.ppo import PPO, ActorCritic


def run_dqn(steps: int, seed: int) -> tuple[list[float], np.ndarray]:
    env = make("CartPole-v1")
    agent = DQNAgent.for_env(env, seed=seed)
    returns = train_dqn(env, total_steps=steps, agent=agent, seed=seed)
    return returns, evaluate_policy(agent, make("CartPole-v1"), n_episodes=10, seed=seed + 1000)


def run_dqn_zoo(steps: int, seed: int, prioritized: bool = True) -> tuple[list[float], np.ndarray]:
    env = make("CartPole-v1")
    agent = DQNAgent.from_preset(env, "zoo", seed=seed, prioritized=prioritized, beta_steps=steps,
                                 lr_decay_steps=steps)
    returns = train_dqn(env, total_steps=steps, agent=agent, seed=seed)
    return returns, evaluate_policy(agent, make("CartPole-v1"), n_episodes=10, seed=seed + 1000)


def run_ppo(steps: int, seed: int) -> tuple[list[float], np.ndarray]:
    env = make("CartPole-v1")
    ppo = PPO(ActorCritic(4, env.action_space), seed=seed)
    returns = train_ppo("CartPole-v1", total_steps=steps, num_envs=4, ppo=ppo, seed=seed)
    return returns, evaluate_policy(ppo, env, n_episodes=10, seed=seed + 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="dqn,dqn-zoo,ppo", help="any of dqn, dqn-zoo, dqn-zoo-uniform, ppo")
    parser.add_argument("--dqn-steps", type=int, default=PRESET_STEPS["tutorial"])
    parser.add_argument("--zoo-steps", type=int, default=PRESET_STEPS["zoo"])
    parser.add_argument("--ppo-steps", type=int, default=100000)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    args = parser.parse_args()
    runs = {"dqn": (run_dqn, args.dqn_steps), "dqn-zoo": (run_dqn_zoo, args.zoo_steps),
            "dqn-zoo-uniform": (lambda steps, seed: run_dqn_zoo(steps, seed, prioritized=False), args.zoo_steps),
            "ppo": (run_ppo, args.ppo_steps)}
    for algo in args.algo.split(","):
        run, steps = runs[algo]
        for seed in (int(s) for s in args.seeds.split(",")):
            lamina.manual_seed(seed)
            start = time.perf_counter()
            returns, greedy = run(steps, seed)
            seconds = time.perf_counter() - start
            print(f"{algo:11s} seed {seed}  CartPole-v1  {steps} steps  {len(returns)} episodes  "
                  f"last-20 mean return {np.mean(returns[-20:]):6.1f}  greedy eval {greedy.mean():6.1f} "
                  f"+- {greedy.std():5.1f}  {seconds:6.1f} s ({steps / seconds:.0f} steps/s)", flush=True)


if __name__ == "__main__":
    main()
