"""The loader's worker processes: :class:`ProcessPool`, the counterpart of the thread pool.

Each process holds its own copy of the batch maker (the loader without its pools: dataset,
transforms, seeds), inherited with ``fork`` or pickled once at start with ``spawn`` and
``forkserver``. A task names a method of the maker and its arguments (an index array and
two integers), so only small messages go out; results come back on one pipe per process.

A result is pickled with protocol 5 and its contiguous arrays travel out of band: the
process writes their memory straight into the pipe and the main process reads it into a
buffer of its own that becomes the array's memory, so an array is copied twice, by the
kernel, as through shared memory (copied into a block by the process, out of it by the
main process). ``benchmarks/loader_processes.py`` times both: for a 38.5 MB array, 56 ms
through the pipe, 50 ms through shared memory, 91 ms pickled in band (2 cores). The pipe
is kept: the gain is small, and it needs neither room in ``/dev/shm`` (small in
containers) nor the clean-up of blocks left behind by a process that dies.

The main process waits on the pipes and the processes' sentinels together, so a process
that dies (killed, ``os._exit``, a crash in C code) is noticed at once and reported, with
the batch it was making, instead of being waited for. The run wanted and the stream
credits live in shared memory; the processes poll them, as threads read the pool's state.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import pickle
import queue
import signal
import time
import traceback
from collections import deque
from collections.abc import Iterator
from typing import Any

from lamina.data.workers import ENDED, FAILED, OK, WorkerInfo, enter_worker

__all__ = ["ProcessPool", "START_METHODS"]

START_METHODS = ("fork", "spawn", "forkserver")
CLOSE_WAIT_S = 5.0
"""How long :meth:`ProcessPool.close` lets the processes finish before terminating them."""
CREDIT_POLL_S = 0.002
PARENT_POLL_S = 1.0


class _Credits:
    """One worker's stream slots in shared memory: it may have sent ``allowed[id]`` results."""

    def __init__(self, allowed: Any, worker: int) -> None:
        self._allowed, self._worker = allowed, worker

    def release(self) -> None:
        self._allowed[self._worker] += 1


