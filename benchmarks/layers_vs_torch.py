"""Per-layer forward + backward time and peak memory: lamina's layers against PyTorch's.

Each case builds the layer in both frameworks with the same shapes, runs forward and a
backward of a fixed upstream gradient (to the input and every parameter), interleaved and
repeated in one process, and prints the median times and lamina's throughput as a
fraction of PyTorch's better layout (NCHW or channels_last; 1.0 = as fast as PyTorch):
the median over rounds of the ratio within each round.
Each round runs a system untimed for SETTLE_S seconds, then times at least TIMED_STEPS steps
and at least TIMED_S seconds of them (a fast layer's few milliseconds would otherwise be at
the mercy of one stall of the machine): timed back to back, one library's still-spinning
worker threads slow the other's next step.

Peak memory of one step is the growth of the peak resident set (VmHWM, reset through
/proc/self/clear_refs), measured the same way for both frameworks in a child process where
glibc returns freed memory at once, so the resident set follows the live arrays.

    python benchmarks/layers_vs_torch.py [--repeats 15] [--only dense,conv3x3_32,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from pairing import paired_ratios

import lamina
from lamina import nn

T = torch.nn
SETTLE_S = 0.15
TIMED_STEPS = 3
TIMED_S = 0.06
VOCAB = 10_000

# name: (title, input shape (NHWC for images), lamina layer factory, torch layer factory, kind:
# True for an NHWC image, 'channels' for a (N, L, C) sequence torch takes as (N, C, L), False for
# other float inputs, 'ids' for integer word ids)
CASES = {
    "dense": ("Dense 784->512, batch 128", (128, 784), lambda: nn.Dense(512), lambda: T.Linear(784, 512), False),
    "conv3x3_32": ("Conv2D 3x3 32->32 on 32x32, batch 64", (64, 32, 32, 32),
                   lambda: nn.Conv2D(32, 3, padding="same"), lambda: T.Conv2d(32, 32, 3, padding=1), True),
    "conv3x3_64": ("Conv2D 3x3 64->64 on 16x16, batch 64", (64, 16, 16, 64),
                   lambda: nn.Conv2D(64, 3, padding="same"), lambda: T.Conv2d(64, 64, 3, padding=1), True),
    "conv3x3_d2": ("Conv2D 3x3 dilation 2, 32->32 on 32x32, batch 64", (64, 32, 32, 32),
                   lambda: nn.Conv2D(32, 3, padding="same", dilation=2),
                   lambda: T.Conv2d(32, 32, 3, padding=2, dilation=2), True),
    "conv5x5_1": ("Conv2D 5x5 1->6 on 32x32, batch 128 (LeNet)", (128, 32, 32, 1),
                  lambda: nn.Conv2D(6, 5), lambda: T.Conv2d(1, 6, 5), True),
    "conv5x5_6": ("Conv2D 5x5 6->16 on 14x14, batch 128 (LeNet)", (128, 14, 14, 6),
                  lambda: nn.Conv2D(16, 5), lambda: T.Conv2d(6, 16, 5), True),
    "maxpool": ("MaxPool 2x2 on 32x32x32, batch 64", (64, 32, 32, 32),
                lambda: nn.MaxPool2D(2), lambda: T.MaxPool2d(2), True),
    "maxpool3x3": ("MaxPool 3x3 stride 2 (overlapping) on 32x32x32, batch 64", (64, 32, 32, 32),
                   lambda: nn.MaxPool2D(3, stride=2), lambda: T.MaxPool2d(3, 2), True),
    "batchnorm": ("BatchNorm on 32x32x32, batch 64 (training)", (64, 32, 32, 32),
                  lambda: nn.BatchNorm(), lambda: T.BatchNorm2d(32), True),
    "relu": ("ReLU on 32x32x32, batch 64", (64, 32, 32, 32), lambda: nn.ReLU(), lambda: T.ReLU(), True),
    "leaky_relu": ("LeakyReLU(0.1) on 32x32x32, batch 64", (64, 32, 32, 32),
                   lambda: nn.LeakyReLU(0.1), lambda: T.LeakyReLU(0.1), True),
    "prelu": ("PReLU (per channel) on 32x32x32, batch 64", (64, 32, 32, 32),
              lambda: nn.PReLU(), lambda: T.PReLU(32), True),
    "elu": ("ELU on 32x32x32, batch 64", (64, 32, 32, 32), lambda: nn.ELU(), lambda: T.ELU(), True),
    "sigmoid": ("Sigmoid on 32x32x32, batch 64", (64, 32, 32, 32), lambda: nn.Sigmoid(), lambda: T.Sigmoid(), True),
    "tanh": ("Tanh on 32x32x32, batch 64", (64, 32, 32, 32), lambda: nn.Tanh(), lambda: T.Tanh(), True),
    "gelu": ("GELU on 32x32x32, batch 64", (64, 32, 32, 32), lambda: nn.GELU(), lambda: T.GELU(), True),
    "silu": ("SiLU on 32x32x32, batch 64", (64, 32, 32, 32), lambda: nn.SiLU(), lambda: T.SiLU(), True),
    "conv_transpose": ("Conv2DTranspose 3x3 stride 2, 32->16 on 16x16, batch 64", (64, 16, 16, 32),
                       lambda: nn.Conv2DTranspose(16, 3, stride=2, padding=1, output_padding=1),
                       lambda: T.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), True),
    "group_norm": ("GroupNorm 8 groups on 32x32x32, batch 64", (64, 32, 32, 32),
                   lambda: nn.GroupNorm(8), lambda: T.GroupNorm(8, 32), True),
    "layer_norm": ("LayerNorm 512 features, batch 1024", (1024, 512), lambda: nn.LayerNorm(),
                   lambda: T.LayerNorm(512), False),
    "upsample": ("UpSampling2D bilinear x2 on 16x16x32, batch 64", (64, 16, 16, 32),
                 lambda: nn.UpSampling2D(2, interpolation="bilinear"),
                 lambda: T.Upsample(scale_factor=2, mode="bilinear", align_corners=False), True),
    "conv1d": ("Conv1D 5, 64->64 on 200 steps, batch 32", (32, 200, 64), lambda: nn.Conv1D(64, 5, padding="same"),
               lambda: T.Conv1d(64, 64, 5, padding=2), "channels"),
    "lstm": ("LSTM 64->128, 50 steps, batch 64 (whole sequence out)", (64, 50, 64),
             lambda: nn.LSTM(128, return_sequences=True), lambda: _SequenceOut(T.LSTM(64, 128, batch_first=True)),
             False),
    "gru": ("GRU 64->128, 50 steps, batch 64 (whole sequence out)", (64, 50, 64),
            lambda: nn.GRU(128, return_sequences=True), lambda: _SequenceOut(T.GRU(64, 128, batch_first=True)),
            False),
    "simple_rnn": ("SimpleRNN tanh 64->128, 50 steps, batch 64", (64, 50, 64),
                   lambda: nn.SimpleRNN(128, return_sequences=True),
                   lambda: _SequenceOut(T.RNN(64, 128, batch_first=True)), False),
    "embedding": ("Embedding 10000x128, ids 64x50", (64, 50), lambda: nn.Embedding(VOCAB, 128),
                  lambda: T.Embedding(VOCAB, 128), "ids"),
    "attention": ("MultiHeadAttention E=128 8 heads, 64 steps, batch 32", (32, 64, 128),
                  lambda: nn.MultiHeadAttention(128, 8),
                  lambda: _SelfAttention(T.MultiheadAttention(128, 8, batch_first=True)), False),
    "transformer": ("TransformerEncoderLayer E=128 8 heads ff 512, 64 steps, batch 32", (32, 64, 128),
                    lambda: nn.TransformerEncoderLayer(128, 8, 512, dropout=0.0),
                    lambda: T.TransformerEncoderLayer(128, 8, 512, dropout=0.0, batch_first=True), False),
}


class _SequenceOut(T.Module):
    """torch's recurrent modules return (output, state): keep the output sequence."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


