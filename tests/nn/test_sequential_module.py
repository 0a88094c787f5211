import json

import numpy as np
import pytest

import lamina
from lamina import nn


def _mlp():
    return nn.Sequential(nn.Dense(8, activation="relu"), nn.BatchNorm(), nn.Dropout(0.2), nn.Dense(3))


def test_auto_names_and_dotted_parameter_names():
    model = _mlp()
    model(np.ones((4, 5), dtype=np.float32))
    assert [n for n, _ in model.named_parameters()] == [
        "dense.weight", "dense.bias", "batch_norm.weight", "batch_norm.bias", "dense_1.weight", "dense_1.bias"]
    assert [n for n, _ in model.named_buffers()] == ["batch_norm.running_mean", "batch_norm.running_var"]
    assert [layer.name for layer in model] == ["dense", "batch_norm", "dropout", "dense_1"]
    nested = nn.Sequential(model, nn.Dense(2, name="head"))
    nested(np.ones((4, 5), dtype=np.float32))
    names = [n for n, _ in nested.named_parameters()]
    assert names[0] == "sequential.dense.weight" and names[-1] == "head.bias"


def test_explicit_names_and_collisions():
    model = nn.Sequential(nn.Dense(3, name="dense_1"), nn.Dense(3), nn.Dense(3))
    assert [layer.name for layer in model] == ["dense_1", "dense", "dense_2"]
    with pytest.raises(ValueError, match="two layers named 'dense'"):
        model.append(nn.Dense(2, name="dense"))
    layer = nn.ReLU()
    model.append(layer)
    with pytest.raises(ValueError, match="already in this Sequential"):
        model.append(layer)
    with pytest.raises(TypeError, match="expected a layer"):
        nn.Sequential(lambda x: x)


def test_indexing_slicing_append_len_iter():
    model = _mlp()
    assert len(model) == 4
    assert isinstance(model[0], nn.Dense) and model[-1] is model["dense_1"]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is model[1]
    assert [layer.name for layer in model[1:]] == ["batch_norm", "dropout", "dense_1"]
    model.append(nn.Softmax())
    assert len(model) == 5 and model[4].name == "softmax"
    assert list(model) == model.layers
    with pytest.raises(IndexError):
        model[9]
    with pytest.raises(KeyError, match="no layer named 'conv'"):
        model["conv"]
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    model.eval()
    y = model(x)
    np.testing.assert_allclose(y.numpy(), model[2:](model[:2](x)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1, rtol=1e-5)


def test_build_without_data_and_output_shapes_match():
    model = nn.Sequential(nn.Dense(16, activation="tanh"), nn.Reshape((4, 4)), nn.Dense(2),
                          nn.Flatten(), nn.BatchNorm(), nn.PReLU(), nn.LeakyReLU(), nn.Dense(5))
    model.build((None, 7))
    assert model.built and all(layer.built for layer in model)
    assert model[2].weight.shape == (4, 2) and model[4].running_mean.shape == (8,)
    assert model.compute_output_shape((None, 7)) == (None, 5)
    x = np.ones((3, 7), dtype=np.float32)
    shape = x.shape
    for layer in model:
        expected = layer.compute_output_shape(shape)
        x = layer(x)
        assert x.shape == expected, layer
        shape = x.shape


def test_state_dict_round_trip_with_batchnorm_buffers():
    model = _mlp()
    rng = np.random.default_rng(0)
    for _ in range(3):
        model(rng.standard_normal((8, 5)).astype(np.float32))
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    assert set(state) >= {"batch_norm.running_mean", "batch_norm.running_var"}
    assert not np.allclose(state["batch_norm.running_mean"], 0)
    config = json.loads(json.dumps(nn.layer_to_config(model)))
    other = nn.layer_from_config(config)
    other.build((None, 5))
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    model.eval()
    other.eval()
    x = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(model(x).numpy(), other(x).numpy())


def test_load_state_dict_errors_name_key_and_shapes():
    model = _mlp()
    model.build((None, 5))
    state = dict(model.state_dict())
    missing = dict(state)
    del missing["batch_norm.running_var"]
    with pytest.raises(KeyError, match="batch_norm.running_var"):
        model.load_state_dict(missing)
    bad = dict(state)
    bad["dense_1.weight"] = np.zeros((9, 3), dtype=np.float32)
    with pytest.raises(lamina.ShapeError, match=r"'dense_1.weight' has shape \(9, 3\).*\(8, 3\)"):
        model.load_state_dict(bad)


def test_freeze_stops_gradients_and_counts():
    model = nn.Sequential(nn.Dense(4), nn.Dense(2))
    x = np.ones((3, 5), dtype=np.float32)
    model(x)
    assert model.num_parameters() == 5 * 4 + 4 + 4 * 2 + 2
    model[0].freeze()
    assert model.num_parameters(trainable_only=True) == 4 * 2 + 2
    assert [n for n, _ in model.named_parameters(trainable_only=True)] == ["dense_1.weight", "dense_1.bias"]
    model(x).sum().backward()
    assert model[0].weight.grad is None and model[1].weight.grad is not None
    model.unfreeze()
    model.zero_grad()
    model(x).sum().backward()
    assert model[0].weight.grad is not None


def test_train_eval_propagate_to_nested_layers():
    inner = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm())
    model = nn.Sequential(nn.Dense(3), inner)
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_sequential_errors_name_the_layer():
    model = nn.Sequential(nn.Dense(4), nn.Dense(2))
    model(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"Dense 'dense'.*\(1, 6\)"):
        model(np.ones((1, 6), dtype=np.float32))


