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

import os
import sys

import numpy as np
import torch

import lamina
from lamina import functional as F

sys.path.insert(0, os.path.dirname(__file__))
from pairing import case_parser, run_cases  # noqa: E402

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
    parser = case_parser(__doc__, CASES)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=16000)
    args = parser.parse_args()
    run_cases(CASES, args, args.batch, args.samples)


if __name__ == "__main__":
    main()
