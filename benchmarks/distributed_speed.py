"""lamina.distributed on one machine: all_reduce against torch.distributed's gloo, and a
DistributedDataParallel training step on 2 processes against 1.

1. ``all_reduce`` (sum) of 1, 10 and 100 MB of float32 across 2 processes: lamina's shared
   memory, PyTorch's gloo (file store, ring all-reduce over local TCP), and for reference a
   pipes-only all-reduce (each process sends its array through a ``multiprocessing`` pipe and
   adds the other's). Median of ``--repeats`` timed calls on rank 0 after a warm-up, each
   started together after a barrier.
2. An MLP (784-512-512-10, float32, SGD) on ``--batch`` samples per step: one process on the
   whole batch (lamina's and BLAS's default threads, then one thread), against 2 processes under
   DistributedDataParallel on half the batch each (one thread each, so as not to fight for
   the cores). Samples per second over ``--steps`` steps after 3 warm-up steps.

    python benchmarks/distributed_speed.py [--repeats 10] [--steps 20] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

SIZES_MB = (1, 10, 100)


def _median_ms(run, barrier, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        barrier()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _lamina_all_reduce(rank: int, path: str, repeats: int, results) -> None:
    import lamina.distributed as dist

    dist.init_process_group("shm", f"file://{path}", rank=rank, world_size=2)
    for i, mb in enumerate(SIZES_MB):
        x = np.ones(mb * 2**20 // 4, np.float32)
        ms = _median_ms(lambda x=x: dist.all_reduce(x), dist.barrier, repeats)
        if rank == 0:
            results[i] = ms
    dist.destroy_process_group()


def _gloo_all_reduce(rank: int, path: str, repeats: int, results) -> None:
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    for i, mb in enumerate(SIZES_MB):
        x = torch.ones(mb * 2**20 // 4)
        ms = _median_ms(lambda x=x: tdist.all_reduce(x), tdist.barrier, repeats)
        if rank == 0:
            results[i] = ms
    tdist.destroy_process_group()


def _pipe_all_reduce(rank: int, link, repeats: int, results) -> None:
    def barrier() -> None:
        link.send_bytes(b"")
        link.recv_bytes()

    for i, mb in enumerate(SIZES_MB):
        x = np.ones(mb * 2**20 // 4, np.float32)
        other = np.empty_like(x)

        def run(x=x, other=other) -> None:
            if rank == 0:
                link.send_bytes(x)
                link.recv_bytes_into(other)
            else:
                link.recv_bytes_into(other)
                link.send_bytes(x)
            np.add(x, other, out=x)

        ms = _median_ms(run, barrier, repeats)
        if rank == 0:
            results[i] = ms


def all_reduce_table(repeats: int) -> None:
    import multiprocessing

    import lamina.distributed as dist

    context = multiprocessing.get_context("fork")
    times = {}
    for name, target in (("lamina shm", _lamina_all_reduce), ("torch gloo", _gloo_all_reduce)):
        results = context.Array("d", len(SIZES_MB))
        path = os.path.join(tempfile.mkdtemp(), "rendezvous")
        dist.spawn(target, args=(path, repeats, results), nprocs=2, start_method="fork")
        times[name] = list(results)
    results = context.Array("d", len(SIZES_MB))
    ends = context.Pipe()
    dist.spawn(lambda rank: _pipe_all_reduce(rank, ends[rank], repeats, results), nprocs=2, start_method="fork")
    times["pipes only"] = list(results)
    print(f"all_reduce (sum) of float32 across 2 processes, median of {repeats} (ms; GB/s of array reduced)")
    print(f"{'MB':>5} " + " ".join(f"{name:>20}" for name in times) + f" {'gloo / lamina':>14}")
    for i, mb in enumerate(SIZES_MB):
        cells = " ".join(f"{t[i]:9.2f} ms {mb / 1024 / (t[i] / 1000):5.2f} GB/s" for t in times.values())
        print(f"{mb:>5} {cells} {times['torch gloo'][i] / times['lamina shm'][i]:13.2f}x")


def _mlp():
    import lamina
    from lamina import nn

    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(512, activation="relu"), nn.Dense(512, activation="relu"), nn.Dense(10))
    model.build((None, 784))
    return model


def _train_speed(model, batch: int, steps: int, rank: int = 0, world: int = 1) -> float:
    import lamina
    from lamina import functional as F
    from lamina import optim

    optimizer = optim.SGD(model, lr=0.01)
    rng = np.random.default_rng(rank)
    x = lamina.tensor(rng.standard_normal((batch // world, 784)).astype(np.float32))
    y = rng.integers(0, 10, batch // world)
    started = 0.0
    for step in range(steps + 3):
        if step == 3:
            started = time.perf_counter()
        optimizer.zero_grad()
        F.categorical_cross_entropy(model(x), y, from_logits=True).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def _ddp_speed(rank: int, path: str, batch: int, steps: int, results) -> None:
    from threadpoolctl import threadpool_limits

    import lamina
    import lamina.distributed as dist

    lamina.set_num_threads(1)
    with threadpool_limits(1):
        dist.init_process_group("shm", f"file://{path}", rank=rank, world_size=2)
        speed = _train_speed(dist.DistributedDataParallel(_mlp()), batch, steps, rank, 2)
        dist.destroy_process_group()
    if rank == 0:
        results[0] = speed


def training_table(batch: int, steps: int) -> None:
    import multiprocessing

    from threadpoolctl import threadpool_limits

    import lamina
    import lamina.distributed as dist

    one = _train_speed(_mlp(), batch, steps)
    threads = lamina.get_num_threads()
    lamina.set_num_threads(1)
    with threadpool_limits(1):
        one_thread = _train_speed(_mlp(), batch, steps)
    lamina.set_num_threads(threads)
    results = multiprocessing.get_context("fork").Array("d", 1)
    path = os.path.join(tempfile.mkdtemp(), "rendezvous")
    dist.spawn(_ddp_speed, args=(path, batch, steps, results), nprocs=2, start_method="fork")
    print(f"\nMLP 784-512-512-10 training step, batch {batch} (samples/s over {steps} steps)")
    print(f"1 process (default threads):          {one:9.0f}")
    print(f"1 process (1 thread):                 {one_thread:9.0f}")
    print(f"2 processes, DDP (1 thread each):     {results[0]:9.0f}   ({results[0] / one:.2f}x the first, "
          f"{results[0] / one_thread:.2f}x the second)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    all_reduce_table(args.repeats)
    training_table(args.batch, args.steps)


if __name__ == "__main__":
    main()
