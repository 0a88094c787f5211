"""The linear-chain CRF's functional pieces against brute-force enumeration of every tag path:
log partition, gold path score, Viterbi and n-best paths, marginals; the fused log partition
against its composite (values, gradients, second derivatives) and float64 gradient checks.

Arrays are time first: emissions (T, N, K), tags and mask (T, N)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, randn
from lamina.functional.crf import crf_log_partition, crf_log_partition_composite, crf_marginals, crf_path_score
from lamina.functional.crf_decode import crf_nbest_paths

LENGTHS = [4, 1, 3, 2]           # one row per length, the first one full


def problem(k=3, lengths=LENGTHS, seed=0):
    """Emissions (T, N, K), transitions, start, end, tags (T, N) and a prefix mask (T, N)."""
    steps, batch = max(lengths), len(lengths)
    rng = np.random.default_rng(seed)
    emissions = randn(steps, batch, k, seed=seed)
    transitions, start, end = randn(k, k, seed=seed + 1), randn(k, seed=seed + 2), randn(k, seed=seed + 3)
    tags = rng.integers(0, k, (steps, batch))
    mask = np.arange(steps)[:, None] < np.array(lengths)[None, :]
    return emissions, transitions, start, end, tags, mask


def path_score(emissions, transitions, start, end, n, path):
    score = start[path[0]] + end[path[-1]] + sum(emissions[t, n, y] for t, y in enumerate(path))
    return score + sum(transitions[a, b] for a, b in zip(path[:-1], path[1:]))


def every_path(emissions, transitions, start, end, mask, n):
    """All tag paths of row n over its real steps and their scores."""
    k = emissions.shape[2]
    paths = [list(p) for p in itertools.product(range(k), repeat=int(mask[:, n].sum()))]
    return paths, np.array([path_score(emissions, transitions, start, end, n, p) for p in paths])


def brute_log_z(emissions, transitions, start, end, mask):
    out = []
    for n in range(emissions.shape[1]):
        _, scores = every_path(emissions, transitions, start, end, mask, n)
        out.append(np.log(np.exp(scores - scores.max()).sum()) + scores.max())
    return np.array(out)


def tensors(*arrays):
    return [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]


@pytest.mark.parametrize("fn", [crf_log_partition, crf_log_partition_composite])
def test_log_partition_equals_brute_force(fn):
    emissions, transitions, start, end, _, mask = problem()
    ours = fn(*tensors(emissions, transitions, start, end), mask)
    assert_close(ours.numpy(), brute_log_z(emissions, transitions, start, end, mask), 1e-12, "log Z")


def test_path_score_equals_brute_force():
    emissions, transitions, start, end, tags, mask = problem()
    # padded steps hold other tags: they must not be read
    ours = crf_path_score(*tensors(emissions, transitions, start, end), tags, mask).numpy()
    expected = [path_score(emissions, transitions, start, end, n, list(tags[:length, n]))
                for n, length in enumerate(LENGTHS)]
    assert_close(ours, np.array(expected), 1e-12, "gold score")


def test_viterbi_and_nbest_equal_brute_force():
    emissions, transitions, start, end, _, mask = problem(k=3, seed=4)
    found = crf_nbest_paths(emissions, transitions, start, end, mask, nbest=5)
    for n in range(len(LENGTHS)):
        paths, scores = every_path(emissions, transitions, start, end, mask, n)
        order = np.argsort(-scores)[:5]
        assert [path for path, _ in found[n]] == [paths[i] for i in order]
        assert_close(np.array([score for _, score in found[n]]), scores[order], 1e-12, "n-best scores")
    best = crf_nbest_paths(emissions, transitions, start, end, mask)
    assert [paths[0][0] for paths in best] == [paths[0][0] for paths in found]


def test_nbest_stops_at_the_number_of_paths():
    emissions, transitions, start, end, _, mask = problem(k=2, lengths=[2, 1])
    found = crf_nbest_paths(emissions, transitions, start, end, mask, nbest=6)
    assert [len(paths) for paths in found] == [4, 2]
    assert sorted(path for path, _ in found[0]) == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_marginals_equal_brute_force():
    emissions, transitions, start, end, _, mask = problem(seed=2)
    ours = crf_marginals(emissions, transitions, start, end, mask)
    expected = np.zeros_like(ours)
    for n in range(len(LENGTHS)):
        paths, scores = every_path(emissions, transitions, start, end, mask, n)
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        for path, w in zip(paths, weights):
            expected[np.arange(len(path)), n, path] += w
    assert_close(ours, expected, 1e-12, "marginals")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_matches_composite_values_and_gradients(dtype):
    emissions, transitions, start, end, _, mask = problem(k=4, lengths=[6, 2, 5, 1, 6], seed=5)
    upstream = randn(len(mask[0]), seed=9)
    results = []
    for fn in (crf_log_partition, crf_log_partition_composite):
        inputs = [lamina.tensor(a.astype(dtype), requires_grad=True, dtype=dtype)
                  for a in (emissions, transitions, start, end)]
        out = fn(*inputs, mask)
        out.backward(upstream.astype(dtype))
        results.append([out.numpy()] + [x.grad for x in inputs])
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, rtol, f"fused vs composite, item {k}")


def test_gradients_are_the_marginals():
    emissions, transitions, start, end, _, mask = problem(seed=3)
    inputs = tensors(emissions, transitions, start, end)
    crf_log_partition(*inputs, mask).sum().backward()
    assert_close(inputs[0].grad, crf_marginals(emissions, transitions, start, end, mask), 1e-12, "dlogZ/dE")


def test_gradient_checks_in_float64():
    emissions, transitions, start, end, tags, mask = problem(k=3, lengths=[3, 1, 2])
    assert check_gradients(lambda e, a, s, f: crf_log_partition(e, a, s, f, mask), emissions, transitions, start, end)
    assert check_gradients(lambda e, a, s, f: crf_path_score(e, a, s, f, tags, mask),
                           emissions, transitions, start, end)


def test_second_derivatives_through_the_fused_node():
    emissions, transitions, start, end, _, mask = problem(k=3, lengths=[3, 1, 2])
    assert check_second_derivatives(lambda e, a, s, f: crf_log_partition(e, a, s, f, mask),
                                    emissions, transitions, start, end)
    # the Hessian-vector product of the fused node equals the composite's
    hvps = []
    for fn in (crf_log_partition, crf_log_partition_composite):
        inputs = tensors(emissions, transitions, start, end)
        grads = lamina.autograd.grad(fn(*inputs, mask).sum(), inputs, create_graph=True)
        total = sum((g * lamina.tensor(randn(*g.shape, seed=i), dtype=np.float64)).sum() for i, g in enumerate(grads))
        hvps.append(lamina.autograd.grad(total, inputs))
    for a, b in zip(*hvps):
        assert_close(a, b, 1e-10, "Hessian-vector product")
