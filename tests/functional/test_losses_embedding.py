"""Deep-metric-learning losses against float64 torch rewrites of the papers' formulas and
reference code (loops over anchors where the reference loops)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tests.helpers import check_gradients, check_second_derivatives, compare_with_torch, randn

import lamina
import lamina.functional as F
from lamina.errors import ShapeError

N, D, C = 9, 5, 4
LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 1, 2])       # class 3 has no sample: a proxy without positives
ONE_EACH = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8])


def x_values(seed=0, scale=1.0):
    return randn(N, D, seed=seed, scale=scale)


def masks(y):
    same = y[:, None] == y[None, :]
    return same & ~torch.eye(len(y), dtype=torch.bool), ~same


# -- torch rewrites -------------------------------------------------------------------------------


def torch_proxy_nca(x, y, proxies, scale=1.0, exclude_positive=False):
    d = torch.cdist(TF.normalize(x, dim=1), TF.normalize(proxies, dim=1)) ** 2
    logits = -scale * d
    if not exclude_positive:
        return TF.cross_entropy(logits, y)
    losses = []
    for i in range(len(y)):
        others = torch.cat([logits[i, :y[i]], logits[i, y[i] + 1:]])
        losses.append(-logits[i, y[i]] + torch.logsumexp(others, 0))
    return torch.stack(losses).mean()


def torch_proxy_anchor(x, y, proxies, alpha=32.0, delta=0.1):
    """Kim et al.'s reference code, as published."""
    cos = TF.linear(TF.normalize(x, dim=1), TF.normalize(proxies, dim=1))
    p_one_hot = TF.one_hot(y, proxies.shape[0]).double()
    n_one_hot = 1 - p_one_hot
    pos_exp = torch.exp(-alpha * (cos - delta))
    neg_exp = torch.exp(alpha * (cos + delta))
    num_valid = int((p_one_hot.sum(dim=0) != 0).sum())
    p_sim_sum = torch.where(p_one_hot == 1, pos_exp, torch.zeros_like(pos_exp)).sum(dim=0)
    n_sim_sum = torch.where(n_one_hot == 1, neg_exp, torch.zeros_like(neg_exp)).sum(dim=0)
    return torch.log(1 + p_sim_sum).sum() / num_valid + torch.log(1 + n_sim_sum).sum() / proxies.shape[0]


def torch_multi_similarity(x, y, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, mine=True):
    """Wang et al.'s reference loop (self pairs left out by index)."""
    s = TF.normalize(x, dim=1) @ TF.normalize(x, dim=1).T
    total = x.sum() * 0
    for i in range(len(y)):
        others = torch.arange(len(y)) != i
        pos_ = s[i][(y == y[i]) & others]
        neg_ = s[i][y != y[i]]
        if len(pos_) == 0 or len(neg_) == 0:
            continue
        neg = neg_[neg_ + epsilon > pos_.min()] if mine else neg_
        pos = pos_[pos_ - epsilon < neg_.max()] if mine else pos_
        if len(neg) < 1 or len(pos) < 1:
            continue
        total = total + 1 / alpha * torch.log(1 + torch.sum(torch.exp(-alpha * (pos - base))))
        total = total + 1 / beta * torch.log(1 + torch.sum(torch.exp(beta * (neg - base))))
    return total / len(y)


def torch_lifted(x, y, margin=1.0):
    d = torch.cdist(x, x)
    pos, neg = masks(y)
    losses = [TF.relu(torch.logsumexp(d[a][pos[a]], 0) + torch.logsumexp(margin - d[a][neg[a]], 0))
              for a in range(len(y)) if pos[a].any() and neg[a].any()]
    return torch.stack(losses).mean()


def torch_circle(x, y, m=0.25, gamma=256.0):
    s = TF.normalize(x, dim=1) @ TF.normalize(x, dim=1).T
    pos, neg = masks(y)
    losses = []
    for a in range(len(y)):
        if not (pos[a].any() and neg[a].any()):
            continue
        sp, sn = s[a][pos[a]], s[a][neg[a]]
        ap = torch.clamp_min(-sp.detach() + 1 + m, 0.0)
        an = torch.clamp_min(sn.detach() + m, 0.0)
        logit_p = -ap * (sp - (1 - m)) * gamma
        logit_n = an * (sn - m) * gamma
        losses.append(TF.softplus(torch.logsumexp(logit_n, 0) + torch.logsumexp(logit_p, 0)))
    return torch.stack(losses).mean()


