"""Token-level divergences for distilling language models (forward KL, reverse KL, GKD's
JSD(beta)): values and gradients w.r.t. the student's logits against float64 torch rewrites of
the formulas and a NumPy reference; float64 gradient checks; JSD(beta)'s limits at beta -> 0
and beta -> 1; masked positions; the teacher's logits as a constant; bad settings."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F

N, L, V = 2, 4, 6
MASK = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)


def torch_divergence(s, t, keep, divergence, beta, temperature):
    """Float64 torch rewrite: per-token divergence at temperature, masked mean over positions."""
    log_q = torch.log_softmax(s / temperature, dim=-1)
    log_p = torch.log_softmax(t / temperature, dim=-1)
    forward = (log_p.exp() * (log_p - log_q)).sum(-1)
    reverse = (log_q.exp() * (log_q - log_p)).sum(-1)
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        per_token = forward
    elif divergence == "reverse_kl" or beta == 1:
        per_token = reverse
    else:
        log_m = torch.log(beta * log_p.exp() + (1 - beta) * log_q.exp())
        per_token = (beta * (log_p.exp() * (log_p - log_m)).sum(-1)
                     + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1))
    return (per_token * keep).sum() / keep.sum()


def numpy_per_token(s, t, divergence, beta, temperature):
    def probabilities(z):
        e = np.exp(z / temperature - (z / temperature).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = probabilities(t), probabilities(s)
    kl = lambda a, b: (a * np.log(a / b)).sum(-1)  # noqa: E731
    if divergence == "forward_kl":
        return kl(p, q)
    if divergence == "reverse_kl":
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


CASES = [("forward_kl", 0.5, 1.0), ("reverse_kl", 0.5, 2.0), ("jsd", 0.5, 1.0), ("jsd", 0.1, 0.7),
         ("jsd", 0.9, 2.0), ("jsd", 0.0, 1.5), ("jsd", 1.0, 1.0)]


@pytest.mark.parametrize("divergence,beta,temperature", CASES)
def test_divergences_match_torch_and_numpy(divergence, beta, temperature):
    s, t = randn(N, L, V, seed=1, scale=2.0), randn(N, L, V, seed=2, scale=2.0)
    keep = MASK.astype(np.float64)
    compare_with_torch(lambda a, b, k: F.token_divergence(a, b, k, divergence, beta, temperature),
                       lambda a, b, k: torch_divergence(a, b, k, divergence, beta, temperature),
                       s, t, keep, dtype=np.float64, rtol=1e-10, grad=[True, False, False])
    per_token = F.token_divergence(lamina.tensor(s, dtype=np.float64), t, MASK, divergence, beta, temperature,
                                   reduction="none").numpy()
    reference_beta = {0.0: None, 1.0: None}.get(beta, beta)
    name = divergence if reference_beta is not None else ("forward_kl" if beta == 0 else "reverse_kl")
    expected = numpy_per_token(s, t, name, reference_beta, temperature) * MASK
    assert_close(per_token, expected, 1e-10)
    total = F.token_divergence(lamina.tensor(s, dtype=np.float64), t, MASK, divergence, beta, temperature,
                               reduction="sum").item()
    assert abs(total - expected.sum()) < 1e-10


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3)])
def test_float64_gradient_check(divergence, beta):
    t = randn(N, L, V, seed=4)
    assert check_gradients(lambda s: F.token_divergence(s, t, MASK, divergence, beta, 1.3), randn(N, L, V, seed=3))


def test_jsd_limits_are_the_kls_scaled_by_beta():
    s, t = randn(N, L, V, seed=5), randn(N, L, V, seed=6)
    student = lamina.tensor(s, dtype=np.float64)
    forward = F.token_divergence(student, t, MASK, "forward_kl").item()
    reverse = F.token_divergence(student, t, MASK, "reverse_kl").item()
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        near_zero = F.generalized_jsd(student, t, MASK, beta=eps).item() / eps
        near_one = F.generalized_jsd(student, t, MASK, beta=1 - eps).item() / eps
        errors.append((abs(near_zero - forward), abs(near_one - reverse)))
    # JSD(beta) / beta -> KL(P || Q) and JSD(beta) / (1 - beta) -> KL(Q || P), the gap shrinking as O(eps)
    assert errors[-1][0] < 1e-3 * forward and errors[-1][1] < 1e-3 * reverse
    assert errors[0][0] > 50 * errors[-1][0] and errors[0][1] > 50 * errors[-1][1]
    # the ends themselves are those limits
    assert F.generalized_jsd(student, t, MASK, beta=0.0).item() == pytest.approx(forward, rel=1e-12)
    assert F.generalized_jsd(student, t, MASK, beta=1.0).item() == pytest.approx(reverse, rel=1e-12)
    # JSD(beta)(P || Q) = JSD(1 - beta)(Q || P); JSD(1/2) is the Jensen-Shannon divergence, <= log 2
    swapped = F.generalized_jsd(lamina.tensor(t, dtype=np.float64), s, MASK, beta=0.7).item()
    assert F.generalized_jsd(student, t, MASK, beta=0.3).item() == pytest.approx(swapped, rel=1e-12)
    half = F.generalized_jsd(student, 100 * t, None, beta=0.5, reduction="none").numpy()
    assert (half >= 0).all() and (half <= np.log(2) + 1e-12).all()


def test_identical_distributions_give_zero():
    s = randn(N, L, V, seed=7)
    for divergence in F.TOKEN_DIVERGENCES:
        assert abs(F.token_divergence(lamina.tensor(s, dtype=np.float64), s + 3.0, None, divergence).item()) < 1e-12


@pytest.mark.parametrize("divergence", F.TOKEN_DIVERGENCES)
def test_masked_positions_do_not_contribute(divergence):
    s, t = randn(N, L, V, seed=8), randn(N, L, V, seed=9)
    wild_s, wild_t = s.copy(), t.copy()
    wild_s[~MASK] = 1e3 * randn(int((~MASK).sum()), V, seed=10)
    wild_t[~MASK] = -1e3 * randn(int((~MASK).sum()), V, seed=11)
    student, wild = lamina.tensor(s, dtype=np.float64, requires_grad=True), lamina.tensor(
        wild_s, dtype=np.float64, requires_grad=True)
    loss = F.token_divergence(student, t, MASK, divergence)
    wild_loss = F.token_divergence(wild, wild_t, MASK, divergence)
    kept_only = F.token_divergence(lamina.tensor(s[MASK], dtype=np.float64), t[MASK], None, divergence)
    assert loss.item() == pytest.approx(wild_loss.item(), rel=1e-12)
    assert loss.item() == pytest.approx(kept_only.item(), rel=1e-12)
    loss.backward()
    wild_loss.backward()
    assert np.all(np.asarray(wild.grad)[~MASK] == 0.0) and np.all(np.asarray(student.grad)[~MASK] == 0.0)
    assert_close(np.asarray(wild.grad)[MASK], np.asarray(student.grad)[MASK], 1e-12)


def test_the_teacher_logits_get_no_gradient():
    student = lamina.tensor(randn(N, L, V, seed=12), dtype=np.float64, requires_grad=True)
    teacher = lamina.tensor(randn(N, L, V, seed=13), dtype=np.float64, requires_grad=True)
    F.generalized_jsd(student, teacher, MASK, beta=0.4).backward()
    assert teacher.grad is None and student.grad is not None


def test_bad_arguments_are_refused():
    s = randn(N, L, V)
    with pytest.raises(ValueError, match="divergence"):
        F.token_divergence(s, s, divergence="kl")
    with pytest.raises(ValueError, match="beta"):
        F.generalized_jsd(s, s, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        F.token_divergence(s, s, temperature=0.0)
    with pytest.raises(lamina.errors.ShapeError, match="share one shape"):
        F.token_divergence(s, s[..., :-1])
    with pytest.raises(lamina.errors.ShapeError, match="mask"):
        F.token_divergence(s, s, MASK[:, :2])
