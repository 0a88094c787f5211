"""The CRF layer against a torch re-implementation of pytorch-crf's algorithm (forward algorithm
by logsumexp over time-first tensors, gold score by indexing, Viterbi with back pointers):
log-likelihood values and gradients for every reduction, both layouts; float64 gradient
checks; decoding and marginals; constraints; argument errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina.nn import CRF
from lamina.text import bio_allowed_transitions

K = 4
LENGTHS = [5, 2, 4, 1]


# -- the reference: pytorch-crf's algorithm, time first --------------------------------------------
def torch_score(emissions, tags, mask, start, end, transitions):
    steps, batch = tags.shape
    rows = torch.arange(batch)
    maskf = mask.to(emissions.dtype)
    score = start[tags[0]] + emissions[0, rows, tags[0]]
    for t in range(1, steps):
        score = score + transitions[tags[t - 1], tags[t]] * maskf[t] + emissions[t, rows, tags[t]] * maskf[t]
    last = tags[mask.long().sum(0) - 1, rows]
    return score + end[last]


def torch_normalizer(emissions, mask, start, end, transitions):
    score = start + emissions[0]
    for t in range(1, emissions.shape[0]):
        following = torch.logsumexp(score.unsqueeze(2) + transitions + emissions[t].unsqueeze(1), dim=1)
        score = torch.where(mask[t].unsqueeze(1), following, score)
    return torch.logsumexp(score + end, dim=1)


def torch_log_likelihood(emissions, tags, mask, start, end, transitions, reduction, batch_first):
    if batch_first:
        emissions, tags, mask = emissions.transpose(0, 1), tags.t(), mask.t()
    llh = (torch_score(emissions, tags, mask, start, end, transitions)
           - torch_normalizer(emissions, mask, start, end, transitions))
    if reduction == "none":
        return llh
    if reduction == "sum":
        return llh.sum()
    if reduction == "mean":
        return llh.mean()
    return llh.sum() / mask.to(emissions.dtype).sum()


def torch_viterbi(emissions, mask, start, end, transitions):
    """Best paths, time-first inputs, back pointers as pytorch-crf keeps them."""
    score = start + emissions[0]
    history = []
    for t in range(1, emissions.shape[0]):
        following, indices = (score.unsqueeze(2) + transitions + emissions[t].unsqueeze(1)).max(dim=1)
        score = torch.where(mask[t].unsqueeze(1), following, score)
        history.append(indices)
    score = score + end
    ends = mask.long().sum(0) - 1
    paths = []
    for n in range(emissions.shape[1]):
        best = [int(score[n].argmax())]
        for pointers in reversed(history[:ends[n]]):
            best.append(int(pointers[n][best[-1]]))
        paths.append(best[::-1])
    return paths


# -- data ----------------------------------------------------------------------------------------------
def batch(batch_first=True, seed=0, lengths=LENGTHS):
    steps, n = max(lengths), len(lengths)
    rng = np.random.default_rng(seed)
    mask = np.arange(steps)[None, :] < np.array(lengths)[:, None]            # (N, T)
    emissions = randn(n, steps, K, seed=seed)
    tags = np.where(mask, rng.integers(0, K, (n, steps)), -100)            # padding holds -100
    if not batch_first:
        return emissions.transpose(1, 0, 2).copy(), tags.T.copy(), mask.T.copy()
    return emissions, tags, mask


def f64(array):
    return lamina.tensor(array, dtype=np.float64)


def make_crf(batch_first=True, seed=0, dtype=np.float64, **options):
    lamina.manual_seed(seed)
    crf = CRF(K, batch_first=batch_first, **options)
    return crf.to(dtype)


def torch_parameters(crf):
    return [torch.tensor(p.data.copy(), requires_grad=True)
            for p in (crf.start_transitions, crf.end_transitions, crf.transitions)]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "token_mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_likelihood_and_gradients_match_torch(batch_first, reduction, dtype):
    emissions, tags, mask = batch(batch_first)
    crf = make_crf(batch_first, dtype=dtype)
    ours_e = lamina.tensor(emissions.astype(dtype), requires_grad=True, dtype=dtype)
    ours = crf(ours_e, tags, mask, reduction=reduction)
    theirs_e = torch.tensor(emissions.astype(dtype), requires_grad=True)
    params = torch_parameters(crf)
    theirs = torch_log_likelihood(theirs_e, torch.tensor(np.where(mask, tags, 0)), torch.tensor(mask), *params,
                                  reduction, batch_first)
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    assert_close(ours.numpy(), theirs.detach().numpy(), rtol, "log-likelihood")
    upstream = randn(*theirs.shape, seed=3).astype(dtype)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    assert_close(ours_e.grad, theirs_e.grad.numpy(), rtol, "gradient of the emissions")
    for mine, reference, name in zip((crf.start_transitions, crf.end_transitions, crf.transitions), params,
                                     ("start", "end", "transitions")):
        assert_close(mine.grad, reference.grad.numpy(), rtol, f"gradient of {name}")


def test_no_mask_means_every_step():
    emissions, tags, _ = batch(lengths=[3, 3])
    crf = make_crf()
    full = np.ones(tags.shape, dtype=bool)
    assert_close(crf(emissions, tags).numpy(), crf(emissions, tags, full).numpy(), 1e-12)
    assert crf.decode(emissions) == crf.decode(emissions, full)
    mask_ints = full.astype(np.int64)
    assert_close(crf(emissions, tags, mask_ints).numpy(), crf(emissions, tags, full).numpy(), 1e-12)


def test_gradient_check_in_float64():
    """On the emissions here; the transitions' gradients are checked in tests/functional/test_crf.py."""
    emissions, tags, mask = batch(lengths=[3, 1, 2])
    crf = make_crf()
    assert check_gradients(lambda e: crf(e, tags, mask, reduction="mean"), emissions)
    assert check_gradients(lambda e: crf(e, tags, mask, reduction="none"), emissions)