def torch_supcon(x, y, temperature=0.07, base_temperature=0.07):
    """Khosla et al.'s reference code with one view per row, over anchors with positives."""
    features = TF.normalize(x, dim=1)
    mask = torch.eq(y[:, None], y[None, :]).double()
    logits = features @ features.T / temperature
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    logits_mask = 1 - torch.eye(len(y), dtype=torch.float64)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    has = mask.sum(1) > 0
    mean_log_prob_pos = (mask * log_prob).sum(1)[has] / mask.sum(1)[has]
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


def torch_npair(a, p, y=None, reg=0.002):
    if y is None:
        targets = torch.eye(len(a), dtype=torch.float64)
    else:
        targets = (y[:, None] == y[None, :]).double()
        targets = targets / targets.sum(1, keepdim=True)
    ce = -(targets * torch.log_softmax(a @ p.T, dim=1)).sum(1).mean()
    return ce + reg * 0.25 * ((a * a).sum(1).mean() + (p * p).sum(1).mean())


def torch_distances(x, squared):
    diff = x[:, None, :] - x[None, :, :]
    sq = (diff * diff).sum(-1)
    if squared:
        return sq
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    return torch.where(sq > 0, safe.sqrt(), torch.zeros_like(sq))


def torch_batch_hard(x, y, margin=1.0, squared=False, soft=False):
    d = torch_distances(x, squared)
    pos, neg = masks(y)
    losses = []
    for a in range(len(y)):
        if pos[a].any() and neg[a].any():
            gap = d[a][pos[a]].max() - d[a][neg[a]].min()
            losses.append(TF.softplus(gap) if soft else TF.relu(gap + margin))
    return torch.stack(losses).mean()


def torch_batch_all(x, y, margin=1.0, squared=False):
    d = torch_distances(x, squared)
    pos, neg = masks(y)
    losses = [TF.relu(d[a, p] - d[a, n] + margin) for a in range(len(y)) for p in range(len(y))
              for n in range(len(y)) if pos[a, p] and neg[a, n]]
    losses = torch.stack(losses)
    return losses.sum() / max(int((losses > 0).sum()), 1)


def torch_semi_hard(x, y, margin=1.0, squared=False):
    """TF-Addons' TripletSemiHardLoss rule, one positive pair at a time."""
    d = torch_distances(x, squared)
    pos, neg = masks(y)
    losses = []
    for a in range(len(y)):
        for p in range(len(y)):
            if not pos[a, p]:
                continue
            negatives = [n for n in range(len(y)) if neg[a, n]]
            farther = [n for n in negatives if d[a, n] > d[a, p]]
            if farther:
                n = min(farther, key=lambda k: float(d[a, k].detach()))
            else:
                n = max(negatives, key=lambda k: float(d[a, k].detach()))
            losses.append(TF.relu(d[a, p] - d[a, n] + margin))
    return torch.stack(losses).mean()


def torch_soft_triple(x, y, centers, k, la=20.0, gamma=0.1, tau=0.2, margin=0.01):
    """Qian et al.'s reference SoftTriple (centres as rows here, columns there)."""
    classes = centers.shape[0] // k
    unit = TF.normalize(centers, p=2, dim=1).t()
    sim_struct = TF.normalize(x, dim=1).matmul(unit).reshape(-1, classes, k)
    prob = TF.softmax(sim_struct * (1 / gamma), dim=2)
    sim_class = torch.sum(prob * sim_struct, dim=2)
    margin_m = torch.zeros(sim_class.shape, dtype=torch.float64)
    margin_m[torch.arange(0, margin_m.shape[0]), y] = margin
    loss = TF.cross_entropy(la * (sim_class - margin_m), y)
    if tau > 0 and k > 1:
        weight = torch.zeros(classes * k, classes * k, dtype=torch.bool)
        for i in range(classes):
            for j in range(k):
                weight[i * k + j, i * k + j + 1:(i + 1) * k] = 1
        sim_center = unit.t().matmul(unit)
        reg = torch.sum(torch.sqrt(2.0 + 1e-5 - 2. * sim_center[weight])) / (classes * k * (k - 1.))
        return loss + tau * reg
    return loss


# -- the cases: (lamina loss, torch loss, arrays) --------------------------------------------------