def test_registry():
    assert nn.registered_layers()["Dense"] is nn.Dense

    @nn.register_layer
    class Scale(nn.Module):
        def __init__(self, factor: float = 2.0, name=None):
            super().__init__(name=name)
            self.factor = factor

        def forward(self, x):
            return x * self.factor

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {"factor": self.factor, "name": self.name}

    model = nn.Sequential(nn.Dense(2), Scale(3.0))
    again = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(model))))
    assert isinstance(again[1], Scale) and again[1].factor == 3.0 and again[1].name == "scale"
    with pytest.raises(ValueError, match="unknown layer class 'Nope'.*register_layer"):
        nn.layer_from_config({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match=r"unknown layer class 'Conv2d'.*closest registered names: \['Conv2D'"):
        nn.layer_from_config({"class_name": "Conv2d", "config": {}})

    class Unregistered(nn.Module):
        pass

    with pytest.raises(ValueError, match="not registered"):
        nn.layer_to_config(Unregistered())


def test_all_layers_registered_and_configs_json_round_trip():
    layers = [nn.Dense(3, activation="relu", bias_init=0.01), nn.Dense(3, activation=nn.LeakyReLU(0.1)),
              nn.BatchNorm(momentum=0.8), nn.Dropout(0.3), nn.DropConnect(nn.Dense(4), 0.2),
              nn.LocalResponseNorm(3), nn.Add(), nn.Concatenate(axis=1), nn.Flatten(), nn.Reshape((2, -1)),
              nn.Identity(), nn.Sequential(nn.Dense(2), nn.ReLU())]
    for layer in layers:
        config = json.loads(json.dumps(nn.layer_to_config(layer)))
        again = nn.layer_from_config(config)
        assert type(again) is type(layer)
        assert again.get_config() == layer.get_config()


def test_evaluation_mode_gives_every_module_its_own_mode_back():
    from lamina.nn.module import evaluation_mode
    model = nn.Sequential(nn.Dense(3), nn.Dropout(0.5), nn.BatchNorm())
    model.train()
    model[2].eval()                          # a frozen batch norm left in evaluation mode
    with pytest.raises(RuntimeError, match="inside"):
        with evaluation_mode(model) as same:
            assert same is model and not any(m.training for m in model.modules())
            raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == [True, True, True, False]


def test_insert_extend_pop_set_and_delete_keep_names_and_order_like_a_list():
    import torch

    import lamina.nn as lnn

    model = lnn.Sequential(lnn.Dense(4), lnn.ReLU(), lnn.Dense(2))
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    for index in (1, -1, 5, -6):
        model.insert(index, lnn.Tanh())
        reference.insert(index, torch.nn.Tanh())
    with pytest.raises(IndexError, match="Sequential.insert: index 8 out of range for 7 layers"):
        model.insert(8, lnn.Tanh())
    assert [type(m).__name__ for m in model] == [
        {"Linear": "Dense"}.get(type(m).__name__, type(m).__name__) for m in reference]
    assert list(model._modules) == ["tanh_3", "dense", "tanh", "relu", "tanh_1", "dense_1", "tanh_2"]
    assert type(model.pop()).__name__ == "Tanh" and type(model.pop(0)).__name__ == "Tanh"
    del model[1]
    del model["tanh_1"]
    assert list(model._modules) == ["dense", "relu", "dense_1"]
    model[0] = lnn.Dense(5)
    assert list(model._modules) == ["dense", "relu", "dense_1"] and model[0].units == 5
    model.extend([lnn.ReLU(), lnn.Dense(3)])
    del model[1:3]
    assert list(model._modules) == ["dense", "relu_1", "dense_2"]
    assert model(lamina.tensor(np.ones((2, 3)))).shape == (2, 3)


def test_a_refused_replacement_leaves_the_sequential_as_it_was():
    import lamina.nn as lnn

    model = lnn.Sequential(lnn.Dense(4), lnn.ReLU(name="act"), lnn.Dense(2))
    before = list(model._modules.items())
    with pytest.raises(ValueError, match="two layers named 'act'"):
        model[0] = lnn.Dense(4, name="act")
    with pytest.raises(TypeError, match="expected a layer"):
        model[2] = "dense"
    assert list(model._modules.items()) == before
