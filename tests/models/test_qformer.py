"""BLIP-2's Q-Former: the three attention masks against hand-built ones, one layer with
cross-attention and the ITC loss (max over queries) against float64 torch rewrites (values and
gradients), hard-negative mining for ITM, the causal ITG path, and a tiny model of coloured
shapes with template captions that learns retrieval and captioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, run_readme_section
from lamina import functional as F
from lamina import models, nn, optim
from lamina.backend import manual_seed
from lamina.errors import ShapeError
from lamina.models import (
    BLIP2Stage1,
    QFormer,
    QFormerLayer,
    image_text_contrastive_loss,
    mine_hard_negatives,
    qformer_attention_mask,
)


# -- the masks -----------------------------------------------------------------------------
def test_masks_equal_hand_built_examples():
    # 2 queries (rows/columns 0, 1) then 3 text tokens (2, 3, 4); 1 = may attend
    unimodal = [[1, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [0, 0, 1, 1, 1],
                [0, 0, 1, 1, 1],
                [0, 0, 1, 1, 1]]
    causal = [[1, 1, 0, 0, 0],
              [1, 1, 0, 0, 0],
              [1, 1, 1, 0, 0],
              [1, 1, 1, 1, 0],
              [1, 1, 1, 1, 1]]
    assert np.array_equal(qformer_attention_mask(2, 3, "unimodal"), np.array([unimodal], dtype=bool))
    assert np.array_equal(qformer_attention_mask(2, 3, "causal"), np.array([causal], dtype=bool))
    assert np.array_equal(qformer_attention_mask(2, 3, "bidirectional"), np.ones((1, 5, 5), dtype=bool))
    # padding (the last text token of row 1) is hidden from every token, as a key
    padded = qformer_attention_mask(2, 3, "bidirectional", text_mask=np.array([[1, 1, 1], [1, 1, 0]]))
    expected = np.ones((2, 5, 5), dtype=bool)
    expected[1, :, 4] = False
    assert np.array_equal(padded, expected)
    with pytest.raises(ValueError, match="kind must be one of"):
        qformer_attention_mask(2, 3, "prefix")
    with pytest.raises(ShapeError, match=r"text_mask of shape \(2, 4\); expected \(batch, 3\)"):
        qformer_attention_mask(2, 3, "causal", text_mask=np.ones((2, 4)))


# -- torch rewrites ------------------------------------------------------------------------
def _t_dense(x, p, prefix):
    return x @ p[f"{prefix}.weight"] + p[f"{prefix}.bias"]


def _t_norm(x, p, prefix):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), p[f"{prefix}.weight"], p[f"{prefix}.bias"], 1e-12)


def _t_attention(x, context, p, prefix, heads, allowed=None):
    n, t, width = x.shape
    d = width // heads

    def split(z):
        return z.reshape(n, z.shape[1], heads, d).transpose(1, 2)

    scores = split(_t_dense(x, p, f"{prefix}.query")) @ split(_t_dense(context, p, f"{prefix}.key")).transpose(-1, -2)
    scores = scores / d ** 0.5
    if allowed is not None:
        scores = scores.masked_fill(~torch.as_tensor(allowed)[:, None], float("-inf"))
    out = (scores.softmax(-1) @ split(_t_dense(context, p, f"{prefix}.value"))).transpose(1, 2).reshape(n, t, width)
    return _t_dense(out, p, f"{prefix}.out")


def _t_ffn(x, p, prefix):
    return _t_dense(torch.nn.functional.gelu(_t_dense(x, p, f"{prefix}.dense_in")), p, f"{prefix}.dense_out")


def _t_layer(x, image, p, num_queries, heads, allowed):
    h = _t_norm(x + _t_attention(x, x, p, "self_attention", heads, allowed), p, "self_norm")
    q, t = h[:, :num_queries], h[:, num_queries:]
    q = _t_norm(q + _t_attention(q, image, p, "cross", heads), p, "cross_norm")
    q = _t_norm(q + _t_ffn(q, p, "query_ffn"), p, "query_norm")
    t = _t_norm(t + _t_ffn(t, p, "text_ffn"), p, "text_norm")
    return torch.cat([q, t], dim=1)


def test_layer_with_cross_attention_matches_torch_rewrite(f64):
    rng = np.random.default_rng(0)
    layer = QFormerLayer(4, 2, 6, cross_attention=True)
    x, image = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 3, 7))
    allowed = qformer_attention_mask(2, 3, "causal", text_mask=np.array([[1, 1, 1], [1, 1, 0]]))
    layer(x, 2, image, allowed)
    ours = [lamina.tensor(a, requires_grad=True) for a in (x, image)]
    out = layer(ours[0], 2, ours[1], allowed)
    params = dict(layer.named_parameters())
    assert len(params) == 2 * 4 * 2 + 2 * 2 * 2 + 4 * 2           # two attentions, two FFNs, four norms
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, image)]
    torch_params = {k: torch.tensor(v.numpy(), requires_grad=True) for k, v in params.items()}
    expected = _t_layer(*theirs, torch_params, 2, 2, allowed)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = rng.normal(size=out.shape)
    F.sum(out * lamina.tensor(upstream)).backward()
    (expected * torch.tensor(upstream)).sum().backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=f"input {k}")
    for name, p in params.items():
        np.testing.assert_allclose(p.grad, torch_params[name].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_float64_gradient_checks(f64):
    rng = np.random.default_rng(2)
    layer = QFormerLayer(4, 2, 3, cross_attention=True)
    allowed = qformer_attention_mask(2, 2, "causal")
    x, image = rng.normal(size=(1, 4, 4)), rng.normal(size=(1, 2, 3))
    layer(x, 2, image, allowed)
    assert check_gradients(lambda x, image: layer(x, 2, image, allowed), x, image)
    z, t = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 4))
    qformer = QFormer(num_queries=2, hidden=4, depth=1, heads=2, vision_dim=4, vocab_size=5, embed_dim=4)
    assert check_gradients(lambda z, t: image_text_contrastive_loss(
        qformer.similarity(F.normalize(z), F.normalize(t))), z, t)


def test_itc_loss_matches_torch_rewrite_with_max_over_queries(f64):
    rng = np.random.default_rng(1)
    qformer = QFormer(num_queries=3, hidden=4, depth=1, heads=2, vision_dim=4, vocab_size=5, embed_dim=6)
    qformer.temperature.data = np.array([0.2])
    z, t = rng.normal(size=(4, 3, 6)), rng.normal(size=(4, 6))
    ours = [lamina.tensor(a, requires_grad=True) for a in (z, t)]
    loss = image_text_contrastive_loss(qformer.similarity(F.normalize(ours[0]), F.normalize(ours[1])))
    theirs = [torch.tensor(a, requires_grad=True) for a in (z, t)]
    temperature = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    zn, tn = (torch.nn.functional.normalize(a, dim=-1) for a in theirs)
    sim = torch.einsum("iqe,je->iqj", zn, tn).amax(dim=1) / temperature
    target = torch.arange(4)
    expected = (torch.nn.functional.cross_entropy(sim, target) + torch.nn.functional.cross_entropy(sim.T, target)) / 2
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12)
    loss.backward()
    expected.backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(qformer.temperature.grad, temperature.grad.numpy(), rtol=1e-9)
    with pytest.raises(ShapeError, match="image_text_contrastive_loss.*square"):
        image_text_contrastive_loss(np.zeros((2, 3)))


# -- hard negatives ------------------------------------------------------------------------
def test_hard_negatives_follow_the_similarity_weights_and_skip_the_positive():
    sim = np.array([[3.0, 2.0, 0.0, -1.0],
                    [1.0, 0.5, 1.5, 0.0],
                    [0.0, 0.0, 4.0, 0.0],
                    [2.0, -2.0, 1.0, 5.0]])
    first = mine_hard_negatives(sim, np.random.default_rng(7))
    assert np.array_equal(first, mine_hard_negatives(sim, np.random.default_rng(7)))      # seeded
    rng = np.random.default_rng(8)
    draws = np.stack([mine_hard_negatives(sim, rng) for _ in range(4000)])                 # (draws, rows)
    assert not (draws == np.arange(4)).any()
    weights = np.exp(sim)
    np.fill_diagonal(weights, 0.0)
    expected = weights / weights.sum(1, keepdims=True)
    frequency = np.stack([np.bincount(draws[:, i], minlength=4) / len(draws) for i in range(4)])
    np.testing.assert_allclose(frequency, expected, atol=0.03)
    with pytest.raises(ShapeError, match="mine_hard_negatives"):
        mine_hard_negatives(np.zeros((1, 1)), rng)


# -- the objectives' paths -----------------------------------------------------------------
def _tiny_qformer():
    manual_seed(3)
    return QFormer(num_queries=2, hidden=8, depth=2, heads=2, vision_dim=5, vocab_size=7, intermediate=8,
                   max_text_len=6, embed_dim=4)


def test_itg_text_logits_do_not_depend_on_later_text():
    qformer = _tiny_qformer()
    rng = np.random.default_rng(4)
    features = rng.normal(size=(2, 3, 5)).astype(np.float32)
    ids = np.array([[1, 3, 4, 5, 6], [1, 2, 2, 3, 4]])
    later = ids.copy()
    later[:, 3:] = [[2, 2], [6, 5]]
    logits, changed = qformer.lm_logits(features, ids).numpy(), qformer.lm_logits(features, later).numpy()
    assert np.array_equal(logits[:, :3], changed[:, :3]) and not np.allclose(logits[:, 3:], changed[:, 3:])
    # the text reads the image through the queries
    assert not np.allclose(qformer.lm_logits(features + 1.0, ids).numpy(), logits)
    # the bidirectional (ITM) mask lets every text token see the later ones
    _, text = qformer.encode(features, ids, mask="bidirectional")
    _, text_later = qformer.encode(features, later, mask="bidirectional")
    assert not np.allclose(text.numpy()[:, :3], text_later.numpy()[:, :3])


def test_unimodal_mask_is_two_separate_passes():
    qformer = _tiny_qformer()
    rng = np.random.default_rng(5)
    features = rng.normal(size=(2, 3, 5)).astype(np.float32)
    ids, mask = np.array([[1, 3, 4, 0], [1, 2, 0, 0]]), np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    queries, text = qformer.encode(features, ids, mask, "unimodal")
    alone_queries, _ = qformer.encode(features, None)
    _, alone_text = qformer.encode(None, ids, mask)
    np.testing.assert_allclose(queries.numpy(), alone_queries.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text.numpy(), alone_text.numpy(), rtol=1e-5, atol=1e-6)
    # padding changes no real token
    _, other_padding = qformer.encode(None, np.array([[1, 3, 4, 6], [1, 2, 5, 5]]), mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(other_padding.numpy()[real], text.numpy()[real], rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match=r"QFormer.*image features \(batch, S, 5\)"):
        qformer.encode(np.zeros((2, 3, 4)), ids)
    with pytest.raises(ShapeError, match=r"QFormer.*T <= 6"):
        qformer.encode(features, np.ones((2, 7), dtype=np.int64))


def test_losses_are_finite_and_train_every_part_but_the_frozen_encoder():
    qformer = _tiny_qformer()
    encoder = nn.Conv2D(5, 2, stride=2)
    model = BLIP2Stage1(encoder, qformer, bos_token_id=1)
    images = np.random.default_rng(6).normal(size=(3, 4, 4, 3)).astype(np.float32)
    ids = np.array([[1, 3, 4, 2], [1, 5, 2, 0], [1, 6, 4, 2]])
    losses = model.losses(images, ids, text_mask=ids != 0, rng=np.random.default_rng(0))
    assert sorted(losses) == ["itc", "itg", "itm"]
    F.sum(F.stack(list(losses.values()))).backward()
    assert all(p.grad is None for p in encoder.parameters()) and not any(p.trainable for p in encoder.parameters())
    assert all(p.grad is not None for p in qformer.parameters() if p.trainable)
    assert np.isclose(losses["itc"].numpy(), np.log(3), atol=0.2)        # near chance at the start


# -- a toy image-caption set ---------------------------------------------------------------
COLOURS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))        # red, green, blue
SHAPES = ("square", "cross", "dot")
BOS, EOS = 1, 2                                                         # then colour 3-5, shape 6-8


def _draw(colour: int, shape: str, rng, size: int = 12):
    ys, xs = np.mgrid[:size, :size]
    cy, cx = rng.integers(4, size - 4, 2)
    dy, dx = np.abs(ys - cy), np.abs(xs - cx)
    inside = {"square": (dy <= 3) & (dx <= 3), "cross": ((dy == 0) & (dx <= 4)) | ((dx == 0) & (dy <= 4)),
              "dot": (dy <= 1) & (dx <= 1)}[shape]
    image = np.zeros((size, size, 3), np.float32)
    image[inside] = COLOURS[colour]
    return image


def _shapes(classes, rng):
    """Images of classes 3 colour + shape and their captions [BOS, colour, shape, EOS]."""
    images = np.stack([_draw(c // 3, SHAPES[c % 3], rng) for c in classes])
    return images, np.array([[BOS, 3 + c // 3, 6 + c % 3, EOS] for c in classes])


def test_learns_retrieval_and_captions_of_coloured_shapes():
    manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = nn.Conv2D(24, 4, stride=2, activation="relu", bias_init="ones")    # frozen at random weights
    qformer = QFormer(num_queries=4, hidden=32, depth=2, heads=2, vision_dim=24, vocab_size=9, intermediate=64,
                      max_text_len=4, embed_dim=16)
    model = BLIP2Stage1(encoder, qformer, bos_token_id=BOS, eos_token_id=EOS)
    model(*_shapes(range(9), rng))
    optimizer, steps = optim.Adam(model.parameters(), lr=6e-3), 220
    for step in range(steps):
        optimizer.lr = 6e-3 * (1 - step / steps)
        losses = model.losses(*_shapes(rng.permutation(9), rng), rng=rng)
        optimizer.zero_grad()
        (losses["itc"] + losses["itm"] + losses["itg"]).backward()
        optimizer.step()
    images, ids = _shapes(np.repeat(np.arange(9), 2), np.random.default_rng(99))
    sim = model.similarity(images, ids[::2]).numpy()                       # 18 images, 9 captions
    retrieval = (sim.argmax(1) == np.arange(18) // 2).mean()
    captions = model.caption(images, 5)
    exact = (captions[:, :4] == ids).all(1).mean()
    # measured (Haswell / OpenBLAS's own kernels): retrieval 0.89 / 1.00, exact captions 0.94 / 0.94; chance: 1/9 each
    assert retrieval >= 0.6 and exact >= 0.5, (retrieval, exact)


# -- registration and README ---------------------------------------------------------------
def test_config_round_trip(tmp_path):
    model = BLIP2Stage1(nn.Conv2D(5, 2, stride=2), _tiny_qformer(), bos_token_id=1, eos_token_id=2)
    images, ids = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32), np.array([[1, 3], [1, 4]])
    expected = model(images, ids).numpy()
    lamina.save(model, tmp_path / "blip2.safetensors")
    twin = lamina.load(tmp_path / "blip2.safetensors")
    assert type(twin.qformer) is QFormer and twin.qformer.num_queries == 2 and twin.eos_token_id == 2
    assert np.array_equal(twin(images, ids).numpy(), expected)


def test_readme_example():
    printed, names = run_readme_section("BLIP-2's Q-Former")
    assert isinstance(names["model"], models.BLIP2Stage1)
    lines = printed.split("\n")
    assert lines[0].split() == ["itc", "itg", "itm"] and lines[1] == "(2, 2) [1 1] True"
