"""ControlNet on a DenoisingUNet: the controlled denoiser equals the frozen one at
initialisation, the encoder copy starts from the denoiser's weights, only the ControlNet
learns, the zero-convolution gradient argument (checked by centred differences), values and
gradients against a float64 torch rewrite, DiffusionModel integration (guidance, tiled
controls), errors, and the README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import torch_diffusion as ref

import lamina
from helpers import compare_with_torch, randn, run_readme_section
from lamina.errors import ShapeError
from lamina.models import ControlledDenoiser, ControlNet, DenoisingUNet, DiffusionModel
from lamina.nn import functional_call
from lamina.optim import Adam


def _pretrained(num_classes=None, seed=0, scale=0.3, dtype=np.float32):
    """A built 2-level U-Net for (N, 4, 4, 2) inputs with every weight random (its head too)."""
    unet = DenoisingUNet(base_filters=4, multipliers=(1, 2), groups=2, time_dim=6, num_classes=num_classes)
    unet(np.zeros((1, 4, 4, 2), np.float32), np.zeros(1, np.int64))
    unet.to(dtype)
    rng = np.random.default_rng(seed)
    for p in unet.parameters():
        p.data = (rng.standard_normal(p.shape) * scale).astype(dtype)
    return unet


def _randomized(module, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (rng.standard_normal(p.shape) * scale).astype(p.dtype)


def test_controlled_output_equals_the_frozen_denoiser_at_initialisation():
    unet = _pretrained(num_classes=3)
    x, t, y = randn(3, 4, 4, 2, seed=2), np.array([1, 30, 400]), np.array([0, 2, 3])
    control = randn(3, 4, 4, 1, seed=3)
    expected = unet(x, t, y).numpy()
    assert np.abs(expected).max() > 0.1
    controlled = ControlledDenoiser(unet, ControlNet(unet, conditioning_channels=1, conditioning_filters=(5, 3)))
    residuals = controlled.controlnet(x, t, control, y)
    assert len(residuals) == 3 and all(np.all(r.numpy() == 0) for r in residuals)
    assert np.array_equal(controlled(x, t, y, control=control).numpy(), expected)
    controlled.set_control(control)
    assert np.array_equal(controlled(x, t, y).numpy(), expected)
    # a ControlNet built lazily (its first call) gives the same
    unet_lazy = DenoisingUNet(4, (1, 2), groups=2, time_dim=6, num_classes=3)
    lazy = ControlledDenoiser(unet_lazy, ControlNet(unet_lazy, 1))
    assert not lazy.controlnet.built
    out = lazy(x, t, y, control=control)
    assert lazy.controlnet.built and np.array_equal(out.numpy(), unet_lazy(x, t, y).numpy())


def test_the_copy_starts_with_the_denoisers_weights():
    unet = _pretrained()
    controlnet = ControlNet(unet, conditioning_channels=2)
    assert controlnet.built
    ours, theirs = controlnet.state_dict(), unet.state_dict()
    names = controlnet.copied_names()
    assert len(names) == 40 and all(name in theirs for name in names)
    assert all(name.startswith(("time_", "stem.", "down_blocks.", "downsamplers.", "middle.")) for name in names)
    for name in names:
        assert np.array_equal(ours[name], theirs[name]) and ours[name] is not theirs[name], name
    rest = [name for name in ours if name not in names]
    assert rest and all(name.startswith(("hint_", "zero_convs.")) for name in rest)
    assert all(np.all(ours[name] == 0) for name in rest if name.startswith(("hint_out.", "zero_convs.")))
    # a ControlNet of a U-Net not yet built copies its weights when it is built
    lazy_unet = DenoisingUNet(4, (1, 2), groups=2, time_dim=6)
    lazy = ControlNet(lazy_unet, 1)
    assert not lazy.built
    lazy(randn(2, 4, 4, 2), np.array([3, 4]), randn(2, 4, 4, 1))
    assert all(np.array_equal(lazy.state_dict()[n], lazy_unet.state_dict()[n]) for n in lazy.copied_names())


def test_only_the_controlnet_learns():
    unet = _pretrained()
    controlled = ControlledDenoiser(unet, ControlNet(unet, conditioning_channels=1, conditioning_filters=(4,)))
    model = DiffusionModel(controlled, schedule="cosine", num_timesteps=20)
    frozen = {k: v.copy() for k, v in unet.state_dict().items()}
    start = {k: v.copy() for k, v in controlled.controlnet.state_dict().items()}
    optimizer = Adam(controlled, lr=1e-2)
    for step in range(3):
        controlled.set_control(randn(4, 4, 4, 1, seed=step))
        loss = model.loss(randn(4, 4, 4, 2, seed=10 + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(np.array_equal(v, frozen[k]) for k, v in unet.state_dict().items())
    assert all(not p.trainable for p in unet.parameters())
    moved = [k for k, v in controlled.controlnet.state_dict().items() if not np.array_equal(v, start[k])]
    assert len(moved) == len(start)        # after the zero convolutions move, every weight gets a gradient


def test_zero_convolution_gradient_argument():
    """At initialisation dL/dZ = (the copy's features) x (upstream) is nonzero while dL/d(copy) is
    zero, Z being zero: both the backward pass and centred differences say so."""
    lamina.set_default_dtype(np.float64)
    unet = _pretrained(dtype=np.float64)
    controlnet = ControlNet(unet, conditioning_channels=1, conditioning_filters=(3,))
    controlled = ControlledDenoiser(unet, controlnet)
    x, t, control = randn(2, 4, 4, 2, seed=4), np.array([5, 50]), randn(2, 4, 4, 1, seed=5)
    up = randn(2, 4, 4, 2, seed=6)

    def loss() -> float:
        return float((controlled(x, t, control=control).numpy() * up).sum())

    out = controlled(x, t, control=control)
    (out * lamina.tensor(up)).sum().backward()
    checked = {"zero_convs.0.weight": True, "zero_convs.2.bias": True, "stem.weight": False,
               "middle.conv1.weight": False, "hint_out.weight": False, "hint_convs.0.weight": False}
    params = dict(controlnet.named_parameters())
    rng = np.random.default_rng(0)
    for name, nonzero in checked.items():
        param, grad = params[name], np.asarray(params[name].grad)
        for index in [tuple(rng.integers(0, n) for n in param.shape) for _ in range(3)]:
            saved = param.data[index]
            param.data[index] = saved + 1e-6
            plus = loss()
            param.data[index] = saved - 1e-6
            minus = loss()
            param.data[index] = saved
            numeric = (plus - minus) / 2e-6
            assert abs(numeric - grad[index]) < 1e-6 * max(1.0, abs(numeric)), (name, index, numeric, grad[index])
        if nonzero:
            assert np.abs(grad).max() > 1e-3, name
        else:
            assert np.all(grad == 0), name
    # one step later the zero convolutions are no longer zero, and the copy gets a gradient
    for p in controlnet.zero_convs.parameters():
        p.data = p.data - 0.1 * np.asarray(p.grad)
    controlled.zero_grad()
    (controlled(x, t, control=control) * lamina.tensor(up)).sum().backward()
    assert np.abs(np.asarray(params["stem.weight"].grad)).max() > 1e-4
    assert np.abs(np.asarray(params["hint_out.weight"].grad)).max() > 1e-4


# -- a float64 torch rewrite ------------------------------------------------------------------
def _part(p: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def _controlnet_torch(p, x, t, control, y, levels, groups, time_dim, hints, scale):
    e = ref.time_features(p, t, y, time_dim, x.dtype)
    hint = control.permute(0, 3, 1, 2)
    for k in range(hints):
        hint = TF.silu(ref.conv(p, f"hint_convs.{k}", hint))
    h = ref.conv(p, "stem", x.permute(0, 3, 1, 2)) + ref.conv(p, "hint_out", hint)
    features = []
    for level in range(levels):
        h = ref.residual_block(p, f"down_blocks.{level}", h, e, groups)
        features.append(h)
        if level < levels - 1:
            h = ref.conv(p, f"downsamplers.{level}", h, stride=2)
    features.append(ref.residual_block(p, "middle", h, e, groups))
    return [scale * ref.conv(p, f"zero_convs.{k}", f) for k, f in enumerate(features)]


def _unet_with_residuals_torch(p, x, t, y, residuals, levels, groups, time_dim):
    e = ref.time_features(p, t, y, time_dim, x.dtype)
    h = ref.conv(p, "stem", x.permute(0, 3, 1, 2))
    skips = []
    for level in range(levels):
        h = ref.residual_block(p, f"down_blocks.{level}", h, e, groups)
        skips.append(h + residuals[level])
        if level < levels - 1:
            h = ref.conv(p, f"downsamplers.{level}", h, stride=2)
    h = ref.residual_block(p, "middle", h, e, groups) + residuals[-1]
    for level in range(levels - 1, -1, -1):
        h = ref.residual_block(p, f"up_blocks.{level}", torch.cat([skips[level], h], dim=1), e, groups)
        if level > 0:
            h = ref.conv(p, f"up_convs.{level - 1}", TF.interpolate(h, scale_factor=2, mode="nearest"))
    return ref.conv(p, "head", TF.silu(ref.group_norm(p, "head_norm", h, groups))).permute(0, 2, 3, 1)


def test_controlled_unet_against_torch_float64():
    lamina.set_default_dtype(np.float64)
    unet = _pretrained(num_classes=2, dtype=np.float64)
    controlnet = ControlNet(unet, conditioning_channels=3, conditioning_filters=(4, 3), conditioning_scale=0.7)
    controlled = ControlledDenoiser(unet, controlnet)
    _randomized(controlnet)                         # the zero convolutions too, so that residuals matter
    x, t, y = randn(2, 4, 4, 2, seed=7), np.array([2, 90]), np.array([1, 2])
    control = randn(2, 4, 4, 3, seed=8)
    names = [name for name, _ in controlled.named_parameters()]
    weights = [p.numpy().copy() for _, p in controlled.named_parameters()]

    def ours(x, control, *params):
        return functional_call(controlled, dict(zip(names, params)), x, t, y, control=control)

    def theirs(x, control, *params):
        p = dict(zip(names, params))
        residuals = _controlnet_torch(_part(p, "controlnet."), x, t, control, y, 2, 2, 6, 2, 0.7)
        return _unet_with_residuals_torch(_part(p, "denoiser."), x, t, y, residuals, 2, 2, 6)

    out = compare_with_torch(ours, theirs, x, control, *weights, dtype=np.float64)
    assert np.abs(out[0].numpy() - unet(x, t, y).numpy()).max() > 0.02     # the control changes the output


def test_in_a_diffusion_model_with_guidance_and_tiled_controls():
    unet = _pretrained(num_classes=2)
    controlnet = ControlNet(unet, conditioning_channels=1)
    controlled = ControlledDenoiser(unet, controlnet)
    _randomized(controlnet, scale=0.2)
    assert controlled.num_classes == 2 and controlled.null_class == 2
    model = DiffusionModel(controlled, schedule="cosine", num_timesteps=20, sample_shape=(4, 4, 2))
    control = randn(1, 4, 4, 1, seed=9)
    x, t = randn(4, 4, 4, 2, seed=1), np.arange(4)
    one = controlled(x, t, control=control).numpy()
    assert np.array_equal(one, controlled(x, t, control=np.concatenate([control] * 4)).numpy())
    controlled.set_control(np.concatenate([control] * 3))
    lamina.manual_seed(3)
    guided = model.sample(3, steps=4, method="ddim", labels=[0, 1, 0], guidance_scale=2.5)
    lamina.manual_seed(3)
    plain = model.sample(3, steps=4, method="ddim", labels=[0, 1, 0])
    assert guided.shape == (3, 4, 4, 2) and np.all(np.isfinite(guided)) and not np.allclose(guided, plain)
    controlnet.conditioning_scale = 0.0                # no control: the denoiser's own samples
    lamina.manual_seed(3)
    scaled_off = model.sample(3, steps=4, method="ddim", labels=[0, 1, 0])
    controlled.set_control(None)
    lamina.manual_seed(3)
    assert np.allclose(scaled_off, model.sample(3, steps=4, method="ddim", labels=[0, 1, 0]), atol=1e-6)


def test_errors():
    unet = _pretrained()
    controlnet = ControlNet(unet, conditioning_channels=1)
    controlled = ControlledDenoiser(unet, controlnet)
    x, t = randn(2, 4, 4, 2), np.array([1, 2])
    with pytest.raises(ShapeError, match=r"ControlNet.*control of.*\(3, 4, 4, 1\).*expected \(m, 4, 4, 1\)"):
        controlled(x, t, control=randn(3, 4, 4, 1))
    with pytest.raises(ShapeError, match=r"ControlNet.*control"):
        controlled(x, t, control=randn(2, 4, 4, 2))
    with pytest.raises(TypeError, match="ControlNet: denoiser must be a DenoisingUNet"):
        ControlNet(object(), 1)
    with pytest.raises(TypeError, match="ControlledDenoiser: controlnet must be a ControlNet"):
        ControlledDenoiser(unet, unet)
    with pytest.raises(ValueError, match="ControlledDenoiser: the controlnet was made for a U-Net"):
        ControlledDenoiser(DenoisingUNet(8, (1, 2), groups=2), controlnet)
    with pytest.raises(ValueError, match="conditioning_scale must be a finite number"):
        ControlNet(unet, 1, conditioning_scale=float("nan"))
    with pytest.raises(ValueError, match=r"DenoisingUNet.*got 2 residuals; expected 3"):
        unet(x, t, residuals=controlnet(x, t, randn(2, 4, 4, 1))[:2])


def test_readme_example():
    printed, names = run_readme_section("ControlNet: spatial control of a frozen denoiser")
    assert "frozen weights unchanged: True" in printed
    assert names["samples"].shape == (4, 8, 8, 1)