CASES = {
    "proxy_nca": (lambda x, y, p: F.proxy_nca_loss(x, y, p, scale=3.0),
                  lambda x, y, p: torch_proxy_nca(x, y, p, scale=3.0), [x_values(), LABELS, randn(C, D, seed=1)]),
    "proxy_nca_exclusive": (lambda x, y, p: F.proxy_nca_loss(x, y, p, scale=2.0, exclude_positive=True),
                            lambda x, y, p: torch_proxy_nca(x, y, p, 2.0, True),
                            [x_values(), LABELS, randn(C, D, seed=1)]),
    "proxy_anchor": (F.proxy_anchor_loss, torch_proxy_anchor, [x_values(), LABELS, randn(C, D, seed=1)]),
    "proxy_anchor_small_alpha": (lambda x, y, p: F.proxy_anchor_loss(x, y, p, alpha=4.0, delta=0.2),
                                 lambda x, y, p: torch_proxy_anchor(x, y, p, 4.0, 0.2),
                                 [x_values(), LABELS, randn(C, D, seed=1)]),
    "soft_triple": (lambda x, y, w: F.soft_triple_loss(x, y, w, centers_per_class=3),
                    lambda x, y, w: torch_soft_triple(x, y, w, 3), [x_values(), LABELS, randn(3 * C, D, seed=11)]),
    "soft_triple_one_centre": (lambda x, y, w: F.soft_triple_loss(x, y, w, 1, scale=5.0, gamma=0.5, margin=0.2),
                               lambda x, y, w: torch_soft_triple(x, y, w, 1, 5.0, 0.5, 0.2, 0.2),
                               [x_values(), LABELS, randn(C, D, seed=11)]),
    "multi_similarity": (F.multi_similarity_loss, torch_multi_similarity, [x_values(seed=2), LABELS]),
    "multi_similarity_wide": (lambda x, y: F.multi_similarity_loss(x, y, alpha=1.0, beta=5.0, epsilon=0.5),
                              lambda x, y: torch_multi_similarity(x, y, 1.0, 5.0, 0.5, 0.5),
                              [x_values(seed=2), LABELS]),
    "multi_similarity_unmined": (lambda x, y: F.multi_similarity_loss(x, y, beta=10.0, mine=False),
                                 lambda x, y: torch_multi_similarity(x, y, beta=10.0, mine=False),
                                 [x_values(seed=2), LABELS]),
    "lifted_structure": (lambda x, y: F.lifted_structure_loss(x, y, margin=3.0),
                         lambda x, y: torch_lifted(x, y, 3.0), [x_values(seed=3), LABELS]),
    "supervised_contrastive": (lambda x, y: F.supervised_contrastive_loss(x, y, temperature=0.5),
                               lambda x, y: torch_supcon(x, y, 0.5, 0.5), [x_values(seed=4), LABELS]),
    "supervised_contrastive_base": (lambda x, y: F.supervised_contrastive_loss(x, y, 0.1, base_temperature=0.07),
                                    lambda x, y: torch_supcon(x, y, 0.1, 0.07),
                                    [x_values(seed=4), np.array([0, 1, 0, 2, 1, 0, 3, 1, 4])]),
    "npair": (F.npair_loss, torch_npair, [x_values(seed=5), x_values(seed=6)]),
    "npair_labels": (lambda a, p, y: F.npair_loss(a, p, y, l2_reg=0.1),
                     lambda a, p, y: torch_npair(a, p, y, 0.1), [x_values(seed=5), x_values(seed=6), LABELS]),
    "batch_hard": (F.batch_hard_triplet_loss, torch_batch_hard, [x_values(seed=7), LABELS]),
    "batch_hard_squared_soft": (lambda x, y: F.batch_hard_triplet_loss(x, y, squared=True, soft=True),
                                lambda x, y: torch_batch_hard(x, y, squared=True, soft=True),
                                [x_values(seed=7), LABELS]),
    "batch_all": (F.batch_all_triplet_loss, torch_batch_all, [x_values(seed=8), LABELS]),
    "batch_all_squared": (lambda x, y: F.batch_all_triplet_loss(x, y, margin=0.5, squared=True),
                          lambda x, y: torch_batch_all(x, y, 0.5, True), [x_values(seed=8), LABELS]),
    "semi_hard": (F.semi_hard_triplet_loss, torch_semi_hard, [x_values(seed=9), LABELS]),
    "semi_hard_squared": (lambda x, y: F.semi_hard_triplet_loss(x, y, margin=2.0, squared=True),
                          lambda x, y: torch_semi_hard(x, y, 2.0, True), [x_values(seed=9), LABELS]),
}
SINGLETON = np.array([0, 1, 0, 2, 1, 0, 3, 1, 2])   # label 3 once: an anchor without positives
CASES.update({
    "singleton_" + name: (ours, theirs, [x_values(seed=12), SINGLETON])
    for name, (ours, theirs, _) in CASES.items()
    if name in ("multi_similarity", "lifted_structure", "supervised_contrastive", "batch_hard", "batch_all",
                "semi_hard")
})
CIRCLE = (F.circle_loss, torch_circle, [x_values(seed=10), LABELS])
CIRCLE_SMALL = (lambda x, y: F.circle_loss(x, y, margin=0.4, gamma=8.0), lambda x, y: torch_circle(x, y, 0.4, 8.0),
                [x_values(seed=10), LABELS])


