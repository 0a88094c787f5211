"""ConvLSTM2D: values and gradients against a ConvLSTM written step by step in PyTorch ops
(with Keras's weight layout, reached through the mapping the layer documents), a float64
gradient check, shapes, errors, configuration, summary, dropout, and a task it learns."""

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from recurrent_checks import randomize

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.errors import ShapeError
from lamina.nn import layer_from_config, layer_to_config
from lamina.nn.conv_lstm import ConvLSTM2D
from lamina.train import Trainer

RTOL = {np.float32: 2e-5, np.float64: 1e-9}
TORCH_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
                     "hard_sigmoid": lambda z: TF.relu6(z + 3) / 6}


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


@pytest.fixture(autouse=True)
def _torch_on_one_thread():
    """The reference's convolutions are tiny: waking PyTorch's thread pool for each costs
    far more than it saves (30x on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the reference: PyTorch ops, NCHW, one step at a time ------------------------------------
def _same_pads(n: int, f: int, s: int) -> tuple[int, int]:
    """Keras's 'same': ceil(n / s) outputs, the odd pixel of padding at the end."""
    total = max((-(-n // s) - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def _conv(x, keras_kernel, stride: int, padding: str):
    """Keras's conv of an NCHW tensor with an (f_h, f_w, C, K) kernel."""
    fh, fw = keras_kernel.shape[:2]
    if padding == "same":
        (top, bottom), (left, right) = _same_pads(x.shape[2], fh, stride), _same_pads(x.shape[3], fw, stride)
        x = TF.pad(x, (left, right, top, bottom))
    return TF.conv2d(x, keras_kernel.permute(3, 2, 0, 1), stride=stride)


def torch_conv_lstm(x, kernel, recurrent_kernel, bias, h0, c0, stride=1, padding="valid", go_backwards=False,
                    activation="tanh", recurrent_activation="sigmoid"):
    """Keras's ConvLSTM2D: x (N, T, H, W, C), Keras-layout kernels, NHWC states; returns the
    sequence (N, T, h', w', K) in reading order and the final h and c (N, h', w', K)."""
    k = kernel.shape[-1] // 4
    g, sigma = TORCH_ACTIVATIONS[activation], TORCH_ACTIVATIONS[recurrent_activation]
    h, c = h0.permute(0, 3, 1, 2), c0.permute(0, 3, 1, 2)
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    outputs = []
    for t in steps:
        z = _conv(x[:, t].permute(0, 3, 1, 2), kernel, stride, padding) + _conv(h, recurrent_kernel, 1, "same")
        if bias is not None:
            z = z + bias[None, :, None, None]
        i, f, cand, o = sigma(z[:, :k]), sigma(z[:, k:2 * k]), g(z[:, 2 * k:3 * k]), sigma(z[:, 3 * k:])
        c = f * c + i * cand
        h = o * g(c)
        outputs.append(h.permute(0, 2, 3, 1))
    return torch.stack(outputs, 1), h.permute(0, 2, 3, 1), c.permute(0, 2, 3, 1)


def to_keras(w: np.ndarray) -> np.ndarray:
    """lamina's (4K, f_h, f_w, C) -> Keras's (f_h, f_w, C, 4K), as the layer documents."""
    return np.ascontiguousarray(w.transpose(1, 2, 3, 0))


def _output_size(n: int, f: int, s: int, padding: str) -> int:
    return -(-n // s) if padding == "same" else (n - f) // s + 1


# -- against PyTorch ---------------------------------------------------------------------------
CASES = {
    "same_s1_sequences": dict(stride=1, padding="same", kernel=3, return_sequences=True),
    "valid_s1_last": dict(stride=1, padding="valid", kernel=3),
    "same_s2_backwards": dict(stride=2, padding="same", kernel=3, go_backwards=True),
    "valid_s2_sequences_backwards": dict(stride=2, padding="valid", kernel=2, return_sequences=True,
                                         go_backwards=True),
    "same_even_kernel_no_state": dict(stride=1, padding="same", kernel=2, return_sequences=True, initial=False),
    "relu_hard_sigmoid_no_bias": dict(stride=1, padding="same", kernel=3, activation="relu",
                                      recurrent_activation="hard_sigmoid", use_bias=False),
}


@pytest.mark.parametrize("case, dtype", [(case, np.float64) for case in CASES] + [("same_s1_sequences", np.float32)])
def test_matches_a_step_by_step_torch_reference(case, dtype):
    options = dict(CASES[case])
    lamina.set_default_dtype(dtype)
    kernel, initial = options.pop("kernel"), options.pop("initial", True)
    n, steps, h, w, c, k = 2, 4, 7, 6, 3, 3
    layer = ConvLSTM2D(k, kernel, return_state=True, **options)
    layer.build((None, steps, h, w, c))
    randomize(layer)
    ho, wo = (_output_size(size, kernel, options["stride"], options["padding"]) for size in (h, w))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, steps, h, w, c)).astype(dtype)
    states = [rng.standard_normal((n, ho, wo, k)).astype(dtype) if initial else np.zeros((n, ho, wo, k), dtype)
              for _ in range(2)]

    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    sl = [lamina.tensor(s, requires_grad=True, dtype=dtype) for s in states]
    outs = layer(xl, initial_state=sl if initial else None)

    params = dict(layer.named_parameters())
    theirs = {name: torch.tensor(to_keras(p.numpy()) if p.ndim == 4 else p.numpy(), requires_grad=True)
              for name, p in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    seq_t, h_t, c_t = torch_conv_lstm(xt, theirs["kernel"], theirs["recurrent_kernel"], theirs.get("bias"), *st,
                                      stride=options["stride"], padding=options["padding"],
                                      go_backwards=options.get("go_backwards", False),
                                      activation=options.get("activation", "tanh"),
                                      recurrent_activation=options.get("recurrent_activation", "sigmoid"))
    outs_t = [seq_t if options.get("return_sequences") else h_t, h_t, c_t]

    rtol = RTOL[dtype]
    assert len(outs) == 3
    total, total_t = None, None
    for index, (a, b) in enumerate(zip(outs, outs_t)):
        assert a.dtype == dtype
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"output {index}")
        up = rng.standard_normal(a.shape).astype(dtype)
        term, term_t = (a * lamina.tensor(up, dtype=dtype)).sum(), (b * torch.from_numpy(up)).sum()
        total = term if total is None else total + term
        total_t = term_t if total_t is None else total_t + term_t
    total.backward()
    total_t.backward()
    assert_close(xl.grad, xt.grad.numpy(), rtol, "input gradient")
    if initial:
        for name, ours, their in zip(("h0", "c0"), sl, st):
            assert_close(ours.grad, their.grad.numpy(), rtol, f"gradient of {name}")
    for name, p in params.items():
        expected = theirs[name].grad.numpy()
        assert_close(p.grad, expected.transpose(3, 0, 1, 2) if p.ndim == 4 else expected, rtol, f"gradient of {name}")


# -- float64 gradient check ------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(padding="same"),
    dict(padding="valid", stride=2, go_backwards=True, kernel_size=2),
    dict(padding="same", activation="relu", recurrent_activation="hard_sigmoid", return_sequences=False),
], ids=["same", "valid_stride2_backwards", "relu_hard_sigmoid"])
def test_gradcheck_wrt_input_initial_state_and_weights(f64, options):
    options = {"kernel_size": 3, "return_sequences": True, **options}
    layer = ConvLSTM2D(2, return_state=True, **options)
    shape = (2, 3, 4, 4, 2)
    layer.build(shape)
    randomize(layer, seed=1)
    ho, wo = layer.compute_output_shape(shape)[1][1:3]
    rng = np.random.default_rng(0)
    tensors = [lamina.tensor(rng.standard_normal(s), requires_grad=True, dtype=np.float64)
               for s in (shape, (2, ho, wo, 2), (2, ho, wo, 2))]

    def run(x, h0, c0, *_):
        output, _, memory = layer(x, initial_state=(h0, c0))
        return F.concat([F.reshape(output, (-1,)), F.reshape(memory, (-1,))])

    assert lamina.gradcheck(run, *tensors, *layer.parameters())