@pytest.mark.parametrize("batch_first", [True, False])
def test_decode_matches_torch_viterbi(batch_first):
    emissions, _, mask = batch(batch_first, seed=5)
    crf = make_crf(batch_first)
    theirs_e, theirs_m = torch.tensor(emissions), torch.tensor(mask)
    if batch_first:
        theirs_e, theirs_m = theirs_e.transpose(0, 1), theirs_m.t()
    params = torch_parameters(crf)
    expected = torch_viterbi(theirs_e, theirs_m, *params)
    assert crf.decode(emissions, mask) == expected
    assert [len(path) for path in expected] == LENGTHS
    assert [paths[0] for paths in crf.decode(emissions, mask, nbest=3)] == expected


def test_nbest_are_the_top_paths_by_log_likelihood():
    emissions, _, mask = batch(seed=6, lengths=[3, 2])
    crf = make_crf()
    found = crf.decode(emissions, mask, nbest=4)
    for n, length in enumerate([3, 2]):
        paths = [list(p) for p in itertools.product(range(K), repeat=length)]
        tags = np.array([p + [0] * (3 - length) for p in paths])
        rows = np.repeat(emissions[n:n + 1], len(paths), axis=0)
        llh = crf(f64(rows), tags, np.repeat(mask[n:n + 1], len(paths), axis=0), reduction="none").numpy()
        assert found[n] == [paths[i] for i in np.argsort(-llh)[:4]]


@pytest.mark.parametrize("batch_first", [True, False])
def test_marginals_sum_to_one_and_are_gradients(batch_first):
    emissions, _, mask = batch(batch_first, seed=7)
    crf = make_crf(batch_first)
    marginals = crf.marginal_probabilities(f64(emissions), mask).numpy()
    assert marginals.shape == emissions.shape
    assert_close(marginals.sum(axis=-1), mask.astype(float), 1e-12, "marginals summed over the tags")
    # d log Z / d emissions = the marginals: the log-likelihood's gradient is one-hot(tags) - marginals
    tags = np.zeros(mask.shape, dtype=np.int64)
    e = lamina.tensor(emissions, requires_grad=True, dtype=np.float64)
    crf(e, tags, mask).backward()
    one_hot = np.eye(K)[tags] * mask[..., None]
    assert_close(e.grad, one_hot - marginals, 1e-12, "gradient vs marginals")


