"""GPTQ, AWQ and SmoothQuant on whole language models (a tiny Llama trained briefly, a tiny GPT-2)."""

import copy

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import models, optim
from lamina.nn import Dense
from lamina.nn.module import intercept_calls
from lamina.nn.ptq import (
    QuantDense,
    QuantMultiHeadAttention,
    awq_quantize,
    block_output_errors,
    gptq_quantize,
    gptq_quantize_weight,
    layer_output_errors,
    perplexity,
    rtn_quantize,
    rtn_quantize_weight,
    scale_groups,
    smooth_quant,
    w8a8_quantize,
)
from lamina.nn.ptq.quant_attention import attention_heads

TEXT = "the cat sat on the mat. the dog ate the log. a bird hid in the red box. "
CHARS = sorted(set(TEXT))
IDS = np.array([CHARS.index(c) for c in TEXT * 4])


def windows(count, length, seed):
    starts = np.random.default_rng(seed).integers(0, len(IDS) - length, count)
    return np.stack([IDS[s:s + length] for s in starts])


@pytest.fixture(scope="module")
def llama():
    lamina.manual_seed(0)
    model = models.Llama(vocab_size=len(CHARS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32)
    optimizer = optim.Adam(model, lr=0.02)
    for step in range(100):
        batch = windows(8, 17, step)
        loss = F.categorical_cross_entropy(model(batch[:, :-1]), batch[:, 1:], from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


CALIBRATION = [windows(8, 16, 100 + i) for i in range(4)]
TEST = [windows(16, 17, 200 + i) for i in range(2)]


def logits(model, batches=TEST):
    with lamina.no_grad():
        return np.concatenate([model(b[:, :-1]).numpy() for b in batches])


def test_gptq_quantizes_block_after_block_on_quantized_inputs(llama):
    quantized = gptq_quantize(llama, CALIBRATION, bits=3, group_size=16, act_order=True)
    paths = [path for path, m in quantized.named_modules() if isinstance(m, QuantDense)]
    assert paths == [f"layers.{i}.mlp.{name}" for i in range(2) for name in ("gate_proj", "up_proj", "down_proj")]
    assert isinstance(quantized.lm_head, Dense) and not any(isinstance(m, QuantDense) for m in llama.modules())
    originals, layers = dict(llama.named_modules()), dict(quantized.named_modules())
    # Each layer's integers are GPTQ's for the inputs that the quantized model feeds it (the
    # quantized earlier blocks and, within a block, the quantized earlier layers).
    seen = []
    for path in ("layers.1.mlp.gate_proj", "layers.1.mlp.down_proj"):
        seen.clear()
        layer = layers[path]
        handle = layer.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].numpy()))
        for batch in CALIBRATION:
            quantized(batch)
        handle.remove()
        x = np.concatenate(seen).reshape(-1, layer.in_features).astype(np.float64)
        expected = gptq_quantize_weight(originals[path].weight.data, 2 * x.T @ x / len(x), 3, 16, act_order=True)
        np.testing.assert_array_equal(layer.quantized_weight().qweight, expected.weight.qweight)
        np.testing.assert_array_equal(layer.g_idx, expected.weight.g_idx)
    # The attention projections likewise: W_q, W_k, W_v from the layer's inputs, W_o from the
    # heads that the quantized W_q, W_k, W_v give.
    attention, original = layers["layers.1.self_attn"], originals["layers.1.self_attn"]
    assert isinstance(attention, QuantMultiHeadAttention) and not attention._parameters.get("in_weight")
    calls = []

    def catch(module, inputs, kwargs, forward):
        if module is attention:
            calls.append((inputs, kwargs))
        return forward()

    with intercept_calls(catch), lamina.no_grad():
        for batch in CALIBRATION:
            quantized(batch)
    float_attention = copy.deepcopy(original)
    float_attention.in_weight.data = attention.dequantized_projection("in_weight")
    x = np.concatenate([inputs[0].numpy().reshape(-1, 32) for inputs, _ in calls]).astype(np.float64)
    heads = np.concatenate([attention_heads(float_attention, inputs, kwargs).reshape(-1, 32)
                            for inputs, kwargs in calls]).astype(np.float64)
    for name, rows in (("in_weight", x), ("out_weight", heads)):
        expected = gptq_quantize_weight(original._parameters[name].data, 2 * rows.T @ rows / len(rows), 3, 16,
                                        act_order=True)
        np.testing.assert_array_equal(attention.quantized_projection(name).qweight, expected.weight.qweight)


def test_quantized_attention_reads_its_integers_and_generates(llama):
    quantized = rtn_quantize(llama, bits=4, group_size=16)
    attention, original = quantized.layers[0].self_attn, llama.layers[0].self_attn
    float_attention = copy.deepcopy(original)
    for name in ("in_weight", "out_weight"):
        expected = rtn_quantize_weight(original._parameters[name].data, 4, 16).dequantize(np.float32)
        np.testing.assert_allclose(attention.dequantized_projection(name), expected, rtol=1e-6)
        float_attention._parameters[name].data = expected
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)
    with lamina.no_grad():
        np.testing.assert_allclose(attention(x, causal=True).numpy(), float_attention(x, causal=True).numpy(),
                                   rtol=1e-6, atol=1e-6)
    assert "in_weight int4 group_size=16" in repr(attention)
    prompt = TEST[0][:1, :5]
    cached = quantized.generate(prompt, max_new_tokens=4)
    assert cached.shape == (1, 9)
    with lamina.no_grad():
        rerun = prompt
        for _ in range(4):
            rerun = np.concatenate([rerun, quantized(rerun).numpy()[:, -1:].argmax(-1)], axis=1)
    np.testing.assert_array_equal(cached, rerun)


