"""ULMFiT's and AWD-LSTM's training pieces: the slanted triangular schedule against a hand
computation of the paper's formula, discriminative learning rates as parameter groups,
gradual unfreezing, batchify and the variable-length BPTT windows, NT-ASGD's trigger."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import (
    NTASGD,
    GradualUnfreezing,
    SlantedTriangular,
    batchify,
    discriminative_param_groups,
    variable_bptt_windows,
)


def _stlr_by_hand(t, total, cut_frac, ratio, max_lr):
    cut = int(np.floor(total * cut_frac))
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return max_lr * (1 + p * (ratio - 1)) / ratio


@pytest.mark.parametrize("t, expected", [(0, 0.01 / 32), (50, 0.01 * 16.5 / 32), (100, 0.01),
                                         (550, 0.01 * 16.5 / 32), (1000, 0.01 / 32)])
def test_slanted_triangular_matches_the_paper_at_landmarks(t, expected):
    schedule = SlantedTriangular(0.01, 1000, cut_frac=0.1, ratio=32)
    assert schedule(t) == pytest.approx(expected, rel=1e-12)


def test_slanted_triangular_matches_the_formula_at_every_step_and_drives_the_groups():
    schedule = SlantedTriangular(0.02, 40, cut_frac=0.2, ratio=10)
    for t in range(41):
        assert schedule(t) == pytest.approx(_stlr_by_hand(t, 40, 0.2, 10, 0.02), rel=1e-12)
    assert max(range(41), key=schedule) == 8                           # the peak at cut = floor(40 * 0.2)
    assert schedule(60) == schedule(40) == pytest.approx(0.002)        # eta_max / ratio after the end
    short = SlantedTriangular(0.01, 15, cut_frac=0.1, ratio=32)       # cut (1/cut_frac - 1) = 9 < T - cut
    assert short(15) == pytest.approx(0.01 / 32)                       # p is held at 0, not below
    w = [nn.Parameter(np.zeros(2)) for _ in range(3)]
    opt = optim.SGD(discriminative_param_groups([[w[0]], [w[1]], [w[2]]], 0.02), lr=0.02)
    schedule = SlantedTriangular(0.02, 40, cut_frac=0.2, ratio=10, optimizer=opt)
    for _ in range(5):
        schedule.step()
    lr = _stlr_by_hand(5, 40, 0.2, 10, 0.02)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 2.6 ** 2, lr / 2.6, lr], rel=1e-12)


def test_discriminative_groups_divide_by_2_6_going_down():
    layers = [nn.Dense(2), nn.Dense(2), nn.Dense(2), nn.Dense(2)]
    for layer in layers:
        layer(np.zeros((1, 2), dtype=np.float32))
    groups = discriminative_param_groups([[m] for m in layers], 0.01)
    assert [g["lr"] for g in groups] == pytest.approx([0.01 / 2.6 ** 3, 0.01 / 2.6 ** 2, 0.01 / 2.6, 0.01])
    assert [len(g["params"]) for g in groups] == [2, 2, 2, 2]
    assert groups[0]["params"][0] is layers[0].weight
    with pytest.raises(ValueError, match="discriminative_param_groups: got no groups"):
        discriminative_param_groups([], 0.01)


def test_gradual_unfreezing_opens_one_more_group_per_step_from_the_top():
    layers = [nn.Dense(2) for _ in range(3)]
    x = np.ones((4, 2), dtype=np.float32)
    for layer in layers:
        layer(x)
    unfreezing = GradualUnfreezing([[m] for m in layers])

    def learning():
        return [all(p.trainable for p in m.parameters()) for m in layers]

    assert learning() == [False, False, True]
    before = [m.weight.numpy().copy() for m in layers]
    opt = optim.SGD([p for m in layers for p in m.parameters()], lr=0.1)
    loss = layers[2](layers[1](layers[0](lamina.tensor(x)))).sum()
    loss.backward()
    opt.step()
    changed = [not np.array_equal(b, m.weight.numpy()) for b, m in zip(before, layers)]
    assert changed == [False, False, True]
    assert unfreezing.step() == 2 and learning() == [False, True, True]
    assert unfreezing.step() == 3 and learning() == [True, True, True]
    assert unfreezing.step() == 3


def test_batchify_reads_the_stream_in_rows():
    rows = batchify(np.arange(23), 4)
    assert rows.shape == (4, 5)
    np.testing.assert_array_equal(rows[1], np.arange(5, 10))
    with pytest.raises(ValueError, match="batchify: expected a 1-D token stream"):
        batchify(np.arange(5), 4)


def test_variable_bptt_windows_follow_the_drawn_lengths():
    rows = np.arange(3 * 2001).reshape(3, 2001)
    windows = list(variable_bptt_windows(rows, 20, rng=np.random.default_rng(0)))
    again = np.random.default_rng(0)
    position = 0
    for x, y, scale in windows:
        base = 20 if again.random() < 0.95 else 10
        length = min(max(5, int(round(again.normal(base, 5.0)))), 2000 - position)
        assert x.shape == (3, length) and scale == length / 20
        np.testing.assert_array_equal(x, rows[:, position:position + length])
        np.testing.assert_array_equal(y, x + 1)                       # the next token
        position += length
    assert position == 2000
    lengths = np.array([x.shape[1] for x, _, _ in windows[:-1]])
    assert abs(lengths.mean() - (0.95 * 20 + 0.05 * 10)) < 1.5


def test_ntasgd_switches_to_averaging_after_nonmono_checks_without_improvement():
    w = nn.Parameter(np.array([1.0, -2.0]))
    trainer = NTASGD([w], lr=0.1, nonmono=2)
    assert isinstance(trainer.optimizer, optim.SGD)
    # best before the last two checks: 3.0 (check 3); check 6 (3.2 > 3.0) triggers the switch
    switched = [trainer.check(v) for v in (5.0, 4.0, 3.0, 2.9, 3.1, 3.2, 3.3)]
    assert switched == [False, False, False, False, False, True, True]
    assert isinstance(trainer.optimizer, optim.ASGD)
    visited = []
    for _ in range(4):
        w.grad = 2 * w.data                     # J = |w|^2
        trainer.optimizer.step()
        visited.append(w.data.copy())
    # torch's ASGD with t0 = 0 (mu = 1 / max(1, t - t0)) averages the iterates from the second step on
    np.testing.assert_allclose(trainer.averaged()[0], np.mean(visited[1:], axis=0), rtol=1e-6)
    np.testing.assert_allclose(visited[-1], [0.8 ** 4, -2 * 0.8 ** 4], rtol=1e-6)    # plain SGD steps
