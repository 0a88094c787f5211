"""``lamina train-rl`` run in-process at tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lamina
from lamina.cli import build_parser, main
from lamina.cli.rl import load_state, train_rl
from lamina.io import load_file, save_file


def rebuilt_dqn(state: dict):
    """The agent a resume starts from: built from the saved settings, then given the saved state."""
    settings = state["settings"]
    agent = lamina.rl.DQNAgent.from_preset(lamina.rl.make(state["env"]), settings["preset"], seed=settings["seed"],
                                           **settings["overrides"])
    agent.load_state_dict(state["agent"])
    return agent


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


def test_train_rl_saves_resumes_and_evaluates_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-rl", "--algo", "dqn", "--env", "Chain-v0", "--steps", "120", "--eval-episodes", "1",
            "--prioritized", "--out", str(out)]
    first = train_rl(build_parser().parse_args(args))
    for name in ("policy.safetensors", "returns.csv", "returns.json", "learning_curve.png", "state.safetensors"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.pkl"))
    saved = json.loads((out / "returns.json").read_text())
    assert saved["steps"] == 120 and len(saved["returns"]) == first["episodes"]
    assert (out / "returns.csv").read_text().splitlines()[0] == "episode,return"
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    state = load_state(out)
    assert state["algo"] == "dqn" and state["env"] == "Chain-v0" and state["steps"] == 120
    assert state["returns"] == saved["returns"]
    agent = rebuilt_dqn(state)
    assert agent.env_steps == 120 and agent.steps_done == 120 and agent.prioritized and len(agent.buffer) == 120
    assert agent.lr_decay_steps == 120 and agent.optimizer.lr == 0.0      # the zoo preset, scaled to the run
    assert agent.buffer.beta == 1.0 and agent.buffer.tree.total == 120.0     # every stored priority still 1
    params = [id(p) for p in agent.policy_net.parameters()]
    assert [id(p) for group in agent.optimizer.param_groups for p in group["params"]] == params
    policy = lamina.load_bundle(out / "policy.safetensors").model.state_dict()
    for name, value in agent.policy_net.state_dict().items():
        np.testing.assert_array_equal(value, policy[name])
    np.testing.assert_array_equal(agent.buffer.tree.nodes, state["agent"]["buffer"]["tree"])

    resumed = train_rl(build_parser().parse_args(args + ["--resume"]))
    state = load_state(out)
    agent = rebuilt_dqn(state)
    assert agent.env_steps == 240 and agent.steps_done == 240 and len(agent.buffer) == 240
    assert agent.lr_decay_steps == 240           # the decay stretched over both runs
    assert resumed["episodes"] > first["episodes"] and state["returns"][:first["episodes"]] == saved["returns"]
    assert lamina.load_bundle(out / "policy.safetensors").info["steps"] == 240

    capsys.readouterr()
    figures = train_rl(build_parser().parse_args(["train-rl", "--evaluate", str(out), "--eval-episodes", "2"]))
    printed = capsys.readouterr().out
    assert f"dqn policy from {out} on Chain-v0: greedy evaluation over 2 episodes" in printed
    greedy = lamina.rl.evaluate_policy(agent, lamina.rl.make("Chain-v0"), n_episodes=2, seed=1000)
    assert figures["eval_return"] == np.mean(greedy)


def test_train_rl_ppo_resumes_its_optimizer_state(tmp_path):
    out = tmp_path / "ppo"
    args = ["train-rl", "--algo", "ppo", "--env", "CartPole-v1", "--steps", "256", "--num-envs", "2",
            "--eval-episodes", "1", "--out", str(out)]
    train_rl(build_parser().parse_args(args))
    first = load_state(out)
    steps_taken = first["agent"]["optimizer"]["step_count"]
    assert steps_taken > 0 and first["settings"] == {"seed": 0}
    train_rl(build_parser().parse_args(args + ["--resume"]))
    state = load_state(out)
    assert state["steps"] == 512 and state["agent"]["optimizer"]["step_count"] == 2 * steps_taken
    assert not np.array_equal(state["agent"]["policy"]["actor.dense.weight"],
                              first["agent"]["policy"]["actor.dense.weight"])


def test_train_rl_resume_checks_what_the_state_file_holds(tmp_path):
    out = tmp_path / "run"
    train_rl(build_parser().parse_args(["train-rl", "--algo", "dqn", "--env", "Chain-v0", "--steps", "20",
                                        "--eval-episodes", "1", "--out", str(out)]))
    arrays, metadata = load_file(out / "state.safetensors")
    for change, message in [({"format": "lamina-checkpoint-1"}, "is not a saved train-rl run"),
                            ({"algo": "reinforce"}, "unknown algorithm 'reinforce'"),
                            ({"env": "Pong-v5"}, "trained on 'Pong-v5', which is not one of"),
                            ({"algo": "ppo"}, "says ppo but holds a 'dqn' agent")]:
        save_file(arrays, out / "state.safetensors", {**metadata, **change})
        with pytest.raises(SystemExit, match=message):
            main(["train-rl", "--resume", "--out", str(out), "--steps", "10"])


def test_train_rl_resume_and_evaluate_need_a_saved_run(tmp_path):
    with pytest.raises(SystemExit, match="--resume needs --out DIR"):
        main(["train-rl", "--resume"])
    with pytest.raises(SystemExit, match="--resume found no state.safetensors"):
        main(["train-rl", "--resume", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--evaluate found no policy.safetensors"):
        main(["train-rl", "--evaluate", str(tmp_path)])


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg"])
def test_train_rl_runs_saves_resumes_and_evaluates_the_off_policy_agents(tmp_path, capsys, algo):
    out = tmp_path / algo
    args = ["train-rl", "--algo", algo, "--env", "Pendulum-v1", "--eval-episodes", "1", "--out", str(out)]
    first = train_rl(build_parser().parse_args(args + ["--steps", "260"]))     # updates from step 256 on
    assert f"{algo} on Pendulum-v1: 260 steps" in capsys.readouterr().out and first["episodes"] == 1
    state = load_state(out)
    assert state["settings"] == {"seed": 0, "buffer_size": 260}
    cls = {"sac": lamina.rl.SAC, "td3": lamina.rl.TD3, "ddpg": lamina.rl.DDPG}[algo]
    agent = cls.for_env(lamina.rl.make("Pendulum-v1"), seed=0, buffer_size=260)
    agent.load_state_dict(state["agent"])
    assert agent.env_steps == 260 and agent.updates == 5 and len(agent.buffer) == 260
    train_rl(build_parser().parse_args(args + ["--steps", "5", "--resume"]))
    state = load_state(out)
    assert state["steps"] == 265 and state["agent"]["updates"] == 10 and len(state["returns"]) == 1
    agent.load_state_dict(state["agent"])
    figures = train_rl(build_parser().parse_args(["train-rl", "--evaluate", str(out), "--eval-episodes", "2"]))
    greedy = lamina.rl.evaluate_policy(agent, lamina.rl.make("Pendulum-v1"), n_episodes=2, seed=1000)
    assert figures["eval_return"] == pytest.approx(np.mean(greedy), rel=1e-4)


def test_train_rl_runs_and_resumes_a2c(tmp_path):
    out = tmp_path / "a2c"
    args = ["train-rl", "--algo", "a2c", "--env", "CartPole-v1", "--steps", "200", "--num-envs", "2",
            "--eval-episodes", "1", "--out", str(out)]
    train_rl(build_parser().parse_args(args))
    first = load_state(out)
    assert first["agent"]["algorithm"] == "a2c" and first["agent"]["optimizer"]["step_count"] == 20
    train_rl(build_parser().parse_args(args + ["--resume"]))
    assert load_state(out)["agent"]["optimizer"]["step_count"] == 40


def test_train_rl_refuses_the_off_policy_agents_on_discrete_actions():
    with pytest.raises(SystemExit, match=r"sac needs continuous actions; CartPole-v1 has Discrete\(2\)"):
        main(["train-rl", "--algo", "sac", "--env", "CartPole-v1", "--steps", "10"])
