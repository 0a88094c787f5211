"""A PyTorch RAFT reference with torchvision's module names (torchvision is not installed):
the encoders, the correlation pyramid and its lookup, the update block, both upsamplings."""

import torch
import torch.nn.functional as F
from torch import nn


def conv_norm_act(cin, cout, k, stride=1, norm=None, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    elif norm == "instance":
        layers.append(nn.InstanceNorm2d(cout))
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, cin, cout, norm, stride=1):
        super().__init__()
        self.convnormrelu1 = conv_norm_act(cin, cout, 3, stride, norm)
        self.convnormrelu2 = conv_norm_act(cout, cout, 3, 1, norm)
        self.downsample = conv_norm_act(cin, cout, 1, stride, norm, relu=False) if stride != 1 else nn.Identity()

    def forward(self, x):
        return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
    def __init__(self, cin, cout, norm, stride=1):
        super().__init__()
        self.convnormrelu1 = conv_norm_act(cin, cout // 4, 1, 1, norm)
        self.convnormrelu2 = conv_norm_act(cout // 4, cout // 4, 3, stride, norm)
        self.convnormrelu3 = conv_norm_act(cout // 4, cout, 1, 1, norm)
        self.downsample = conv_norm_act(cin, cout, 1, stride, norm, relu=False) if stride != 1 else nn.Identity()

    def forward(self, x):
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return F.relu(self.downsample(x) + y)


class FeatureEncoder(nn.Module):
    def __init__(self, block, layers, norm, strides=(2, 1, 2, 2)):
        super().__init__()
        block = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}[block]
        self.convnormrelu = conv_norm_act(3, layers[0], 7, strides[0], norm)
        for i in range(1, 4):
            setattr(self, f"layer{i}", nn.Sequential(block(layers[i - 1], layers[i], norm, strides[i]),
                                                     block(layers[i], layers[i], norm, 1)))
        self.conv = nn.Conv2d(layers[3], layers[4], 1)

    def forward(self, x):
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


def corr_pyramid(fmap1, fmap2, num_levels):
    n, c, h, w = fmap1.shape
    corr = fmap1.flatten(2).transpose(1, 2) @ fmap2.flatten(2) / c ** 0.5
    levels = [corr.reshape(n * h * w, 1, h, w)]
    for _ in range(num_levels - 1):
        levels.append(F.avg_pool2d(levels[-1], 2, 2))
    return levels


def index_pyramid(levels, coords, radius):
    """coords (N, 2, h, w) in pixels -> (N, levels (2r+1)^2, h, w)."""
    n, _, h, w = coords.shape
    side = torch.arange(-radius, radius + 1, dtype=coords.dtype)
    delta = torch.stack(torch.meshgrid(side, side, indexing="ij"), dim=-1)[None]
    centres = coords.permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
    out = []
    for volume in levels:
        hl, wl = volume.shape[-2:]
        grid = centres + delta
        grid = torch.cat([2 * grid[..., :1] / (wl - 1) - 1, 2 * grid[..., 1:] / (hl - 1) - 1], dim=-1)
        out.append(F.grid_sample(volume, grid, mode="bilinear", align_corners=True).reshape(n, h, w, -1))
        centres = centres / 2
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2)


class MotionEncoder(nn.Module):
    def __init__(self, in_corr, corr_layers, flow_layers, out_channels):
        super().__init__()
        self.convcorr1 = conv_norm_act(in_corr, corr_layers[0], 1)
        self.convcorr2 = conv_norm_act(corr_layers[0], corr_layers[1], 3) if len(corr_layers) == 2 else nn.Identity()
        self.convflow1 = conv_norm_act(2, flow_layers[0], 7)
        self.convflow2 = conv_norm_act(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_norm_act(corr_layers[-1] + flow_layers[-1], out_channels - 2, 3)

    def forward(self, flow, corr):
        corr = self.convcorr2(self.convcorr1(corr))
        motion = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([corr, motion], dim=1)), flow], dim=1)


