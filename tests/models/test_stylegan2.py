"""StyleGAN2's blocks against torch rewrites of the published formulas (float64, NHWC here and
NCHW in torch), float64 gradient checks, and the R1 penalty and logistic costs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError
from lamina.models import (
    EqualizedConv2D,
    EqualizedDense,
    MappingNetwork,
    ModulatedConv2D,
    NoiseInjection,
    PathLengthPenalty,
    StyleGAN2Generator,
    ToRGB,
    modulated_conv2d,
    pixel_norm,
)

RTOL = 1e-9
SQRT2 = math.sqrt(2.0)


def nchw(a):
    return torch.tensor(np.asarray(a).transpose(0, 3, 1, 2))


def conv_weight(w):
    """lamina (K, f, f, C) -> torch (K, C, f, f)."""
    return w.permute(0, 3, 1, 2)


# -- torch rewrites -------------------------------------------------------------------------------
def torch_dense(x, weight, bias, lr_mul, activation):
    z = x @ (weight * (lr_mul / math.sqrt(weight.shape[0]))) + bias * lr_mul
    return TF.leaky_relu(z, 0.2) * SQRT2 if activation == "lrelu" else z


def torch_modconv(x, weight, styles, demodulate=True):
    """Grouped-convolution modulated conv: x NCHW, weight (K, C, f, f), styles (N, C)."""
    n, c, h, w = x.shape
    k, _, f, _ = weight.shape
    per_sample = weight[None] * styles[:, None, :, None, None] / math.sqrt(c * f * f)
    if demodulate:
        per_sample = per_sample * (per_sample.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    # both in the standard layout: torch's CPU grouped convolution gets weight gradients wrong for
    # channels-last strided tensors here (which the permutes from NHWC produce)
    plain = torch.contiguous_format
    y = TF.conv2d(x.reshape(1, n * c, h, w).clone(memory_format=plain),
                  per_sample.reshape(n * k, c, f, f).clone(memory_format=plain), padding=f // 2, groups=n)
    return y.reshape(n, k, h, w)


def torch_mapping(z, p, model):
    w = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for k in range(model.mapping.num_layers):
        w = torch_dense(w, p[f"mapping.fc{k}.weight"], p[f"mapping.fc{k}.bias"], 0.01, "lrelu")
    return w


def torch_synthesis(ws, p, model):
    """The synthesis network of ``model`` written with torch ops on its parameters ``p`` (a dict
    of torch tensors named as lamina's, in lamina's layouts), one w per modulated layer
    (ws (N, num_ws, w_dim)), constant noise."""
    def modconv(x, w, name, demodulate):
        styles = torch_dense(w, p[f"{name}.affine.weight"], p[f"{name}.affine.bias"], 1.0, None)
        return torch_modconv(x, conv_weight(p[f"{name}.weight"]), styles, demodulate)

    def layer(x, w, name, up):
        if up:
            x = TF.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modconv(x, w, f"{name}.conv", True)
        noise = p[f"{name}.noise.noise_const"].permute(0, 3, 1, 2)
        x = x + noise * p[f"{name}.noise.strength"]
        return TF.leaky_relu(x + p[f"{name}.bias"][None, :, None, None], 0.2) * SQRT2

    used = iter(range(ws.shape[1]))
    x = p["const"].permute(2, 0, 1)[None].expand(ws.shape[0], -1, -1, -1)
    image = None
    for r in model.resolutions:
        if r > 4:
            x = layer(x, ws[:, next(used)], f"b{r}_conv0", True)
        x = layer(x, ws[:, next(used)], f"b{r}_conv1", False)
        rgb = modconv(x, ws[:, next(used)], f"b{r}_torgb.conv", False) + p[f"b{r}_torgb.bias"][None, :, None, None]
        image = rgb if image is None else TF.interpolate(image, scale_factor=2, mode="bilinear",
                                                         align_corners=False) + rgb
    return image


def torch_generator(z, p, model):
    w = torch_mapping(z, p, model)
    return torch_synthesis(w[:, None].expand(-1, model.num_ws, -1), p, model)


def gradcheck_with_weights(fn, arrays, weights) -> bool:
    """A float64 gradient check of ``fn(*inputs)`` with respect to the input arrays and the
    layer's own ``weights`` (perturbed in place)."""
    inputs = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    return lamina.gradcheck(lambda *args: fn(*args[:len(inputs)]), *inputs, *weights)


