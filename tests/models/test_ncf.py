"""NCF (GMF, MLP, NeuMF): forward and gradients against PyTorch, pretraining from GMF and MLP,
and learning implicit feedback past popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import optim
from lamina.data import InteractionDataset, leave_one_out_split, synthetic_implicit
from lamina.errors import ShapeError
from lamina.models import GMF, NCF, NCFMLP, NeuMF
from lamina.train import Trainer, evaluate_sampled

USERS, ITEMS = np.array([0, 6, 3, 0, 2]), np.array([4, 4, 1, 4, 7])
LABELS = np.array([1.0, 0.0, 1.0, 0.0, 0.0])


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data[...] = rng.normal(0, 0.7, param.shape)
    return model


def _torch_params(model):
    return {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}


def _torch_mlp(p, prefix, x, widths):
    for k in range(len(widths)):
        name = f"{prefix}tower.dense{'' if k == 0 else f'_{k}'}"
        x = torch.relu(x @ p[f"{name}.weight"] + p[f"{name}.bias"])
    return x


def _torch_gmf(p, prefix, u, i):
    return p[f"{prefix}user_embedding.weight"][u] * p[f"{prefix}item_embedding.weight"][i]


def _torch_mlp_features(p, prefix, u, i, widths):
    joined = torch.cat([p[f"{prefix}user_embedding.weight"][u], p[f"{prefix}item_embedding.weight"][i]], -1)
    return _torch_mlp(p, prefix, joined, widths)


def _check_against_torch(model, torch_logits):
    logits = model(USERS, ITEMS)
    F.binary_cross_entropy(logits, LABELS, from_logits=True).backward()
    params = _torch_params(model)
    expected = torch_logits(params, torch.tensor(USERS), torch.tensor(ITEMS))
    TF.binary_cross_entropy_with_logits(expected, torch.tensor(LABELS)).backward()
    assert_close(logits.numpy(), expected.detach().numpy(), 1e-12, "logits")
    for name, param in model.named_parameters():
        assert_close(param.grad, params[name].grad.numpy(), 1e-10, name)


def _head(p, features):
    return (features @ p["head.weight"] + p["head.bias"])[:, 0]


def test_gmf_matches_torch():
    lamina.set_default_dtype(np.float64)
    model = _randomized(GMF(7, 8, 3))
    _check_against_torch(model, lambda p, u, i: _head(p, _torch_gmf(p, "", u, i)))


def test_mlp_matches_torch():
    lamina.set_default_dtype(np.float64)
    model = _randomized(NCFMLP(7, 8, 3, layers=(6, 4)))
    _check_against_torch(model, lambda p, u, i: _head(p, _torch_mlp_features(p, "", u, i, (6, 4))))


def test_neumf_matches_torch_and_has_the_papers_parameter_count():
    lamina.set_default_dtype(np.float64)
    model = _randomized(NeuMF(7, 8, gmf_dim=3, mlp_dim=4, layers=(6, 5)))

    def neumf(p, u, i):
        fused = torch.cat([_torch_gmf(p, "gmf.", u, i), _torch_mlp_features(p, "mlp.", u, i, (6, 5))], -1)
        return _head(p, fused)

    _check_against_torch(model, neumf)
    embeddings = (7 + 8) * (3 + 4)
    tower = (8 * 6 + 6) + (6 * 5 + 5)
    assert model.num_parameters() == embeddings + tower + (3 + 5 + 1) and NCF is NeuMF


def test_pretrained_neumf_blends_the_two_models():
    gmf, mlp = _randomized(GMF(7, 8, 3), 1), _randomized(NCFMLP(7, 8, 4, (6, 5)), 2)
    model = NeuMF.pretrained(gmf, mlp, alpha=0.3)
    expected = 0.3 * gmf(USERS, ITEMS).numpy() + 0.7 * mlp(USERS, ITEMS).numpy()
    assert_close(model(USERS, ITEMS).numpy(), expected, 1e-5, "blended logits")
    assert np.array_equal(model.mlp.user_embedding.weight.data, mlp.user_embedding.weight.data)
    with pytest.raises(ValueError, match="NeuMF.pretrained: the GMF has 7 users"):
        NeuMF.pretrained(gmf, NCFMLP(9, 8, 4, (6, 5)))


def test_errors_name_the_model():
    with pytest.raises(ValueError, match=r"NeuMF: item id 8 is out of range; item ids must be in \[0, 8\)"):
        NeuMF(7, 8)(np.array([0]), np.array([8]))
    with pytest.raises(ShapeError, match="GMF: users and items must pair up"):
        GMF(7, 8)(np.array([0, 1, 2]), np.array([0]))
    with pytest.raises(ValueError, match="NCFMLP: layers must name at least one"):
        NCFMLP(7, 8, layers=())


def test_neumf_learns_implicit_feedback_better_than_popularity():
    lamina.manual_seed(0)
    train, test = leave_one_out_split(synthetic_implicit(200, 200, 30, temperature=0.3, seed=0))
    model = NeuMF(200, 200, gmf_dim=8, mlp_dim=16, layers=(32, 16, 8))
    loss = lambda logits, labels: F.binary_cross_entropy(logits, labels, from_logits=True)  # noqa: E731
    trainer = Trainer(model, loss=loss, optimizer=optim.Adam(model, lr=0.01), metrics=(), verbose=0)
    dataset = InteractionDataset(train, negatives=4, seed=0)
    for _ in range(4):
        trainer.fit(dataset, epochs=1, batch_size=256)
        dataset.resample()

    class Popularity:
        def score_all(self, users):
            return np.tile(train.item_counts().astype(float), (len(users), 1))

    learned = evaluate_sampled(model, train, test, negatives=99, k=10, seed=1)
    popular = evaluate_sampled(Popularity(), train, test, negatives=99, k=10, seed=1)
    assert learned["hit_rate"] > popular["hit_rate"] + 0.2          # about 0.5 and 0.13
    assert learned["ndcg"] > popular["ndcg"] + 0.1


def test_gradcheck_and_save_load(tmp_path):
    lamina.set_default_dtype(np.float64)
    model = _randomized(NeuMF(7, 8, gmf_dim=2, mlp_dim=3, layers=(4, 3)), seed=3)
    assert lamina.gradcheck(lambda *_: (model(USERS, ITEMS) ** 2).sum(), *model.parameters())
    lamina.save(model, tmp_path / "neumf.safetensors")
    again = lamina.load(tmp_path / "neumf.safetensors")
    assert isinstance(again, NeuMF) and np.array_equal(again(USERS, ITEMS).numpy(), model(USERS, ITEMS).numpy())


def test_recommend_scores_pairs_for_models_without_score_all():
    from lamina.data import Interactions
    from lamina.train import recommend

    model = _randomized(GMF(3, 6, 2), seed=4)
    seen = Interactions(users=[1, 1], items=[0, 5], values=[1.0, 1.0], timestamps=[0, 1], n_users=3, n_items=6)
    items, scores = recommend(model, np.array([1, 2]), k=3, exclude=seen)
    everything = model(np.repeat([1, 2], 6), np.tile(np.arange(6), 2)).numpy().reshape(2, 6)
    everything[0, [0, 5]] = -np.inf
    assert items.tolist() == np.argsort(-everything, axis=1, kind="stable")[:, :3].tolist()
    assert_close(scores, np.sort(everything, axis=1)[:, ::-1][:, :3], 1e-6, "top scores")
