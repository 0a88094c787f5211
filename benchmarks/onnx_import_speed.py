"""Imported ONNX models against the same lamina models: forward and forward + backward time.

LeNet-5 and a CIFAR ResNet-8 are built in lamina, exported with ``export_onnx`` and imported
with ``load_onnx``; both run in evaluation mode on the same batch of 32 images, interleaved
so that the machine's load falls on both alike. The medians of REPEATS timed runs (after a
warm-up) are printed with the ratio imported / native (1.0 = as fast as the native model).

Usage: python benchmarks/onnx_import_speed.py [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lamina
from lamina import models
from lamina.export import export_onnx, load_onnx

MODELS = {
    "lenet5": (lambda: models.lenet5(), (32, 32, 1)),
    "resnet_cifar8": (lambda: models.resnet_cifar(8, num_classes=10), (32, 32, 3)),
}
BATCH = 32


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _forward(model, x):
    return lambda: model(lamina.tensor(x))


def _training_pass(model, x):
    def run():
        model(lamina.tensor(x)).sum().backward()
        model.zero_grad()
    return run


def main(repeats: int = 15) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, (build, shape) in MODELS.items():
            lamina.manual_seed(0)
            native = build()
            native.build((None, *shape))
            native.eval()
            imported = load_onnx(export_onnx(native, Path(folder) / f"{name}.onnx", input_shape=shape))
            x = np.random.default_rng(0).standard_normal((BATCH, *shape)).astype(np.float32)
            gap = np.abs(imported(x).numpy() - native(lamina.tensor(x)).numpy()).max()
            for label, make in (("forward", _forward), ("forward + backward", _training_pass)):
                runs = {"native": make(native, x), "imported": make(imported, x)}
                times = {key: [] for key in runs}
                for run in runs.values():
                    run()                           # warm-up
                for _ in range(repeats):
                    for key, run in runs.items():
                        times[key].append(_timed(run))
                native_ms, imported_ms = (1e3 * statistics.median(times[k]) for k in ("native", "imported"))
                print(f"{name:14s} {label:19s} native {native_ms:7.1f} ms  imported {imported_ms:7.1f} ms  "
                      f"ratio {imported_ms / native_ms:4.2f}  (max |difference| {gap:.1e})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
