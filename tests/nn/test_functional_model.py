"""The functional API: Input placeholders, layer calls recorded as a graph, Model(inputs, outputs)."""

import json
import time

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.nn.functional_model import Input, Model, Node, SymbolicTensor, call_symbolic
from lamina.nn.module import as_tensor
from lamina.train import Trainer


def _array(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _residual_mlp():
    x = Input((6,), name="x")
    h = nn.Dense(8, activation="relu")(x)
    s = nn.Add()([h, nn.Dense(8)(h)])
    return Model(x, nn.Dense(3)(s), name="residual_mlp")


# -- building and running ----------------------------------------------------------------------
def test_placeholders_carry_shapes_and_nodes():
    x = Input((8, 8, 1), name="image")
    assert x.shape == (None, 8, 8, 1) and x.ndim == 4 and x.dtype == np.float32 and x.node is None
    conv = nn.Conv2D(4, 3, stride=2, padding="same")
    y = conv(x)
    assert isinstance(y, SymbolicTensor) and y.shape == (None, 4, 4, 4)
    assert y.node.layer is conv and y.node.args == (x,) and conv.built and conv.weight.shape == (4, 3, 3, 1)
    assert Input(5).shape == (None, 5)
    with pytest.raises(ValueError, match="positive ints"):
        Input((0, 3))


def test_residual_mlp_computes_what_its_layers_compute_by_hand():
    model = _residual_mlp()
    dense, dense_1, add, dense_2 = model.layers
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "add", "dense_2"]
    assert [name for name, _ in model.named_parameters()] == [
        "dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias", "dense_2.weight", "dense_2.bias"]
    assert model.get_layer("dense_1") is dense_1 and isinstance(add, nn.Add)
    # a new unnamed layer called before one the first model named 'dense' is named around that name
    reused = Model(model.inputs, dense(nn.Dense(6)(model.inputs[0])))
    assert [layer.name for layer in reused.layers] == ["dense_1", "dense"] and reused.layers[1] is dense
    assert model.input_shape == (None, 6) and model.output_shape == (None, 3)
    assert model.compute_output_shape((None, 6)) == (None, 3)
    x = _array(5, 6)
    h = dense(x)
    expected = dense_2(add([h, dense_1(h)])).numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(model(lamina.tensor(x)).numpy(), expected, rtol=1e-6)


def test_two_inputs_and_two_outputs():
    a, b = Input((5,), name="a"), Input((3,), name="b")
    joined = nn.Concatenate()([nn.Dense(4, activation="tanh")(a), b])
    scores, value = nn.Dense(2)(joined), nn.Dense(1)(joined)
    model = Model([a, b], [scores, value])
    assert model.input_shape == [(None, 5), (None, 3)] and model.output_shape == [(None, 2), (None, 1)]
    assert model.input_names == ["a", "b"]
    xa, xb = _array(4, 5, seed=1), _array(4, 3, seed=2)
    dense, cat, head, value_head = model.layers
    joined_by_hand = cat([dense(xa), xb])
    for out in (model([xa, xb]), model(xa, xb)):
        assert isinstance(out, list) and len(out) == 2
        np.testing.assert_allclose(out[0].numpy(), head(joined_by_hand).numpy(), rtol=1e-6)
        np.testing.assert_allclose(out[1].numpy(), value_head(joined_by_hand).numpy(), rtol=1e-6)
    assert isinstance(Model([a, b], scores)([xa, xb]), lamina.Tensor)  # one output, not a list


