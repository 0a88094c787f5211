"""Two-tower retrieval: towers against PyTorch, the in-batch softmax with the logQ
correction against its formula, and retrieval learned past a random ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close
from lamina import optim
from lamina.data import leave_one_out_split, synthetic_implicit
from lamina.errors import ShapeError
from lamina.models import TwoTower, in_batch_softmax_loss, item_log_frequencies
from lamina.train import ranking_metrics, score_items


def _torch_tower(p, prefix, ids, hidden):
    x = p[f"{prefix}.embedding.weight"][ids]
    for k in range(len(hidden) + 1):
        name = f"{prefix}.dense{'' if k == 0 else f'_{k}'}"
        x = x @ p[f"{name}.weight"] + p[f"{name}.bias"]
        x = torch.relu(x) if k < len(hidden) else x
    return x


def test_towers_scores_and_corrected_in_batch_loss_match_torch():
    lamina.set_default_dtype(np.float64)
    model = TwoTower(6, 9, dim=3, hidden=(5,), embed_dim=4)
    rng = np.random.default_rng(0)
    for param in model.parameters():
        param.data[...] = rng.normal(0, 0.8, param.shape)
    users, items = np.array([0, 5, 2, 2]), np.array([8, 1, 1, 3])      # item 1 twice: an accidental negative
    log_q = np.log(rng.uniform(0.01, 0.3, 4))
    scores = model(users, items)
    loss = model.in_batch_loss(users, items, log_q, temperature=0.7)
    loss.backward()

    p = {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}
    u = _torch_tower(p, "user_tower", torch.tensor(users), (5,))
    v = _torch_tower(p, "item_tower", torch.tensor(items), (5,))
    logits = u @ v.T / 0.7 - torch.tensor(log_q)[None, :]
    by_formula = -(logits.diagonal() - torch.logsumexp(logits, dim=1)).mean()
    by_formula.backward()
    assert_close(scores.numpy(), (u * v).sum(-1).detach().numpy(), 1e-12, "scores")
    assert loss.item() == pytest.approx(by_formula.item(), rel=1e-12)
    assert by_formula.item() == pytest.approx(TF.cross_entropy(logits, torch.arange(4)).item(), rel=1e-12)
    for name, param in model.named_parameters():      # the item tower's last bias gets an exact 0 (softmax shift)
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)
    assert_close(model.score_all(users)[np.arange(4), items], scores.numpy(), 1e-12, "score_all")


def test_the_correction_is_the_uncorrected_loss_of_shifted_logits():
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(1)
    u, v, log_q = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), np.log(rng.uniform(0.05, 0.5, 5))
    plain = in_batch_softmax_loss(u, v).item()
    assert plain == pytest.approx(in_batch_softmax_loss(u, v, np.zeros(5)).item(), rel=1e-14)
    # a constant log q (uniform sampling) changes nothing; a varying one lowers popular items' logits
    assert in_batch_softmax_loss(u, v, np.full(5, -2.0)).item() == pytest.approx(plain, rel=1e-12)
    assert in_batch_softmax_loss(u, v, log_q).item() != pytest.approx(plain, rel=1e-6)
    with pytest.raises(ShapeError, match=r"log_q must hold one value per item of the batch, shape \(5,\)"):
        in_batch_softmax_loss(u, v, np.zeros(4))
    with pytest.raises(ShapeError, match="in_batch_softmax_loss: expected user and item vectors of one shape"):
        in_batch_softmax_loss(u, v[:4])


def test_item_log_frequencies():
    log_q = item_log_frequencies(np.array([0, 0, 2]), 4, smoothing=1.0)
    assert np.exp(log_q) == pytest.approx([3 / 7, 1 / 7, 2 / 7, 1 / 7])
    with pytest.raises(ValueError, match=r"item_log_frequencies: item id 4 is out of range"):
        item_log_frequencies(np.array([4]), 4)


def test_errors_name_the_model():
    model = TwoTower(3, 4, dim=2)
    with pytest.raises(ValueError, match=r"TwoTower: user id 3 is out of range; user ids must be in \[0, 3\)"):
        model(np.array([3]), np.array([0]))
    with pytest.raises(ShapeError, match="TwoTower: users and items must pair up"):
        model.in_batch_loss(np.array([0, 1]), np.array([0]))


def test_retrieval_recall_beats_a_random_ranking():
    lamina.manual_seed(0)
    train, test = leave_one_out_split(synthetic_implicit(200, 200, 30, temperature=0.3, seed=0))
    model = TwoTower(200, 200, dim=16)
    log_q = item_log_frequencies(train.items, 200)
    opt = optim.Adam(model, lr=0.02)
    rng = np.random.default_rng(0)
    for _ in range(2):
        for batch in np.array_split(rng.permutation(len(train)), len(train) // 128):
            loss = model.in_batch_loss(train.users[batch], train.items[batch], log_q[train.items[batch]], 0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    users = np.arange(200)
    relevant = [test.items[test.users == user] for user in users]
    learned = ranking_metrics(score_items(model, users), relevant, k=10, exclude=train.items_of())
    random_scores = np.random.default_rng(1).random((200, 200))
    chance = ranking_metrics(random_scores, relevant, k=10, exclude=train.items_of())
    assert chance["recall"] < 0.12                       # 10 of about 170 unseen items: 0.06 expected
    assert learned["recall"] > chance["recall"] + 0.15   # about 0.33


def test_gradcheck_of_the_corrected_loss():
    lamina.set_default_dtype(np.float64)
    model = TwoTower(4, 5, dim=2, hidden=(3,))
    users, items, log_q = np.array([0, 3, 1]), np.array([4, 0, 0]), np.log(np.array([0.2, 0.5, 0.5]))
    assert lamina.gradcheck(lambda *_: model.in_batch_loss(users, items, log_q, 0.5), *model.parameters())