def randomize_layer(layer, seed=0):
    rng = np.random.default_rng(seed)
    for param in layer.parameters():
        param.data[...] = rng.standard_normal(param.shape) * 0.5


# -- equalized layers -----------------------------------------------------------------------------
@pytest.mark.parametrize("activation", [None, "lrelu"])
@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_equalized_dense_matches_torch(activation, lr_mul):
    lamina.set_default_dtype(np.float64)
    layer = EqualizedDense(4, lr_multiplier=lr_mul, bias_init=0.3, activation=activation)
    layer.build((3, 5))
    # stored N(0, 1) / lr_mul, the bias at bias_init / lr_mul: the used values start at N(0, 1), 0.3
    assert np.allclose(layer.bias.data * lr_mul, 0.3)
    randomize_layer(layer)

    x = randn(3, 5, seed=1)
    compare_with_torch(lambda x: layer(x), lambda x: torch_dense(x, torch.tensor(layer.weight.data),
                                                                 torch.tensor(layer.bias.data), lr_mul, activation),
                       x, dtype=np.float64)
    # weight and bias gradients against torch
    xt = torch.tensor(x)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    up = randn(3, 4, seed=2)
    layer.zero_grad()
    (layer(lamina.tensor(x)) * lamina.tensor(up)).sum().backward()
    (torch_dense(xt, wt, bt, lr_mul, activation) * torch.tensor(up)).sum().backward()
    assert_close(layer.weight.grad, wt.grad.numpy(), RTOL, "weight gradient")
    assert_close(layer.bias.grad, bt.grad.numpy(), RTOL, "bias gradient")
    assert gradcheck_with_weights(layer, [x], [layer.weight, layer.bias])


def test_equalized_conv_matches_torch_and_gradcheck():
    lamina.set_default_dtype(np.float64)
    layer = EqualizedConv2D(3, 3, lr_multiplier=0.5, activation="lrelu")
    layer.build((2, 5, 4, 2))
    randomize_layer(layer)
    x = randn(2, 5, 4, 2, seed=1)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True)
    xt = nchw(x).requires_grad_(True)
    gain = 0.5 / math.sqrt(3 * 3 * 2)
    ref = TF.leaky_relu(TF.conv2d(xt, conv_weight(wt) * gain, bt * 0.5, padding=1), 0.2) * SQRT2
    xl = lamina.tensor(x, requires_grad=True)
    out = layer(xl)
    assert_close(out.numpy(), ref.detach().numpy().transpose(0, 2, 3, 1), RTOL, "output")
    up = randn(*out.shape, seed=3)
    (out * lamina.tensor(up)).sum().backward()
    (ref * nchw(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), RTOL, "input gradient")
    assert_close(layer.weight.grad, wt.grad.numpy(), RTOL, "weight gradient")
    assert_close(layer.bias.grad, bt.grad.numpy(), RTOL, "bias gradient")
    assert gradcheck_with_weights(layer, [x], [layer.weight, layer.bias])


