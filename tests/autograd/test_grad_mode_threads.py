"""Grad mode is per thread: no_grad in one thread leaves another recording."""

from __future__ import annotations

import threading

import numpy as np

import lamina


def test_no_grad_in_another_thread_leaves_this_one_recording():
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with lamina.no_grad():
            seen["worker"] = lamina.is_grad_enabled()
            x = lamina.tensor(np.ones(3), requires_grad=True)
            seen["worker_records"] = (x * 2).requires_grad
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(5)
    try:
        assert lamina.is_grad_enabled()                       # the worker's no_grad is its own
        x = lamina.tensor(np.ones(3), requires_grad=True)
        y = (x * x).sum()
        y.backward()
        np.testing.assert_array_equal(x.grad, 2 * np.ones(3))
    finally:
        release.set()
        thread.join()
    assert seen == {"worker": False, "worker_records": False}
    assert lamina.is_grad_enabled()


def test_a_new_thread_starts_recording_whatever_this_one_does():
    seen = []
    with lamina.no_grad():
        thread = threading.Thread(target=lambda: seen.append(lamina.is_grad_enabled()))
        thread.start()
        thread.join()
        assert not lamina.is_grad_enabled()
    assert seen == [True]
