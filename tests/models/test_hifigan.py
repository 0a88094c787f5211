import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import models
from lamina.errors import ShapeError
from lamina.models.hifigan import NormalizedConv, period_view
from lamina.nn.functional_call import functional_call

TINY_GENERATOR = dict(upsample_rates=(2, 3), upsample_kernel_sizes=(4, 7), upsample_initial_channel=8,
                      resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 2), (1, 3)), in_channels=4)
TINY_PERIOD_CHANNELS = (2, 4, 4, 4, 4)
TINY_SCALE = dict(channels=(2, 4, 4, 4, 4, 4, 4), groups=(1, 2, 2, 2, 2, 2, 1))


# -- a PyTorch rewrite of the reference implementation, fed lamina's weights ----------------------

class TorchMirror:
    """Float64 torch modules with the weights of every NormalizedConv of a lamina model (torch's
    own weight / spectral normalisation, NCL layouts), and the pairs of parameters to compare."""

    def __init__(self, model):
        self.convs, self.pairs = {}, []
        for module in model.modules():
            if isinstance(module, NormalizedConv):
                self.convs[id(module)] = self._mirror(module)

    def _mirror(self, conv):
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if conv.kind == "conv1d":
            m = torch.nn.Conv1d(conv.in_channels, conv.out_channels, k, s, p, conv.dilation, conv.groups)
            layout = (0, 2, 1)
        elif conv.kind == "transpose1d":
            m = torch.nn.ConvTranspose1d(conv.in_channels, conv.out_channels, k, s, p)
            layout = (0, 2, 1)
        else:
            m = torch.nn.Conv2d(conv.in_channels, conv.out_channels, (k, 1), (s, 1), (p, 0))
            layout = (0, 3, 1, 2)
        m = m.double()
        self._copy(conv.bias, m.bias, None)
        if conv.norm == "weight":
            m = torch.nn.utils.parametrizations.weight_norm(m)
            g, v = m.parametrizations.weight.original0, m.parametrizations.weight.original1
            self._copy(conv.weight_g, g, "gain")
            self._copy(conv.weight_v, v, layout)
        elif conv.norm == "spectral":
            m = torch.nn.utils.spectral_norm(m)
            self._copy(conv.weight_orig, m.weight_orig, layout)
            m.weight_u.copy_(torch.from_numpy(np.asarray(conv.u, dtype=np.float64)))
            v = np.asarray(conv.v, dtype=np.float64).reshape(conv.weight_orig.shape[1:])
            m.weight_v.copy_(torch.from_numpy(v).permute(*[a - 1 for a in layout[1:]]).flatten())
        else:
            self._copy(conv.weight, m.weight, layout)
        return m

    def _copy(self, lamina_param, torch_param, layout):
        data = np.asarray(lamina_param.data, dtype=np.float64)
        with torch.no_grad():
            if layout == "gain":
                torch_param.copy_(torch.from_numpy(data).reshape(torch_param.shape))
            elif layout is None:
                torch_param.copy_(torch.from_numpy(data))
            else:
                torch_param.copy_(torch.from_numpy(data).permute(*layout))
        self.pairs.append((lamina_param, torch_param, layout))

    def __getitem__(self, conv):
        return self.convs[id(conv)]

    def compare_gradients(self, rtol=1e-8):
        for lamina_param, torch_param, layout in self.pairs:
            grad = torch_param.grad
            if layout == "gain":
                grad = grad.reshape(-1)
            elif layout is not None:
                inverse = np.argsort(layout)
                grad = grad.permute(*inverse)
            assert_close(lamina_param.grad, grad.numpy(), rtol, "parameter gradient")


def torch_resblock(mirror, block, x):
    for i, dilated in enumerate(block.dilated):
        h = mirror[dilated](TF.leaky_relu(x, 0.1))
        if block.kind == "1":
            h = mirror[block.plain[i]](TF.leaky_relu(h, 0.1))
        x = h + x
    return x


def torch_generator(mirror, gen, mel):                     # mel (batch, n_mels, frames)
    x = mirror[gen.conv_pre](mel)
    n = len(gen.resblock_kernel_sizes)
    for i, up in enumerate(gen.ups):
        x = mirror[up](TF.leaky_relu(x, 0.1))
        xs = None
        for j in range(n):
            y = torch_resblock(mirror, gen.resblocks[i * n + j], x)
            xs = y if xs is None else xs + y
        x = xs / n
    x = torch.tanh(mirror[gen.conv_post](TF.leaky_relu(x)))
    return x[:, 0]