def test_mapping_network_matches_torch_and_truncates():
    lamina.set_default_dtype(np.float64)
    mapping = MappingNetwork(w_dim=6, num_layers=3)
    z = randn(4, 5, seed=1)
    w = mapping(lamina.tensor(z))
    p = {name: torch.tensor(param.data) for name, param in mapping.named_parameters()}
    h = torch.tensor(z)
    h = h * (h.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for k in range(3):
        h = torch_dense(h, p[f"fc{k}.weight"], p[f"fc{k}.bias"], 0.01, "lrelu")
    assert_close(w.numpy(), h.numpy(), RTOL, "w")
    # w_avg follows the batch means in training; truncation pulls w towards it
    assert_close(mapping.w_avg, 0.005 * w.numpy().mean(axis=0), RTOL, "w_avg")
    mapping.eval()
    before = mapping.w_avg.copy()
    half = mapping(lamina.tensor(z), truncation_psi=0.5).numpy()
    assert np.array_equal(mapping.w_avg, before)
    assert_close(half, before + 0.5 * (w.numpy() - before), RTOL, "truncated w")
    assert_close(pixel_norm(lamina.tensor(z)).numpy() ** 2 @ np.ones(5) / 5, np.ones(4), 1e-6, "pixel norm")


# -- modulated convolution ------------------------------------------------------------------------
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv2d_matches_torch(demodulate, fused):
    x, weight, styles = randn(2, 5, 4, 3, seed=1), randn(4, 3, 3, 3, seed=2), randn(2, 3, seed=3) + 1.0
    compare_with_torch(lambda x, w, s: modulated_conv2d(x, w, s, demodulate=demodulate, fused=fused),
                       lambda x, w, s: torch_modconv(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), s,
                                                     demodulate).permute(0, 2, 3, 1),
                       x, weight, styles, dtype=np.float64)


def test_modulated_conv2d_gradcheck():
    x, weight, styles = randn(2, 4, 3, 2, seed=1), randn(3, 3, 3, 2, seed=2), randn(2, 2, seed=3) + 1.0
    for fused in (True, False):
        assert check_gradients(lambda x, w, s, fused=fused: modulated_conv2d(x, w, s, fused=fused), x, weight, styles)


def test_demodulation_gives_unit_output_variance():
    # with unit-variance inputs, demodulated weights keep each output's variance near 1
    lamina.set_default_dtype(np.float64)
    x = randn(4, 16, 16, 32, seed=1)
    y = modulated_conv2d(x, randn(8, 3, 3, 32, seed=2), randn(4, 32, seed=3) * 3 + 2).numpy()
    assert abs(y[:, 2:-2, 2:-2].std() - 1.0) < 0.1
    y = modulated_conv2d(x, randn(8, 3, 3, 32, seed=2), randn(4, 32, seed=3) * 3 + 2, demodulate=False).numpy()
    assert y.std() > 2


def test_modulated_conv_layer_and_to_rgb():
    lamina.set_default_dtype(np.float64)
    layer = ModulatedConv2D(4, 3)
    x, w = randn(2, 6, 6, 3, seed=1), randn(2, 5, seed=2)
    out = layer(lamina.tensor(x), lamina.tensor(w))
    styles = layer.affine(lamina.tensor(w))
    assert np.allclose(layer.affine.bias.data, 1.0)
    assert_close(out.numpy(), modulated_conv2d(x, layer.weight, styles).numpy(), RTOL, "layer")
    assert gradcheck_with_weights(layer, [x, w], [layer.weight, layer.affine.weight, layer.affine.bias])
    to_rgb = ToRGB(3)
    rgb = to_rgb(lamina.tensor(x), lamina.tensor(w))
    expected = modulated_conv2d(x, to_rgb.conv.weight, to_rgb.conv.affine(lamina.tensor(w)), demodulate=False)
    assert_close(rgb.numpy(), expected.numpy() + to_rgb.bias.data, RTOL, "to_rgb")
    with pytest.raises(ShapeError, match="latent w must be"):
        layer(lamina.tensor(x), lamina.tensor(randn(3, 5)))


def test_noise_injection():
    lamina.set_default_dtype(np.float64)
    layer = NoiseInjection()
    x = randn(2, 4, 4, 3, seed=1)
    assert np.array_equal(layer(x).numpy(), x)                # strength starts at 0
    layer.strength.data[...] = 0.7
    noise = randn(2, 4, 4, 1, seed=2)
    xt, st = torch.tensor(x, requires_grad=True), torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    xl = lamina.tensor(x, requires_grad=True)
    out = layer(xl, noise=noise)
    ref = xt + torch.tensor(noise) * st
    assert_close(out.numpy(), ref.detach().numpy(), RTOL, "output")
    up = randn(2, 4, 4, 3, seed=3)
    (out * lamina.tensor(up)).sum().backward()
    (ref * torch.tensor(up)).sum().backward()
    assert_close(layer.strength.grad, st.grad.numpy(), RTOL, "strength gradient")
    assert_close(xl.grad, xt.grad.numpy(), RTOL, "input gradient")
    assert np.array_equal(layer(x, noise_mode="const").numpy(), layer(x, noise_mode="const").numpy())
    assert not np.array_equal(layer(x).numpy(), layer(x).numpy())
    assert np.array_equal(layer(x, noise_mode="none").numpy(), x)
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        layer(x, noise_mode="fixed")


