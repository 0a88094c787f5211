"""Learning-to-rank losses against torch rewrites of their published formulas and of allRank's
implementations (float64 values and gradients), padding, gradchecks and limits."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError

PAD = -1


def graded(shape, seed):
    return np.random.default_rng(seed).integers(0, 5, shape).astype(np.float64)


SCORES = randn(3, 7, seed=1)
LABELS = graded((3, 7), 2)
PADDED = LABELS.copy()
PADDED[0, 5:] = PAD
PADDED[2, 3:] = PAD
PADDED[2, 0] = PAD                    # padding need not be at the end


# -- torch rewrites (float64), padding as allRank: label -1 -----------------------------------------
def t_gains(y):
    return torch.pow(2.0, y) - 1


def t_idcg(y, k):
    best = torch.sort(y.clamp(min=0), descending=True, dim=1)[0]
    d = 1 / torch.log2(torch.arange(y.shape[1], dtype=torch.float64) + 2)
    return (t_gains(best) * d)[:, :k].sum(1)


def t_ranknet(s, y, weight=None):
    """allRank's rankNet: BCE with logits over every ordered pair with y_i > y_j, batch mean."""
    pairs = list(itertools.product(range(y.shape[1]), repeat=2))
    valid = y != PAD
    yy = torch.where(valid, y, torch.tensor(-math.inf, dtype=torch.float64))
    true = yy[:, pairs]
    pred = s[:, pairs]
    diff_true = true[:, :, 0] - true[:, :, 1]
    chosen = (diff_true > 0) & torch.isfinite(diff_true)
    diff_pred = (pred[:, :, 0] - pred[:, :, 1])[chosen]
    w = None if weight is None else weight[:, [i for i, _ in pairs], [j for _, j in pairs]][chosen]
    return TF.binary_cross_entropy_with_logits(diff_pred, torch.ones_like(diff_pred), weight=w)


def t_lambdarank_weights(s, y, k):
    """|delta NDCG@k| of swapping i and j, from the ranks of the detached scores."""
    valid = y != PAD
    yv = y.clamp(min=0)
    keys = torch.where(valid, s.detach(), torch.tensor(-math.inf, dtype=torch.float64))
    order = torch.sort(keys, descending=True, dim=1, stable=True)[1]
    ranks = torch.argsort(order, dim=1).double()
    d = torch.where(ranks < k, 1 / torch.log2(ranks + 2.0), torch.zeros(()).double())
    g = t_gains(yv) * valid
    swaps = (g[:, :, None] - g[:, None, :]).abs() * (d[:, :, None] - d[:, None, :]).abs()
    return swaps / t_idcg(yv * valid, k)[:, None, None]


def t_lambda_loss(s, y, scheme, k=None, sigma=1.0, mu=10.0, reduction="sum"):
    """allRank's lambdaLoss and its weighing schemes, transcribed."""
    eps = 1e-10
    s, y = s.clone(), y.clone()
    padded = y == PAD
    s = s.masked_fill(padded, -math.inf)
    y = y.masked_fill(padded, -math.inf)
    s_sorted, order = s.sort(descending=True, dim=-1)
    y_sorted = y.sort(descending=True, dim=-1)[0]
    y_by_pred = torch.gather(y, 1, order)
    true_diffs = y_by_pred[:, :, None] - y_by_pred[:, None, :]
    pairs = torch.isfinite(true_diffs)
    if scheme != "ndcg_loss1":
        pairs = pairs & (true_diffs > 0)
    length = y.shape[1]
    k = length if k is None else k
    top = torch.zeros((length, length), dtype=torch.bool)
    top[:k, :k] = True
    y_by_pred = y_by_pred.clamp(min=0.0)
    y_sorted = y_sorted.clamp(min=0.0)
    D = torch.log2(1.0 + torch.arange(1, length + 1, dtype=torch.float64))[None]
    max_dcg = ((t_gains(y_sorted) / D)[:, :k]).sum(-1).clamp(min=eps)
    G = t_gains(y_by_pred) / max_dcg[:, None]

    def loss2():
        idx = torch.arange(1, length + 1)
        gap = (idx[:, None] - idx[None, :]).abs()
        deltas = (1 / D[0, gap - 1].abs() - 1 / D[0, gap].abs()).abs()
        deltas.diagonal().zero_()
        return deltas[None] * (G[:, :, None] - G[:, None, :]).abs()

    def lambdarank():
        return (1 / D[:, :, None] - 1 / D[:, None, :]).abs() * (G[:, :, None] - G[:, None, :]).abs()

    weights = {"ndcg_loss1": lambda: (G / D)[:, :, None], "ndcg_loss2": loss2, "lambdarank": lambdarank,
               "ndcg_loss2pp": lambda: mu * loss2() + lambdarank(), "ranknet": lambda: 1.0,
               "arp": lambda: (y_by_pred[:, :, None] - y_by_pred[:, None, :]).abs()}[scheme]()
    diffs = (s_sorted[:, :, None] - s_sorted[:, None, :]).clamp(min=-1e8, max=1e8)
    diffs = torch.nan_to_num(diffs)                      # (-inf) - (-inf) of padded pairs
    losses = torch.log2((torch.sigmoid(sigma * diffs).clamp(min=eps) ** weights).clamp(min=eps))
    picked = losses[pairs & top]
    return -(picked.sum() if reduction == "sum" else picked.mean())