class ProcessPool:
    """``len(infos)`` daemon processes, each with its own inbox of tasks and its own results pipe.

    ``maker`` is the object whose methods make the batches; ``context`` a start method name,
    a multiprocessing context, or None for multiprocessing's default.
    """

    def __init__(self, infos: list[WorkerInfo], init_fn: Any, maker: Any, context: Any = None) -> None:
        ctx = context if isinstance(context, multiprocessing.context.BaseContext) \
            else multiprocessing.get_context(context)
        self.start_method = ctx.get_start_method()
        self.busy = False
        self.broken = False
        self._closed = False
        self._run = ctx.RawValue("q", 0)
        self._stop = ctx.RawValue("b", 0)
        self._allowed = ctx.RawArray("q", len(infos))
        self._inboxes = [ctx.Queue() for _ in infos]
        self._readers: list[Any] = []
        self._pending: list[deque] = [deque() for _ in infos]
        self._processes: list[Any] = []
        shared = (self._run, self._stop, self._allowed)
        if self.start_method != "fork":
            _check_picklable(self.start_method, maker, init_fn)
        try:
            for info, inbox in zip(infos, self._inboxes):
                # Each pipe is made just before its process, and the main process drops its
                # writing end at once, so only that process can write to it: when it dies,
                # the pipe ends (a later sibling forked with the end open would keep it open).
                reader, writer = ctx.Pipe(duplex=False)
                self._readers.append(reader)
                process = ctx.Process(
                    target=_serve, name=f"lamina-loader-worker-{info.id}", daemon=True,
                    args=((info.id, info.num_workers, info.seed), maker, init_fn, inbox, writer, shared),
                )
                try:
                    process.start()
                finally:
                    writer.close()
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        return len(self._inboxes)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def start_run(self) -> int:
        """Begin a new pass; tasks and results of earlier passes are dropped from now on."""
        self._run.value += 1
        self.busy = True
        for pending in self._pending:
            pending.clear()
        return self._run.value

    def end_run(self) -> None:
        """Abandon the current pass (its pending tasks are skipped, its results dropped)."""
        self._run.value += 1
        self.busy = False

    def stream_slots(self, prefetch: int) -> list[_Credits]:
        """Per worker, the stream results it may send ahead (``prefetch`` at first); the
        loader releases one for each result it consumes."""
        for w in range(self.num_workers):
            self._allowed[w] = prefetch
        return [_Credits(self._allowed, w) for w in range(self.num_workers)]

    def submit(self, worker: int, run: int, index: int, task: tuple[str, tuple], slots: Any = None) -> None:
        """Queue ``task`` = (method name, arguments) for ``worker``; with ``slots`` the method
        gives a generator whose results are sent as the worker's credits allow."""
        self._pending[worker].append("its share of the stream" if slots is not None else f"batch {index}")
        self._inboxes[worker].put((run, index, task, slots is not None))

    def get(self, run: int, timeout: float | None = None) -> tuple[int, int, Any, str] | None:
        """The next result of ``run``: (worker, index, value or exception, status); None when
        ``timeout`` seconds pass without one. A failure's exception carries the worker's
        traceback text as ``worker_traceback``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sentinels = {process.sentinel: w for w, process in enumerate(self._processes)}
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            ready = multiprocessing.connection.wait(self._readers + list(sentinels), left)
            for w, reader in enumerate(self._readers):
                if reader not in ready:
                    continue
                result = _receive(reader)
                if result is None:                    # the pipe ended: the process is gone
                    self._died(w)
                if result[0] == run:
                    _, worker, index, value, status = result
                    if status != OK or self._pending[worker][0].startswith("batch"):
                        self._pending[worker].popleft()
                    return worker, index, value, status
            for sentinel in ready:
                w = sentinels.get(sentinel)
                if w is not None and not self._readers[w].poll():   # results it sent are read first
                    self._died(w)

    def _died(self, worker: int) -> None:
        process = self._processes[worker]
        process.join()
        self.broken = True
        code = process.exitcode
        how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 \
            else f"exit code {code}"
        doing = f"while making {self._pending[worker][0]}" if self._pending[worker] else "while idle"
        raise RuntimeError(
            f"DataLoader: worker process {worker} (pid {process.pid}) ended unexpectedly ({how}) {doing}; "
            "a process ends this way when the system runs out of memory (see its error output, and the "
            "kernel log), or when the dataset or a transform calls os._exit or crashes in C code"
        )

    def close(self) -> None:
        """Stop the processes: each finishes the batch it is making (for up to
        ``CLOSE_WAIT_S`` seconds, then it is terminated) and its pipe is drained meanwhile."""
        if self._closed:
            return
        self._closed = True
        self._stop.value = 1
        for inbox in self._inboxes:
            with contextlib.suppress(Exception):
                inbox.put(None)
        deadline = time.monotonic() + CLOSE_WAIT_S
        alive = [w for w, p in enumerate(self._processes) if p.is_alive()]
        while alive and time.monotonic() < deadline:
            waiting = [self._readers[w] for w in alive] + [self._processes[w].sentinel for w in alive]
            for reader in multiprocessing.connection.wait(waiting, deadline - time.monotonic()):
                if reader in self._readers:
                    with contextlib.suppress(EOFError, OSError):
                        reader.recv_bytes()        # discard, so that a process blocked writing can go on
            alive = [w for w in alive if self._processes[w].is_alive()]
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for inbox in self._inboxes:
            inbox.cancel_join_thread()
            inbox.close()
        for reader in self._readers:
            reader.close()


def _check_picklable(start_method: str, maker: Any, init_fn: Any) -> None:
    """Raise a TypeError saying what to do if the batch maker or ``init_fn`` does not pickle.
    Arrays are not copied: their buffers are declared out of band and dropped."""
    for what, value in (("the dataset, transforms or collate_fn", maker), ("worker_init_fn", init_fn)):
        try:
            pickle.Pickler(_Discard(), protocol=5, buffer_callback=lambda buffer: False).dump(value)
        except Exception as error:
            raise TypeError(
                f"DataLoader: worker_mode='process' with multiprocessing_context={start_method!r} pickles "
                f"{what} to start each worker process, and it cannot be pickled ({type(error).__name__}: {error}); "
                "define them at module level (not as lambdas or local functions), or use "
                "multiprocessing_context='fork' (Linux) or worker_mode='thread'"
            ) from error


class _Discard:
    def write(self, data: bytes) -> None:
        pass


# -- transport -------------------------------------------------------------------------

def _pack(header: tuple, value: Any) -> list[Any]:
    """The messages that carry ``header`` and ``value``: sizes, the pickled value, then its
    out-of-band buffers. Raises when ``value`` cannot be pickled."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raw = [buffer.raw() for buffer in buffers]
    return [pickle.dumps((header, [view.nbytes for view in raw]), protocol=5), payload, *raw]


