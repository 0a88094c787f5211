"""GFlowNets: the four losses against float64 PyTorch rewrites of the published formulas on a
hand-made trajectory batch (values and gradients), the per-step quantities gathered by the
network, exact P_T by dynamic programming against Monte Carlo, a hand-built perfect policy
making every loss zero, and trajectory balance learning an 8x8 hypergrid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, run_readme_section
from lamina import nn
from lamina.rl import gflownet as G


def hand_made_batch() -> G.Trajectories:
    """Three trajectories on a 3x3 grid: right-up-stop, stop, up-up-right-stop (actions 0, 1, stop=2)."""
    pad = [0, 0]
    states = np.array([[[0, 0], [1, 0], [1, 1], [1, 1]],
                       [[0, 0], pad, pad, pad],
                       [[0, 0], [0, 1], [0, 2], [1, 2]]])
    actions = np.array([[0, 1, 2, -1], [2, -1, -1, -1], [1, 1, 0, 2]])
    env = G.HyperGrid(2, 3)
    lengths = np.array([3, 1, 4])
    terminal = states[np.arange(3), lengths - 1]
    return G.Trajectories(states, actions, lengths, env.log_reward(terminal))


STEP_MASK = hand_made_batch().step_mask
LOG_REWARDS = hand_made_batch().log_rewards


def torch_tb(log_z, log_pf, log_pb):
    return ((log_z + log_pf.sum(1) - log_pb.sum(1) - torch.tensor(LOG_REWARDS)) ** 2).mean()


def torch_db(log_flows, log_pf, log_pb):
    terms = []
    for b, n in enumerate(STEP_MASK.sum(1)):
        for t in range(n):
            terms.append((log_flows[b, t] + log_pf[b, t] - log_flows[b, t + 1] - log_pb[b, t]) ** 2)
    return torch.stack(terms).mean()


def torch_subtb(log_flows, log_pf, log_pb, lam=0.7):
    per_trajectory = []
    for b, n in enumerate(STEP_MASK.sum(1)):
        total, weight = 0.0, 0.0
        for i in range(n + 1):
            for j in range(i + 1, n + 1):
                delta = log_flows[b, i] + log_pf[b, i:j].sum() - log_flows[b, j] - log_pb[b, i:j].sum()
                total = total + lam ** (j - i) * delta ** 2
                weight += lam ** (j - i)
        per_trajectory.append(total / weight)
    return torch.stack(per_trajectory).mean()


def padded(rng, shape):
    values = rng.standard_normal(shape)
    values[..., :STEP_MASK.shape[1]][~STEP_MASK] = 0.0     # the losses expect zeros at padding
    return values


def test_trajectory_balance_matches_torch():
    rng = np.random.default_rng(0)
    arrays = (np.array(0.3), padded(rng, (3, 4)), padded(rng, (3, 4)))
    compare_with_torch(lambda z, f, b: G.trajectory_balance_loss(z, f, b, LOG_REWARDS), torch_tb, *arrays,
                       dtype=np.float64)
    assert check_gradients(lambda z, f, b: G.trajectory_balance_loss(z, f, b, LOG_REWARDS), *arrays)


def ours_db(log_flows, log_pf, log_pb):
    return G.detailed_balance_loss(log_flows, log_pf, log_pb, STEP_MASK)


def ours_subtb(log_flows, log_pf, log_pb):
    return G.subtrajectory_balance_loss(log_flows, log_pf, log_pb, STEP_MASK, lam=0.7)


@pytest.mark.parametrize("ours, theirs", [(ours_db, torch_db), (ours_subtb, torch_subtb)])
def test_detailed_and_subtrajectory_balance_match_torch(ours, theirs):
    rng = np.random.default_rng(1)
    arrays = (padded(rng, (3, 5)), padded(rng, (3, 4)), padded(rng, (3, 4)))
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


IN_MASK = np.array([[True, False], [True, True], [False, True]])
OUT_MASK = np.array([[True, True, True], [False, True, True], [True, False, True]])


def ours_fm(log_in, log_out, log_exit):
    return G.flow_matching_loss(log_in, IN_MASK, log_out, OUT_MASK, log_exit, LOG_REWARDS)


def torch_fm(log_in, log_out, log_exit):
    gaps = [torch.log(torch.exp(log_in[i][IN_MASK[i]]).sum()) - torch.log(torch.exp(log_out[i][OUT_MASK[i]]).sum())
            for i in range(3)]
    return (torch.stack(gaps) ** 2).mean() + ((log_exit - torch.tensor(LOG_REWARDS)) ** 2).mean()


def test_flow_matching_matches_torch():
    rng = np.random.default_rng(2)
    arrays = (rng.standard_normal((3, 2)), rng.standard_normal((3, 3)), rng.standard_normal(3))
    compare_with_torch(ours_fm, torch_fm, *arrays, dtype=np.float64)
    assert check_gradients(ours_fm, *arrays)


@pytest.mark.parametrize("backward", ["uniform", "learned"])
def test_step_quantities_gather_the_policy_along_the_batch(backward):
    lamina.manual_seed(0)
    env = G.HyperGrid(2, 3)
    gfn = G.GFlowNet(env, hidden=(8,), backward=backward)
    traj = hand_made_batch()
    q = {k: v.numpy() for k, v in gfn.step_quantities(traj).items()}
    expected_pf, expected_pb, expected_flows = np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 5))
    for b, n in enumerate(traj.lengths):
        states = traj.states[b, :n]
        log_pf = gfn.forward_log_probs(states).numpy()
        forward, backward_logits, flows = (h.numpy() if h is not None else None for h in gfn.heads(states))
        expected_flows[b, :n], expected_flows[b, n] = flows, traj.log_rewards[b]
        for t in range(n):
            expected_pf[b, t] = log_pf[t, traj.actions[b, t]]
            if t + 1 < n:                                  # a move, undone by the same coordinate
                valid = env.backward_mask(states[t + 1:t + 2])[0]
                if backward == "uniform":
                    expected_pb[b, t] = -np.log(valid.sum())
                else:
                    logits = np.where(valid, backward_logits[t + 1], -np.inf)
                    expected_pb[b, t] = logits[traj.actions[b, t]] - np.log(np.exp(logits).sum())
    assert_close(q["log_pf"], expected_pf, 1e-5, "log_pf")
    assert_close(q["log_pb"], expected_pb, 1e-5, "log_pb")
    assert_close(q["log_flows"], expected_flows, 1e-5, "log_flows")
    for kind in ("fm", "db", "tb", "subtb"):
        loss = gfn.loss(traj, kind)
        loss.backward()
        assert np.isfinite(loss.item())


def test_flow_matching_on_the_network_matches_a_direct_computation():
    lamina.manual_seed(1)
    env = G.HyperGrid(2, 3)
    gfn = G.GFlowNet(env, hidden=(8,))
    traj = hand_made_batch()
    every = env.all_states()
    logits = dict(zip(map(tuple, every), gfn.heads(every)[0].numpy().astype(np.float64)))
    squares = []
    for b, n in enumerate(traj.lengths):
        for s in map(tuple, traj.states[b, 1:n]):
            inflow = [np.exp(logits[p][a]) for a, p in enumerate([(s[0] - 1, s[1]), (s[0], s[1] - 1)]) if min(p) >= 0]
            outflow = np.exp(logits[s][env.forward_mask(np.array([s]))[0]]).sum()
            squares.append((np.log(sum(inflow)) - np.log(outflow)) ** 2)
    exits = [logits[tuple(x)][2] for x in traj.terminal_states]
    expected = np.mean(squares) + np.mean((np.array(exits) - traj.log_rewards) ** 2)
    assert_close(gfn.loss(traj, "fm").numpy(), np.array(expected), 1e-5, "flow matching")


def test_exact_terminating_distribution_matches_monte_carlo():
    lamina.manual_seed(2)
    env = G.HyperGrid(2, 4)
    gfn = G.GFlowNet(env, hidden=(16,))
    exact = G.learned_distribution(gfn)
    assert abs(exact.sum() - 1.0) < 1e-9
    traj = gfn.sample(4000, rng=np.random.default_rng(0))
    index = {s: i for i, s in enumerate(map(tuple, env.terminal_states()))}
    counts = np.bincount([index[tuple(x)] for x in traj.terminal_states], minlength=len(index)) / 4000
    assert np.abs(counts - exact).max() < 0.03, (counts, exact)
    assert G.l1_distance(counts, exact) < 0.15


class TableNet(nn.Module):
    """Outputs a fixed row per state (found by decoding the environment's one-hot features)."""

    def __init__(self, env, rows, decode_empty):
        super().__init__()
        self.decode_empty = decode_empty
        self.width = env.feature_dim // env.state_dim
        self.index = {s: i for i, s in enumerate(map(tuple, env.all_states()))}
        self.rows = rows

    def forward(self, features):
        codes = features.numpy().reshape(len(features.numpy()), -1, self.width).argmax(axis=2)
        codes = np.where(codes == self.width - 1, -1, codes) if self.decode_empty else codes   # the 'empty' slot
        return lamina.tensor(self.rows[[self.index[tuple(c)] for c in codes]])


@pytest.mark.parametrize("env, decode_empty", [(G.HyperGrid(2, 5), False),
                                               (G.HyperGrid(3, 3, R0=0.01), False),
                                               (G.SequenceEnv(3, 3, lambda s: 1.0 + s.count(1) ** 2,
                                                              min_length=1), True)])
def test_a_perfect_policy_makes_every_loss_zero(env, decode_empty):
    exact = G.exact_flows(env)
    rows = np.concatenate([np.where(np.isfinite(exact["log_edge_flow"]), exact["log_edge_flow"], 0.0),
                           exact["log_flow"][:, None]], axis=1)
    gfn = G.GFlowNet(env, net=TableNet(env, rows, decode_empty))
    gfn.log_z.data[...] = exact["log_z"]
    _, target = G.target_distribution(env)
    assert G.l1_distance(G.learned_distribution(gfn), target) < 1e-5
    traj = gfn.sample(64, epsilon=0.5, rng=np.random.default_rng(3))
    for kind in ("fm", "db", "tb", "subtb"):
        assert gfn.loss(traj, kind).item() < 1e-9, kind
    gfn.log_z.data[...] = exact["log_z"] + 0.5                  # a wrong log Z shows in TB only
    assert abs(gfn.loss(traj, "tb").item() - 0.25) < 1e-5


@pytest.mark.parametrize("kind, fraction", [("tb", 0.25), ("db", 0.5), ("subtb", 0.5)])
def test_training_learns_the_8x8_hypergrid(kind, fraction):
    env = G.HyperGrid(2, 8)
    terminal, target = G.target_distribution(env)
    every = env.all_states()
    mask = env.forward_mask(every)
    uniform = G.l1_distance(G.terminating_distribution(env, mask / mask.sum(1, keepdims=True)), target)
    lamina.manual_seed(0)
    gfn = G.GFlowNet(env, hidden=(64, 64))
    history = G.train_gflownet(gfn, kind, steps=200, batch_size=16, lr=3e-3, epsilon=0.05, seed=0)
    learned = G.l1_distance(G.learned_distribution(gfn), target)
    assert learned < fraction * uniform, (learned, uniform)      # TB about 0.05, DB / SubTB 0.15, uniform 1.40
    assert G.modes_found(history["visited"], G.find_modes(env)) == 4
    if kind == "tb":
        assert abs(gfn.log_z.item() - np.log(np.exp(env.log_reward(terminal)).sum())) < 0.2


def test_replay_and_learned_backward_policy_train():
    env = G.HyperGrid(2, 4)
    lamina.manual_seed(0)
    gfn = G.GFlowNet(env, hidden=(32,), backward="learned")
    history = G.train_gflownet(gfn, "subtb", steps=60, batch_size=8, lr=3e-3, replay_capacity=64,
                               replay_batch=8, seed=1)
    assert np.mean(history["losses"][-10:]) < np.mean(history["losses"][:10])


def test_sequence_environment():
    env = G.SequenceEnv(2, 3, lambda s: 1.0 + sum(s))
    assert len(env.terminal_states()) == 8 and len(env.all_states()) == 15
    assert env.forward_mask(env.initial_states(1)).tolist() == [[True, True, False]]
    assert env.step(env.initial_states(2), np.array([1, 0])).tolist() == [[1, -1, -1], [0, -1, -1]]
    parents, actions = env.parents(np.array([[1, 0, -1]]), np.array([0]))
    assert parents.tolist() == [[1, -1, -1]] and actions.tolist() == [0]


def test_argument_checks():
    with pytest.raises(ValueError, match="HyperGrid"):
        G.HyperGrid(0, 8)
    with pytest.raises(ValueError, match="backward"):
        G.GFlowNet(G.HyperGrid(2, 3), backward="learnt")
    with pytest.raises(ValueError, match="kind"):
        G.GFlowNet(G.HyperGrid(2, 3)).loss(hand_made_batch(), "xx")
    with pytest.raises(lamina.errors.ShapeError, match="HyperGrid"):
        G.HyperGrid(2, 3).forward_mask(np.zeros((2, 3), int))


def test_readme_gflownet_section_runs():
    printed, names = run_readme_section("Generative flow networks (GFlowNets)")
    assert printed.splitlines() == ["True", "4"], printed
