"""Exact quantities on small environments: the target R(x)/Z by enumeration, the terminating
distribution P_T(x) of a forward policy by dynamic programming over the DAG, the exact flows of
the uniform-backward solution, the L1 distance and the number of modes found."""

from __future__ import annotations

import numpy

from lamina.autograd import no_grad
from lamina.rl.gflownet.environments import DAGEnv, as_state_rows


def target_distribution(env: DAGEnv) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(terminal states, R(x) / Z over them) with Z = sum_x R(x)."""
    terminal = env.terminal_states()
    rewards = numpy.exp(env.log_reward(terminal))
    return terminal, rewards / rewards.sum()


def terminating_distribution(env: DAGEnv, forward_probs: numpy.ndarray) -> numpy.ndarray:
    """P_T(x) over ``env.terminal_states()`` for the forward policy given as an
    (len(all_states), n_actions) table of P_F(a | s) in ``env.all_states()`` order::

        P(s0) = 1,  P(s') = sum_{s -> s'} P(s) P_F(s' | s),  P_T(x) = P(x) P_F(stop | x)
    """
    states = env.all_states()
    index = {row: i for i, row in enumerate(as_state_rows(states))}
    mask = env.forward_mask(states)
    reach = numpy.zeros(len(states))
    reach[index[as_state_rows(env.initial_states(1))[0]]] = 1.0
    for i in range(len(states)):                           # parents come before their children
        moves = numpy.flatnonzero(mask[i, :env.stop_action])
        if len(moves) == 0 or reach[i] == 0.0:
            continue
        children = env.step(numpy.repeat(states[i:i + 1], len(moves), axis=0), moves)
        for child, action in zip(as_state_rows(children), moves):
            reach[index[child]] += reach[i] * forward_probs[i, action]
    stop_allowed = mask[:, env.stop_action]
    return (reach * forward_probs[:, env.stop_action])[stop_allowed]


def learned_distribution(gflownet) -> numpy.ndarray:
    """P_T(x) of a :class:`GFlowNet`'s forward policy over ``env.terminal_states()``."""
    states = gflownet.env.all_states()
    with no_grad():
        probs = numpy.exp(gflownet.forward_log_probs(states).numpy().astype(numpy.float64))
    probs *= gflownet.env.forward_mask(states)
    return terminating_distribution(gflownet.env, probs / probs.sum(axis=1, keepdims=True))


def exact_flows(env: DAGEnv) -> dict[str, numpy.ndarray]:
    """The flows consistent with R and the uniform backward policy, by a backward pass over the
    DAG: F(s) = R(s) [stop allowed] + sum_children F(s') P_B(s | s'). Returns per state of
    ``env.all_states()``: ``log_flow`` (n,), ``log_edge_flow`` (n, n_actions: log F(s -> s') and
    log R(s) for stop, -inf where invalid), ``forward_probs`` (n, n_actions) and ``log_z``."""
    states = env.all_states()
    index = {row: i for i, row in enumerate(as_state_rows(states))}
    mask = env.forward_mask(states)
    rewards = numpy.exp(env.log_reward(states))
    edge = numpy.zeros(mask.shape)
    edge[:, env.stop_action] = numpy.where(mask[:, env.stop_action], rewards, 0.0)
    flow = numpy.zeros(len(states))
    for i in reversed(range(len(states))):                # children come after their parents
        moves = numpy.flatnonzero(mask[i, :env.stop_action])
        if len(moves):
            children = env.step(numpy.repeat(states[i:i + 1], len(moves), axis=0), moves)
            n_parents = env.backward_mask(children).sum(axis=1)
            child_flows = flow[[index[c] for c in as_state_rows(children)]]
            edge[i, moves] = child_flows / n_parents
        flow[i] = edge[i].sum()
    with numpy.errstate(divide="ignore"):
        log_edge = numpy.where(mask, numpy.log(edge), -numpy.inf)
    s0 = index[as_state_rows(env.initial_states(1))[0]]
    return {"log_flow": numpy.log(flow), "log_edge_flow": log_edge, "forward_probs": edge / flow[:, None],
            "log_z": numpy.log(flow[s0])}


def l1_distance(p, q) -> float:
    """sum_x |p(x) - q(x)| (twice the total-variation distance)."""
    return float(numpy.abs(numpy.asarray(p, numpy.float64) - numpy.asarray(q, numpy.float64)).sum())


def find_modes(env: DAGEnv, tolerance: float = 1e-9) -> set[tuple]:
    """The terminal states of maximal reward."""
    terminal = env.terminal_states()
    log_rewards = env.log_reward(terminal)
    return set(as_state_rows(terminal[log_rewards >= log_rewards.max() - tolerance]))


def modes_found(visited, modes: set[tuple]) -> int:
    """How many of ``modes`` occur among the ``visited`` terminal states (rows or tuples)."""
    return len(modes & {tuple(int(v) for v in row) for row in visited})
