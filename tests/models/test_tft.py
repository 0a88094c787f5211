"""The Temporal Fusion Transformer and its blocks: the gated residual network, variable selection
and interpretable multi-head attention against float64 torch rewrites of the paper's formulas
(values, input and parameter gradients), float64 gradient checks, selection weights summing to
1, causality of the decoder, ordered quantiles after training with the pinball loss, saving by
config, and learning a series driven by a static covariate and a known holiday indicator
better than the seasonal naive forecast, with the selection favouring the holiday over noise."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import optim
from lamina.models import (
    GatedResidualNetwork,
    InterpretableMultiHeadAttention,
    StaticCovariateEncoder,
    TemporalFusionTransformer,
    VariableSelectionNetwork,
)

# -- torch rewrites of the paper's formulas, on the lamina state dict ------------------------


def _dense(p, prefix, x):
    y = x @ p[f"{prefix}.weight"]
    return y + p[f"{prefix}.bias"] if f"{prefix}.bias" in p else y


def torch_grn(p, a, context=None, prefix=""):
    """LayerNorm(skip(a) + sigma(W_4 eta_1 + b_4) * (W_5 eta_1 + b_5)), eta_1 = W_1 ELU(W_2 a + W_3 c + b_2) + b_1."""
    z = _dense(p, prefix + "input_layer", a)
    if context is not None:
        c = _dense(p, prefix + "context_layer", context)
        z = z + c.reshape((c.shape[0],) + (1,) * (a.dim() - 2) + (c.shape[1],))
    eta_1 = _dense(p, prefix + "hidden_layer", tF.elu(z))
    skip = _dense(p, prefix + "skip", a) if prefix + "skip.weight" in p else a
    glu = torch.sigmoid(_dense(p, prefix + "glu.gate", eta_1)) * _dense(p, prefix + "glu.value", eta_1)
    out = skip + glu
    return tF.layer_norm(out, out.shape[-1:], p[prefix + "glu.norm.weight"], p[prefix + "glu.norm.bias"], 1e-5)


def torch_vsn(p, xi, context=None, num_inputs=None):
    """v = softmax(GRN_v(flatten(xi), c)), output sum_j v_j GRN_j(xi_j)."""
    flat = xi.reshape(xi.shape[:-2] + (-1,))
    v = torch.softmax(torch_grn(p, flat, context, "weights_grn."), dim=-1)
    processed = torch.stack([torch_grn(p, xi[..., j, :], prefix=f"variable_grns.{j}.")
                             for j in range(num_inputs)], dim=-2)
    return (v.unsqueeze(-1) * processed).sum(-2), v


def torch_imha(p, q, k, v, heads, mask=None):
    """Per-head query/key projections, one shared value projection, the heads' mean."""
    n, tq, d = q.shape
    d_attn = d // heads
    qh = _dense(p, "query", q).reshape(n, tq, heads, d_attn).transpose(1, 2)
    kh = _dense(p, "key", k).reshape(n, k.shape[1], heads, d_attn).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / d_attn ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~torch.as_tensor(mask), float("-inf"))
    a = torch.softmax(scores, dim=-1)
    heads_out = torch.stack([a[:, h] @ _dense(p, "value", v) for h in range(heads)], 0).mean(0)
    return _dense(p, "output", heads_out), a


# -- comparing a lamina block with its rewrite ------------------------------------------------


def f64(*arrays):
    return [lamina.tensor(a, dtype=np.float64) for a in arrays]


def _float64(module):
    module.double()
    rng = np.random.default_rng(5)
    for param in module.parameters():          # away from the initial zeros and ones
        param.data = param.data + 0.3 * rng.normal(size=param.shape)
    return module


