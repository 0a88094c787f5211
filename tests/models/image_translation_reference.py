"""Torch rewrites of the reference image-to-image networks (junyanz/pytorch-CycleGAN-and-pix2pix,
networks.py) and the functions that copy their weights into lamina's models and compare the two
in float64 (NHWC in lamina, NCHW in torch)."""

import functools

import numpy as np
import torch
from torch import nn as tnn

import lamina
from helpers import assert_close

RTOL = 1e-9


# -- torch rewrites of the reference networks ----------------------------------------------------
def torch_norm(kind):
    if kind == "batch":
        return functools.partial(tnn.BatchNorm2d, affine=True, track_running_stats=True)
    return functools.partial(tnn.InstanceNorm2d, affine=False, track_running_stats=False)


class TorchUnetBlock(tnn.Module):
    """UnetSkipConnectionBlock, with its in-place LeakyReLU (which also changes the skip)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=None, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = norm_layer.func == tnn.InstanceNorm2d
        input_nc = outer_nc if input_nc is None else input_nc
        self.downconv = tnn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=use_bias)
        downrelu, downnorm = tnn.LeakyReLU(0.2, True), norm_layer(inner_nc)
        uprelu, upnorm = tnn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            self.upconv = tnn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1)
            model = [self.downconv, submodule, uprelu, self.upconv, tnn.Tanh()]
        elif innermost:
            self.upconv = tnn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=use_bias)
            model = [downrelu, self.downconv, uprelu, self.upconv, upnorm]
        else:
            self.upconv = tnn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=use_bias)
            model = [downrelu, self.downconv, downnorm, submodule, uprelu, self.upconv, upnorm]
            if use_dropout:
                model.append(tnn.Dropout(0.5))
        self.downnorm = None if outermost or innermost else downnorm
        self.upnorm = None if outermost else upnorm
        self.submodule = submodule
        self.model = tnn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


def torch_unet(input_nc, output_nc, num_downs, ngf, norm):
    norm_layer = torch_norm(norm)
    block = TorchUnetBlock(ngf * 8, ngf * 8, norm_layer=norm_layer, innermost=True)
    blocks = [block]
    for _ in range(num_downs - 5):
        block = TorchUnetBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer, use_dropout=True)
        blocks.append(block)
    for outer, inner in ((ngf * 4, ngf * 8), (ngf * 2, ngf * 4), (ngf, ngf * 2)):
        block = TorchUnetBlock(outer, inner, submodule=block, norm_layer=norm_layer)
        blocks.append(block)
    block = TorchUnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm_layer=norm_layer)
    blocks.append(block)
    return block, blocks[::-1]          # blocks[k - 1] is level k


def torch_nlayer(input_nc, ndf, n_layers, norm):
    norm_layer = torch_norm(norm)
    use_bias = norm_layer.func == tnn.InstanceNorm2d
    seq = [tnn.Conv2d(input_nc, ndf, 4, 2, 1), tnn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2 ** n, 8)
        seq += [tnn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias), norm_layer(ndf * mult),
                tnn.LeakyReLU(0.2, True)]
    prev, mult = mult, min(2 ** n_layers, 8)
    seq += [tnn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias), norm_layer(ndf * mult),
            tnn.LeakyReLU(0.2, True), tnn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    return tnn.Sequential(*seq)


def torch_pixel(input_nc, ndf, norm):
    norm_layer = torch_norm(norm)
    use_bias = norm_layer.func == tnn.InstanceNorm2d
    return tnn.Sequential(tnn.Conv2d(input_nc, ndf, 1), tnn.LeakyReLU(0.2, True),
                          tnn.Conv2d(ndf, ndf * 2, 1, bias=use_bias), norm_layer(ndf * 2), tnn.LeakyReLU(0.2, True),
                          tnn.Conv2d(ndf * 2, 1, 1, bias=use_bias))


def torch_parameters(module):
    return sum(p.numel() for p in module.parameters())


# -- weight copying: (out, in, kh, kw) and (in, out, kh, kw) both become (., kh, kw, .) -----------
def copy_conv(layer, conv) -> list:
    """Copy ``conv``'s weights into the lamina ``layer``; returns the (lamina, torch) parameter pairs."""
    pairs = [(layer.weight, conv.weight, (0, 2, 3, 1))]
    layer.weight.data[...] = conv.weight.detach().numpy().transpose(0, 2, 3, 1)
    if conv.bias is not None:
        layer.bias.data[...] = conv.bias.detach().numpy()
        pairs.append((layer.bias, conv.bias, None))
    else:
        assert "bias" not in layer._parameters
    return pairs


