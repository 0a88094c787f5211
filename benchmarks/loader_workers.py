"""DataLoader worker threads: one epoch of a small CNN on the digits with a costly augmentation.

The 1,797 digits (32x32x1) are augmented per batch in NumPy, as a loader ``transform``:
random crops (zero padding of 4, a random 32x32 window per image), random left-right
flips, an elastic distortion and a Gaussian blur of random width per image. The epoch
is timed with ``num_workers`` 0, 1 and 2, first the data alone (iterating the loader),
then the training epoch (data and a LeNet-5 step per batch); the speedups are against 0
workers. With ``--torch`` also times torch's DataLoader (worker processes) making the same
batches, for reference.

    python benchmarks/loader_workers.py [--batch-size 64] [--repeats 3] [--torch]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import lamina
from lamina import backend, models, optim
from lamina.data import ArrayDataset, DataLoader, load_digits
from lamina.train import Trainer

PAD, ALPHA, SMOOTH = 4, 8.0, 4.0


def gaussian_matrices(sigma: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) row-normalised Gaussian blur matrices, one per sigma: blurring an axis of
    an image is a product with one (a few large BLAS calls, which release the GIL)."""
    offsets = np.arange(size, dtype=np.float32)
    distance = offsets[None, :, None] - offsets[None, None, :]
    weights = np.exp(-0.5 * (distance / sigma[:, None, None]) ** 2)
    return weights / weights.sum(axis=2, keepdims=True)


def augment(xb: np.ndarray, generator: np.random.Generator | None = None) -> np.ndarray:
    """Per image: a random crop (zero padding 4), a random left-right flip, an elastic distortion
    (a random displacement field smoothed by a Gaussian of width 4, scaled by 8, bilinear
    resampling; Simard et al. 2003) and a Gaussian blur of random width sigma ~ U(0.3, 1.5)."""
    rng = backend.rng() if generator is None else generator
    n, h, w, c = xb.shape
    padded = np.pad(xb, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    rows = rng.integers(0, 2 * PAD + 1, n)[:, None] + np.arange(h)
    cols = rng.integers(0, 2 * PAD + 1, n)[:, None] + np.arange(w)
    images = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    images[flip] = images[flip, :, ::-1]
    smooth_h = gaussian_matrices(np.full(n, SMOOTH, np.float32), h)
    smooth_w = gaussian_matrices(np.full(n, SMOOTH, np.float32), w)
    field = rng.uniform(-1, 1, (2, n, h, w)).astype(np.float32)
    field = ALPHA * (smooth_h @ field @ smooth_w.transpose(0, 2, 1))
    y = np.clip(np.arange(h, dtype=np.float32)[None, :, None] + field[0], 0, h - 1)
    x = np.clip(np.arange(w, dtype=np.float32)[None, None, :] + field[1], 0, w - 1)
    y0, x0 = np.minimum(y.astype(np.intp), h - 2), np.minimum(x.astype(np.intp), w - 2)
    fy, fx = (y - y0).astype(np.float32)[..., None], (x - x0).astype(np.float32)[..., None]
    batch = np.arange(n)[:, None, None]
    warped = ((1 - fy) * (1 - fx) * images[batch, y0, x0] + (1 - fy) * fx * images[batch, y0, x0 + 1]
              + fy * (1 - fx) * images[batch, y0 + 1, x0] + fy * fx * images[batch, y0 + 1, x0 + 1])
    sigma = rng.uniform(0.3, 1.5, n).astype(np.float32)
    blur_h, blur_w = gaussian_matrices(sigma, h), gaussian_matrices(sigma, w)
    channels_first = warped.transpose(0, 3, 1, 2)
    blurred = blur_h[:, None] @ channels_first @ blur_w.transpose(0, 2, 1)[:, None]
    out = np.empty((n, h, w, c), np.float32)     # fresh strides (a size-1 axis of a transposed copy keeps odd ones)
    out[...] = blurred.transpose(0, 2, 3, 1)
    return out


def time_data(dataset, batch_size: int, workers: int, repeats: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, seed=0, transform=augment, num_workers=workers)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - started)
    return best


def time_training(dataset, batch_size: int, workers: int, repeats: int) -> tuple[float, float]:
    """(best epoch time, final loss) of LeNet-5 trained from the same start with ``workers``."""
    lamina.manual_seed(0)
    model = models.lenet5(activation="relu", pool="max", input_shape=(32, 32, 1))
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=1e-3), verbose=0)
    loader = DataLoader(dataset, batch_size=batch_size, seed=0, transform=augment, num_workers=workers)
    trainer.fit(loader, epochs=1)                          # warm-up: builds the model, fills the caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        history = trainer.fit(loader, epochs=1)
        best = min(best, time.perf_counter() - started)
    return best, history["loss"][-1]


def time_torch(x: np.ndarray, y: np.ndarray, batch_size: int, workers: int, repeats: int) -> float:
    import torch

    def collate(indices):
        index = np.asarray(indices)
        generator = np.random.default_rng(int(torch.initial_seed()) % 2**32 + int(index[0]))
        return torch.from_numpy(augment(x[index], generator)), torch.from_numpy(y[index])

    loader = torch.utils.data.DataLoader(range(len(x)), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, collate_fn=collate)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch", action="store_true", help="also time torch's DataLoader over the same arrays")
    args = parser.parse_args()

    x, y = load_digits(size=32)
    x = x.astype(np.float32) / 255.0
    dataset = ArrayDataset(x, y)
    batches = -(-len(x) // args.batch_size)
    print(f"{len(x)} digits 32x32x1, batch {args.batch_size} ({batches} batches), crop + flip + elastic + blur per "
          f"batch; {os.cpu_count()} CPU cores; best of {args.repeats}")
    data_times = {w: time_data(dataset, args.batch_size, w, args.repeats) for w in (0, 1, 2)}
    for w, seconds in data_times.items():
        print(f"data only   num_workers={w}: {seconds * 1000:7.1f} ms/epoch  "
              f"speedup {data_times[0] / seconds:4.2f}x")
    losses = {}
    train_times = {}
    for w in (0, 1, 2):
        train_times[w], losses[w] = time_training(dataset, args.batch_size, w, args.repeats)
        print(f"training    num_workers={w}: {train_times[w] * 1000:7.1f} ms/epoch  "
              f"speedup {train_times[0] / train_times[w]:4.2f}x  (final loss {losses[w]:.6f})")
    print("same losses with 0, 1 and 2 workers:", len(set(losses.values())) == 1)
    if args.torch:
        for w in (0, 2):
            seconds = time_torch(x, y, args.batch_size, w, args.repeats)
            print(f"torch data  num_workers={w}: {seconds * 1000:7.1f} ms/epoch (worker processes)")


if __name__ == "__main__":
    main()
