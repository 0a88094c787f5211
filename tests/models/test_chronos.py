"""Chronos: the mean-scale uniform-bin tokenizer, the T5 language model over its tokens,
sampled forecasts, and the TSMixup and KernelSynth augmentations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import models, nn, optim
from lamina.autograd import no_grad
from lamina.models.forecasting.chronos import (
    ChronosGPT2Model,
    ChronosModel,
    MeanScaleUniformBins,
    kernel_synth,
    periodic_kernel,
    rbf_kernel,
    sample_gaussian_process,
    tsmixup,
)
from lamina.parallel import one_blas_thread
from lamina.train.forecast_metrics import naive_forecast


def _tiny(n_tokens=32, **options):
    options = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 4, "dropout_rate": 0.0,
               **options}
    return ChronosModel(n_tokens, -3.0, 3.0, context_length=12, prediction_length=4, **options)


# -- tokenizer -------------------------------------------------------------------------------
def test_bin_centres_round_trip_and_values_go_to_the_nearest_bin():
    tok = MeanScaleUniformBins(40, low_limit=-4.0, high_limit=4.0)
    centres = np.linspace(-4, 4, 37)
    np.testing.assert_allclose(tok.centers, centres)
    tokens = np.arange(3, 40)[None]
    values = tok.output_transform(tokens, np.array([2.5]))
    np.testing.assert_allclose(values, 2.5 * centres[None])
    again, observed = tok.label_transform(values, np.array([2.5]))
    assert observed.all() and again[0, -1] == tok.eos_token_id
    np.testing.assert_array_equal(again[:, :-1], tokens)
    x = np.random.default_rng(0).uniform(-5, 5, (3, 50))
    scale = tok.scale_of(x)
    ids, mask, got_scale = tok.input_transform(x)
    nearest = np.abs(np.clip(x / scale[:, None], -4, 4)[..., None] - centres).argmin(axis=-1)
    np.testing.assert_array_equal(ids[:, :-1], nearest + 3)
    assert mask.all() and (ids[:, -1] == 1).all()
    np.testing.assert_allclose(got_scale, np.mean(np.abs(x), axis=1))


def test_scale_comes_from_the_context_only_and_nan_is_pad():
    tok = MeanScaleUniformBins(20, -2, 2)
    context = np.array([[1.0, np.nan, -3.0, 2.0], [np.nan, np.nan, np.nan, np.nan], [0.0, 0.0, 0.0, 0.0]])
    ids, mask, scale = tok.input_transform(context)
    np.testing.assert_allclose(scale, [2.0, 1.0, 1.0])           # NaN ignored; 1 when undefined or 0
    np.testing.assert_array_equal(mask[:, :-1], ~np.isnan(context))
    assert ids[0, 1] == tok.pad_token_id and (ids[1, :-1] == tok.pad_token_id).all()
    model = _tiny()
    batch = model.tokenize(context[:1], np.array([[100.0, np.nan, 5.0]]))
    assert batch["scale"][0] == 2.0                               # the target does not change the scale
    assert batch["labels"][0, 1] == -100 and batch["labels"][0, 0] == model.tokenizer.n_tokens - 1
    truncated = model.tokenize(np.concatenate([np.full((1, 30), 50.0), context[:1]], axis=1))
    assert truncated["input_ids"].shape == (1, 13) and truncated["scale"][0] > 2.0


# -- model -----------------------------------------------------------------------------------
def test_loss_is_torch_cross_entropy_over_the_target_tokens():
    model = _tiny()
    rng = np.random.default_rng(1)
    context, target = rng.normal(size=(3, 10)), rng.normal(size=(3, 4))
    target[1, 2] = np.nan
    batch = model.tokenize(context, target)
    loss = float(model.loss(context, target).numpy())
    labels = batch["labels"]
    decoder_inputs = np.concatenate([np.zeros((3, 1), np.int64), np.where(labels[:, :-1] < 0, 0, labels[:, :-1])], 1)
    with no_grad():
        logits = model(batch["input_ids"], decoder_inputs, batch["attention_mask"]).numpy()
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits, dtype=torch.float64).reshape(-1, 32),
                                                 torch.tensor(labels).reshape(-1), ignore_index=-100)
    assert (labels == -100).sum() == 1
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)


def test_forecast_samples_scale_with_the_series():
    model = _tiny()
    context = np.sin(np.arange(12) / 2.0)[None] + 1.5
    first = model.predict(context, num_samples=6, seed=3, top_k=20, top_p=0.9)
    scaled = model.predict(7.0 * context, num_samples=6, seed=3, top_k=20, top_p=0.9)
    assert first.samples.shape == (1, 6, 4) and first.quantiles.shape == (1, 9, 4)
    np.testing.assert_allclose(scaled.samples, 7.0 * first.samples, rtol=1e-12)
    np.testing.assert_allclose(scaled.quantiles, 7.0 * first.quantiles, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(first.quantiles, axis=1) >= 0)
    greedy = model.predict(context, num_samples=3, seed=0, top_k=1)
    assert (greedy.samples == greedy.samples[:, :1]).all()       # top_k=1: every trajectory the same


def test_registered_for_configs_and_round_trips():
    model = _tiny()
    ids = np.random.default_rng(0).integers(3, 32, (2, 5))
    with no_grad():
        out = model(ids, ids[:, :3]).numpy()
    config = json.loads(json.dumps(nn.layer_to_config(model)))
    twin = nn.layer_from_config(config)
    assert type(twin) is ChronosModel and type(model) in set(nn.registered_layers().values())
    with no_grad():
        twin(ids, ids[:, :3])
    twin.load_state_dict(model.state_dict())
    with no_grad():
        np.testing.assert_array_equal(twin(ids, ids[:, :3]).numpy(), out)
    assert models.ChronosModel is ChronosModel
    with pytest.raises(ValueError, match="vocab_size"):
        ChronosModel(32, vocab_size=10)


def _tiny_gpt2():
    return ChronosGPT2Model(32, -3.0, 3.0, context_length=12, prediction_length=4, n_embd=16, n_layer=1, n_head=4,
                            embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)


def test_decoder_only_variant_loss_counts_only_the_target_tokens():
    model = _tiny_gpt2()
    rng = np.random.default_rng(2)
    context, target = rng.normal(size=(2, 10)), rng.normal(size=(2, 4))
    context[0, 3], target[1, 1] = np.nan, np.nan
    batch = model.tokenize(context, target)
    assert batch["input_ids"].shape == (2, 10) and batch["labels"].shape == (2, 4)     # no EOS
    loss = float(model.loss(context, target).numpy())
    ids = np.concatenate([batch["input_ids"], np.maximum(batch["labels"], 0)], axis=1)
    keys = np.concatenate([~np.isnan(context), ~np.isnan(target)], axis=1)
    with no_grad():
        logits = model(ids[:, :-1], key_mask=keys[:, :-1]).numpy()[:, 9:]        # the steps that predict the target
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits, dtype=torch.float64).reshape(-1, 32),
                                                 torch.tensor(batch["labels"]).reshape(-1), ignore_index=-100)
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
    first = model.predict(context, num_samples=5, seed=1)
    scaled = model.predict(3.0 * context, num_samples=5, seed=1)
    assert first.samples.shape == (2, 5, 4)
    np.testing.assert_allclose(scaled.samples, 3.0 * first.samples, rtol=1e-12)


# -- augmentation ----------------------------------------------------------------------------
def test_tsmixup_weights_lie_on_the_simplex_and_lengths_are_in_range():
    rng = np.random.default_rng(0)
    series = [rng.normal(size=n) + 3 for n in (60, 80, 100)]
    counts = set()
    for _ in range(40):
        mixed, weights = tsmixup(series, rng, max_components=3, min_length=20, max_length=50)
        assert np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-12 and 20 <= len(mixed) <= 50
        counts.add(len(weights))
    assert counts == {1, 2, 3}
    mixed, weights = tsmixup([np.full(30, 5.0)], rng, max_components=1, min_length=10, max_length=10)
    np.testing.assert_allclose(mixed, 1.0)                        # each window mean-scaled before mixing


def test_kernel_synth_draws_have_the_kernels_covariance():
    draws = sample_gaussian_process(periodic_kernel(8, 1.0), 32, num_draws=3000, rng=0)
    corr = np.corrcoef(draws.T)
    assert np.mean([corr[t, t + 8] for t in range(24)]) > 0.99     # periodic: one period apart, the same
    assert np.mean([corr[t, t + 4] for t in range(24)]) < 0.5
    np.testing.assert_allclose(np.cov(draws.T), periodic_kernel(8, 1.0)(np.arange(32.0)), atol=0.12)
    smooth = sample_gaussian_process(rbf_kernel(3.0), 40, num_draws=3000, rng=1)
    lag = np.mean(smooth[:, :-3] * smooth[:, 3:])
    assert abs(lag - np.exp(-0.5)) < 0.06
    series = [kernel_synth(64, rng=seed) for seed in range(5)]
    assert all(s.shape == (64,) and np.isfinite(s).all() for s in series)


# -- learning --------------------------------------------------------------------------------
def _sines(rng, n, length, period=12):
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    amplitude, level = rng.uniform(0.5, 2.0, (n, 1)), rng.uniform(-0.5, 0.5, (n, 1))
    return level + amplitude * np.sin(2 * np.pi * np.arange(length) / period + phase)


def _wql(y, quantiles, levels):
    levels = np.asarray(levels)[None, :, None]
    error = y[:, None] - quantiles
    return float(2 * np.mean(np.sum(np.maximum(levels * error, (levels - 1) * error), axis=(0, 2)))
                 / np.sum(np.abs(y)))


@pytest.mark.parametrize("backbone, steps", [("t5", 1000), ("gpt2", 250)])
def test_chronos_learns_to_forecast_sines(backbone, steps):
    """Held-out sines (new phases, amplitudes and levels) after a few seconds of training on
    sines and KernelSynth draws: the weighted quantile loss falls well below the naive
    forecast's and the untrained model's."""
    lamina.manual_seed(0)
    context_length, horizon = 24, 6
    rng = np.random.default_rng(0)
    synth = np.stack([kernel_synth(context_length + horizon, max_kernels=2, rng=rng) for _ in range(48)])
    if backbone == "t5":
        model = ChronosModel(32, -2.5, 2.5, context_length=context_length, prediction_length=horizon, d_model=32,
                             d_kv=8, d_ff=64, num_layers=1, num_heads=4, dropout_rate=0.0)
    else:
        model = ChronosGPT2Model(32, -2.5, 2.5, context_length=context_length, prediction_length=horizon, n_embd=32,
                                 n_layer=1, n_head=4, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    test = _sines(np.random.default_rng(99), 16, context_length + horizon)
    context, future = test[:, :context_length], test[:, context_length:]

    def wql():
        forecast = model.predict(context, num_samples=20, seed=0)
        return _wql(future, forecast.quantiles, forecast.quantile_levels)

    untrained = wql()
    optimizer = None
    with one_blas_thread():
        for _step in range(steps):
            x = np.concatenate([_sines(rng, 24, context_length + horizon), synth[rng.integers(0, 48, 8)]])
            loss = model.loss(x[:, :context_length], x[:, context_length:])
            optimizer = optimizer or optim.Adam(model.parameters(), lr=1e-2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    chronos = wql()
    naive = _wql(future, np.repeat(naive_forecast(context, horizon)[:, None], 9, axis=1), (0.1, 0.2, 0.3, 0.4, 0.5,
                                                                                         0.6, 0.7, 0.8, 0.9))
    # measured, t5, on an AMD EPYC host over 8 seeds (lamina.manual_seed and the data seed): WQL
    # 0.043-0.069 after 1000 steps (0.067 here) against an untrained 0.66-0.96 and a naive 1.389;
    # after 600 steps it still plateaued on some seeds (0.065-0.372; 0.216 here)
    assert chronos < 0.3 * naive and chronos < 0.3 * untrained, (chronos, naive, untrained)


def test_readme_example_runs():
    printed, names = run_readme_section("Chronos: forecasting with a language model over quantized values")
    assert names["forecast"].samples.shape == (2, 10, 5) and "quantiles (2, 9, 5)" in printed
