"""Knowledge-graph embeddings: scores against their formulas and torch (complex tensors for
ComplEx and RotatE), RotatE's exact inversion and composition, DistMult's symmetry, the losses
against torch, negative sampling, and learning a synthetic graph."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina.data import split_triples, synthetic_knowledge_graph
from lamina.errors import ShapeError
from lamina.models import (
    ComplEx,
    DistMult,
    RotatE,
    TransE,
    corrupt_triples,
    evaluate_link_prediction,
    fit_kge,
    margin_ranking_loss,
    one_to_n_loss,
    self_adversarial_loss,
)

N_ENTITIES, N_RELATIONS, DIM = 7, 3, 6
HEADS, RELATIONS, TAILS = np.array([0, 6, 2, 0, 3]), np.array([1, 2, 0, 1, 0]), np.array([4, 1, 2, 4, 5])


def _model(kind: str, seed: int = 0):
    if kind == "transe1":
        model = TransE(N_ENTITIES, N_RELATIONS, DIM, p=1)
    elif kind == "transe2":
        model = TransE(N_ENTITIES, N_RELATIONS, DIM, p=2)
    else:
        model = {"distmult": DistMult, "complex": ComplEx, "rotate": RotatE}[kind](N_ENTITIES, N_RELATIONS, DIM)
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data[...] = rng.normal(0, 1, param.shape)
    return model


def _complex(rows: np.ndarray) -> np.ndarray:
    half = rows.shape[-1] // 2
    return rows[..., :half] + 1j * rows[..., half:]


def _numpy_scores(kind: str, entities, relations, h, r, t) -> np.ndarray:
    """The published formulas, written with NumPy (complex numbers for ComplEx and RotatE)."""
    if kind in ("transe1", "transe2"):
        diff = entities[h] + relations[r] - entities[t]
        return -np.linalg.norm(diff, ord=1 if kind == "transe1" else 2, axis=-1)
    if kind == "distmult":
        return np.sum(entities[h] * relations[r] * entities[t], axis=-1)
    e = _complex(entities)
    if kind == "complex":
        return np.real(np.sum(e[h] * _complex(relations)[r] * np.conj(e[t]), axis=-1))
    return -np.sum(np.abs(e[h] * np.exp(1j * relations[r]) - e[t]), axis=-1)


def _torch_scores(kind: str, entities, relations, h, r, t):
    """The same with torch (complex tensors); h, r, t broadcast."""
    if kind in ("transe1", "transe2"):
        diff = entities[h] + relations[r] - entities[t]
        return -torch.linalg.vector_norm(diff, ord=1 if kind == "transe1" else 2, dim=-1)
    if kind == "distmult":
        return (entities[h] * relations[r] * entities[t]).sum(-1)
    half = entities.shape[-1] // 2
    e = torch.complex(entities[:, :half], entities[:, half:])
    if kind == "complex":
        rel = torch.complex(relations[:, :half], relations[:, half:])
        return torch.real((e[h] * rel[r] * torch.conj(e[t])).sum(-1))
    rotation = torch.polar(torch.ones_like(relations), relations)
    return -torch.abs(e[h] * rotation[r] - e[t]).sum(-1)


KINDS = ["transe1", "transe2", "distmult", "complex", "rotate"]


@pytest.mark.parametrize("kind", KINDS)
def test_scores_match_formula_and_torch(kind, f64):
    model = _model(kind)
    entities, relations = model.entities.weight, model.relations.weight
    expected = _numpy_scores(kind, entities.numpy(), relations.numpy(), HEADS, RELATIONS, TAILS)
    upstream = np.random.default_rng(1).normal(size=(3, len(HEADS), N_ENTITIES))
    scores = model(HEADS, RELATIONS, TAILS)
    all_tails = model.score_t(HEADS, RELATIONS)
    all_heads = model.score_h(RELATIONS, TAILS)
    assert_close(scores.numpy(), expected, 1e-12, "score_hrt vs formula")
    rows = np.arange(len(HEADS))
    assert_close(all_tails.numpy()[rows, TAILS], expected, 1e-12, "score_t at the true tails")
    assert_close(all_heads.numpy()[rows, HEADS], expected, 1e-12, "score_h at the true heads")
    total = (scores * lamina.tensor(upstream[0, :, 0])).sum() + (all_tails * lamina.tensor(upstream[1])).sum() \
        + (all_heads * lamina.tensor(upstream[2])).sum()
    total.backward()

    ent = torch.tensor(entities.numpy(), requires_grad=True)
    rel = torch.tensor(relations.numpy(), requires_grad=True)
    h, r, t = (torch.tensor(ids) for ids in (HEADS, RELATIONS, TAILS))
    every = torch.arange(N_ENTITIES)
    t_scores = _torch_scores(kind, ent, rel, h, r, t)
    t_tails = _torch_scores(kind, ent, rel, h[:, None], r[:, None], every[None, :])
    t_heads = _torch_scores(kind, ent, rel, every[None, :], r[:, None], t[:, None])
    assert_close(scores.numpy(), t_scores.detach().numpy(), 1e-12, "score_hrt vs torch")
    assert_close(all_tails.numpy(), t_tails.detach().numpy(), 1e-12, "score_t vs torch")
    assert_close(all_heads.numpy(), t_heads.detach().numpy(), 1e-12, "score_h vs torch")
    up = torch.tensor(upstream)
    ((t_scores * up[0, :, 0]).sum() + (t_tails * up[1]).sum() + (t_heads * up[2]).sum()).backward()
    assert_close(entities.grad, ent.grad.numpy(), 1e-10, "entity gradients")
    assert_close(relations.grad, rel.grad.numpy(), 1e-10, "relation gradients")


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, f64):
    model = _model(kind, seed=2)
    assert lamina.gradcheck(lambda *_: (model(HEADS, RELATIONS, TAILS) ** 2).sum()
                            + model.score_t(HEADS[:2], RELATIONS[:2]).sum(), *model.parameters())


def test_rotate_models_inversion_and_composition_exactly(f64):
    """Hand-set phases: child = -parent, grandparent = 2 parent; entities placed so that a
    node's parent is the node rotated by the parent phases."""
    model = RotatE(4, 3, 8)
    parent, child, grandparent = 0, 1, 2
    theta = np.array([0.3, -1.1, 2.0, 0.7])
    model.relations.weight.data[...] = np.stack([theta, -theta, 2 * theta])
    node = np.array([1.0 + 0.5j, -0.2 + 1j, 0.8 - 0.3j, 0.1 + 0.1j])
    chain = [node, node * np.exp(1j * theta), node * np.exp(2j * theta), 0.5 - node]   # 3 is unrelated
    model.entities.weight.data[...] = np.stack([np.concatenate([c.real, c.imag]) for c in chain])
    h, r, t = np.array([0, 1, 1, 2, 0, 0]), np.array([parent, parent, child, child, grandparent, parent]), \
        np.array([1, 2, 0, 1, 2, 3])
    scores = model(h, r, t).numpy()
    assert np.abs(scores[:5]).max() < 1e-12                   # exact facts score 0 (the maximum)
    assert scores[5] < -1.0                                  # a false fact does not
    assert np.argmax(model.score_t(np.array([0]), np.array([grandparent])).numpy()) == 2


