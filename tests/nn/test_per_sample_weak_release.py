"""A weakly attached per-sample tracker that is dropped stops intercepting calls: a dropped
DPOptimizer must not leave every later call of every module on the slow, intercepted path."""

import gc
from contextlib import ExitStack

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.nn import module as module_state
from lamina.nn.module import Module, intercept_calls
from lamina.nn.per_sample import PerSampleGradients


@pytest.fixture(autouse=True)
def frozen_older_objects():
    """gc.collect() here only needs to find what the test itself dropped: everything alive before
    it (in a test process, whatever the earlier tests left) is moved out of the collector's reach
    for the test's duration, so that each full collection walks a small heap, not the whole run's."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _model():
    model = nn.Sequential([nn.Dense(3)])
    model(lamina.tensor(np.ones((2, 4), dtype=np.float32)))
    return model


def test_dropping_a_dp_optimizer_removes_its_interceptor():
    model = _model()
    dp = optim.DPOptimizer(optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
                           expected_batch_size=2)
    assert len(module_state._CALL_INTERCEPTORS) == 1 and dp.tracker.attached
    del dp
    gc.collect()
    assert module_state._CALL_INTERCEPTORS == []


def test_a_strongly_attached_tracker_keeps_intercepting_until_detached():
    model = _model()
    tracker = PerSampleGradients(model).attach()
    gc.collect()
    assert len(module_state._CALL_INTERCEPTORS) == 1
    tracker.detach()
    assert module_state._CALL_INTERCEPTORS == []


class _DropsTracker(Module):
    """Drops the last reference to a weakly attached tracker in the middle of its own call."""

    def __init__(self, inner: Module, holder: list):
        super().__init__()
        self.inner, self.holder = inner, holder

    def forward(self, x):
        self.holder.clear()
        gc.collect()
        return self.inner(x) * 2.0


def test_a_tracker_dropped_during_a_call_does_not_break_the_call():
    inner = _model()
    holder = [PerSampleGradients(inner).attach(weak=True)]
    outer = _DropsTracker(inner, holder)
    x = lamina.tensor(np.ones((2, 4), dtype=np.float32))
    y = outer(x)                                    # the tracker is dropped while this call runs
    np.testing.assert_allclose(y.numpy(), 2.0 * inner(x).numpy(), rtol=1e-6)
    del y                                           # the graph of the traced call held it until now
    gc.collect()
    assert module_state._CALL_INTERCEPTORS == []
    np.testing.assert_allclose(outer(x).numpy(), 2.0 * inner(x).numpy(), rtol=1e-6)


def test_an_interceptor_removed_during_a_call_still_runs_once_and_the_others_are_not_shifted():
    seen = []
    first = ExitStack()

    def inner_interceptor(module, inputs, kwargs, forward):
        seen.append("inner")
        return forward()

    def outer_interceptor(module, inputs, kwargs, forward):
        seen.append("outer")
        first.close()                               # removes inner_interceptor from the list mid-call
        return forward()

    model = _model()
    x = lamina.tensor(np.ones((2, 4), dtype=np.float32))
    first.enter_context(intercept_calls(inner_interceptor))
    with intercept_calls(outer_interceptor):
        model.layers[0](x)
    assert seen == ["outer", "inner"]
    assert module_state._CALL_INTERCEPTORS == []
