"""BART in Hugging Face's layout: the post-norm encoder and decoder layers and the whole model
(logits and loss) against a float64 PyTorch rewrite of Hugging Face's ``modeling_bart``,
finite-difference gradients, parameter counts, cached generation, saving, a toy denoising task
and the README example."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina import data, models, optim
from lamina.nn import init

TINY = {"vocab_size": 13, "d_model": 8, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 12, "decoder_ffn_dim": 10, "max_position_embeddings": 12,
        "dropout": 0.0}


# -- a PyTorch rewrite of Hugging Face's BART, on lamina's weights (Linear kernels are (in, out)) --
def _linear(x, w, prefix):
    return x @ w[prefix + ".weight"] + w[prefix + ".bias"]


def _norm(x, w, prefix):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w[prefix + ".weight"], w[prefix + ".bias"], 1e-5)


def _attention(x, source, w, prefix, heads, mask):
    n, t, d = x.shape
    head = d // heads

    def split(y):
        return y.reshape(n, -1, heads, head).transpose(1, 2)
    q = split(_linear(x, w, prefix + ".q_proj") * head ** -0.5)
    k, v = split(_linear(source, w, prefix + ".k_proj")), split(_linear(source, w, prefix + ".v_proj"))
    scores = q @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
    return _linear(out, w, prefix + ".out_proj")


def _feed_forward(x, w, prefix):
    return _linear(torch.nn.functional.gelu(_linear(x, w, prefix + "fc1")), w, prefix + "fc2")


def torch_encoder_layer(x, w, prefix, heads, mask=None):
    h = _norm(x + _attention(x, x, w, prefix + "self_attn", heads, mask), w, prefix + "self_attn_layer_norm")
    return _norm(h + _feed_forward(h, w, prefix), w, prefix + "final_layer_norm")


def torch_decoder_layer(x, memory, w, prefix, heads, memory_mask=None):
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
    h = _norm(x + _attention(x, x, w, prefix + "self_attn", heads, causal), w, prefix + "self_attn_layer_norm")
    h = _norm(h + _attention(h, memory, w, prefix + "encoder_attn", heads, memory_mask), w,
              prefix + "encoder_attn_layer_norm")
    return _norm(h + _feed_forward(h, w, prefix), w, prefix + "final_layer_norm")


def torch_bart_logits(w, ids, decoder_ids, mask, config):
    def embed(tokens, stack):
        positions = torch.arange(tokens.shape[1]) + 2
        x = w["model.shared.weight"][tokens] + w[f"model.{stack}.embed_positions.weight"][positions]
        return _norm(x, w, f"model.{stack}.layernorm_embedding")
    key_mask = mask[:, None, None, :]
    h = embed(ids, "encoder")
    for i in range(config["encoder_layers"]):
        h = torch_encoder_layer(h, w, f"model.encoder.layers.{i}.", config["encoder_attention_heads"], key_mask)
    g = embed(decoder_ids, "decoder")
    for i in range(config["decoder_layers"]):
        g = torch_decoder_layer(g, h, w, f"model.decoder.layers.{i}.", config["decoder_attention_heads"], key_mask)
    return g @ w["model.shared.weight"].T + w["final_logits_bias"]


def _torch_weights(module):
    return {key: torch.tensor(np.asarray(value.numpy() if hasattr(value, "numpy") else value), requires_grad=True)
            for key, value in module.state_dict().items()}


def _perturbed(module, seed: int = 3):
    """``module`` (built by a first call if it is not) with every parameter moved off its start."""
    if not module.built:
        with lamina.no_grad():
            module(np.array([[4, 5]]))
    rng = np.random.default_rng(seed)
    for param in module.parameters():
        param.data = (param.data + 0.3 * rng.normal(size=param.shape)).astype(param.dtype)
    return module


def _compare_gradients(module, weights):
    """Every parameter's gradient; an absolute tolerance for the key biases, whose gradient is
    zero (softmax ignores a shift of all scores) up to rounding."""
    for key, param in module.named_parameters():
        np.testing.assert_allclose(param.grad, weights[key].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("decoder", [False, True])
def test_post_norm_layers_equal_the_torch_rewrite(f64, decoder):
    x, memory = randn(2, 5, 8), randn(2, 4, 8, seed=1)
    if decoder:
        layer = models.BartDecoderLayer(8, 2, 12, dropout=0.0)
        layer.build((2, 5, 8))
    else:
        layer = models.BartEncoderLayer(8, 2, 12, dropout=0.0)
        layer.build((2, 5, 8))
    _perturbed(layer)
    weights = _torch_weights(layer)
    xl, ml = lamina.tensor(x, requires_grad=True), lamina.tensor(memory, requires_grad=True)
    xt, mt = torch.tensor(x, requires_grad=True), torch.tensor(memory, requires_grad=True)
    if decoder:
        causal = np.where(np.arange(5)[None, :] > np.arange(5)[:, None], -1e9, 0.0)[None, None]
        ours, theirs = layer(xl, ml, lamina.tensor(causal)), torch_decoder_layer(xt, mt, weights, "", 2)
    else:
        ours, theirs = layer(xl), torch_encoder_layer(xt, weights, "", 2)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "outputs")
    up = randn(2, 5, 8, seed=4)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-9, "input gradient")
    if decoder:
        assert_close(ml.grad, mt.grad.numpy(), 1e-9, "encoder-output gradient")
    _compare_gradients(layer, weights)


def test_logits_loss_and_gradients_equal_the_torch_rewrite(f64):
    lamina.manual_seed(0)
    lm = models.BartForConditionalGeneration(**TINY)
    lm.build((2, 6))
    _perturbed(lm)
    lm.final_logits_bias = np.random.default_rng(5).normal(size=(1, 13))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 13, size=(2, 6))
    mask = np.ones((2, 6), dtype=bool)
    mask[1, 4:] = False
    labels = rng.integers(3, 13, size=(2, 5))
    labels[0, 3:] = -100
    decoder_ids = lm.shift_right(labels)
    assert decoder_ids[0, 0] == 2 and decoder_ids[0, 4] == 1 and (decoder_ids[:, 1:3] == labels[:, :2]).all()
    weights = _torch_weights(lm)
    theirs = torch_bart_logits(weights, torch.tensor(ids), torch.tensor(decoder_ids), torch.tensor(mask), TINY)
    assert_close(lm(ids, decoder_ids, mask).numpy(), theirs.detach().numpy(), 1e-10, "logits")
    expected = torch.nn.functional.cross_entropy(theirs.reshape(-1, 13), torch.tensor(labels).reshape(-1),
                                                 ignore_index=-100)
    loss = lm.loss(ids, labels, mask)
    assert_close(loss.numpy(), expected.detach().numpy(), 1e-10, "loss")
    loss.backward()
    expected.backward()
    _compare_gradients(lm, weights)


def test_tiny_model_gradients_by_finite_differences(f64):
    lamina.manual_seed(1)
    bart = models.BartModel(**{**TINY, "encoder_layers": 1, "decoder_layers": 1})
    bart.build((2, 4))
    encoder_mask = np.array([[True, True, True, True], [True, True, False, False]])

    def fn(source, target, table):
        encoded = bart.encoder(source, encoder_mask)
        states = bart.decoder(target, encoded, encoder_mask)
        return lamina.functional.matmul(states, lamina.functional.transpose(table, 1, 0))
    assert check_gradients(fn, randn(2, 4, 8), randn(2, 3, 8, seed=1), randn(5, 8, seed=2))


def test_parameter_counts_of_the_published_configs():
    """bart-base's and bart-large's trainable parameters as Hugging Face counts them (the shared
    table once, the final_logits_bias buffer not)."""
    for config, expected in (("base", 139_420_416), ("large", 406_291_456)):
        with init.meta():
            lm = models.bart(config)
            lm.build((None, 1))
        assert sum(int(np.prod(p.shape)) for p in lm.parameters()) == expected
        assert lm.final_logits_bias.shape == (1, 50265)


def test_decoding_with_the_cache_equals_the_full_decoder(f64):
    lamina.manual_seed(2)
    lm = _perturbed(models.bart("tiny", **TINY))
    ids, decoder_ids = np.array([[4, 5, 6, 7, 8], [9, 10, 11, 1, 1]]), np.array([[2, 5, 7, 9], [2, 3, 4, 4]])
    mask = ids != 1
    with lamina.no_grad():
        encoded = lm.encode(ids, mask)
        full = lm.decode(decoder_ids, encoded, mask).numpy()
        caches = [{} for _ in range(lm.num_decoder_layers)]
        steps = [lm.decode(decoder_ids[:, t:t + 1], encoded, mask, caches, t).numpy() for t in range(4)]
    assert_close(np.concatenate(steps, axis=1), full, 1e-10, "cached steps")


@pytest.mark.parametrize("beam_width", [1, 3])
def test_cached_generation_equals_uncached_generation(beam_width):
    lamina.manual_seed(3)
    lm = _perturbed(models.bart("tiny", **TINY), seed=4)
    bias = np.zeros((1, 13), dtype=np.float32)
    bias[0, 2] = -2.0                   # the start token is the end token: keep the first step from ending
    lm.final_logits_bias = bias
    ids = np.array([[4, 5, 6, 7, 8], [9, 10, 11, 1, 1], [12, 3, 1, 1, 1]])
    cached = lm.generate(ids, max_length=8, beam_width=beam_width, attention_mask=ids != 1)
    rerun = lm.generate(ids, max_length=8, beam_width=beam_width, attention_mask=ids != 1, use_cache=False)
    assert np.array_equal(cached, rerun) and (cached[:, 0] == 2).all() and cached.shape[1] > 2


def test_a_saved_model_loads_with_its_weights(tmp_path):
    lm = _perturbed(models.bart("tiny", **TINY))
    ids = np.array([[4, 5, 6, 7]])
    lm.final_logits_bias = np.arange(13, dtype=np.float32)[None] / 13
    lamina.save(lm, tmp_path / "bart.safetensors")
    twin = lamina.load(tmp_path / "bart.safetensors")
    with lamina.no_grad():
        assert np.array_equal(twin(ids).numpy(), lm(ids).numpy())
    assert twin.get_config() == lm.get_config() and np.array_equal(twin.final_logits_bias, lm.final_logits_bias)


# -- a toy denoising task -----------------------------------------------------------------
PAD, BOS, EOS, MASK, FIRST, SPAN = 1, 0, 2, 3, 4, 16        # content tokens FIRST .. FIRST + SPAN - 1
LENGTH = 10


def _corpus(rng, n):
    """Runs of consecutive tokens (mod SPAN), so that a masked span can be inferred from its ends."""
    starts = rng.integers(0, SPAN, size=n)
    return FIRST + (starts[:, None] + np.arange(LENGTH)) % SPAN


def _noised_batch(rng, n):
    originals = _corpus(rng, n)
    corrupted = [data.text_infilling(row, MASK, ratio=0.3, seed=rng) for row in originals]
    width = max(len(row) for row in corrupted) + 1
    inputs = np.full((n, width), PAD)
    for i, row in enumerate(corrupted):
        inputs[i, :len(row) + 1] = [*row, EOS]
    labels = np.concatenate([originals, np.full((n, 1), EOS)], axis=1)
    return inputs, inputs != PAD, labels, corrupted


def test_a_tiny_bart_learns_to_fill_in_masked_spans():
    rng = np.random.default_rng(0)
    lamina.manual_seed(0)
    lm = models.bart("tiny", vocab_size=FIRST + SPAN, encoder_layers=1, decoder_layers=1, dropout=0.0)
    optimizer = optim.Adam(lm, lr=3e-3)
    start = time.perf_counter()
    for _ in range(250):
        inputs, mask, labels, _ = _noised_batch(rng, 32)
        loss = lm.loss(inputs, labels, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    inputs, mask, labels, corrupted = _noised_batch(np.random.default_rng(1), 64)       # held out
    generated = lm.generate(inputs, max_length=LENGTH + 2, attention_mask=mask)[:, 1:LENGTH + 1]
    filled = np.full((64, LENGTH), PAD)
    filled[:, :generated.shape[1]] = generated
    copied = np.array([np.pad(row, (0, LENGTH))[:LENGTH] for row in corrupted])
    model_accuracy = float((filled == labels[:, :LENGTH]).mean())
    copy_accuracy = float((copied == labels[:, :LENGTH]).mean())
    print(f"infilling: loss {float(loss.numpy()):.3f}, token accuracy {model_accuracy:.3f} vs copying "
          f"{copy_accuracy:.3f}, {elapsed:.1f} s")
    assert model_accuracy > 0.9 and model_accuracy > copy_accuracy + 0.3


def test_readme_example():
    printed, names = run_readme_section("BART: denoising sequence-to-sequence")
    assert names["corrupted"].tolist().count(3) == len(names["spans"]) and "loss" in printed
    assert names["generated"].shape[0] == 2 and (names["generated"][:, 0] == 2).all()
