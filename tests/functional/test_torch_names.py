"""PyTorch-named functional ops (functional.torch_names, nn.layer_functions): values and
gradients against torch (channel axis moved to the end at the boundary), gradient checks,
running statistics, dropout statistics, Gumbel-softmax sampling and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.nn.functional as F
from helpers import check_gradients, compare_with_torch, nonzero, op_table_tests, positive, randn
from lamina.errors import ShapeError

F64 = np.float64


def channels_first(x):
    return x.movedim(-1, 1).contiguous()


def channels_last(fn):
    """torch's ``fn`` on lamina's channels-last inputs: the first input's channels moved to
    axis 1 and the output's back to the end."""
    return lambda x, *rest: fn(channels_first(x), *rest).movedim(1, -1)


IDS = np.array([[0, 2, 1], [1, 4, 2]])
RUNNING_MEAN, RUNNING_VAR = randn(4, seed=8), positive(4, seed=9)

CASES = {
    "linear": (F.linear, TF.linear, [randn(3, 4), randn(5, 4, seed=1), randn(5, seed=2)]),
    "bilinear": (F.bilinear, TF.bilinear, [randn(3, 2), randn(3, 4, seed=1), randn(5, 2, 4, seed=2), randn(5)]),
    "relu6": (F.relu6, TF.relu6, [np.concatenate([nonzero(6), [6.5, 7.0]]) * 2.5]),
    "hardswish": (F.hardswish, TF.hardswish, [randn(3, 4) * 3]),
    "logsigmoid": (F.logsigmoid, TF.logsigmoid, [randn(3, 4) * 3]),
    "prelu": (F.prelu, lambda x, w: TF.prelu(channels_first(x), w).movedim(1, -1), [nonzero(2, 3, 4), positive(4)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (3, 4), w, b), lambda x, w, b: TF.layer_norm(x, (3, 4), w, b),
                   [randn(2, 3, 4), randn(3, 4, seed=1), randn(3, 4, seed=2)]),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), channels_last(lambda x, w, b: TF.group_norm(x, 2, w, b)),
                   [randn(2, 3, 3, 4), randn(4, seed=1), randn(4, seed=2)]),
    "batch_norm_evaluation": (
        lambda x, w: F.batch_norm(x, RUNNING_MEAN.astype(x.dtype), RUNNING_VAR.astype(x.dtype), w),
        channels_last(lambda x, w: TF.batch_norm(x, torch.tensor(RUNNING_MEAN, dtype=x.dtype),
                                                 torch.tensor(RUNNING_VAR, dtype=x.dtype), w)),
        [randn(3, 2, 4), randn(4, seed=1)]),
    "local_response_norm": (lambda x: F.local_response_norm(x, 3, alpha=0.1, k=2.0),
                            channels_last(lambda x: TF.local_response_norm(x, 3, alpha=0.1, k=2.0)),
                            [randn(2, 3, 6)]),
    "embedding": (lambda w: F.embedding(IDS, w), lambda w: TF.embedding(torch.tensor(IDS), w), [randn(6, 3)]),
    "channel_shuffle": (lambda x: F.channel_shuffle(x, 2), channels_last(lambda x: TF.channel_shuffle(x, 2)),
                        [randn(2, 3, 6)]),
    "pdist": (F.pdist, TF.pdist, [randn(5, 3)]),
    "pdist_p1_5": (lambda x: F.pdist(x, 1.5), lambda x: TF.pdist(x, 1.5), [randn(4, 3)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1),
               lambda x, w, b: TF.conv1d(channels_first(x), w.permute(0, 2, 1), b, stride=2, padding=1).movedim(1, -1),
               [randn(2, 7, 4), randn(6, 3, 4, seed=1), randn(6, seed=2)]),
    "conv1d_groups_dilation_same": (
        lambda x, w: F.conv1d(x, w, padding="same", dilation=2, groups=2),
        lambda x, w: TF.conv1d(channels_first(x), w.permute(0, 2, 1), padding="same", dilation=2,
                               groups=2).movedim(1, -1),
        [randn(2, 7, 4), randn(6, 3, 2, seed=1)]),
    "avg_pool1d_excluding_padding": (
        lambda x: F.avg_pool1d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        channels_last(lambda x: TF.avg_pool1d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)),
        [randn(2, 8, 3)]),
    "max_pool1d": (lambda x: F.max_pool1d(x, 3, 2, padding=1), channels_last(lambda x: TF.max_pool1d(x, 3, 2, 1)),
                   [randn(2, 7, 3)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)

# float32 batch statistics of a few values lose digits to cancellation: a looser float32 tolerance
NORMS = {
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
                      channels_last(lambda x, w, b: TF.instance_norm(x, weight=w, bias=b)),
                      [randn(2, 5, 4, seed=3), randn(4, seed=1), randn(4, seed=2)]),
    "batch_norm_training": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                            channels_last(lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True)),
                            [randn(3, 2, 4, seed=3), randn(4, seed=1), randn(4, seed=2)]),
}


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("name", list(NORMS))
def test_batch_statistics_norms_match_torch(name, dtype, rtol):
    ours, theirs, inputs = NORMS[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, rtol=rtol)
    if dtype == np.float64:
        assert check_gradients(ours, *inputs)


