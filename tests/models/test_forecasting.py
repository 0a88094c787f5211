"""TCN, N-BEATS, DLinear and PatchTST against torch references written from the papers (values
and gradients of the input and every parameter), float64 gradient checks, causality and the
TCN's receptive field, configuration and summaries, and learning a noisy seasonal series better
than the seasonal naive forecast."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.data import TimeSeriesDataset, seasonal_series
from lamina.models import (
    NBEATS,
    TCN,
    DLinear,
    NBeatsBlock,
    PatchTST,
    TemporalBlock,
    get_model,
    list_models,
    tcn_receptive_field,
)
from lamina.train import mase, seasonal_naive_forecast


# -- helpers -----------------------------------------------------------------------------------------
def built(model, shape, dtype=np.float32, scale=0.5, seed=7):
    """``model`` built for ``shape`` with random parameters (every one nonzero, so each matters)."""
    model.build(shape)
    rng = np.random.default_rng(seed)
    for key, value in model.state_dict().items():
        base = 1.0 if key.endswith((".g", "norm1.weight", "norm2.weight", "revin.weight")) else 0.0
        value[...] = base + rng.normal(0.0, scale / np.sqrt(max(value.shape[0], 1)), value.shape)
    if dtype == np.float64:
        model.to(dtype=np.float64)
    model.eval()
    return model


def as_function_of_parameters(model, call=None):
    """(f(x, *params), params, keys): the model as a function of its input and parameter arrays."""
    keys = list(model.state_dict())

    def function(x, *params):
        return nn.functional_call(model, dict(zip(keys, params)), x) if call is None else \
            call(nn.functional_call, dict(zip(keys, params)), x)

    return function, [model.state_dict()[k].copy() for k in keys], keys


def compare(model, reference, x, dtype):
    ours, arrays, keys = as_function_of_parameters(model)

    def theirs(x, *params):
        return reference(x, dict(zip(keys, params)))

    compare_with_torch(ours, theirs, x, *arrays, dtype=dtype, rtol=1e-4 if dtype == np.float32 else 1e-9)


def gradcheck(model, shape, x, grad_x=True):
    lamina.set_default_dtype(np.float64)
    try:
        model = built(model, (None, *shape[1:]), np.float64, seed=3)
        function, arrays, _ = as_function_of_parameters(model)

        def joined(*inputs):                   # an N-BEATS block's (backcast, forecast) as one output
            out = function(*inputs)
            return F.concat(list(out), axis=1) if isinstance(out, tuple) else out

        assert check_gradients(joined, x, *arrays, grad=[grad_x] + [True] * len(arrays))
    finally:
        lamina.set_default_dtype(np.float32)


# -- torch references --------------------------------------------------------------------------------
def torch_weight_norm_conv(x, p, name, dilation):
    """Causal dilated Conv1d under weight norm on (N, C, L): w = g v / ||v||, v lamina's (K, f, c)."""
    v = p[f"{name}.v"]
    w = p[f"{name}.g"][:, None, None] * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    pad = dilation * (v.shape[1] - 1)
    return tF.conv1d(tF.pad(x, (pad, 0)), w.permute(0, 2, 1), p[f"{name}.layer.bias"], dilation=dilation)


def torch_temporal_block(x, p, dilation, prefix=""):
    """Bai et al.'s TemporalBlock on (N, L, C) (dropout off)."""
    h = x.transpose(1, 2)
    out = torch.relu(torch_weight_norm_conv(h, p, f"{prefix}conv1", dilation))
    out = torch.relu(torch_weight_norm_conv(out, p, f"{prefix}conv2", dilation))
    key = f"{prefix}downsample.weight"
    residual = h if key not in p else tF.conv1d(h, p[key].permute(0, 2, 1), p[f"{prefix}downsample.bias"])
    return torch.relu(out + residual).transpose(1, 2)


