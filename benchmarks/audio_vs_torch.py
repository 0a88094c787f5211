"""Forward + backward time of lamina's STFT front ends against torch.stft.

Each case runs the same computation on the same float32 waveforms (batch 16 x 16000
samples, n_fft 512, hop 128, periodic Hann window, centred with reflect padding) in lamina
and in PyTorch (threads = core count), the two timed back to back in every round, and
prints the lamina/PyTorch throughput ratio (above 1: lamina is faster) as the median of the
rounds' ratios with its range. Cases: the STFT itself (real and imaginary parts, a random
upstream gradient), the power spectrogram, and istft(stft(x)).

    python benchmarks/audio_vs_torch.py [--repeats 9] [--only stft,power] [--batch 16] [--samples 16000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import lamina
from lamina import functional as F

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402

N_FFT, HOP = 512, 128


def _torch_stft(x, window):
    return torch.view_as_real(torch.stft(x, N_FFT, HOP, window=window, return_complex=True))


def _torch_istft(spec, window, length):
    return torch.istft(torch.view_as_complex(spec.contiguous()), N_FFT, HOP, window=window, length=length)


def _case(title: str, ours_fn, theirs_fn):
    def make(rng, batch: int, samples: int):
        x = rng.standard_normal((batch, samples)).astype(np.float32)
        ours_window, theirs_window = F.hann_window(N_FFT), torch.hann_window(N_FFT)
        shape = tuple(_torch_stft(torch.tensor(x[:1]), theirs_window).shape[1:])
        upstream = rng.standard_normal((batch,) + shape).astype(np.float32)

        def ours():
            xt = lamina.tensor(x, requires_grad=True)
            out = ours_fn(xt, ours_window, samples)
            up = upstream if out.shape == upstream.shape else np.ones(out.shape, dtype=np.float32)
            F.sum(out * lamina.tensor(up)).backward()

        def theirs():
            xt = torch.tensor(x, requires_grad=True)
            out = theirs_fn(xt, theirs_window, samples)
            up = upstream if tuple(out.shape) == upstream.shape else np.ones(out.shape, dtype=np.float32)
            (out * torch.tensor(up)).sum().backward()

        return f"{title}, {batch} x {samples}", ours, theirs
    return make


CASES = {
    "stft": _case("stft (n_fft 512, hop 128)",
                  lambda x, w, _: F.stft(x, N_FFT, HOP, window=w),
                  lambda x, w, _: _torch_stft(x, w)),
    "power": _case("power spectrogram |stft|^2",
                   lambda x, w, _: F.spectrogram(x, N_FFT, HOP, window=w),
                   lambda x, w, _: torch.stft(x, N_FFT, HOP, window=w, return_complex=True).abs() ** 2),
    "round_trip": _case("istft(stft(x))",
                        lambda x, w, n: F.istft(F.stft(x, N_FFT, HOP, window=w), N_FFT, HOP, window=w, length=n),
                        lambda x, w, n: _torch_istft(_torch_stft(x, w), w, n)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", default=None, help=f"comma-separated cases among {', '.join(CASES)}")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of torch and of the BLAS calls NumPy makes (default: the core count)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    names = args.only.split(",") if args.only else list(CASES)
    print(f"threads: torch {torch.get_num_threads()}; rounds {args.repeats}, median of the rounds' ratios\n")
    for key in names:
        compare_rounds(*CASES[key](np.random.default_rng(0), args.batch, args.samples), args.repeats)


if __name__ == "__main__":
    main()
