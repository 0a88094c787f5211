"""Profiling a few training steps from the fit loop: the ``ProfileSteps`` callback.

It runs :func:`lamina.autograd.profile` around mini-batches ``first`` to ``first + count - 1``
(counted from 1, as the trainer's iterations), then keeps the table of the ops' forward and
backward times and writes a Chrome trace of those steps (open it in ui.perfetto.dev). The first
batch is usually left out: it builds the model's weights and warms the caches.
"""

from __future__ import annotations

import os

from lamina.autograd import profile
from lamina.nn.layer import positive_int
from lamina.train.callbacks import Callback

__all__ = ["ProfileSteps"]


class ProfileSteps(Callback):
    """Profile the training steps ``first`` .. ``first + count - 1`` (all of a step: forward,
    backward, the optimizer's update, the callbacks in between); write the trace to
    ``path`` (a Chrome trace-event JSON file, written atomically) when they are done, or
    when training ends or fails before. :attr:`profile` is the finished
    :class:`~lamina.autograd.profiler.profile` (``table()``, ``key_averages()``) and
    :attr:`table` its table; ``verbose`` prints the table."""

    def __init__(self, path: str | os.PathLike, first: int = 2, count: int = 3, verbose: bool = False):
        self.path = os.fspath(path)
        self.first = positive_int(first, "ProfileSteps: first")
        self.count = positive_int(count, "ProfileSteps: count")
        self.verbose = bool(verbose)
        self.profile: profile | None = None
        self.table: str | None = None
        self._active: profile | None = None

    def _start(self) -> None:
        self._active = profile()
        self._active.__enter__()

    def _finish(self) -> None:
        if self._active is None:
            return
        active, self._active = self._active, None
        active.__exit__(None, None, None)
        self.profile = active
        self.table = active.table()
        active.export_chrome_trace(self.path)
        if self.verbose:
            print(self.table)

    def on_train_begin(self, logs: dict) -> None:
        iteration = getattr(self.trainer, "iteration", 0)
        if iteration + 1 == self.first:
            self._start()

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        if iteration == self.first - 1 and self._active is None and self.profile is None:
            self._start()
        elif iteration == self.first + self.count - 1:
            self._finish()

    def on_train_end(self, logs: dict) -> None:
        self._finish()

    def on_exception(self, error: BaseException) -> None:
        self._finish()
