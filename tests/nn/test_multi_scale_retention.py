"""MultiScaleRetention: outputs, input and parameter gradients against a PyTorch reference of
the paper's parallel form (rotations, decay mask, group norm, swish gate); the parallel,
recurrent and chunkwise forms agree to 1e-10 in values and gradients; stateful calls continue
the sequence and reorder their rows; finite differences; errors naming the layer."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from torch_linear_sequence import compare_layer_with_torch, retention_layer


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layer(**options):
    layer = nn.MultiScaleRetention(8, num_heads=2, chunk_size=3, **options)
    layer.build((2, 9, 8))
    rng = np.random.default_rng(1)              # a norm affine away from (1, 0), so it is tested
    layer.norm_weight.data = layer.norm_weight.data + 0.3 * rng.standard_normal(layer.norm_weight.shape)
    layer.norm_bias.data = layer.norm_bias.data + 0.3 * rng.standard_normal(layer.norm_bias.shape)
    return layer


@pytest.mark.parametrize("form", ["parallel", "recurrent", "chunkwise"])
def test_matches_the_torch_parallel_form(f64, form):
    compare_layer_with_torch(_layer(form=form, use_bias=form == "chunkwise"), retention_layer(2), randn(2, 9, 8))


def test_forms_agree_to_1e10_in_values_and_gradients(f64):
    layer = _layer()
    x = randn(2, 9, 8)
    results = []
    for form in ("parallel", "recurrent", "chunkwise"):
        layer.zero_grad()
        inputs = lamina.tensor(x, requires_grad=True)
        out = layer(inputs, form=form)
        (out * lamina.tensor(randn(2, 9, 8, seed=3))).sum().backward()
        results.append((out.numpy(), inputs.grad, {n: p.grad.copy() for n, p in layer.named_parameters()}))
    for out, grad, params in results[1:]:
        assert_close(out, results[0][0], 1e-10, "output")
        assert_close(grad, results[0][1], 1e-10, "input gradient")
        for name, value in params.items():
            assert_close(value, results[0][2][name], 1e-10, name)


@pytest.mark.parametrize("form", ["parallel", "recurrent", "chunkwise"])
def test_stateful_calls_continue_the_sequence(f64, form):
    layer = _layer(form=form)
    x = lamina.tensor(randn(3, 9, 8))
    whole = layer(x).numpy()
    layer.stateful = True
    pieces = [layer(x[:, :4]).numpy(), layer(x[:, 4:5]).numpy(), layer(x[:, 5:]).numpy()]
    assert_close(np.concatenate(pieces, axis=1), whole, 1e-10, "continued")
    layer.reset_states()
    layer(x[:, :4])
    layer.reorder_states(np.asarray([2, 0]))
    assert_close(layer(x[[2, 0], 4:]).numpy(), whole[[2, 0], 4:], 1e-10, "reordered rows")
    with pytest.raises(ShapeError, match="MultiScaleRetention: stateful layer carries states for a batch of 2"):
        layer(x[:, 4:])


def test_gradcheck(f64):
    layer = _layer(form="chunkwise")
    assert check_gradients(layer, randn(1, 5, 8, scale=0.5))


def test_decays_config_and_errors():
    np.testing.assert_allclose(nn.MultiScaleRetention(8, 2).decays, [1 - 1 / 32, 1 - 1 / 64])
    layer = nn.MultiScaleRetention(8, 2, value_factor=1, form="chunkwise", chunk_size=5)
    assert nn.MultiScaleRetention(**layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="MultiScaleRetention: embed_dim 6 must split into num_heads 2 heads of an "
                                         "even number of features .* got 3 per head"):
        nn.MultiScaleRetention(6, 2)
    with pytest.raises(ValueError, match="MultiScaleRetention: form must be one of"):
        nn.MultiScaleRetention(8, 2, form="quadratic")
    with pytest.raises(ShapeError, match=r"MultiScaleRetention: .*\(batch, time, 8\), got \(2, 8\)"):
        layer(lamina.tensor(randn(2, 8)))
    with pytest.raises(ValueError, match="reorder_states needs a stateful layer"):
        layer.reorder_states(np.asarray([0]))
