"""MoCo v2/v3, BYOL, SimSiam and SwAV losses against torch rewrites of the papers' pseudo-code
and the authors' references (float64 values and gradients, stop-gradients included), and
Sinkhorn-Knopp against a NumPy rewrite."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tests.helpers import assert_close, check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina.errors import ShapeError

N, D, K = 6, 5, 7


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# ---- torch rewrites -------------------------------------------------------------------------

def torch_moco_v2(q, k, queue, t=0.2):
    # Algorithm 1 of He et al. 2020; the reference keeps the queue as (C, K)
    q, k = TF.normalize(q, dim=1), TF.normalize(k.detach(), dim=1)
    queue_ck = queue.detach().T
    l_pos = torch.bmm(q.view(len(q), 1, -1), k.view(len(k), -1, 1)).view(-1, 1)
    l_neg = torch.mm(q, queue_ck)
    logits = torch.cat([l_pos, l_neg], dim=1) / t
    return TF.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def torch_moco_v3(q1, q2, k1, k2, t=0.2):
    def ctr(q, k):
        q, k = TF.normalize(q, dim=1), TF.normalize(k.detach(), dim=1)
        logits = torch.einsum("nc,mc->nm", q, k) / t
        return TF.cross_entropy(logits, torch.arange(len(q))) * (2 * t)
    return ctr(q1, k2) + ctr(q2, k1)


def torch_byol(p1, p2, z1, z2):
    def regression(x, y):
        x, y = TF.normalize(x, dim=-1), TF.normalize(y.detach(), dim=-1)
        return 2 - 2 * (x * y).sum(dim=-1)
    return (regression(p1, z2) + regression(p2, z1)).mean()


def torch_simsiam(p1, p2, z1, z2):
    def d(p, z):
        return -TF.cosine_similarity(p, z.detach(), dim=-1).mean()
    return d(p1, z2) / 2 + d(p2, z1) / 2


def torch_sinkhorn(out, epsilon=0.05, iterations=3):
    q = torch.exp(out / epsilon).t()
    b, k = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def numpy_sinkhorn(out, epsilon=0.05, iterations=3):
    q = np.exp(out / epsilon).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def torch_swav(crops, assign=(0, 1), t=0.1, queue_scores=None):
    batch, loss = crops[0].shape[0], 0
    for i, a in enumerate(assign):
        with torch.no_grad():
            out = crops[a].detach()
            if queue_scores is not None:
                out = torch.cat([queue_scores[i], out])
            q = torch_sinkhorn(out)[-batch:]
        sub = 0
        for v in np.delete(np.arange(len(crops)), a):
            sub -= torch.mean(torch.sum(q * TF.log_softmax(crops[v] / t, dim=1), dim=1))
        loss += sub / (len(crops) - 1)
    return loss / len(assign)


# ---- MoCo -----------------------------------------------------------------------------------

def test_moco_v2_loss_matches_pseudo_code_and_keys_get_no_gradient():
    q, k, queue = randn(N, D, seed=1), randn(N, D, seed=2), _unit(randn(K, D, seed=3))
    compare_with_torch(lambda a, b, c: F.moco_v2_loss(a, b, c), torch_moco_v2, q, k, queue, dtype=np.float64)
    keys = lamina.tensor(k, requires_grad=True, dtype=np.float64)
    queries = lamina.tensor(q, requires_grad=True, dtype=np.float64)
    F.moco_v2_loss(queries, keys, queue, temperature=0.2).backward()
    assert keys.grad is None and np.abs(queries.grad).max() > 0
    check_gradients(lambda a: F.moco_v2_loss(a, k, queue), q)


def test_moco_logits_have_the_l_pos_l_neg_layout():
    q, k, queue = randn(N, D, seed=4), randn(N, D, seed=5), _unit(randn(K, D, seed=6))
    logits, labels = F.moco_logits(lamina.tensor(q, dtype=np.float64), k, queue, temperature=0.5)
    qn, kn = _unit(q), _unit(k)
    expected = np.concatenate([np.einsum("nc,nc->n", qn, kn)[:, None], qn @ queue.T], axis=1) / 0.5
    assert logits.shape == (N, 1 + K)
    assert_close(logits.numpy(), expected, 1e-12)
    assert np.array_equal(labels, np.zeros(N))


def test_moco_v3_loss_matches_reference():
    arrays = [randn(N, D, seed=s) for s in range(10, 14)]
    compare_with_torch(lambda *a: F.moco_v3_loss(*a, temperature=0.2), torch_moco_v3, *arrays, dtype=np.float64)
    compare_with_torch(lambda *a: F.moco_v3_loss(*a, temperature=1.0), lambda *a: torch_moco_v3(*a, t=1.0),
                       *arrays, dtype=np.float64)
    check_gradients(lambda a, b: F.moco_v3_loss(a, b, arrays[2], arrays[3]), arrays[0], arrays[1])


# ---- BYOL, SimSiam --------------------------------------------------------------------------

@pytest.mark.parametrize("ours, theirs", [(F.byol_loss, torch_byol), (F.simsiam_loss, torch_simsiam)])
def test_byol_and_simsiam_match_reference_with_stop_gradient(ours, theirs):
    arrays = [randn(N, D, seed=s) for s in range(20, 24)]
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    p1, p2, z1, z2 = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays)
    ours(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    check_gradients(lambda a, b: ours(a, b, arrays[2], arrays[3]), arrays[0], arrays[1])


def test_byol_loss_is_zero_for_aligned_and_four_for_opposite_vectors():
    z = randn(N, D, seed=7)
    assert abs(F.byol_loss(2 * z, 3 * z, z, z).item()) < 1e-6
    assert abs(F.byol_loss(-z, -z, z, z).item() - 8.0) < 1e-5         # 2 terms of 2 - 2 cos = 4
    assert abs(F.simsiam_loss(z, z, 5 * z, z).item() + 1.0) < 1e-6


# ---- SwAV -----------------------------------------------------------------------------------

def test_sinkhorn_matches_numpy_and_partitions_equally():
    scores = np.tanh(randn(12, 4, seed=30))
    codes = F.sinkhorn_knopp(scores, epsilon=0.05, iterations=3).numpy()
    assert_close(codes, numpy_sinkhorn(scores.astype(np.float64)), 1e-6)
    assert np.allclose(codes.sum(axis=1), 1.0)                          # each sample's assignment sums to 1
    converged = F.sinkhorn_knopp(scores, epsilon=0.05, iterations=200).numpy()
    assert np.allclose(converged.sum(axis=1), 1.0)
    assert np.allclose(converged.sum(axis=0), 12 / 4, rtol=1e-4)       # each prototype gets B / K
    assert not F.sinkhorn_knopp(lamina.tensor(scores, requires_grad=True)).requires_grad


def test_sinkhorn_survives_scores_that_overflow_exp():
    scores = np.array([[40.0, -40.0], [-40.0, 40.0], [39.0, 41.0]])
    codes = F.sinkhorn_knopp(scores, epsilon=0.05).numpy()
    assert np.all(np.isfinite(codes)) and np.allclose(codes.sum(axis=1), 1.0)


def test_swav_loss_matches_reference_with_multi_crop_and_queue():
    crops = [np.tanh(randn(N, K, seed=s)) for s in range(40, 44)]     # 2 large + 2 small crops
    compare_with_torch(lambda *c: F.swav_loss(list(c)), lambda *c: torch_swav(list(c)), *crops, dtype=np.float64)
    queue = [np.tanh(randn(12, K, seed=s)) for s in (50, 51)]
    compare_with_torch(lambda *c: F.swav_loss(list(c), queue_scores=queue),
                       lambda *c: torch_swav(list(c), queue_scores=[torch.tensor(a) for a in queue]),
                       *crops, dtype=np.float64)
    # the codes are constants: finite differences agree only for the crops that are not assigned
    check_gradients(lambda c2, c3: F.swav_loss([crops[0], crops[1], c2, c3]), crops[2], crops[3])


# ---- errors ---------------------------------------------------------------------------------

def test_errors_name_the_function_and_shapes():
    a, b = randn(4, 3), randn(5, 3)
    with pytest.raises(ShapeError, match="moco_v2_loss"):
        F.moco_v2_loss(a, b, randn(8, 3))
    with pytest.raises(ShapeError, match=r"queue must hold K keys of shape \(K, 3\)"):
        F.moco_v2_loss(a, a, randn(8, 4))
    with pytest.raises(ShapeError, match="predictor must map back"):
        F.byol_loss(a, a, randn(4, 2), randn(4, 2))
    with pytest.raises(ShapeError, match="one shape"):
        F.swav_loss([randn(4, 3), randn(5, 3)])
    with pytest.raises(ValueError, match="crops_for_assign"):
        F.swav_loss([a, a], crops_for_assign=(2,))
    with pytest.raises(ValueError, match="temperature"):
        F.moco_v3_loss(a, a, a, a, temperature=0.0)
    with pytest.raises(ValueError, match="iterations"):
        F.sinkhorn_knopp(a, iterations=0)