def test_gptq_and_awq_keep_the_logits_closer_than_rtn(llama):
    reference = logits(llama)
    results = {}
    for bits in (4, 3):
        rtn = rtn_quantize(llama, bits, 16)
        gptq = gptq_quantize(llama, CALIBRATION, bits, 16)
        awq = awq_quantize(llama, CALIBRATION, bits, 16)
        errors = {name: np.linalg.norm(logits(m) - reference) for name, m in
                  (("rtn", rtn), ("gptq", gptq), ("awq", awq))}
        results[bits] = {name: perplexity(m, TEST) for name, m in (("rtn", rtn), ("gptq", gptq), ("awq", awq))}
        assert all(isinstance(m.layers[1].self_attn, QuantMultiHeadAttention) for m in (rtn, gptq, awq))
        assert errors["gptq"] < errors["rtn"] and errors["awq"] < errors["rtn"], errors
        blocks = {name: block_output_errors(llama, m, CALIBRATION[:2]) for name, m in
                  (("rtn", rtn), ("gptq", gptq), ("awq", awq))}
        assert all(g < 0.7 * r for g, r in zip(blocks["gptq"], blocks["rtn"])), blocks
        assert all(a < r for a, r in zip(blocks["awq"], blocks["rtn"])), blocks
    layer_errors = layer_output_errors(llama, gptq, CALIBRATION[:1])
    assert set(layer_errors) == {f"layers.{i}.mlp.{n}" for i in range(2) for n in ("gate_proj", "up_proj",
                                                                                   "down_proj")}
    assert all(0 < e < 0.5 for e in layer_errors.values())
    fp32 = perplexity(llama, TEST)
    assert fp32 < 1.5 and all(p < 1.2 * fp32 for by_method in results.values() for p in by_method.values())
    # 3-bit perplexity gaps to fp32, GPTQ's and AWQ's over RTN's: measured below 0.5 on an Intel Xeon host,
    # 0.82 and 0.78 on an AMD EPYC host (the tiny model trains to slightly different weights there)
    assert abs(results[3]["gptq"] - fp32) < abs(results[3]["rtn"] - fp32), (fp32, results)
    assert abs(results[3]["awq"] - fp32) < abs(results[3]["rtn"] - fp32), (fp32, results)


def test_smoothquant_keeps_the_model_and_w8a8_runs(llama):
    smoothed = smooth_quant(llama, CALIBRATION)
    assert not np.allclose(smoothed.layers[0].post_attention_layernorm.weight.data,
                           llama.layers[0].post_attention_layernorm.weight.data)
    np.testing.assert_allclose(logits(smoothed), logits(llama), rtol=1e-4, atol=1e-4)
    w8a8 = w8a8_quantize(smoothed)
    assert sum(type(m).__name__ == "W8A8Dense" for m in w8a8.modules()) == 6
    assert np.abs(logits(w8a8) - logits(llama)).max() < 0.5


def test_gpt2_groups_fold_into_the_norm_and_scale_the_second_linear():
    lamina.manual_seed(1)
    model = models.GPT2(vocab_size=len(CHARS), n_positions=32, n_embd=16, n_layer=1, n_head=2, embd_pdrop=0,
                        resid_pdrop=0, attn_pdrop=0).eval()
    block = model.h[0]
    groups = scale_groups(block, [block.linear1, block.linear2])
    assert [(g.previous, g.linears) for g in groups] == [(block.norm2, [block.linear1]), (None, [block.linear2])]
    quantized = awq_quantize(model, CALIBRATION, bits=4, group_size=16, n_grid=5)
    assert quantized.h[0].linear2.has_input_scale and not quantized.h[0].linear1.has_input_scale
    assert np.abs(logits(quantized) - logits(model)).max() < 0.5
    gptq = gptq_quantize(model, CALIBRATION, bits=4, group_size=16, sym=True)
    assert isinstance(gptq.h[0].linear1, QuantDense) and gptq.h[0].linear1.activation is block.linear1.activation
    assert np.abs(logits(gptq) - logits(model)).max() < 0.5


def test_model_level_errors(llama):
    with pytest.raises(ValueError, match="calibration data is empty"):
        gptq_quantize(llama, [])
    with pytest.raises(ValueError, match="calibration data is missing"):
        awq_quantize(llama, None)
    with pytest.raises(ValueError, match="bits must be one of"):
        gptq_quantize(llama, CALIBRATION, bits=6)
    with pytest.raises(ValueError, match=r"group_size 128 does not divide in_features 32"):
        gptq_quantize(llama, CALIBRATION, group_size=128)
    with pytest.raises(ValueError, match="has no ModuleList of blocks"):
        gptq_quantize(lamina.nn.Sequential([Dense(4)]), [np.zeros((1, 4))])


def test_readme_example_runs():
    run_readme_section("Post-training quantization of language models")
