"""Spiking neurons over T steps against PyTorch versions written as snnTorch steps them (values
and gradients of the weights, beta and the threshold, float64), their true-derivative parts
against finite differences, the one-step API, configurations and errors."""

import json

import numpy as np
import pytest

import lamina
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import functional as F
from lamina import nn
from spiking_checks import torch_leaky, torch_spike

STEPS, BATCH, FEATURES, UNITS = 7, 3, 4, 5


def _inputs(seed=0):
    """x (T, batch, features), a weight and a bias giving currents that cross the threshold often."""
    return randn(STEPS, BATCH, FEATURES, seed=seed), randn(FEATURES, UNITS, seed=seed + 1, scale=0.8), \
        randn(UNITS, seed=seed + 2, scale=0.3)


def _compare(neuron, torch_neuron, extra: dict, learn: list[bool], seed=0):
    """compare_with_torch on x, W, b and the neuron's ``extra`` values (name -> array), the
    lamina network being SpikingSequential(Dense, neuron) called with those values."""
    x, w, b = _inputs(seed)
    net = nn.SpikingSequential(nn.Dense(UNITS, name="fc"), neuron)
    spk, mem = net(x)
    assert 0 < spk.numpy().mean() < 1, "the test needs some spikes and some silence"
    names = ["fc.weight", "fc.bias", *(f"{neuron.name}.{key}" for key in extra)]

    def ours(x, *values):
        spk, mem = nn.functional_call(net, dict(zip(names, values)), x)
        return [spk, mem]

    def theirs(x, w, b, *values):
        return list(torch_neuron(x @ w + b, *values))

    compare_with_torch(ours, theirs, x, w, b, *extra.values(), dtype=np.float64, grad=[True, True, True, *learn])


