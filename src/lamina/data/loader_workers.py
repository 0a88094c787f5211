"""The worker side of :class:`lamina.data.DataLoader`: starting (or reusing) a pool of worker
threads or processes, handing them the batches to make, ``prefetch_factor`` batches ahead per
worker, and putting their results back in order, for map-style datasets (batch by batch) and
iterable ones (one stream per worker, read in turn). With ``num_workers=0`` the same methods
make the batches in the calling thread. :class:`_WorkerBatches` is a base class of
``DataLoader``; the guarantees are described in ``DataLoader``'s docstring.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from lamina.data.processes import ProcessPool
from lamina.data.workers import ENDED, FAILED, WorkerInfo, WorkerPool, worker_error

__all__: list[str] = []


class _WorkerBatches:
    """:class:`lamina.data.DataLoader`'s batches in order, made in the calling thread or by a
    pool of workers (module docstring)."""

    # -- map-style datasets --------------------------------------------------------
    def _indexed(self, order: np.ndarray, start: int, epoch: int) -> Iterator[Any]:
        stop = len(self)
        if self.num_workers == 0:
            for b in range(start, stop):
                yield self._make_batch(self._batch_indices(order, b), epoch, b)
            return
        pool, owned = self._acquire_pool(epoch)
        run = pool.start_run()
        ahead = self.prefetch_factor * pool.num_workers
        sent, ready = start, {}
        try:
            for b in range(start, stop):
                while sent < stop and sent - b < ahead:
                    task = self._task(pool, "_make_batch", self._batch_indices(order, sent), epoch, sent)
                    pool.submit(sent % pool.num_workers, run, sent, task)
                    sent += 1
                while b not in ready:
                    worker, index, value, status = self._next_result(pool, run, b % pool.num_workers, f"batch {b}")
                    ready[index] = (worker, value, status)
                worker, value, status = ready.pop(b)
                if status == FAILED:
                    raise worker_error(value, worker, b, traceback_text=getattr(value, "worker_traceback", None))
                yield value
        finally:
            self._release_pool(pool, owned)

    # -- iterable datasets -----------------------------------------------------------
    def _stream(self, epoch: int) -> Iterator[Any]:
        if self.num_workers == 0:
            yield from self._stream_batches(epoch, 0)
            return
        pool, owned = self._acquire_pool(epoch)
        run = pool.start_run()
        slots = pool.stream_slots(self.prefetch_factor)
        for w in range(pool.num_workers):
            pool.submit(w, run, w, self._task(pool, "_stream_batches", epoch, w), slots[w])
        pending: dict[int, deque] = {w: deque() for w in range(pool.num_workers)}
        turn = deque(range(pool.num_workers))
        try:
            while turn:
                w = turn.popleft()
                while not pending[w]:
                    worker, index, value, status = self._next_result(pool, run, w, "its next batch")
                    pending[worker].append((index, value, status))
                index, value, status = pending[w].popleft()
                if status == ENDED:
                    continue
                if status == FAILED:
                    raise worker_error(value, w, index, what="its batch",
                                       traceback_text=getattr(value, "worker_traceback", None))
                slots[w].release()
                turn.append(w)
                yield value
        finally:
            self._release_pool(pool, owned)

    # -- workers ---------------------------------------------------------------------
    def _acquire_pool(self, epoch: int) -> tuple[WorkerPool | ProcessPool, bool]:
        """A pool of workers and whether the caller owns it (closes it when done)."""
        with self._pool_lock:
            if self.persistent_workers and self._pool is not None and not self._pool.busy:
                return self._pool, False
            if self.worker_mode == "process":
                # The processes get a copy of the loader without its pools (see __getstate__).
                pool = ProcessPool(self._worker_infos(epoch), self.worker_init_fn, copy.copy(self),
                                   self.multiprocessing_context)
            else:
                pool = WorkerPool(self._worker_infos(epoch), self.worker_init_fn)
            if self.persistent_workers and self._pool is None:
                self._pool = pool
                weakref.finalize(self, pool.close)
                return pool, False
            return pool, True

    def _release_pool(self, pool: WorkerPool | ProcessPool, owned: bool) -> None:
        pool.end_run()
        if owned or pool.broken:
            pool.close()
        if pool.broken and self._pool is pool:
            self._pool = None                          # the next epoch starts new processes

    def _task(self, pool: WorkerPool | ProcessPool, method: str, *args: Any) -> Any:
        """Work for a worker: a call of ``self.<method>(*args)``; for a process, which holds a
        copy of the loader, the method's name and arguments."""
        if isinstance(pool, ProcessPool):
            return method, args
        return functools.partial(getattr(self, method), *args)

    def _next_result(self, pool: WorkerPool | ProcessPool, run: int, worker: int, what: str) -> tuple:
        """``pool.get(run)``, waiting at most ``timeout`` seconds when one is set."""
        result = pool.get(run, self.timeout or None)
        if result is None:
            raise TimeoutError(f"DataLoader: timeout={self.timeout:g} s passed without worker {worker} "
                               f"delivering {what}")
        return result

    def _worker_infos(self, epoch: int) -> list[WorkerInfo]:
        seeds = np.random.SeedSequence(self._batch_seed, spawn_key=(epoch,)).spawn(self.num_workers)
        return [WorkerInfo(w, self.num_workers, int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)), self.dataset)
                for w, s in enumerate(seeds)]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"], state["_pool_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()
