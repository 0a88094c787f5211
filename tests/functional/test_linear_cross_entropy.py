"""linear_cross_entropy: PyTorch's values and gradients on the reference and chunked paths, the
chunked node's gradient check, its memory, and its errors."""

import tracemalloc

import numpy as np
import pytest
import torch

import lamina
import lamina.nn.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch

N, D, C = 11, 5, 7


def _problem(seed=0, n=N, d=D, c=C, ignored=(3,)):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, d)), rng.standard_normal((c, d)), rng.standard_normal(c)
    y = rng.integers(0, c, n)
    y[list(ignored)] = -100
    return x, w, b, y, rng.random(c) + 0.5


CASES = [(reduction, smoothing, weighted, chunk)
         for reduction in ("mean", "sum", "none")
         for smoothing, weighted in ((0.0, False), (0.0, True), (0.2, False), (0.2, True))
         for chunk in (None, 4)]


@pytest.mark.parametrize("reduction, smoothing, weighted, chunk", CASES)
def test_values_and_gradients_equal_torchs(reduction, smoothing, weighted, chunk):
    x, w, b, y, class_weights = _problem()
    weight = class_weights if weighted else None

    def ours(x, w, b, y):
        return F.linear_cross_entropy(x, w, y, linear_bias=b, weight=weight, reduction=reduction,
                                      label_smoothing=smoothing, chunk_size=chunk)

    def theirs(x, w, b, y):
        return torch.nn.functional.linear_cross_entropy(
            x, w, y, linear_bias=b, weight=None if weight is None else torch.tensor(weight), reduction=reduction,
            label_smoothing=smoothing)

    compare_with_torch(ours, theirs, x, w, b, y, dtype=np.float64, rtol=1e-10)


@pytest.mark.parametrize("chunk", [None, 3, 64])
def test_float32_without_bias_and_a_custom_ignore_index_equal_torchs_chunked_path(chunk):
    x, w, _, y, _ = _problem(seed=1, ignored=(0, 5))
    y[[0, 5]] = 2                                      # class 2 is the ignored one here
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=3)
    compare_with_torch(lambda x, w, y: F.linear_cross_entropy(x, w, y, ignore_index=2, chunk_size=chunk),
                       lambda x, w, y: torch.nn.functional.linear_cross_entropy(x, w, y, ignore_index=2,
                                                                               options=options),
                       x, w, y, dtype=np.float32, rtol=1e-5)


def test_one_sample_and_class_probabilities_as_torch():
    x, w, b, y, _ = _problem(seed=2)
    compare_with_torch(lambda x, w, b, y: F.linear_cross_entropy(x, w, y, linear_bias=b, chunk_size=2),
                       lambda x, w, b, y: torch.nn.functional.linear_cross_entropy(x, w, y, linear_bias=b),
                       x[0], w, b, y[0], dtype=np.float64, rtol=1e-10)
    probabilities = np.random.default_rng(3).dirichlet(np.ones(C), size=N)
    for reduction in ("mean", "none"):
        compare_with_torch(
            lambda x, w, p, r=reduction: F.linear_cross_entropy(x, w, p, reduction=r, label_smoothing=0.1,
                                                                chunk_size=4),
            lambda x, w, p, r=reduction: torch.nn.functional.linear_cross_entropy(x, w, p, reduction=r,
                                                                                  label_smoothing=0.1),
            x, w, probabilities, dtype=np.float64, rtol=1e-10, grad=[True, True, False])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_the_chunked_node_passes_gradcheck(reduction):
    x, w, b, y, class_weights = _problem(seed=4, n=7, d=3, c=5, ignored=(2,))
    assert check_gradients(lambda x, w, b: F.linear_cross_entropy(x, w, y, linear_bias=b, weight=class_weights,
                                                                  reduction=reduction, label_smoothing=0.3,
                                                                  chunk_size=3), x, w, b)


def test_leading_axes_take_the_last_as_features_and_chunks_change_nothing():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, 4, D)), rng.standard_normal((C, D)), rng.standard_normal(C)
    y = rng.integers(0, C, (3, 4))
    reference = F.linear_cross_entropy(lamina.tensor(x), lamina.tensor(w), y, linear_bias=b, reduction="none")
    assert reference.shape == (3, 4)
    logits = x @ w.T + b
    expected = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(reference.numpy(), expected, rtol=1e-5)
    for chunk in (1, 5, 12, 100):
        chunked = F.linear_cross_entropy(lamina.tensor(x), lamina.tensor(w), y, linear_bias=b, reduction="none",
                                         chunk_size=chunk)
        np.testing.assert_allclose(chunked.numpy(), reference.numpy(), rtol=1e-6)


def test_every_target_ignored_gives_nan_as_torch():
    x, w, _, y, _ = _problem(seed=6, ignored=range(N))
    for chunk in (None, 4):
        loss = F.linear_cross_entropy(lamina.tensor(x), lamina.tensor(w), y, chunk_size=chunk)
        assert np.isnan(loss.item())
    assert torch.isnan(torch.nn.functional.linear_cross_entropy(torch.tensor(x), torch.tensor(w), torch.tensor(y)))


