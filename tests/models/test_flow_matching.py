"""Flow matching models: the loss against a torch re-implementation (values and parameter
gradients, float64) and a numerical gradient check, labels following the coupling with
dropout, sampling a linear ODE with known solution by euler / midpoint / dopri5 (and the
evaluations counted), classifier-free guidance, straightness and reflow pairs, saving, and
errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch_diffusion as ref
from scipy.linalg import expm

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.models import (
    DenoisingMLP,
    FlowMatchingModel,
    flow_matching_loss,
    reflow_pairs,
    straightness,
)
from lamina.nn import Module, functional_call
from lamina.nn.module import as_tensor

SCALE = 100.0


def _randomized_model(matcher, seed=0, num_classes=None):
    model = FlowMatchingModel(DenoisingMLP(hidden=(6, 5), time_dim=4, num_classes=num_classes), matcher=matcher,
                              time_scale=SCALE)
    model(np.zeros((1, 3)), 0.5)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.standard_normal(p.shape) * 0.4
    names = [name for name, _ in model.named_parameters()]
    return model, names, [p.numpy().copy() for _, p in model.named_parameters()]


def _torch_pairs(kind, x0, x1):
    """The pairing the matcher should use: every permutation tried for the OT one."""
    if kind != "exact_ot":
        return x0, x1
    cost = ((x0[:, None] - x1[None]) ** 2).sum(-1)
    best = min(itertools.permutations(range(len(x0))), key=lambda p: cost[np.arange(len(x0)), list(p)].sum())
    return x0, x1[list(best)]


@pytest.mark.parametrize("kind, sigma", [("cfm", 0.0), ("target", 0.1), ("exact_ot", 0.0)])
def test_loss_matches_torch_values_and_gradients(f64, kind, sigma):
    matcher = {"kind": kind, "sigma": sigma}
    model, names, weights = _randomized_model(matcher)
    x1, x0, t = randn(5, 3, seed=1) + 2.0, randn(5, 3, seed=2), np.array([0.0, 0.2, 0.5, 0.7, 1.0])
    p0, p1 = _torch_pairs(kind, x0, x1)
    p0, p1 = torch.tensor(p0), torch.tensor(p1)
    tt = torch.tensor(t)[:, None]

    def ours(*params):
        def net(x, times):
            return functional_call(model, dict(zip(names, params)), x, times)
        return flow_matching_loss(net, x1, x0, model.matcher, t=t)

    def theirs(*params):
        if kind == "target":
            xt, ut = (1 - (1 - sigma) * tt) * p0 + tt * p1, p1 - (1 - sigma) * p0
        else:
            xt, ut = (1 - tt) * p0 + tt * p1, p1 - p0
        v = ref.denoising_mlp({n.removeprefix("net."): p for n, p in zip(names, params)}, xt, t * SCALE, 2, 4)
        return ((v - ut) ** 2).mean()

    compare_with_torch(ours, theirs, *weights, dtype=np.float64)
    assert check_gradients(ours, *weights)


def test_model_loss_draws_source_and_times(f64):
    model, _, _ = _randomized_model("cfm")
    x1 = randn(6, 3, seed=3)
    lamina.manual_seed(5)
    drawn = model.loss(x1).item()
    lamina.manual_seed(5)                  # the source first, then the times
    x0 = lamina.backend.rng().standard_normal(x1.shape)
    t = lamina.backend.rng().random(6)
    assert drawn == pytest.approx(model.loss(x1, x0=x0, t=t).item(), rel=1e-12)


class LabelSpy(Module):
    """A velocity field of zeros recording the samples and labels it is called on."""

    num_classes, null_class = 4, 4

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append((as_tensor(x).numpy().copy(), None if y is None else np.asarray(y).copy()))
        return as_tensor(x) * 0.0


def test_labels_follow_the_coupling_and_drop_out(f64):
    x1 = np.repeat(np.arange(4.0)[:, None], 2, axis=1) * 10 + randn(4, 2, seed=1) * 0.01
    x0 = x1[::-1] + 0.1                  # the optimal pairing reverses the batch
    labels = np.array([0, 1, 2, 3])
    spy = LabelSpy()
    model = FlowMatchingModel(spy, matcher="exact_ot", label_dropout=0.0)
    model.loss(x1, x0=x0, labels=labels, t=1.0)            # at t = 1, x_t is the x1 paired with x0's rows
    xt, seen = spy.seen[-1]
    assert_close(xt, x1[::-1], 1e-12, "x_t at t = 1")
    np.testing.assert_array_equal(seen, labels[::-1])
    model.label_dropout = 0.5
    big = np.tile(x1, (100, 1))
    model.loss(big, x0=big, labels=np.tile(labels, 100), couple=False)
    dropped = np.mean(spy.seen[-1][1] == spy.null_class)
    assert 0.4 < dropped < 0.6


class LinearField(Module):
    """dx/dt = A x, whose flow is x(t) = expm(A t) x(0)."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x, t, y=None):
        return as_tensor(x) @ lamina.tensor(self.a.T.copy())