def t_valid_log_softmax(s, valid):
    return torch.log_softmax(s.masked_fill(~valid, -math.inf), dim=1).masked_fill(~valid, 0.0)


def t_listnet(s, y):
    valid = y != PAD
    target = torch.softmax(y.masked_fill(~valid, -math.inf), dim=1)
    return -(target * t_valid_log_softmax(s, valid)).sum(1).mean()


def t_softmax_loss(s, y):
    valid = y != PAD
    yv = y.clamp(min=0)
    total = yv.sum(1, keepdim=True)
    per_list = -(yv / total * t_valid_log_softmax(s, valid)).sum(1)
    return per_list[total[:, 0] > 0].sum() / (total > 0).sum()


def t_approx_ndcg(s, y, alpha):
    """allRank's approxNDCGLoss, transcribed."""
    eps = 1e-10
    padded = y == PAD
    s = s.masked_fill(padded, -math.inf)
    y = y.masked_fill(padded, -math.inf)
    s_sorted, order = s.sort(descending=True, dim=-1)
    y_sorted = y.sort(descending=True, dim=-1)[0]
    y_by_pred = torch.gather(y, 1, order)
    pairs = torch.isfinite(y_by_pred[:, :, None] - y_by_pred[:, None, :])
    pairs.diagonal(dim1=-2, dim2=-1).zero_()
    y_by_pred = y_by_pred.clamp(min=0.0)
    y_sorted = y_sorted.clamp(min=0.0)
    D = torch.log2(1.0 + torch.arange(1, y.shape[1] + 1, dtype=torch.float64))[None]
    max_dcg = (t_gains(y_sorted) / D).sum(-1).clamp(min=eps)
    G = t_gains(y_by_pred) / max_dcg[:, None]
    diffs = (s_sorted[:, :, None] - s_sorted[:, None, :]).masked_fill(~pairs, 0.0)
    approx_pos = 1.0 + (pairs.double() * torch.sigmoid(-alpha * diffs).clamp(min=eps)).sum(-1)
    return -(G / torch.log2(1.0 + approx_pos)).sum(-1).mean()


def t_neural_sort(s, tau, valid):
    """Grover et al.'s deterministic NeuralSort with allRank's padding (float64 throughout)."""
    n = s.shape[1]
    both = valid[:, :, None] & valid[:, None, :]
    spread = ((s[:, :, None] - s[:, None, :]).abs() * both).sum(2)
    counts = valid.sum(1, keepdim=True)
    ranks = torch.arange(1, n + 1)[None]
    scaling = torch.where(ranks <= counts, counts + 1 - 2 * ranks, 0).double()
    logits = scaling[:, :, None] * s[:, None, :] - spread[:, None, :]
    logits = logits.masked_fill(~both, -math.inf).masked_fill(~valid[:, :, None] & ~valid[:, None, :], 1.0)
    return torch.softmax(logits / tau, dim=-1)