def test_hardsigmoid_matches_torch():
    # torch's float64 backward multiplies by 1/6 rounded to float32
    compare_with_torch(F.hardsigmoid, TF.hardsigmoid, randn(3, 4) * 3, dtype=np.float64, rtol=1e-7)
    compare_with_torch(F.hardsigmoid, TF.hardsigmoid, randn(3, 4) * 3, dtype=np.float32)
    assert check_gradients(F.hardsigmoid, randn(3, 4) * 3)


def test_embedding_padding_row_gets_no_gradient_as_torch():
    compare_with_torch(lambda w: F.embedding(IDS, w, padding_idx=1),
                       lambda w: TF.embedding(torch.tensor(IDS), w, padding_idx=1), randn(6, 3), dtype=F64)


@pytest.mark.parametrize("p", [0.0, float("inf"), 0.5, 1.0, 2.0, 3.0])
def test_pdist_of_every_p_matches_torch_with_ties_and_repeated_rows(p):
    # rows 0 and 3 coincide, coordinates repeat within pairs and max |difference| ties
    x = np.array([[1.0, 2.0, 3.0], [1.0, 5.0, 3.0], [0.0, 2.0, 4.0], [1.0, 2.0, 3.0], [-2.0, -1.0, 3.0]])
    compare_with_torch(lambda a: F.pdist(a, p), lambda a: TF.pdist(a, p), x, dtype=F64)
    compare_with_torch(lambda a: F.pdist(a, p), lambda a: TF.pdist(a, p), randn(4, 3), dtype=F64)


def test_max_pool1d_indices_match_torch():
    x = randn(2, 9, 3)
    _, ours = F.max_pool1d(lamina.tensor(x), 3, 2, return_indices=True)
    _, theirs = TF.max_pool1d(torch.tensor(x).movedim(-1, 1), 3, 2, return_indices=True)
    np.testing.assert_array_equal(np.asarray(ours), theirs.movedim(1, -1).numpy())


def test_one_hot_matches_torch():
    ids = np.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(F.one_hot(ids).numpy(), TF.one_hot(torch.tensor(ids)).numpy())
    assert F.one_hot(ids, num_classes=6).shape == (2, 2, 6) and F.one_hot(ids).dtype == np.int64