class _SelfAttention(T.Module):
    def __init__(self, mha):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def _inputs(case, rng):
    """The case's input array: normal floats, or integer ids below VOCAB."""
    _, shape, _, _, kind = CASES[case]
    if kind == "ids":
        return rng.integers(0, VOCAB, shape)
    return rng.standard_normal(shape).astype(np.float32)


class LaminaStep:
    def __init__(self, case):
        make = CASES[case][2]
        x = _inputs(case, np.random.default_rng(0))
        rng = np.random.default_rng(1)
        self.x = lamina.tensor(x, requires_grad=x.dtype.kind == "f")
        self.layer = make()
        out = self.layer(self.x)
        self.dy = rng.standard_normal(out.shape).astype(np.float32)

    def __call__(self):
        self.x.grad = None
        self.layer.zero_grad()
        self.layer(self.x).backward(self.dy)


class TorchStep:
    def __init__(self, case, channels_last: bool):
        _, shape, _, make, kind = CASES[case]
        x = torch.tensor(_inputs(case, np.random.default_rng(0)))
        rng = np.random.default_rng(1)
        self.layer = make()
        image = kind is True
        if kind == "channels":                     # (N, L, C) -> torch's (N, C, L)
            x = x.permute(0, 2, 1).contiguous()
        if image:
            x = x.permute(0, 3, 1, 2).contiguous()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                self.layer = self.layer.to(memory_format=torch.channels_last)
        self.x = x.requires_grad_() if x.is_floating_point() else x
        with torch.no_grad():
            out = self.layer(self.x)
        self.dy = torch.tensor(rng.standard_normal(tuple(out.shape)).astype(np.float32))
        if channels_last and image:
            self.dy = self.dy.contiguous(memory_format=torch.channels_last)

    def __call__(self):
        self.x.grad = None
        self.layer.zero_grad(set_to_none=True)
        self.layer(self.x).backward(self.dy)


