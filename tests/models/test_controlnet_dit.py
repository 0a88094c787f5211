"""ControlNet on a DiT (DiTControlNet): the controlled DiT equals the frozen one at
initialisation, the copy starts from the DiT's weights, only the ControlNet learns, values and
gradients against a float64 torch rewrite (and centred differences), DiT's ``residuals=``,
DiffusionModel integration (guidance, tiled controls), config round trips, errors, and the
README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import torch_diffusion as ref
from test_dit import t_block, t_linear, t_modulate, t_position_embedding

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina.errors import ShapeError
from lamina.models import ControlledDenoiser, ControlNet, DenoisingUNet, DiffusionModel, DiT, DiTControlNet
from lamina.nn import functional_call
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.optim import Adam


def _pretrained(num_classes=None, depth=3, seed=0, scale=0.3, dtype=np.float32):
    """A built DiT for (N, 4, 6, 2) inputs (patch 2) with every weight random (its zero layers too)."""
    dit = DiT((4, 6), 2, 2, dim=8, depth=depth, num_heads=2, num_classes=num_classes, class_dropout=0.0,
              mlp_ratio=2.0, time_dim=6)
    dit(np.zeros((1, 4, 6, 2), np.float32), np.zeros(1, np.int64))
    dit.to(dtype)
    _randomized(dit, seed, scale)
    return dit


def _randomized(module, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (rng.standard_normal(p.shape) * scale).astype(p.dtype)


def test_controlled_output_equals_the_frozen_dit_at_initialisation():
    dit = _pretrained(num_classes=3)
    x, t, y = randn(3, 4, 6, 2, seed=2), np.array([1, 30, 400]), np.array([0, 2, 3])
    control = randn(3, 4, 6, 1, seed=3)
    expected = dit(x, t, y).numpy()
    assert np.abs(expected).max() > 0.1
    controlnet = DiTControlNet(dit, conditioning_channels=1)
    assert controlnet.num_control_blocks == 1            # half the depth 3
    controlled = ControlledDenoiser(dit, controlnet)
    residuals = controlnet(x, t, control, y)
    assert len(residuals) == 1 and residuals[0].shape == (3, 6, 8) and not np.any(residuals[0].numpy())
    assert np.array_equal(controlled(x, t, y, control=control).numpy(), expected)
    controlled.set_control(control)
    assert np.array_equal(controlled(x, t, y).numpy(), expected)
    # a DiTControlNet of a DiT not yet built copies its weights at its first call
    lazy_dit = DiT(4, 2, 1, dim=8, depth=2, num_heads=2, time_dim=4)
    lazy = ControlledDenoiser(lazy_dit, DiTControlNet(lazy_dit, 2, num_control_blocks=2))
    assert lazy.built and lazy.controlnet.built            # a DiT's input size is known: built at once
    x4 = randn(2, 4, 4, 1, seed=4)
    assert np.array_equal(lazy(x4, t[:2], control=randn(2, 4, 4, 2)).numpy(), lazy_dit(x4, t[:2]).numpy())


def test_the_copy_starts_with_the_dits_weights():
    dit = _pretrained(num_classes=2, depth=4)
    controlnet = DiTControlNet(dit, conditioning_channels=3)
    assert controlnet.built and controlnet.num_control_blocks == 2 and len(controlnet.blocks) == 2
    ours, theirs = controlnet.state_dict(), dit.state_dict()
    names = controlnet.copied_names()
    assert all(name in theirs for name in names)
    assert {name.split(".")[0] for name in names} == {"time_in", "time_out", "class_embedding", "patch_embed", "blocks"}
    assert {name.split(".")[1] for name in names if name.startswith("blocks.")} == {"0", "1"}
    for name in names:
        assert np.array_equal(ours[name], theirs[name]) and ours[name] is not theirs[name], name
    rest = [name for name in ours if name not in names]
    assert sorted({name.split(".")[0] for name in rest}) == ["hint_embed", "zero_linears"]
    assert all(not np.any(ours[name]) for name in rest)
    assert ours["hint_embed.weight"].shape == (8, 2, 2, 3)
    assert DiTControlNet(dit, 1, num_control_blocks=4).num_control_blocks == 4
    # a DiT not yet built: the copy is made when the ControlNet is built
    lazy_dit = DiT(4, 2, 1, dim=8, depth=2, num_heads=2, time_dim=4)
    lazy = DiTControlNet(lazy_dit, 1)
    assert not lazy.built
    lazy(randn(2, 4, 4, 1), np.array([3, 4]), randn(2, 4, 4, 1))
    assert all(np.array_equal(lazy.state_dict()[n], lazy_dit.state_dict()[n]) for n in lazy.copied_names())


def test_only_the_controlnet_learns():
    dit = _pretrained()
    controlled = ControlledDenoiser(dit, DiTControlNet(dit, conditioning_channels=1, num_control_blocks=2))
    model = DiffusionModel(controlled, schedule="cosine", num_timesteps=20)
    frozen = {k: v.copy() for k, v in dit.state_dict().items()}
    start = {k: v.copy() for k, v in controlled.controlnet.state_dict().items()}
    optimizer = Adam(controlled, lr=1e-2)
    for step in range(3):
        controlled.set_control(randn(4, 4, 6, 1, seed=step))
        loss = model.loss(randn(4, 4, 6, 2, seed=10 + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(np.array_equal(v, frozen[k]) for k, v in dit.state_dict().items())
    assert all(not p.trainable for p in dit.parameters())
    moved = [k for k, v in controlled.controlnet.state_dict().items() if not np.array_equal(v, start[k])]
    assert len(moved) == len(start)        # once the zero layers move, every weight gets a gradient


# -- a float64 torch rewrite ------------------------------------------------------------------
def _part(p: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def _conditioning(p, t, y, time_dim):
    c = t_linear(p, "time_out", TF.silu(t_linear(p, "time_in", ref.timestep_embedding(t, time_dim, torch.float64))))
    return c if y is None else c + p["class_embedding.weight"][torch.as_tensor(y)]


def _patches(p, name, x_nhwc, patch):
    weight = p[f"{name}.weight"].permute(0, 3, 1, 2)
    return TF.conv2d(x_nhwc.permute(0, 3, 1, 2), weight, p[f"{name}.bias"], stride=patch).flatten(2).transpose(1, 2)


def _controlnet_torch(p, x, t, control, y, patch, heads, time_dim, blocks, scale):
    c = _conditioning(p, t, y, time_dim)
    rows, cols = x.shape[1] // patch, x.shape[2] // patch
    h = _patches(p, "patch_embed", x, patch) + _patches(p, "hint_embed", control, patch)
    h = h + t_position_embedding(h.shape[-1], rows, cols)[None]
    residuals = []
    for k in range(blocks):
        h = t_block(p, f"blocks.{k}.", h, c, heads)
        residuals.append(scale * t_linear(p, f"zero_linears.{k}", h))
    return residuals


def _dit_with_residuals_torch(p, x, t, y, residuals, patch, heads, time_dim, depth):
    c = _conditioning(p, t, y, time_dim)
    n, height, width, _ = x.shape
    rows, cols = height // patch, width // patch
    h = _patches(p, "patch_embed", x, patch)
    h = h + t_position_embedding(h.shape[-1], rows, cols)[None]
    for k in range(depth):
        h = t_block(p, f"blocks.{k}.", h, c, heads)
        if k < len(residuals):
            h = h + residuals[k]
    shift, scale = t_linear(p, "final_modulation", TF.silu(c)).chunk(2, dim=1)
    h = t_linear(p, "final_linear", t_modulate(TF.layer_norm(h, (h.shape[-1],), eps=1e-6), shift, scale))
    h = h.reshape(n, rows, cols, patch, patch, -1)
    return torch.einsum("nhwpqc->nhpwqc", h).reshape(n, height, width, -1)


def test_controlled_dit_against_torch_float64():
    lamina.set_default_dtype(np.float64)
    dit = _pretrained(num_classes=2, dtype=np.float64)
    controlnet = DiTControlNet(dit, conditioning_channels=3, num_control_blocks=2, conditioning_scale=0.7)
    controlled = ControlledDenoiser(dit, controlnet)
    _randomized(controlnet)                          # the zero layers too, so that residuals matter
    x, t, y = randn(2, 4, 6, 2, seed=7), np.array([2, 90]), np.array([1, 2])
    control = randn(2, 4, 6, 3, seed=8)
    names = [name for name, _ in controlled.named_parameters()]
    weights = [p.numpy().copy() for _, p in controlled.named_parameters()]

    def ours(x, control, *params):
        return functional_call(controlled, dict(zip(names, params)), x, t, y, control=control)

    def theirs(x, control, *params):
        p = dict(zip(names, params))
        residuals = _controlnet_torch(_part(p, "controlnet."), x, t, control, y, 2, 2, 6, 2, 0.7)
        return _dit_with_residuals_torch(_part(p, "denoiser."), x, t, y, residuals, 2, 2, 6, 3)

    out = compare_with_torch(ours, theirs, x, control, *weights, dtype=np.float64)
    assert np.abs(out[0].numpy() - dit(x, t, y).numpy()).max() > 0.02     # the control changes the output


def test_gradients_by_centred_differences():
    lamina.set_default_dtype(np.float64)
    dit = DiT(4, 2, 1, dim=4, depth=2, num_heads=2, num_classes=2, class_dropout=0.0, mlp_ratio=1.0, time_dim=4)
    controlnet = DiTControlNet(dit, 1)
    controlled = ControlledDenoiser(dit, controlnet)
    _randomized(controlled, scale=0.5)
    x, t, y = randn(2, 4, 4, 1, seed=5), np.array([1, 7]), np.array([0, 1])
    assert check_gradients(lambda x, control: controlled(x, t, y, control=control), x, randn(2, 4, 4, 1, seed=6))


def test_zero_layers_get_the_first_gradient():
    """At initialisation the gradient reaches the zero layers (their inputs are the copy's
    nonzero tokens) but not the copy or the control's embedding; one step later it does."""
    dit = _pretrained()
    controlnet = DiTControlNet(dit, 1)
    controlled = ControlledDenoiser(dit, controlnet)
    x, t, control = randn(2, 4, 6, 2, seed=4), np.array([5, 50]), randn(2, 4, 6, 1, seed=5)
    up = lamina.tensor(randn(2, 4, 6, 2, seed=6).astype(np.float32))
    (controlled(x, t, control=control) * up).sum().backward()
    grads = {name: np.asarray(p.grad) for name, p in controlnet.named_parameters()}
    assert np.abs(grads["zero_linears.0.weight"]).max() > 1e-3
    assert not np.any(grads["patch_embed.weight"]) and not np.any(grads["hint_embed.weight"])
    for p in controlnet.zero_linears.parameters():
        p.data = p.data - 0.1 * np.asarray(p.grad)
    controlled.zero_grad()
    (controlled(x, t, control=control) * up).sum().backward()
    assert np.abs(np.asarray(controlnet.hint_embed.weight.grad)).max() > 1e-4
    assert np.abs(np.asarray(controlnet.patch_embed.weight.grad)).max() > 1e-4