def test_one_hot_of_an_empty_input_needs_num_classes():
    empty = np.zeros((0, 2), dtype=np.int64)
    assert F.one_hot(empty, num_classes=3).shape == TF.one_hot(torch.tensor(empty), 3).shape == (0, 2, 3)
    with pytest.raises(RuntimeError, match="Can not infer total number of classes from empty tensor"):
        TF.one_hot(torch.tensor(empty))
    with pytest.raises(ValueError, match=r"one_hot: cannot infer the number of classes from an empty input "
                                         r"\(shape \(0, 2\)\); pass num_classes"):
        F.one_hot(empty)
    with pytest.raises(ValueError, match="one_hot: num_classes must be -1 .* or >= 0, got -2"):
        F.one_hot(np.array([0, 1]), num_classes=-2)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_updates_running_statistics_as_torch(training):
    x = randn(6, 3, 4)
    mean, var = RUNNING_MEAN.copy(), RUNNING_VAR.copy()
    t_mean, t_var = torch.tensor(RUNNING_MEAN), torch.tensor(RUNNING_VAR)
    for _ in range(2):
        ours = F.batch_norm(lamina.tensor(x, dtype=F64), mean, var, training=training, momentum=0.3)
        theirs = TF.batch_norm(torch.tensor(x).movedim(-1, 1), t_mean, t_var, training=training, momentum=0.3)
    np.testing.assert_allclose(ours.numpy(), theirs.movedim(1, -1).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mean, t_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(var, t_var.numpy(), rtol=1e-12)
    assert (not np.array_equal(mean, RUNNING_MEAN)) == training


def test_instance_norm_updates_running_statistics_as_torch():
    x = randn(3, 5, 4)
    mean, var = np.zeros(4), np.ones(4)
    t_mean, t_var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    F.instance_norm(lamina.tensor(x, dtype=F64), mean, var, momentum=0.2)
    TF.instance_norm(torch.tensor(x).movedim(-1, 1), t_mean, t_var, momentum=0.2)
    np.testing.assert_allclose(mean, t_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(var, t_var.numpy(), rtol=1e-10)


def test_embedding_max_norm_renormalizes_the_rows_looked_up_as_torch():
    table = randn(6, 3) * 2
    ours, theirs = lamina.tensor(table, dtype=F64), torch.tensor(table)
    out = F.embedding(IDS, ours, max_norm=1.0)
    expected = TF.embedding(torch.tensor(IDS), theirs, max_norm=1.0)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ours.numpy()[[3, 5]], table[[3, 5]])       # rows not looked up: untouched


@pytest.mark.parametrize("norm_type", [float("inf"), 0.0, 1.0, 3.0])
def test_embedding_max_norm_other_norm_types_as_torch(norm_type):
    table = np.array([[3.0, -4.0, 0.5], [0.2, 0.1, 0.3], [0.0, 0.9, -0.2], [1.5, 0.0, 0.0], [0.1, 0.1, 0.1]])
    ours, theirs = lamina.tensor(table.copy(), dtype=F64), torch.tensor(table.copy())
    out = F.embedding(IDS, ours, max_norm=1.0, norm_type=norm_type)
    expected = TF.embedding(torch.tensor(IDS), theirs, max_norm=1.0, norm_type=norm_type)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["dropout", "dropout1d", "dropout2d", "dropout3d"])
def test_dropout_statistics_and_evaluation_identity(name):
    fn = getattr(F, name)
    spatial = {"dropout": 1, "dropout1d": 1, "dropout2d": 2, "dropout3d": 3}[name]
    x = np.ones((400,) + (3,) * spatial + (8,), dtype=np.float32)
    lamina.manual_seed(0)
    out = fn(lamina.tensor(x), p=0.3).numpy()
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((out == 0).mean() - 0.3) < 0.02
    if name != "dropout":                       # whole channels: one value per (sample, channel)
        flat = out.reshape(400, -1, 8)
        assert np.all(flat == flat[:, :1])
    assert fn(lamina.tensor(x), p=0.3, training=False).numpy() is not None
    np.testing.assert_array_equal(fn(lamina.tensor(x), p=0.3, training=False).numpy(), x)
    np.testing.assert_array_equal(fn(lamina.tensor(x), p=1.0).numpy(), 0 * x)


@pytest.mark.parametrize("name", ["alpha_dropout", "feature_alpha_dropout"])
def test_alpha_dropouts_keep_mean_and_variance_and_default_to_the_identity(name):
    fn = getattr(F, name)
    x = randn(500, 4, 50).astype(np.float32)
    np.testing.assert_array_equal(fn(lamina.tensor(x), 0.2).numpy(), x)       # training=False by default
    lamina.manual_seed(1)
    out = fn(lamina.tensor(x), 0.2, training=True).numpy()
    assert abs(out.mean()) < 0.02 and abs(out.var() - 1) < 0.05
    if name == "feature_alpha_dropout":
        dropped = np.isclose(out, out[:, :1]).all(axis=1)                   # a dropped channel is constant
        assert abs(dropped.mean() - 0.2) < 0.03


