"""Super-resolution, denoising and fast-style-transfer networks: shapes, parameter counts,
agreement with torch, and short trainings on digits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_with_torch
from lamina import nn
from lamina.data.datasets import load_digits
from lamina.models import EDSR, ESPCN, SRCNN, DnCNN, SRResNet, TransformerNet
from lamina.optim import Adam
from lamina.vision import sr_pairs


def conv_params(c_in, c_out, f, bias=True):
    return c_in * c_out * f * f + (c_out if bias else 0)


def edsr_baseline_params(scale, channels=3, filters=64, blocks=16):
    """Lim et al.'s baseline: head, 16 blocks of two 3x3 convs, the body's last conv, the
    upsampler's sub-pixel convs (filters r^2 outputs each) and the tail."""
    stages = {2: [2], 3: [3], 4: [2, 2]}[scale]
    return (conv_params(channels, filters, 3) + blocks * 2 * conv_params(filters, filters, 3)
            + conv_params(filters, filters, 3) + sum(conv_params(filters, filters * r * r, 3) for r in stages)
            + conv_params(filters, channels, 3))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_shapes_and_baseline_parameter_count(scale):
    model = EDSR(scale)
    out = model(lamina.tensor(np.zeros((2, 5, 7, 3))))
    assert out.shape == (2, 5 * scale, 7 * scale, 3)
    assert model.compute_output_shape((None, 5, 7, 3)) == (None, 5 * scale, 7 * scale, 3)
    assert model.num_parameters() == edsr_baseline_params(scale)


def test_edsr_residual_scaling_and_mean():
    model = EDSR(2, channels=1, filters=4, blocks=2, res_scale=0.1, mean=[0.5])
    model.build((None, 4, 4, 1))
    model.double()
    x = np.random.default_rng(0).uniform(size=(1, 4, 4, 1))
    out = model(lamina.tensor(x, dtype=np.float64)).numpy()
    head = model.head(lamina.tensor(x - 0.5, dtype=np.float64))
    block = model.body["0"]
    expected_block = head.numpy() + 0.1 * block.conv2(block.conv1(head)).numpy()
    np.testing.assert_allclose(block(head).numpy(), expected_block, rtol=1e-12)
    features = head + model.body(head)
    np.testing.assert_allclose(out, model.tail(model.upsampler(features)).numpy() + 0.5, rtol=1e-12)
    assert check_gradients(lambda t: model(t), x)
    with pytest.raises(ValueError, match="scale must be 3 or a power of 2"):
        EDSR(5)


@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_shapes_and_parameter_count(scale):
    model = SRResNet(scale)
    assert model(lamina.tensor(np.zeros((1, 3, 4, 3)))).shape == (1, 3 * scale, 4 * scale, 3)
    bn, prelu = 2 * 64, 1
    block = 2 * (conv_params(64, 64, 3) + bn) + prelu
    upsampler = (scale.bit_length() - 1) * (conv_params(64, 256, 3) + prelu)
    expected = (conv_params(3, 64, 9) + prelu + 16 * block + conv_params(64, 64, 3) + bn + upsampler
                + conv_params(64, 3, 9))
    assert model.num_parameters() == expected
    with pytest.raises(ValueError, match="scale must be a power of 2"):
        SRResNet(3)


def test_espcn_matches_torch():
    model = ESPCN(3, channels=2, filters=(4, 3))
    model.build((None, 4, 5, 2))
    model.double()
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 2))
    (w1, b1), (w2, b2), (w3, b3) = [(torch.tensor(c.weight.data.transpose(0, 3, 1, 2)), torch.tensor(c.bias.data))
                                    for c in (model.conv1, model.conv2, model.subpixel)]

    def reference(t):
        h = torch.tanh(TF.conv2d(t.permute(0, 3, 1, 2), w1, b1, padding=2))
        h = torch.tanh(TF.conv2d(h, w2, b2, padding=1))
        return TF.pixel_shuffle(TF.conv2d(h, w3, b3, padding=1), 3).permute(0, 2, 3, 1)

    out = compare_with_torch(lambda t: model(t), reference, x, dtype=np.float64)
    assert out[0].shape == (2, 12, 15, 2)


