"""``spawn``: start one process per rank, as ``torch.multiprocessing.spawn``.

Each process runs ``fn(rank, *args)``. An exception in one is sent to the parent as text (with
its traceback), the other processes are terminated, and the parent raises
:class:`ProcessRaisedException` naming the rank. A process that ends without raising (killed,
``os._exit``) gives :class:`ProcessExitedException`. When the first failure reported is only
the consequence of another (a rank whose peer went away), the parent waits a moment for the
failure that caused it and reports that one.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from lamina.distributed.group import DistributedError

__all__ = ["ProcessContext", "ProcessExitedException", "ProcessRaisedException", "spawn"]

CAUSE_WAIT_S = 2.0
"""How long the parent waits for the failure that caused a "peer went away" failure."""
TERMINATE_WAIT_S = 5.0


class ProcessRaisedException(RuntimeError):
    """The function raised in the process of rank ``rank``; the message holds its traceback."""

    def __init__(self, message: str, rank: int, pid: int) -> None:
        super().__init__(message)
        self.rank, self.error_index, self.pid = rank, rank, pid


class ProcessExitedException(RuntimeError):
    """The process of rank ``rank`` ended with ``exit_code`` (negative: killed by a signal) without raising."""

    def __init__(self, message: str, rank: int, pid: int, exit_code: int) -> None:
        super().__init__(message)
        self.rank, self.error_index, self.pid, self.exit_code = rank, rank, pid, exit_code


def spawn(fn: Callable, args: tuple = (), nprocs: int = 1, join: bool = True, daemon: bool = False,
          start_method: str = "spawn") -> ProcessContext | None:
    """Run ``fn(rank, *args)`` in ``nprocs`` new processes, ranks 0 .. nprocs - 1.

    With ``join=True`` wait for all of them (raising if one fails, see the module's text);
    otherwise return the :class:`ProcessContext` to ``join()`` later. ``start_method``:
    ``"spawn"`` (a fresh interpreter per process, as PyTorch: ``fn`` and ``args`` must pickle,
    so define ``fn`` at module level) or ``"fork"`` (POSIX; fast, copies this process).
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"spawn: nprocs must be a positive integer; got {nprocs!r}")
    if not callable(fn):
        raise TypeError(f"spawn: fn must be callable, as fn(rank, *args); got {type(fn).__name__}")
    context = multiprocessing.get_context(start_method)
    if start_method != "fork":
        try:
            pickle.dumps((fn, tuple(args)))
        except Exception as error:
            raise TypeError(f"spawn: with start_method={start_method!r} fn and args are pickled to start each "
                            f"process, and they cannot be ({type(error).__name__}: {error}); define fn at module "
                            "level (not a lambda or local function), or use start_method='fork'") from error
    processes, readers = [], []
    try:
        for rank in range(nprocs):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(target=_run, args=(fn, rank, tuple(args), writer), daemon=daemon,
                                      name=f"lamina-rank-{rank}")
            process.start()
            writer.close()
            processes.append(process)
            readers.append(reader)
    except BaseException:
        ProcessContext(processes, readers).terminate()
        raise
    spawned = ProcessContext(processes, readers)
    if not join:
        return spawned
    try:
        while not spawned.join():
            pass
    except BaseException:                       # Ctrl-C, or a failure: no process is left behind
        spawned.terminate()
        raise
    return None


class ProcessContext:
    """The processes started by :func:`spawn`."""

    def __init__(self, processes: list, readers: list) -> None:
        self.processes, self._readers = processes, readers

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until done) for the processes; True once all ended
        well, False on timeout; raises (terminating the others) when one fails."""
        sentinels = {process.sentinel: rank for rank, process in enumerate(self.processes)}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [process.exitcode for process in self.processes]     # read once: a process may end meanwhile
            for rank, code in enumerate(codes):
                if code not in (None, 0):
                    self._fail(rank)
            running = [s for s, rank in sentinels.items() if codes[rank] is None]
            if not running:
                return True
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not multiprocessing.connection.wait(running, left):
                return False

    def _fail(self, rank: int) -> None:
        failure = self._failure_of(rank)
        if failure[1]:                                # a peer went away: find the rank that caused it
            deadline = time.monotonic() + CAUSE_WAIT_S
            while time.monotonic() < deadline:
                causes = [self._failure_of(r) for r, p in enumerate(self.processes) if r != rank and
                          p.exitcode not in (None, 0)]
                causes = [cause for cause in causes if not cause[1]]
                if causes:
                    failure = causes[0]
                    break
                if all(p.exitcode is not None for p in self.processes):
                    break
                time.sleep(0.01)
        self.terminate()
        raise failure[0]

    def _failure_of(self, rank: int) -> tuple[Exception, bool]:
        """(the exception to raise for rank ``rank``'s failure, whether it only reports a peer gone)."""
        process, reader = self.processes[rank], self._readers[rank]
        if reader.poll():
            try:
                text, peer_gone = reader.recv()
                return ProcessRaisedException(f"spawn: the process of rank {rank} (pid {process.pid}) raised:\n\n"
                                              f"{text}", rank, process.pid), peer_gone
            except (EOFError, OSError):
                pass
        code = process.exitcode
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return ProcessExitedException(f"spawn: the process of rank {rank} (pid {process.pid}) {how} without "
                                      "raising an exception", rank, process.pid, code), False

    def terminate(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL after a while)."""
        for process in self.processes:
            if process.exitcode is None:
                process.terminate()
        deadline = time.monotonic() + TERMINATE_WAIT_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()


def _run(fn: Callable, rank: int, args: tuple, errors: Any) -> None:
    try:
        fn(rank, *args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(1)
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        errors.send(("".join(traceback.format_exception(error)), isinstance(error, DistributedError)))
        errors.close()
        sys.exit(1)
