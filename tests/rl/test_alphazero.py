"""AlphaZero: the loss and the policy-value network against PyTorch, the network evaluator,
self-play examples, seeding, and learning tic-tac-toe well enough to never lose to a random
player and to hold UCT to draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from game_solver import board

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.rl import (
    MCTS,
    AlphaZero,
    ConnectFour,
    MCTSPlayer,
    NetworkEvaluator,
    PolicyValueNet,
    RandomPlayer,
    TicTacToe,
    alphazero_loss,
    play_match,
    train_alphazero,
)


def loss_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    logits, values = rng.standard_normal((6, 5)), np.tanh(rng.standard_normal(6))
    weight, bias = rng.standard_normal((4, 3)), rng.standard_normal(3)
    target_policy = rng.dirichlet(np.ones(5), size=6)
    target_policy[0] = [0, 0, 1, 0, 0]
    target_value = rng.choice([-1.0, 0.0, 1.0], size=6)
    return (logits, values, weight, bias), target_policy, target_value


def torch_alphazero_loss(logits, values, target_policy, target_value, parameters, l2):
    target_policy = torch.tensor(target_policy, dtype=logits.dtype)
    target_value = torch.tensor(target_value, dtype=values.dtype)
    cross_entropy = -(target_policy * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    return (torch.nn.functional.mse_loss(values, target_value) + cross_entropy
            + l2 * sum((p ** 2).sum() for p in parameters))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_matches_torch(dtype):
    arrays, pi, z = loss_case()

    def ours(logits, values, weight, bias):
        return alphazero_loss(logits, values, pi, z, [weight, bias], l2=0.1)[0]

    def theirs(logits, values, weight, bias):
        return torch_alphazero_loss(logits, values, pi, z, [weight, bias], 0.1)

    compare_with_torch(ours, theirs, *arrays, dtype=dtype)
    assert check_gradients(ours, *arrays)


def test_loss_parts():
    (logits, values, *_), pi, z = loss_case(1)
    total, parts = alphazero_loss(lamina.tensor(logits), lamina.tensor(values), pi, z)
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert parts["value_loss"] == pytest.approx(np.mean((z - values) ** 2), rel=1e-5)
    assert parts["policy_loss"] == pytest.approx(-np.mean((pi * log_softmax).sum(1)), rel=1e-5)
    assert total.item() == pytest.approx(parts["value_loss"] + parts["policy_loss"], rel=1e-5)


def torch_forward(net: PolicyValueNet, planes: torch.Tensor):
    state = {name: torch.tensor(np.asarray(value)) for name, value in net.state_dict().items()}
    hidden = planes.reshape(planes.shape[0], -1)
    trunk = sorted(name for name in state if name.startswith("trunk") and name.endswith("weight"))
    for name in trunk:
        hidden = torch.relu(hidden @ state[name] + state[name[:-len("weight")] + "bias"])
    logits = hidden @ state["policy_head.weight"] + state["policy_head.bias"]
    value = torch.tanh(hidden @ state["value_head.weight"] + state["value_head.bias"])[:, 0]
    return logits, value


def test_network_forward_matches_torch():
    net = PolicyValueNet((6, 7), 7, hidden=(32, 16))
    assert len([n for n in net.state_dict() if n.startswith("trunk")]) == 4
    game = ConnectFour()
    rng = np.random.default_rng(0)
    planes = np.stack([game.encode(board(*["".join(rng.choice(list("XO.."), 7)) for _ in range(6)]))
                       for _ in range(5)])
    logits, values = compare_with_torch(lambda x: net(x), lambda x: torch_forward(net, x), planes)
    assert logits.shape == (5, 7) and values.shape == (5,)
    assert np.all(np.abs(values.numpy()) < 1)


def test_network_evaluator_masks_illegal_moves_and_caches():
    game = TicTacToe()
    net = PolicyValueNet(game.board_shape, game.action_size, hidden=(16,))
    evaluator = NetworkEvaluator(game, net)
    state = board("X O .", ". X .", ". . O")
    prior, value = evaluator(state)
    legal = game.legal_actions(state)
    assert np.all(prior[~legal] == 0) and np.all(prior[legal] > 0) and prior.sum() == pytest.approx(1.0)
    logits, expected = net(lamina.tensor(game.encode(state)[None]))
    shifted = np.exp(logits.numpy()[0][legal] - logits.numpy()[0][legal].max())
    np.testing.assert_allclose(prior[legal], shifted / shifted.sum(), rtol=1e-5)
    assert value == pytest.approx(float(expected.numpy()[0]), rel=1e-6)
    assert len(evaluator.cache) == 1
    evaluator(state)
    assert len(evaluator.cache) == 1


def test_self_play_examples():
    game = TicTacToe()
    agent = AlphaZero(game, hidden=(16,), n_simulations=8, seed=0)
    boards, policies, outcomes = agent.self_play(2)
    assert boards.shape[1:] == (3, 3, 2) and len(boards) == len(policies) == len(outcomes)
    assert len(boards) % 8 == 0 and len(boards) >= 2 * 5 * 8
    np.testing.assert_allclose(policies.sum(1), 1.0)
    assert set(np.unique(outcomes)) <= {-1.0, 0.0, 1.0}
    occupied = boards.sum(axis=-1).reshape(len(boards), 9) > 0
    assert np.all(policies[occupied] == 0)           # visits only on empty squares
    positions, first_outcomes = boards[0::8], outcomes[0::8]          # each position's identity image
    starts = np.flatnonzero(positions.reshape(len(positions), -1).sum(1) == 0)
    assert starts.tolist() == [0, starts[1]] and np.all(outcomes[:8] == outcomes[0])
    for game_outcomes in np.split(first_outcomes, starts[1:]):
        # z is for the player to move: it flips every move, and the last mover (a winner, or a draw) has z >= 0
        np.testing.assert_array_equal(game_outcomes[1:], -game_outcomes[:-1])
        assert game_outcomes[-1] >= 0


def test_training_is_reproducible_and_records_history():
    settings = dict(iterations=2, games_per_iteration=2, arena_games=2, eval_games=2, uct_simulations=10,
                    hidden=(16,), n_simulations=6, epochs=1)
    runs = [train_alphazero(TicTacToe(), seed=3, **settings) for _ in range(2)]
    for (name, a), b in zip(runs[0].net.state_dict().items(), runs[1].net.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    history = runs[0].history
    assert [record["iteration"] for record in history] == [0, 1]
    for record in history:
        for key in ("vs_previous", "vs_random", "vs_uct"):
            assert sum(record[key][k] for k in ("wins", "draws", "losses")) == 2
        assert record["examples"] > 0 and record["seconds"] > 0
    assert history[1]["examples"] > history[0]["examples"]


def test_connect_four_self_play_runs():
    agent = train_alphazero(ConnectFour(), iterations=1, games_per_iteration=1, arena_games=0, eval_games=0,
                            hidden=(16,), n_simulations=4, epochs=1, seed=0)
    examples = agent.history[0]["examples"]
    assert examples % 2 == 0 and examples >= 2 * 7
    state = ConnectFour().initial_state()
    assert 0 <= agent.player()(state) < 7


def test_alphazero_learns_tictactoe():
    """One seed (seeds 0-4 all learn, see below) and 5 iterations; seed 0 measured: 88 wins and 12
    draws against the random player, 3 wins and 7 draws against UCT, with OpenBLAS's Haswell and
    default kernels alike (at 6 iterations: 92 wins and 8 draws; 5 wins and 5 draws)."""
    seed = 0
    game = TicTacToe()
    agent = train_alphazero(game, iterations=5, arena_games=0, eval_games=0, seed=seed)    # 25 games
    versus_random = play_match(game, agent.player(), RandomPlayer(game, seed=seed), 100)   # 50 on each side
    # measured (6 iterations, seeds 0-4, OpenBLAS Haswell and SkylakeX alike): 90-93 wins, no loss
    assert versus_random["losses"] == 0 and versus_random["wins"] >= 70, versus_random
    uct = MCTSPlayer(MCTS.uct(game, n_simulations=100, seed=seed))
    versus_uct = play_match(game, agent.player(), uct, 10)
    assert versus_uct["losses"] <= 1, versus_uct          # none lost for seeds 0-4 (one for seed 2 at 4 iterations)
