"""TimeDistributed: the wrapped layer applied step by step, gradient checks, PyTorch
(nn.Linear on (N, T, F)), lazy shapes, parameters and config, summary, errors, and a
TimeDistributed(Dense) -> LSTM model that learns a sequence task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.errors import ShapeError
from lamina.nn import Conv2D, Dense, Flatten, MaxPool2D, TimeDistributed, layer_from_config, layer_to_config
from lamina.nn.module import Module
from lamina.nn.recurrent import LSTM
from lamina.train import Trainer


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def each_step(layer, x):
    """layer applied to x[:, t] for t = 0 .. T-1, stacked on axis 1: the definition."""
    return np.stack([layer(lamina.tensor(x[:, t])).numpy() for t in range(x.shape[1])], axis=1)


# -- what it computes -------------------------------------------------------------------------


@pytest.mark.parametrize("make_layer, shape", [
    (lambda: Dense(5, activation="tanh"), (3, 4, 6)),
    (lambda: Dense(2), (2, 3, 2, 4)),                                     # (N, T, rows, F)
    (lambda: Conv2D(4, 3, stride=2, padding=1), (2, 3, 7, 7, 2)),         # (N, T, H, W, C)
    (lambda: MaxPool2D(2), (2, 3, 6, 6, 3)),
], ids=["dense", "dense_on_rows", "conv2d", "max_pool2d"])
def test_equals_the_layer_applied_at_each_step(f64, make_layer, shape):
    layer = make_layer()
    wrapped = TimeDistributed(layer)
    x = randn(*shape)
    out = wrapped(x).numpy()
    expected = each_step(layer, x)
    assert out.shape == expected.shape
    assert_close(out, expected, 1e-13)
    # fed one step at a time (streamable), each step gives that step's output
    assert wrapped.streamable
    for t in range(shape[1]):
        assert_close(wrapped(x[:, t:t + 1]).numpy(), out[:, t:t + 1], 1e-13)


def test_the_same_weights_serve_every_step(f64):
    """Steps with the same input give the same output: one layer, not one per step."""
    wrapped = TimeDistributed(Dense(3))
    frame = randn(2, 5)
    x = np.stack([frame, randn(2, 5, seed=1), frame], axis=1)
    out = wrapped(x).numpy()
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    assert not np.allclose(out[:, 0], out[:, 1])


def test_dense_matches_torch_linear_on_sequences(f64):
    """A torch nn.Linear applies to the last axis of (N, T, F): the same computation."""
    wrapped = TimeDistributed(Dense(5))
    linear = torch.nn.Linear(6, 5)
    compare_layer(wrapped, linear, randn(3, 4, 6),
                  [("layer.weight", linear.weight, (1, 0)), ("layer.bias", linear.bias, None)],
                  nchw=False, rtol=1e-12)


def test_conv2d_matches_torch_on_folded_frames(f64):
    wrapped = TimeDistributed(Conv2D(3, 3, padding=1))
    x = randn(2, 4, 5, 5, 2)
    xl = lamina.tensor(x, requires_grad=True)
    out = wrapped(xl)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    with torch.no_grad():
        # lamina's kernels are (K, f, f, c_in), torch's (K, c_in, f, f)
        conv.weight.copy_(torch.from_numpy(wrapped.layer.weight.numpy().transpose(0, 3, 1, 2).copy()))
        conv.bias.copy_(torch.from_numpy(wrapped.layer.bias.numpy()))
    xt = torch.tensor(x, requires_grad=True)
    frames = xt.reshape(8, 5, 5, 2).permute(0, 3, 1, 2)
    expected = conv(frames).permute(0, 2, 3, 1).reshape(2, 4, 5, 5, 3)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-12)
    upstream = randn(2, 4, 5, 5, 3, seed=1)
    out.backward(upstream)
    (expected * torch.from_numpy(upstream)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-12, "input gradient")
    assert_close(wrapped.layer.bias.grad, conv.bias.grad.numpy(), 1e-12, "bias gradient")


@pytest.mark.parametrize("make_layer, shape", [
    (lambda: Dense(3, activation="tanh"), (2, 3, 4)),
    (lambda: Conv2D(2, 2, stride=1), (1, 2, 3, 3, 2)),
], ids=["dense", "conv2d"])
def test_gradcheck(f64, make_layer, shape):
    assert gradcheck_layer(TimeDistributed(make_layer()), randn(*shape))


# -- shapes, parameters, config ---------------------------------------------------------------


def test_builds_the_wrapped_layer_lazily_from_one_step():
    wrapped = TimeDistributed(Conv2D(4, 3, padding="same"))
    assert not wrapped.layer.built and wrapped.parameters() == []
    out = wrapped(np.zeros((2, 5, 8, 8, 1), dtype=np.float32))
    assert out.shape == (2, 5, 8, 8, 4)
    assert wrapped.layer.build_input_shape == (10, 8, 8, 1)
    assert wrapped.layer.weight.shape == (4, 3, 3, 1)


def test_compute_output_shape_and_sequential_build():
    wrapped = TimeDistributed(Conv2D(4, 3, stride=2))
    assert wrapped.compute_output_shape((None, 5, 9, 9, 1)) == (None, 5, 4, 4, 4)
    assert wrapped.compute_output_shape((2, None, 9, 9, 1)) == (2, None, 4, 4, 4)
    model = nn.Sequential(TimeDistributed(Dense(8)), LSTM(5))
    model.build((None, 4, 6))                     # built from the shapes alone
    assert model[0].layer.weight.shape == (6, 8)
    assert model.compute_output_shape((None, 4, 6)) == (None, 5)


def test_parameters_and_state_dict_are_the_wrapped_layers():
    dense = Dense(3)
    model = nn.Sequential(TimeDistributed(dense), LSTM(2))
    model(np.zeros((1, 2, 4), dtype=np.float32))
    assert [id(p) for p in model[0].parameters()] == [id(p) for p in dense.parameters()]
    assert list(model.state_dict())[:2] == ["time_distributed.layer.weight", "time_distributed.layer.bias"]
    model[0].freeze()
    assert not any(p.trainable for p in dense.parameters())
    model.eval()
    assert not dense.training


def test_config_round_trip_and_state_dict_load(f64):
    wrapped = TimeDistributed(Dense(3, activation="relu"), name="frames")
    x = randn(2, 4, 5)
    expected = wrapped(x).numpy()
    config = layer_to_config(wrapped)
    assert config["class_name"] == "TimeDistributed" and config["config"]["name"] == "frames"
    rebuilt = layer_from_config(config)
    assert isinstance(rebuilt, TimeDistributed) and isinstance(rebuilt.layer, Dense) and rebuilt.layer.units == 3
    rebuilt.build((None, 4, 5))
    rebuilt.load_state_dict(wrapped.state_dict())
    np.testing.assert_array_equal(rebuilt(x).numpy(), expected)


def test_summary_lists_each_wrapper_as_one_row():
    model = nn.Sequential(TimeDistributed(Conv2D(4, 3, padding="same")), TimeDistributed(MaxPool2D(2)),
                          TimeDistributed(Flatten()), LSTM(3))
    table = summary(model, (5, 8, 8, 1))
    assert [row["type"] for row in table.rows] == ["TimeDistributed"] * 3 + ["LSTM"]
    assert table.rows[0]["name"] == "time_distributed" and table.rows[0]["params"] == 3 * 3 * 4 + 4
    assert table.rows[-1]["input_shape"] == [5, 64]
    assert table.total_params == sum(r["params"] for r in table.rows)
    assert not model.built                                   # traced on a copy
    model(np.zeros((1, 5, 8, 8, 1), dtype=np.float32))
    assert table.total_params == model.num_parameters()


# -- errors ---------------------------------------------------------------------------------------


class KeepFirstRow(Module):
    """A layer that drops rows: not one output per input."""

    def forward(self, x):
        return F.getitem(x, slice(0, 1))


def test_errors():
    wrapped = TimeDistributed(Dense(3))
    expected = r"expected an input \(batch, time, \.\.\.\) with at least 3 axes"
    with pytest.raises(ShapeError, match=rf"TimeDistributed: got an input shape \(4, 3\); {expected}"):
        wrapped(np.zeros((4, 3), dtype=np.float32))                    # on the first call, when building
    wrapped(np.zeros((1, 2, 3), dtype=np.float32))
    with pytest.raises(ShapeError, match=rf"TimeDistributed: got an input of shape \(4, 3\) \(float32\); {expected}"):
        wrapped(np.zeros((4, 3), dtype=np.float32))                    # once built
    with pytest.raises(ShapeError, match=r"TimeDistributed 'td': got an input shape \(None, 3\); expected"):
        TimeDistributed(Dense(3), name="td").compute_output_shape((None, 3))
    with pytest.raises(TypeError, match="TimeDistributed: expected a layer .* got function"):
        TimeDistributed(F.relu)
    with pytest.raises(ShapeError, match=r"TimeDistributed: the wrapped KeepFirstRow turned the 6 folded steps of "
                                         r"an input of shape \(2, 3, 4\) into an output of shape \(1, 4\)"):
        TimeDistributed(KeepFirstRow())(np.zeros((2, 3, 4), dtype=np.float32))
    # the wrapped layer's own checks still speak for a step
    with pytest.raises(ShapeError, match="Conv2D"):
        TimeDistributed(Conv2D(2, 3))(np.zeros((2, 3, 8, 8), dtype=np.float32))


# -- learning -------------------------------------------------------------------------------------


def sequences(n, seed):
    """Sequences of 6 steps of 3 values; the label says whether the first value of the
    steps adds up to more than the second value does, a sum over time the LSTM must carry."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > x[:, :, 1].sum(axis=1)).astype(np.int64)
    return x, y


def test_time_distributed_dense_then_lstm_learns_and_gradients_reach_the_inner_layer():
    x, y = sequences(600, seed=0)
    x_test, y_test = sequences(300, seed=1)
    lamina.manual_seed(0)
    model = nn.Sequential(TimeDistributed(Dense(8, activation="tanh")), LSTM(12), Dense(2))
    model.build((None, 6, 3))
    inner = model[0].layer
    out = model(x[:32])
    F.categorical_cross_entropy(out, y[:32], from_logits=True).backward()
    assert inner.weight.grad is not None and np.abs(inner.weight.grad).sum() > 0
    model.zero_grad()
    before = inner.weight.numpy().copy()
    trainer = Trainer(model, lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True),
                      optim.Adam(model.parameters(), lr=0.02), metrics=(), verbose=0)
    trainer.fit((x, y), epochs=12, batch_size=32, seed=0)
    assert not np.allclose(inner.weight.numpy(), before)
    accuracy = (trainer.predict(x_test).argmax(axis=1) == y_test).mean()
    assert accuracy > 0.85, accuracy