class ConvGRU(nn.Module):
    def __init__(self, input_size, hidden_size, kernel_size, padding):
        super().__init__()
        for gate in "zrq":
            setattr(self, f"conv{gate}", nn.Conv2d(input_size + hidden_size, hidden_size, kernel_size,
                                                   padding=padding))

    def forward(self, h, x):
        hx = torch.cat([h, x], dim=1)
        z, r = torch.sigmoid(self.convz(hx)), torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    def __init__(self, input_size, hidden_size, kernel_size, padding):
        super().__init__()
        self.hidden_size = hidden_size
        self.cells = len(kernel_size)
        for i, (k, p) in enumerate(zip(kernel_size, padding), start=1):
            setattr(self, f"convgru{i}", ConvGRU(input_size, hidden_size, k, p))

    def forward(self, h, x):
        for i in range(1, self.cells + 1):
            h = getattr(self, f"convgru{i}")(h, x)
        return h


class FlowHead(nn.Module):
    def __init__(self, cin, hidden):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self, motion_encoder, recurrent_block, flow_head):
        super().__init__()
        self.motion_encoder, self.recurrent_block, self.flow_head = motion_encoder, recurrent_block, flow_head

    def forward(self, h, context, corr, flow):
        h = self.recurrent_block(h, torch.cat([context, self.motion_encoder(flow, corr)], dim=1))
        return h, self.flow_head(h)


class MaskPredictor(nn.Module):
    def __init__(self, cin, hidden):
        super().__init__()
        self.convrelu = conv_norm_act(cin, hidden, 3)
        self.conv = nn.Conv2d(hidden, 8 * 8 * 9, 1)

    def forward(self, x):
        return 0.25 * self.conv(self.convrelu(x))


def upsample_flow(flow, mask=None):
    n, _, h, w = flow.shape
    if mask is None:
        return 8 * F.interpolate(flow, size=(8 * h, 8 * w), mode="bilinear", align_corners=True)
    mask = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
    nbrs = F.unfold(8 * flow, kernel_size=3, padding=1).view(n, 2, 9, 1, 1, h, w)
    up = torch.sum(mask * nbrs, dim=2)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, 2, 8 * h, 8 * w)


class RAFT(nn.Module):
    def __init__(self, feature_layers, feature_block, feature_norm, context_layers, context_block, context_norm,
                 num_levels, radius, motion_corr_layers, motion_flow_layers, motion_out_channels, hidden_size,
                 gru_kernels, gru_paddings, flow_head_hidden_size, mask_hidden_size):
        super().__init__()
        self.num_levels, self.radius, self.hidden_size = num_levels, radius, hidden_size
        self.feature_encoder = FeatureEncoder(feature_block, feature_layers, feature_norm)
        self.context_encoder = FeatureEncoder(context_block, context_layers, context_norm)
        corr_channels = num_levels * (2 * radius + 1) ** 2
        self.update_block = UpdateBlock(
            MotionEncoder(corr_channels, motion_corr_layers, motion_flow_layers, motion_out_channels),
            RecurrentBlock(motion_out_channels + context_layers[-1] - hidden_size, hidden_size, gru_kernels,
                           gru_paddings),
            FlowHead(hidden_size, flow_head_hidden_size))
        self.mask_predictor = None if mask_hidden_size is None else MaskPredictor(hidden_size, mask_hidden_size)

    def forward(self, image1, image2, num_flow_updates=12):
        n, _, hh, ww = image1.shape
        fmap1, fmap2 = torch.chunk(self.feature_encoder(torch.cat([image1, image2], dim=0)), 2, dim=0)
        levels = corr_pyramid(fmap1, fmap2, self.num_levels)
        context_out = self.context_encoder(image1)
        h, context = torch.split(context_out, [self.hidden_size, context_out.shape[1] - self.hidden_size], dim=1)
        h, context = torch.tanh(h), F.relu(context)
        ys, xs = torch.meshgrid(torch.arange(hh // 8), torch.arange(ww // 8), indexing="ij")
        coords0 = torch.stack([xs, ys], dim=0).to(image1.dtype)[None].repeat(n, 1, 1, 1)
        coords1 = coords0.clone()
        predictions = []
        for _ in range(num_flow_updates):
            coords1 = coords1.detach()
            corr = index_pyramid(levels, coords1, self.radius)
            h, delta = self.update_block(h, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
            mask = None if self.mask_predictor is None else self.mask_predictor(h)
            predictions.append(upsample_flow(coords1 - coords0, mask))
        return predictions
