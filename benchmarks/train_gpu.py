"""Training steps/s on a GPU: lamina on CuPy against PyTorch on CUDA, same models, batch
sizes and optimizer (SGD, momentum 0.9) as ``train_vs_torch.py``, in the same process;
lamina on NumPy (the machine's cores) for reference, and lamina on CuPy with its passes cut
into 1 MiB chunks as on a CPU, to show what one launch per kernel saves.

    python benchmarks/train_gpu.py [--steps 30] [--only lenet5,vgg,vgg_bn,mlp]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from train_vs_torch import CASES, LR

import lamina
from lamina import backend, optim, parallel
from lamina import functional as F


def _sync(where: str) -> None:
    if where == "cupy":
        backend.xp.cuda.Device().synchronize()
    elif where == "cuda":
        torch.cuda.synchronize()


def lamina_rate(build, x, y, where: str, steps: int) -> float:
    backend.use(where)
    lamina.manual_seed(0)
    model = build()
    xd, yd = backend.xp.asarray(x), backend.xp.asarray(y)
    model(lamina.tensor(xd[:2]))
    opt = optim.SGD(model.parameters(), lr=LR, momentum=0.9)

    def step():
        cost = F.categorical_cross_entropy(model(lamina.tensor(xd)), yd, from_logits=True)
        opt.zero_grad()
        cost.backward()
        opt.step()
    return _rate(step, where, steps, len(x))


def torch_rate(build, x, y, steps: int) -> float:
    model = build().cuda()
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous().cuda()
    yt = torch.tensor(y).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

    def step():
        cost = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        cost.backward()
        opt.step()
    return _rate(step, "cuda", steps, len(x))


def _rate(step, where: str, steps: int, batch: int) -> float:
    for _ in range(3):
        step()
    _sync(where)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(where)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only", default="lenet5,vgg,vgg_bn,mlp")
    args = parser.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()}; samples/s, training steps")
    for key in args.only.split(","):
        title, batch, shape, build_lamina, build_torch = CASES[key]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch)
        on_gpu = lamina_rate(build_lamina, x, y, "cupy", args.steps)
        saved = parallel.GPU_CHUNK_BYTES
        parallel.GPU_CHUNK_BYTES = 1 << 20
        chunked = lamina_rate(build_lamina, x, y, "cupy", args.steps)
        parallel.GPU_CHUNK_BYTES = saved
        on_cpu = lamina_rate(build_lamina, x, y, "numpy", max(args.steps // 3, 3))
        reference = torch_rate(build_torch, x, y, args.steps)
        print(f"{title} (batch {batch}): lamina CuPy {on_gpu:,.0f}, PyTorch CUDA {reference:,.0f} "
              f"(lamina/PyTorch {on_gpu / reference:.2f}); lamina CuPy in 1 MiB chunks {chunked:,.0f} "
              f"({on_gpu / chunked:.2f}x slower chunked); lamina NumPy {on_cpu:,.0f} "
              f"(CuPy/NumPy {on_gpu / on_cpu:.1f}x)",
              flush=True)
    backend.use("numpy")


if __name__ == "__main__":
    main()
