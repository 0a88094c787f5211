"""Forward + backward time of lamina's fused 2-D Gaussian rasterizer against the same image drawn
with torch tensor ops (all pixel-Gaussian pairs at once, torch autograd for the backward).

Both draw, in float32, ``--gaussians`` Gaussians (Cholesky-factor covariances, 3 colour channels)
into a ``--size`` x ``--size`` image in ``--mode`` "sum" or "alpha", and take the gradients with
respect to the means, Cholesky factors, colours and opacities for a random upstream gradient. The
two are timed back to back in each round; the printed ratio is torch time / lamina time (above 1:
lamina is faster), the median over the rounds. Nothing is asserted.

    python benchmarks/splatting_vs_torch.py [--size 64] [--gaussians 500] [--mode sum] [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pairing import compare_rounds

import lamina
from lamina import functional as F


def torch_rasterize(means, chol, colors, opacities, height, width, mode):
    """The image (height, width, C) by torch ops, Sigma = L L^T inverted in closed form."""
    rows, cols = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                                indexing="ij")
    pixels = torch.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], -1)
    l11, l21, l22 = chol.unbind(1)
    s11, s12, s22 = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
    det = s11 * s22 - s12 * s12
    a, b, c = s22 / det, -s12 / det, s11 / det
    dx = pixels[:, :1] - means[:, 0]
    dy = pixels[:, 1:] - means[:, 1]
    alpha = opacities * torch.exp(-0.5 * (a * dx * dx + 2 * b * dx * dy + c * dy * dy))
    if mode == "alpha":
        alpha = alpha.clamp(max=0.99)
        kept = torch.cumprod(1 - alpha, dim=1)
        alpha = torch.cat([torch.ones_like(kept[:, :1]), kept[:, :-1]], 1) * alpha
    return (alpha @ colors).reshape(height, width, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--gaussians", type=int, default=500)
    parser.add_argument("--mode", choices=("sum", "alpha"), default="sum")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n, size = args.gaussians, args.size
    arrays = [rng.uniform(0, size, (n, 2)),
              np.c_[rng.uniform(1, 3, n), rng.normal(0, 0.5, n), rng.uniform(1, 3, n)],
              rng.uniform(0, 1, (n, 3)), rng.uniform(0.2, 1, n)]
    arrays = [a.astype(np.float32) for a in arrays]
    up = rng.standard_normal((size, size, 3)).astype(np.float32)
    up_t = torch.tensor(up)

    def ours():
        inputs = [lamina.tensor(a, requires_grad=True) for a in arrays]
        image = F.rasterize_gaussians_2d(*inputs, size, size, mode=args.mode)
        (image * lamina.tensor(up)).sum().backward()
        return [t.grad for t in inputs]

    def theirs():
        inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
        (torch_rasterize(*inputs, size, size, args.mode) * up_t).sum().backward()
        return [t.grad for t in inputs]

    for a, b in zip(ours(), theirs()):
        scale = np.abs(b.numpy()).max()
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-3, atol=1e-3 * scale)
    compare_rounds(f"{size}x{size} image, {n} Gaussians, mode {args.mode}, forward + backward",
                   ours, theirs, args.repeats)


if __name__ == "__main__":
    main()