def torch_tcn(x, p, blocks, horizon):
    for i in range(blocks):
        x = torch_temporal_block(x, p, 2 ** i, prefix=f"block{i}.")
    y = x[:, -1] @ p["head.weight"] + p["head.bias"]
    return y.reshape(x.shape[0], horizon, -1)


def torch_bases(kind, length, horizon, degree, harmonics):
    """The N-BEATS bases: identity; polynomials (t / n)^i; a Fourier series of period L on one axis."""
    if kind == "generic":
        return torch.eye(length, dtype=torch.float64), torch.eye(horizon, dtype=torch.float64)
    if kind == "trend":
        def poly(n):
            return torch.stack([(torch.arange(n, dtype=torch.float64) / n) ** i for i in range(degree + 1)])
        return poly(length), poly(horizon)
    k = harmonics or max(length // 2 - 1, 1)

    def fourier(steps):
        angle = 2 * torch.pi * torch.outer(torch.arange(k + 1, dtype=torch.float64), steps / length)
        return torch.cat([torch.cos(angle), torch.sin(angle[1:])])
    steps = torch.arange(length + horizon, dtype=torch.float64)
    return fourier(steps[:length]), fourier(steps[length:])


def torch_nbeats_block(x, p, kind, layers, horizon, degree=2, harmonics=None, prefix=""):
    h = x
    for i in range(layers):
        h = torch.relu(h @ p[f"{prefix}fc{i}.weight"] + p[f"{prefix}fc{i}.bias"])
    theta = h @ p[f"{prefix}theta.weight"] + p[f"{prefix}theta.bias"]
    back, fore = (b.to(x.dtype) for b in torch_bases(kind, x.shape[1], horizon, degree, harmonics))
    return theta[:, :back.shape[0]] @ back, theta[:, back.shape[0]:] @ fore


def torch_nbeats(x, p, kinds, layers, horizon, harmonics=None):
    n, length, c = x.shape
    residual = x.transpose(1, 2).reshape(n * c, length)
    forecast = 0
    for j, kind in enumerate(kinds):
        back, fore = torch_nbeats_block(residual, p, kind, layers, horizon, harmonics=harmonics, prefix=f"block{j}.")
        residual = residual - back
        forecast = forecast + fore
    return forecast.reshape(n, c, horizon).transpose(1, 2)


def torch_dlinear(x, p, kernel_size):
    """Zeng et al.'s DLinear: replicate the ends, AvgPool1d, two Linear layers over time."""
    half = (kernel_size - 1) // 2
    padded = torch.cat([x[:, :1].repeat(1, half, 1), x, x[:, -1:].repeat(1, half, 1)], dim=1)
    trend = tF.avg_pool1d(padded.transpose(1, 2), kernel_size, stride=1)
    seasonal = x.transpose(1, 2) - trend
    y = seasonal @ p["seasonal.weight"] + p["seasonal.bias"] + trend @ p["trend.weight"] + p["trend.bias"]
    return y.transpose(1, 2)


def torch_encoder_layer(model, dtype):
    return torch.nn.TransformerEncoderLayer(model.d_model, model.num_heads, model.dim_feedforward, dropout=0.0,
                                            activation="gelu", batch_first=True,
                                            dtype=torch.float64 if dtype == np.float64 else torch.float32)


def torch_patchtst(x, p, model, encoder):
    """Nie et al.'s PatchTST (LayerNorm encoder): RevIN, ReplicationPad1d((0, S)) and unfold,
    W_P + W_pos, encoder layers, flatten head, RevIN^-1."""
    eps = 1e-5
    mean = x.mean(dim=1, keepdim=True).detach()
    std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + eps).detach()
    z = (x - mean) / std * p["revin.weight"] + p["revin.bias"]
    n, _, c = z.shape
    series = z.transpose(1, 2)
    if model.padding_patch == "end":
        series = tF.pad(series, (0, model.stride), mode="replicate")
    patches = series.unfold(-1, model.patch_length, model.stride).reshape(n * c, -1, model.patch_length)
    tokens = patches @ p["patch_embedding.weight"] + p["patch_embedding.bias"] + p["position"]
    for i in range(model.layers):
        q = f"layer{i}."
        weights = {
            "self_attn.in_proj_weight": p[q + "self_attention.in_weight"].T,
            "self_attn.in_proj_bias": p[q + "self_attention.in_bias"],
            "self_attn.out_proj.weight": p[q + "self_attention.out_weight"].T,
            "self_attn.out_proj.bias": p[q + "self_attention.out_bias"],
            "linear1.weight": p[q + "linear1.weight"].T, "linear1.bias": p[q + "linear1.bias"],
            "linear2.weight": p[q + "linear2.weight"].T, "linear2.bias": p[q + "linear2.bias"],
            "norm1.weight": p[q + "norm1.weight"], "norm1.bias": p[q + "norm1.bias"],
            "norm2.weight": p[q + "norm2.weight"], "norm2.bias": p[q + "norm2.bias"],
        }
        tokens = torch.func.functional_call(encoder, weights, (tokens,))
    y = tokens.reshape(n * c, -1) @ p["head.weight"] + p["head.bias"]
    y = y.reshape(n, c, -1).transpose(1, 2)
    return (y - p["revin.bias"]) / (p["revin.weight"] + eps * eps) * std + mean