def test_gradients_reach_every_parameter_and_match_torch():
    x = Input((5,))
    h = nn.Dense(6, activation="tanh")(x)
    s = nn.Add()([h, nn.Dense(6, activation="relu")(h)])
    c = nn.Concatenate()([s, nn.Dense(3)(x)])
    model = Model(x, nn.Dense(2)(c))
    xv, up = _array(7, 5, seed=3), _array(7, 2, seed=4)
    xl = lamina.tensor(xv, requires_grad=True)
    (model(xl) * lamina.tensor(up)).sum().backward()

    w = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in model.named_parameters()}
    xt = torch.tensor(xv, requires_grad=True)

    def dense(name, v):
        return v @ w[f"{name}.weight"] + w[f"{name}.bias"]

    ht = torch.tanh(dense("dense", xt))
    st = ht + torch.relu(dense("dense_1", ht))
    ct = torch.cat([st, dense("dense_2", xt)], dim=-1)
    yt = dense("dense_3", ct)
    (yt * torch.tensor(up)).sum().backward()

    assert_close(model(xv).numpy(), yt.detach().numpy(), 1e-5, "output")
    assert_close(xl.grad, xt.grad.numpy(), 1e-5, "gradient of the input")
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(p.grad).max() > 0, name
        assert_close(p.grad, w[name].grad.numpy(), 1e-5, f"gradient of {name}")


def test_shared_layer_is_registered_once_and_sums_its_gradients():
    left, right = Input((4,), name="left"), Input((4,), name="right")
    encoder = nn.Dense(3, activation="tanh", name="encoder")
    distance = nn.Add()([encoder(left), encoder(right)])
    model = Model([left, right], nn.Dense(1)(distance))
    assert [layer.name for layer in model.layers] == ["encoder", "add", "dense"]
    assert model.num_parameters() == (4 * 3 + 3) + (3 + 1)
    assert [name for name, _ in model.named_parameters()] == ["encoder.weight", "encoder.bias", "dense.weight",
                                                              "dense.bias"]
    xl, xr = _array(2, 4, seed=5), _array(2, 4, seed=6)
    np.testing.assert_allclose(model(xl, xr).numpy(), model.layers[2](encoder(xl) + encoder(xr)).numpy(), rtol=1e-6)
    assert model.layer_output("encoder", call=1).node.args == (right,)

    model(xl, xr).sum().backward()
    both = encoder.weight.grad.copy()
    model.zero_grad()
    model(xl, np.zeros_like(xr)).sum().backward()
    from_left = encoder.weight.grad.copy()
    model.zero_grad()
    model(np.zeros_like(xl), xr).sum().backward()
    from_right = encoder.weight.grad.copy()
    # tanh'(W^T 0 + b) terms of the zeroed side add nothing to dJ/dW: the two calls' gradients add up
    np.testing.assert_allclose(both, from_left + from_right, rtol=1e-5, atol=1e-6)


# -- weights shared with a trained model; sub-models -------------------------------------------
def test_feature_extractor_and_head_share_the_model_weights():
    model = _residual_mlp()
    features = model.layer_output("dense")
    extractor = Model(model.inputs, features)
    head = Model(features, model.outputs[0])  # from an intermediate placeholder to the output
    assert extractor.layers == [model.get_layer("dense")] and len(head.layers) == 3
    assert all(p is q for p, q in zip(extractor.parameters(), model.parameters()))
    x = _array(3, 6, seed=7)
    np.testing.assert_allclose(head(extractor(x)).numpy(), model(x).numpy(), rtol=1e-6)
    model.get_layer("dense").bias.data[...] += 1.0  # training the model changes the extractor
    np.testing.assert_allclose(extractor(x).numpy(), np.maximum(x @ model.get_layer("dense").weight.numpy() + 1.0, 0),
                               rtol=1e-5, atol=1e-6)


def test_a_model_is_a_layer_of_another_model():
    inner = _residual_mlp()
    x = Input((6,))
    outer = Model(x, nn.Dense(2, name="out")(inner(x)))
    names = [name for name, _ in outer.named_parameters()]
    assert names[:2] == ["residual_mlp.dense.weight", "residual_mlp.dense.bias"] and names[-1] == "out.bias"
    v = _array(2, 6, seed=8)
    np.testing.assert_allclose(outer(v).numpy(), outer.get_layer("out")(inner(v)).numpy(), rtol=1e-6)


class _Halves(nn.Module):
    """Splits the features in two halves; no compute_output_shape (inferred by one run)."""

    def __init__(self, name=None):
        super().__init__(name=name)

    def forward(self, x):
        values = as_tensor(x).numpy()
        n = values.shape[-1] // 2
        return lamina.tensor(values[:, :n]), lamina.tensor(values[:, n:], dtype=np.float64)


