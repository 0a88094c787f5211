"""SmoothQuant's and AWQ's scalings: exact in float, and lowering the quantized error."""

import numpy as np
import pytest

import lamina
from lamina.nn import Dense, LayerNorm, RMSNorm
from lamina.nn.ptq import (
    QuantDense,
    ScaleGroup,
    W8A8Dense,
    awq_clip_weight,
    awq_search_scales,
    fold_scales,
    rtn_quantize_weight,
    scale_groups,
    smooth_layer,
    smooth_scales,
)
from lamina.nn.ptq.scaling import site_weight


def built(layer, n_in, seed=0):
    lamina.manual_seed(seed)
    layer(np.zeros((1, n_in)))
    return layer


def outlier_inputs(n=256, d=32, seed=0):
    """Inputs whose channels 3 and 11 are 40 times larger than the rest, as in LLM activations."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[:, [3, 11]] *= 40
    return x


def run(layer, x):
    return layer(x).numpy()


def test_smooth_scales_formula():
    s = smooth_scales([4.0, 9.0], [1.0, 4.0], alpha=0.5)
    np.testing.assert_allclose(s, [2.0, 1.5])
    np.testing.assert_allclose(smooth_scales([8.0], [2.0], alpha=0.75), [8 ** 0.75 / 2 ** 0.25])


@pytest.mark.parametrize("norm_type", [LayerNorm, RMSNorm])
def test_smoothquant_is_exact_in_float64_and_lowers_w8a8_error(float64, norm_type):
    norm = built(norm_type(), 32)
    norm.weight.data = np.where(np.isin(np.arange(32), [3, 11]), 40.0, 1.0)   # outlier channels after the norm
    if norm_type is LayerNorm:
        norm.bias.data = np.random.default_rng(5).standard_normal(32)
    linears = [built(Dense(16), 32, seed=1), built(Dense(8), 32, seed=2)]
    x = np.random.default_rng(0).standard_normal((64, 32))
    hidden = run(norm, x)
    before = [run(layer, hidden) for layer in linears]
    w8a8_before = [run(W8A8Dense(layer), hidden) for layer in linears]
    s = smooth_layer(norm, linears, np.abs(hidden).max(axis=0))
    assert s[3] > 3 * np.median(s)
    smoothed = run(norm, x)
    for layer, y, y8 in zip(linears, before, w8a8_before):
        np.testing.assert_allclose(run(layer, smoothed), y, rtol=1e-12, atol=1e-12)
        error_before = np.linalg.norm(y8 - y)
        error_after = np.linalg.norm(run(W8A8Dense(layer), smoothed) - y)
        assert error_after < 0.5 * error_before


def awq_setup(seed=0):
    norm = built(RMSNorm(), 32)
    norm.weight.data = np.where(np.isin(np.arange(32), [3, 11]), 40.0, 1.0)
    linears = [built(Dense(16, use_bias=False), 32, seed=1), built(Dense(16, use_bias=False), 32, seed=2)]
    x = np.random.default_rng(seed).standard_normal((128, 32))
    return norm, linears, x


def test_awq_scales_leave_float_outputs_unchanged_and_lower_the_quantized_error(float64):
    norm, linears, x = awq_setup()
    group = ScaleGroup("pair", linears, norm)
    hidden = run(norm, x)
    reference = [run(layer, hidden) for layer in linears]
    rtn_error = sum(np.linalg.norm(hidden @ rtn_quantize_weight(layer.weight.data, 3, 8).dequantize(np.float64) - y)
                    for layer, y in zip(linears, reference))
    s, errors = awq_search_scales(group, [hidden[:64], hidden[64:]], bits=3, group_size=8)
    assert len(errors) == 20 and min(errors) < 0.9 * errors[0]        # alpha = 0 is round-to-nearest
    fold_scales(group, s)
    scaled = run(norm, x)
    for layer, y in zip(linears, reference):
        np.testing.assert_allclose(run(layer, scaled), y, rtol=1e-12, atol=1e-12)
    awq_error = sum(np.linalg.norm(run(QuantDense.from_dense(layer, 3, 8), scaled) - y)
                    for layer, y in zip(linears, reference))
    assert awq_error < 0.9 * rtn_error


def test_awq_input_scale_without_an_op_to_fold_into(float64):
    layer = built(Dense(8), 32, seed=3)
    x = outlier_inputs()
    reference = run(layer, x)
    rtn_error = np.linalg.norm(run(QuantDense.from_dense(layer, 4, 16), x) - reference)
    group = ScaleGroup("alone", [layer])
    s, _ = awq_search_scales(group, [x], bits=4, group_size=16)
    fold_scales(group, s)
    np.testing.assert_allclose(run(layer, x / s), reference, rtol=1e-12, atol=1e-12)
    quant = QuantDense.from_dense(layer, 4, 16, input_scale=s)
    assert np.linalg.norm(run(quant, x) - reference) < 0.9 * rtn_error


def test_awq_clip_lowers_each_groups_error():
    rng = np.random.default_rng(4)
    weight = rng.standard_t(2, (32, 8))                                  # heavy tails: a few large weights
    x = rng.standard_normal((200, 32))
    clipped = awq_clip_weight(weight, x, bits=3, group_size=16)
    assert not np.array_equal(clipped, weight) and (np.abs(clipped) <= np.abs(weight) + 1e-12).all()
    for g in (slice(0, 16), slice(16, 32)):
        error_plain = np.linalg.norm(x[:, g] @ (rtn_quantize_weight(weight[g], 3, 16).dequantize(np.float64)
                                                - weight[g]), axis=0)
        error_clip = np.linalg.norm(x[:, g] @ (rtn_quantize_weight(clipped[g], 3, 16).dequantize(np.float64)
                                               - weight[g]), axis=0)
        assert (error_clip <= error_plain + 1e-9).all() and error_clip.sum() < error_plain.sum()


def test_scaling_errors():
    with pytest.raises(ValueError, match="alpha must be in"):
        smooth_scales([1.0], [1.0], alpha=1.5)
    with pytest.raises(ValueError, match="expected a norm and a non-empty list of Dense layers"):
        smooth_layer(built(Dense(4), 4), [built(Dense(4), 4)], np.ones(4))
    with pytest.raises(ValueError, match="no calibration inputs"):
        awq_search_scales(ScaleGroup("empty", [built(Dense(4), 4)]), [])


def test_w8a8_dense_matches_torch_fake_quantization(float64):
    import torch

    layer = built(Dense(6, activation="relu"), 16, seed=6)
    x = outlier_inputs(10, 16, seed=7)
    w, b = torch.tensor(layer.weight.data), torch.tensor(layer.bias.data)
    w_scale = w.abs().amax(dim=0, keepdim=True).clamp(min=1e-5) / 127
    t = torch.tensor(x)
    x_scale = t.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5) / 127
    expected = torch.relu((t / x_scale).round() * x_scale @ ((w / w_scale).round() * w_scale) + b)
    np.testing.assert_allclose(run(W8A8Dense(layer), x), expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_folding_into_norms_values_and_linears_keeps_a_block_exactly(float64, kind):
    from lamina.models import GPT2Block, LlamaDecoderLayer

    lamina.manual_seed(8)
    if kind == "llama":
        block = LlamaDecoderLayer(16, 4, 24)
        attention = block.self_attn
    else:
        block = GPT2Block(16, 4, resid_pdrop=0.0, attn_pdrop=0.0)
        attention = block.self_attention
    block.eval()
    x = np.random.default_rng(9).standard_normal((2, 5, 16))
    block(x)
    rng = np.random.default_rng(10)
    for module in block.modules():
        for param in module._parameters.values():             # biases and norm weights away from 0 and 1
            param.data = param.data + 0.1 * rng.standard_normal(param.data.shape)
    reference = block(x).numpy()
    sites = [(attention, "in_weight"), (attention, "out_weight")] + [
        m for m in block.modules() if type(m) is Dense]
    groups = scale_groups(block, sites)
    assert {g.name: type(g.previous).__name__ for g in groups}["attention.out_weight"] == "tuple"
    for group in groups:
        if group.scalable and group.previous is not None:
            fold_scales(group, rng.uniform(0.3, 3.0, site_weight(group.linears[0]).shape[0]))
    np.testing.assert_allclose(block(x).numpy(), reference, rtol=1e-10, atol=1e-12)
