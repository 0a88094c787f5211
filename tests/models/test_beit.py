"""BEiT: the relative position bias and attention against a float64 torch rewrite with explicit
index gathers (outputs, input and parameter gradients, the bias table's included), float64
gradient checks of the block, the [MASK] embedding, blockwise masking statistics, the masked
token loss against a NumPy hand computation, the tokenizers, the base preset's parameter count,
saving, and a learning test of masked-token prediction on the digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import check_gradients, perturb_parameters, randn, run_readme_section, shuffled_digits
from lamina import models, optim
from lamina.errors import ShapeError


# -- the torch rewrite ---------------------------------------------------------------------------
def loop_index(h, w):
    """The bias-table row of every token pair [cls; patches], written out pair by pair."""
    offsets = (2 * h - 1) * (2 * w - 1)
    cells = [(i, j) for i in range(h) for j in range(w)]
    tokens = 1 + h * w
    index = torch.empty((tokens, tokens), dtype=torch.long)
    for a in range(tokens):
        for b in range(tokens):
            if a == 0 and b == 0:
                index[a, b] = offsets + 2
            elif a == 0:
                index[a, b] = offsets                         # the class token asking a patch
            elif b == 0:
                index[a, b] = offsets + 1                     # a patch asking the class token
            else:
                dy, dx = cells[a - 1][0] - cells[b - 1][0], cells[a - 1][1] - cells[b - 1][1]
                index[a, b] = (dy + h - 1) * (2 * w - 1) + dx + w - 1
    return index


def torch_beit_attention(x, qkv_w, q_bias, v_bias, table, proj_w, proj_b, heads, grid):
    """softmax(Q K^T / sqrt(d) + T[idx]) V per head, the key without a bias."""
    n, t, dim = x.shape
    index = loop_index(*grid)
    bias = torch.stack([torch.stack([table[index[a, b]] for b in range(t)]) for a in range(t)])  # (T, T, heads)
    qkv = x @ qkv_w + torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    q, k, v = (part.reshape(n, t, heads, -1).transpose(1, 2) for part in qkv.chunk(3, dim=-1))
    logits = q @ k.transpose(-1, -2) / math.sqrt(dim // heads) + bias.permute(2, 0, 1)
    out = (torch.softmax(logits, dim=-1) @ v).transpose(1, 2).reshape(n, t, dim)
    return out @ proj_w + proj_b


def test_relative_position_index_matches_the_pairwise_rule():
    for grid in [(2, 3), (3, 3), (1, 4)]:
        np.testing.assert_array_equal(models.beit_relative_position_index(grid), loop_index(*grid).numpy())
    index = models.beit_relative_position_index((14, 14))
    assert index.max() + 1 == 27 * 27 + 3 == 732                  # (2H - 1)(2W - 1) + 3 rows


def test_attention_matches_the_torch_rewrite(float64):
    layer = models.BEiTAttention(6, num_heads=2, grid_size=(2, 3))
    x = randn(2, 7, 6, seed=1)
    layer(lamina.tensor(x))
    perturb_parameters(layer)
    params = [layer.qkv.weight, layer.q_bias, layer.v_bias, layer.relative_position_bias_table, layer.proj.weight,
              layer.proj.bias]
    assert layer.relative_position_bias_table.shape == (3 * 5 + 3, 2)
    xl = lamina.tensor(x, requires_grad=True)
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    xt = torch.tensor(x, requires_grad=True)
    yl, yt = layer(xl), torch_beit_attention(xt, *theirs, heads=2, grid=(2, 3))
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = randn(*yl.shape, seed=5)
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for ours, other in zip(params, theirs):
        np.testing.assert_allclose(ours.grad, other.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_block_gradients(float64):
    block = models.BEiTBlock(4, 2, (2, 2), mlp_ratio=1.5, layer_scale_init=0.5)
    x = randn(2, 5, 4, seed=3)
    block(lamina.tensor(x))
    perturb_parameters(block, scale=0.1)
    assert check_gradients(lambda t: block(t), x)
    table = block.attn.relative_position_bias_table.numpy().copy()
    assert check_gradients(lambda t: _with_table(block, t, x), table)


def _with_table(block, table, x):
    """The block's output as a function of its bias table (a graph input)."""
    attn = block.attn
    saved = attn._parameters["relative_position_bias_table"]
    attn._parameters["relative_position_bias_table"] = table
    try:
        return block(lamina.tensor(x))
    finally:
        attn._parameters["relative_position_bias_table"] = saved