def test_layer_without_output_shape_is_run_once_on_zeros():
    x = Input((6,))
    first, second = _Halves()(x)
    assert first.shape == (None, 3) and second.shape == (None, 3)
    assert first.dtype == np.float32 and second.dtype == np.float64  # from the run, not assumed
    model = Model(x, [nn.Dense(2)(first), second])
    v = _array(4, 6, seed=9)
    out, rest = model(v)
    np.testing.assert_allclose(rest.numpy(), v[:, 3:], rtol=1e-6)
    np.testing.assert_allclose(out.numpy(), model.layers[1](v[:, :3]).numpy(), rtol=1e-6)


# -- saving ------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    a, b = Input((6,), name="a"), Input((2,), name="b")
    inner = _residual_mlp()
    shared = nn.Dense(6, activation="relu")
    h = nn.BatchNorm()(shared(a))
    h = shared(nn.Dropout(0.3)(h))
    outputs = [nn.Concatenate()([inner(h), b]), nn.Dense(1)(h)]
    model = Model([a, b], outputs, name="two_heads")
    xa, xb = _array(8, 6, seed=10), _array(8, 2, seed=11)
    model.train()
    model(xa, xb)  # moves the batch norm's running statistics away from their start
    model.eval()
    expected = [t.numpy() for t in model(xa, xb)]

    config = json.loads(json.dumps(model.get_config()))
    assert [entry["layer"] for entry in config["nodes"]] == [
        "dense", "batch_norm", "dropout", "dense", "residual_mlp", "concatenate", "dense_1"]
    assert config["nodes"][3]["args"] == [{"from_layer": ["dropout", 0, 0]}]
    assert config["nodes"][5]["args"] == [[{"from_layer": ["residual_mlp", 0, 0]}, {"from_input": 1}]]

    path = tmp_path / "model.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert isinstance(loaded, Model) and loaded.name == "two_heads"
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.num_parameters() == model.num_parameters()
    for got, want in zip(loaded(xa, xb), expected):
        np.testing.assert_array_equal(got.numpy(), want)

    rebuilt = nn.layer_from_config(nn.layer_to_config(model))  # fresh weights, same graph
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    np.testing.assert_array_equal(rebuilt(xa, xb)[1].numpy(), expected[1])


# -- training and the summary ------------------------------------------------------------------------
def test_trainer_fits_a_functional_model_on_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    image = Input((8, 8, 1))
    h = nn.Dense(64, activation="relu")(nn.Flatten()(image))
    h = nn.ReLU()(nn.Add()([h, nn.Dense(64)(h)]))
    model = Model(image, nn.Dense(10, activation="softmax")(h))
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=3e-3), verbose=0)
    started = time.perf_counter()
    trainer.fit((xtr, ytr), epochs=5, batch_size=32, seed=0)
    accuracy = trainer.evaluate((xte, yte))["accuracy"]
    assert accuracy >= 0.92, f"test accuracy {accuracy:.3f} after {time.perf_counter() - started:.1f} s"


def test_trainer_fuses_a_final_softmax_of_a_functional_model_into_the_cross_entropy():
    x = Input((6,))
    h = nn.Dense(8, activation="relu")(x)
    model = Model(x, nn.Softmax()(nn.Add()([nn.Dense(3)(h), nn.Dense(3)(x)])))
    assert isinstance(model.output_layer, nn.Softmax)
    data = _array(16, 6, seed=1) * 40  # logits large enough for float32 probabilities to reach 0
    labels = np.arange(16) % 3
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.01), verbose=0)
    assert trainer._fused_softmax()
    with lamina.no_grad():
        logits = model.forward_to_output_layer(lamina.tensor(data))
        np.testing.assert_allclose(F.softmax(logits).numpy(), model(lamina.tensor(data)).numpy(), atol=1e-6)
        expected = F.categorical_cross_entropy(logits, labels, from_logits=True).item()
    loss = trainer.evaluate((data, labels))["loss"]
    assert np.isfinite(loss) and loss == pytest.approx(expected, rel=1e-5)


