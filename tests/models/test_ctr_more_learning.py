"""Wide & Deep, AutoInt and xDeepFM learn planted feature interactions of second and third order
that logistic regression on the one-hot fields cannot see (test AUC on held-out samples); at the
same training budget xDeepFM's CIN finds the third-order term that Wide & Deep without crosses
misses, and Wide & Deep given the planted crosses as wide features finds both."""

from __future__ import annotations

import numpy as np
import pytest
from ctr_checks import fit_ctr, logistic_regression_auc

import lamina
from lamina.models import AutoInt, WideAndDeep, XDeepFM
from lamina.models.graph_autoencoder import roc_auc_score

FIELD_DIMS = (6, 6, 6, 6, 6, 6)
EPOCHS = 5


def _field_data(n: int, seed: int):
    """Fields 0..4 carry random signs s_f (half of each field's values +1);
    P(click) = sigmoid(2.5 s_0 s_1 + 2.5 s_2 s_3 s_4); field 5 is noise. No field, and for the
    third-order term no pair of fields, says anything about the click on its own."""
    balanced = np.repeat([-1.0, 1.0], 3)
    signs = np.stack([np.random.default_rng(200 + f).permutation(balanced) for f in range(5)])
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, n_f, size=n) for n_f in FIELD_DIMS], axis=1)
    s = [signs[f, ids[:, f]] for f in range(5)]
    logit = 2.5 * s[0] * s[1] + 2.5 * s[2] * s[3] * s[4]
    return ids, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32), logit


MODELS = {
    "WideAndDeep": lambda: WideAndDeep(FIELD_DIMS, embed_dim=4, mlp_dims=(16,)),
    "WideAndDeep+crosses": lambda: WideAndDeep(FIELD_DIMS, embed_dim=4, mlp_dims=(16,),
                                               cross_fields=((0, 1), (2, 3, 4))),
    "AutoInt": lambda: AutoInt(FIELD_DIMS, embed_dim=4, num_layers=2, num_heads=2, attention_dim=4),
    "XDeepFM": lambda: XDeepFM(FIELD_DIMS, embed_dim=4, cin_layer_sizes=(8, 8), mlp_dims=(16,)),
}


@pytest.fixture(scope="module")
def aucs():
    (train_ids, train_y, _), (test_ids, test_y, planted) = _field_data(3000, seed=1), _field_data(1000, seed=2)
    result = {"logistic regression": logistic_regression_auc(FIELD_DIMS, train_ids, train_y, test_ids, test_y),
              "planted rule": roc_auc_score(test_y, planted)}
    for name, make in MODELS.items():
        lamina.manual_seed(0)
        model = make()
        fit_ctr(model, (train_ids,), train_y, epochs=EPOCHS, lr=0.03)
        result[name] = roc_auc_score(test_y, model(test_ids).numpy())
    print(", ".join(f"{name} {auc:.3f}" for name, auc in result.items()))
    return result


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_beats_logistic_regression(name, aucs):
    assert aucs["logistic regression"] < 0.6 and aucs[name] > aucs["logistic regression"] + 0.15


def test_cin_and_crosses_find_the_third_order_term(aucs):
    assert aucs["XDeepFM"] > aucs["WideAndDeep"] + 0.05
    assert aucs["WideAndDeep+crosses"] > aucs["WideAndDeep"] + 0.05
    assert min(aucs["XDeepFM"], aucs["WideAndDeep+crosses"]) > aucs["planted rule"] - 0.03
