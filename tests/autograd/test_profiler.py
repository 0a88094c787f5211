"""The op profiler: counts of forward and backward calls, times that fit in the wall time,
user ranges, the Chrome trace, and the engine put back as it was after the profile."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import models, nn, optim
from lamina.autograd import checkpoint, graph
from lamina.autograd.function import Function
from lamina.autograd.profiler import profile, record_function
from lamina.functional.activation import Tanh
from lamina.functional.loss import SparseSoftmaxCrossEntropy
from lamina.nn.dense import LinearFunction
from lamina.train import Trainer

SLACK_S = 1e-3            # for the clock reads that happen outside the ops


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)).astype(np.float32), rng.integers(0, 3, n)


def _model(seed=0):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(16, activation="tanh"), nn.Dense(3))
    model(lamina.tensor(np.zeros((1, 5), np.float32)))      # build
    return model


def _step(model, x, y):
    loss = F.categorical_cross_entropy(model(lamina.tensor(x)), y, from_logits=True)
    loss.backward()
    return loss


def _stats(prof):
    return {(s.kind, s.name): s for s in prof.key_averages()}


def _within(inner, outer) -> bool:
    return outer.start <= inner.start and inner.start + inner.duration <= outer.start + outer.duration + 1e-9


def test_counts_the_forward_and_backward_calls_of_each_op():
    model = _model()
    x, y = _data()
    with profile() as prof:
        loss = _step(model, x, y)
        with lamina.no_grad():                              # forward only: no node, no backward
            model(lamina.tensor(x))
    stats = _stats(prof)
    # Two Dense layers, one tanh, one fused softmax cross-entropy; the no_grad pass adds two
    # LinearFunction forwards and one Tanh forward.
    expected = {LinearFunction: (4, 2), Tanh: (2, 1), SparseSoftmaxCrossEntropy: (1, 1)}
    for op, (forward_calls, backward_calls) in expected.items():
        s = stats[("op", op.__name__)]
        assert (s.calls, s.backward_calls) == (forward_calls, backward_calls), op.__name__
    assert {name for kind, name in stats if kind == "op"} == {op.__name__ for op in expected}
    assert np.isfinite(loss.item())


def test_profiling_changes_no_value_and_no_gradient():
    x, y = _data()
    plain = _model()
    loss = _step(plain, x, y)
    profiled = _model()
    with profile():
        profiled_loss = _step(profiled, x, y)
    assert profiled_loss.item() == loss.item()
    for p, q in zip(plain.parameters(), profiled.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_times_are_non_negative_and_fit_in_the_wall_time():
    model = _model()
    x, y = _data(64)
    started = time.perf_counter()
    with profile() as prof:
        for _ in range(3):
            _step(model, x, y)
    outside = time.perf_counter() - started
    assert 0 < prof.total_time <= outside
    stats = prof.key_averages()
    for s in stats:
        assert min(s.forward_time, s.backward_time, s.total_time, s.self_time, s.percent) >= 0
        assert s.total_time == pytest.approx(s.forward_time + s.backward_time)
        assert s.forward_mean == pytest.approx(s.forward_time / s.calls)
        assert s.percent == pytest.approx(100 * s.total_time / prof.total_time)
    # No op runs inside another here: the ops' totals are disjoint stretches of the wall time.
    assert sum(s.total_time for s in stats) <= prof.total_time + SLACK_S
    assert sum(s.self_time for s in stats) == pytest.approx(sum(s.total_time for s in stats))
    assert [s.total_time for s in stats] == sorted((s.total_time for s in stats), reverse=True)


def _table_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    assert lines[1].startswith("----")
    return [line.split() for line in lines[2:] if not line.startswith(("...", "wall time", "times in"))]


def test_table_has_a_row_per_op_sorted_by_total():
    model = _model()
    x, y = _data(32)
    with profile() as prof:
        _step(model, x, y)
    text = prof.table()
    header = text.splitlines()[0].split()
    assert header[0] == "name" and "total" in header
    rows = _table_rows(text)
    names = [row[0] for row in rows]
    assert sorted(names) == sorted(s.name for s in prof.key_averages())
    assert {LinearFunction.__name__, Tanh.__name__, SparseSoftmaxCrossEntropy.__name__} <= set(names)
    totals = [float(row[-3]) for row in rows]
    assert totals == sorted(totals, reverse=True)
    by_name = _table_rows(prof.table(sort_by="name"))
    assert [row[0] for row in by_name] == sorted(names)
    assert len(_table_rows(prof.table(row_limit=2))) == 2 and "1 more rows" in prof.table(row_limit=2)
    with pytest.raises(ValueError, match="sort_by"):
        prof.table(sort_by="speed")
    with pytest.raises(ValueError, match="row_limit"):
        prof.table(row_limit=0)


def test_record_function_ranges_nest_and_hold_their_ops():
    model = _model()
    x, y = _data(32)
    with profile() as prof:
        with record_function("step"):
            with record_function("forward pass"):
                loss = F.categorical_cross_entropy(model(lamina.tensor(x)), y, from_logits=True)
            with record_function("backward pass"):
                loss.backward()
    events = prof.events
    ranges = {e.name: e for e in events if e.category == "user"}
    assert set(ranges) == {"step", "forward pass", "backward pass"}
    step = ranges["step"]
    assert _within(ranges["forward pass"], step) and _within(ranges["backward pass"], step)
    assert step.duration >= ranges["forward pass"].duration + ranges["backward pass"].duration
    for e in events:
        if e.category == "forward":
            assert _within(e, ranges["forward pass"]), e
        elif e.category == "backward":
            assert _within(e, ranges["backward pass"]), e
    for name, category in [("forward pass", "forward"), ("backward pass", "backward")]:
        ops = sum(e.duration for e in events if e.category == category)
        assert ranges[name].duration >= ops
        assert ranges[name].self_time == pytest.approx(ranges[name].duration - ops, abs=1e-6)
    row = _stats(prof)[("user", "step")]
    assert (row.calls, row.backward_calls, row.forward_time) == (1, 0, 0.0)
    assert row.total_time == pytest.approx(step.duration)
    assert "step" in prof.table()


def test_record_function_outside_a_profile_records_nothing():
    with record_function("alone"):
        lamina.tensor([1.0, 2.0]).tanh()
    with profile() as prof:
        pass
    assert prof.events == [] and prof.key_averages() == []
    with pytest.raises(ValueError, match="record_function"):
        record_function("")


def test_chrome_trace_is_well_formed_json(tmp_path):
    model = _model()
    x, y = _data()
    with profile() as prof:
        with record_function("step"):
            _step(model, x, y)
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    with open(path) as handle:
        trace = json.load(handle)
    events = trace["traceEvents"]
    assert len(events) == len(prof.events) > 0
    for event in events:
        assert {"name", "ph", "ts", "dur", "pid", "tid", "cat"} <= set(event)
        assert event["ph"] == "X" and event["cat"] in {"forward", "backward", "user"}
        assert event["ts"] >= 0 and event["dur"] >= 0
        assert event["ts"] + event["dur"] <= prof.total_time * 1e6 + 1
    assert {e["cat"] for e in events} == {"forward", "backward", "user"}
    step = next(e for e in events if e["name"] == "step")
    assert step["dur"] == pytest.approx(prof.events[0].duration * 1e6)


def test_an_interrupted_trace_write_keeps_the_previous_file(tmp_path, monkeypatch):
    with profile() as first:
        lamina.tensor([1.0], requires_grad=True).tanh().sum().backward()
    path = tmp_path / "trace.json"
    first.export_chrome_trace(path)
    before = path.read_bytes()

    with profile() as second:
        lamina.tensor([1.0, 2.0]).exp()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        second.export_chrome_trace(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def test_the_engine_is_put_back_after_the_profile_even_after_an_exception():
    original = Function.__dict__["apply"]
    assert graph._node_observer is None
    with pytest.raises(ZeroDivisionError):
        with profile() as prof:
            assert Function.__dict__["apply"] is not original and graph._node_observer is not None
            lamina.tensor([1.0], requires_grad=True).tanh().sum().backward()
            raise ZeroDivisionError("inside the profile")
    assert Function.__dict__["apply"] is original and graph._node_observer is None
    assert _stats(prof)[("op", Tanh.__name__)].backward_calls == 1     # what ran before the error is kept
    with profile() as later:
        pass
    with pytest.raises(RuntimeError, match="already running"):
        with later:
            with later:
                pass
    assert Function.__dict__["apply"] is original and graph._node_observer is None


def test_results_are_asked_for_after_the_block():
    prof = profile()
    with pytest.raises(RuntimeError, match="nothing was profiled"):
        prof.table()
    with prof:
        with pytest.raises(RuntimeError, match="still running"):
            prof.key_averages()


def test_nested_profiles_each_get_their_own_block():
    original = Function.__dict__["apply"]
    model = _model()
    x, y = _data()
    with profile() as outer:
        _step(model, x, y)
        with profile() as inner:
            _step(model, x, y)
        assert Function.__dict__["apply"] is not original   # the outer one still times
        _step(model, x, y)
    assert Function.__dict__["apply"] is original and graph._node_observer is None
    name = LinearFunction.__name__
    assert (_stats(inner)[("op", name)].calls, _stats(inner)[("op", name)].backward_calls) == (2, 2)
    assert (_stats(outer)[("op", name)].calls, _stats(outer)[("op", name)].backward_calls) == (6, 6)
    assert inner.total_time < outer.total_time
    # Left out of order, each still keeps its own events, and the last one out restores the engine.
    first, second = profile(), profile()
    first.__enter__()
    lamina.tensor([1.0]).tanh()
    second.__enter__()
    lamina.tensor([1.0]).exp()
    first.__exit__(None, None, None)
    assert Function.__dict__["apply"] is not original
    lamina.tensor([1.0]).exp()
    second.__exit__(None, None, None)
    assert Function.__dict__["apply"] is original and graph._node_observer is None
    assert [e.name for e in first.events] == [Tanh.__name__, "Exp"]
    assert [e.name for e in second.events] == ["Exp", "Exp"]


def test_a_checkpoints_backward_holds_the_ops_it_runs_again():
    model = _model()
    x, y = _data()
    segment = model[:1]                                      # Dense + tanh, run again in backward
    with profile() as prof:
        hidden = checkpoint(segment, lamina.tensor(x))
        loss = F.categorical_cross_entropy(model[1](hidden), y, from_logits=True)
        loss.backward()
    stats = _stats(prof)
    tanh = stats[("op", Tanh.__name__)]
    assert (tanh.calls, tanh.backward_calls) == (2, 1)     # first run and the run again; one backward
    ckpt = next(e for e in prof.events if e.name == "Checkpoint" and e.category == "backward")
    inside = [e for e in prof.events if e is not ckpt and _within(e, ckpt)]
    assert {(e.name, e.category) for e in inside} >= {(Tanh.__name__, "forward"), (Tanh.__name__, "backward"),
                                                      (LinearFunction.__name__, "backward")}
    assert ckpt.self_time < ckpt.duration
    assert sum(s.self_time for s in stats.values()) <= prof.total_time + SLACK_S
    plain = _model()
    _step(plain, x, y)
    for p, q in zip(plain.parameters(), model.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-5, atol=1e-7)


def test_gradients_of_gradients_are_profiled_too():
    x = lamina.tensor(np.linspace(-1, 1, 5), requires_grad=True, dtype=np.float64)
    with profile() as prof:
        (g,) = lamina.autograd.grad(x.tanh().sum(), [x], create_graph=True)
        (gg,) = lamina.autograd.grad(g.sum(), [x])
    t = np.tanh(np.linspace(-1, 1, 5))
    np.testing.assert_allclose(gg, -2 * t * (1 - t ** 2), rtol=1e-10)
    # The first backward of tanh is made of ops (so that it can be differentiated): they run inside it.
    first = next(e for e in prof.events if e.name == Tanh.__name__ and e.category == "backward")
    assert any(e.category == "forward" and _within(e, first) for e in prof.events if e is not first)
    assert first.self_time < first.duration
    assert sum(s.self_time for s in prof.key_averages()) <= prof.total_time + SLACK_S


def _blobs(n=48, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 4)) * 3
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.standard_normal((n, 4))).astype(np.float32), y


def _fit(profiled: bool):
    lamina.manual_seed(0)
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=0.01), verbose=0)
    if not profiled:
        trainer.fit(_blobs(), epochs=1, batch_size=16, seed=0)
        return model, None
    with profile() as prof:
        with record_function("fit"):
            trainer.fit(_blobs(), epochs=1, batch_size=16, seed=0)
    return model, prof


def test_profiling_a_trainer_fit():
    model, prof = _fit(profiled=True)
    linear = _stats(prof)[("op", LinearFunction.__name__)]
    assert linear.backward_calls == 3 * 2                   # 48 samples in batches of 16, two Dense layers
    assert linear.calls >= linear.backward_calls
    assert _stats(prof)[("user", "fit")].total_time <= prof.total_time
    assert "fit" in prof.table() and LinearFunction.__name__ in prof.table()
    plain, _ = _fit(profiled=False)
    for p, q in zip(plain.parameters(), model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
