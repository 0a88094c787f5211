"""PSPNet: the pyramid pooling module against a float64 PyTorch rewrite of the paper's module
(values, input and parameter gradients), the ResNet-50 model's size, the aux head and its
loss, gradients, save/load, and learning to segment discs and squares."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from segmentation_shapes import all_background_miou, shapes_dataset, train_and_score
from zoo_checks import check_config_and_save_load

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.nn import init


def _ppm_float64(in_channels: int, bins, align_corners: bool, seed: int = 0) -> models.PyramidPooling:
    ppm = models.PyramidPooling(in_channels, bins, align_corners=align_corners)
    ppm.build((None, 8, 8, in_channels))
    ppm.to(np.float64)
    rng = np.random.default_rng(seed)
    for param in ppm.parameters():
        param.data = rng.standard_normal(param.shape) * 0.5 + (1.0 if param.shape == (ppm.reduction_channels,) else 0)
    return ppm


def torch_pyramid_pooling(x, bins, weights, gammas, betas, align_corners: bool):
    """The module on an NCHW batch in training mode (batch statistics): for each bin b,
    ReLU(BN(conv1x1(adaptive_avg_pool2d(x, b)))) upsampled bilinearly to x's size, joined to x."""
    size = x.shape[2:]
    parts = [x]
    for b, w, gamma, beta in zip(bins, weights, gammas, betas):
        pooled = TF.conv2d(TF.adaptive_avg_pool2d(x, b), w)
        normed = TF.batch_norm(pooled, None, None, gamma, beta, training=True, eps=1e-5)
        parts.append(TF.interpolate(TF.relu(normed), size=size, mode="bilinear", align_corners=align_corners))
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("align_corners", [True, False])
def test_pyramid_pooling_matches_a_torch_rewrite(align_corners):
    bins = (1, 2, 3, 6)
    ppm = _ppm_float64(8, bins, align_corners)
    x = np.random.default_rng(1).standard_normal((2, 7, 9, 8))
    up = np.random.default_rng(2).standard_normal((2, 7, 9, 8 + 4 * 2))

    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = ppm.train()(ours)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()

    state = ppm.state_dict()
    as_torch = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in state.items() if "running" not in k}
    weights = [as_torch[f"stages.{k}.1.weight"].permute(0, 3, 1, 2) for k in range(len(bins))]
    gammas = [as_torch[f"stages.{k}.2.weight"] for k in range(len(bins))]
    betas = [as_torch[f"stages.{k}.2.bias"] for k in range(len(bins))]
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    expected = torch_pyramid_pooling(theirs, bins, weights, gammas, betas, align_corners)
    (expected * torch.tensor(up.transpose(0, 3, 1, 2))).sum().backward()

    assert out.shape == (2, 7, 9, 16) and ppm.out_channels == 16
    assert_close(out.numpy(), expected.detach().numpy().transpose(0, 2, 3, 1), 1e-10, "pyramid pooling")
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "input gradient")
    params = dict(ppm.named_parameters())
    assert sorted(params) == sorted(as_torch)
    for key, param in params.items():
        assert_close(param.grad, as_torch[key].grad.numpy(), 1e-10, key)


def test_pyramid_pooling_eval_mode_uses_running_statistics():
    ppm = _ppm_float64(4, (1, 3), align_corners=True, seed=3)
    rng = np.random.default_rng(4)
    state = {k: np.asarray(v) for k, v in ppm.state_dict().items()}
    for k in range(2):
        state[f"stages.{k}.2.running_mean"] = rng.standard_normal(2)
        state[f"stages.{k}.2.running_var"] = rng.uniform(0.5, 2.0, 2)
    ppm.load_state_dict(state)
    x = rng.standard_normal((1, 6, 6, 4))
    with lamina.no_grad():
        out = ppm.eval()(lamina.tensor(x, dtype=np.float64)).numpy()
    state = {k: torch.tensor(np.asarray(v)) for k, v in ppm.state_dict().items()}
    expected = [torch.tensor(x.transpose(0, 3, 1, 2))]
    for k, b in enumerate((1, 3)):
        pooled = TF.conv2d(TF.adaptive_avg_pool2d(expected[0], b), state[f"stages.{k}.1.weight"].permute(0, 3, 1, 2))
        normed = TF.batch_norm(pooled, state[f"stages.{k}.2.running_mean"], state[f"stages.{k}.2.running_var"],
                               state[f"stages.{k}.2.weight"], state[f"stages.{k}.2.bias"], training=False, eps=1e-5)
        expected.append(TF.interpolate(TF.relu(normed), size=(6, 6), mode="bilinear", align_corners=True))
    assert_close(out, torch.cat(expected, 1).numpy().transpose(0, 2, 3, 1), 1e-10, "eval-mode pyramid pooling")


