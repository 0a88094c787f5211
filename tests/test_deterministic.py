"""lamina.use_deterministic_algorithms: results that depend on the inputs and the thread
count only, never on whether lamina's threads are busy."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import lamina
from lamina import backend, nn, optim, parallel
from lamina import functional as F


@pytest.fixture
def deterministic(two_threads):
    before = (lamina.are_deterministic_algorithms_enabled(), backend.is_deterministic_algorithms_warn_only_enabled())
    lamina.use_deterministic_algorithms(True)
    yield
    lamina.use_deterministic_algorithms(*before)


def _idle(monkeypatch) -> None:
    """lamina's threads look idle: products may go to OpenBLAS's own threads."""
    monkeypatch.setattr(parallel, "_last_region", [float("-inf")])


def _busy(monkeypatch) -> None:
    """lamina's threads look busy: products are split among them."""
    monkeypatch.setattr(parallel, "_last_region", [time.perf_counter() + 3600.0])


class _BusyPool:
    """Another thread keeping lamina's thread pool at work (it holds the dispatch lock and
    marks the threads as recently busy, as a concurrent training run would)."""

    def __enter__(self):
        self._stop = threading.Event()
        block = np.random.default_rng(3).standard_normal(parallel.MIN_ELEMENTS).astype(np.float32)

        def keep_busy():
            while not self._stop.is_set():
                parallel.map_chunks(lambda i: np.tanh(block), 2, parallel.MIN_ELEMENTS)

        self._thread = threading.Thread(target=keep_busy, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_the_switch_round_trips_and_holds_blas_on_one_thread_while_on(two_threads):
    before = parallel.blas_num_threads()
    try:
        lamina.use_deterministic_algorithms(True)
        assert lamina.are_deterministic_algorithms_enabled() and backend.are_deterministic_algorithms_enabled()
        assert not backend.is_deterministic_algorithms_warn_only_enabled()
        assert all(n == 1 for n in parallel.blas_num_threads())
        assert not parallel.blas_threads_welcome()
        lamina.use_deterministic_algorithms(True, warn_only=True)
        assert backend.is_deterministic_algorithms_warn_only_enabled()
    finally:
        lamina.use_deterministic_algorithms(False)
    assert not lamina.are_deterministic_algorithms_enabled()
    assert parallel.blas_num_threads() == before


@pytest.mark.parametrize("bad", [(1, False), (True, "yes")])
def test_the_switch_takes_bools_only(bad):
    with pytest.raises(TypeError, match="use_deterministic_algorithms"):
        lamina.use_deterministic_algorithms(*bad)


def test_alert_raises_under_the_mode_warns_with_warn_only_and_is_silent_otherwise():
    backend.alert_not_deterministic("scatter_add")
    try:
        lamina.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="scatter_add"):
            backend.alert_not_deterministic("scatter_add")
        lamina.use_deterministic_algorithms(True, warn_only=True)
        with pytest.warns(UserWarning, match="scatter_add"):
            backend.alert_not_deterministic("scatter_add")
    finally:
        lamina.use_deterministic_algorithms(False)


@pytest.mark.parametrize("shapes", [((64, 784), (784, 512)), ((512, 256), (256, 128)), ((8, 300), (300, 700))])
def test_matmul_is_the_same_whether_lamina_threads_are_idle_or_busy(deterministic, monkeypatch, shapes):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    _idle(monkeypatch)
    idle = parallel.matmul(a, b)
    _busy(monkeypatch)
    busy = parallel.matmul(a, b)
    with _BusyPool():
        concurrent = parallel.matmul(a, b)
    np.testing.assert_array_equal(idle, busy)
    np.testing.assert_array_equal(idle, concurrent)
    np.testing.assert_allclose(idle, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Dense(256, activation="relu"), nn.Dense(10))


def _cnn():
    return nn.Sequential(nn.Conv2D(8, 3, padding="same", use_bias=False), nn.BatchNorm(), nn.ReLU(),
                         nn.MaxPool2D(2), nn.Flatten(), nn.Dense(32, activation="relu"), nn.Dense(10))


def _train(build, x, y, steps: int = 4) -> list[np.ndarray]:
    lamina.manual_seed(7)
    model = build()
    model(lamina.tensor(x[:2]))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        cost = F.categorical_cross_entropy(model(lamina.tensor(x)), y, from_logits=True)
        opt.zero_grad()
        cost.backward()
        opt.step()
    return [np.array(p.data, copy=True) for p in model.parameters()]


@pytest.mark.parametrize("build, shape", [(_mlp, (64, 28, 28, 1)), (_cnn, (32, 16, 16, 3))])
def test_training_gives_the_same_weights_whether_lamina_threads_are_idle_or_busy(deterministic, monkeypatch,
                                                                                  build, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, shape[0])
    _idle(monkeypatch)
    quiet = _train(build, x, y)
    with _BusyPool():
        busy = _train(build, x, y)
    with parallel._dispatch:                 # another caller holds the workers: chunks run here
        serial = _train(build, x, y)
    assert len(quiet) == len(busy) == len(serial)
    for a, b, c in zip(quiet, busy, serial):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_one_thread_leaving_its_blas_region_leaves_another_inside_on_one_thread(deterministic):
    """Regions of two threads overlapping: the first to leave must not give BLAS its threads back."""
    first, second = parallel.one_blas_thread(), parallel.one_blas_thread()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert all(n == 1 for n in parallel.blas_num_threads())
    second.__exit__(None, None, None)
