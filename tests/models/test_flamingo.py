"""Flamingo's Perceiver resampler and gated cross-attention blocks against float64 torch
rewrites of the published formulas (values, and gradients of inputs and every weight), their
media masking, a frozen language model left exactly unchanged at the start, and a tiny
captioner of coloured squares trained through the new parts only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, run_readme_section
from lamina import functional as F
from lamina import models, nn
from lamina.backend import manual_seed
from lamina.errors import ShapeError
from lamina.models import Flamingo, GatedCrossAttentionBlock, PerceiverResampler, media_attention_mask


# -- torch rewrites ----------------------------------------------------------------------
def _t_norm(x, p, prefix):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), p[f"{prefix}.weight"], p[f"{prefix}.bias"], 1e-5)


def _t_ff(x, p, prefix):
    return torch.nn.functional.gelu(_t_norm(x, p, f"{prefix}.norm") @ p[f"{prefix}.hidden.weight"]) \
        @ p[f"{prefix}.out.weight"]


def _t_attention(q, k, v, heads, allowed=None):
    """softmax(Q K^T / sqrt(d)) V per head; ``allowed`` (N, T_q, T_k) bool, rows with no True
    key give 0 (the reference's fill with -max, then zeroing)."""
    n, tq, width = q.shape
    d = width // heads
    split = [t.reshape(n, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v)]
    scores = split[0] @ split[1].transpose(-1, -2) / d ** 0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, None], -torch.finfo(scores.dtype).max)
    weights = scores.softmax(-1)
    if allowed is not None:
        weights = weights.masked_fill(~allowed.any(-1)[:, None, :, None], 0.0)
    return (weights @ split[2]).transpose(1, 2).reshape(n, tq, -1)


def _t_resampler(x, p, depth, heads):
    if x.ndim == 5:
        n, m, frames, s, d = x.shape
        x = (x + p["frame_embeddings"][:frames][None, None, :, None]).reshape(n, m, frames * s, d)
    n, m, s, d = x.shape
    x = x.reshape(n * m, s, d)
    z = p["latents"].expand(n * m, *p["latents"].shape)
    for i in range(depth):
        pre = f"layers.{i}"
        xn, zn = _t_norm(x, p, f"{pre}.norm_media"), _t_norm(z, p, f"{pre}.norm_latents")
        kv = torch.cat([xn, zn], dim=1)
        z = z + _t_attention(zn @ p[f"{pre}.to_q.weight"], kv @ p[f"{pre}.to_k.weight"],
                             kv @ p[f"{pre}.to_v.weight"], heads) @ p[f"{pre}.to_out.weight"]
        z = z + _t_ff(z, p, f"{pre}.ff")
    return _t_norm(z, p, "norm").reshape(n, m, z.shape[1], d)


def _t_gated(x, media, locations, p, heads):
    n, m, tokens, _ = media.shape
    count = torch.cumsum(torch.as_tensor(locations, dtype=torch.int64), dim=1)
    allowed = count[:, :, None] == torch.arange(1, m + 1).repeat_interleave(tokens)[None, None]
    flat = media.reshape(n, m * tokens, -1)
    attended = _t_attention(_t_norm(x, p, "norm") @ p["to_q.weight"], flat @ p["to_k.weight"],
                            flat @ p["to_v.weight"], heads, allowed) @ p["to_out.weight"]
    x = x + torch.tanh(p["attn_gate"]) * attended
    return x + torch.tanh(p["ff_gate"]) * _t_ff(x, p, "ff") * allowed.any(-1, keepdim=True)