# -- outputs and states ----------------------------------------------------------------------
@pytest.mark.parametrize("go_backwards", [False, True])
def test_return_state_gives_the_last_output_and_the_memory(go_backwards):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 6, 1)).astype(np.float32)
    layer = ConvLSTM2D(3, 3, padding="same", return_sequences=True, return_state=True, go_backwards=go_backwards)
    sequence, last, memory = layer(x)
    assert sequence.shape == (2, 5, 6, 6, 3) and last.shape == memory.shape == (2, 6, 6, 3)
    np.testing.assert_array_equal(last.numpy(), sequence.numpy()[:, -1])
    assert not np.allclose(memory.numpy(), last.numpy())
    plain = ConvLSTM2D(3, 3, padding="same", go_backwards=go_backwards)
    plain.build(x.shape)
    plain.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(plain(x).numpy(), last.numpy())
    zeros = np.zeros((2, 6, 6, 3), np.float32)
    np.testing.assert_array_equal(plain(x, initial_state=(zeros, zeros)).numpy(), last.numpy())
    assert layer.compute_output_shape((None, 5, 6, 6, 1)) == [(None, 5, 6, 6, 3), (None, 6, 6, 3), (None, 6, 6, 3)]


def test_bad_initial_states_name_the_layer_and_shapes():
    layer = ConvLSTM2D(2, 3, stride=2)
    x = np.zeros((2, 3, 9, 9, 1), np.float32)
    with pytest.raises(ValueError, match=r"ConvLSTM2D.*2 states \(h0, c0\), got 1"):
        layer(x, initial_state=[np.zeros((2, 4, 4, 2), np.float32)])
    with pytest.raises(ShapeError, match=r"ConvLSTM2D.*c0 has shape \(2, 9, 9, 2\).*\(2, 4, 4, 2\)"):
        layer(x, initial_state=(np.zeros((2, 4, 4, 2), np.float32), np.zeros((2, 9, 9, 2), np.float32)))