def test_constrained_decoding_and_training_follow_bio_rules():
    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    allowed = bio_allowed_transitions(labels)
    emissions, tags, mask = batch(seed=8, lengths=[5, 5, 3, 4, 1])
    emissions[:, :, 2] += 2.0                    # I-PER everywhere: the unconstrained paths break the rules
    crf = make_crf(allowed_transitions=allowed)
    free = make_crf()

    def legal(path):
        ends = [K] + path + [K + 1]
        return all(allowed[a, b] for a, b in zip(ends[:-1], ends[1:]))
    assert not all(legal(path) for path in free.decode(emissions, mask))
    decoded = crf.decode(f64(emissions), mask, nbest=3)
    assert all(legal(path) for paths in decoded for path in paths)
    # brute force over the legal paths: the best one and the log partition of the constrained model
    for n, length in enumerate([5, 5, 3, 4, 1]):
        paths = [list(p) for p in itertools.product(range(K), repeat=length)]
        padded = np.array([p + [0] * (5 - length) for p in paths])
        llh = crf(f64(np.repeat(emissions[n:n + 1], len(paths), 0)), padded,
                  np.repeat(mask[n:n + 1], len(paths), 0), reduction="none").numpy()
        best_legal = max((p for p in paths if legal(p)), key=lambda p: llh[paths.index(p)])
        assert decoded[n][0] == best_legal
        # the legal paths hold all the probability
        assert abs(np.log(np.exp(llh[[legal(p) for p in paths]]).sum())) < 1e-9
    # training pushes no gradient into the forbidden parameters
    crf(f64(emissions), np.zeros(mask.shape, dtype=np.int64), mask).backward()
    assert np.all(crf.transitions.grad[~allowed[:K, :K]] == 0)
    assert np.all(crf.start_transitions.grad[~allowed[K, :K]] == 0)


def test_allowed_transitions_of_tags_alone():
    allowed = np.ones((K, K), dtype=bool)
    allowed[0, 1] = False
    crf = make_crf(allowed_transitions=allowed)
    transitions, start, end = crf.scores()
    assert transitions.numpy()[0, 1] == lamina.nn.crf.FORBIDDEN
    assert_close(start.numpy(), crf.start_transitions.data, 0.0)


def test_parameters_and_initialisation():
    crf = CRF(6)
    shapes = {name: p.shape for name, p in crf.named_parameters()}
    assert shapes == {"start_transitions": (6,), "end_transitions": (6,), "transitions": (6, 6)}
    values = np.concatenate([p.data.ravel() for p in crf.parameters()])
    assert values.min() >= -0.1 and values.max() <= 0.1 and values.std() > 0.02
    assert crf.get_config()["num_tags"] == 6
    assert lamina.nn.layer_from_config(lamina.nn.layer_to_config(crf)).num_tags == 6


# -- errors ----------------------------------------------------------------------------------------------
def test_errors_name_the_layer():
    emissions, tags, mask = batch()
    crf = make_crf()
    with pytest.raises(ValueError, match="CRF.*first step"):
        bad = mask.copy()
        bad[1, 0] = False
        crf(emissions, tags, bad)
    with pytest.raises(ValueError, match="CRF.*prefix"):
        holes = mask.copy()
        holes[0, 2] = False
        crf(emissions, tags, holes)
    with pytest.raises(lamina.errors.ShapeError, match=r"CRF.*emissions.*\(batch, time, 4\)"):
        crf(emissions[:, :, :3], tags, mask)
    with pytest.raises(lamina.errors.ShapeError, match="CRF.*tags"):
        crf(emissions, tags[:, :3], mask)
    with pytest.raises(TypeError, match="CRF.*integer"):
        crf(emissions, tags.astype(float), mask)
    with pytest.raises(ValueError, match="CRF.*tag id 4"):
        crf(emissions, np.where(mask, 4, 0), mask)
    with pytest.raises(lamina.errors.ShapeError, match="CRF.*mask"):
        crf(emissions, tags, mask[:, :2])
    with pytest.raises(TypeError, match="CRF.*mask"):
        crf(emissions, tags, mask.astype(float))
    with pytest.raises(ValueError, match="CRF.*reduction"):
        crf(emissions, tags, mask, reduction="average")
    with pytest.raises(lamina.errors.ShapeError, match="CRF.*allowed_transitions"):
        CRF(K, allowed_transitions=np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="CRF.*nbest"):
        crf.decode(emissions, mask, nbest=0)
