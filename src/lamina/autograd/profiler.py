"""Where the time of a computation goes, op by op: the forward and the backward of each op.

>>> with profile() as prof:
...     with record_function("step"):
...         loss = F.categorical_cross_entropy(model(x), y, from_logits=True)
...         loss.backward()
>>> print(prof.table(sort_by="total", row_limit=10))
>>> prof.export_chrome_trace("step.json")        # open in ui.perfetto.dev or chrome://tracing

How it measures: while a profile is active, :meth:`Function.apply` is replaced by a wrapper
that times each call of the original (the op's forward), and the backward sweeps call
``graph._node_observer`` for each node, which times its ``backward`` (or ``backward_graph``).
Both are put back when the last active profile ends, so nothing is timed, and nothing
costs time, when no profile runs. Only ops (and the user's ranges) are timed: the time of a
layer is that of its ops.

Each time is the wall-clock time of one call, inclusive: everything run inside the call
counts in it. Ops can run other ops inside them: the backward of a checkpointed segment
(:func:`lamina.autograd.checkpoint`) runs the segment's forward again and back-propagates
through it, and with ``create_graph=True`` a node's ``backward_graph`` is made of ops. The
inner ops get events and rows of their own, and their time is also part of the enclosing
op's. The *self* time of an event is its time less that of the events directly inside it;
self times never overlap, so they add up to at most the profiled wall time, whereas totals
of nested events count the same time twice (a range's total holds its ops' time, which is
the point of a range).
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from lamina.autograd import graph
from lamina.autograd.function import Function
from lamina.io.atomic import atomic_write

__all__ = ["OpStats", "TraceEvent", "profile", "record_function"]

FORWARD, BACKWARD, USER = "forward", "backward", "user"


class TraceEvent(NamedTuple):
    """One timed call: an op's forward or backward, or a user range. Times in seconds,
    ``start`` counted from the beginning of the profile."""

    name: str
    category: str          # "forward", "backward" or "user"
    start: float
    duration: float
    self_time: float       # duration less that of the events directly inside this one
    thread: int            # native id of the thread that ran it


@dataclass(frozen=True)
class OpStats:
    """The calls and times of one op (or user range) over a profile, in seconds.

    For an op, ``total_time`` = ``forward_time`` + ``backward_time``; for a user range it is
    the time spent inside the range, and the forward/backward fields are zero."""

    name: str
    kind: str              # "op" or "user"
    calls: int             # forward calls of the op, or entries into the range
    forward_time: float
    backward_calls: int
    backward_time: float
    total_time: float
    self_time: float
    percent: float         # total_time as a percentage of the profiled wall time

    @property
    def forward_mean(self) -> float:
        return self.forward_time / self.calls if self.calls else 0.0

    @property
    def backward_mean(self) -> float:
        return self.backward_time / self.backward_calls if self.backward_calls else 0.0


# -- recording, shared by all the active profiles ------------------------------------------
class _Event(NamedTuple):
    name: str
    category: str
    start_ns: int
    duration_ns: int
    self_ns: int
    thread: int


class _Frame:
    """An event still running: gathers the time of the events that finish inside it."""

    __slots__ = ("inner_ns",)

    def __init__(self):
        self.inner_ns = 0


class _OpenEvents(threading.local):
    def __init__(self):
        self.stack: list[_Frame] = []


_active: list[profile] = []
_events: list[_Event] = []                 # finished events, while a profile is active
_open = _OpenEvents()
_saved: dict = {}                          # what the profiler replaced: Function.apply, the observer


def _begin() -> tuple[_Frame, int]:
    frame = _Frame()
    _open.stack.append(frame)
    return frame, time.perf_counter_ns()


def _finish(name: str, category: str, frame: _Frame, start_ns: int) -> None:
    duration = time.perf_counter_ns() - start_ns
    stack = _open.stack
    if stack and stack[-1] is frame:
        stack.pop()
    elif frame in stack:                   # contexts left out of order (a range inside a generator)
        stack.remove(frame)
    if stack:
        stack[-1].inner_ns += duration
    _events.append(_Event(name, category, start_ns, duration, duration - frame.inner_ns,
                          threading.get_native_id()))


def _install() -> None:
    """Time every ``Function.apply`` call and every node's backward, calling what was there."""
    saved_apply = Function.__dict__["apply"]
    saved_observer = graph._node_observer
    original = saved_apply.__func__

    @functools.wraps(original)
    def timed_apply(cls, *inputs, **params):
        frame, start = _begin()
        try:
            return original(cls, *inputs, **params)
        finally:
            _finish(cls.__name__, FORWARD, frame, start)

    def timed_vjp(vjp, g):
        frame, start = _begin()
        try:
            return vjp(g) if saved_observer is None else saved_observer(vjp, g)
        finally:
            _finish(type(vjp.__self__).__name__, BACKWARD, frame, start)

    _saved.update(apply=saved_apply, observer=saved_observer)
    Function.apply = classmethod(timed_apply)
    graph._node_observer = timed_vjp