# -- bad input ---------------------------------------------------------------------------------
def test_a_4d_input_is_refused_with_its_shape():
    layer = ConvLSTM2D(2, 3)
    with pytest.raises(ShapeError, match=r"ConvLSTM2D.*\(3, 5, 5, 2\).*5-D.*\(batch, time, height, width, "
                                         r"channels\)"):
        layer(np.zeros((3, 5, 5, 2), np.float32))
    layer(np.zeros((1, 3, 5, 5, 2), np.float32))
    with pytest.raises(ShapeError, match=r"ConvLSTM2D.*\(2, 6, 6, 2\).*5-D"):
        layer(np.zeros((2, 6, 6, 2), np.float32))


def test_a_channel_change_after_build_is_refused_with_both_channel_counts():
    layer = ConvLSTM2D(2, 3, padding="same")
    layer(np.zeros((1, 2, 5, 5, 2), np.float32))
    with pytest.raises(ShapeError, match=r"ConvLSTM2D.*shape \(1, 2, 5, 5, 3\).*\(batch, time, height, width, 2\)"):
        layer(np.zeros((1, 2, 5, 5, 3), np.float32))
    with pytest.raises(ShapeError, match=r"ConvLSTM2D.*\(None, 2, 5, 5, 3\) has 3 channels.*built for 2"):
        layer.compute_output_shape((None, 2, 5, 5, 3))


