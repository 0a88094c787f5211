import matplotlib.image
import numpy as np
import pytest
import torch

import lamina
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.train import LambdaCallback, Trainer
from lamina.train.monitor import HistogramMonitor, activation_kind

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def blobs(n=96, features=8, seed=0):
    """Three Gaussian blobs: a small real classification task."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, features)) * 2
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.standard_normal((n, features))).astype(np.float32), y


def mlp(*hidden_layers, seed=0):
    """``hidden_layers`` then a softmax layer ``out`` of 3 units, built for 8 features."""
    lamina.manual_seed(seed)
    model = nn.Sequential(list(hidden_layers) + [nn.Dense(3, activation="softmax", name="out")])
    model(lamina.tensor(np.zeros((1, 8), np.float32)))
    return model


def fit(model, callbacks, lr=1e-3, opt=None, epochs=2, batch_size=16, data=None, **trainer_options):
    opt = opt or optim.Adam(model.parameters(), lr=lr)
    trainer = Trainer(model, "categorical_cross_entropy", opt, callbacks=callbacks, verbose=0, **trainer_options)
    trainer.fit(data or blobs(), epochs=epochs, batch_size=batch_size, seed=0)
    return trainer


def weights(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def test_weight_histograms_match_numpy_at_each_recorded_moment():
    model = mlp(nn.Dense(16, activation="relu", name="h"))
    snapshots = []
    keep = LambdaCallback(on_train_begin=lambda logs: snapshots.append(weights(model)),
                          on_epoch_end=lambda epoch, logs: snapshots.append(weights(model)))
    monitor = HistogramMonitor(bins=12)
    fit(model, [monitor, keep], lr=1e-2, epochs=3)
    assert [r["epoch"] for r in monitor.records] == [0, 1, 2, 3]
    assert not np.array_equal(snapshots[0]["h.weight"], snapshots[-1]["h.weight"])
    for record, snapshot in zip(monitor.records, snapshots, strict=True):
        assert set(record["parameters"]) == set(snapshot)
        for name, w in snapshot.items():
            h = record["parameters"][name]["values"]
            counts, edges = np.histogram(w, bins=12)
            assert h["counts"].sum() == w.size and h["nonfinite"] == 0
            np.testing.assert_array_equal(h["counts"], counts)
            np.testing.assert_allclose(h["edges"], edges, rtol=1e-6)
            w64 = w.astype(np.float64)
            np.testing.assert_allclose([h["mean"], h["std"], h["min"], h["max"], h["norm"]],
                                       [w64.mean(), w64.std(), w64.min(), w64.max(), np.linalg.norm(w64)],
                                       rtol=1e-9, atol=1e-12)


def test_gradient_statistics_are_those_of_the_last_batch_cross_checked_with_torch():
    model = mlp(nn.Dense(16, activation="relu", name="h"))
    start = weights(model)
    x, y = blobs(n=40)
    monitor = HistogramMonitor(bins=10)
    fit(model, [monitor], opt=optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=40, data=(x, y))
    assert all(p["grad"] is None for p in monitor.records[0]["parameters"].values())  # a fresh model

    # one full batch: the recorded gradient is the cost's gradient at the starting weights
    torch_params = {name: torch.tensor(w, dtype=torch.float64, requires_grad=True) for name, w in start.items()}
    hidden = torch.relu(torch.tensor(x, dtype=torch.float64) @ torch_params["h.weight"] + torch_params["h.bias"])
    logits = hidden @ torch_params["out.weight"] + torch_params["out.bias"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    for name, p in torch_params.items():
        g = p.grad.numpy()
        h = monitor.records[1]["parameters"][name]["grad"]
        assert h["counts"].sum() == g.size
        np.testing.assert_allclose([h["mean"], h["std"], h["min"], h["max"], h["norm"]],
                                   [g.mean(), g.std(), g.min(), g.max(), np.linalg.norm(g)], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_update_ratio_is_the_relative_change_of_the_last_step(accumulate):
    model = mlp(nn.Dense(16, activation="tanh", name="h"))
    after_batches = []
    keep = LambdaCallback(on_batch_end=lambda iteration, logs: after_batches.append(weights(model)))
    monitor = HistogramMonitor()
    fit(model, [monitor, keep], opt=optim.SGD(model.parameters(), lr=0.05), epochs=2, batch_size=16,
        accumulate=accumulate)
    batches_per_epoch = 6
    assert len(after_batches) == 2 * batches_per_epoch
    assert all(p["update_ratio"] is None for p in monitor.records[0]["parameters"].values())
    for epoch in (1, 2):
        now = after_batches[epoch * batches_per_epoch - 1]
        before = after_batches[epoch * batches_per_epoch - 1 - accumulate]  # after the step before the last
        for name, w in now.items():
            expected = np.linalg.norm(w.astype(np.float64) - before[name]) / np.linalg.norm(before[name])
            assert expected > 0
            assert monitor.records[epoch]["parameters"][name]["update_ratio"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("hidden", [
    [nn.Dense(16, activation="relu", bias_init=-10.0, name="act")],
    [nn.Dense(16, bias_init=-10.0, name="h"), nn.ReLU(name="act")],
], ids=["dense-activation", "relu-layer"])
def test_a_relu_layer_with_a_large_negative_bias_is_dead(hidden):
    model = mlp(*hidden)
    monitor = HistogramMonitor()
    fit(model, [monitor])
    for record in monitor.records:
        layer = record["activations"]["act"]
        assert layer["kind"] == "relu"
        assert layer["dead_fraction"] > 0.9 and layer["zero_fraction"] > 0.95
    assert any("layer act" in w and "dead" in w for w in monitor.warnings())
    assert "act" in monitor.summary_table()


def test_a_healthy_relu_network_has_no_warnings():
    model = mlp(nn.Dense(16, activation="relu", bias_init=0.01, name="h"))
    monitor = HistogramMonitor()
    fit(model, [monitor], epochs=3)
    layer = monitor.records[-1]["activations"]["h"]
    assert layer["kind"] == "relu" and layer["dead_fraction"] < 0.2
    assert 0 < layer["zero_fraction"] < 0.9
    assert monitor.warnings() == []


@pytest.mark.parametrize("kind, layer", [("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)])
def test_huge_weights_saturate_tanh_and_sigmoid(kind, layer):
    big = mlp(nn.Dense(32, kernel_init=nn.init.normal(std=10.0), name="h"), layer(name="act"))
    small = mlp(nn.Dense(32, kernel_init="xavier_uniform", name="h"), layer(name="act"))
    saturated, healthy = HistogramMonitor(), HistogramMonitor()
    fit(big, [saturated], epochs=1)
    fit(small, [healthy], epochs=1)
    assert saturated.records[0]["activations"]["act"]["kind"] == kind
    assert saturated.records[0]["activations"]["act"]["saturated_fraction"] > 0.7
    assert healthy.records[0]["activations"]["act"]["saturated_fraction"] < 0.2
    assert saturated.records[0]["activations"]["h"]["saturated_fraction"] is None  # a linear layer
    assert any("layer act" in w and f"{kind} outputs are saturated" in w for w in saturated.warnings())
    assert not any("saturated" in w for w in healthy.warnings())


def test_a_too_large_learning_rate_is_reported_by_the_update_ratio():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((96, 8)).astype(np.float32), rng.integers(0, 3, 96)  # never learnt: gradients stay
    monitors = {}
    for lr in (0.01, 3.0):
        model = mlp(nn.Dense(16, activation="tanh", name="h"))
        monitors[lr] = HistogramMonitor()
        fit(model, [monitors[lr]], opt=optim.SGD(model.parameters(), lr=lr), epochs=1, data=noise)
    assert 1e-4 < monitors[0.01].records[1]["parameters"]["h.weight"]["update_ratio"] < 1e-2
    assert monitors[3.0].records[1]["parameters"]["h.weight"]["update_ratio"] > 0.1
    assert any("h.weight update ratio" in w and "too high" in w for w in monitors[3.0].warnings())
    assert not any("update ratio" in w for w in monitors[0.01].warnings())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the forward pass meets the infinity too
def test_non_finite_weights_are_reported():
    model = mlp(nn.Dense(16, activation="relu", name="h"))
    model[0].weight.data[0, 0] = np.inf
    monitor = HistogramMonitor()
    fit(model, [monitor], epochs=1)
    h = monitor.records[0]["parameters"]["h.weight"]["values"]
    assert h["nonfinite"] == 1 and h["counts"].sum() == model[0].weight.size - 1
    assert any("h.weight has 1 NaN or infinite values" in w for w in monitor.warnings())


def test_plots_are_valid_pngs(tmp_path):
    model = mlp(nn.Dense(16, activation="relu", name="h"))
    monitor = HistogramMonitor()
    fit(model, [monitor], epochs=2)
    for what in ("weights", "gradients", "activations"):
        path = tmp_path / f"{what}.png"
        monitor.plot(path, what=what)
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert matplotlib.image.imread(path).ndim == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["activations.png", "gradients.png", "weights.png"]
    with pytest.raises(ValueError, match="what must be one of"):
        monitor.plot(tmp_path / "x.png", what="biases")


def test_the_probe_leaves_modes_and_gradients_alone():
    model = mlp(nn.Dense(16, activation="relu", name="h"), nn.Dropout(0.5, name="drop"))
    x, y = blobs()
    before = {}

    def snapshot(epoch, logs):
        model[1].eval()  # a mixed state the probe must put back as it was
        before["modes"] = [m.training for m in model.modules()]
        before["grads"] = {name: p.grad.copy() for name, p in model.named_parameters()}

    def compare(epoch, logs):
        assert [m.training for m in model.modules()] == before["modes"]
        for name, p in model.named_parameters():
            np.testing.assert_array_equal(p.grad, before["grads"][name])

    monitor = HistogramMonitor(probe=x[:20])
    fit(model, [LambdaCallback(on_epoch_end=snapshot), monitor, LambdaCallback(on_epoch_end=compare)],
        epochs=2, data=(x, y))
    record = monitor.records[-1]["activations"]
    # in evaluation mode dropout is the identity: its output is the ReLU layer's output
    np.testing.assert_array_equal(record["drop"]["counts"], record["h"]["counts"])
    assert record["drop"]["mean"] == record["h"]["mean"]
    assert list(record) == ["h", "drop", "out"]


def test_every_two_epochs_records_epochs_0_2_4():
    model = mlp(nn.Dense(8, activation="relu", name="h"))
    monitor = HistogramMonitor(every=2, layers=["h"])
    fit(model, [monitor], epochs=5)
    assert [r["epoch"] for r in monitor.records] == [0, 2, 4]
    assert all(r["parameters"][n]["update_ratio"] > 0 for r in monitor.records[1:] for n in ("h.weight", "h.bias"))
    assert set(monitor.records[-1]["parameters"]) == {"h.weight", "h.bias"}
    assert set(monitor.records[-1]["activations"]) == {"h"}
    table = monitor.summary_table().splitlines()
    assert table[0] == "epoch 4" and len(table) == 2 + 2 + 1 + 1


def test_activation_kinds_come_from_layer_types_and_names():
    assert activation_kind(nn.Dense(4, activation="tanh")) == "tanh"
    assert activation_kind(nn.Dense(4, activation=nn.Sigmoid())) == "sigmoid"
    assert activation_kind(nn.Activation("relu6")) == "relu"
    assert activation_kind(nn.Dense(4, activation="elu")) is None
    assert activation_kind(nn.Dense(4)) is None


@pytest.mark.parametrize("options, message", [
    ({"bins": 0}, "bins must be a positive integer"),
    ({"every": 0}, "every must be a positive integer"),
    ({"every": 1.5}, "every must be a positive integer"),
    ({"probe": np.float32(1.0)}, "probe must be a non-empty batch"),
    ({"layers": "0"}, "layers must be a list"),
])
def test_bad_arguments_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        HistogramMonitor(**options)


def test_a_probe_of_the_wrong_shape_or_unknown_layers_fail_at_train_begin():
    model = mlp(nn.Dense(8, activation="relu", name="h"))
    with pytest.raises(ShapeError, match=r"HistogramMonitor: the probe batch of shape \(4, 5\) does not fit"):
        fit(model, [HistogramMonitor(probe=np.zeros((4, 5), np.float32))], epochs=1)
    with pytest.raises(ValueError, match=r"unknown layers \['7'\]"):
        fit(model, [HistogramMonitor(layers=["7"])], epochs=1)
    assert HistogramMonitor().summary_table() == "HistogramMonitor: nothing recorded yet"
