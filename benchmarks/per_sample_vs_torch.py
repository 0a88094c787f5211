"""Per-sample gradients: lamina's ``per_sample_gradients`` against ``torch.func`` (vmap of grad).

Two cases run on the same arrays and weights in lamina and in PyTorch (threads = core count),
timed back to back in every round; each computes the gradient of every sample's own
cross-entropy for every parameter:

* an MLP 784-256-10 (ReLU), batch 128;
* a small CNN on 28x28x1 images (conv 3x3 16 stride 2 padding 1, ReLU, conv 3x3 32 stride 2
  padding 1, ReLU, dense 10), batch 64, NHWC in lamina and NCHW in PyTorch.

Prints each lamina/PyTorch throughput ratio (above 1: lamina is faster) as the median of the
rounds' ratios with its range.

    python benchmarks/per_sample_vs_torch.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as TF
from torch.func import grad, vmap

import lamina
from lamina import functional as F
from lamina import nn

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def _loss(out, y):
    return F.categorical_cross_entropy(out, y, from_logits=True, reduction="sum")


def _torch_per_sample(forward, params, x, y):
    def sample_loss(p, xi, yi):
        return TF.cross_entropy(forward(p, xi[None]), yi[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    return lambda: per_sample(params, x, y)


def _mlp(rng):
    model = nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10))
    model.build((None, 784))
    x = rng.standard_normal((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    params = {name: torch.tensor(p.data) for name, p in model.named_parameters()}

    def forward(p, xs):
        return torch.relu(xs @ p["dense.weight"] + p["dense.bias"]) @ p["dense_1.weight"] + p["dense_1.bias"]

    ours = lambda: nn.per_sample_gradients(model, _loss, x, y)  # noqa: E731
    return ours, _torch_per_sample(forward, params, torch.tensor(x), torch.tensor(y))


def _cnn(rng):
    model = nn.Sequential(nn.Conv2D(16, 3, stride=2, padding=1, activation="relu"),
                          nn.Conv2D(32, 3, stride=2, padding=1, activation="relu"), nn.Flatten(), nn.Dense(10))
    model.build((None, 28, 28, 1))
    x = rng.standard_normal((64, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    params = {name: torch.tensor(p.data) for name, p in model.named_parameters()}
    params["conv2d.weight"] = params["conv2d.weight"].permute(0, 3, 1, 2).contiguous()
    params["conv2d_1.weight"] = params["conv2d_1.weight"].permute(0, 3, 1, 2).contiguous()
    # the dense layer reads the NHWC flattening; the torch model reads NCHW, so its rows are permuted once
    params["dense.weight"] = params["dense.weight"].reshape(7, 7, 32, 10).permute(2, 0, 1, 3).reshape(-1, 10)

    def forward(p, xs):
        a = torch.relu(TF.conv2d(xs, p["conv2d.weight"], p["conv2d.bias"], stride=2, padding=1))
        a = torch.relu(TF.conv2d(a, p["conv2d_1.weight"], p["conv2d_1.bias"], stride=2, padding=1))
        return a.reshape(a.shape[0], -1) @ p["dense.weight"] + p["dense.bias"]

    ours = lambda: nn.per_sample_gradients(model, _loss, x, y)  # noqa: E731
    x_nchw = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    return ours, _torch_per_sample(forward, params, x_nchw, torch.tensor(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    compare_rounds("per-sample grads, MLP 784-256-10, batch 128", *_mlp(rng), args.repeats)
    compare_rounds("per-sample grads, CNN 28x28 conv16/conv32, batch 64", *_cnn(rng), args.repeats)


if __name__ == "__main__":
    main()
