"""The RMSNorm of Hugging Face's Llama and Mamba (LlamaRMSNorm, MambaRMSNorm) in PyTorch, for
the references that check lamina's models: y = weight * x / sqrt(mean(x^2) + eps) over the
last axis, its weight started near 1 (1 + 0.2 N(0, 1)) so that a wrong scale shows."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.2 * torch.randn(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))
