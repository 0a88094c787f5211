"""LPIPS: values and gradients against a float64 torch rewrite of the reference computation,
the metric's properties, weight loading in the reference's key layout, and 2AFC calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, run_readme_section
from lamina import nn
from lamina.autograd import Tensor
from lamina.backend import manual_seed
from lamina.io import save_file
from lamina.models import (
    LPIPS,
    load_lpips_backbone,
    load_lpips_weights,
    lpips_loss,
    train_lpips,
    two_afc_agreement,
)

SHIFT = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)


def tiny_lpips(lpips: bool = True, seed: int = 0) -> LPIPS:
    manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2D(4, 3, padding=1, name="0"), nn.ReLU(name="1"),
                             nn.Conv2D(5, 3, stride=2, padding=1, name="2"), nn.ReLU(name="3"))
    model = LPIPS(backbone, layers=("1", "3"), lpips=lpips, channels=(4, 5))
    model(np.zeros((1, 6, 6, 3)), np.zeros((1, 6, 6, 3)))      # builds the backbone under the seed
    return model


def images(n=2, size=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, size, size, 3))


def float64_model(lpips=True):
    model = tiny_lpips(lpips)
    model.double()
    if lpips:
        rng = np.random.default_rng(3)
        for w in model.lin_weights():
            w.data = rng.uniform(0.1, 2.0, size=w.shape)
    return model


def reference_lpips(model: LPIPS, x0: torch.Tensor, x1: torch.Tensor, lins):
    """The reference's forward in torch (NCHW): scaling layer, backbone, normalize_tensor with
    eps 1e-10, squared difference, 1x1 lin conv without bias, spatial average, sum over layers."""
    convs = [layer for _, layer in model.backbone.named_children() if isinstance(layer, nn.Conv2D)]

    def features(x):
        x = (x - SHIFT) / SCALE
        out = []
        for conv, stride in zip(convs, (1, 2)):
            w = torch.tensor(conv.weight.numpy()).permute(0, 3, 1, 2)
            b = torch.tensor(conv.bias.numpy())
            x = torch.relu(torch.nn.functional.conv2d(x, w, b, stride=stride, padding=1))
            out.append(x)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(features(x0), features(x1))):
        na = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        nb = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        diff = (na - nb) ** 2
        weighted = diff.sum(dim=1, keepdim=True) if lins is None else torch.nn.functional.conv2d(diff, lins[k])
        total = total + weighted.mean(dim=(2, 3), keepdim=True)
    return total.view(-1)


@pytest.mark.parametrize("lpips", [True, False])
def test_values_and_gradients_equal_the_reference_computation(lpips):
    model = float64_model(lpips)
    a, b = images(2, seed=4), images(2, seed=5)
    x0, x1 = Tensor(a, requires_grad=True, dtype=np.float64), Tensor(b, requires_grad=True, dtype=np.float64)
    out = model(x0, x1)
    upstream = np.array([0.7, -1.3])
    (out * upstream).sum().backward()

    t0 = torch.tensor(a.transpose(0, 3, 1, 2), requires_grad=True)
    t1 = torch.tensor(b.transpose(0, 3, 1, 2), requires_grad=True)
    lins = None
    if lpips:
        lins = [torch.tensor(w.numpy().reshape(1, -1, 1, 1), requires_grad=True) for w in model.lin_weights()]
    expected = reference_lpips(model, t0, t1, lins)
    (expected * torch.tensor(upstream)).sum().backward()

    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x0.grad, t0.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(x1.grad, t1.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-8, atol=1e-12)
    if lpips:
        for w, t in zip(model.lin_weights(), lins):
            np.testing.assert_allclose(w.grad.reshape(-1), t.grad.numpy().reshape(-1), rtol=1e-8, atol=1e-12)
    else:
        assert model.lin_weights() == [] and not any(p.trainable for p in model.parameters())


def test_float64_gradient_check():
    model = float64_model()
    assert check_gradients(lambda a, b: model(a, b), images(1, size=4, seed=6), images(1, size=4, seed=7))


def test_identity_symmetry_and_baseline_equal_unit_weights():
    model = float64_model()
    a, b = Tensor(images(3, seed=1), dtype=np.float64), Tensor(images(3, seed=2), dtype=np.float64)
    assert np.all(model(a, a).numpy() == 0)
    np.testing.assert_allclose(model(a, b).numpy(), model(b, a).numpy(), rtol=1e-12)
    assert np.all(model(a, b).numpy() > 0)
    ones, baseline = tiny_lpips(), tiny_lpips(lpips=False)
    np.testing.assert_allclose(ones(images(2), images(2, seed=1)).numpy(),
                               baseline(images(2), images(2, seed=1)).numpy(), rtol=1e-6)
    reordered = LPIPS(baseline.backbone, layers=("3", "1"), lpips=False)      # layers run in network order
    assert reordered.layers == ("1", "3")
    np.testing.assert_array_equal(reordered(images(2), images(2, seed=1)).numpy(),
                                  baseline(images(2), images(2, seed=1)).numpy())
    # normalize=True reads [0, 1] images
    f64 = np.float64
    np.testing.assert_allclose(model(Tensor((images(2) + 1) / 2, dtype=f64), Tensor((images(2, seed=1) + 1) / 2,
                                                                                  dtype=f64), normalize=True).numpy(),
                               model(Tensor(images(2), dtype=f64), Tensor(images(2, seed=1), dtype=f64)).numpy(),
                               rtol=1e-12)


def test_lpips_loss_is_a_differentiable_training_loss():
    model = tiny_lpips()
    target = images(2, seed=1).astype(np.float32)
    x = Tensor(images(2).astype(np.float32), requires_grad=True)
    first = None
    for _ in range(40):
        loss = lpips_loss(model, x, target)
        first = float(loss.item()) if first is None else first
        x.grad = None
        loss.backward()
        x.data = x.data - 3.0 * x.grad
    assert float(lpips_loss(model, x, target).item()) < 0.5 * first
    assert all(p.grad is None for p in model.backbone.parameters())


def test_named_backbones_have_the_reference_layers():
    for name, widths in [("alex", [64, 192, 384, 256, 256]), ("squeeze", [64, 128, 256, 384, 384, 512, 512])]:
        model = LPIPS(name)
        assert [w.shape[-1] for w in model.lin_weights()] == widths
        x = images(1, size=64).astype(np.float32)
        d = model(x, x[:, ::-1])
        assert d.shape == (1,) and float(d.numpy()[0]) > 0


def test_a_named_backbone_is_saved_by_name(tmp_path):
    model = LPIPS("squeeze")
    rng = np.random.default_rng(0)
    for w in model.lin_weights():
        w.data = rng.uniform(size=w.shape).astype(np.float32)
    x = images(1, size=32).astype(np.float32)
    expected = model(x, x[:, ::-1]).numpy()
    assert model.get_config()["backbone"] == "squeeze"
    lamina.save(model, tmp_path / "lpips.safetensors")
    twin = lamina.load(tmp_path / "lpips.safetensors")
    np.testing.assert_array_equal(twin(x, x[:, ::-1]).numpy(), expected)
    assert [id(p) for p in twin.parameters() if p.trainable] == [id(w) for w in twin.lin_weights()]


def test_reference_weight_files_are_read(tmp_path):
    model = tiny_lpips()
    rng = np.random.default_rng(0)
    state = {"lin0.model.1.weight": rng.uniform(size=(1, 4, 1, 1)).astype(np.float32),
             "lin1.model.1.weight": rng.uniform(size=(1, 5, 1, 1)).astype(np.float32),
             "scaling_layer.shift": np.array([-0.030, -0.088, -0.188], np.float32)}
    save_file(state, tmp_path / "lin.safetensors")
    load_lpips_weights(model, tmp_path / "lin.safetensors")
    for k, w in enumerate(model.lin_weights()):
        np.testing.assert_array_equal(w.numpy().reshape(-1), state[f"lin{k}.model.1.weight"].reshape(-1))
    load_lpips_weights(model, {k: torch.tensor(v) for k, v in state.items()})       # torch.load's dict
    with pytest.raises(KeyError, match="lin1.model.1.weight"):
        load_lpips_weights(model, {"lin0.model.1.weight": state["lin0.model.1.weight"]})
    with pytest.raises(Exception, match="mis-shaped"):
        load_lpips_weights(model, {**state, "lin1.model.1.weight": np.ones((1, 3, 1, 1), np.float32)})


def test_torchvision_backbone_weights_are_converted():
    model = LPIPS("alex")
    rng = np.random.default_rng(0)
    shapes = {"0": (64, 3, 11, 11), "3": (192, 64, 5, 5), "6": (384, 192, 3, 3), "8": (256, 384, 3, 3),
              "10": (256, 256, 3, 3)}
    state = {}
    for i, shape in shapes.items():
        state[f"features.{i}.weight"] = rng.normal(size=shape).astype(np.float32)
        state[f"features.{i}.bias"] = rng.normal(size=shape[:1]).astype(np.float32)
    state["classifier.1.weight"] = np.zeros((4096, 9216), np.float32)[:2, :2]
    load_lpips_backbone(model, state)
    conv = dict(model.backbone.named_children())["3"]
    np.testing.assert_array_equal(conv.weight.numpy(), state["features.3.weight"].transpose(0, 2, 3, 1))
    with pytest.raises(KeyError, match="features"):
        load_lpips_backbone(LPIPS("alex"), {"features.0.weight": state["features.0.weight"]})


# -- 2AFC calibration ---------------------------------------------------------------------------------
def _blur(x, passes):
    for _ in range(passes):
        p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        x = (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] + p[:, 1:-1, 1:-1]) / 5
    return x


def _blur_or_noise_triplets(n, seed):
    """p0: the reference blurred 1-3 times; p1: the reference with Gaussian noise of std 0.1-0.5."""
    rng = np.random.default_rng(seed)
    ref = np.tanh(2 * _blur(rng.normal(size=(n, 12, 12, 3)), 1))
    passes = rng.integers(1, 4, size=n)
    p0 = np.concatenate([_blur(ref[i:i + 1], passes[i]) for i in range(n)])
    p1 = ref + rng.uniform(0.1, 0.5, size=(n, 1, 1, 1)) * rng.normal(size=ref.shape)
    return tuple(a.astype(np.float32) for a in (ref, p0, p1))


def _distances(model, triplets):
    ref, p0, p1 = triplets
    return model(ref, p0).numpy(), model(ref, p1).numpy()


def test_2afc_training_beats_the_uncalibrated_baseline():
    """The observer judges blur against noise by a hidden sparse non-negative weighting of the
    backbone's channels (the rule): p1 is preferred when its weighted distance is the smaller."""
    model = tiny_lpips()
    rng = np.random.default_rng(5)
    observer = rng.exponential(size=9) * (rng.random(9) < 0.4)

    def judge(triplets):
        ref, p0, p1 = triplets
        c0 = np.concatenate(model.channel_distances(ref, p0), axis=1)
        c1 = np.concatenate(model.channel_distances(ref, p1), axis=1)
        return ((c0 - c1) @ observer > 0).astype(np.float64)

    train, test = _blur_or_noise_triplets(300, 0), _blur_or_noise_triplets(200, 1)
    train_judge, test_judge = judge(train), judge(test)
    baseline = two_afc_agreement(*_distances(tiny_lpips(lpips=False), test), test_judge)
    result = train_lpips(model, train, train_judge, steps=200, lr=0.01, batch_size=100)
    trained = two_afc_agreement(*_distances(model, test), test_judge)
    assert result.losses[-1] < 0.2 * result.losses[0]
    assert all(float(w.numpy().min()) >= 0 for w in model.lin_weights())
    assert any(float(w.numpy().min()) == 0 for w in model.lin_weights())      # clamped, not merely positive
    assert trained > baseline + 0.05 and trained > 0.95, (baseline, trained)


def test_weights_stay_non_negative_while_pushed_below_zero():
    """An observer who contradicts the first layer (p1 is closer exactly when the first layer finds
    it farther): at a high rate the lin weights are pushed below zero, and are held at 0."""
    model = tiny_lpips()
    triplets = _blur_or_noise_triplets(40, 2)
    c0, c1 = (model.channel_distances(triplets[0], p)[0].sum(axis=1) for p in triplets[1:])
    train_lpips(model, triplets, (c1 > c0).astype(float), steps=30, lr=0.3, batch_size=40)
    weights = np.concatenate([w.numpy().reshape(-1) for w in model.lin_weights()])
    assert weights.min() == 0 and np.all(weights >= 0)


def test_readme_example_runs():
    printed, names = run_readme_section("Perceptual similarity (LPIPS)")
    assert "2AFC" in printed and names["after"] > names["before"] + 0.05
