"""Forward + backward time of lamina's selective scan and Mamba against PyTorch's sequential scan.

Each case runs the same float32 computation in lamina and in PyTorch (threads = core count),
the two timed back to back in every round, and prints the lamina/PyTorch throughput ratio
(above 1: lamina is faster) as the median of the rounds' ratios with its range. PyTorch runs
the recurrence as a loop over the steps on autograd tensors (Hugging Face's "slow" path, the
one it takes without the CUDA kernels); lamina's scan is one fused node whose backward runs
the reverse scan. Cases:

* scan: ``selective_scan`` with D, a gate z, delta_bias and softplus, batch x length x
  channels x state (default 2 x 256 x 256 x 16), a random upstream gradient;
* model: a small Mamba language model (hidden 128, 2 layers, state 16, vocabulary 256) on
  batch x length token ids, cross-entropy of the next token, weights copied from the
  PyTorch reference model of the tests.

    python benchmarks/mamba_vs_torch.py [--repeats 9] [--only scan,model] [--batch 2] [--length 256]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

import lamina
from lamina import functional as F
from lamina import models

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "models"))
from pairing import case_parser, run_cases  # noqa: E402
from torch_mamba_reference import MambaForCausalLM  # noqa: E402

CHANNELS, STATE = 256, 16
MODEL = {"vocab_size": 256, "hidden_size": 128, "state_size": 16, "num_hidden_layers": 2}


def _torch_scan(u, delta, A, B, C, D, z, delta_bias):
    dt = torch.nn.functional.softplus(delta + delta_bias)
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append(torch.einsum("nds,ns->nd", h, C[:, t]))
    return (torch.stack(ys, dim=1) + u * D) * torch.nn.functional.silu(z)


def scan_case(rng, batch: int, length: int):
    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    arrays = [normal(batch, length, CHANNELS), normal(batch, length, CHANNELS, scale=0.5),
              -np.exp(normal(CHANNELS, STATE, scale=0.5)), normal(batch, length, STATE),
              normal(batch, length, STATE), normal(CHANNELS), normal(batch, length, CHANNELS),
              normal(CHANNELS, scale=0.5)]
    upstream = normal(batch, length, CHANNELS)

    def ours():
        inputs = [lamina.tensor(a, requires_grad=True) for a in arrays]
        u, delta, A, B, C, D, z, bias = inputs
        out = F.selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
        F.sum(out * lamina.tensor(upstream)).backward()

    def theirs():
        inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
        (_torch_scan(*inputs) * torch.tensor(upstream)).sum().backward()

    return f"selective scan, {batch} x {length} x {CHANNELS} x {STATE}", ours, theirs


def model_case(rng, batch: int, length: int):
    torch.manual_seed(0)
    reference = MambaForCausalLM(MODEL)
    model = models.Mamba(**MODEL)
    models.load_hf_mamba_state_dict(model, reference.state_dict())
    ids = rng.integers(0, MODEL["vocab_size"], size=(batch, length))

    def ours():
        model.zero_grad()
        F.categorical_cross_entropy(model(ids[:, :-1]), ids[:, 1:], from_logits=True).backward()

    def theirs():
        reference.zero_grad()
        reference(torch.tensor(ids), labels=torch.tensor(ids))[1].backward()

    return f"Mamba (hidden 128, 2 layers), {batch} x {length} tokens", ours, theirs


CASES = {"scan": scan_case, "model": model_case}


def main() -> None:
    parser = case_parser(__doc__, CASES)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    run_cases(CASES, args, args.batch, args.length)


if __name__ == "__main__":
    main()
