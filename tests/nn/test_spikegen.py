"""Spike encoders (rate, latency, delta) and the decoders of spike records."""

import math

import numpy as np
import pytest

import lamina
from lamina.nn import spikegen


def test_rate_fires_at_the_intensity_within_a_binomial_bound():
    p = np.array([[0.0, 0.1, 0.5], [0.9, 1.0, 0.3]], dtype=np.float32)
    steps = 4000
    spikes = spikegen.rate(p, num_steps=steps)
    assert spikes.shape == (steps, 2, 3) and spikes.dtype == np.float32 and not spikes.requires_grad
    assert set(np.unique(spikes.numpy())) == {0.0, 1.0}
    mean = spikes.numpy().mean(axis=0)
    bound = 5 * np.sqrt(p * (1 - p) / steps)         # five standard deviations of the binomial mean
    assert np.all(np.abs(mean - p) <= bound)          # exact at p = 0 and p = 1
    steps_apart = spikes.numpy()[:, 0, 2]
    assert abs(np.corrcoef(steps_apart[1:], steps_apart[:-1])[0, 1]) < 0.1, "the steps are independent"


def test_rate_gain_offset_and_reproducibility():
    x = np.full((3,), 0.2)
    steps = 3000
    scaled = spikegen.rate(x, steps, gain=2.0, offset=0.1).numpy().mean(axis=0)   # p = 0.5
    assert np.all(np.abs(scaled - 0.5) <= 5 * math.sqrt(0.25 / steps))
    assert spikegen.rate(np.array([3.0, -1.0]), 10).numpy().tolist() == [[1.0, 0.0]] * 10   # clipped to [0, 1]
    lamina.manual_seed(5)
    first = spikegen.rate(x, 8).numpy()
    lamina.manual_seed(5)
    np.testing.assert_array_equal(first, spikegen.rate(x, 8).numpy())
    assert spikegen.rate(np.full((4, 2), 0.5)).shape == (4, 2)        # data with its time axis already


def _first_spike(spikes):
    fired = spikes > 0
    return np.where(fired.any(axis=0), fired.argmax(axis=0), len(spikes))


def test_latency_first_spike_time_follows_the_rc_formula():
    x = np.array([1.0, 0.5, 0.2, 0.05, 0.02, 0.005])
    steps, tau, threshold = 30, 20.0, 0.01
    spikes = spikegen.latency(x, steps, threshold=threshold, tau=tau).numpy()
    assert spikes.shape == (steps, 6) and np.all(spikes.sum(axis=0) == 1), "one spike per value"
    x_used = np.maximum(x, threshold + 1e-7)
    expected = np.minimum(np.rint(tau * np.log(x_used / (x_used - threshold))), steps - 1)
    np.testing.assert_array_equal(_first_spike(spikes), expected)
    assert np.all(np.diff(_first_spike(spikes)) >= 0), "larger values fire earlier"
    clipped = spikegen.latency(x, steps, threshold=threshold, tau=tau, clip=True).numpy()
    assert clipped[:, -1].sum() == 0 and np.array_equal(clipped[:, :-1], spikes[:, :-1])


def test_latency_linear_and_normalized():
    x = np.array([1.0, 0.75, 0.5, 0.25, 0.1])
    spikes = spikegen.latency(x, 10, linear=True, tau=4.0, first_spike_time=1).numpy()
    np.testing.assert_array_equal(_first_spike(spikes), np.rint(1 + 4.0 * (1 - x)))
    threshold = 0.1
    times = spikegen.latency_times(x, 10, threshold=threshold, linear=True, normalize=True)
    np.testing.assert_allclose(times, (1 - x) * 9 / (1 - threshold))
    assert times[0] == 0 and times[-1] == pytest.approx(9)            # the window spans first to last step
    rc = spikegen.latency_times(np.array([threshold + 1e-7, 0.5]), 10, threshold=threshold, normalize=True)
    assert rc[0] == pytest.approx(9)


def test_delta_spikes_on_changes():
    signal = np.array([[0.5], [0.55], [0.8], [0.3], [0.3]])
    np.testing.assert_array_equal(spikegen.delta(signal, threshold=0.2).numpy().ravel(), [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(spikegen.delta(signal, threshold=0.2, padding=True).numpy().ravel(), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(spikegen.delta(signal, threshold=0.2, off_spike=True).numpy().ravel(),
                                  [1, 0, 1, -1, 0])


def test_decoders_read_counts_rates_and_first_spikes():
    spk = np.zeros((4, 2, 3))
    spk[[0, 1, 2], 0, 1] = 1          # sample 0: class 1 fires three times from step 0
    spk[3, 0, 2] = 1
    spk[[2, 3], 1, 0] = 1             # sample 1: class 0 fires twice, class 2 once but first
    spk[1, 1, 2] = 1
    np.testing.assert_array_equal(spikegen.spike_count(spk).numpy(), [[0, 3, 1], [2, 0, 1]])
    np.testing.assert_allclose(spikegen.firing_rate(spk).numpy(), [[0, 0.75, 0.25], [0.5, 0, 0.25]])
    np.testing.assert_array_equal(spikegen.first_spike_time(spk), [[4, 0, 3], [2, 4, 1]])
    np.testing.assert_array_equal(spikegen.predict_rate(spk), [1, 0])
    np.testing.assert_array_equal(spikegen.predict_latency(spk), [1, 2])
    assert spikegen.accuracy_rate(spk, [1, 2]) == 0.5 and spikegen.accuracy_latency(spk, [1, 2]) == 1.0


def test_counts_are_differentiable():
    spk = lamina.tensor(np.random.default_rng(0).random((3, 2, 2)), requires_grad=True)
    (spikegen.spike_count(spk).sum() + spikegen.firing_rate(spk).sum()).backward()
    np.testing.assert_allclose(spk.grad, np.full((3, 2, 2), 1 + 1 / 3), rtol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rate: num_steps must be a positive int, got 0"):
        spikegen.rate(np.zeros(3), 0)
    with pytest.raises(ValueError, match="latency: normalize=True needs num_steps"):
        spikegen.latency_times(np.zeros(3), normalize=True)
    with pytest.raises(lamina.ShapeError, match=r"spike_count: expected a record \(time, batch, ...\)"):
        spikegen.spike_count(np.zeros(3))