def test_frames_smaller_than_the_kernel_and_bad_arguments_are_refused():
    with pytest.raises(ShapeError, match=r"ConvLSTM2D.*5x5 kernel.*\(1, 2, 4, 4, 1\).*'valid'"):
        ConvLSTM2D(2, 5)(np.zeros((1, 2, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same', got 'full'"):
        ConvLSTM2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="activation must be one of"):
        ConvLSTM2D(2, 3, activation="softmax")
    with pytest.raises(ValueError, match="recurrent_activation must be one of"):
        ConvLSTM2D(2, 3, recurrent_activation="tanh")
    with pytest.raises(ValueError, match="filters must be a positive int, got 0"):
        ConvLSTM2D(0, 3)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        ConvLSTM2D(2, 3, dropout=1.0)


# -- weights, configuration, summary ------------------------------------------------------------
@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_weight_shapes_and_the_forget_gate_bias(unit_forget_bias):
    layer = ConvLSTM2D(3, (3, 2), unit_forget_bias=unit_forget_bias)
    layer.build((None, 4, 8, 8, 5))
    assert layer.kernel.shape == (12, 3, 2, 5) and layer.recurrent_kernel.shape == (12, 3, 2, 3)
    expected = np.zeros(12)
    if unit_forget_bias:
        expected[3:6] = 1                 # blocks i, f, c, o: the second one
    np.testing.assert_array_equal(layer.bias.numpy(), expected)
    assert "bias" not in dict(ConvLSTM2D(3, 3, use_bias=False).named_parameters())


def test_config_round_trip_rebuilds_the_same_layer():
    layer = ConvLSTM2D(3, (3, 2), stride=(2, 1), padding="same", activation="relu",
                       recurrent_activation="hard_sigmoid", use_bias=False, return_sequences=True, return_state=True,
                       go_backwards=True, unit_forget_bias=False, kernel_init="he_normal", dropout=0.25,
                       name="frames")
    clone = layer_from_config(json.loads(json.dumps(layer_to_config(layer))))
    assert type(clone) is ConvLSTM2D and clone.get_config() == layer.get_config()
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5, 2)).astype(np.float32)
    layer.eval()
    clone.eval()
    outs = layer(x)
    clone.build(x.shape)
    clone.load_state_dict(layer.state_dict())
    for a, b in zip(outs, clone(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_saved_model_using_it_loads_with_the_same_outputs(tmp_path):
    model = nn.Sequential(ConvLSTM2D(3, 3, padding="same", return_sequences=True), nn.Flatten(), nn.Dense(2))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5, 1)).astype(np.float32)
    expected = model(x).numpy()
    lamina.save(model, tmp_path / "model.safetensors")
    loaded = lamina.load(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(loaded(x).numpy(), expected)


def test_summary_of_a_model_using_it():
    steps, k, f, c = 5, 4, 3, 1
    model = nn.Sequential(ConvLSTM2D(k, f, stride=2), nn.Flatten(), nn.Dense(3))
    table = summary(model, (steps, 9, 9, c))
    assert [row["type"] for row in table.rows] == ["ConvLSTM2D", "Flatten", "Dense"]
    row = table.rows[0]
    assert row["output_shape"] == [4, 4, k] and table.rows[1]["output_shape"] == [4 * 4 * k]
    assert row["params"] == 4 * k * f * f * c + 4 * k * f * f * k + 4 * k
    # each step: the input and the recurrent convolutions of all 4K output channels
    assert row["macs"] == steps * 4 * 4 * 4 * k * f * f * (c + k)
    model(np.zeros((2, steps, 9, 9, c), np.float32))
    assert table.total_params == model.num_parameters()
    assert "conv_lstm2d (ConvLSTM2D)" in str(table)


# -- dropout ---------------------------------------------------------------------------------
def test_dropout_drops_the_same_input_values_at_every_step_and_only_in_training():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, (4, 3, 6, 6, 2)).astype(np.float32)
    layer = ConvLSTM2D(3, 3, padding="same", return_sequences=True, dropout=0.5)
    xt = lamina.tensor(x, requires_grad=True)
    layer(xt).sum().backward()
    dropped = xt.grad == 0
    for t in range(1, 3):
        np.testing.assert_array_equal(dropped[:, t], dropped[:, 0])
    assert 0.35 < dropped.mean() < 0.65
    layer.eval()
    plain = ConvLSTM2D(3, 3, padding="same", return_sequences=True)
    plain.build(x.shape)
    plain.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(layer(x).numpy(), plain(x).numpy())


# -- learning ----------------------------------------------------------------------------------
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))       # up, down, left, right: one pixel per step


def moving_squares(count: int, seed: int, steps: int = 4, size: int = 8):
    """Sequences of a 2x2 square moving one pixel per frame in one of 4 directions from a
    random start (it stays inside the frame); the label is the direction."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(MOVES), count)
    frames = np.zeros((count, steps, size, size, 1), np.float32)
    span = steps - 1
    for n, label in enumerate(labels):
        dy, dx = MOVES[label]
        y0 = rng.integers(max(0, -dy * span), size - 2 - max(0, dy * span) + 1)
        x0 = rng.integers(max(0, -dx * span), size - 2 - max(0, dx * span) + 1)
        for t in range(steps):
            y, x = y0 + dy * t, x0 + dx * t
            frames[n, t, y:y + 2, x:x + 2] = 1
    return frames, labels


def test_learns_the_direction_of_a_moving_square():
    lamina.manual_seed(0)
    x_train, y_train = moving_squares(512, seed=1)
    x_test, y_test = moving_squares(200, seed=2)
    # one frame alone tells nothing of the direction: the layer must remember
    model = nn.Sequential(ConvLSTM2D(4, 3, padding="same"), nn.Flatten(), nn.Dense(4, activation="softmax"))
    model.build((None, *x_train.shape[1:]))
    started = time.perf_counter()
    Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=1e-2), verbose=0).fit(
        (x_train, y_train), epochs=4, batch_size=32, seed=0)
    elapsed = time.perf_counter() - started
    model.eval()
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(x_test)).numpy().argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.9, f"test accuracy {accuracy:.3f} after {elapsed:.1f} s"