@pytest.mark.parametrize("learn", [False, True], ids=["fixed", "learned"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_leaky_over_time_matches_torch(reset, learn):
    beta = np.array([0.5, 0.9, 0.7, 0.95, 0.8])
    spike = torch_spike("fast_sigmoid", slope=5.0)
    lif = nn.Leaky(beta=beta, threshold=0.6, spike_grad=F.surrogate("fast_sigmoid", slope=5), reset_mechanism=reset,
                   learn_beta=learn, learn_threshold=learn, name="lif")
    _compare(lif, lambda i, beta, thr: torch_leaky(i, beta, thr, spike, reset, clamp_beta=learn),
             {"beta": beta, "threshold": np.array(0.6)}, [learn, learn])


def test_attached_reset_matches_torch():
    spike = torch_spike("atan", alpha=2.0)
    lif = nn.Leaky(beta=0.8, threshold=0.7, learn_beta=True, learn_threshold=True, detach_reset=False, name="lif")
    _compare(lif, lambda i, beta, thr: torch_leaky(i, beta, thr, spike, clamp_beta=True, detach=False),
             {"beta": np.array(0.8), "threshold": np.array(0.7)}, [True, True], seed=3)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_synaptic_matches_torch(reset):
    spike = torch_spike("sigmoid", slope=4.0)
    neuron = nn.Synaptic(alpha=0.6, beta=0.85, threshold=0.8, spike_grad=F.surrogate("sigmoid", slope=4),
                         reset_mechanism=reset, learn_alpha=True, learn_beta=True, name="syn")
    _compare(neuron, lambda i, alpha, beta, thr: torch_leaky(i, beta, thr, spike, reset, clamp_beta=True,
                                                             alpha=alpha.clamp(0, 1)),
             {"alpha": np.array(0.6), "beta": np.array(0.85), "threshold": np.array(0.8)}, [True, True, False], seed=6)


def test_recurrent_all_to_all_matches_torch():
    spike = torch_spike("triangular", width=1.0)
    neuron = nn.RLeaky(beta=0.75, spike_grad="triangular", name="rlif")
    v, bias = randn(UNITS, UNITS, seed=11, scale=0.5), randn(UNITS, seed=12, scale=0.1)
    _compare(neuron, lambda i, beta, v, bias: torch_leaky(i, beta, 1.0, spike, recurrent=lambda s: s @ v + bias),
             {"beta": np.array(0.75), "V": v, "bias": bias}, [False, True, True], seed=9)


def test_recurrent_one_to_one_matches_torch():
    spike = torch_spike("atan", alpha=2.0)
    neuron = nn.RLeaky(beta=0.9, V=[0.5, -0.4, 0.3, 0.2, -0.1], all_to_all=False, threshold=0.5, name="rlif")
    _compare(neuron, lambda i, beta, v: torch_leaky(i, beta, 0.5, spike, recurrent=lambda s: v * s),
             {"beta": np.array(0.9), "V": np.array([0.5, -0.4, 0.3, 0.2, -0.1])}, [False, True], seed=12)


def test_second_derivatives_through_time_match_torch():
    """Gradients of gradients through the recurrence are those of the surrogates (atan here)."""
    x, w, b = _inputs(seed=14)
    net = nn.SpikingSequential(nn.Dense(UNITS, name="fc"), nn.Leaky(beta=0.8, threshold=0.6, name="lif"))
    net(x)
    spike = torch_spike("atan", alpha=2.0)

    def ours(x, w, b, beta, thr):
        spk, mem = nn.functional_call(net, {"fc.weight": w, "fc.bias": b, "lif.beta": beta, "lif.threshold": thr}, x)
        return spk + mem * mem

    def theirs(x, w, b, beta, thr):
        spk, mem = torch_leaky(x @ w + b, beta, thr, spike, clamp_beta=True)
        return spk + mem * mem

    compare_double_backward_with_torch(ours, theirs, x, w, b, np.array(0.8), np.array(0.6))


GRADCHECK_NEURONS = {  # name -> (neuron, the values checked)
    "leaky_subtract": (lambda: nn.Leaky(beta=0.8, threshold=0.5, name="n"), {"beta": 0.8, "threshold": 0.5}),
    "leaky_zero": (lambda: nn.Leaky(beta=0.8, threshold=0.5, reset_mechanism="zero", name="n"),
                   {"beta": 0.8, "threshold": 0.5}),
    "synaptic": (lambda: nn.Synaptic(alpha=0.5, beta=0.8, threshold=0.5, name="n"),
                 {"alpha": 0.5, "beta": 0.8, "threshold": 0.5}),
    "lapicque": (lambda: nn.Lapicque(R=2.0, C=1.0, threshold=0.5, name="n"), {"threshold": 0.5}),
}


@pytest.mark.parametrize("case", list(GRADCHECK_NEURONS))
def test_membrane_potential_passes_a_gradient_check(case):
    """With the reset cut from the graph the potential is piecewise smooth in the input, the decays
    and the threshold, and its autograd gradient is the true one (no surrogate is involved)."""
    make, values = GRADCHECK_NEURONS[case]
    net = nn.SpikingSequential(make())
    x = randn(6, 2, 3, seed=20)
    assert net(x)[0].numpy().sum() > 3, "the test needs resets"
    names = [f"n.{key}" for key in values]

    def potential(x, *values):
        return nn.functional_call(net, dict(zip(names, values)), x)[1]

    assert check_gradients(potential, x, *(np.array(v) for v in values.values()))


def test_steps_by_hand_give_the_sequence_records():
    x = randn(5, 2, 3, seed=30)
    lif = nn.Leaky(beta=0.7, threshold=0.4)
    spk_rec, mem_rec = nn.SpikingSequential(lif)(x)
    mem = lif.init_leaky()
    for t in range(5):
        spk, mem = lif(x[t], mem)
        np.testing.assert_array_equal(spk.numpy(), spk_rec.numpy()[t])
        np.testing.assert_allclose(mem.numpy(), mem_rec.numpy()[t], rtol=1e-6)
    syn = nn.Synaptic(alpha=0.5, beta=0.7)
    spk, syn_state, mem = syn(x[0], *syn.init_synaptic())
    np.testing.assert_allclose(mem.numpy(), x[0], rtol=1e-6)       # from zeros: syn = mem = x
    rlif = nn.RLeaky(beta=0.7, all_to_all=False)
    spk, mem = rlif(x[0], *rlif.init_rleaky())
    assert spk.shape == mem.shape == (2, 3)


def test_lapicque_is_an_rc_circuit():
    x = np.abs(randn(6, 2, 3, seed=40))
    r, c, dt = 2.0, 4.0, 0.5
    spk, mem = nn.SpikingSequential(nn.Lapicque(R=r, C=c, time_step=dt, threshold=0.3))(x)
    u, expected = np.zeros((2, 3)), []
    for t in range(6):
        u = (1 - dt / (r * c)) * u + dt / c * x[t] - (u > 0.3) * 0.3
        expected.append(u)
    np.testing.assert_allclose(mem.numpy(), np.stack(expected), rtol=1e-5)
    given_beta = nn.Lapicque(beta=0.75, R=2.0)
    assert given_beta.C == pytest.approx(1.0 / (2.0 * 0.25)) and given_beta.beta.item() == pytest.approx(0.75)


def test_convolutional_network_runs_over_time():
    net = nn.SpikingSequential(nn.Conv2D(3, 3, padding="same"), nn.Leaky(beta=0.9), nn.Flatten(), nn.Dense(4),
                               nn.Leaky(beta=0.9))
    spk, mem = net(np.random.default_rng(0).random((5, 2, 6, 6, 1)))
    assert spk.shape == mem.shape == (5, 2, 4)
    assert net.compute_output_shape((5, 2, 6, 6, 1)) == [(5, 2, 4), (5, 2, 4)]
    assert set(np.unique(spk.numpy())) <= {0.0, 1.0}
    empty_spk, empty_mem = net(np.zeros((0, 2, 6, 6, 1)))     # a sequence of no steps: empty records
    assert empty_spk.shape == empty_mem.shape == (0, 2, 4)


def test_configuration_round_trip_keeps_the_network():
    net = nn.SpikingSequential(nn.Dense(UNITS), nn.Synaptic(alpha=0.5, beta=[0.6, 0.7, 0.8, 0.9, 1.0]),
                               nn.Dense(3), nn.RLeaky(beta=0.8, spike_grad=F.surrogate("fast_sigmoid", slope=9)),
                               nn.Lapicque(R=2.0, C=3.0, reset_mechanism="zero"))
    x = randn(4, 2, FEATURES, seed=50)
    spk, mem = net(x)
    again = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(net))))
    again(x)
    again.load_state_dict(net.state_dict())
    spk2, mem2 = again(x)
    np.testing.assert_array_equal(spk.numpy(), spk2.numpy())
    np.testing.assert_allclose(mem.numpy(), mem2.numpy(), rtol=1e-6)
    assert again.layers[3].spike_grad == F.surrogate("fast_sigmoid", slope=9)