def test_distmult_is_symmetric(f64):
    model = _model("distmult", seed=3)
    assert_close(model(HEADS, RELATIONS, TAILS).numpy(), model(TAILS, RELATIONS, HEADS).numpy(), 1e-14, "f(t, r, h)")
    assert_close(model.score_t(HEADS, RELATIONS).numpy(), model.score_h(RELATIONS, HEADS).numpy(), 1e-14,
                 "score_t vs score_h")


def test_complex_is_not_symmetric(f64):
    model = _model("complex", seed=3)
    assert np.abs(model(HEADS, RELATIONS, TAILS).numpy() - model(TAILS, RELATIONS, HEADS).numpy()).max() > 1e-3


def test_errors_name_the_model():
    with pytest.raises(ValueError, match=r"ComplEx: dim must be even .* got dim=5"):
        ComplEx(4, 2, 5)
    with pytest.raises(ValueError, match=r"RotatE: dim must be even"):
        RotatE(4, 2, 3)
    with pytest.raises(ValueError, match=r"TransE: p must be 1 or 2, got 3"):
        TransE(4, 2, 4, p=3)
    model = DistMult(4, 2, 4)
    with pytest.raises(ValueError, match=r"DistMult: head id 4 is out of range; head ids must be in \[0, 4\)"):
        model(np.array([4]), np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match=r"DistMult: relation id -1 is out of range"):
        model.score_t(np.array([0]), np.array([-1]))
    with pytest.raises(ValueError, match=r"RotatE: tail id 9"):
        RotatE(4, 2, 4).score_h(np.array([0]), np.array([9]))
    with pytest.raises(ShapeError, match=r"TransE: the head, relation and tail ids must have one length"):
        TransE(4, 2, 4)(np.array([0, 1]), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"one_to_n_loss: tail id 7 is out of range"):
        one_to_n_loss(model, np.array([[0, 1, 7]]))


def test_margin_ranking_loss_matches_torch(f64):
    rng = np.random.default_rng(4)
    positive, negative = rng.normal(size=5), rng.normal(size=(5, 3))
    ours = [lamina.tensor(positive, requires_grad=True), lamina.tensor(negative, requires_grad=True)]
    theirs = [torch.tensor(positive, requires_grad=True), torch.tensor(negative, requires_grad=True)]
    value = margin_ranking_loss(*ours, margin=0.7)
    pos, neg = theirs
    expected = torch.nn.functional.margin_ranking_loss(pos[:, None].expand(5, 3), neg, torch.ones(5, 3), margin=0.7)
    value.backward()
    expected.backward()
    assert_close(value.numpy(), expected.detach().numpy(), 1e-12, "loss")
    for a, b, what in zip(ours, theirs, ("positive", "negative")):
        assert_close(a.grad, b.grad.numpy(), 1e-12, f"{what} gradient")