@pytest.mark.parametrize("name", [*CASES, "circle", "circle_small"])
def test_matches_torch_rewrite_in_value_and_gradients(name):
    ours, theirs, arrays = {"circle": CIRCLE, "circle_small": CIRCLE_SMALL}.get(name) or CASES[name]
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, rtol=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, arrays = CASES[name]
    assert check_gradients(ours, *arrays)


def test_second_derivatives_of_a_proxy_loss():
    assert check_second_derivatives(lambda x, y, p: F.proxy_nca_loss(x, y, p, scale=2.0),
                                    x_values(), LABELS, randn(C, D, seed=1))


def test_float32_runs_and_agrees():
    ours, theirs, arrays = CASES["proxy_anchor_small_alpha"]
    compare_with_torch(ours, theirs, *arrays, dtype=np.float32, rtol=1e-4)


def test_circle_holds_its_weights_constant():
    """Its gradient is the reference's (weights detached), not the loss's full derivative."""
    ours, _, arrays = CIRCLE_SMALL
    with pytest.raises(AssertionError):
        assert check_gradients(ours, *arrays)


def test_multi_similarity_mining_changes_the_loss():
    x = lamina.tensor(x_values(seed=2))
    mined, every = F.multi_similarity_loss(x, LABELS), F.multi_similarity_loss(x, LABELS, mine=False)
    assert abs(float(mined.item()) - float(every.item())) > 1e-6


def test_proxy_anchor_is_lower_at_embeddings_on_their_proxies():
    proxies = np.eye(C, D) * 3
    x = proxies[LABELS] + randn(N, D, seed=1, scale=0.01)
    spread = F.proxy_anchor_loss(lamina.tensor(x), LABELS, lamina.tensor(proxies)).item()
    mixed = F.proxy_anchor_loss(lamina.tensor(x_values()), LABELS, lamina.tensor(proxies)).item()
    assert spread < mixed - 1.0


def test_batch_hard_hand_example():
    """Two classes on a line: anchor 0 at 0, positive at 1, negatives at 1.5 and 3."""
    x = np.array([[0.0], [1.0], [1.5], [3.0]])
    y = np.array([0, 0, 1, 1])
    # hardest (positive, negative): a0 (1, 1.5); a1 (1, 0.5); a2 (1.5, 0.5); a3 (1.5, 2)
    expected = (max(0, 1 - 1.5 + 1) + max(0, 1 - 0.5 + 1) + max(0, 1.5 - 0.5 + 1) + max(0, 1.5 - 2 + 1)) / 4
    assert math.isclose(F.batch_hard_triplet_loss(lamina.tensor(x), y).item(), expected, rel_tol=1e-6)


# -- errors ----------------------------------------------------------------------------------------


def test_batch_of_one_class_is_refused():
    with pytest.raises(ValueError, match="no negative pair.*one class"):
        F.batch_hard_triplet_loss(x_values(), np.zeros(N, dtype=int))
    with pytest.raises(ValueError, match="no positive pair"):
        F.multi_similarity_loss(x_values(), ONE_EACH)
    with pytest.raises(ValueError, match="no positive pair"):
        F.supervised_contrastive_loss(x_values(), ONE_EACH)


def test_argument_errors():
    with pytest.raises(ShapeError, match=r"labels must have shape \(9,\)"):
        F.circle_loss(x_values(), LABELS[:5])
    with pytest.raises(ValueError, match="labels must be integers"):
        F.lifted_structure_loss(x_values(), LABELS.astype(float))
    with pytest.raises(ShapeError, match=r"embeddings must have shape \(N, D\)"):
        F.semi_hard_triplet_loss(randn(N), LABELS)
    with pytest.raises(ShapeError, match=r"proxies must have shape \(num_classes, 5\)"):
        F.proxy_anchor_loss(x_values(), LABELS, randn(C, D + 1))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        F.proxy_nca_loss(x_values(), LABELS, randn(2, D))
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        F.batch_all_triplet_loss(x_values(), LABELS, margin=-1.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        F.supervised_contrastive_loss(x_values(), LABELS, temperature=0.0)
    with pytest.raises(ShapeError, match=r"centers must have shape \(num_classes \* 3, 5\)"):
        F.soft_triple_loss(x_values(), LABELS, randn(10, D), centers_per_class=3)
    with pytest.raises(ShapeError, match="anchors and positives must have one shape"):
        F.npair_loss(x_values(), randn(N - 1, D))