def compare_module(module, torch_fn, *arrays, **options):
    """Outputs, input gradients and parameter gradients of ``module`` (called on the arrays and
    ``options``) equal ``torch_fn``'s, in float64."""
    module = _float64(module)
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    params = {k: torch.tensor(lamina.backend.to_numpy(v), requires_grad=True) for k, v in module.state_dict().items()}
    out_l, out_t = module(*ours, **options), torch_fn(params, *theirs)
    out_l = out_l if isinstance(out_l, tuple) else (out_l,)
    out_t = out_t if isinstance(out_t, tuple) else (out_t,)
    rng = np.random.default_rng(1)
    total_l = total_t = 0
    for a, b in zip(out_l, out_t, strict=True):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
        up = rng.normal(size=b.shape)
        total_l = total_l + (a * lamina.tensor(up, dtype=np.float64)).sum()
        total_t = total_t + (b * torch.tensor(up)).sum()
    total_l.backward()
    total_t.backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-12)
    named = dict(module.named_parameters())
    assert sorted(named) == sorted(params)
    for key, value in params.items():
        np.testing.assert_allclose(named[key].grad, value.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("output_size", [None, 5])
def test_grn_matches_the_formula(output_size):
    lamina.manual_seed(0)
    grn = GatedResidualNetwork(4, 6, output_size, context_size=3)
    compare_module(grn, torch_grn, randn(2, 3, 4, seed=1), randn(2, 3, seed=2))


def test_grn_without_context_matches_and_checks_gradients():
    lamina.manual_seed(1)
    grn = _float64(GatedResidualNetwork(3, 4))
    compare_module(grn, lambda p, a: torch_grn(p, a), randn(5, 3, seed=3))
    assert check_gradients(lambda a: grn(a), randn(2, 3, seed=4))
    with pytest.raises(ValueError, match="without one"):
        grn(randn(2, 3), randn(2, 3))


def test_vsn_matches_the_formula_and_weights_sum_to_one():
    lamina.manual_seed(2)
    vsn = VariableSelectionNetwork(3, 4, 5, context_size=2)
    xi, context = randn(2, 6, 3, 4, seed=5), randn(2, 2, seed=6)
    compare_module(vsn, lambda p, x, c: torch_vsn(p, x, c, 3), xi, context)
    selected, weights = vsn(*f64(xi, context))
    assert selected.shape == (2, 6, 4) and weights.shape == (2, 6, 3)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-12)
    assert check_gradients(lambda x, c: vsn(x, c)[0], randn(1, 2, 3, 4, seed=7), randn(1, 2, seed=8))


@pytest.mark.parametrize("causal", [False, True])
def test_interpretable_attention_matches_the_formula(causal):
    lamina.manual_seed(3)
    attention = InterpretableMultiHeadAttention(6, 3)
    mask = np.tril(np.ones((4, 5), bool), 1) if causal else None
    compare_module(attention, lambda p, q, k, v: torch_imha(p, q, k, v, 3, mask),
                   randn(2, 4, 6, seed=9), randn(2, 5, 6, seed=10), randn(2, 5, 6, seed=11), mask=mask)
    _, weights = attention(*f64(randn(2, 4, 6), randn(2, 5, 6), randn(2, 5, 6)), mask)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-12)
    if causal:
        assert np.all(weights.numpy()[..., ~mask] == 0)
    assert check_gradients(lambda q, k, v: attention(q, k, v, mask)[0],
                           randn(1, 4, 6, seed=12), randn(1, 5, 6, seed=13), randn(1, 5, 6, seed=14))


def test_static_encoder_gives_four_contexts_from_four_grns():
    lamina.manual_seed(4)
    encoder = _float64(StaticCovariateEncoder(4))
    zeta = randn(3, 4, seed=15)
    contexts = encoder(*f64(zeta))
    assert len(contexts) == 4 and all(c.shape == (3, 4) for c in contexts)
    params = {k: torch.tensor(lamina.backend.to_numpy(v)) for k, v in encoder.state_dict().items()}
    for c, part in zip(contexts, encoder.context_names):
        np.testing.assert_allclose(c.numpy(), torch_grn(params, torch.tensor(zeta), prefix=f"{part}.").numpy(),
                                   rtol=1e-10)
    assert check_gradients(lambda z: encoder(z)[2], randn(2, 4, seed=16))


# -- the whole model ---------------------------------------------------------------------------


def _tiny(num_static=2, dropout=0.0, seed=0):
    lamina.manual_seed(seed)
    return TemporalFusionTransformer(num_static, 3, 2, hidden=4, num_heads=2, horizon=3, dropout=dropout)


def _inputs(batch=2, steps=5, seed=20):
    return randn(batch, 2, seed=seed), randn(batch, steps, 3, seed=seed + 1), randn(batch, 3, 2, seed=seed + 2)


def test_shapes_weights_and_gradient_check():
    model = _float64(_tiny())
    static, past, future = _inputs()
    found = model.interpret(*f64(static, past, future))
    assert found["forecast"].shape == (2, 3, 3)
    assert found["static_weights"].shape == (2, 2) and found["past_weights"].shape == (2, 5, 3)
    assert found["future_weights"].shape == (2, 3, 2) and found["attention"].shape == (2, 2, 3, 8)
    for key in ("static_weights", "past_weights", "future_weights", "attention"):
        np.testing.assert_allclose(found[key].numpy().sum(-1), 1.0, rtol=1e-12)
    assert check_gradients(lambda s, p, f: model(s, p, f), *_inputs(batch=1, steps=3, seed=30))
    without_static = _tiny(num_static=0)
    assert without_static(None, *f64(past, future)).shape == (2, 3, 3)
    with pytest.raises(lamina.errors.ShapeError, match="future inputs"):
        model(*f64(static, past, future[:, :2]))
    with pytest.raises(ValueError, match="static=None"):
        without_static(static, past, future)


