"""sample_token: one draw of the samplers from a step's scores, its options and checks."""

import numpy as np
import pytest
import torch

from lamina.text import sample_token


def test_top_k_one_and_a_tiny_nucleus_give_the_likeliest_token():
    scores = np.array([0.3, 2.0, -1.0, 1.9])
    rng = np.random.default_rng(0)
    assert {sample_token(scores, rng, top_k=1) for _ in range(20)} == {1}
    assert {sample_token(scores, rng, top_p=0.01) for _ in range(20)} == {1}
    drawn = {sample_token(scores, rng, top_k=2, temperature=5.0) for _ in range(200)}
    assert drawn == {1, 3}


def test_the_same_generator_state_draws_the_same_token():
    scores = np.random.default_rng(1).standard_normal(50)
    first = [sample_token(scores, np.random.default_rng(7), temperature=1.3) for _ in range(3)]
    assert len(set(first)) == 1


@pytest.mark.parametrize("options, message", [({"temperature": 0.0}, "temperature must be > 0"),
                                              ({"top_k": 5}, r"top_k must lie in \[1, 4\]"),
                                              ({"top_p": 0.0}, r"top_p must lie in \(0, 1\]")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        sample_token(np.zeros(4), np.random.default_rng(0), **options)
    with pytest.raises(ValueError, match=r"shape \(V,\)"):
        sample_token(np.zeros((2, 4)), np.random.default_rng(0))


def test_top_k_keeps_every_token_tied_with_the_kth():
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_token(scores, rng, top_k=2) for _ in range(600)], minlength=4)
    kept = torch.topk(torch.tensor(scores, dtype=torch.float64), 2).values[-1]      # the top-k warpers' rule
    allowed = (torch.tensor(scores, dtype=torch.float64) >= kept).numpy()
    assert (counts[allowed] > 150).all() and (counts[~allowed] == 0).all()