def test_dropout_gradient_uses_the_forward_mask():
    lamina.manual_seed(2)
    x = lamina.tensor(randn(50, 6), requires_grad=True)
    out = F.dropout2d(x.reshape(5, 10, 6), p=0.5)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.reshape(5, 10, 6), out.numpy() / x.numpy().reshape(5, 10, 6))


def test_gumbel_softmax_samples_the_categorical_distribution():
    logits = np.log(np.array([0.1, 0.6, 0.3]))
    lamina.manual_seed(3)
    hard = F.gumbel_softmax(lamina.tensor(np.tile(logits, (4000, 1)), dtype=F64), tau=0.5, hard=True).numpy()
    assert set(np.unique(hard)) == {0.0, 1.0} and np.all(hard.sum(axis=1) == 1)
    np.testing.assert_allclose(hard.mean(axis=0), [0.1, 0.6, 0.3], atol=0.03)
    soft = F.gumbel_softmax(lamina.tensor(np.tile(logits, (5, 1)), dtype=F64), tau=2.0).numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-12)


def test_gumbel_softmax_hard_passes_the_soft_gradient():
    def sample(z, hard):
        lamina.manual_seed(4)
        return F.gumbel_softmax(z, tau=0.7, hard=hard)

    up = randn(3, 5, seed=1)
    grads = []
    for hard in (False, True):
        z = lamina.tensor(randn(3, 5), requires_grad=True)
        (sample(z, hard) * lamina.tensor(up)).sum().backward()
        grads.append(z.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    assert check_gradients(lambda z: sample(z, False), randn(3, 5))


@pytest.mark.parametrize("call, message", [
    (lambda: F.linear(randn(3, 4), randn(4, 5)), r"linear: input of shape \(3, 4\) does not fit the weight"),
    (lambda: F.dropout(randn(3), p=1.5), r"dropout: p, the probability of dropping, must lie in \[0, 1\]"),
    (lambda: F.dropout2d(randn(3, 4), p=0.5), r"dropout2d: expected a 4-D batch"),
    (lambda: F.alpha_dropout(randn(3), p=1.0), r"alpha_dropout: p, the probability of dropping, must lie in \[0, 1\)"),
    (lambda: F.batch_norm(randn(1, 4), None, None, training=True), "batch_norm: training needs more than one"),
    (lambda: F.batch_norm(randn(5, 4), np.zeros(3), np.ones(3)), r"batch_norm: running_mean must have shape \(4,\)"),
    (lambda: F.layer_norm(randn(2, 3, 4), (3,)), "layer_norm: normalized_shape"),
    (lambda: F.group_norm(randn(2, 3, 4), 3), "group_norm: num_groups must be a positive int dividing the 4"),
    (lambda: F.prelu(randn(2, 4), np.ones(3)), r"prelu: weight must have shape \(1,\) or \(C,\)"),
    (lambda: F.one_hot(np.array([0, 4]), num_classes=3), r"one_hot: class indices must lie in \[0, num_classes=3\)"),
    (lambda: F.conv1d(randn(2, 4), randn(3, 2, 4)), r"conv1d: expected sequences \(N, L, C\)"),
    (lambda: F.max_pool1d(randn(2, 6, 3), 2, dilation=2), "max_pool1d: dilation must be 1"),
    (lambda: F.pdist(randn(2, 3, 4)), r"pdist: expected a 2-D input"),
    (lambda: F.pdist(randn(2, 3), -1.0), r"pdist: p must be a number >= 0 \(or inf\), got -1.0"),
    (lambda: F.gumbel_softmax(randn(2, 3), tau=0), "gumbel_softmax: tau must be a positive number"),
])
def test_errors_name_the_function(call, message):
    with pytest.raises((ValueError, ShapeError, TypeError), match=message):
        call()
