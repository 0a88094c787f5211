"""The tiny GPT-2 the interpretability tests share: its sizes, the model trained to predict the
sequence's first token at every position (a circuit known in advance), and clean/corrupted
prompts that differ only in that first token."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.analysis.interpretability import logit_difference

VOCAB, LENGTH = 8, 6


def tiny_gpt2(**options):
    lamina.manual_seed(0)
    return models.GPT2(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                       resid_pdrop=0.0, attn_pdrop=0.0, **options)


def first_token_gpt2():
    """The tiny GPT-2 trained (about a second) to predict, at every position, the first token."""
    lamina.manual_seed(0)
    model = tiny_gpt2()
    rng = np.random.default_rng(0)
    optimizer = optim.Adam(model, lr=0.01)
    for _ in range(150):
        ids = rng.integers(0, VOCAB, size=(32, LENGTH))
        loss = F.categorical_cross_entropy(model(ids), np.repeat(ids[:, :1], LENGTH, axis=1), from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.numpy()) < 0.05
    return model


def clean_corrupted_pair(seed: int = 1):
    """Clean prompts starting with token 2 and corrupted ones starting with 5, otherwise equal."""
    clean = np.random.default_rng(seed).integers(0, VOCAB, size=(4, LENGTH))
    clean[:, 0] = 2
    corrupted = clean.copy()
    corrupted[:, 0] = 5
    return clean, corrupted


def clean_minus_corrupted(logits):
    return logit_difference(logits, 2, 5)
