"""Torch rewrites (float64, fed a lamina model's parameters by name) of the TabTransformer and
SAINT layouts: pre-norm Transformer layers, intersample attention over flattened rows, and
both whole models."""

from __future__ import annotations

import numpy as np
import torch


def linear(p, prefix, x):
    return x @ p[prefix + ".weight"] + p[prefix + ".bias"]


def layer_norm(p, prefix, x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], p[prefix + ".weight"], p[prefix + ".bias"], 1e-5)


def attention(p, prefix, x, heads):
    """Multi-head self-attention of each sequence of x (B, L, D), written with einsum."""
    b, length, d = x.shape
    q, k, v = (linear(p, f"{prefix}.{name}", x).reshape(b, length, heads, d // heads)
               for name in ("query", "key", "value"))
    weights = torch.softmax(torch.einsum("bqhc,bkhc->bhqk", q, k) / (d // heads) ** 0.5, dim=-1)
    return linear(p, prefix + ".out", torch.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, length, d))


def transformer_layer(p, prefix, x, heads):
    x = x + attention(p, prefix + ".attention", layer_norm(p, prefix + ".attention_normalization", x), heads)
    hidden = torch.nn.functional.gelu(linear(p, prefix + ".ffn.linear_first",
                                             layer_norm(p, prefix + ".ffn_normalization", x)))
    return x + linear(p, prefix + ".ffn.linear_second", hidden)


def intersample_attention(p, prefix, x, heads):
    """x (N, n, d): the N flattened rows as one sequence."""
    return attention(p, prefix + ".attention", x.reshape(1, len(x), -1), heads).reshape(x.shape)


def intersample_layer(p, prefix, x, heads):
    rows = x.reshape(len(x), -1)
    rows = rows + intersample_attention(p, prefix + ".attention",
                                        layer_norm(p, prefix + ".attention_normalization", rows), heads)
    hidden = torch.nn.functional.gelu(linear(p, prefix + ".ffn.linear_first",
                                             layer_norm(p, prefix + ".ffn_normalization", rows)))
    return (rows + linear(p, prefix + ".ffn.linear_second", hidden)).reshape(x.shape)


def mlp(p, prefix, x, n_hidden):
    for i in range(n_hidden):
        x = torch.relu(linear(p, f"{prefix}.hidden.{i}", x))
    return linear(p, prefix + ".output", x)


def offsets(cards):
    return torch.tensor(np.cumsum((0, *cards[:-1])))


def tab_transformer(p, x_num, x_cat, cards, n_blocks, heads, n_hidden):
    tokens = p["value_embeddings"][x_cat + offsets(cards)]
    if "column_embeddings" in p:
        tokens = torch.cat([p["column_embeddings"].expand(len(x_cat), -1, -1), tokens], dim=-1)
    for b in range(n_blocks):
        tokens = transformer_layer(p, f"blocks.{b}", tokens, heads)
    features = torch.cat([tokens.flatten(1), layer_norm(p, "num_normalization", x_num)], dim=1)
    return mlp(p, "mlp", features, n_hidden)


def saint_embed(p, x_num, x_cat, cards):
    hidden = torch.relu(x_num[..., None] * p["num_embeddings.weight_first"] + p["num_embeddings.bias_first"])
    numbers = torch.einsum("njh,jhd->njd", hidden, p["num_embeddings.weight_second"]) + p["num_embeddings.bias_second"]
    return torch.cat([p["cls"].expand(len(x_num), 1, -1), p["cat_embeddings"][x_cat + offsets(cards)], numbers], dim=1)


def saint_blocks(p, x, layouts, heads, intersample_heads):
    """``layouts``: "col" or "row" for each of the model's layers in order."""
    for i, layout in enumerate(layouts):
        x = (transformer_layer(p, f"layers.{i}", x, heads) if layout == "col"
             else intersample_layer(p, f"layers.{i}", x, intersample_heads))
    return x


def saint(p, x_num, x_cat, cards, layouts, heads, intersample_heads):
    x = saint_blocks(p, saint_embed(p, x_num, x_cat, cards), layouts, heads, intersample_heads)
    return mlp(p, "head", x[:, 0], 1)


def saint_pretraining_loss(p, x_num, x_cat, cards, layouts, heads, intersample_heads, rng,
                           cutmix_probability, mixup_alpha, temperature):
    """CutMix, mixup, InfoNCE both ways and denoising (weights 1), drawing from the NumPy ``rng``
    in the order the model does: donor rows, numerical mask, categorical mask, mixup rows."""
    n = len(x_num)
    donors = torch.tensor(rng.permutation(n))
    swap = torch.tensor(rng.random(tuple(x_num.shape)) < cutmix_probability)
    noisy_num = torch.where(swap, x_num[donors], x_num)
    noisy_cat = torch.where(torch.tensor(rng.random(tuple(x_cat.shape)) < cutmix_probability), x_cat[donors], x_cat)
    noisy = saint_embed(p, noisy_num, noisy_cat, cards)
    noisy = mixup_alpha * noisy + (1 - mixup_alpha) * noisy[torch.tensor(rng.permutation(n))]
    clean = saint_blocks(p, saint_embed(p, x_num, x_cat, cards), layouts, heads, intersample_heads)
    noisy = saint_blocks(p, noisy, layouts, heads, intersample_heads)
    z = torch.nn.functional.normalize(mlp(p, "projection_clean", clean.flatten(1), 1), dim=-1)
    z_noisy = torch.nn.functional.normalize(mlp(p, "projection_noisy", noisy.flatten(1), 1), dim=-1)
    logits = z @ z_noisy.T / temperature
    rows = torch.arange(n)
    loss = (torch.nn.functional.cross_entropy(logits, rows) + torch.nn.functional.cross_entropy(logits.T, rows)) / 2
    for j in range(len(cards)):
        loss = loss + torch.nn.functional.cross_entropy(mlp(p, f"reconstruction.{j}", noisy[:, 1 + j], 1), x_cat[:, j])
    for j in range(x_num.shape[1]):
        guess = mlp(p, f"reconstruction.{len(cards) + j}", noisy[:, 1 + len(cards) + j], 1)[:, 0]
        loss = loss + torch.nn.functional.mse_loss(guess, x_num[:, j])
    return loss
