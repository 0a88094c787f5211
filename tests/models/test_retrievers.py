"""DPR's dual encoder and ColBERT: the late-interaction score against a NumPy loop and a
float64 torch rewrite, the in-batch loss with hard negatives against torch, exact search and
re-ranking against brute force, query augmentation, document masks and saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.models import (
    ColBERT,
    DenseIndex,
    DPRDualEncoder,
    augment_queries,
    document_token_mask,
    in_batch_negatives_loss,
    late_interaction_scores,
)

TINY = {"vocab_size": 12, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 12, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}
MASK, PUNCT = 2, 3


def _unit(*shape, seed=0):
    x = randn(*shape, seed=seed)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _masks(seed=0):
    rng = np.random.default_rng(seed)
    document_mask = rng.random((4, 6)) < 0.7
    document_mask[:, 0] = True
    query_mask = rng.random((3, 5)) < 0.8
    return document_mask, query_mask


def _numpy_late_interaction(q, d, document_mask, query_mask):
    scores = np.zeros((len(q), len(d)))
    for a in range(len(q)):
        for b in range(len(d)):
            for i in range(q.shape[1]):
                if query_mask[a, i]:
                    scores[a, b] += max(q[a, i] @ d[b, j] for j in range(d.shape[1]) if document_mask[b, j])
    return scores


def _torch_late_interaction(q, d, document_mask, query_mask):
    similarity = torch.einsum("aid,bjd->abij", q, d)
    similarity = similarity.masked_fill(~torch.from_numpy(document_mask)[None, :, None, :], float("-inf"))
    best = similarity.max(dim=3).values * torch.from_numpy(query_mask)[:, None, :].to(q.dtype)
    return best.sum(dim=2)


def test_late_interaction_equals_a_numpy_loop_with_masks():
    q, d = _unit(3, 5, 4), _unit(4, 6, 4, seed=1)
    document_mask, query_mask = _masks()
    got = late_interaction_scores(lamina.tensor(q, dtype=np.float64), lamina.tensor(d, dtype=np.float64),
                                  document_mask, query_mask)
    np.testing.assert_allclose(got.numpy(), _numpy_late_interaction(q, d, document_mask, query_mask), rtol=1e-12)
    unmasked = late_interaction_scores(lamina.tensor(q, dtype=np.float64), lamina.tensor(d, dtype=np.float64))
    full = np.ones((4, 6), bool), np.ones((3, 5), bool)
    np.testing.assert_allclose(unmasked.numpy(), _numpy_late_interaction(q, d, *full), rtol=1e-12)


def test_late_interaction_matches_torch_in_values_and_gradients():
    document_mask, query_mask = _masks(seed=2)
    compare_with_torch(lambda q, d: late_interaction_scores(q, d, document_mask, query_mask),
                       lambda q, d: _torch_late_interaction(q, d, document_mask, query_mask),
                       randn(3, 5, 4), randn(4, 6, 4, seed=1), dtype=np.float64)


def test_late_interaction_gradients_float64():
    document_mask, query_mask = _masks(seed=3)
    assert check_gradients(lambda q, d: late_interaction_scores(q, d, document_mask, query_mask),
                           randn(3, 5, 4), randn(4, 6, 4, seed=1))


def _lamina_in_batch(q, p, n):
    return in_batch_negatives_loss(F.matmul(q, F.transpose(F.concat([p, n]), 1, 0)))


def _torch_in_batch(q, p, n):
    scores = q @ torch.cat([p, n]).T
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(q)))


def test_in_batch_loss_with_hard_negatives_matches_torch():
    arrays = randn(4, 5), randn(4, 5, seed=1), randn(6, 5, seed=2)
    compare_with_torch(_lamina_in_batch, _torch_in_batch, *arrays, dtype=np.float64)
    compare_with_torch(_lamina_in_batch, _torch_in_batch, *arrays)
    assert check_gradients(_lamina_in_batch, *arrays)
    with pytest.raises(ShapeError, match="in_batch_negatives_loss.*M >= B"):
        in_batch_negatives_loss(np.zeros((3, 2)))


def _dpr(shared=False):
    lamina.manual_seed(0)
    return DPRDualEncoder(shared=shared, **TINY)


def _ids(*shape, seed=0, low=1):
    return np.random.default_rng(seed).integers(low, TINY["vocab_size"], shape)


def test_dpr_scores_are_dot_products_of_cls_vectors():
    model = _dpr()
    queries, passages = _ids(3, 5), _ids(4, 7, seed=1)
    passage_mask = np.ones((4, 7), int)
    passage_mask[:, 5:] = 0
    with no_grad():
        q = model.query_encoder(queries).numpy()[:, 0]
        p = model.passage_encoder(passages, attention_mask=passage_mask).numpy()[:, 0]
        scores = model(queries, passages, passage_mask=passage_mask).numpy()
    np.testing.assert_allclose(scores, q @ p.T, rtol=1e-5, atol=1e-5)
    shared = _dpr(shared=True)
    assert shared.passage_encoder is shared.query_encoder
    assert 2 * len(shared.state_dict()) == len(model.state_dict())


def test_dpr_loss_is_in_batch_cross_entropy_with_hard_negatives():
    model = _dpr()
    queries, passages = _ids(3, 5), _ids(5, 6, seed=1)        # 3 positives, then 2 hard negatives
    loss = model.loss(queries, passages)
    with no_grad():
        scores = model(queries, passages).numpy().astype(np.float64)
    expected = np.mean(np.log(np.exp(scores).sum(1)) - scores[np.arange(3), np.arange(3)])
    assert abs(float(loss.numpy()) - expected) < 1e-5
    loss.backward()
    assert all(np.abs(p.grad).sum() > 0 for p in (model.query_encoder.embeddings.word_embeddings.weight,
                                                            model.passage_encoder.embeddings.word_embeddings.weight))


def test_dense_index_search_is_the_exact_top_k():
    model = _dpr()
    index = DenseIndex(model, batch_size=4)
    passages, queries = _ids(11, 6, seed=1), _ids(5, 4)
    first = index.encode_passages(passages[:7])
    index.encode_passages(passages[7:])
    assert len(index) == 11 and first.shape == (7, TINY["hidden_size"])
    scores, found = index.search(queries, k=4)
    with no_grad():
        q = model.encode_queries(queries).numpy()
        p = model.encode_passages(passages).numpy()
    brute = q @ p.T
    expected = np.argsort(-brute, axis=1)[:, :4]
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, axis=1), rtol=1e-5, atol=1e-5)
    assert index.search(queries, k=50)[1].shape == (5, 11)
    with pytest.raises(ValueError, match="empty"):
        DenseIndex(model).search(queries, 2)


def test_query_augmentation_pads_with_mask_ids():
    ids = np.array([[1, 5, 6, 0, 0], [1, 7, 8, 9, 4]])
    np.testing.assert_array_equal(augment_queries(ids, 7, MASK),
                                  [[1, 5, 6, MASK, MASK, MASK, MASK], [1, 7, 8, 9, 4, MASK, MASK]])
    np.testing.assert_array_equal(augment_queries(ids, 3, MASK), [[1, 5, 6], [1, 7, 8]])
    model = ColBERT(dim=4, query_maxlen=7, mask_token_id=MASK, skiplist=(PUNCT,), **TINY)
    with no_grad():
        vectors = model.encode_queries(ids).numpy()
    assert vectors.shape == (2, 7, 4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("attend", [False, True])
def test_mask_tokens_are_attended_only_on_request(attend):
    ids = np.array([[1, 5, 6, 0], [1, 7, 8, 9]])
    vectors = []
    for length in (6, 9):
        lamina.manual_seed(0)
        model = ColBERT(dim=4, query_maxlen=length, mask_token_id=MASK, attend_to_mask_tokens=attend, **TINY)
        with no_grad():
            vectors.append(model.encode_queries(ids).numpy()[:, :4])
    real = ids != 0
    same = np.allclose(vectors[0][real], vectors[1][real], atol=1e-6)
    assert same != attend


def test_document_mask_drops_padding_and_punctuation():
    ids = np.array([[1, 5, PUNCT, 6, 0], [1, PUNCT, 7, 8, 9]])
    expected = [[True, True, False, True, False], [True, False, True, True, True]]
    np.testing.assert_array_equal(document_token_mask(ids, skiplist=(PUNCT,)), expected)
    attention = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(document_token_mask(ids, attention, skiplist=(PUNCT,)),
                                  [[True, True, False, True, False], [True, False, True, False, False]])


def _colbert():
    lamina.manual_seed(0)
    return ColBERT(dim=4, query_maxlen=6, mask_token_id=MASK, skiplist=(PUNCT,), **TINY)


def test_colbert_scores_are_the_late_interaction_of_its_token_vectors():
    model = _colbert()
    queries = np.array([[1, 5, 6, 0], [1, 7, 0, 0], [1, 8, 9, 10]])
    documents = _ids(4, 7, seed=1, low=3)
    documents[:, -2:] = 0
    documents[0, 2] = PUNCT
    with no_grad():
        q = model.encode_queries(queries).numpy().astype(np.float64)
        d, mask = model.encode_documents(documents)
        scores = model(queries, documents).numpy()
    assert not mask[0, 2] and not mask[:, -2:].any() and mask[:, :2].all()
    full = np.ones(q.shape[:2], bool)
    np.testing.assert_allclose(scores, _numpy_late_interaction(q, d.numpy(), mask, full), rtol=1e-5)


def test_colbert_loss_and_gradients_reach_the_encoder():
    model = _colbert()
    queries, documents = _ids(3, 4), _ids(5, 6, seed=1)
    loss = model.loss(queries, documents)
    with no_grad():
        scores = model(queries, documents).numpy().astype(np.float64)
    expected = np.mean(np.log(np.exp(scores).sum(1)) - scores[np.arange(3), np.arange(3)])
    assert abs(float(loss.numpy()) - expected) < 1e-5
    loss.backward()
    assert np.abs(model.linear.weight.grad).sum() > 0


def test_rerank_sorts_candidates_by_exact_late_interaction():
    model = _colbert()
    queries, documents = _ids(3, 4), _ids(9, 6, seed=1, low=3)
    candidates = np.array([[0, 4, 8, 2], [7, 1, 3, 5], [6, 0, 4, 5]])
    scores, order = model.rerank(queries, documents, candidates, batch_size=2)
    with no_grad():
        full = model(queries, documents).numpy()
    for k in range(3):
        expected = candidates[k][np.argsort(-full[k, candidates[k]])]
        np.testing.assert_array_equal(order[k], expected)
        np.testing.assert_allclose(scores[k], full[k, expected], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="candidate indices"):
        model.rerank(queries, documents, candidates + 5)


@pytest.mark.parametrize("make", [lambda: _dpr(shared=True), _colbert])
def test_retrievers_save_and_load(make, tmp_path):
    model = make()
    queries, documents = _ids(2, 4), _ids(3, 5, seed=1)
    for p in model.parameters():
        p.data = p.data + 0.01
    with no_grad():
        expected = model(queries, documents).numpy()
    lamina.save(model, tmp_path / "retriever.safetensors")
    twin = lamina.load(tmp_path / "retriever.safetensors")
    assert type(twin) is type(model) and twin.get_config() == model.get_config()
    with no_grad():
        np.testing.assert_array_equal(twin(queries, documents).numpy(), expected)


def test_readme_example_runs():
    printed, names = run_readme_section("Neural retrievers: DPR and ColBERT")
    assert printed.split() == ["(3,", "3)", "True"]
    assert names["ranked"].shape == (3, 3) and np.all(np.diff(names["ranked_scores"], axis=1) <= 0)
