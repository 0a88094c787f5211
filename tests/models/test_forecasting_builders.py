"""The forecasting builders of Autoformer, Informer, N-HiTS, TSMixer, TimesNet, iTransformer and the TFT:
registered in the ``"forecasting"`` group, they build the same model as the class (same parameters for
the same seed), pass their options through, forecast windows of the requested shape and save/load."""

import numpy as np
import pytest

import lamina
from lamina.models import (
    Autoformer,
    Informer,
    ITransformer,
    NHiTS,
    TemporalFusionTransformer,
    TimesNet,
    TSMixer,
    autoformer,
    get_model,
    informer,
    itransformer,
    list_models,
    nhits,
    tft,
    timesnet,
    tsmixer,
)

WINDOW_BUILDERS = [("autoformer", autoformer, Autoformer, {"moving_average": 5, "d_model": 8}),
                   ("informer", informer, Informer, {"d_model": 8, "num_heads": 2}),
                   ("nhits", nhits, NHiTS, {"units": 8}),
                   ("tsmixer", tsmixer, TSMixer, {"ff_dim": 8}),
                   ("timesnet", timesnet, TimesNet, {"d_model": 8, "d_ff": 8, "top_k": 2, "num_kernels": 2}),
                   ("itransformer", itransformer, ITransformer, {"d_model": 8, "num_heads": 2,
                                                                 "dim_feedforward": 8})]


def same_parameters(a, b):
    first, second = a.state_dict(), b.state_dict()
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(second[name]), err_msg=name)


def test_the_builders_are_registered_in_the_forecasting_group():
    names = list_models("forecasting")
    for name in ("autoformer", "informer", "nhits", "tsmixer", "tft", "timesnet", "itransformer"):
        assert name in names
        assert list_models(include=name) == [name]


@pytest.mark.parametrize("name, builder, cls, options", WINDOW_BUILDERS, ids=[w[0] for w in WINDOW_BUILDERS])
def test_window_builders_make_the_class_with_their_options(name, builder, cls, options, tmp_path):
    lamina.manual_seed(3)
    built = get_model(name, input_length=16, horizon=4, channels=2, **options)
    lamina.manual_seed(3)
    direct = cls(16, 4, 2, **options)
    assert type(built) is cls and built.horizon == 4 and built.channels == 2
    same_parameters(built, direct)
    x = np.random.default_rng(0).standard_normal((3, 16, 2)).astype(np.float32)
    built.eval()
    lamina.manual_seed(5)                                # Informer's ProbSparse attention samples keys
    forecast = built(x).numpy()
    assert forecast.shape == (3, 4, 2)
    lamina.save(built, tmp_path / f"{name}.safetensors")
    loaded = lamina.load(tmp_path / f"{name}.safetensors")
    loaded.eval()
    lamina.manual_seed(5)
    np.testing.assert_allclose(loaded(x).numpy(), forecast, rtol=1e-6, atol=1e-6)
    default = builder()
    assert (default.input_length, default.horizon, default.channels) == (96, 24, 1)


def test_tft_builder_reads_static_past_and_future_inputs():
    lamina.manual_seed(1)
    model = get_model("tft", num_static=2, num_past_inputs=3, horizon=5, hidden=8, num_heads=2)
    lamina.manual_seed(1)
    direct = TemporalFusionTransformer(2, 3, 1, hidden=8, num_heads=2, horizon=5)
    assert isinstance(model, TemporalFusionTransformer) and model.quantiles == (0.1, 0.5, 0.9)
    same_parameters(model, direct)
    rng = np.random.default_rng(0)
    forecast = model(rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal((4, 7, 3)).astype(np.float32),
                     rng.standard_normal((4, 5, 1)).astype(np.float32))
    assert forecast.shape == (4, 5, 3)
    default = tft()
    assert (default.num_static, default.num_past_inputs, default.num_future_inputs, default.horizon) == (0, 1, 1, 24)