# -- the generator --------------------------------------------------------------------------------
def test_generator_matches_torch_rewrite():
    model = small_generator()
    z = randn(2, 6, seed=1)
    params = {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}
    params.update({name: torch.tensor(buf) for name, buf in model.named_buffers() if "noise_const" in name})
    zl = lamina.tensor(z, requires_grad=True)
    out = model(zl, noise_mode="const")
    zt = torch.tensor(z, requires_grad=True)
    ref = torch_generator(zt, params, model)
    assert out.shape == (2, 16, 16, 3)
    assert_close(out.numpy(), ref.detach().numpy().transpose(0, 2, 3, 1), RTOL, "images")
    up = randn(2, 16, 16, 3, seed=2)
    (out * lamina.tensor(up)).sum().backward()
    (ref * nchw(up)).sum().backward()
    assert_close(zl.grad, zt.grad.numpy(), 1e-8, "z gradient")
    for name, param in model.named_parameters():
        assert_close(param.grad, params[name].grad.numpy(), 1e-8, f"gradient of {name}")


@pytest.mark.parametrize("resolution", [8, 32])
def test_generator_sizes_and_style_mixing(resolution):
    model = StyleGAN2Generator(resolution, channels=1, z_dim=4, w_dim=4, mapping_layers=2, channel_max=4)
    images = model(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32), noise_mode="none")
    assert images.shape == (2, resolution, resolution, 1) and images.dtype == np.float32
    w = model.mapping(lamina.tensor(np.ones((2, 4), np.float32)))
    ws = F.stack([w] * model.num_ws, axis=1)
    assert np.allclose(model.synthesize(ws, noise_mode="none").numpy(), model.synthesize(w, noise_mode="none").numpy())
    with pytest.raises(ShapeError, match="w of shape"):
        model.synthesize(lamina.tensor(np.ones((2, 3, 4), np.float32)))
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(12)


def small_generator():
    lamina.set_default_dtype(np.float64)
    model = StyleGAN2Generator(16, channels=3, z_dim=6, w_dim=5, mapping_layers=2, channel_base=64, channel_max=6)
    model.eval()
    model(lamina.tensor(randn(2, 6)))                                     # builds
    for name, param in model.named_parameters():
        if name.endswith("strength"):
            param.data[...] = 0.3
    return model


def test_path_length_penalty_matches_torch():
    model = small_generator()
    params = {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}
    params.update({name: torch.tensor(buf) for name, buf in model.named_buffers() if "noise_const" in name})
    z = randn(2, 6, seed=1)
    penalty_fn = PathLengthPenalty(seed=5)
    penalty = penalty_fn(model, model.mapping(lamina.tensor(z)))
    penalty.backward()
    y = np.random.default_rng(5).standard_normal((2, 16, 16, 3)) / 16
    w = torch_mapping(torch.tensor(z), params, model)
    ws = w[:, None].expand(-1, model.num_ws, -1)
    images = torch_synthesis(ws, params, model)
    (slopes,) = torch.autograd.grad((images * nchw(y)).sum(), ws, create_graph=True)
    lengths = slopes.square().sum(2).mean(1).sqrt()
    mean = 0.01 * lengths.mean().item()
    expected = (lengths - mean).square().mean()
    expected.backward()
    assert penalty_fn.mean == pytest.approx(mean, rel=1e-9)
    assert_close(penalty.item(), expected.item(), RTOL, "penalty")
    for name, param in model.named_parameters():
        reference = params[name].grad
        g = np.zeros(param.shape) if reference is None else reference.numpy()
        np.testing.assert_allclose(np.zeros(param.shape) if param.grad is None else param.grad, g, rtol=1e-7,
                                   atol=1e-10, err_msg=name)
    penalty_fn(model, model.mapping(lamina.tensor(z)))                    # the running mean moves on
    assert penalty_fn.mean > mean


