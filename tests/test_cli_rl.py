"""``lamina train-rl`` run in-process at tiny sizes."""

from __future__ import annotations

import pytest

from lamina.cli import build_parser, main
from lamina.cli.rl import train_rl


def test_train_rl_runs_dqn_and_ppo_and_prints_the_figures(capsys):
    figures = train_rl(build_parser().parse_args(["train-rl", "--algo", "dqn", "--env", "Chain-v0", "--steps", "150",
                                                  "--eval-episodes", "1"]))
    assert figures["episodes"] >= 1 and figures["eval_return"] <= 1.0
    assert main(["train-rl", "--algo", "ppo", "--env", "MountainCar-v0", "--steps", "512", "--num-envs", "2",
                 "--eval-episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "dqn on Chain-v0: 150 steps" in out and "ppo on MountainCar-v0: 512 steps" in out
    assert "greedy evaluation over 1 episodes: -200.0" in out


def test_train_rl_refuses_dqn_on_continuous_actions():
    with pytest.raises(SystemExit, match="dqn needs discrete actions; Pendulum-v1"):
        main(["train-rl", "--algo", "dqn", "--env", "Pendulum-v1", "--steps", "10"])