# -- the model -----------------------------------------------------------------------------------
def test_masked_patches_are_read_only_through_the_mask_embedding(float64):
    model = models.beit_tiny(num_classes=3, vocab_size=5, image_size=8, patch_size=2)
    x = randn(2, 8, 8, 1, seed=4)
    masks = models.beit_block_masking(2, (4, 4), 0.4, min_patches=2, rng=0)
    scores = model.masked_token_scores(lamina.tensor(x), masks).numpy()
    assert scores.shape == (2, 16, 5) and model(lamina.tensor(x)).shape == (2, 3)
    changed = x.copy().reshape(2, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(2, 16, 4)
    changed[masks] += 5.0                                          # new pixels under the masked patches
    changed = changed.reshape(2, 4, 4, 2, 2).transpose(0, 1, 3, 2, 4).reshape(2, 8, 8, 1)
    np.testing.assert_allclose(model.masked_token_scores(lamina.tensor(changed), masks).numpy(), scores,
                               rtol=1e-12)
    unmasked = model.masked_token_scores(lamina.tensor(changed), None).numpy()
    assert np.abs(unmasked - scores).max() > 1e-3


def test_base_preset_has_the_published_parameter_count():
    model = models.beit_base_patch16_224()
    total = model.summary(input_shape=(224, 224, 3)).total_params
    dim, hidden = 768, 3072
    block = (4 * dim + 3 * dim * dim + 2 * dim + 732 * 12 + dim * dim + dim + dim * hidden + hidden
             + hidden * dim + dim + 2 * dim)                      # norms, qkv + q/v biases, table, proj, MLP, scales
    assert total == 16 * 16 * 3 * dim + dim + dim + 12 * block + 2 * dim + dim * 1000 + 1000 == 86_530_984
    assert total // 10**6 == 86 and round(total / 1e6, 2) == 86.53  # the paper's 86M; timm's 86.53M
    masks_only = models.beit_base_patch16_224(num_classes=None, vocab_size=8192)
    masks_only.build((None, 224, 224, 3))
    head_swap = -(2 * dim + dim * 1000 + 1000) + dim + 2 * dim + dim * 8192 + 8192  # [MASK], norm, lm_head
    assert sum(p.size for p in masks_only.parameters()) == total + head_swap


def test_config_and_save_load(tmp_path):
    model = models.beit(8, 2, num_classes=3, dim=8, depth=2, num_heads=2, vocab_size=5, channels=1)
    model.build((None, 8, 8, 1))
    perturb_parameters(model, scale=0.05)
    check_config_and_save_load(model, random_inputs((2, 8, 8, 1), 8), tmp_path / "beit.lamina")
    clone = lamina.load(tmp_path / "beit.lamina")
    masks = models.beit_block_masking(2, (4, 4), 0.4, min_patches=2, rng=1)
    x = lamina.tensor(random_inputs((2, 8, 8, 1), 9))
    np.testing.assert_array_equal(clone.masked_token_scores(x, masks).numpy(),
                                  model.masked_token_scores(x, masks).numpy())


def test_bad_inputs():
    model = models.beit_tiny(num_classes=2, image_size=8, patch_size=2)
    with pytest.raises(ShapeError, match=r"beit_tiny.*\(2, 6, 8, 1\).*\(batch, 8, 8, 1\)"):
        model(lamina.tensor(np.zeros((2, 6, 8, 1), np.float32)))
    with pytest.raises(ValueError, match="vocab_size"):
        model.masked_token_scores(np.zeros((1, 8, 8, 1), np.float32), np.zeros((1, 16), bool))
    with pytest.raises(ValueError, match="num_classes.*vocab_size"):
        models.BEiT(8, 2, num_classes=None)
    with pytest.raises(ShapeError, match=r"BEiTAttention.*\(1, 4, 4\).*\(batch, 5, 4\)"):
        models.BEiTAttention(4, 2, (2, 2))(lamina.tensor(np.zeros((1, 4, 4))))
    with pytest.raises(ShapeError, match="beit_mim_loss"):
        models.beit_mim_loss(np.zeros((2, 4, 3)), np.zeros((2, 5), int), np.ones((2, 5), bool))


# -- masking -------------------------------------------------------------------------------------
def test_block_masking_statistics_and_block_shapes():
    masks = models.beit_block_masking(300, (14, 14), rng=0)
    counts = masks.sum(axis=1)
    assert masks.shape == (300, 196) and counts.max() <= 78           # never past round(0.4 * 196)
    assert 0.36 < counts.mean() / 196 <= 0.4                         # measured: 0.385
    rng = np.random.default_rng(5)
    for _ in range(50):
        mask = np.zeros((14, 14), bool)
        for top, left, h, w in models.beit_mask_blocks((14, 14), 78, rng=rng):
            assert h * w >= 16 and 0.3 <= h / w <= 1 / 0.3              # blocks of >= 16 patches, bounded aspect
            assert top + h <= 14 and left + w <= 14
            mask[top:top + h, left:left + w] = True
        assert 60 <= mask.sum() <= 78


def test_block_masks_are_contiguous_rectangles_and_reproducible():
    a = models.beit_block_masking(4, (8, 8), 0.4, min_patches=4, rng=7)
    np.testing.assert_array_equal(a, models.beit_block_masking(4, (8, 8), 0.4, min_patches=4, rng=7))
    assert not np.array_equal(a, models.beit_block_masking(4, (8, 8), 0.4, min_patches=4, rng=8))
    random = np.random.default_rng(0).permutation(np.arange(64) < a[0].sum()).reshape(8, 8)
    grid = a[0].reshape(8, 8)

    def neighbours(m):                                               # masked cells with a masked 4-neighbour
        padded = np.pad(m, 1)
        return (m & (padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])).sum()

    assert neighbours(grid) == grid.sum() > neighbours(random)


