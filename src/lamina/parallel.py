"""lamina's own threads: every core busy in every pass, copies and adds included.

NumPy runs its element-wise loops on one core and only its matrix products (in OpenBLAS)
on all of them, but it releases the GIL inside both. So lamina cuts the large passes of
convolution, pooling and batch norm into chunks over the rows (the batch) and runs the
chunks on a few threads at once, each thread with single-threaded BLAS
(:func:`map_chunks`, :func:`map_sum`, :func:`split`). Element-wise passes stay on one
thread unless they are large (a million values: one core does not saturate the memory
bus) or each element costs real arithmetic, as tanh and exp do (:func:`elementwise_chain`).

OpenBLAS's own threads and lamina's do not mix: after a multi-threaded call OpenBLAS's
workers keep spinning for about 0.1 s, and next to lamina's threads on the same cores they
halved the speed of the following convolution (measured on 2 cores). So the products that
lamina computes outside its chunks go through :func:`matmul`, which lets OpenBLAS use its
threads only while lamina's have been idle for QUIET_S seconds (a network of dense layers
only, where OpenBLAS's threads are the fastest way); otherwise OpenBLAS runs on one thread
and large products are split over lamina's threads. NumPy code outside lamina keeps
OpenBLAS's own setting.

Every chunk writes its own slice of the output; partial sums are added per thread in a
fixed order, then across threads in thread order, so for a given number of threads the
results of the chunked passes do not depend on timing. The one choice made by timing is
:func:`matmul`'s, and the BLAS thread count, which one thread's :class:`one_blas_thread`
may restore while another's products run. Under :func:`lamina.use_deterministic_algorithms`
both are fixed: products always take the route for busy threads (split by shape and thread
count, single-threaded BLAS), and every BLAS library is held on one thread until the mode
is turned off, so each result depends only on the inputs and :func:`set_num_threads`.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

from lamina import backend

MIN_ELEMENTS = 1 << 18
"""Passes smaller than this (elements touched) stay on the calling thread, where a
hand-off to another thread would cost more than it saves."""

MIN_GEMM_FLOPS = 1 << 22
"""Matrix products below this many floating-point operations are not split."""

QUIET_S = 1.0
"""Products use OpenBLAS's own threads unless lamina's threads ran a pass within this many
seconds (see the module docstring)."""

_last_region = [float("-inf")]
_threads = max(1, min(os.cpu_count() or 1, 8))
_workers: list = []
_workers_key = (-1, 0)
_dispatch = threading.Lock()               # one caller at a time hands out work to the workers
_deterministic = False                      # follows backend.use_deterministic_algorithms


class _ThreadState(threading.local):
    inside = False                          # running one of lamina's parallel calls


_local = _ThreadState()


def set_num_threads(n: int) -> None:
    """Threads lamina runs its passes on (1: everything on the calling thread)."""
    global _threads
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, got {n!r}")
    _threads = int(n)


def get_num_threads() -> int:
    """Threads lamina runs its passes on (the number of cores by default, at most 8)."""
    return _threads


class _Worker:
    """One of lamina's threads: sleeps on a lock until handed a call, runs it, then releases
    a second lock for the caller. A hand-off costs about 20 us, against about 50 us through a
    concurrent.futures pool: it counts, as a training step makes dozens."""

    def __init__(self):
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._call = None
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, name="lamina", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            call = self._call
            if call is None:                   # retired
                return
            try:
                call()
            except BaseException as error:     # noqa: BLE001 - handed back to the caller
                self._error = error
            self._done.release()

    def start(self, call) -> None:
        self._call, self._error = call, None
        self._go.release()

    def join(self) -> BaseException | None:
        """Wait for the call to finish; its exception, if it raised one."""
        self._done.acquire()
        return self._error

    def retire(self) -> None:
        self._call = None
        self._go.release()


def _current_workers() -> list:
    """The _threads - 1 workers (made anew in a forked child or after set_num_threads)."""
    global _workers, _workers_key
    key = (os.getpid(), _threads)
    if _workers_key != key:
        if _workers_key[0] == key[0]:
            for worker in _workers:
                worker.retire()
        _workers = [_Worker() for _ in range(_threads - 1)]
        _workers_key = key
    return _workers


class _Blas:
    """Thread control of every BLAS library loaded in the process (NumPy's OpenBLAS, and
    SciPy's when its wheel brings its own; MKL or BLIS work the same way), found once
    through threadpoolctl: a (get, set) pair of functions per library, OpenBLAS's own C
    functions where threadpoolctl can hand them out (a toggle then costs about 1 us, and a
    training step makes dozens). Empty when threadpoolctl is missing or finds none."""

    libraries: list[tuple] = []
    searched = False

    @classmethod
    def get(cls) -> list[tuple]:
        if not cls.searched:
            cls.searched = True
            try:
                from threadpoolctl import ThreadpoolController
                found = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
            except Exception:  # noqa: BLE001 - no threadpoolctl, or a library it cannot drive
                found = []
            cls.libraries = [cls._functions(c) for c in found]
            if _deterministic:
                _pin_blas()
        return cls.libraries

    @staticmethod
    def _functions(controller) -> tuple:
        get = set_ = None
        if controller.internal_api == "openblas":
            try:
                get = controller._get_symbol("openblas_get_num_threads")
                set_ = controller._get_symbol("openblas_set_num_threads")
            except Exception:  # noqa: BLE001 - another threadpoolctl: its public methods below
                get = set_ = None
        if get is None or set_ is None:
            get, set_ = controller.get_num_threads, controller.set_num_threads
        return get, set_


class one_blas_thread:
    """Every BLAS library on a single thread inside the ``with`` block (restored afterwards)."""

    __slots__ = ("_changed",)

    def __enter__(self) -> None:
        changed = []
        if backend.xp.__name__ == "numpy":
            for get, set_ in _Blas.get():
                before = get()
                if before != 1:
                    set_(1)
                    changed.append((set_, before))
        self._changed = changed

    def __exit__(self, *exc) -> None:
        for set_, before in self._changed:
            set_(before)


def find_blas_again() -> None:
    """Look for the BLAS libraries again at the next :class:`one_blas_thread` (after an
    import that may have loaded another one, such as SciPy's)."""
    _Blas.searched = False


_pinned: list[tuple] = []
"""(set function, thread count to give back) of each BLAS library the deterministic mode
moved to one thread."""


def _pin_blas() -> None:
    for get, set_ in _Blas.libraries:
        before = get()
        if before != 1:
            set_(1)
            _pinned.append((set_, before))


def _follow_deterministic(mode: bool) -> None:
    """Fix (or free again) what timing could change: see the module docstring."""
    global _deterministic
    _deterministic = mode
    if mode:
        if backend.xp.__name__ == "numpy":
            _Blas.get()
            _pin_blas()
    else:
        for set_, before in _pinned:
            set_(before)
        _pinned.clear()


backend.on_deterministic_change(_follow_deterministic)


def blas_num_threads() -> list[int]:
    """The thread count of each BLAS library lamina controls (see :class:`one_blas_thread`)."""
    return [get() for get, _ in _Blas.get()]


def blas_threads_welcome() -> bool:
    """Whether a BLAS call made now may use the library's own threads: lamina's threads
    have been idle for QUIET_S seconds and this is not one of them (see the module docstring);
    never under the deterministic mode."""
    return not (_deterministic or _local.inside) and time.perf_counter() - _last_region[0] > QUIET_S


def _parallel_ok(count: int, work: int, threshold: int) -> bool:
    return (min(_threads, count) > 1 and work >= threshold and not _local.inside
            and backend.xp.__name__ == "numpy")


def _run_all(calls) -> None:
    """Run the zero-argument ``calls`` (at most one per thread), the first on this thread.
    If another thread is already using the workers, this one runs its calls itself."""
    def inside(call):
        _local.inside = True
        try:
            call()
        finally:
            _local.inside = False

    _last_region[0] = time.perf_counter()
    if not _dispatch.acquire(blocking=False):
        for call in calls:
            inside(call)
        return
    try:
        workers = _current_workers()[:len(calls) - 1]
        for worker, call in zip(workers, calls[1:]):
            worker.start(lambda call=call: inside(call))
        error = None
        try:
            for call in [calls[0]] + calls[len(workers) + 1:]:   # any the workers cannot take
                inside(call)
        except BaseException as raised:        # noqa: BLE001 - re-raised once all have finished
            error = raised
        for worker in workers:                 # join every one, whatever happened
            failed = worker.join()
            error = error or failed
    finally:
        _dispatch.release()
    if error is not None:
        raise error


GPU_CHUNK_BYTES = 1 << 28
"""On a GPU (CuPy) a pass is cut only to bound its temporaries at about this size: each
chunk costs one launch of every kernel it runs, which outweighs any cache effect there."""


def chunk_bounds(n: int, bytes_per_item: int, target_bytes: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into equal runs of about ``target_bytes`` at most, as many as the
    threads at least (or a multiple of that, so that they all get the same share)."""
    if backend.xp.__name__ != "numpy":       # a GPU: each chunk costs a launch per kernel
        count = max(1, min(n, -(-n * bytes_per_item // GPU_CHUNK_BYTES)))
        return [(n * i // count, n * (i + 1) // count) for i in range(count)]
    count = max(-(-n * bytes_per_item // max(target_bytes, 1)), 1)
    count = max(1, min(n, -(-count // _threads) * _threads))
    return [(n * i // count, n * (i + 1) // count) for i in range(count)]


def map_chunks(fn, count: int, work: int) -> list:
    """``[fn(0), ..., fn(count - 1)]``, the calls shared among the threads (each takes the
    next chunk not yet taken, so a thread held up by the GIL or a cold cache does not keep
    the others waiting), with single-threaded BLAS. Each call must write only its own
    outputs; ``work`` (elements touched in all) decides whether threads are worth it."""
    if not _parallel_ok(count, work, MIN_ELEMENTS):
        with one_blas_thread():
            return [fn(i) for i in range(count)]
    results = [None] * count
    next_chunk = itertools.count()                 # next() on it is atomic under the GIL

    def run():
        while (i := next(next_chunk)) < count:
            results[i] = fn(i)

    with one_blas_thread():
        _run_all([run] * min(_threads, count))
    return results


def map_sum(fn, count: int, work: int):
    """``fn(0) + ... + fn(count - 1)`` (None results skipped; None if all are), the calls
    shared among the threads in a fixed order (thread t takes t, t + T, ..., unlike
    :func:`map_chunks`, so that the sum does not depend on timing). Each thread adds up its own results
    as they come, so only one partial sum per thread is alive at a time; the partial sums
    are then added in thread order (the same result for the same number of threads)."""
    k = min(_threads, count) if _parallel_ok(count, work, MIN_ELEMENTS) else 1
    totals = [None] * k

    def worker(first: int):
        def run():
            for i in range(first, count, k):
                part = fn(i)
                if part is not None:
                    if totals[first] is None:
                        totals[first] = part
                    else:
                        totals[first] += part
        return run

    with one_blas_thread():
        if k == 1:
            worker(0)()
        else:
            _run_all([worker(t) for t in range(k)])
    found = [t for t in totals if t is not None]
    return sum(found[1:], found[0]) if found else None


def split(fn, n: int, elements: int) -> None:
    """Call ``fn(lo, hi)`` on ``min(threads, n)`` consecutive chunks covering ``range(n)``,
    in parallel when the pass touches at least MIN_ELEMENTS elements. Chunks must write
    disjoint outputs."""
    if not _parallel_ok(n, elements, MIN_ELEMENTS):
        with one_blas_thread():
            fn(0, n)
        return
    k = min(_threads, n)
    bounds = [n * i // k for i in range(k + 1)]
    with one_blas_thread():
        _run_all([lambda i=i: fn(bounds[i], bounds[i + 1]) for i in range(k)])


ELEMENTWISE_MIN = 1 << 19
"""Element-wise passes go to lamina's threads when elements x cost reach this (see
:func:`elementwise_chain`)."""


ELEMENTWISE_BLOCK = 1 << 18
"""Within a thread, :func:`elementwise_chain` runs its kernel over blocks of about this many
values, so that a chain of several passes finds its temporaries in the cache."""


def elementwise_chain(kernel, arrays: list, cost: int = 1, channels: bool = False) -> None:
    """``kernel(*parts)`` over matching consecutive parts of ``arrays`` (one shape, inputs and
    outputs alike), one share per thread, each share in blocks of ELEMENTWISE_BLOCK values:
    flat runs of values, or with ``channels`` runs of whole rows along the last axis (so
    that a per-channel operand lines up with each part).

    ``cost`` is what one element of the kernel is worth in plain memory passes, whatever the
    number of its NumPy calls: 1 for a chain of compares, multiplies and adds, about 4 for
    tanh or exp. Threads take the shares when elements x cost reach ELEMENTWISE_MIN:
    measured on 2 cores, a chain over a million values runs 1.3-1.9x faster on two threads
    (one core does not saturate the memory bus), while below about half a million the
    hand-off costs more than it saves. The blocks make chains of several passes faster
    (sigmoid, ELU and LeakyReLU by 12-22% on 2 million values, forward and backward) and
    leave one-pass kernels as they were. Arrays that are not C-contiguous, or not NumPy's,
    go to ``kernel`` whole. The kernel must write only its parts."""
    first = arrays[0]
    if (backend.xp.__name__ != "numpy" or first.ndim == 0 or first.size * cost < ELEMENTWISE_MIN
            or not all(a.flags.c_contiguous for a in arrays)):
        kernel(*arrays)
        return
    parts = [a.reshape(-1, first.shape[-1]) if channels else a.reshape(-1) for a in arrays]
    step = max(1, ELEMENTWISE_BLOCK // first.shape[-1]) if channels else ELEMENTWISE_BLOCK

    def share(lo, hi):
        for start in range(lo, hi, step):
            end = min(hi, start + step)
            kernel(*[p[start:end] for p in parts])
    split(share, parts[0].shape[0], ELEMENTWISE_MIN)


def elementwise(fn, x, cost: int = 1, out=None):
    """f(x) for an element-wise f given as ``fn(src, dst)`` (writes f(src) into dst), into
    ``out`` (may be x itself) or a new array, on lamina's threads when worth it (see
    :func:`elementwise_chain` for ``cost``)."""
    xp = backend.xp
    if out is None:
        out = xp.empty(x.shape, dtype=xp.result_type(x.dtype, xp.float16))  # a ufunc's float type
    elementwise_chain(fn, [x, out], cost)
    return out


def matmul(a, b, out=None):
    """``a @ b`` for lamina's ops: OpenBLAS with its own threads while lamina's threads are
    idle (see the module docstring); otherwise, and always under the deterministic mode,
    single-threaded BLAS, a large 2-D product split among lamina's threads by the rows of
    ``a`` (or the columns of ``b`` when ``a`` has too few rows)."""
    xp = backend.xp
    if blas_threads_welcome():
        return xp.matmul(a, b, out=out)
    if (a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]
            or not _parallel_ok(_threads, 2 * a.shape[0] * a.shape[1] * b.shape[1], MIN_GEMM_FLOPS)):
        with one_blas_thread():
            return xp.matmul(a, b, out=out)
    m, n = a.shape[0], b.shape[1]
    if out is None:
        out = xp.empty((m, n), dtype=xp.result_type(a, b))
    k = _threads
    by_rows = m >= 16 * k or m >= n
    size = m if by_rows else n
    k = min(k, size)
    bounds = [size * i // k for i in range(k + 1)]

    def part(i):
        lo, hi = bounds[i], bounds[i + 1]
        if by_rows:
            return lambda: xp.matmul(a[lo:hi], b, out=out[lo:hi])
        return lambda: xp.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    with one_blas_thread():
        _run_all([part(i) for i in range(k)])
    return out
