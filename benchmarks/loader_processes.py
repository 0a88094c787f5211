"""DataLoader worker processes against worker threads, for a dataset that is pure Python.

Each ``dataset[i]`` does about 2 ms of pure-Python work (a tokenizer-like loop over a
string, counting character classes into a 64-bin histogram): the GIL is held throughout,
so worker threads cannot run two samples at once and worker processes can. An epoch is
timed with 0 workers, 2 threads and 2 processes (persistent workers, after a first
epoch that starts them, also reported; best of ``--repeats``, the three taking turns).

Then the cost of bringing a large batch back from a process: an array of ``--mb`` MB sent
through a pipe pickled in-band (``Connection.send``), pickled with its buffer out of band
(what the loader does), and through ``multiprocessing.shared_memory`` (the process copies
the array into a new block, the main process copies it out and frees the block).

    python benchmarks/loader_processes.py [--samples 400] [--batch-size 16] [--repeats 5] [--mb 38]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from lamina.data import DataLoader
from lamina.data.processes import _pack, _receive


class PurePython:
    """``n`` samples; sample i is a 64-bin histogram of a ``length``-character text made from i."""

    def __init__(self, n: int, length: int) -> None:
        self.n, self.length = n, length

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        text = "".join(chr(97 + (i * 7 + k * k) % 26) for k in range(self.length))
        counts = [0] * 64
        word = 0
        for char in text:
            word = (word * 31 + ord(char)) % 1009
            counts[word % 64] += 1
        return np.array(counts, np.float32), i % 10


def calibrate(target_s: float = 0.002) -> int:
    """The text length for which one sample takes about ``target_s`` seconds."""
    length = 1000
    while True:
        started = time.perf_counter()
        for i in range(20):
            PurePython(20, length)[i]
        per_sample = (time.perf_counter() - started) / 20
        if per_sample > target_s / 4:
            return max(1, int(length * target_s / per_sample))
        length *= 2


def time_epochs(dataset: PurePython, batch_size: int, repeats: int, setups: dict[str, dict]) -> dict[str, tuple]:
    """Per setup: (best epoch with persistent workers, the first epoch, which starts them). The
    setups take turns, so that a busy machine slows them alike."""
    loaders, firsts, best = {}, {}, {}
    for name, workers in setups.items():
        loaders[name] = DataLoader(dataset, batch_size=batch_size, seed=0,
                                   persistent_workers=bool(workers.get("num_workers")), **workers)
        started = time.perf_counter()
        list(loaders[name])
        firsts[name], best[name] = time.perf_counter() - started, float("inf")
    for _ in range(repeats):
        for name, loader in loaders.items():
            started = time.perf_counter()
            for _batch in loader:
                pass
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: (best[name], firsts[name]) for name in setups}


def _read_samples(dataset: PurePython, indices: range) -> None:
    for i in indices:
        dataset[i]


def bare_processes_speedup(dataset: PurePython, repeats: int) -> float:
    """The speed-up of two bare processes splitting the samples between them over one
    process reading them all: the most the machine gives at the moment (others' work on
    the cores lowers it)."""
    context = multiprocessing.get_context("fork")
    ratio = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        _read_samples(dataset, range(len(dataset)))
        alone = time.perf_counter() - started
        started = time.perf_counter()
        processes = [context.Process(target=_read_samples, args=(dataset, range(k, len(dataset), 2))) for k in (0, 1)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        ratio = max(ratio, alone / (time.perf_counter() - started))
    return ratio


def _send_arrays(connection, mode: str, nbytes: int, count: int) -> None:
    array = np.ones(nbytes // 4, np.float32)
    for _ in range(count):
        if mode == "pickle":
            connection.send(array)
        elif mode == "out-of-band":
            for message in _pack((0, 0, 0, "ok", None, None), array):
                connection.send_bytes(message)
        else:
            block = shared_memory.SharedMemory(create=True, size=array.nbytes)
            resource_tracker.unregister(block._name, "shared_memory")   # the main process frees it
            np.ndarray(array.shape, array.dtype, buffer=block.buf)[...] = array
            connection.send((block.name, array.shape))
            block.close()
    connection.close()


def transfer_ms(mode: str, nbytes: int, count: int = 5) -> float:
    """Milliseconds per array of ``nbytes`` brought back from a process with ``mode``."""
    resource_tracker.ensure_running()          # shared with the process, not started (and ended) by it
    reader, writer = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_send_arrays, args=(writer, mode, nbytes, count))
    process.start()
    writer.close()
    started = time.perf_counter()
    for _ in range(count):
        if mode == "pickle":
            array = reader.recv()
        elif mode == "out-of-band":
            array = _receive(reader)[3]
        else:
            name, shape = reader.recv()
            block = shared_memory.SharedMemory(name=name)
            array = np.ndarray(shape, np.float32, buffer=block.buf).copy()
            block.close()
            block.unlink()                     # (also unregisters it: attaching registered it)
        assert array.nbytes == nbytes // 4 * 4
    elapsed = time.perf_counter() - started
    process.join()
    return elapsed / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mb", type=float, default=38.5, help="size of the array sent back (64x224x224x3 float32)")
    args = parser.parse_args()

    length = calibrate()
    dataset = PurePython(args.samples, length)
    started = time.perf_counter()
    for i in range(50):
        dataset[i]
    per_sample = (time.perf_counter() - started) / 50
    print(f"{args.samples} samples of {per_sample * 1000:.2f} ms pure Python each, batch {args.batch_size}; "
          f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f}); best of {args.repeats}; "
          f"default start method {multiprocessing.get_start_method()}")
    setups = {"0 workers": {}, "2 threads": dict(num_workers=2),
              "2 processes": dict(num_workers=2, worker_mode="process")}
    times = time_epochs(dataset, args.batch_size, args.repeats, setups)
    base = times["0 workers"][0]
    for name, (best, first) in times.items():
        print(f"{name:12s} {best * 1000:7.1f} ms/epoch  speed-up {base / best:4.2f}x   "
              f"(first epoch, starting the workers: {first * 1000:7.1f} ms, {base / first:4.2f}x)")

    print(f"two bare processes splitting the samples: {bare_processes_speedup(dataset, args.repeats):4.2f}x "
          f"(the ceiling on this machine now; load average {os.getloadavg()[0]:.1f})")

    nbytes = int(args.mb * 2**20)
    print(f"bringing back a {args.mb:g} MB array from a process:")
    for mode in ("pickle", "out-of-band", "shared memory"):
        best = min(transfer_ms(mode, nbytes) for _ in range(args.repeats))
        print(f"  {mode:14s} {best:6.1f} ms  ({nbytes / 2**30 / best * 1000:5.2f} GB/s)")


if __name__ == "__main__":
    main()