def test_pyramid_pooling_gradients_float64():
    ppm = _ppm_float64(3, (1, 2, 3), align_corners=False, seed=5)
    x = np.random.default_rng(6).standard_normal((2, 5, 4, 3))
    assert check_gradients(lambda a: ppm.train()(a), x)


def test_pyramid_pooling_rejects_a_wrong_channel_count():
    ppm = models.PyramidPooling(8)
    with pytest.raises(lamina.ShapeError, match="expected 8 channels"):
        ppm(lamina.tensor(np.zeros((1, 6, 6, 5), dtype=np.float32)))
    with pytest.raises(ValueError, match="aux_layer 'layer9'"):
        models.pspnet(lamina.nn.Sequential(lamina.nn.Conv2D(4, 3, name="layer1")), 4, 2, "layer9", 4)


def test_pspnet_resnet50_size():
    """No published count matches this exact configuration (torchvision's ResNet-50 stem, 21
    classes), so the count is checked against the sum of its parts: torchvision's ResNet-50
    less its fc, the pyramid, the 3x3 head conv with its BN and the classifier, and the aux head."""
    backbone = 25_557_032 - (2048 * 1000 + 1000)
    pyramid = 4 * (2048 * 512 + 2 * 512)
    head = 4096 * 512 * 9 + 2 * 512 + 512 * 21 + 21
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21
    for aux_loss, expected in ((False, backbone + pyramid + head), (True, backbone + pyramid + head + aux)):
        model = models.pspnet_resnet50(21, aux_loss=aux_loss)
        assert model.input_shape == (None, 473, 473, 3)
        with init.meta():
            model.build(model.input_shape)
        assert model.num_parameters() == expected
    assert expected == 48_957_802


def test_pspnet_small_shapes_aux_head_and_loss():
    model = models.pspnet_small(3, (16, 16, 1), width=4)
    x = lamina.tensor(np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype(np.float32))
    out, aux = model.train()(x)
    assert out.shape == aux.shape == (2, 16, 16, 3)
    assert model.compute_output_shape((None, 16, 16, 1)) == (None, 16, 16, 3)
    assert model.eval()(x).shape == (2, 16, 16, 3)
    assert models.pspnet_small(3, (16, 16, 1), width=4, aux_loss=False).train()(x).shape == (2, 16, 16, 3)

    labels = np.random.default_rng(1).integers(0, 3, (2, 16, 16))
    loss = models.pspnet_loss((out, aux), labels)
    ce = [TF.cross_entropy(torch.tensor(s.numpy()).permute(0, 3, 1, 2), torch.tensor(labels)) for s in (out, aux)]
    assert np.isclose(loss.item(), (ce[0] + 0.4 * ce[1]).item(), rtol=1e-5)
    assert np.isclose(models.pspnet_loss(out, labels).item(), ce[0].item(), rtol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pspnet_gradients_float64():
    model = models.pspnet_small(2, (8, 8, 1), width=2, bins=(1, 2))
    model.build(model.input_shape)
    model.to(np.float64).eval()
    x = np.random.default_rng(7).standard_normal((1, 8, 8, 1))
    assert check_gradients(lambda a: model(a), x)


def test_pspnet_config_and_save_load_round_trip(tmp_path):
    model = models.pspnet_small(3, (16, 16, 2), width=4)
    model.build(model.input_shape)
    x = np.random.default_rng(2).standard_normal((1, 16, 16, 2)).astype(np.float32)
    check_config_and_save_load(model, x, tmp_path / "pspnet.safetensors")
    twin = lamina.load(tmp_path / "pspnet.safetensors")
    assert type(twin.classifier["0"]) is models.PyramidPooling and twin.has_aux


def test_pspnet_learns_discs_and_squares():
    x, y = shapes_dataset(256, seed=1)
    x_test, y_test = shapes_dataset(96, seed=2)
    model = models.pspnet_small(3, (16, 16, 1), width=8)
    miou = train_and_score(model, models.pspnet_loss, (x, y), (x_test, y_test), epochs=10, lr=5e-3)
    assert miou > all_background_miou(y_test) + 0.25, miou