def _uninstall() -> None:
    Function.apply = _saved.pop("apply")
    graph._node_observer = _saved.pop("observer")
    _events.clear()


# -- the public context managers ------------------------------------------------------------
class record_function:
    """Context manager marking a named range of the user's code (a training step, the data
    loading, a layer), shown as its own row and event, with the ops run inside it. Ranges may
    nest. Outside a profile it does nothing."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise ValueError(f"record_function: name must be a non-empty string, got {name!r}")
        self.name = name
        self._running: tuple[_Frame, int] | None = None

    def __enter__(self) -> record_function:
        if self._running is not None:
            raise RuntimeError(f"record_function({self.name!r}): this range is already open; "
                               "make a new record_function for a nested range")
        if _active:
            self._running = _begin()
        return self

    def __exit__(self, *exc) -> None:
        if self._running is not None:
            frame, start = self._running
            self._running = None
            _finish(self.name, USER, frame, start)


class profile:
    """Context manager that times every op's forward and backward run inside it.

    After the block: :meth:`table`, :meth:`key_averages`, :attr:`events`, :attr:`total_time`
    and :meth:`export_chrome_trace`. Profiles may nest: each gets the events of its own block.
    """

    def __init__(self):
        self._start_ns: int | None = None
        self._end_ns: int | None = None
        self._first = 0
        self._events: list[_Event] = []

    def __enter__(self) -> profile:
        if self in _active:
            raise RuntimeError("profile: this profile is already running; nest a new profile() instead")
        if not _active:
            _install()
        _active.append(self)
        self._first = len(_events)
        self._end_ns = None
        self._start_ns = time.perf_counter_ns()
        return self

    def __exit__(self, *exc) -> None:
        self._end_ns = time.perf_counter_ns()
        try:
            self._events = [e for e in _events[self._first:] if e.start_ns >= self._start_ns]
        finally:
            _active.remove(self)
            if not _active:
                _uninstall()

    def _check_done(self, what: str) -> None:
        if self._start_ns is None:
            raise RuntimeError(f"profile.{what}: nothing was profiled; use it as `with profile() as prof:`")
        if self._end_ns is None:
            raise RuntimeError(f"profile.{what}: the profile is still running; ask after its `with` block")

    @property
    def total_time(self) -> float:
        """The profiled wall time, in seconds: from entering the ``with`` block to leaving it."""
        self._check_done("total_time")
        return (self._end_ns - self._start_ns) / 1e9

    @property
    def events(self) -> list[TraceEvent]:
        """Every timed call, in the order they began."""
        self._check_done("events")
        ordered = sorted(self._events, key=lambda e: (e.start_ns, -e.duration_ns))
        return [TraceEvent(e.name, e.category, (e.start_ns - self._start_ns) / 1e9, e.duration_ns / 1e9,
                           e.self_ns / 1e9, e.thread) for e in ordered]

    def key_averages(self) -> list[OpStats]:
        """One record per op (and per user range), the largest total time first."""
        self._check_done("key_averages")
        rows: dict[tuple[str, str], list] = {}   # (kind, name) -> [calls, fwd ns, bwd calls, bwd ns, range ns, self ns]
        for e in self._events:
            kind = "user" if e.category == USER else "op"
            row = rows.setdefault((kind, e.name), [0, 0, 0, 0, 0, 0])
            if e.category == BACKWARD:
                row[2] += 1
                row[3] += e.duration_ns
            else:
                row[0] += 1
                row[1 if e.category == FORWARD else 4] += e.duration_ns
            row[5] += e.self_ns
        wall = max(self._end_ns - self._start_ns, 1)
        stats = []
        for (kind, name), (calls, fwd, bwd_calls, bwd, inside, own) in rows.items():
            total = fwd + bwd + inside
            stats.append(OpStats(name, kind, calls, fwd / 1e9, bwd_calls, bwd / 1e9, total / 1e9, own / 1e9,
                                 100.0 * total / wall))
        return sorted(stats, key=lambda s: (-s.total_time, s.name))

    def table(self, sort_by: str = "total", row_limit: int | None = 20) -> str:
        """The per-op records as a text table (times in milliseconds), sorted by ``sort_by``:
        "total", "self", "forward", "backward", "calls" (largest first) or "name"; at most
        ``row_limit`` rows (None or -1: all)."""
        self._check_done("table")
        if sort_by not in _SORT_KEYS:
            raise ValueError(f"profile.table: sort_by must be one of {sorted(_SORT_KEYS)}, got {sort_by!r}")
        if row_limit is not None and (isinstance(row_limit, bool) or not isinstance(row_limit, int)
                                      or (row_limit < 1 and row_limit != -1)):
            raise ValueError(f"profile.table: row_limit must be a positive integer, None or -1, got {row_limit!r}")
        stats = sorted(self.key_averages(), key=_SORT_KEYS[sort_by])
        shown = stats if row_limit in (None, -1) else stats[:row_limit]
        return _format_table(shown, len(stats) - len(shown), self)

    def export_chrome_trace(self, path: str | os.PathLike) -> None:
        """Write the events as Chrome's trace-event JSON (``{"traceEvents": [...]}``, complete
        events, times in microseconds), replacing ``path`` only once the whole file is written."""
        self._check_done("export_chrome_trace")
        pid = os.getpid()
        trace = {"traceEvents": [
            {"name": e.name, "cat": e.category, "ph": "X", "ts": e.start * 1e6, "dur": e.duration * 1e6,
             "pid": pid, "tid": e.thread}
            for e in self.events
        ], "displayTimeUnit": "ms"}
        with atomic_write(path) as handle:
            json.dump(trace, codecs.getwriter("utf-8")(handle))


_SORT_KEYS = {
    "total": lambda s: (-s.total_time, s.name),
    "self": lambda s: (-s.self_time, s.name),
    "forward": lambda s: (-s.forward_time, s.name),
    "backward": lambda s: (-s.backward_time, s.name),
    "calls": lambda s: (-(s.calls + s.backward_calls), s.name),
    "name": lambda s: (s.name, s.kind),
}


def _format_table(stats: list[OpStats], hidden: int, prof: profile) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.3f}"

    header = ["name", "kind", "calls", "fwd total", "fwd mean", "bwd calls", "bwd total", "bwd mean", "total",
              "self", "% wall"]
    rows = []
    for s in stats:
        if s.kind == "user":
            forward, backward = ["-", "-"], ["-", "-", "-"]
        else:
            forward = [ms(s.forward_time), ms(s.forward_mean)]
            backward = [str(s.backward_calls), ms(s.backward_time), ms(s.backward_mean)]
        rows.append([s.name, s.kind, str(s.calls), *forward, *backward, ms(s.total_time), ms(s.self_time),
                     f"{s.percent:.1f}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]
    if hidden:
        out.append(f"... {hidden} more rows")
    wall = prof.total_time
    own = sum(e.self_ns for e in prof._events) / 1e9
    out.append(f"wall time {ms(wall)} ms; self times (without the events inside) add up to {ms(own)} ms "
               f"({100.0 * own / wall if wall else 0.0:.1f}%)")
    out.append("times in ms and inclusive: a range's total holds its ops', and ops run inside an op "
               "(a checkpoint's backward) count in both")
    return "\n".join(out)
