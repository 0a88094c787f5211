"""How the benchmarks measure memory: the peak resident-set growth of one step, in a child
process where glibc serves every allocation over 64 KiB with mmap (returned on free; lamina's
own malloc tuning switched off), so the resident set follows the live arrays of NumPy and
PyTorch alike; and, for NumPy, tracemalloc's peak (NumPy reports its allocations to it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc


def rss_kib() -> tuple[int, int]:
    """(current, peak) resident set of this process in KiB."""
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def peak_growth_mb(step, warmup: int = 1) -> float:
    """The growth of the peak resident set over one ``step``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")                                   # the peak starts again from the current RSS
    before, _ = rss_kib()
    step()
    return (rss_kib()[1] - before) / 1024


def child_peak_mb(script: str, args: list[str], timeout: int = 600) -> float | None:
    """Run ``script args`` in a fresh process with the allocation settings above and read the
    number its last line prints (None when it fails)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", LAMINA_MALLOC_TUNING="0")
    try:
        done = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=True)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def tracemalloc_mb(step) -> float:
    """Peak of NumPy's allocations during one step (after one untraced step)."""
    step()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20