def test_the_reference_path_has_second_derivatives_and_the_chunked_one_says_it_has_none():
    x, w, b, y, _ = _problem(seed=7, n=5, d=3, c=4, ignored=())
    assert check_second_derivatives(lambda x, w: F.linear_cross_entropy(x, w, y, label_smoothing=0.1), x, w)
    xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    loss = F.linear_cross_entropy(xt, lamina.tensor(w, dtype=np.float64), y, chunk_size=2)
    with pytest.raises(RuntimeError, match="LinearCrossEntropy has no differentiable backward"):
        lamina.autograd.grad(loss, [xt], create_graph=True)


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_chunked_path_never_holds_the_whole_logits():
    """A 20,000-word head on 256 rows: the logits alone are 20 MB in float32."""
    rng = np.random.default_rng(8)
    x = lamina.tensor(rng.standard_normal((256, 16)).astype(np.float32), requires_grad=True)
    w = lamina.tensor(0.1 * rng.standard_normal((20_000, 16)).astype(np.float32), requires_grad=True)
    y = rng.integers(0, 20_000, 256)

    def run(chunk):
        x.grad = w.grad = None
        F.linear_cross_entropy(x, w, y, label_smoothing=0.1, chunk_size=chunk).backward()
        return x.grad.copy(), w.grad.copy()

    reference, chunked = _peak_bytes(lambda: run(None)), _peak_bytes(lambda: run(16))
    logits_bytes = 256 * 20_000 * 4
    assert reference > 2 * logits_bytes and chunked < logits_bytes / 2
    for a, b in zip(run(None), run(16)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)


def test_bad_arguments_name_the_function_and_what_was_expected():
    x, w, b, y, _ = _problem(seed=9)
    xt, wt = lamina.tensor(x), lamina.tensor(w)
    with pytest.raises(lamina.ShapeError, match=r"linear_cross_entropy: linear_weight must be 2-D.*\(7, 5, 1\)"):
        F.linear_cross_entropy(xt, lamina.tensor(w[..., None]), y)
    with pytest.raises(lamina.ShapeError, match=r"input \(11, 4\) must end with the weight's in_features 5"):
        F.linear_cross_entropy(lamina.tensor(x[:, :4]), wt, y)
    with pytest.raises(lamina.ShapeError, match=r"linear_bias must have one value per class, shape \(7,\)"):
        F.linear_cross_entropy(xt, wt, y, linear_bias=b[:3])
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\], got 1.5"):
        F.linear_cross_entropy(xt, wt, y, label_smoothing=1.5)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="chunk_size must be a positive int or None"):
            F.linear_cross_entropy(xt, wt, y, chunk_size=bad)
    with pytest.raises(ValueError, match="linear_cross_entropy: target 7 is out of range for 7 classes"):
        F.linear_cross_entropy(xt, wt, np.full(N, 7), chunk_size=4)
    with pytest.raises(lamina.ShapeError, match=r"target must be class indices of shape \(11,\).*got shape \(10,\)"):
        F.linear_cross_entropy(xt, wt, y[:10], chunk_size=4)
    with pytest.raises(lamina.ShapeError, match=r"weight must hold one value per class \(7\), got shape \(3,\)"):
        F.linear_cross_entropy(xt, wt, y, weight=np.ones(3), chunk_size=4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.linear_cross_entropy(xt, wt, y, reduction="avg")


@pytest.mark.filterwarnings("ignore:invalid value encountered")     # inf in the ignored row's products
@pytest.mark.parametrize("chunk", [None, 2])
def test_an_ignored_row_adds_nothing_even_with_infinite_scores_and_no_kept_row_has_a_zero_gradient(chunk):
    x = np.array([[0.3, -1.2], [np.inf, 0.5], [1.0, 2.0]])
    w, target = np.array([[1.0, 2.0], [0.5, -1.0], [0.0, 1.0]]), np.array([0, -100, 2])
    for reduction in ("none", "sum", "mean"):
        ours = F.linear_cross_entropy(lamina.tensor(x, dtype=np.float64), lamina.tensor(w, dtype=np.float64), target,
                                      reduction=reduction, chunk_size=chunk)
        theirs = torch.nn.functional.linear_cross_entropy(torch.tensor(x), torch.tensor(w), torch.tensor(target),
                                                          reduction=reduction)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    x, w, _, _, _ = _problem(seed=10)
    for smoothing in (0.0, 0.2):
        xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
        loss = F.linear_cross_entropy(xt, lamina.tensor(w, dtype=np.float64), np.full(N, -100),
                                      label_smoothing=smoothing, chunk_size=chunk)
        loss.backward()
        assert np.isnan(loss.item()) and not np.any(xt.grad)          # torch's reference path: nan, gradient 0