def test_a_forecast_does_not_depend_on_known_inputs_of_later_steps():
    model = _float64(_tiny())
    static, past, future = _inputs(seed=40)
    before = model(*f64(static, past, future)).numpy()
    for step in range(3):
        changed = future.copy()
        changed[:, step] += 5.0
        after = model(*f64(static, past, changed)).numpy()
        np.testing.assert_array_equal(after[:, :step], before[:, :step])
        assert np.abs(after[:, step:] - before[:, step:]).min() > 0
    changed_past = past.copy()
    changed_past[:, 0] += 5.0
    assert np.abs(model(*f64(static, changed_past, future)).numpy() - before).min() > 0
    attention = model.interpret(*f64(static, past, future))["attention"].numpy()
    assert np.all(attention[..., ~model.causal_mask(5)] == 0)


def test_registered_for_configs_and_saved(tmp_path):
    model = _tiny(dropout=0.1)
    model.eval()
    inputs = [a.astype(np.float32) for a in _inputs()]
    expected = model(*inputs).numpy()
    lamina.save(model, tmp_path / "tft.safetensors")
    twin = lamina.load(tmp_path / "tft.safetensors")
    twin.eval()
    assert type(twin) is TemporalFusionTransformer and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(*inputs).numpy(), expected)


# -- learning ----------------------------------------------------------------------------------

SEASON, STEPS, HORIZON = 7, 14, 7


def holiday_series(count, length, seed):
    """y_t = 2 s + sin(2 pi t / 7) + 3 s' h_t + noise: a level and a holiday effect set by the
    static covariate s (s' = 1 + s / 2, s in {-1, 1}), holidays h_t known in advance; a
    pure-noise known input beside them."""
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], count)
    t = np.arange(length) + rng.integers(0, SEASON, count)[:, None]
    holiday = (rng.random((count, length)) < 0.15).astype(float)
    noise_input = rng.normal(size=(count, length))
    y = 2 * s[:, None] + np.sin(2 * np.pi * t / SEASON) + 3 * (1 + s[:, None] / 2) * holiday
    y = y + 0.1 * rng.normal(size=(count, length))
    known = np.stack([holiday, noise_input, np.sin(2 * np.pi * t / SEASON), np.cos(2 * np.pi * t / SEASON)], -1)
    static = s[:, None]
    past = np.concatenate([y[:, :STEPS, None], known[:, :STEPS]], -1)
    return (static.astype(np.float32), past.astype(np.float32), known[:, STEPS:].astype(np.float32),
            y[:, STEPS:].astype(np.float32))


def train(model, data, steps, lr=0.02, seed=0):
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    static, past, future, target = data
    for _ in range(steps):
        rows = rng.choice(len(target), 64, replace=False)
        loss = model.quantile_loss(model(static[rows], past[rows], future[rows]), target[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def trained():
    start = time.perf_counter()
    lamina.manual_seed(0)
    model = TemporalFusionTransformer(1, 5, 4, hidden=8, num_heads=2, horizon=HORIZON, dropout=0.0)
    train(model, holiday_series(512, STEPS + HORIZON, seed=0), steps=150)
    return model, time.perf_counter() - start


def test_beats_seasonal_naive_and_selects_the_holiday_over_noise(trained):
    model, seconds = trained
    static, past, future, target = holiday_series(256, STEPS + HORIZON, seed=1)
    with lamina.no_grad():
        found = model.interpret(static, past, future)
    median = found["forecast"].numpy()[..., 1]
    mae = np.abs(median - target).mean()
    naive = np.abs(past[:, STEPS - SEASON:, 0] - target).mean()
    weights = found["future_weights"].numpy().mean((0, 1))
    print(f"TFT MAE {mae:.3f}, seasonal naive {naive:.3f}; future selection {np.round(weights, 3)} "
          f"({seconds:.1f} s training)")
    assert mae < 0.3 * naive
    assert weights[0] == weights.max() and weights[0] > 1.5 * weights[1]


def test_quantiles_are_ordered_on_held_out_data(trained):
    model, _ = trained
    static, past, future, target = holiday_series(256, STEPS + HORIZON, seed=2)
    with lamina.no_grad():
        forecast = model(static, past, future).numpy()
    ordered = (forecast[..., 0] <= forecast[..., 1]) & (forecast[..., 1] <= forecast[..., 2])
    below = (target[..., None] <= forecast).mean((0, 1))
    print(f"ordered {ordered.mean():.3f}, fraction of targets below each quantile {np.round(below, 3)}")
    assert ordered.mean() > 0.97
    assert below[0] < below[1] < below[2]
    np.testing.assert_allclose(below, model.quantiles, atol=0.1)


def test_readme_example_runs():
    printed, names = run_readme_section("Temporal Fusion Transformer")
    assert printed.split("\n")[:2] == ["(32, 4, 3) (32, 2, 4, 14)", "(32, 10, 2) True"]
    assert isinstance(names["model"], TemporalFusionTransformer)
