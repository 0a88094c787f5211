"""One training step of the diffusion U-Net denoiser, lamina against the same network in torch.

The step: draw t and eps, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the MSE of the
net's eps prediction, backward, one Adam step. Both sides run the layout of
:class:`lamina.models.DenoisingUNet` (residual blocks with GroupNorm, SiLU and the projected
time features, a strided convolution down, nearest upsampling up, skips joined on the
channels); torch in its NCHW layout. Batch 32 of 16x16x1 by default. The ratio is torch's
time over lamina's (above 1: lamina is faster), paired within rounds (pairing.py).

    python benchmarks/diffusion_vs_torch.py [--repeats 9] [--batch 32] [--size 16] [--base 16]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pairing import case_parser, run_cases
from torch import nn as tnn

import lamina
from lamina.models import DenoisingUNet, DiffusionModel
from lamina.optim import Adam

T = 1000


class TorchBlock(tnn.Module):
    def __init__(self, c_in: int, filters: int, embed: int, groups: int):
        super().__init__()
        self.norm1 = tnn.GroupNorm(math.gcd(groups, c_in), c_in)
        self.conv1 = tnn.Conv2d(c_in, filters, 3, padding=1)
        self.time_projection = tnn.Linear(embed, filters)
        self.norm2 = tnn.GroupNorm(math.gcd(groups, filters), filters)
        self.conv2 = tnn.Conv2d(filters, filters, 3, padding=1)
        self.skip = tnn.Conv2d(c_in, filters, 1) if c_in != filters else tnn.Identity()

    def forward(self, x, e):
        h = self.conv1(tnn.functional.silu(self.norm1(x)))
        h = h + self.time_projection(tnn.functional.silu(e))[:, :, None, None]
        return self.skip(x) + self.conv2(tnn.functional.silu(self.norm2(h)))


class TorchDenoisingUNet(tnn.Module):
    """DenoisingUNet's layout with two levels, in torch.nn modules."""

    def __init__(self, channels: int, base: int, groups: int = 8):
        super().__init__()
        f0, f1, embed = base, 2 * base, 4 * base
        self.base = base
        self.time = tnn.Sequential(tnn.Linear(base, embed), tnn.SiLU(), tnn.Linear(embed, embed))
        self.stem = tnn.Conv2d(channels, f0, 3, padding=1)
        self.down0, self.down1 = TorchBlock(f0, f0, embed, groups), TorchBlock(f0, f1, embed, groups)
        self.downsample = tnn.Conv2d(f0, f0, 3, stride=2, padding=1)
        self.middle = TorchBlock(f1, f1, embed, groups)
        self.up1, self.up0 = TorchBlock(2 * f1, f1, embed, groups), TorchBlock(2 * f0, f0, embed, groups)
        self.upconv = tnn.Conv2d(f1, f0, 3, padding=1)
        self.head_norm = tnn.GroupNorm(math.gcd(groups, f0), f0)
        self.head = tnn.Conv2d(f0, channels, 3, padding=1)

    def embedding(self, t):
        j = torch.arange(self.base, dtype=torch.float32)
        angles = t[:, None].float() / torch.pow(10000.0, 2.0 * torch.floor(j / 2) / self.base)
        return torch.where(j % 2 == 0, torch.sin(angles), torch.cos(angles))

    def forward(self, x, t):
        e = self.time(self.embedding(t))
        skip0 = self.down0(self.stem(x), e)
        skip1 = self.down1(self.downsample(skip0), e)
        h = self.middle(skip1, e)
        h = self.up1(torch.cat([skip1, h], dim=1), e)
        h = self.upconv(tnn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up0(torch.cat([skip0, h], dim=1), e)
        return self.head(tnn.functional.silu(self.head_norm(h)))


def unet_step(rng, batch: int, size: int, base: int):
    x0 = rng.uniform(-1, 1, (batch, size, size, 1)).astype(np.float32)
    model = DiffusionModel(DenoisingUNet(base_filters=base, multipliers=(1, 2)), num_timesteps=T)
    model(x0[:1], np.zeros(1, dtype=np.int64))
    optimizer = Adam(model, lr=1e-3)

    def ours():
        loss = model.loss(x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    net = TorchDenoisingUNet(1, base)
    torch_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    alpha_bars = torch.tensor(model.schedule.alpha_bars, dtype=torch.float32)
    x0_t = torch.tensor(x0).permute(0, 3, 1, 2).contiguous()

    def theirs():
        t = torch.randint(0, T, (batch,))
        eps = torch.randn_like(x0_t)
        abar = alpha_bars[t][:, None, None, None]
        x_t = abar.sqrt() * x0_t + (1 - abar).sqrt() * eps
        loss = tnn.functional.mse_loss(net(x_t, t), eps)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()

    lamina_count = model.num_parameters()
    torch_count = sum(p.numel() for p in net.parameters())
    name = f"U-Net step, batch {batch}, {size}x{size}x1, {lamina_count}/{torch_count} params"
    return name, ours, theirs


CASES = {"unet_step": unet_step}


def main() -> None:
    parser = case_parser(__doc__, CASES)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--base", type=int, default=16)
    args = parser.parse_args()
    lamina.manual_seed(0)
    torch.manual_seed(0)
    run_cases(CASES, args, args.batch, args.size, args.base)


if __name__ == "__main__":
    main()
