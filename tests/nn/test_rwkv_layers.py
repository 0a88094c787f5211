"""RWKVTimeMix and RWKVChannelMix: outputs, input and parameter gradients against PyTorch
references from the definitions (token shift, WKV sums); the parallel and recurrent forms
agree; stateful calls continue the sequence and reorder their rows; RWKV-4's initialisation;
finite differences; errors naming the layer."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from torch_linear_sequence import channel_mix_layer, compare_layer_with_torch, time_mix_layer


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.mark.parametrize("form", ["parallel", "recurrent"])
def test_time_mix_matches_torch(f64, form):
    compare_layer_with_torch(nn.RWKVTimeMix(6, layer_id=1, num_layers=3, form=form), time_mix_layer, randn(2, 7, 6))


def test_channel_mix_matches_torch(f64):
    compare_layer_with_torch(nn.RWKVChannelMix(6, hidden_dim=10, layer_id=2, num_layers=3), channel_mix_layer,
                             randn(2, 7, 6))


def test_time_mix_forms_agree_in_values_and_gradients(f64):
    layer = nn.RWKVTimeMix(6, layer_id=0, num_layers=2)
    x = randn(2, 8, 6)
    results = []
    for form in ("parallel", "recurrent"):
        layer.zero_grad()
        inputs = lamina.tensor(x, requires_grad=True)
        out = layer(inputs, form=form)
        (out * lamina.tensor(randn(2, 8, 6, seed=4))).sum().backward()
        results.append((out.numpy(), inputs.grad, {n: p.grad.copy() for n, p in layer.named_parameters()}))
    assert_close(results[1][0], results[0][0], 1e-11, "output")
    assert_close(results[1][1], results[0][1], 1e-11, "input gradient")
    for name, value in results[1][2].items():
        assert_close(value, results[0][2][name], 1e-10, name)


@pytest.mark.parametrize("make", [lambda: nn.RWKVTimeMix(6, 1, 2), lambda: nn.RWKVTimeMix(6, 1, 2, form="recurrent"),
                                  lambda: nn.RWKVChannelMix(6, layer_id=1, num_layers=2)])
def test_stateful_calls_continue_the_sequence(f64, make):
    layer = make()
    x = lamina.tensor(randn(3, 8, 6))
    whole = layer(x).numpy()
    layer.stateful = True
    pieces = [layer(x[:, :3]).numpy(), layer(x[:, 3:4]).numpy(), layer(x[:, 4:]).numpy()]
    assert_close(np.concatenate(pieces, axis=1), whole, 1e-11, "continued")
    layer.reset_states()
    layer(x[:, :3])
    layer.reorder_states(np.asarray([1, 1, 0]))
    assert_close(layer(x[[1, 1, 0], 3:]).numpy(), whole[[1, 1, 0], 3:], 1e-11, "reordered rows")


def test_initialisation_follows_rwkv4(f64):
    layer = nn.RWKVTimeMix(4, layer_id=0, num_layers=2)
    layer.build((1, 1, 4))
    np.testing.assert_allclose(layer.time_decay.numpy(), -5 + 8 * (np.arange(4) / 3) ** 0.7)
    np.testing.assert_allclose(layer.time_first.numpy(), np.log(0.3) + np.asarray([0, 0.5, -0.5, 0]))
    np.testing.assert_allclose(layer.time_mix_k.numpy(), np.arange(4) / 4)
    np.testing.assert_allclose(layer.time_mix_r.numpy(), (np.arange(4) / 4) ** 0.5)


def test_gradcheck(f64):
    for layer in (nn.RWKVTimeMix(4, 0, 1), nn.RWKVChannelMix(4, hidden_dim=6)):
        layer.build((1, 4, 4))
        assert check_gradients(layer, randn(1, 4, 4))


def test_config_and_errors():
    layer = nn.RWKVTimeMix(6, 1, 3, form="recurrent")
    assert nn.RWKVTimeMix(**layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match=r"RWKVTimeMix: layer_id must be an int in \[0, num_layers=3\)"):
        nn.RWKVTimeMix(6, 3, 3)
    with pytest.raises(ValueError, match="RWKVTimeMix: form must be one of"):
        nn.RWKVTimeMix(6, form="chunkwise")
    with pytest.raises(ShapeError, match=r"RWKVChannelMix: .*\(batch, time, 6\), got \(2, 5, 4\)"):
        nn.RWKVChannelMix(6)(lamina.tensor(randn(2, 5, 4)))
    mixer = nn.RWKVTimeMix(6)
    mixer(lamina.tensor(randn(2, 3, 6)))
    with pytest.raises(ShapeError, match=r"RWKVTimeMix: got an input of shape \(2, 3, 5\) .*\(batch, time, 6\)"):
        mixer(lamina.tensor(randn(2, 3, 5)))
    with pytest.raises(ShapeError, match=r"RWKVTimeMix: expected an input shape \(batch, time, 6\)"):
        layer.build((2, 6))