def t_sinkhorn(p, valid, tol=1e-6, max_iter=50):
    """allRank's sinkhorn_scaling, transcribed."""
    pad = ~valid
    p = p.masked_fill(pad[:, None, :] | pad[:, :, None], 0.0).masked_fill(pad[:, None, :] & pad[:, :, None], 1.0)
    for _ in range(max_iter):
        p = p / p.sum(dim=1, keepdim=True).clamp(min=1e-10)
        p = p / p.sum(dim=2, keepdim=True).clamp(min=1e-10)
        if (p.sum(2) - 1).abs().max() < tol and (p.sum(1) - 1).abs().max() < tol:
            break
    return p.masked_fill(pad[:, None, :] | pad[:, :, None], 0.0)


def t_neural_ndcg(s, y, temperature=1.0, k=None):
    front = torch.argsort((y == PAD).double(), dim=1, stable=True)     # allRank pads at the end of a list
    s, y = torch.gather(s, 1, front), torch.gather(y, 1, front)
    valid = y != PAD
    p = t_sinkhorn(t_neural_sort(s.masked_fill(~valid, 0.0), temperature, valid), valid)
    k = y.shape[1] if k is None else k
    g = t_gains(y.clamp(min=0))
    sorted_gains = (p @ g[:, :, None])[:, :k, 0]
    d = 1 / torch.log2(torch.arange(k, dtype=torch.float64) + 2)
    idcg = t_idcg(y.clamp(min=0), k)
    ndcg = ((sorted_gains * d).sum(1) / (idcg + 1e-10)).masked_fill(idcg == 0, 0.0)
    return -ndcg.sum() / (idcg > 0).sum()


def t_rmse(s, y, scale):
    valid = y != PAD
    err = (y.clamp(min=0) - scale * s).masked_fill(~valid, 0.0)
    return torch.sqrt((err ** 2).sum(1) / valid.sum(1)).mean()


def t_hinge(s, y, margin):
    valid = y != PAD
    pairs = valid[:, :, None] & valid[:, None, :] & (y[:, :, None] > y[:, None, :])
    return torch.relu(margin - (s[:, :, None] - s[:, None, :]))[pairs].mean()


# -- the table: (lamina loss, torch reference) for the same labels ------------------------------------
def cases(labels):
    yt = torch.tensor(labels)
    rank_w = lambda s, k=None: t_lambdarank_weights(s, yt, labels.shape[1] if k is None else k)  # noqa: E731
    table = {
        "pointwise_rmse": (lambda s: F.pointwise_rmse(s, labels, scale=2.0), lambda s: t_rmse(s, yt, 2.0)),
        "ranknet": (lambda s: F.ranknet_loss(s, labels), lambda s: t_ranknet(s, yt)),
        "ranknet_sigma": (lambda s: F.ranknet_loss(s, labels, sigma=2.5), lambda s: t_ranknet(2.5 * s, yt)),
        "lambdarank": (lambda s: F.ranknet_loss(s, labels, weighting="ndcg"),
                       lambda s: t_ranknet(s, yt, rank_w(s))),
        "lambdarank_k3": (lambda s: F.ranknet_loss(s, labels, weighting="ndcg", k=3),
                          lambda s: t_ranknet(s, yt, rank_w(s, 3))),
        "ranknet_label_difference": (lambda s: F.ranknet_loss(s, labels, weighting="label_difference"),
                                     lambda s: t_ranknet(s, yt, (yt[:, :, None] - yt[:, None, :]).abs())),
        "rank_hinge": (lambda s: F.rank_hinge_loss(s, labels, margin=0.7), lambda s: t_hinge(s, yt, 0.7)),
        "listnet": (lambda s: F.listnet_loss(s, labels), lambda s: t_listnet(s, yt)),
        "softmax": (lambda s: F.softmax_loss(s, labels), lambda s: t_softmax_loss(s, yt)),
        "approx_ndcg": (lambda s: F.approx_ndcg_loss(s, labels, alpha=2.0), lambda s: t_approx_ndcg(s, yt, 2.0)),
        "neural_ndcg": (lambda s: F.neural_ndcg_loss(s, labels), lambda s: t_neural_ndcg(s, yt)),
        "neural_ndcg_k3_t05": (lambda s: F.neural_ndcg_loss(s, labels, temperature=0.5, k=3),
                               lambda s: t_neural_ndcg(s, yt, 0.5, 3)),
    }
    for scheme in F.LAMBDA_WEIGHTINGS:
        table[f"lambda_{scheme}"] = (lambda s, w=scheme: F.lambda_loss(s, labels, weighting=w),
                                     lambda s, w=scheme: t_lambda_loss(s, yt, w))
    table["lambda_ndcg_loss2pp_k4_mean"] = (
        lambda s: F.lambda_loss(s, labels, k=4, sigma=1.5, mu=5.0, reduction="mean"),
        lambda s: t_lambda_loss(s, yt, "ndcg_loss2pp", k=4, sigma=1.5, mu=5.0, reduction="mean"))
    table["lambda_lambdarank_k2"] = (lambda s: F.lambda_loss(s, labels, weighting="lambdarank", k=2),
                                     lambda s: t_lambda_loss(s, yt, "lambdarank", k=2))
    return table