# -- blocks and models against torch -----------------------------------------------------------------
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c_in, filters, kernel, dilation", [(3, 5, 3, 2), (4, 4, 2, 4)])
def test_temporal_block_matches_torch(c_in, filters, kernel, dilation, dtype):
    block = built(TemporalBlock(c_in, filters, kernel, dilation, dropout=0.0), (None, 11, c_in), dtype)
    assert ("downsample.weight" in block.state_dict()) == (c_in != filters)
    compare(block, lambda x, p: torch_temporal_block(x, p, dilation), randn(2, 11, c_in), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tcn_matches_torch(dtype):
    model = built(TCN(12, 3, channels=2, hidden=(4, 5), kernel_size=3, dropout=0.0), (None, 12, 2), dtype)
    compare(model, lambda x, p: torch_tcn(x, p, 2, 3), randn(3, 12, 2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, harmonics", [("generic", None), ("trend", None), ("seasonality", None),
                                             ("seasonality", 2)])
def test_nbeats_block_matches_torch(kind, harmonics, dtype):
    block = built(NBeatsBlock(10, 4, kind, units=6, layers=2, degree=3, harmonics=harmonics), (None, 10), dtype)

    def call(apply, params, x):
        return apply(block, params, x)

    ours, arrays, keys = as_function_of_parameters(block, call)

    def theirs(x, *params):
        return torch_nbeats_block(x, dict(zip(keys, params)), kind, 2, 4, degree=3, harmonics=harmonics)

    compare_with_torch(ours, theirs, randn(3, 10), *arrays, dtype=dtype, rtol=1e-4 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nbeats_matches_torch(dtype):
    """The doubly residual stacks: trend, then seasonality, then generic blocks, two channels."""
    model = built(NBEATS(8, 3, channels=2, stacks=("trend", "seasonality", "generic"), blocks_per_stack=1,
                         units=5, layers=2), (None, 8, 2), dtype)
    compare(model, lambda x, p: torch_nbeats(x, p, ("trend", "seasonality", "generic"), 2, 3), randn(2, 8, 2),
            dtype)
    shares = model.stack_forecasts(randn(2, 8, 2).astype(dtype))
    total = sum(share.numpy() for share in shares)
    np.testing.assert_allclose(total, model(randn(2, 8, 2).astype(dtype)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", [5, 25])
def test_dlinear_matches_torch(kernel, dtype):
    model = built(DLinear(12, 4, channels=3, kernel_size=kernel), (None, 12, 3), dtype)
    compare(model, lambda x, p: torch_dlinear(x, p, kernel), randn(2, 12, 3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_patch", ["end", None])
def test_patchtst_matches_torch(padding_patch, dtype):
    model = PatchTST(16, 5, channels=2, patch_length=6, stride=3, d_model=8, num_heads=2, dim_feedforward=12,
                     layers=2, dropout=0.0, padding_patch=padding_patch)
    model = built(model, (None, 16, 2), dtype)
    assert model.num_patches == (16 - 6) // 3 + 1 + (padding_patch == "end")
    encoder = torch_encoder_layer(model, dtype)
    compare(model, lambda x, p: torch_patchtst(x, p, model, encoder), randn(3, 16, 2, scale=2.0) + 1.0, dtype)


# -- gradient checks ----------------------------------------------------------------------------------
def test_gradchecks_of_small_pieces():
    gradcheck(TemporalBlock(2, 3, 2, dilation=2, dropout=0.0), (2, 6, 2), randn(2, 6, 2))
    for kind in ("trend", "seasonality"):
        gradcheck(NBeatsBlock(6, 3, kind, units=4, layers=1), (2, 6), randn(2, 6))
    gradcheck(DLinear(8, 3, channels=2, kernel_size=3), (2, 8, 2), randn(2, 8, 2))
    # RevIN's statistics are constants of the gradient, so the input is not checked
    gradcheck(PatchTST(8, 2, channels=1, patch_length=4, stride=2, d_model=4, num_heads=2, dim_feedforward=6,
                       layers=1, dropout=0.0), (2, 8, 1), randn(2, 8, 1), grad_x=False)
    gradcheck(PatchTST(8, 2, channels=1, patch_length=4, stride=2, d_model=4, num_heads=2, dim_feedforward=6,
                       layers=1, dropout=0.0, revin=False), (1, 8, 1), randn(1, 8, 1))


# -- causality and receptive field --------------------------------------------------------------------
def test_causal_convolution_does_not_see_the_future():
    model = built(TCN(20, 2, channels=2, hidden=(6, 6), kernel_size=3, dropout=0.0), (None, 20, 2), np.float64)
    x = randn(3, 20, 2)
    before = model.features(x).numpy()
    for t in (0, 7, 19):
        changed = x.copy()
        changed[:, t] += 10.0
        after = model.features(changed).numpy()
        np.testing.assert_array_equal(after[:, :t], before[:, :t])
        assert np.abs(after[:, t:] - before[:, t:]).max() > 0


@pytest.mark.parametrize("hidden, kernel", [((4, 4, 4), 2), ((5, 5), 3)])
def test_receptive_field_is_as_computed(hidden, kernel):
    """The last step's features depend on exactly the last 1 + 2 (k - 1) (2^B - 1) input steps."""
    model = TCN(40, 1, channels=2, hidden=hidden, kernel_size=kernel, dropout=0.0)
    field = model.receptive_field
    assert field == tcn_receptive_field(kernel, [2 ** i for i in range(len(hidden))])
    assert field == 1 + 2 * (kernel - 1) * (2 ** len(hidden) - 1)
    model = built(model, (None, 40, 2), np.float64)
    x = lamina.tensor(randn(4, 40, 2) + 1.0, requires_grad=True, dtype=np.float64)
    F.sum(model.features(x)[:, -1]).backward()
    reached = np.flatnonzero(np.abs(x.grad).sum(axis=(0, 2)) > 0)
    assert reached.min() == 40 - field and reached.max() == 39


# -- configuration, summaries, registry --------------------------------------------------------------
MODELS = [
    lambda: TCN(24, 6, channels=2, hidden=(4, 6), kernel_size=3),
    lambda: NBEATS(24, 6, channels=2, units=8, layers=2, blocks_per_stack=2),
    lambda: DLinear(24, 6, channels=2, kernel_size=7),
    lambda: PatchTST(24, 6, channels=2, patch_length=8, stride=4, d_model=8, num_heads=2, dim_feedforward=16,
                     layers=1),
]


@pytest.mark.parametrize("make", MODELS)
def test_config_round_trip_summary_and_saving(make, tmp_path):
    model = make()
    table = summary(make(), (24, 2))
    model = built(model, (None, 24, 2))
    assert table.total_params == sum(v.size for v in model.state_dict().values())
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = tmp_path / "forecaster.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    loaded.eval()
    x = randn(3, 24, 2)
    with lamina.no_grad():
        y = model(x).numpy()
        np.testing.assert_allclose(loaded(x).numpy(), y, rtol=1e-6)
    assert y.shape == (3, 6, 2) and model.compute_output_shape((None, 24, 2)) == (None, 6, 2)


def test_registry_and_input_errors():
    assert list_models("forecasting") == ["autoformer", "dlinear", "informer", "itransformer", "nbeats", "nhits",
                                          "patchtst", "tcn", "tft", "timesnet", "tsmixer"]
    model = get_model("dlinear", input_length=16, horizon=4, channels=3)
    assert isinstance(model, DLinear) and model(randn(2, 16, 3)).shape == (2, 4, 3)
    with pytest.raises(lamina.errors.ShapeError, match=r"DLinear.*\(batch, 16, 3\)"):
        model(randn(2, 15, 3))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DLinear(16, 4, kernel_size=4)
    with pytest.raises(ValueError, match="stacks"):
        NBEATS(16, 4, stacks=("fourier",))
    with pytest.raises(ValueError, match="patch_length"):
        PatchTST(8, 2, patch_length=9)


# -- learning ----------------------------------------------------------------------------------------
INPUT, HORIZON, SEASON = 48, 12, 24
# name -> (model, steps, learning rate); measured test MASE (OpenBLAS's own and Haswell kernels alike): TCN
# 0.856, N-BEATS 0.855, DLinear 0.874, PatchTST 0.850 against the seasonal naive 1.001 (bar 0.951)
LEARNERS = {
    "tcn": (lambda: TCN(INPUT, HORIZON, hidden=(8, 8, 8), kernel_size=5, dropout=0.0), 600, 1e-2),
    "nbeats": (lambda: NBEATS(INPUT, HORIZON, units=64, layers=2, blocks_per_stack=2), 150, 3e-3),
    "dlinear": (lambda: DLinear(INPUT, HORIZON, kernel_size=13), 300, 3e-3),
    "patchtst": (lambda: PatchTST(INPUT, HORIZON, patch_length=12, stride=6, d_model=16, num_heads=2,
                                  dim_feedforward=32, layers=1, dropout=0.0), 120, 3e-3),
}


@pytest.fixture(scope="module")
def seasonal_data():
    series = seasonal_series(1200, periods=(24, 12), amplitudes=(1.0, 0.5), noise=0.3, seed=0)
    return TimeSeriesDataset(series, INPUT, HORIZON, splits=(0.7, 0.1))


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learns_a_seasonal_series_better_than_seasonal_naive(name, seasonal_data):
    start = time.perf_counter()
    make, steps, lr = LEARNERS[name]
    x, y = seasonal_data.windows("train")
    x_test, y_test = seasonal_data.windows("test")
    train_span = seasonal_data.span("train")
    baseline = mase(y_test, seasonal_naive_forecast(x_test, HORIZON, SEASON), train_span, SEASON)
    lamina.manual_seed(0)
    model = make()
    model.build((None, INPUT, 1))
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        rows = rng.choice(len(x), 32, replace=False)
        loss = F.mean(F.square(model(x[rows]) - y[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with lamina.no_grad():
        score = mase(y_test, model(x_test).numpy(), train_span, SEASON)
    print(f"{name}: test MASE {score:.3f}, seasonal naive {baseline:.3f} ({time.perf_counter() - start:.1f} s)")
    assert score < 0.95 * baseline