# -- the loss ------------------------------------------------------------------------------------
def test_mim_loss_is_cross_entropy_over_the_masked_positions_only(float64):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 6, 5))
    ids = rng.integers(0, 5, (2, 6))
    masks = np.array([[1, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0]], bool)
    log_p = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    expected = -np.mean([log_p[n, p, ids[n, p]] for n, p in zip(*np.nonzero(masks))])
    s = lamina.tensor(scores, requires_grad=True)
    loss = models.beit_mim_loss(s, ids, masks)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    loss.backward()
    assert np.all(s.grad[~masks] == 0) and np.all(np.abs(s.grad[masks]).sum(-1) > 0)
    other_ids, other_scores = ids.copy(), scores.copy()
    other_ids[~masks] = (other_ids[~masks] + 1) % 5                  # change every unmasked target
    other_scores[~masks] += 3.0
    np.testing.assert_allclose(models.beit_mim_loss(other_scores, other_ids, masks).numpy(), expected, rtol=1e-12)


# -- tokenizers ----------------------------------------------------------------------------------
def test_patch_kmeans_tokenizer_assigns_each_patch_its_nearest_centre():
    x, _ = shuffled_digits(8, np.random.default_rng(0))
    tokenizer = models.PatchKMeansTokenizer(2, 6, iterations=5, seed=0).fit(x[:200])
    ids = tokenizer(x[:3])
    assert ids.shape == (3, 4, 4) and ids.max() < 6
    patch = x[1, 2:4, 4:6].reshape(-1)
    assert ids[1, 1, 2] == np.argmin(((tokenizer.centers - patch) ** 2).sum(1))
    assert len(np.unique(tokenizer(x[:200]))) == 6
    with pytest.raises(ShapeError, match="PatchKMeansTokenizer.*multiples of the patch size 2"):
        tokenizer(np.zeros((1, 7, 8, 1)))


def test_vqvae_tokenizer_gives_the_code_map_for_a_beit_of_its_patch_size():
    vqvae = models.VQVAE(channels=1, num_embeddings=7, embedding_dim=4, hidden=8, residual_hidden=4,
                         num_residual_layers=1, downsamples=2)
    tokenizer = models.VQVAETokenizer(vqvae)
    x = random_inputs((2, 8, 8, 1), 3)
    ids = tokenizer(x)
    assert ids.shape == (2, 2, 2) and tokenizer.vocab_size == 7 and tokenizer.patch_size == 4
    np.testing.assert_array_equal(ids, vqvae.encode(lamina.tensor(x)).indices)
    model = models.beit_tiny(num_classes=None, vocab_size=7, image_size=8, patch_size=tokenizer.patch_size)
    masks = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], bool)
    loss = models.beit_mim_loss(model.masked_token_scores(lamina.tensor(x), masks), ids, masks)
    assert np.isfinite(loss.numpy())


# -- learning ------------------------------------------------------------------------------------
def test_masked_token_accuracy_rises_well_above_the_most_frequent_token():
    """BEiT pre-training on the 8x8 digits: 2x2 patches tokenized by an 8-centre k-means
    codebook, 40% of the 4x4 grid masked in blocks; the accuracy on the masked tokens of
    held-out digits against always guessing the commonest token."""
    rng = np.random.default_rng(0)
    x, _ = shuffled_digits(8, rng)
    train, test = x[:1200], x[1200:1500]
    tokenizer = models.PatchKMeansTokenizer(2, 8, seed=0).fit(train)
    ids_train, ids_test = tokenizer(train).reshape(1200, 16), tokenizer(test).reshape(300, 16)
    lamina.manual_seed(0)
    model = models.beit_tiny(num_classes=None, vocab_size=8, image_size=8, patch_size=2)
    model.build((None, 8, 8, 1))
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        rows = rng.integers(0, 1200, 64)
        masks = models.beit_block_masking(64, (4, 4), 0.4, min_patches=2, rng=rng)
        loss = models.beit_mim_loss(model.masked_token_scores(lamina.tensor(train[rows]), masks), ids_train[rows],
                                    masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    masks = models.beit_block_masking(300, (4, 4), 0.4, min_patches=2, rng=100)
    with lamina.no_grad():
        predicted = model.masked_token_scores(lamina.tensor(test), masks).numpy().argmax(-1)
    accuracy = (predicted == ids_test)[masks].mean()
    commonest = (ids_test[masks] == np.bincount(ids_train.ravel()).argmax()).mean()
    # measured: accuracy 0.48 / 0.54 / 0.47 against the commonest token's 0.36 / 0.36 / 0.34 (seeds 0, 1, 2)
    assert accuracy > commonest + 0.08 and accuracy > 3 / 8


def test_readme_section():
    out, _ = run_readme_section("Masked image modelling: BEiT and SimMIM")
    assert "beit scores (2, 16, 8)" in out and "simmim reconstruction (2, 8, 8, 1)" in out