def test_dit_residuals_argument():
    dit = _pretrained()
    x, t = randn(2, 4, 6, 2, seed=1), np.array([3, 9])
    plain = dit(x, t).numpy()
    zero = [lamina.tensor(np.zeros((2, 6, 8), np.float32))] * 2
    assert np.array_equal(dit(x, t, residuals=zero).numpy(), plain)
    assert np.array_equal(dit(x, t, residuals=[]).numpy(), plain)
    bumped = dit(x, t, residuals=[lamina.tensor(randn(2, 6, 8, seed=2).astype(np.float32))]).numpy()
    assert np.abs(bumped - plain).max() > 1e-3
    with pytest.raises(ValueError, match=r"DiT.*got 4 residuals; expected at most depth = 3"):
        dit(x, t, residuals=zero * 2)
    with pytest.raises(ShapeError, match=r"DiT.*residual 0 has shape \(2, 5, 8\)"):
        dit(x, t, residuals=[lamina.tensor(np.zeros((2, 5, 8), np.float32))])


def test_in_a_diffusion_model_with_guidance_and_tiled_controls():
    dit = _pretrained(num_classes=2)
    controlnet = DiTControlNet(dit, conditioning_channels=1)
    controlled = ControlledDenoiser(dit, controlnet)
    _randomized(controlnet, scale=0.2)
    assert controlled.num_classes == 2 and controlled.null_class == 2
    model = DiffusionModel(controlled, schedule="cosine", num_timesteps=20, sample_shape=(4, 6, 2))
    control = randn(1, 4, 6, 1, seed=9)
    x, t = randn(4, 4, 6, 2, seed=1), np.arange(4)
    one = controlled(x, t, control=control).numpy()
    assert np.array_equal(one, controlled(x, t, control=np.concatenate([control] * 4)).numpy())
    controlled.set_control(np.concatenate([control] * 3))
    lamina.manual_seed(3)
    guided = model.sample(3, steps=4, method="ddim", labels=[0, 1, 0], guidance_scale=2.5)
    lamina.manual_seed(3)
    plain = model.sample(3, steps=4, method="ddim", labels=[0, 1, 0])
    assert guided.shape == (3, 4, 6, 2) and np.all(np.isfinite(guided)) and not np.allclose(guided, plain)
    controlnet.conditioning_scale = 0.0
    lamina.manual_seed(3)
    scaled_off = model.sample(3, steps=4, method="ddim", labels=[0, 1, 0])
    controlled.set_control(None)
    lamina.manual_seed(3)
    assert np.allclose(scaled_off, model.sample(3, steps=4, method="ddim", labels=[0, 1, 0]), atol=1e-6)