def copy_norm(layer, norm) -> list:
    if isinstance(norm, tnn.BatchNorm2d):
        layer.weight.data[...] = norm.weight.detach().numpy()
        layer.bias.data[...] = norm.bias.detach().numpy()
        return [(layer.weight, norm.weight, None), (layer.bias, norm.bias, None)]
    assert not list(layer.parameters())
    return []


def randomize(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)


def compare(model, reference, x, pairs, seed=1):
    """Outputs, the input's gradient and every paired weight's gradient; x is NHWC."""
    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    out_l, out_t = model(ours), reference(theirs)
    expected = out_t.detach().numpy().transpose(0, 2, 3, 1)
    assert_close(out_l.numpy(), expected, RTOL, "output")
    up = np.random.default_rng(seed).standard_normal(expected.shape)
    (out_l * lamina.tensor(up)).sum().backward()
    (out_t * torch.tensor(up.transpose(0, 3, 1, 2))).sum().backward()
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), RTOL, "input gradient")
    for k, (param, tparam, axes) in enumerate(pairs):
        g = tparam.grad.numpy()
        # a bias just before an instance norm has a zero gradient: compare it absolutely
        np.testing.assert_allclose(param.grad, g if axes is None else g.transpose(axes), rtol=RTOL, atol=1e-10,
                                   err_msg=f"gradient of weight {k}")
    return out_l


class TorchResnetBlock(tnn.Module):
    def __init__(self, dim, norm_layer, use_dropout, use_bias):
        super().__init__()
        layers = [tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim), tnn.ReLU(True)]
        if use_dropout:
            layers.append(tnn.Dropout(0.5))
        layers += [tnn.ReflectionPad2d(1), tnn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim)]
        self.conv_block = tnn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


def torch_resnet_generator(input_nc, output_nc, ngf, n_blocks, norm):
    """ResnetGenerator (reflection padding, no dropout)."""
    norm_layer = torch_norm(norm)
    use_bias = norm_layer.func == tnn.InstanceNorm2d
    model = [tnn.ReflectionPad2d(3), tnn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf), tnn.ReLU(True)]
    for i in range(2):
        mult = 2 ** i
        model += [tnn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                  norm_layer(ngf * mult * 2), tnn.ReLU(True)]
    for _ in range(n_blocks):
        model.append(TorchResnetBlock(ngf * 4, norm_layer, False, use_bias))
    for i in range(2):
        mult = 2 ** (2 - i)
        model += [tnn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                      bias=use_bias), norm_layer(ngf * mult // 2), tnn.ReLU(True)]
    model += [tnn.ReflectionPad2d(3), tnn.Conv2d(ngf, output_nc, 7), tnn.Tanh()]
    return tnn.Sequential(*model)


def resnet_generator_pairs(model, reference) -> list:
    """Copy the reference ResnetGenerator's weights into lamina's (same layer order)."""
    ours = [m for _, m in model.named_modules() if type(m).__name__ in ("Conv2D", "Conv2DTranspose", "BatchNorm",
                                                                       "InstanceNorm2D")]
    theirs = [m for m in reference.modules() if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d, tnn.BatchNorm2d,
                                                               tnn.InstanceNorm2d))]
    assert len(ours) == len(theirs)
    pairs = []
    for layer, module in zip(ours, theirs):
        if isinstance(module, (tnn.Conv2d, tnn.ConvTranspose2d)):
            pairs += copy_conv(layer, module)
        else:
            pairs += copy_norm(layer, module)
    return pairs