NAMES = list(cases(LABELS))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("labels", [LABELS, PADDED], ids=["full", "padded"])
def test_loss_matches_torch_rewrite(name, labels):
    ours, theirs = cases(labels)[name]
    compare_with_torch(ours, theirs, SCORES, dtype=np.float64)


def loss_and_grad(fn, scores):
    s = lamina.tensor(scores, requires_grad=True, dtype=np.float64)
    value = fn(s)
    value.backward()
    return value.item(), s.grad


@pytest.mark.parametrize("name", NAMES)
def test_padded_items_change_nothing_and_get_no_gradient(name):
    # the same lists with two padded columns appended, their scores arbitrary
    ours_plain = cases(LABELS)[name][0]
    extended_labels = np.concatenate([LABELS, np.full((3, 2), PAD)], axis=1)
    ours_extended = cases(extended_labels)[name][0]
    garbage = np.array([[50.0, -3.0], [1e3, 0.0], [-7.0, 7.0]])
    value, grad = loss_and_grad(ours_plain, SCORES)
    value_ext, grad_ext = loss_and_grad(ours_extended, np.concatenate([SCORES, garbage], axis=1))
    assert value_ext == pytest.approx(value, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(grad_ext[:, :7], grad, rtol=1e-9, atol=1e-12)
    assert np.all(grad_ext[:, 7:] == 0)


@pytest.mark.parametrize("fn", [F.ranknet_loss, F.rank_hinge_loss, F.lambda_loss, F.listnet_loss, F.softmax_loss,
                                F.listmle_loss, F.approx_ndcg_loss, F.neural_ndcg_loss, F.pointwise_rmse])
def test_mask_argument_equals_padding_label(fn):
    labels = np.concatenate([LABELS, np.zeros((3, 2))], axis=1)
    mask = np.concatenate([np.ones((3, 7), bool), np.zeros((3, 2), bool)], axis=1)
    scores = np.concatenate([SCORES, randn(3, 2, seed=9)], axis=1)
    padded_labels = np.where(mask, labels, PAD)
    a = loss_and_grad(lambda s: fn(s, labels, mask=mask, **({"seed": 0} if fn is F.listmle_loss else {})), scores)
    b = loss_and_grad(lambda s: fn(s, padded_labels, **({"seed": 0} if fn is F.listmle_loss else {})), scores)
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["ranknet", "lambdarank", "rank_hinge", "listnet", "softmax", "approx_ndcg",
                                  "lambda_ndcg_loss2pp", "lambda_ndcg_loss1", "pointwise_rmse"])
def test_float64_gradcheck(name):
    fn = cases(PADDED)[name][0]
    assert check_gradients(fn, SCORES)


def test_listmle_and_neural_ndcg_gradcheck():
    assert check_gradients(lambda s: F.listmle_loss(s, PADDED, seed=3), SCORES)
    assert check_gradients(lambda s: F.neural_ndcg_loss(s, PADDED, temperature=0.7, sinkhorn_iter=5), SCORES)


# -- ListMLE --------------------------------------------------------------------------------------------
def plackett_luce_nll(scores, order):
    """-log P(order) = -sum_i log(exp(s_order[i]) / sum_(j >= i) exp(s_order[j])), a direct loop."""
    total = 0.0
    for i in range(len(order)):
        rest = [math.exp(scores[j]) for j in order[i:]]
        total -= math.log(math.exp(scores[order[i]]) / sum(rest))
    return total


