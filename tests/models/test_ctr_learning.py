"""Click-through-rate models learn planted feature interactions: DeepFM and DCN-v2 beat logistic
regression on the one-hot fields when the click depends on the product of two fields, and DIN
beats its sum-pooled base model when the click depends on whether the candidate's category is
among the user's behaviours (test AUC on held-out samples)."""

from __future__ import annotations

import numpy as np
import pytest
from ctr_checks import fit_ctr, logistic_regression_auc

import lamina
from lamina.models import DIN, DCNv2, DeepFM
from lamina.models.graph_autoencoder import roc_auc_score

FIELD_DIMS = (8, 8, 5, 5)


def _field_data(n: int, seed: int):
    """Fields 0 and 1 carry random signs s_0, s_1; P(click) = sigmoid(3 s_0[x_0] s_1[x_1]): no
    field on its own says anything about the click."""
    balanced = np.repeat([-1.0, 1.0], 4)                       # half of each field's categories each sign
    signs = np.stack([np.random.default_rng(100 + f).permutation(balanced) for f in range(2)])
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, n_f, size=n) for n_f in FIELD_DIMS], axis=1)
    logit = 3.0 * signs[0, ids[:, 0]] * signs[1, ids[:, 1]]
    return ids, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32), logit


@pytest.fixture(scope="module")
def field_data():
    return _field_data(3000, seed=1), _field_data(1000, seed=2)


@pytest.mark.parametrize("name", ["DeepFM", "DCNv2"])
def test_deepfm_and_dcnv2_beat_logistic_regression(name, field_data):
    (train_ids, train_y, _), (test_ids, test_y, planted) = field_data
    lamina.manual_seed(0)
    if name == "DeepFM":
        model = DeepFM(FIELD_DIMS, embed_dim=4, mlp_dims=(16,))
    else:
        model = DCNv2(FIELD_DIMS, embed_dim=4, num_cross_layers=2, mlp_dims=(16,), low_rank=8)
    fit_ctr(model, (train_ids,), train_y, epochs=4, lr=0.03)
    learned = roc_auc_score(test_y, model(test_ids).numpy())
    baseline = logistic_regression_auc(FIELD_DIMS, train_ids, train_y, test_ids, test_y)
    best = roc_auc_score(test_y, planted)
    print(f"{name}: AUC {learned:.3f}, logistic regression {baseline:.3f}, planted rule {best:.3f}")
    assert baseline < 0.6 and learned > baseline + 0.2


def _behaviour_data(n: int, seed: int, items: int = 40, categories: int = 10, steps: int = 8):
    """Users' histories of 2..steps items (id 0 pads); item i has category i % categories.
    P(click) = 0.9 if the candidate's category is among the history's, else 0.1."""
    rng = np.random.default_rng(seed)
    history = rng.integers(1, items, size=(n, steps))
    lengths = rng.integers(2, steps + 1, size=n)
    history[np.arange(steps) >= lengths[:, None]] = 0
    candidate = rng.integers(1, items, size=n)
    seen = ((history % categories == (candidate % categories)[:, None]) & (history != 0)).any(axis=1)
    labels = (rng.random(n) < np.where(seen, 0.9, 0.1)).astype(np.float32)
    return (history, candidate, history % categories, candidate % categories), labels


def test_din_beats_its_sum_pooled_base_model():
    train, (test, test_y) = _behaviour_data(3000, seed=3), _behaviour_data(1000, seed=4)
    aucs = {}
    for use_attention in (True, False):
        lamina.manual_seed(0)
        model = DIN(40, embed_dim=4, attention_mlp=(16,), mlp_dims=(32, 16), category_vocab=10,
                    activation="dice", use_attention=use_attention)
        fit_ctr(model, *train, epochs=5, lr=0.02)
        aucs[use_attention] = roc_auc_score(test_y, model(*test).numpy())
    print(f"DIN: AUC {aucs[True]:.3f}, sum-pooled {aucs[False]:.3f}")
    assert aucs[True] > aucs[False] + 0.1