class GemmBound:
    """The three matrix products of an im2col convolution alone, on arrays made in advance:
    v = P W, dJ/dW = P^T dJ/dv, dJ/dP = dJ/dv W^T, with P the (N h_out w_out, f_h f_w c)
    patch matrix, over chunks of images (as lamina's kernels take them). No patch matrix is
    built and no col2im runs: the ratio of PyTorch's time to this one is what an im2col
    convolution made of nothing but its products would reach with NumPy's BLAS on this
    machine (lamina's "rows" plan multiplies other shapes, so it may do a little better).
    This tells a slow convolution from a slow BLAS."""

    CHUNK_ROWS = 4096

    def __init__(self, case):
        _, shape, make, _, _ = CASES[case]
        layer = make()
        x = lamina.tensor(_inputs(case, np.random.default_rng(0)))
        out_shape = layer(x).shape
        k, fh, fw, c = layer.weight.shape
        rows, depth = int(np.prod(out_shape[:3])), fh * fw * c
        rng = np.random.default_rng(2)
        self.p = rng.standard_normal((rows, depth), dtype=np.float32)
        self.w = rng.standard_normal((depth, k), dtype=np.float32)
        self.dy = rng.standard_normal((rows, k), dtype=np.float32)
        self.v, self.dp = np.empty((rows, k), np.float32), np.empty((rows, depth), np.float32)
        self.dw = np.empty((depth, k), np.float32)
        per_image = rows // out_shape[0]
        step = max(1, self.CHUNK_ROWS // per_image) * per_image
        self.chunks = [slice(lo, min(rows, lo + step)) for lo in range(0, rows, step)]

    def __call__(self):
        self.dw[...] = 0
        for s in self.chunks:
            np.matmul(self.p[s], self.w, out=self.v[s])
            self.dw += self.p[s].T @ self.dy[s]
            np.matmul(self.dy[s], self.w.T, out=self.dp[s])


def _plain_conv(case: str) -> bool:
    """A dense 2-D convolution (no dilation, one group), which GemmBound describes."""
    layer = CASES[case][2]()
    return (type(layer) is nn.Conv2D and getattr(layer, "groups", 1) == 1
            and tuple(np.atleast_1d(getattr(layer, "dilation", 1))) in ((1,), (1, 1)))


SYSTEMS = {"lamina": lambda c: LaminaStep(c), "torch NCHW": lambda c: TorchStep(c, False),
           "torch channels_last": lambda c: TorchStep(c, True)}


def _rss_kib() -> tuple[int, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def child_peak(case: str, system: str) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    step = SYSTEMS[system](case)
    step()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before, _ = _rss_kib()
    step()
    _, peak = _rss_kib()
    print((peak - before) / 1024)


def peak_mb(case: str, system: str) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", LAMINA_MALLOC_TUNING="0")
    try:
        done = subprocess.run([sys.executable, __file__, "--peak", case, system], env=env, capture_output=True,
                              text=True, timeout=300, check=True)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def run(case: str, repeats: int) -> float:
    title = CASES[case][0]
    steps = {name: make(case) for name, make in SYSTEMS.items()}
    if CASES[case][4] is not True:
        del steps["torch channels_last"]
    if _plain_conv(case):
        steps["GEMMs alone"] = GemmBound(case)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            # settle: run this system untimed for a moment first, so the previous system's
            # spinning BLAS or OpenMP threads have gone quiet and this one's are awake
            settle_until = time.perf_counter() + SETTLE_S
            while time.perf_counter() < settle_until:
                step()
            start, count = time.perf_counter(), 0
            while count < TIMED_STEPS or time.perf_counter() - start < TIMED_S:
                step()
                count += 1
            times[name].append((time.perf_counter() - start) / count)
    median = {name: statistics.median(t) for name, t in times.items()}
    best = min((n for n in median if n.startswith("torch")), key=median.get)
    ratio, low, high = paired_ratios(times[best], times["lamina"])   # times: theirs / ours
    print(f"\n{title}: forward + backward, median of {repeats}")
    for name in steps:
        if name == "GEMMs alone":
            print(f"  {name:20s} {median[name] * 1e3:8.2f} ms   (NumPy's BLAS, im2col shapes, no copies: "
                  f"ratio {median[best] / median[name]:.2f} vs {best})")
            continue
        memory = peak_mb(case, name)
        mem = f"peak +{memory:7.1f} MiB" if memory is not None else "peak n/a"
        print(f"  {name:20s} {median[name] * 1e3:8.2f} ms   {mem}")
    print(f"  ratio lamina/PyTorch throughput: {ratio:.2f}  (vs {best}; median of the rounds' "
          f"ratios, range {low:.2f}-{high:.2f})")
    return ratio


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        child_peak(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ratios = {case: run(case, args.repeats) for case in args.only.split(",")}
    print("\nlamina/PyTorch throughput ratios (PyTorch's better layout):")
    for case, ratio in ratios.items():
        print(f"  {CASES[case][0]:48s} {ratio:.2f}")


if __name__ == "__main__":
    main()