def _compare(layer, lamina_call, torch_call, arrays, rng):
    """Values and gradients (inputs and every parameter) of ``layer`` against a torch rewrite."""
    ours = [lamina.tensor(a, requires_grad=True) for a in arrays]
    out = lamina_call(*ours)
    params = dict(layer.named_parameters())
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    torch_params = {k: torch.tensor(v.numpy(), requires_grad=True) for k, v in params.items()}
    expected = torch_call(*theirs, torch_params)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = rng.normal(size=out.shape)
    layer.zero_grad()
    F.sum(out * lamina.tensor(upstream)).backward()
    (expected * torch.tensor(upstream)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=f"input {k}")
    for name, p in params.items():
        np.testing.assert_allclose(p.grad, torch_params[name].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def _set_gates(block, attn=0.7, ff=-0.4):
    block.attn_gate.data = np.array([attn], dtype=block.attn_gate.dtype)
    block.ff_gate.data = np.array([ff], dtype=block.ff_gate.dtype)


# text of 7 tokens with images marked at positions 2 and 5: tokens 0, 1 precede any image
LOCATIONS = np.array([[0, 0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 0, 0]], dtype=bool)


# -- the layers ----------------------------------------------------------------------------
def test_resampler_matches_torch_rewrite(f64):
    rng = np.random.default_rng(0)
    layer = PerceiverResampler(6, depth=2, num_latents=3, num_heads=2, ff_mult=2)
    x = rng.normal(size=(2, 2, 5, 6))
    assert layer(x).shape == (2, 2, 3, 6)
    _compare(layer, layer, lambda x, p: _t_resampler(x, p, 2, 2), [x], rng)


def test_resampler_adds_a_time_embedding_per_frame(f64):
    rng = np.random.default_rng(1)
    layer = PerceiverResampler(4, depth=1, num_latents=2, num_heads=1, dim_head=3, max_frames=3)
    video = rng.normal(size=(1, 2, 2, 3, 4))               # 2 videos of 2 frames of 3 tokens
    assert layer(video).shape == (1, 2, 2, 4)
    _compare(layer, layer, lambda x, p: _t_resampler(x, p, 1, 1), [video], rng)
    with pytest.raises(ShapeError, match="PerceiverResampler.*frames <= 3"):
        layer(rng.normal(size=(1, 1, 4, 3, 4)))


def test_gated_block_matches_torch_rewrite(f64):
    rng = np.random.default_rng(2)
    block = GatedCrossAttentionBlock(4, num_heads=2, ff_mult=2, media_dim=6)
    x, media = rng.normal(size=(2, 7, 4)), rng.normal(size=(2, 2, 3, 6))
    block(x, media, LOCATIONS)
    _set_gates(block)
    _compare(block, lambda x, m: block(x, m, LOCATIONS), lambda x, m, p: _t_gated(x, m, LOCATIONS, p, 2),
             [x, media], rng)


def test_float64_gradient_checks(f64):
    rng = np.random.default_rng(3)
    resampler = PerceiverResampler(4, depth=1, num_latents=2, num_heads=2, ff_mult=1)
    block = GatedCrossAttentionBlock(4, num_heads=2, ff_mult=1)
    block(rng.normal(size=(2, 7, 4)), rng.normal(size=(2, 2, 2, 4)), LOCATIONS)
    _set_gates(block, 0.9, 0.5)
    assert check_gradients(lambda x: F.sum(resampler(x) ** 2), rng.normal(size=(1, 2, 3, 4)))
    assert check_gradients(lambda x, m: F.sum(block(x, m, LOCATIONS) ** 2),
                           rng.normal(size=(2, 7, 4)), rng.normal(size=(2, 2, 2, 4)))


def test_media_mask_reads_the_image_immediately_before_each_token():
    attend, has_media = media_attention_mask(LOCATIONS, 2, 2)
    assert has_media.tolist() == [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
    np.testing.assert_array_equal(attend[0, :, ::2], [[0, 0], [0, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(attend[0, :, 0], attend[0, :, 1])       # both tokens of an image
    with pytest.raises(ValueError, match="marks 2 images but 1"):
        media_attention_mask(LOCATIONS, 1, 2)


def test_changing_an_image_changes_only_the_tokens_that_read_it():
    rng = np.random.default_rng(4)
    block = GatedCrossAttentionBlock(4, num_heads=2)
    x, media = rng.normal(size=(2, 7, 4)).astype(np.float32), rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
    block(x, media, LOCATIONS)
    _set_gates(block)
    before = block(x, media, LOCATIONS).numpy()
    changed = media.copy()
    changed[:, 0] = rng.normal(size=(2, 3, 4))                           # the first image of each row
    after = block(x, changed, LOCATIONS).numpy()
    differs = np.abs(after - before).max(-1) > 1e-6
    assert differs.tolist() == [[0, 0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]]
    # tokens before any image get nothing from the block
    assert np.all(block.cross_attention(lamina.tensor(x), lamina.tensor(media), LOCATIONS).numpy()[0, :2] == 0)
    np.testing.assert_array_equal(before[0, :2], x[0, :2])


# -- the model -------------------------------------------------------------------------------
WORDS = ["<image>", "<eos>", "one", "two", "three", "red", "green", "blue"]


def _language_model():
    return models.Llama(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=16)


def _flamingo(lm=None, **options):
    options = {"num_latents": 4, "resampler_depth": 1, "num_heads": 2, "ff_mult": 2, **options}
    return Flamingo(nn.Conv2D(16, 2, stride=2, activation="relu"), lm or _language_model(), vision_dim=16,
                    media_token_id=0, **options)


def squares(n: int, seed: int):
    """(images (n, 1, 8, 8, 3), ids (n, 4)): 1-3 squares of 2x2 pixels of one colour on a 4x4
    grid, captioned '<image> count colour <eos>'."""
    rng = np.random.default_rng(seed)
    counts, colours = rng.integers(0, 3, n), rng.integers(0, 3, n)
    images = np.zeros((n, 8, 8, 3), np.float32)
    for i in range(n):
        for cell in rng.choice(16, counts[i] + 1, replace=False):
            r, c = divmod(cell, 4)
            images[i, 2 * r:2 * r + 2, 2 * c:2 * c + 2, colours[i]] = 1.0
    ids = np.stack([np.zeros(n, int), 2 + counts, 5 + colours, np.ones(n, int)], axis=1)
    return images[:, None], ids


def test_gates_at_zero_leave_the_language_model_exactly_unchanged():
    manual_seed(0)
    images, ids = squares(3, 0)
    model = _flamingo(cross_attn_every=1)
    text = np.concatenate([ids[:, :3], ids[:, :3]], axis=1)             # a second image marker in the text
    images = np.concatenate([images, images[::-1]], axis=1)
    np.testing.assert_array_equal(model(text, images).numpy(), model.language_model(text).numpy())
    for block in model.gated_blocks:
        _set_gates(block)
    with_images = model(text, images).numpy()
    assert np.abs(with_images - model.language_model(text).numpy()).max() > 1e-3
    # the tokens before the first marker read no image: still the language model's
    pre = np.concatenate([np.full((3, 2), 5), text], axis=1)
    np.testing.assert_array_equal(model(pre, images).numpy()[:, :2], model.language_model(pre).numpy()[:, :2])


def test_gated_blocks_sit_before_every_nth_layer():
    lm = models.Llama(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=5, num_attention_heads=2)
    assert len(_flamingo(lm, cross_attn_every=2).gated_blocks) == 3
    with pytest.raises(TypeError, match="decoder language model"):
        Flamingo(nn.Conv2D(4, 2), nn.Dense(3), vision_dim=4)


def test_only_the_resampler_and_gated_blocks_learn():
    manual_seed(1)
    images, ids = squares(4, 1)
    model = _flamingo()
    model(ids[:, :-1], images)
    frozen = [*model.vision_encoder.parameters(), *model.language_model.parameters()]
    assert frozen and not any(p.trainable for p in frozen)
    trained = model.parameters(trainable_only=True)
    assert {id(p) for p in trained} == {id(p) for p in (*model.resampler.parameters(),
                                                          *model.gated_blocks.parameters())}
    start = {id(p): p.numpy().copy() for p in model.parameters()}
    optimizer = lamina.optim.Adam(model, lr=0.01)
    for _ in range(2):
        scores = model(ids[:, :-1], images)
        loss = F.cross_entropy(F.reshape(scores, -1, len(WORDS)), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in frozen)
        optimizer.step()
    assert all(np.array_equal(p.numpy(), start[id(p)]) for p in frozen)
    assert all(not np.array_equal(p.numpy(), start[id(p)]) for p in trained)


def test_bad_inputs_are_reported():
    block = GatedCrossAttentionBlock(4)
    with pytest.raises(ShapeError, match="GatedCrossAttentionBlock.*media"):
        block(np.zeros((2, 7, 4)), np.zeros((2, 3, 4)), LOCATIONS)
    with pytest.raises(ShapeError, match="media_locations"):
        block(np.zeros((2, 6, 4)), np.zeros((2, 2, 3, 4)), LOCATIONS)
    with pytest.raises(ShapeError, match="Flamingo.*images"):
        _flamingo()(np.zeros((1, 3), int), np.zeros((1, 8, 8, 3)))


def _train(model, params, batches, lr, call, ids, rng, batch=32):
    optimizer = lamina.optim.Adam(params, lr=lr)
    for _ in range(batches):
        rows = rng.integers(0, len(ids), batch)
        scores = call(rows)
        loss = F.cross_entropy(F.reshape(scores, -1, len(WORDS)), ids[rows, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.numpy())


def test_learns_to_caption_held_out_squares_through_the_new_parts_only():
    manual_seed(1)
    images, ids = squares(600, 0)
    test_images, test_ids = squares(100, 1)
    rng = np.random.default_rng(0)
    # the language model first learns the captions' text alone (count and colour are guesses)
    lm = _language_model()
    text_loss = _train(lm, lm, 60, 0.01, lambda rows: lm(ids[rows, :-1]), ids, rng, batch=64)
    assert text_loss == pytest.approx(2 * np.log(3) / 3, abs=0.05)
    model = _flamingo(lm)
    model(ids[:2, :-1], images[:2])
    lm_alone = model.generate(test_ids[:, :1], test_images, 3, eos_token_id=1)   # gates at 0: the LM's guess
    baseline = (lm_alone[:, 1:4] == test_ids[:, 1:4]).all(1).mean()
    _train(model, model.parameters(trainable_only=True), 300, 0.005, lambda rows: model(ids[rows, :-1], images[rows]),
           ids, rng)
    captions = model.generate(test_ids[:, :1], test_images, 3, eos_token_id=1)
    accuracy = (captions[:, 1:4] == test_ids[:, 1:4]).all(1).mean()
    assert baseline < 0.2 and accuracy > 0.8, (baseline, accuracy)


def test_readme_example_runs():
    printed, names = run_readme_section("Vision for a frozen language model (Flamingo)")
    assert printed.split() == ["True", "(2,", "3)"]
    assert all(not p.trainable for p in names["lm"].parameters())
