"""The loader's worker threads: :class:`WorkerInfo`, :func:`get_worker_info` and the pool.
(Worker processes are in :mod:`lamina.data.processes`; they follow the same protocol.)

Threads, not processes: NumPy releases the GIL while it copies arrays, fancy-indexes and
does most elementwise and reduction work, so batches made in threads overlap with the
training step, and the dataset and transforms are shared as they are (no pickling). Pure
Python work in a dataset or transform holds the GIL and gains little.

A task is a callable that makes one batch, or a generator of batches (one worker's share
of a stream). Results come back on one queue tagged with the run (one epoch's pass) they
belong to, so the results of an abandoned pass are told apart and dropped; tasks of an
abandoned run still waiting in a worker's inbox are skipped. The threads hold no
reference to the loader between tasks, so a loader that keeps its workers can still be
garbage-collected (and its workers then stop).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkerInfo", "get_worker_info"]

OK, FAILED, ENDED = "ok", "failed", "ended"


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker thread knows about itself (see :func:`get_worker_info`).

    ``id`` in ``range(num_workers)``; ``seed`` an integer derived from the loader's seed, the
    epoch the workers were started in and ``id``, for a dataset's own generator; ``dataset``
    the loader's dataset (the same object in every worker thread; in a worker process, the
    process's own copy).
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any


class _ThreadState(threading.local):
    info: WorkerInfo | None = None


_thread = _ThreadState()


def enter_worker(info: WorkerInfo) -> None:
    """Mark the calling thread as worker ``info`` (what :func:`get_worker_info` returns there)."""
    _thread.info = info


def get_worker_info() -> WorkerInfo | None:
    """In a loader's worker thread or process, its :class:`WorkerInfo`; elsewhere None.

    An :class:`~lamina.data.IterableDataset` calls it in ``__iter__`` to read only its
    share of the stream (e.g. every ``num_workers``-th record from the ``id``-th).
    """
    return _thread.info


class _Control:
    """State the pool shares with its threads: the run still wanted, and whether to stop."""

    def __init__(self) -> None:
        self.run = 0
        self.closed = False


class WorkerPool:
    """``len(infos)`` daemon threads, each with its own inbox of tasks, one results queue."""

    broken = False          # a pool of threads stays usable; a process pool breaks when a process dies

    def __init__(self, infos: list[WorkerInfo], init_fn: Callable[[int], Any] | None) -> None:
        self._control = _Control()
        self._inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in infos]
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self.busy = False
        self._threads = [
            threading.Thread(target=_work, args=(info, init_fn, inbox, self._results, self._control),
                             name=f"lamina-loader-worker-{info.id}", daemon=True)
            for info, inbox in zip(infos, self._inboxes)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def num_workers(self) -> int:
        return len(self._threads)

    @property
    def closed(self) -> bool:
        return self._control.closed

    def start_run(self) -> int:
        """Begin a new pass; tasks and results of earlier passes are dropped from now on."""
        self._control.run += 1
        self.busy = True
        return self._control.run

    def end_run(self) -> None:
        """Abandon the current pass (its pending tasks are skipped, its results dropped)."""
        self._control.run += 1
        self.busy = False

    def submit(self, worker: int, run: int, index: int, task: Callable[[], Any],
               slots: threading.Semaphore | None = None) -> None:
        """Queue ``task`` for ``worker``: a callable giving one result, or with ``slots`` a
        callable giving a generator, whose results each take one of the slots first."""
        self._inboxes[worker].put((run, index, task, slots))

    def stream_slots(self, prefetch: int) -> list[threading.Semaphore]:
        """Per worker, the slots its stream's results take (``prefetch`` free at first); the
        loader releases one for each result it consumes."""
        return [threading.Semaphore(prefetch) for _ in self._threads]

    def get(self, run: int, timeout: float | None = None) -> tuple[int, int, Any, str] | None:
        """The next result of ``run``: (worker, index, value or exception, status); None when
        ``timeout`` seconds pass without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            try:
                if wait <= 0:
                    return None
                result_run, worker, index, value, status = self._results.get(timeout=wait)
            except queue.Empty:
                dead = [t.name for t in self._threads if not t.is_alive()]
                if dead:
                    raise RuntimeError(f"DataLoader: worker thread(s) {dead} stopped unexpectedly") from None
                continue
            if result_run == run:
                return worker, index, value, status

    def close(self) -> None:
        """Stop the threads (each finishes the batch it is making) and wait for them."""
        if self._control.closed:
            return
        self._control.closed = True
        for inbox in self._inboxes:
            inbox.put(None)
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join()


def _work(info: WorkerInfo, init_fn: Callable[[int], Any] | None, inbox: queue.SimpleQueue,
          results: queue.SimpleQueue, control: _Control) -> None:
    enter_worker(info)
    init_error: BaseException | None = None
    if init_fn is not None:
        try:
            init_fn(info.id)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            init_error = error
    while True:
        task = inbox.get()
        if task is None:
            return
        run, index, make, slots = task
        del task
        if control.closed or control.run != run:
            continue
        if init_error is not None:
            results.put((run, info.id, index, init_error, FAILED))
        elif slots is None:
            try:
                results.put((run, info.id, index, make(), OK))
            except BaseException as error:  # noqa: BLE001 - handed to the main thread
                results.put((run, info.id, index, error, FAILED))
        else:
            _stream(make, slots, run, info.id, results, control)
        del make


def _stream(make: Callable[[], Any], slots: threading.Semaphore, run: int, worker: int,
            results: queue.SimpleQueue, control: _Control) -> None:
    """Put each item of ``make()`` on ``results`` (numbered from 0) as slots free up, then
    an end marker; stop early when the run is abandoned."""
    count = 0
    items = None
    try:
        items = iter(make())
        for item in items:
            while not slots.acquire(timeout=0.05):
                if control.closed or control.run != run:
                    return
            if control.closed or control.run != run:
                return
            results.put((run, worker, count, item, OK))
            count += 1
        results.put((run, worker, count, None, ENDED))
    except BaseException as error:  # noqa: BLE001 - handed to the main thread
        results.put((run, worker, count, error, FAILED))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def worker_error(error: BaseException, worker: int, batch: int, what: str = "batch",
                 traceback_text: str | None = None) -> BaseException:
    """An exception for the main thread naming the worker and batch, of the same type as
    ``error`` where that type takes a message (else RuntimeError), chained to it. The
    traceback of an error raised in another process comes as ``traceback_text`` and ends
    the message."""
    message = f"DataLoader worker {worker} failed on {what} {batch}: {type(error).__name__}: {error}"
    if traceback_text:
        message += f"\n\nTraceback in the worker process:\n{traceback_text.rstrip()}"
    try:
        raised = type(error)(message)
    except Exception:  # noqa: BLE001 - a type whose constructor takes other arguments
        raised = RuntimeError(message)
    if not isinstance(raised, BaseException) or str(raised) != message:
        raised = RuntimeError(message)
    raised.__cause__ = error
    return raised
