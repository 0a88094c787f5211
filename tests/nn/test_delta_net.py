"""DeltaNet, GatedDeltaNet and GatedLinearAttention layers: outputs, input and parameter
gradients against PyTorch rewrites of the papers' layers with loops over the steps (float64,
1e-10); chunkwise == recurrent forms; a sequence read in pieces with the returned state gives
the outputs of one call; causality; finite differences; config round trips; errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, perturb_parameters, randn, run_readme_section
from lamina import nn
from lamina.errors import ShapeError
from torch_delta_rule import delta_net_layer, gla_layer
from torch_linear_sequence import compare_layer_with_torch


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


LAYERS = {
    "deltanet": (lambda **o: nn.DeltaNet(8, 2, chunk_size=3, conv_size=3, **o), delta_net_layer(2)),
    "deltanet-gate-noconv": (lambda **o: nn.DeltaNet(8, 2, use_short_conv=False, use_gate=True, chunk_size=4, **o),
                             delta_net_layer(2, use_short_conv=False, use_gate=True)),
    "gated": (lambda **o: nn.GatedDeltaNet(8, 2, chunk_size=3, **o), delta_net_layer(2, gated=True)),
    "gla": (lambda **o: nn.GatedLinearAttention(8, 2, gate_low_rank_dim=3, chunk_size=4, **o), gla_layer(2)),
    "gla-conv": (lambda **o: nn.GatedLinearAttention(8, 4, gate_logit_normalizer=2.0, use_short_conv=True,
                                                     chunk_size=5, **o),
                 gla_layer(4, normalizer=2.0, use_short_conv=True)),
}


def _layer(name: str, **options):
    layer = LAYERS[name][0](**options)
    layer.build((2, 9, 8))
    perturb_parameters(layer, seed=1)              # norm weights away from ones, so they are tested
    return layer


@pytest.mark.parametrize("form", ["chunkwise", "recurrent"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_matches_the_torch_layer(f64, name, form):
    compare_layer_with_torch(_layer(name, form=form), LAYERS[name][1], randn(2, 9, 8))


@pytest.mark.parametrize("name", ["deltanet", "gated", "gla"])
def test_chunkwise_and_recurrent_forms_agree_in_float32(name):
    layer = _layer(name)
    x = lamina.tensor(randn(2, 13, 8))
    chunked = layer(x).numpy()
    layer.form = "recurrent"
    assert_close(layer(x).numpy(), chunked, 1e-5, "recurrent")


@pytest.mark.parametrize("name", list(LAYERS))
def test_reading_in_pieces_with_the_state_gives_the_whole_sequence(f64, name):
    layer = _layer(name)
    x = lamina.tensor(randn(3, 10, 8))
    whole, last = layer(x, return_state=True)
    pieces, state = [], None
    for part in (slice(0, 4), slice(4, 5), slice(5, 6), slice(6, 10)):
        out, state = layer(x[:, part], state=state, return_state=True)
        pieces.append(out.numpy())
    assert_close(np.concatenate(pieces, axis=1), whole.numpy(), 1e-10, "pieces")
    for a, b in zip(state, last):
        assert_close(a.numpy(), b.numpy(), 1e-10, "state")


@pytest.mark.parametrize("name", ["deltanet", "gla"])
def test_causal(name):
    layer = _layer(name)
    x = randn(2, 9, 8)
    later = x.copy()
    later[:, 6:] += 1.0
    before, after = layer(lamina.tensor(x)).numpy(), layer(lamina.tensor(later)).numpy()
    assert_close(after[:, :6], before[:, :6], 1e-6, "earlier outputs")
    assert np.abs(after[:, 6:] - before[:, 6:]).max() > 1e-3


@pytest.mark.parametrize("name", ["deltanet", "gated", "gla-conv"])
def test_gradcheck(f64, name):
    assert check_gradients(_layer(name), randn(1, 5, 8, scale=0.5))


def test_initial_gates_and_parameter_shapes():
    layer = nn.GatedDeltaNet(8, 2)
    layer.build((1, 3, 8))
    assert layer.conv_weight.shape == (24, 4) and layer.norm_weight.shape == (4,)
    rates = np.exp(layer.A_log.numpy())
    assert ((rates > 0) & (rates <= 16)).all()
    steps = np.log1p(np.exp(layer.dt_bias.numpy()))                # softplus(dt_bias)
    assert ((steps >= 1e-3 - 1e-9) & (steps <= 0.1 + 1e-9)).all()
    gla = nn.GatedLinearAttention(8, 2)
    gla(lamina.tensor(randn(1, 3, 8)))
    assert not gla.use_short_conv and gla.gate_down.weight.shape == (8, 16) and gla.gate_up.weight.shape == (16, 8)


@pytest.mark.parametrize("name", list(LAYERS))
def test_config_round_trip(name):
    layer = LAYERS[name][0]()
    twin = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(twin) is type(layer) and twin.get_config() == layer.get_config()


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="DeltaNet: embed_dim 10 is not divisible by num_heads 3"):
        nn.DeltaNet(10, 3)
    with pytest.raises(ValueError, match="GatedLinearAttention: embed_dim 6 is not divisible by num_heads 4"):
        nn.GatedLinearAttention(6, 4)
    with pytest.raises(ValueError, match="GatedDeltaNet: form must be one of"):
        nn.GatedDeltaNet(8, 2, form="parallel")
    layer = nn.DeltaNet(8, 2)
    x = lamina.tensor(randn(2, 5, 8))
    _, (history, memory) = layer(x, return_state=True)
    with pytest.raises(ShapeError, match=r"DeltaNet.*: state of shapes \(2, 3, 24\) and \(2, 2, 4, 3\) for a batch "
                                         r"of 2; expected .* \(2, 3, 24\) and \(N, H, d, d\) = \(2, 2, 4, 4\)"):
        layer(x, state=(history, memory[..., :3]))
    with pytest.raises(TypeError, match="DeltaNet.*: state must be a pair"):
        layer(x, state=memory)
    with pytest.raises(ShapeError, match=r"DeltaNet.*: got an input of shape \(2, 5\)"):
        layer(lamina.tensor(randn(2, 5)))


def test_readme_section():
    printed, _ = run_readme_section("DeltaNet, Gated DeltaNet and gated linear attention")
    assert printed.split("\n") == ["True", "(3, 12, 16) (3, 2, 8, 8)", "True", ""]