def test_self_adversarial_loss_matches_torch(f64):
    rng = np.random.default_rng(5)
    positive, negative = rng.normal(size=4) * 3, rng.normal(size=(4, 6)) * 3
    ours = [lamina.tensor(positive, requires_grad=True), lamina.tensor(negative, requires_grad=True)]
    pos, neg = torch.tensor(positive, requires_grad=True), torch.tensor(negative, requires_grad=True)
    value = self_adversarial_loss(*ours, margin=2.0, temperature=0.5)
    weights = torch.softmax(0.5 * neg, dim=1).detach()
    logsig = torch.nn.functional.logsigmoid
    expected = (-logsig(2.0 + pos) - (weights * logsig(-2.0 - neg)).sum(1)).mean()
    value.backward()
    expected.backward()
    assert_close(value.numpy(), expected.detach().numpy(), 1e-12, "loss")
    assert_close(ours[0].grad, pos.grad.numpy(), 1e-12, "positive gradient")
    assert_close(ours[1].grad, neg.grad.numpy(), 1e-12, "negative gradient")


def test_one_to_n_loss_matches_torch(f64):
    model = _model("complex", seed=6)
    triples = np.stack([HEADS, RELATIONS, TAILS], axis=1)
    value = one_to_n_loss(model, triples)
    value.backward()
    ent = torch.tensor(model.entities.weight.numpy(), requires_grad=True)
    rel = torch.tensor(model.relations.weight.numpy(), requires_grad=True)
    logits = _torch_scores("complex", ent, rel, torch.tensor(HEADS)[:, None], torch.tensor(RELATIONS)[:, None],
                           torch.arange(N_ENTITIES)[None, :])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(TAILS))
    expected.backward()
    assert_close(value.numpy(), expected.detach().numpy(), 1e-12, "loss")
    assert_close(model.entities.weight.grad, ent.grad.numpy(), 1e-10, "entity gradients")
    assert_close(model.relations.weight.grad, rel.grad.numpy(), 1e-10, "relation gradients")


def test_corrupt_triples_changes_one_side_uniformly_and_is_seeded():
    triples = np.tile(np.array([[3, 1, 4]]), (400, 1))
    negatives = corrupt_triples(triples, 10, num_negatives=5, seed=7)
    assert negatives.shape == (400, 5, 3)
    assert np.array_equal(negatives, corrupt_triples(triples, 10, num_negatives=5, seed=7))
    assert not np.array_equal(negatives, corrupt_triples(triples, 10, num_negatives=5, seed=8))
    assert (negatives[..., 1] == 1).all()
    head_changed, tail_changed = negatives[..., 0] != 3, negatives[..., 2] != 4
    assert not (head_changed & tail_changed).any()
    assert 0.35 < head_changed.mean() < 0.5 and 0.35 < tail_changed.mean() < 0.5   # 1/2 x 9/10 each
    drawn = np.concatenate([negatives[..., 0][head_changed], negatives[..., 2][tail_changed]])
    assert np.bincount(drawn, minlength=10).min() > 50                             # every entity is drawn


LEARNING = [   # (name, model, fit_kge options, lowest MRR accepted); MRRs seen over 5 seeds: 0.73-0.79,
    # 0.78-0.85, 0.48-0.55 (TransE cannot model the symmetric sibling relation)
    ("rotate", lambda kg: RotatE(kg.n_entities, kg.n_relations, 32), dict(loss="self_adversarial", margin=6.0), 0.6),
    ("complex", lambda kg: ComplEx(kg.n_entities, kg.n_relations, 32), dict(loss="1-n"), 0.6),
    ("transe", lambda kg: TransE(kg.n_entities, kg.n_relations, 32, p=2), dict(loss="margin", margin=4.0), 0.35),
]


@pytest.mark.parametrize("name, build, options, lowest", LEARNING, ids=[case[0] for case in LEARNING])
def test_learns_the_synthetic_graph(name, build, options, lowest):
    kg = synthetic_knowledge_graph(branching=3, depth=4)
    train, test = split_triples(kg.triples, (0.9, 0.1), seed=0)
    lamina.manual_seed(0)
    model = build(kg)
    baseline = evaluate_link_prediction(model, test, known=[train, test])["mrr"]
    start = time.perf_counter()
    fit_kge(model, train, epochs=60, batch_size=128, lr=0.02, seed=0, **options)
    seconds = time.perf_counter() - start
    metrics = evaluate_link_prediction(model, test, known=[train, test])
    print(f"{name}: random MRR {baseline:.3f}, trained MRR {metrics['mrr']:.3f}, Hits@10 "
          f"{metrics['hits@10']:.3f} in {seconds:.2f} s")
    assert baseline < 0.1
    assert metrics["mrr"] > max(lowest, 5 * baseline)
    assert metrics["hits@10"] > 0.8


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind):
    from lamina.nn.layer import layer_from_config

    model = _model(kind)
    copy = layer_from_config({"class_name": type(model).__name__, "config": model.get_config()})
    assert copy.get_config() == model.get_config()
    assert [p.shape for p in copy.parameters()] == [p.shape for p in model.parameters()]
