"""The PyTorch reference of gradient reversal: the identity forward, -lambda times the
upstream gradient backward."""

from __future__ import annotations

import torch


class TorchReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dy):
        return -ctx.lambda_ * dy, None