def test_sampling_solves_the_ode(f64):
    a = np.array([[0.0, -2.0], [2.0, -0.3]])
    model = FlowMatchingModel(LinearField(a), sample_shape=(2,))
    x0 = randn(7, 2, seed=4)
    exact = x0 @ expm(a).T
    errors = {}
    for method, steps, nfe in [("euler", 50, 50), ("midpoint", 50, 100), ("rk4", 10, 40)]:
        out = model.sample(start=x0, steps=steps, method=method)
        assert model.last_nfe == nfe
        errors[method] = np.abs(out - exact).max()
    assert errors["midpoint"] < errors["euler"] / 10 and errors["rk4"] < 1e-3
    assert np.abs(model.sample(start=x0, method="dopri5", rtol=1e-8, atol=1e-8) - exact).max() < 1e-6
    path = model.trajectory(start=x0, times=[0.0, 0.5, 1.0], steps=20, method="rk4")
    assert path.shape == (3, 7, 2)
    assert_close(path[1], x0 @ expm(0.5 * a).T, 1e-5, "x(0.5)")
    lamina.manual_seed(2)
    drawn = model.sample(3, steps=2)
    lamina.manual_seed(2)
    start = lamina.backend.rng().standard_normal((3, 2))
    assert_close(drawn, model.sample(start=start, steps=2), 1e-12, "samples from N(0, I)")


def test_straightness_and_reflow_pairs(f64):
    constant = FlowMatchingModel(LinearField(np.zeros((2, 2))), sample_shape=(2,))
    assert straightness(constant, randn(5, 2), steps=10) == 0.0
    rotation = FlowMatchingModel(LinearField(np.array([[0.0, -3.0], [3.0, 0.0]])), sample_shape=(2,))
    assert straightness(rotation, randn(5, 2), steps=10) > 1.0
    sources, targets = reflow_pairs(rotation, randn(5, 2), steps=10)
    assert_close(sources, randn(5, 2), 0, "sources")
    assert_close(targets, rotation.sample(start=sources, steps=10), 1e-12, "targets")


def test_classifier_free_guidance_combines_the_two_velocities(f64):
    model, _, _ = _randomized_model("cfm", num_classes=3)
    x, labels, w = randn(4, 3, seed=6), np.array([0, 2, 1, 1]), 2.5
    conditional = model(x, 0.3, labels).numpy()
    unconditional = model(x, 0.3, np.full(4, 3)).numpy()
    guided = model.velocity(x, 0.3, labels, guidance_scale=w).numpy()
    assert_close(guided, unconditional + w * (conditional - unconditional), 1e-12, "guided velocity")
    assert_close(model.velocity(x, 0.3, labels).numpy(), conditional, 1e-12, "w = 1")
    out = model.sample(start=x, steps=3, labels=labels, guidance_scale=w)
    assert out.shape == (4, 3) and model.last_nfe == 3


def test_config_and_save_load_round_trip(tmp_path):
    model = FlowMatchingModel(DenoisingMLP(hidden=(6,), time_dim=4, num_classes=2),
                              matcher={"kind": "exact_ot", "sigma": 0.1, "method": "sinkhorn"}, time_scale=500,
                              label_dropout=0.2)
    x = randn(4, 3).astype(np.float32)
    model.loss(x, labels=np.array([0, 1, 1, 0]))
    for p in model.parameters():
        p.data = p.data + 0.1
    rebuilt = lamina.nn.layer_from_config(lamina.nn.layer_to_config(model))
    assert rebuilt.get_config() == model.get_config()
    lamina.save(model, tmp_path / "flow.safetensors")
    loaded = lamina.load(tmp_path / "flow.safetensors")
    assert type(loaded) is FlowMatchingModel and loaded.get_config() == model.get_config()
    assert loaded.matcher.method == "sinkhorn" and loaded.sample_shape == (3,)
    np.testing.assert_array_equal(model.sample(start=x, steps=4, labels=np.array([0, 1, 0, 1])),
                                  loaded.sample(start=x, steps=4, labels=np.array([0, 1, 0, 1])))


def test_errors():
    model = FlowMatchingModel(DenoisingMLP(hidden=(4,)))
    model(np.zeros((1, 2), np.float32), 0.5)
    with pytest.raises(ShapeError, match=r"ConditionalFlowMatcher: the source batch x0 of shape \(3, 2\) and the "
                                         r"data batch x1 of shape \(4, 2\) must have the same shape"):
        model.loss(np.zeros((4, 2), np.float32), x0=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"times t must lie in \[0, 1\], got \[1.2\]"):
        model.loss(np.zeros((2, 2), np.float32), t=np.array([0.5, 1.2]))
    with pytest.raises(ValueError, match="ConditionalFlowMatcher: sigma must be a number >= 0, got -1"):
        FlowMatchingModel(DenoisingMLP(hidden=(4,)), matcher={"kind": "cfm", "sigma": -1})
    with pytest.raises(ValueError, match="FlowMatchingModel: time_scale must be a number > 0"):
        FlowMatchingModel(DenoisingMLP(hidden=(4,)), time_scale=0)
    with pytest.raises(RuntimeError, match="the sample shape is unknown"):
        FlowMatchingModel(DenoisingMLP(hidden=(4,))).sample(3)
    with pytest.raises(ShapeError, match=r"start of .* must hold samples of shape \(2,\)"):
        model.sample(start=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs labels"):
        model.sample(2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="got labels, but the net has no num_classes"):
        model.sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match="unknown method 'heun'"):
        model.sample(2, method="heun")
    with pytest.raises(ShapeError, match="flow_matching_loss: x1 must be a batch"):
        flow_matching_loss(model, np.zeros(3, np.float32))
