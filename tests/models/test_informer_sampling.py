"""Informer's ProbSparse key sample: fixed by ``sample_seed`` in evaluation (repeatable forecasts,
whatever lamina's generator holds, kept by save/load), drawn afresh on every training call and,
with ``sample_seed=None``, in evaluation too."""

import numpy as np
import pytest

import lamina
from lamina.models import Informer


def _model(**options):
    lamina.manual_seed(0)
    # factor 1 on 16 steps: 3 sampled keys and 3 active queries of 16, so the sample matters
    return Informer(16, 4, channels=2, d_model=8, num_heads=2, dim_feedforward=8, factor=1.0, dropout=0.0,
                    **options)


WINDOW = np.random.default_rng(0).standard_normal((2, 16, 2)).astype(np.float32)


def _forecasts(model, seeds=(1, 2)):
    """One forecast of WINDOW after each global seed."""
    results = []
    for seed in seeds:
        lamina.manual_seed(seed)
        results.append(model(WINDOW).numpy())
    return results


def test_evaluation_forecasts_repeat_whatever_the_global_generator():
    model = _model()
    model.eval()
    first, second = _forecasts(model)
    np.testing.assert_array_equal(first, second)
    other = _model(sample_seed=1)
    other.eval()
    assert not np.allclose(_forecasts(other)[0], first)      # the seed chooses the sample


def test_training_and_an_unseeded_model_draw_a_new_sample_every_call():
    model = _model()
    first, second = _forecasts(model)                          # training mode, no dropout
    assert not np.allclose(first, second)
    unseeded = _model(sample_seed=None)
    unseeded.eval()
    first, second = _forecasts(unseeded)
    assert not np.allclose(first, second)
    lamina.manual_seed(3)
    again = unseeded(WINDOW).numpy()
    lamina.manual_seed(1)
    np.testing.assert_array_equal(unseeded(WINDOW).numpy(), first)   # then the global seed decides
    assert not np.allclose(again, first)


def test_the_sample_seed_survives_save_and_load(tmp_path):
    model = _model(sample_seed=7)
    model.eval()
    forecast = model(WINDOW).numpy()
    lamina.save(model, tmp_path / "informer.safetensors")
    loaded = lamina.load(tmp_path / "informer.safetensors")
    loaded.eval()
    assert loaded.sample_seed == 7
    np.testing.assert_allclose(loaded(WINDOW).numpy(), forecast, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_a_bad_sample_seed_is_refused(seed):
    with pytest.raises(ValueError, match="Informer: sample_seed"):
        Informer(16, 4, sample_seed=seed)
