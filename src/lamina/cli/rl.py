"""``lamina train-rl``: train DQN, PPO, A2C, TRPO, SAC, TD3 or DDPG on one of :mod:`lamina.rl`'s
environments and report the returns it reaches; with ``--out DIR`` also save the run, continue it
with ``--resume``, and score a saved policy with ``--evaluate DIR``.

A run directory holds ``policy.safetensors`` (the greedy policy's network, :func:`lamina.save`:
DQN's Q-network, PPO's, A2C's or TRPO's actor, or for SAC, TD3 and DDPG the deterministic policy rescaled
to the action bounds, :meth:`OffPolicyAgent.greedy_network`), ``returns.csv`` and ``returns.json``
(the return of every finished episode), ``learning_curve.png`` and ``state.safetensors``, the
whole agent for ``--resume`` (its ``state_dict()``: arrays as tensors, the rest as JSON metadata,
with the settings that rebuild it): networks, optimizer state, random generators, and for DQN,
SAC, TD3 and DDPG the target networks and the replay buffer (DQN's with its priorities and the
exploration and learning schedules' step counts; SAC's with its entropy temperature). A resumed
run restarts its environments from a reset (an episode cut by the save is not counted); a DQN
learning rate that decays to 0 over the run has its decay stretched over the new total.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy

from lamina.backend import manual_seed
from lamina.cli.common import positive_int
from lamina.io import load_file, save_file
from lamina.io.atomic import write_bytes_atomic
from lamina.io.state import flatten_state, unflatten_state
from lamina.rl import (
    A2C,
    DDPG,
    DQN_PRESETS,
    ENVIRONMENTS,
    PPO,
    PRESET_STEPS,
    SAC,
    TD3,
    ActorCritic,
    Discrete,
    DQNAgent,
    GreedyPolicy,
    OffPolicyAgent,
    TRPOAgent,
    evaluate_policy,
    make,
    train_a2c,
    train_dqn,
    train_ppo,
    train_trpo,
)
from lamina.rl.off_policy import train_off_policy

POLICY_FILE, STATE_FILE = "policy.safetensors", "state.safetensors"
STATE_FORMAT = "lamina-rl-run-1"
OFF_POLICY = {"sac": SAC, "td3": TD3, "ddpg": DDPG}
ON_POLICY = {"ppo": (PPO, train_ppo), "a2c": (A2C, train_a2c), "trpo": (TRPOAgent, train_trpo)}
ALGORITHMS = ("dqn", *ON_POLICY, *OFF_POLICY)
OFF_POLICY_STEPS = 20000
"""Default steps of SAC, TD3 and DDPG (RL Baselines3 Zoo's budget for Pendulum-v1)."""


def add_commands(sub) -> None:
    """The ``train-rl`` parser, added to the subparsers ``sub``."""
    p = sub.add_parser("train-rl", help="train a reinforcement-learning agent (DQN, PPO, A2C, TRPO, SAC, TD3, DDPG)",
                       description="Train DQN (discrete actions), PPO, A2C, TRPO, or SAC, TD3 or DDPG (continuous "
                                   "actions) on an environment, then print the mean return of the last 20 training "
                                   "episodes and of greedy evaluation episodes.")
    p.add_argument("--algo", choices=ALGORITHMS, default="dqn", help="algorithm (default dqn)")
    p.add_argument("--env", choices=sorted(ENVIRONMENTS), default="CartPole-v1", help="environment (default "
                   "CartPole-v1)")
    p.add_argument("--preset", choices=sorted(DQN_PRESETS), default="zoo",
                   help="DQN settings: zoo (RL Baselines3 Zoo's tuned CartPole-v1 settings with Double DQN, the "
                        "default) or tutorial (PyTorch's DQN tutorial)")
    p.add_argument("--prioritized", action=argparse.BooleanOptionalAction, default=None,
                   help="DQN with (or without) prioritized experience replay (default: as the preset says)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="environment steps (default 50000 for dqn zoo, 20000 for dqn tutorial, 100000 for ppo, "
                        "a2c and trpo, 20000 for sac, td3 and ddpg); with --resume, the steps to add")
    p.add_argument("--num-envs", type=positive_int, default=4,
                   help="PPO's, A2C's and TRPO's copies of the environment (default 4)")
    p.add_argument("--eval-episodes", type=positive_int, default=10, help="greedy evaluation episodes (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory to save the policy, the returns, a learning curve and the resumable state")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (its algorithm, environment and settings)")
    p.add_argument("--evaluate", type=Path, default=None, metavar="DIR",
                   help="only run greedy episodes of the policy saved in DIR and print the mean return")


def train_rl(args: argparse.Namespace) -> dict[str, float]:
    """Run ``lamina train-rl``; returns the figures it prints."""
    if args.evaluate is not None:
        return evaluate_saved(args.evaluate, args.eval_episodes, args.seed)
    if args.resume and args.out is None:
        raise SystemExit("lamina train-rl: --resume needs --out DIR (the run to continue)")
    manual_seed(args.seed)
    if args.resume:
        state = load_state(args.out)
        algo, env_name, returns, steps_before = state["algo"], state["env"], state["returns"], state["steps"]
        settings = state["settings"]
    else:
        algo, env_name, returns, steps_before, settings = args.algo, args.env, [], 0, None
    env = make(env_name)
    if algo == "dqn" and not isinstance(env.action_space, Discrete):
        raise SystemExit(f"lamina train-rl: dqn needs discrete actions; {env_name} has {env.action_space} "
                         "(use --algo ppo, a2c, trpo, sac, td3 or ddpg)")
    if algo in OFF_POLICY and isinstance(env.action_space, Discrete):
        raise SystemExit(f"lamina train-rl: {algo} needs continuous actions; {env_name} has {env.action_space} "
                         "(use --algo dqn, ppo, a2c or trpo)")
    start = time.perf_counter()
    if algo == "dqn":
        if settings is None:
            steps = args.steps or PRESET_STEPS[args.preset]
            overrides = {"beta_steps": steps}
            if DQN_PRESETS[args.preset].get("lr_decay_steps"):
                overrides["lr_decay_steps"] = steps
            if args.prioritized is not None:
                overrides["prioritized"] = args.prioritized
            settings = {"preset": args.preset, "seed": args.seed, "overrides": overrides}
        else:
            steps = args.steps or PRESET_STEPS[settings["preset"]]
        agent = DQNAgent.from_preset(env, settings["preset"], seed=settings["seed"], **settings["overrides"])
        if args.resume:
            agent.load_state_dict(state["agent"])
            if agent.lr_decay_steps:
                agent.lr_decay_steps = steps_before + steps     # stretched over the new total, else it stays at 0
        new_returns = train_dqn(env, total_steps=steps, agent=agent, seed=args.seed + steps_before)
    elif algo in OFF_POLICY:
        steps = args.steps or OFF_POLICY_STEPS
        settings = settings or {"seed": args.seed, "buffer_size": min(1_000_000, steps)}
        agent = OFF_POLICY[algo].for_env(env, seed=settings["seed"], buffer_size=settings["buffer_size"])
        if args.resume:
            agent.load_state_dict(state["agent"])
        new_returns = train_off_policy(OFF_POLICY[algo], env, steps, agent, args.seed + steps_before)
    else:
        steps = args.steps or 100000
        settings = settings or {"seed": args.seed}
        policy = ActorCritic(env.observation_space.shape[0], env.action_space)
        agent_class, train = ON_POLICY[algo]
        agent = agent_class(policy, seed=settings["seed"])
        if args.resume:
            agent.load_state_dict(state["agent"])
        new_returns = train(env_name, total_steps=steps, num_envs=args.num_envs, seed=args.seed + steps_before,
                            **{algo: agent})
    seconds = time.perf_counter() - start
    returns = returns + new_returns
    greedy = evaluate_policy(agent, make(env_name), n_episodes=args.eval_episodes, seed=args.seed + 1000)
    figures = {"episodes": len(returns), "last20_return": float(numpy.mean(returns[-20:])) if returns else float("nan"),
               "eval_return": float(greedy.mean()), "seconds": seconds}
    resumed = f" (resumed after {steps_before})" if args.resume else ""
    print(f"{algo} on {env_name}: {steps} steps{resumed}, {figures['episodes']} episodes in {seconds:.1f} s; "
          f"mean return of the last 20: {figures['last20_return']:.1f}; greedy evaluation over "
          f"{args.eval_episodes} episodes: {figures['eval_return']:.1f} +- {greedy.std():.1f}")
    if args.out is not None:
        save_run(args.out, algo, env_name, agent, returns, steps_before + steps, settings)
        print(f"saved {args.out / POLICY_FILE}, returns.csv, returns.json, learning_curve.png and {STATE_FILE}")
    return figures


def _policy_network(agent):
    if isinstance(agent, DQNAgent):
        return agent.policy_net
    if isinstance(agent, OffPolicyAgent):
        return agent.greedy_network()
    return agent.policy.actor


def save_run(out: Path, algo: str, env_name: str, agent, returns: list[float], steps: int,
             settings: dict) -> None:
    """Write the run directory described in the module docstring (every file atomically);
    ``settings`` are what rebuilds the agent before its state is loaded."""
    import lamina

    out.mkdir(parents=True, exist_ok=True)
    lamina.save(_policy_network(agent), out / POLICY_FILE, info={"algo": algo, "env": env_name, "steps": steps})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["episode", "return"])
    writer.writerows((i + 1, value) for i, value in enumerate(returns))
    write_bytes_atomic(out / "returns.csv", text.getvalue().encode())
    write_bytes_atomic(out / "returns.json", json.dumps({"algo": algo, "env": env_name, "steps": steps,
                                                         "returns": [float(r) for r in returns]}).encode())
    plot_learning_curve(returns, out / "learning_curve.png", f"{algo} on {env_name}, {steps} steps")
    tree, arrays = flatten_state(agent.state_dict(), "agent")
    metadata = {"format": STATE_FORMAT, "algo": algo, "env": env_name, "steps": str(steps),
                "returns": json.dumps([float(r) for r in returns]), "settings": json.dumps(settings),
                "agent": json.dumps(tree)}
    save_file(arrays, out / STATE_FILE, metadata)


def load_state(out: Path) -> dict:
    """The resumable state saved in ``out`` by :func:`save_run`: algo, env, steps, returns,
    settings and the agent's state dict."""
    path = out / STATE_FILE
    if not path.is_file():
        raise SystemExit(f"lamina train-rl: --resume found no {STATE_FILE} in {out} (train with --out first)")
    arrays, metadata = load_file(path)
    if metadata.get("format") != STATE_FORMAT:
        raise SystemExit(f"lamina train-rl: {path} is not a saved train-rl run (format {metadata.get('format')!r}, "
                         f"expected {STATE_FORMAT!r})")
    algo, env_name = metadata.get("algo"), metadata.get("env")
    if algo not in ALGORITHMS:
        raise SystemExit(f"lamina train-rl: {path} holds an agent of unknown algorithm {algo!r} (expected one of "
                         f"{', '.join(ALGORITHMS)})")
    if env_name not in ENVIRONMENTS:
        raise SystemExit(f"lamina train-rl: {path} was trained on {env_name!r}, which is not one of "
                         f"{sorted(ENVIRONMENTS)}")
    agent = unflatten_state(json.loads(metadata["agent"]), arrays)
    if agent.get("algorithm") != algo:
        raise SystemExit(f"lamina train-rl: {path} says {algo} but holds a {agent.get('algorithm')!r} agent")
    return {"algo": algo, "env": env_name, "steps": int(metadata["steps"]), "returns": json.loads(metadata["returns"]),
            "settings": json.loads(metadata["settings"]), "agent": agent}


def plot_learning_curve(returns: list[float], path: Path, title: str, window: int = 20) -> Path:
    """Episode returns and their moving mean over ``window`` episodes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamina.io.atomic import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    episodes = numpy.arange(1, len(returns) + 1)
    ax.plot(episodes, returns, color="0.7", linewidth=0.8, label="return")
    if len(returns) >= window:
        moving = numpy.convolve(returns, numpy.ones(window) / window, mode="valid")
        ax.plot(episodes[window - 1:], moving, color="C0", label=f"mean of the last {window}")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def evaluate_saved(directory: Path, n_episodes: int, seed: int) -> dict[str, float]:
    """``--evaluate DIR``: greedy episodes of the policy saved in DIR; prints and returns the mean."""
    import lamina

    path = directory / POLICY_FILE
    if not path.is_file():
        raise SystemExit(f"lamina train-rl: --evaluate found no {POLICY_FILE} in {directory}")
    bundle = lamina.load_bundle(path)
    env_name = bundle.info["env"]
    env = make(env_name)
    returns = evaluate_policy(GreedyPolicy(bundle.model, env.action_space), env, n_episodes=n_episodes,
                              seed=seed + 1000)
    print(f"{bundle.info['algo']} policy from {directory} on {env_name}: greedy evaluation over {n_episodes} "
          f"episodes: {returns.mean():.1f} +- {returns.std():.1f}")
    return {"episodes": n_episodes, "eval_return": float(returns.mean())}