def _receive(connection: Any) -> tuple | None:
    """One result sent by :func:`_send`: (run, worker, index, value, status), the value of a
    failure being an exception; None if the process ended before sending a whole one."""
    try:
        (run, worker, index, status, error_text, traceback_text), sizes = pickle.loads(connection.recv_bytes())
        payload = connection.recv_bytes()
        buffers = []
        for size in sizes:
            buffer = bytearray(size)
            if size:
                connection.recv_bytes_into(buffer)
            else:
                connection.recv_bytes()
            buffers.append(buffer)
    except (EOFError, OSError):
        return None
    try:
        value = pickle.loads(payload, buffers=buffers)
    except Exception as error:  # noqa: BLE001 - reported as the worker's failure
        if status == OK:
            value, status = error, FAILED
            traceback_text = "".join(traceback.format_exception(error))
        else:
            value = RuntimeError(error_text)
    if status == FAILED:
        value.worker_traceback = traceback_text
    return run, worker, index, value, status


def _send_result(connection: Any, run: int, worker: int, index: int, value: Any, status: str) -> None:
    if status == FAILED:
        messages = _failure(run, worker, index, value)
    else:
        try:
            messages = _pack((run, worker, index, status, None, None), value)
        except Exception as error:  # noqa: BLE001 - a result that cannot be pickled is the worker's failure
            failure = TypeError(f"the {type(value).__name__} it made cannot be pickled to be sent to the main "
                                f"process ({type(error).__name__}: {error})")
            failure.__cause__ = error
            messages = _failure(run, worker, index, failure)
    for message in messages:
        connection.send_bytes(message)


def _failure(run: int, worker: int, index: int, error: BaseException) -> list[Any]:
    text = "".join(traceback.format_exception(error))
    header = (run, worker, index, FAILED, f"{type(error).__name__}: {error}", text)
    try:
        return _pack(header, error)
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
        return _pack(header, RuntimeError(f"{type(error).__name__}: {error}"))


# -- the worker process ----------------------------------------------------------------

def _serve(identity: tuple[int, int, int], maker: Any, init_fn: Any, inbox: Any, results: Any,
           shared: tuple) -> None:
    """A worker process's loop: tasks from ``inbox`` until None, the pool's stop flag, or the
    main process going away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C is the main process's to handle
    parent = multiprocessing.parent_process()         # (with "forkserver" too, the main process)
    run_wanted, stop, allowed = shared
    worker = identity[0]
    enter_worker(WorkerInfo(*identity, dataset=maker.dataset))
    init_error = None
    if init_fn is not None:
        try:
            init_fn(worker)
        except BaseException as error:  # noqa: BLE001 - handed to the main process
            init_error = error
    try:
        while True:
            try:
                task = inbox.get(timeout=PARENT_POLL_S)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
            if task is None or stop.value:
                return
            run, index, (name, args), streaming = task
            if run_wanted.value != run:
                continue
            if init_error is not None:
                _send_result(results, run, worker, index, init_error, FAILED)
            elif streaming:
                _stream(getattr(maker, name)(*args), run, worker, results, run_wanted, stop, allowed)
            else:
                try:
                    value, status = getattr(maker, name)(*args), OK
                except BaseException as error:  # noqa: BLE001 - handed to the main process
                    value, status = error, FAILED
                _send_result(results, run, worker, index, value, status)
                del value
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return                                         # the main process closed the pool


def _stream(items: Iterator[Any], run: int, worker: int, results: Any, run_wanted: Any, stop: Any,
            allowed: Any) -> None:
    """Send each item of ``items`` (numbered from 0) as credits allow, then an end marker."""
    count = 0
    try:
        for item in items:
            while count >= allowed[worker]:
                if stop.value or run_wanted.value != run:
                    return
                time.sleep(CREDIT_POLL_S)
            if stop.value or run_wanted.value != run:
                return
            _send_result(results, run, worker, count, item, OK)
            count += 1
        _send_result(results, run, worker, count, None, ENDED)
    except (BrokenPipeError, ConnectionResetError):
        raise
    except BaseException as error:  # noqa: BLE001 - handed to the main process
        _send_result(results, run, worker, count, error, FAILED)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