# -- costs ------------------------------------------------------------------------------------------
def test_logistic_and_lsgan_costs_match_torch():
    real, fake = randn(5, 1, seed=1), randn(5, 1, seed=2)
    compare_with_torch(lambda r, f: F.logistic_d_loss(r, f),
                       lambda r, f: TF.softplus(-r).mean() + TF.softplus(f).mean(), real, fake, dtype=np.float64)
    compare_with_torch(lambda f: F.logistic_g_loss(f),
                       lambda f: TF.binary_cross_entropy_with_logits(f, torch.ones_like(f)), fake, dtype=np.float64)
    compare_with_torch(lambda p: F.gan_loss(p, True, "lsgan") + F.gan_loss(p * 2, False, "lsgan"),
                       lambda p: TF.mse_loss(p, torch.ones_like(p)) + TF.mse_loss(p * 2, torch.zeros_like(p)),
                       randn(2, 3, 3, 1, seed=3), dtype=np.float64)
    assert check_gradients(lambda p: F.gan_loss(p, True) + F.gan_loss(p, False, "lsgan")
                           + F.gan_loss(p, True, "wgangp"), randn(3, 2, seed=4))
    with pytest.raises(ValueError, match="mode must be one of"):
        F.gan_loss(real, True, "hinge")


def test_r1_penalty_matches_torch():
    lamina.set_default_dtype(np.float64)
    critic = nn.Sequential(nn.Conv2D(3, 3, padding=1), nn.Activation("tanh"), nn.Flatten(), nn.Dense(1))
    x = randn(4, 5, 5, 2, seed=1)
    critic.build((4, 5, 5, 2))
    conv, dense = critic[0], critic[3]
    cw, cb = torch.tensor(conv.weight.data, requires_grad=True), torch.tensor(conv.bias.data, requires_grad=True)
    dw, db = torch.tensor(dense.weight.data, requires_grad=True), torch.tensor(dense.bias.data, requires_grad=True)
    xt = nchw(x).requires_grad_(True)
    hidden = torch.tanh(TF.conv2d(xt, conv_weight(cw), cb, padding=1)).permute(0, 2, 3, 1).reshape(4, -1)
    logits = hidden @ dw + db
    (slope,) = torch.autograd.grad(logits.sum(), xt, create_graph=True)
    expected = slope.square().sum(dim=[1, 2, 3]).mean()
    expected.backward()
    penalty = F.r1_penalty(critic, x)
    penalty.backward()
    assert_close(penalty.item(), expected.item(), RTOL, "R1")
    for layer_param, reference in ((conv.weight, cw), (conv.bias, cb), (dense.weight, dw), (dense.bias, db)):
        # the last bias does not move the input gradient: no gradient in torch, zeros here
        g = np.zeros(reference.shape) if reference.grad is None else reference.grad.numpy()
        actual = np.zeros(reference.shape) if layer_param.grad is None else layer_param.grad
        np.testing.assert_allclose(actual, g, rtol=1e-8, atol=1e-12)
    with pytest.raises(ShapeError, match="one logit per image"):
        F.r1_penalty(lambda x: x, x)


def test_configs_round_trip():
    import json

    from lamina.models import PatchGANDiscriminator, Pix2PixGenerator, ResnetBlock, ResnetGenerator, SynthesisLayer
    layers = [EqualizedDense(3, lr_multiplier=0.5, activation="lrelu"), EqualizedConv2D(2, 1, bias_init=0.5),
              MappingNetwork(8, 2), ModulatedConv2D(3, 1, demodulate=False), NoiseInjection(),
              SynthesisLayer(4, up=True), ToRGB(1, fused=False), StyleGAN2Generator(8, 1, 4, 4, 2),
              Pix2PixGenerator(1, 3, 4, norm="instance", dropout=0.2, in_channels=2),
              PatchGANDiscriminator(4, 0, None), ResnetBlock(3, "batch"), ResnetGenerator(2, 4, 3, None, 0.1, 1)]
    for layer in layers:
        config = json.loads(json.dumps(nn.layer_to_config(layer)))
        again = nn.layer_from_config(config)
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