def test_dncnn_is_input_minus_predicted_noise():
    model = DnCNN(channels=1, depth=4, filters=8)
    x = lamina.tensor(np.random.default_rng(2).uniform(size=(2, 6, 6, 1)))
    np.testing.assert_allclose(model(x).numpy(), x.numpy() - model.noise(x).numpy(), rtol=1e-6)
    assert len([m for m in model.noise if isinstance(m, nn.BatchNorm)]) == 2
    model.build((None, 6, 6, 1))
    assert model.num_parameters() == (conv_params(1, 8, 3) + 2 * (conv_params(8, 8, 3, bias=False) + 2 * 8)
                                      + conv_params(8, 1, 3))


def test_transformer_net_paper_size_and_training_step():
    big = TransformerNet()
    big.build((None, 16, 16, 3))
    down_up = conv_params(3, 32, 9) + conv_params(32, 64, 3) + conv_params(64, 128, 3) + conv_params(
        128, 64, 3) + conv_params(64, 32, 3)
    norms = 2 * (32 + 64 + 128 + 64 + 32)  # instance norms' scale and shift
    residual = 5 * 2 * (conv_params(128, 128, 3) + 2 * 128)
    assert big.num_parameters() == down_up + norms + residual + conv_params(32, 3, 9)

    lamina.manual_seed(0)
    net = TransformerNet(width=4, blocks=1)
    extractor = nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2, stride=2),
                              nn.Conv2D(4, 3, padding=1), nn.ReLU())
    extractor.build((None, 16, 16, 3))
    loss_fn = nn.PerceptualLoss(extractor, ["relu2_1"], style_layers=["relu1_1", "relu2_1"], style_weights=10.0)
    rng = np.random.default_rng(3)
    images = lamina.tensor(rng.uniform(size=(4, 16, 16, 3)))
    style = lamina.tensor(rng.uniform(size=(1, 16, 16, 3)))
    assert net(images).shape == (4, 16, 16, 3)
    grams = loss_fn.style_grams(style)
    opt = Adam(net.parameters(), lr=2e-4)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(images), images, grams)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# -- short trainings on digits: 8x8 -> 16x16 ------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_pairs():
    x, _ = load_digits(8)
    hr = (x.astype(np.float32) / 255).repeat(2, axis=1).repeat(2, axis=2)  # 16x16, sharp edges
    lr, hr = sr_pairs(hr, 2, clip=(0, 1))
    return lr[:1400], hr[:1400], lr[1400:], hr[1400:]


def bicubic_up(images):
    return np.clip(F.interpolate(lamina.tensor(images), scale_factor=2, mode="bicubic").numpy(), 0, 1)


def train(model, inputs, targets, steps, lr):
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model(lamina.tensor(inputs[:1]))
    opt = Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = rng.integers(0, len(inputs), 32)
        opt.zero_grad()
        loss = ((model(lamina.tensor(inputs[batch])) - lamina.tensor(targets[batch])) ** 2).mean()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("kind, steps, lr, margin", [("espcn", 250, 3e-3, 4.0), ("srcnn", 200, 3e-3, 0.5)])
def test_trained_network_beats_bicubic(digit_pairs, kind, steps, lr, margin):
    lr_train, hr_train, lr_test, hr_test = digit_pairs
    if kind == "espcn":
        model = train(ESPCN(2, 1, (32, 16)), lr_train, hr_train, steps, lr)
        out = model(lamina.tensor(lr_test))
    else:
        model = train(SRCNN(1, (32, 16)), bicubic_up(lr_train), hr_train, steps, lr)
        out = model(lamina.tensor(bicubic_up(lr_test)))
    baseline = F.psnr(bicubic_up(lr_test), hr_test).item()
    bilinear = np.clip(F.interpolate(lamina.tensor(lr_test), scale_factor=2, mode="bilinear").numpy(), 0, 1)
    ours = F.psnr(np.clip(out.numpy(), 0, 1), hr_test).item()
    assert ours > max(baseline, F.psnr(bilinear, hr_test).item()) + margin