def torch_period(mirror, d, y):                          # y (batch, 1, T)
    b, c, t = y.shape
    if t % d.period:
        y = TF.pad(y, (0, d.period - t % d.period), "reflect")
        t = y.shape[-1]
    x = y.view(b, c, t // d.period, d.period)
    fmap = []
    for conv in d.convs:
        x = TF.leaky_relu(mirror[conv](x), 0.1)
        fmap.append(x)
    x = mirror[d.conv_post](x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


def torch_scale(mirror, d, y):
    fmap = []
    x = y
    for conv in d.convs:
        x = TF.leaky_relu(mirror[conv](x), 0.1)
        fmap.append(x)
    x = mirror[d.conv_post](x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


def torch_mpd(mirror, mpd, y):
    outs = [torch_period(mirror, d, y) for d in mpd.discriminators]
    return [o[0] for o in outs], [o[1] for o in outs]


def torch_msd(mirror, msd, y):
    pool = torch.nn.AvgPool1d(4, 2, padding=2)
    scores, fmaps = [], []
    for i, d in enumerate(msd.discriminators):
        if i:
            y = pool(y)
        s, f = torch_scale(mirror, d, y)
        scores.append(s)
        fmaps.append(f)
    return scores, fmaps


def _channels_first(a):
    a = np.asarray(a)
    return a.transpose(0, 2, 1) if a.ndim == 3 else a.transpose(0, 3, 1, 2)


def _double_inputs(x):
    return lamina.tensor(x, dtype=np.float64, requires_grad=True), torch.tensor(x, requires_grad=True)


# -- shapes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rates, kernels", [((2, 3), (4, 7)), ((4,), (8,)), ((2, 2, 2), (4, 6, 2))])
@pytest.mark.parametrize("resblock", ["1", "2"])
def test_generator_output_length_is_frames_times_hop(rates, kernels, resblock):
    gen = models.HiFiGANGenerator(rates, kernels, 8, resblock, (3,), ((1, 2),), in_channels=3)
    for frames in (1, 4, 7):
        wave = gen(randn(2, frames, 3).astype(np.float32))
        assert wave.shape == (2, frames * int(np.prod(rates)))
        assert np.all(np.abs(wave.data) < 1.0)
    assert gen.hop_length == int(np.prod(rates))


def test_generator_rejects_bad_configurations_and_inputs():
    with pytest.raises(ValueError, match="k - u even"):
        models.HiFiGANGenerator((2,), (5,), 8, in_channels=3)
    with pytest.raises(ValueError, match="divisible"):
        models.HiFiGANGenerator((2, 2), (4, 4), 6, in_channels=3)
    gen = models.HiFiGANGenerator((2,), (4,), 8, "2", (3,), ((1,),), in_channels=3)
    with pytest.raises(ShapeError, match=r"\(batch, frames, 3\)"):
        gen(randn(2, 3, 5))


# -- against the PyTorch rewrite -------------------------------------------------------------------

@pytest.mark.parametrize("resblock", ["1", "2"])
def test_generator_matches_torch_reference_in_values_and_gradients(resblock):
    gen = models.HiFiGANGenerator(**TINY_GENERATOR, resblock=resblock).double()
    mirror = TorchMirror(gen)
    mel = randn(2, 5, 4, seed=1)
    x, x_t = _double_inputs(mel)
    out = gen(x)
    out_t = torch_generator(mirror, gen, x_t.permute(0, 2, 1))
    assert out.shape == (2, 5 * 6)
    assert_close(out.data, out_t.detach().numpy(), 1e-10)
    r = randn(*out.shape, seed=2)
    (out * lamina.tensor(r, dtype=np.float64)).sum().backward()
    (out_t * torch.tensor(r)).sum().backward()
    assert_close(x.grad, x_t.grad.numpy(), 1e-8, "input gradient")
    mirror.compare_gradients()


def test_generator_passes_a_gradient_check():
    gen = models.HiFiGANGenerator(**TINY_GENERATOR, resblock="1").double()
    assert check_gradients(lambda m: gen(m), randn(1, 3, 4, seed=14))


def test_resblock_matches_torch_and_passes_a_gradient_check():
    block = models.HiFiGANResBlock(3, 3, (1, 2), "1").double()
    mirror = TorchMirror(block)
    h = randn(2, 9, 3, seed=3)
    x, x_t = _double_inputs(h)
    out = block(x)
    out_t = torch_resblock(mirror, block, x_t.permute(0, 2, 1))
    assert_close(_channels_first(out.data), out_t.detach().numpy(), 1e-10)
    out.sum().backward()
    out_t.sum().backward()
    assert_close(x.grad, x_t.grad.numpy(), 1e-8, "input gradient")
    mirror.compare_gradients()
    assert check_gradients(lambda a: block(a), h)


@pytest.mark.parametrize("kind, shape, norm", [
    ("conv1d", (2, 7, 4), "weight"), ("transpose1d", (2, 5, 4), "weight"), ("period", (2, 6, 3, 4), "weight"),
    ("conv1d", (2, 7, 4), "spectral"), ("period", (2, 6, 3, 4), "spectral"),
    ("conv1d", (2, 7, 4), None), ("transpose1d", (2, 5, 4), None), ("period", (2, 6, 3, 4), None),
])
def test_normalized_conv_matches_torch_and_passes_a_gradient_check(kind, shape, norm):
    conv = NormalizedConv(kind, 4, 6, 3, stride=2, padding=1, norm=norm).double()
    conv.eval()                                    # spectral: sigma from the stored u, v
    mirror = TorchMirror(conv)
    x_np = randn(*shape, seed=4)
    x, x_t = _double_inputs(x_np)
    out = conv(x)
    t_in = x_t.permute(0, 2, 1) if x_t.ndim == 3 else x_t.permute(0, 3, 1, 2)
    torch_module = mirror[conv]
    torch_module.eval()
    out_t = torch_module(t_in)
    assert_close(_channels_first(out.data), out_t.detach().numpy(), 1e-10)
    r = randn(*out.shape, seed=5)
    (out * lamina.tensor(r, dtype=np.float64)).sum().backward()
    (out_t * torch.tensor(_channels_first(r))).sum().backward()
    assert_close(x.grad, x_t.grad.numpy(), 1e-8, "input gradient")
    mirror.compare_gradients()
    names = [name for name, _ in conv.named_parameters()]
    arrays = [np.asarray(p.data) for _, p in conv.named_parameters()]
    assert check_gradients(lambda a, *weights: functional_call(conv, dict(zip(names, weights)), a), x_np, *arrays)


def test_normalized_conv_checks_its_arguments_and_inputs():
    with pytest.raises(ValueError, match="not 'transpose1d'"):
        NormalizedConv("transpose1d", 4, 2, 3, norm="spectral")
    with pytest.raises(ValueError, match="norm must be"):
        NormalizedConv("conv1d", 4, 2, 3, norm="batch")
    with pytest.raises(ShapeError, match="with 4 channels last"):
        NormalizedConv("conv1d", 4, 2, 3)(randn(2, 4, 7))


def test_spectral_norm_power_iteration_follows_torch_in_training():
    conv = NormalizedConv("conv1d", 3, 5, 3, norm="spectral").double()
    conv.u, conv.v = randn(5, seed=12), randn(9, seed=13)      # far from converged: the order shows
    conv.u, conv.v = conv.u / np.linalg.norm(conv.u), conv.v / np.linalg.norm(conv.v)
    mirror = TorchMirror(conv)
    x_np = randn(2, 8, 3, seed=6)
    for _ in range(3):                               # each training call advances u and v once
        out = conv(lamina.tensor(x_np, dtype=np.float64))
        out_t = mirror[conv](torch.tensor(x_np).permute(0, 2, 1))
        assert_close(_channels_first(out.data), out_t.detach().numpy(), 1e-10)
    matrix = np.asarray(conv.weight_orig.data).reshape(5, -1)
    for _ in range(200):
        conv(lamina.tensor(x_np, dtype=np.float64))
    sigma = float(np.asarray(conv.u) @ matrix @ np.asarray(conv.v))
    assert abs(sigma - np.linalg.svd(matrix, compute_uv=False)[0]) < 1e-8


def test_remove_weight_norm_leaves_outputs_unchanged():
    gen = models.HiFiGANGenerator(**TINY_GENERATOR, resblock="1")
    mel = randn(1, 6, 4, seed=7).astype(np.float32)
    before = gen(mel).data.copy()
    count = sum(1 for _, p in gen.named_parameters() if _.endswith("weight_v"))
    assert count == 4 + 2 * 2 * (2 + 2)              # pre, post, 2 ups; 2 stages x 2 blocks x 4 convs
    gen.remove_weight_norm()
    names = [name for name, _ in gen.named_parameters()]
    assert not any(name.endswith(("weight_g", "weight_v")) for name in names)
    assert sum(name.endswith("weight") for name in names) == count
    np.testing.assert_allclose(gen(mel).data, before, rtol=1e-5, atol=1e-7)


# -- discriminators --------------------------------------------------------------------------------

@pytest.mark.parametrize("length, period", [(23, 2), (23, 5), (20, 5), (13, 11)])
def test_period_view_matches_reflect_pad_and_view(length, period):
    wave = randn(2, length, seed=8)
    got = period_view(lamina.tensor(wave, dtype=np.float64), period).data
    y = torch.tensor(wave)[:, None]
    if length % period:
        y = TF.pad(y, (0, period - length % period), "reflect")
    expected = y.view(2, 1, -1, period).permute(0, 2, 3, 1).numpy()
    assert got.shape == expected.shape
    assert_close(got, expected, 1e-12)


def test_period_view_rejects_a_too_short_waveform():
    with pytest.raises(ShapeError, match="too short"):
        period_view(lamina.tensor(randn(1, 3)), 7)


def _compare_ensemble(disc, reference, length, seed):
    disc = disc.double()
    disc.eval()
    mirror = TorchMirror(disc)
    for m in mirror.convs.values():
        m.eval()
    wave = randn(2, length, seed=seed, scale=0.5)
    x, x_t = _double_inputs(wave)
    scores, features = disc(x)
    scores_t, features_t = reference(mirror, disc, x_t[:, None])
    assert len(scores) == len(scores_t) == len(disc.discriminators)
    total, total_t = 0.0, 0.0
    for i, (s, s_t) in enumerate(zip(scores, scores_t)):
        assert_close(s.data, s_t.detach().numpy(), 1e-10, "scores")
        r = randn(*s.shape, seed=10 + i)
        total = total + (s * lamina.tensor(r, dtype=np.float64)).sum()
        total_t = total_t + (s_t * torch.tensor(r)).sum()
        for f, f_t in zip(features[i], features_t[i]):
            assert_close(_channels_first(f.data), f_t.detach().numpy(), 1e-10, "feature maps")
            r = randn(*f.shape, seed=20 + i)
            total = total + (f * lamina.tensor(r, dtype=np.float64)).sum()
            total_t = total_t + (f_t * torch.tensor(_channels_first(r))).sum()
    total.backward()
    total_t.backward()
    assert_close(x.grad, x_t.grad.numpy(), 1e-8, "input gradient")
    mirror.compare_gradients()
    return scores, features


def test_multi_period_discriminator_matches_torch_reference():
    mpd = models.MultiPeriodDiscriminator((2, 3, 5), channels=TINY_PERIOD_CHANNELS)
    scores, features = _compare_ensemble(mpd, torch_mpd, 23, seed=9)
    assert [len(f) for f in features] == [6, 6, 6]
    assert features[1][0].shape[2] == 3                # the period is the image width


def test_multi_scale_discriminator_matches_torch_reference():
    msd = models.MultiScaleDiscriminator(**TINY_SCALE)
    assert [d.convs[0].norm for d in msd.discriminators] == ["spectral", "weight", "weight"]
    scores, features = _compare_ensemble(msd, torch_msd, 40, seed=11)
    assert [f[0].shape[1] for f in features] == [40, 21, 11]      # average pooled 4 / 2 with padding 2


@pytest.mark.parametrize("make", [
    lambda: models.PeriodDiscriminator(3, channels=TINY_PERIOD_CHANNELS),
    lambda: models.ScaleDiscriminator(**TINY_SCALE, norm="weight"),
])
def test_sub_discriminators_pass_a_gradient_check(make):
    disc = make().double()

    def scores_and_features(wave):
        scores, features = disc(wave)
        total = scores.sum()
        for i, f in enumerate(features):
            total = total + (f * float(i + 1)).sum()
        return total
    assert check_gradients(scores_and_features, randn(1, 22, seed=15, scale=0.5))


def test_discriminators_reject_non_waveforms():
    mpd = models.MultiPeriodDiscriminator((2,), channels=TINY_PERIOD_CHANNELS)
    with pytest.raises(ShapeError, match=r"\(batch, samples\)"):
        mpd(randn(2, 10, 1))