def test_config_round_trip_and_save_load(tmp_path):
    dit = _pretrained(num_classes=2)
    controlled = ControlledDenoiser(dit, DiTControlNet(dit, 1, conditioning_scale=0.5))
    _randomized(controlled.controlnet, seed=4)
    x, t, y, control = randn(2, 4, 6, 2), np.array([3, 8]), np.array([1, 0]), randn(2, 4, 6, 1, seed=2)
    expected = controlled(x, t, y, control=control).numpy()
    rebuilt = layer_from_config(layer_to_config(controlled))
    assert isinstance(rebuilt.controlnet, DiTControlNet) and rebuilt.controlnet.conditioning_scale == 0.5
    rebuilt.load_state_dict(controlled.state_dict())
    assert np.allclose(rebuilt(x, t, y, control=control).numpy(), expected, atol=1e-6)
    lamina.save(controlled, tmp_path / "controlled")
    loaded = lamina.load(tmp_path / "controlled")
    assert np.allclose(loaded(x, t, y, control=control).numpy(), expected, atol=1e-6)


def test_errors():
    dit = _pretrained()
    controlnet = DiTControlNet(dit, conditioning_channels=1)
    controlled = ControlledDenoiser(dit, controlnet)
    x, t = randn(2, 4, 6, 2), np.array([1, 2])
    with pytest.raises(ShapeError, match=r"DiTControlNet.*control of.*\(3, 4, 6, 1\).*expected \(m, 4, 6, 1\)"):
        controlled(x, t, control=randn(3, 4, 6, 1))
    with pytest.raises(ShapeError, match=r"DiTControlNet.*a 4-D NHWC batch \(batch, 4, 6, 2\)"):
        controlnet(randn(2, 4, 4, 2), t, randn(2, 4, 4, 1))
    with pytest.raises(TypeError, match="DiTControlNet: dit must be a DiT"):
        DiTControlNet(DenoisingUNet(4, (1,), groups=2), 1)
    with pytest.raises(ValueError, match="num_control_blocks 4 exceeds the DiT's depth 3"):
        DiTControlNet(dit, 1, num_control_blocks=4)
    with pytest.raises(ValueError, match="DiTControlNet: conditioning_scale must be a finite number"):
        DiTControlNet(dit, 1, conditioning_scale=float("inf"))
    with pytest.raises(TypeError, match="ControlledDenoiser: a DiTControlNet steers a DiT; the denoiser is a "
                                        "DenoisingUNet"):
        ControlledDenoiser(DenoisingUNet(4, (1,), groups=2), controlnet)
    unet = DenoisingUNet(4, (1, 2), groups=2)
    with pytest.raises(TypeError, match="ControlledDenoiser: a ControlNet steers a DenoisingUNet"):
        ControlledDenoiser(dit, ControlNet(unet, 1))
    with pytest.raises(ValueError, match="ControlledDenoiser: the controlnet was made for a DiT"):
        ControlledDenoiser(DiT((4, 6), 2, 2, dim=8, depth=2, num_heads=2, time_dim=6), controlnet)


def test_readme_example():
    printed, names = run_readme_section("ControlNet: spatial control of a frozen denoiser")
    assert "frozen DiT unchanged: True" in printed
    assert names["dit_samples"].shape == (4, 8, 8, 1)
    assert isinstance(names["dit_controlled"].controlnet, DiTControlNet)