def test_listmle_equals_plackett_luce_likelihood_of_the_label_order():
    scores = randn(2, 5, seed=4)
    labels = np.array([[0.0, 3, 1, 4, 2], [2, 0, 1, PAD, PAD]])
    expected = [plackett_luce_nll(scores[0], [3, 1, 4, 2, 0]), plackett_luce_nll(scores[1, :3], [0, 2, 1])]
    compare_with_torch(lambda s: F.listmle_loss(s, labels), lambda s: s.sum() * 0 + np.mean(expected), scores,
                       dtype=np.float64, grad=False)
    # the gradient, against torch's autograd of the same loop
    st = torch.tensor(scores, requires_grad=True)
    nll = 0
    for row, order in ((0, [3, 1, 4, 2, 0]), (1, [0, 2, 1])):
        picked = st[row, order]
        nll = nll + (torch.logcumsumexp(picked.flip(0), 0).flip(0) - picked).sum()
    (nll / 2).backward()
    np.testing.assert_allclose(loss_and_grad(lambda s: F.listmle_loss(s, labels), scores)[1], st.grad.numpy(),
                               rtol=1e-10)


def test_listmle_breaks_ties_at_random_with_a_seed():
    scores = randn(1, 6, seed=5)
    labels = np.array([[2.0, 2, 2, 1, 1, 0]])
    values = {F.listmle_loss(scores, labels, seed=seed).item() for seed in range(12)}
    assert len(values) > 3                               # different tie orders, different likelihoods
    assert F.listmle_loss(scores, labels, seed=7).item() == F.listmle_loss(scores, labels, seed=7).item()
    tie_orders = [list(a) + list(b) + [5] for a in itertools.permutations([0, 1, 2])
                  for b in itertools.permutations([3, 4])]
    possible = [plackett_luce_nll(scores[0], order) for order in tie_orders]
    for value in values:
        assert min(abs(value - p) for p in possible) < 1e-12


# -- ApproxNDCG and NeuralSort --------------------------------------------------------------------------
def true_ndcg(scores, labels):
    order = np.argsort(-scores, kind="stable")
    g = 2.0 ** labels - 1
    d = 1 / np.log2(np.arange(len(labels)) + 2)
    return (g[order] * d).sum() / (np.sort(g)[::-1] * d).sum()


def test_approx_ndcg_tends_to_ndcg_as_alpha_grows():
    scores, labels = randn(1, 8, seed=6), graded((1, 8), 7)
    target = true_ndcg(scores[0], labels[0])
    gaps = [abs(-F.approx_ndcg_loss(scores, labels, alpha=a).item() - target) for a in (1.0, 10.0, 100.0, 1e4)]
    assert gaps[0] > 0.01 and gaps[-1] < 1e-6
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:]))


def test_neural_sort_rows_are_distributions_and_tend_to_the_sort():
    scores = randn(2, 6, seed=8)
    valid = np.ones((2, 6), bool)
    valid[1, 4:] = False
    p = F.neural_sort(scores, tau=1.0, mask=valid).numpy()
    np.testing.assert_allclose(p[0].sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p[1, :4].sum(1), 1.0, rtol=1e-12)
    assert np.all(p[1, 4:] == 0) and np.all(p[1, :, 4:] == 0)
    sorts = [np.eye(6)[np.argsort(-scores[0])], np.eye(4)[np.argsort(-scores[1, :4])]]
    gaps = []
    for tau in (1.0, 0.1, 0.01, 0.001):
        p = F.neural_sort(scores, tau=tau, mask=valid).numpy()
        gaps.append(max(np.abs(p[0] - sorts[0]).max(), np.abs(p[1, :4, :4] - sorts[1]).max()))
    assert gaps[0] > 0.05 and gaps[-1] < 1e-6 and all(b < a for a, b in zip(gaps, gaps[1:]))
    compare_with_torch(lambda s: F.neural_sort(s, tau=0.5, mask=valid),
                       lambda s: t_neural_sort(s, 0.5, torch.tensor(valid)).masked_fill(
                           ~torch.tensor(valid)[:, :, None] | ~torch.tensor(valid)[:, None, :], 0.0),
                       scores, dtype=np.float64)