def test_no_output_layer_for_several_outputs_or_an_output_that_is_an_input():
    x = Input((4,))
    two = Model(x, [nn.Dense(2)(x), nn.Dense(3)(x)])
    assert two.output_layer is None
    with pytest.raises(ValueError, match="forward_to_output_layer: the model has no single output layer"):
        two.forward_to_output_layer(_array(2, 4))
    assert Model(x, x).output_layer is None
    merged = Model(x, nn.Add()([x, nn.Dense(4)(x)]))
    assert merged.output_layer is None  # a merge takes two inputs
    trainer = Trainer(two, "mse", optim.SGD(two.parameters(), lr=0.1), verbose=0)
    assert not trainer._fused_softmax()


def test_summary_lists_every_layer_call_with_the_parameter_total():
    x = Input((8, 8, 1))
    conv = nn.Conv2D(4, 3, padding="same", activation="relu")
    a = conv(x)
    same = nn.Conv2D(4, 3, padding="same")
    b = same(same(a))  # one layer called twice: its parameters count once
    y = nn.Dense(10)(nn.Flatten()(nn.Add()([a, b])))
    model = Model(x, y)
    table = model.summary()
    assert [row["name"] for row in table.rows] == ["conv2d", "conv2d_1", "conv2d_1", "add", "flatten", "dense"]
    assert [row["params"] for row in table.rows] == [40, 148, 0, 0, 0, 2570]
    assert sum(row["params"] for row in table.rows) == table.total_params == model.num_parameters()
    assert table.rows[-1]["output_shape"] == [10] and "conv2d_1 (Conv2D)" in str(table)


# -- errors ------------------------------------------------------------------------------------------
def test_output_not_reachable_from_the_inputs():
    a, b = Input((4,), name="a"), Input((4,), name="b")
    y = nn.Add()([nn.Dense(4)(a), b])
    with pytest.raises(ValueError, match=r"depends on Input 'b' of shape \(None, 4\).*not among.*\['a'\]"):
        Model(a, y)
    with pytest.raises(TypeError, match=r"outputs\[1\] is a ndarray, not a placeholder"):
        Model(a, [y, np.zeros(3)])
    with pytest.raises(ValueError, match="two inputs named 'a'"):
        Model([a, Input((4,), name="a")], a)


def test_calling_a_model_on_the_wrong_inputs():
    p, q = Input((3,), name="p"), Input((2,), name="q")
    model = Model([p, q], nn.Concatenate()([p, q]), name="m")
    with pytest.raises(ValueError, match=r"Model 'm': called on 1 input\(s\); expected 2 \(p, q\)"):
        model(np.zeros((2, 3), np.float32))
    with pytest.raises(lamina.ShapeError, match=r"input 'q' has shape \(2, 4\); expected \(None, 2\)"):
        model(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))


def test_a_graph_call_of_something_not_a_layer():
    x = Input((3,))
    with pytest.raises(TypeError, match="only lamina layers"):
        call_symbolic(lambda v: v, x)
    with pytest.raises(TypeError, match="symbolic placeholder and holds no values"):
        F.relu(x)
    node = Node(lambda v: v, (x,), {})
    node.outputs = [SymbolicTensor((None, 3), np.float32, node=node)]
    with pytest.raises(TypeError, match="not a lamina layer"):
        Model(x, node.outputs[0])


def test_shape_mismatch_is_caught_while_building_the_graph():
    x = Input((4,))
    with pytest.raises(lamina.ShapeError, match=r"Add.*\(None, 4\).*\(None, 5\)"):
        nn.Add()([nn.Dense(4)(x), nn.Dense(5)(x)])
    head = nn.Dense(2, name="head")
    head(x)
    with pytest.raises(lamina.ShapeError, match=r"Dense 'head' cannot be called on inputs of shape \(None, 3\)"):
        head(Input((3,)))
    a, b = nn.Dense(2, name="twin")(x), nn.Dense(2, name="twin")
    with pytest.raises(ValueError, match="two layers named 'twin'"):
        Model(x, b(a))
    with pytest.raises(ValueError, match="no layer named 'conv'"):
        Model(x, a).get_layer("conv")