def test_learnable_values_are_parameters():
    lif = nn.Leaky(beta=0.9, learn_beta=True)
    assert [name for name, _ in lif.named_parameters(trainable_only=True)] == ["beta"]
    assert len(nn.Leaky(beta=0.9).parameters(trainable_only=True)) == 0


def test_bad_values_are_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"Leaky: beta must lie in \[0, 1\], got 1.5"):
        nn.Leaky(beta=1.5)
    with pytest.raises(ValueError, match=r"Synaptic: alpha must lie in \[0, 1\], got -0.1"):
        nn.Synaptic(alpha=-0.1, beta=0.5)
    with pytest.raises(ValueError, match=r"RLeaky: beta must lie in \[0, 1\], got \[0.5, 2.0\]"):
        nn.RLeaky(beta=[0.5, 2.0])
    with pytest.raises(ValueError, match=r"Leaky 'lif': threshold must lie in \(0, inf\), got 0"):
        nn.Leaky(beta=0.5, threshold=0, name="lif")
    with pytest.raises(ValueError, match=r"Leaky: threshold must lie in \(0, inf\), got -1.0"):
        nn.Leaky(beta=0.5, threshold=-1.0)
    with pytest.raises(ValueError, match=r"reset_mechanism must be one of \('subtract', 'zero', 'none'\)"):
        nn.Leaky(beta=0.5, reset_mechanism="hard")
    with pytest.raises(ValueError, match="spike_grad must be one of"):
        nn.Leaky(beta=0.5, spike_grad="relu")
    with pytest.raises(ValueError, match="Lapicque: time_step / \\(R C\\) = 2 must be at most 1"):
        nn.Lapicque(R=1.0, C=0.5)


def test_bad_inputs_are_refused_naming_the_layer():
    net = nn.SpikingSequential(nn.Dense(3), nn.Leaky(beta=0.9), name="snn")
    with pytest.raises(lamina.ShapeError, match=r"SpikingSequential 'snn': got an input of shape \(8, 4\) "
                                                r"\(float32\); expected a sequence \(time, batch, features...\)"):
        net(np.zeros((8, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="SpikingSequential: the last layer must be a spiking neuron .* got Dense"):
        nn.SpikingSequential(nn.Leaky(beta=0.9), nn.Dense(3))
    lif = nn.Leaky(beta=[0.5, 0.6, 0.7], name="lif")
    with pytest.raises(lamina.ShapeError, match=r"Leaky 'lif': got an input of shape \(2, 4\) .* per-neuron values "
                                                r"of shape \(3,\)"):
        lif(np.zeros((2, 4)))
    with pytest.raises(lamina.ShapeError, match=r"Leaky 'lif': the state mem has shape \(2, 2\) .* expected the "
                                                r"input's shape \(2, 3\)"):
        lif(np.zeros((2, 3)), np.zeros((2, 2)))
