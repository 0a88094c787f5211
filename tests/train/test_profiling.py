"""ProfileSteps: the fit loop's steps first .. first + count - 1 profiled op by op, the trace
written, the profile closed whatever happens; lamina train --profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.autograd import graph
from lamina.autograd.function import Function
from lamina.train import LambdaCallback, ProfileSteps, Trainer

APPLY = Function.apply.__func__


def _trainer(callbacks):
    model = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(3, activation="softmax"))
    return Trainer(model, "categorical_cross_entropy", optim.SGD(model, lr=0.1), metrics=(), callbacks=callbacks,
                   verbose=0)


def _data(n=60):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_the_chosen_steps_are_profiled_and_written(tmp_path):
    path = tmp_path / "trace.json"
    callback = ProfileSteps(path, first=2, count=3)
    _trainer([callback]).fit(_data(), epochs=1, batch_size=10)          # 6 steps
    stats = {s.name: s for s in callback.profile.key_averages()}
    assert stats["LinearFunction"].calls == 2 * 3                       # two layers, three steps
    assert stats["LinearFunction"].backward_calls == 2 * 3
    assert "LinearFunction" in callback.table
    events = json.loads(path.read_text())["traceEvents"]
    assert {e["cat"] for e in events} >= {"forward", "backward"}
    assert graph._node_observer is None and Function.apply.__func__ is APPLY  # profiling is over


def test_profiling_from_the_first_step_and_past_the_end(tmp_path):
    callback = ProfileSteps(tmp_path / "trace.json", first=1, count=50)
    _trainer([callback]).fit(_data(30), epochs=1, batch_size=10)        # 3 steps: stopped at the end
    assert {s.name: s for s in callback.profile.key_averages()}["LinearFunction"].calls == 2 * 3
    assert (tmp_path / "trace.json").exists() and graph._node_observer is None


def test_a_failing_step_closes_the_profile(tmp_path):
    def fail(iteration, logs):
        if iteration == 3:
            raise RuntimeError("stop here")

    callback = ProfileSteps(tmp_path / "trace.json", first=2, count=5)
    with pytest.raises(RuntimeError, match="stop here"):
        _trainer([callback, LambdaCallback(on_batch_end=fail)]).fit(_data(), epochs=1, batch_size=10)
    assert graph._node_observer is None and callback.profile is not None
    assert (tmp_path / "trace.json").exists()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="ProfileSteps: count must be a positive int, got 0"):
        ProfileSteps("x.json", count=0)
    with pytest.raises(ValueError, match="ProfileSteps: first must be a positive int"):
        ProfileSteps("x.json", first=-1)


def test_lamina_train_profile_writes_the_trace(tmp_path, capsys):
    from lamina.cli import build_parser, train

    train(build_parser().parse_args(["train", "--limit", "100", "--epochs", "1", "--profile", "2", "--out",
                                     str(tmp_path), "--verbose", "1"]))
    events = json.loads((tmp_path / "profile.json").read_text())["traceEvents"]
    assert any(e["name"] == "Conv2d" for e in events)
    assert "Conv2d" in capsys.readouterr().out
    assert lamina.autograd.graph._node_observer is None
