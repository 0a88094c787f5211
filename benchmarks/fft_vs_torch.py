"""Forward + backward time of lamina.fft against torch.fft, and of an FNO spectral convolution.

Each case runs the same computation on the same float32 arrays in lamina (NHWC, transforms
over axes 1 and 2) and in PyTorch (NCHW, transforms over the last two axes, the layout its
FFTs and the FNO reference code use; channels-last FFTs were 3-10x slower in torch here),
with threads = core count, the two timed back to back in every round, and prints the
lamina/PyTorch throughput ratio (above 1: lamina is faster) as the median of the rounds'
ratios with its range. Cases:

- rfft2: rfft2 over (h, w) of an NHWC batch, squared magnitudes summed, backward;
- round trip: irfft2(rfft2(x)) times a fixed random image, summed, backward;
- spectral_conv: nn.SpectralConv2D(channels, modes) against the same layer written with
  torch.fft and complex weights (the FNO reference), forward and backward.

    python benchmarks/fft_vs_torch.py [--repeats 9] [--only rfft2,spectral_conv] [--batch 16] [--size 64]
        [--channels 16] [--modes 12] [--threads 1]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

import lamina
from lamina import fft, nn

sys.path.insert(0, os.path.dirname(__file__))
from pairing import case_parser, run_cases  # noqa: E402


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _rfft2(rng, batch: int, size: int, channels: int, modes: int):
    x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
    x_nchw = _nchw(x)

    def ours():
        t = lamina.tensor(x, requires_grad=True)
        (fft.rfft2(t, dim=(1, 2)) ** 2).sum().backward()

    def theirs():
        t = torch.tensor(x_nchw, requires_grad=True)
        (torch.view_as_real(torch.fft.rfft2(t)) ** 2).sum().backward()

    return f"rfft2, |X|^2 summed, ({batch}, {size}, {size}, {channels})", ours, theirs


def _round_trip(rng, batch: int, size: int, channels: int, modes: int):
    x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    x_nchw, r_nchw = _nchw(x), torch.tensor(_nchw(r))

    def ours():
        t = lamina.tensor(x, requires_grad=True)
        (fft.irfft2(fft.rfft2(t, dim=(1, 2)), s=(size, size), dim=(1, 2)) * lamina.tensor(r)).sum().backward()

    def theirs():
        t = torch.tensor(x_nchw, requires_grad=True)
        (torch.fft.irfft2(torch.fft.rfft2(t), s=(size, size)) * r_nchw).sum().backward()

    return f"irfft2(rfft2(x)), ({batch}, {size}, {size}, {channels})", ours, theirs


def _torch_spectral_conv2d(x, weights1, weights2):
    """The FNO reference on NCHW x: weights (C_in, C_out, m1, m2) complex for the first m1 and the
    last m1 frequencies of the height, the first m2 of the width."""
    n, _, h, w = x.shape
    c_out, m1, m2 = weights1.shape[1:]
    spectrum = torch.fft.rfft2(x)
    out = torch.zeros(n, c_out, h, w // 2 + 1, dtype=spectrum.dtype)
    out[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", spectrum[:, :, :m1, :m2], weights1)
    out[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", spectrum[:, :, -m1:, :m2], weights2)
    return torch.fft.irfft2(out, s=(h, w))


def _spectral_conv(rng, batch: int, size: int, channels: int, modes: int):
    x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
    x_nchw = _nchw(x)
    layer = nn.SpectralConv2D(channels, modes=modes)
    layer(lamina.tensor(x[:1]))
    as_torch = np.ascontiguousarray(layer.weight.numpy().transpose(2, 3, 0, 1, 4))     # (C_in, C_out, 2 m1, m2, 2)
    weights = [torch.view_as_complex(torch.tensor(np.ascontiguousarray(part))).requires_grad_()
               for part in (as_torch[:, :, :modes], as_torch[:, :, modes:])]
    with torch.no_grad():      # the two compute the same thing
        same = _torch_spectral_conv2d(torch.tensor(x_nchw[:2]), *weights).permute(0, 2, 3, 1).numpy()
    assert np.allclose(layer(lamina.tensor(x[:2])).numpy(), same, atol=1e-4), "the two layers differ"

    def ours():
        t = lamina.tensor(x, requires_grad=True)
        layer.zero_grad()
        (layer(t) ** 2).sum().backward()

    def theirs():
        t = torch.tensor(x_nchw, requires_grad=True)
        for w in weights:
            w.grad = None
        (_torch_spectral_conv2d(t, *weights) ** 2).sum().backward()

    return f"SpectralConv2D {channels}->{channels}, modes {modes}, ({batch}, {size}, {size})", ours, theirs


CASES = {"rfft2": _rfft2, "round_trip": _round_trip, "spectral_conv": _spectral_conv}


def main() -> None:
    parser = case_parser(__doc__, CASES)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--modes", type=int, default=12)
    args = parser.parse_args()
    run_cases(CASES, args, args.batch, args.size, args.channels, args.modes)


if __name__ == "__main__":
    main()