def test_sinkhorn_makes_doubly_stochastic_matrices():
    p = np.abs(randn(2, 5, 5, seed=10)) + 0.1
    out = F.sinkhorn_scaling(p, tol=1e-9, max_iter=500).numpy()
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-8)
    np.testing.assert_allclose(out.sum(2), 1.0, atol=1e-8)


def test_neural_ndcg_tends_to_ndcg_as_temperature_falls():
    scores, labels = randn(1, 6, seed=11), graded((1, 6), 12)
    target = true_ndcg(scores[0], labels[0])
    assert -F.neural_ndcg_loss(scores, labels, temperature=1e-3).item() == pytest.approx(target, abs=1e-6)


# -- lists without a relevant item, errors --------------------------------------------------------------
def test_lists_without_relevant_items():
    scores = randn(2, 4, seed=13)
    labels = np.array([[0.0, 0, 0, 0], [1, 0, 2, 0]])
    alone = labels[1:], scores[1:]
    # pairwise losses have no pair there; the NDCG losses leave such a list out (NeuralNDCG) or count 0
    assert F.ranknet_loss(scores, labels).item() == pytest.approx(F.ranknet_loss(alone[1], alone[0]).item())
    assert F.neural_ndcg_loss(scores, labels).item() == pytest.approx(F.neural_ndcg_loss(alone[1], alone[0]).item())
    assert F.approx_ndcg_loss(scores, labels).item() == pytest.approx(F.approx_ndcg_loss(*alone[::-1]).item() / 2)
    assert F.softmax_loss(scores, labels).item() == pytest.approx(F.softmax_loss(*alone[::-1]).item())
    assert F.lambda_loss(np.zeros((1, 3)), np.zeros((1, 3))).item() == 0.0


ALL_LOSSES = [F.ranknet_loss, F.lambda_loss, F.listnet_loss, F.listmle_loss, F.approx_ndcg_loss, F.neural_ndcg_loss,
              F.pointwise_rmse, F.softmax_loss, F.rank_hinge_loss]


@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_a_list_of_padding_only_is_left_out(fn):
    # distinct labels: ListMLE's random order of ties depends on the batch's shape
    base = np.where(PADDED == PAD, PAD, np.arange(21.0).reshape(3, 7) % 5 + np.arange(7) / 10)
    labels = np.concatenate([base[:1], np.full((1, 7), PAD), base[1:]])
    scores = np.concatenate([SCORES[:1], randn(1, 7, seed=14), SCORES[1:]])
    value, grad = loss_and_grad(lambda s: fn(s, labels), scores)
    expected, expected_grad = loss_and_grad(lambda s: fn(s, base), SCORES)
    assert value == pytest.approx(expected, rel=1e-12)
    assert np.all(grad[1] == 0)
    np.testing.assert_allclose(np.delete(grad, 1, axis=0), expected_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("fn", [F.listnet_loss, F.ranknet_loss, F.lambda_loss])
def test_second_derivatives(fn):
    assert check_second_derivatives(lambda s: fn(s, PADDED), SCORES)


@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_errors_name_the_problem(fn):
    with pytest.raises(ShapeError, match="same shape"):
        fn(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r">= 0 \(or -1 for padding\); got -2.0 at \(1, 0\)"):
        fn(np.zeros((2, 3)), np.array([[0, 1, 2], [-2, 0, 1]]))


def test_argument_errors():
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        F.lambda_loss(SCORES, LABELS, k=0)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        F.neural_ndcg_loss(SCORES, LABELS, k=-1)
    with pytest.raises(ValueError, match="weighting must be one of"):
        F.lambda_loss(SCORES, LABELS, weighting="ndcg_loss3")
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        F.approx_ndcg_loss(SCORES, LABELS, alpha=0)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        F.ranknet_loss(SCORES, LABELS, reduction="none")
    with pytest.raises(ValueError, match="gain must be 'exp2' or 'linear'"):
        F.approx_ndcg_loss(SCORES, LABELS, gain="log")


def test_one_list_as_a_vector_and_float32():
    one = F.listnet_loss(SCORES[0].astype(np.float32), LABELS[0])
    assert one.dtype == np.float32
    assert one.item() == pytest.approx(F.listnet_loss(SCORES[:1], LABELS[:1]).item(), rel=1e-6)
