"""Trainer.fit with sample weights, class weights and weighted metrics (Keras's fit options)."""

import functools

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import models, nn, optim
from lamina.data import ArrayDataset, DataLoader
from lamina.train import Distiller, Trainer
from lamina.train.weighting import class_indices

LR = 0.1


def blobs(n=24, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, 4)) * 2
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.standard_normal((n, 4))).astype(np.float32)
    return x, y


def make_trainer(seed=0, **options):
    lamina.manual_seed(seed)
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    return Trainer(model, optimizer=optim.SGD(model.parameters(), lr=LR), verbose=0, metrics=(), **options)


def torch_twin(model):
    """The same MLP in torch, with lamina's weights (Dense keeps (in, out) kernels)."""
    state = model.state_dict()
    twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for layer, name in ((twin[0], "dense"), (twin[2], "dense_1")):
            layer.weight.copy_(torch.from_numpy(np.asarray(state[f"{name}.weight"]).T))
            layer.bias.copy_(torch.from_numpy(np.asarray(state[f"{name}.bias"])))
    return twin


def torch_step(twin, x, y, cost_of):
    """One torch SGD step on cost_of(logits, labels); returns the cost and the new weights."""
    opt = torch.optim.SGD(twin.parameters(), lr=LR)
    cost = cost_of(twin(torch.from_numpy(x)), torch.from_numpy(y))
    opt.zero_grad()
    cost.backward()
    opt.step()
    weights = {}
    for layer, name in ((twin[0], "dense"), (twin[2], "dense_1")):
        weights[f"{name}.weight"] = layer.weight.detach().numpy().T
        weights[f"{name}.bias"] = layer.bias.detach().numpy()
    return float(cost.detach()), weights


def assert_state_close(model, expected, rtol=1e-5, atol=1e-6):
    state = model.state_dict()
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(state[name]), value, rtol=rtol, atol=atol, err_msg=name)


def one_step(trainer, data, **fit_options):
    trainer.fit(data, epochs=1, batch_size=len(data[0]), shuffle=False, **fit_options)
    return trainer.history.iteration["loss"][0]


def test_weighted_cost_and_step_equal_torch_and_a_hand_computation():
    x, y = blobs()
    w = np.random.default_rng(1).uniform(0, 3, len(y))
    trainer = make_trainer()
    twin = torch_twin(trainer.model)
    with lamina.no_grad():
        probs = np.asarray(trainer.model(lamina.tensor(x)).data, dtype=np.float64)
    by_hand = float((w * -np.log(probs[np.arange(len(y)), y])).sum() / len(y))   # over the batch size
    cost = one_step(trainer, (x, y), sample_weight=w)

    def torch_cost(logits, labels):
        losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return (losses * torch.from_numpy(w).float()).sum() / len(labels)

    torch_cost_value, torch_weights = torch_step(twin, x, y, torch_cost)
    assert cost == pytest.approx(by_hand, rel=1e-5)
    assert cost == pytest.approx(torch_cost_value, rel=1e-5)
    assert_state_close(trainer.model, torch_weights)


def test_class_weights_over_their_sum_equal_torch_weighted_cross_entropy():
    x, y = blobs()
    class_weight = {0: 0.5, 1: 2.0, 2: 3.0}
    trainer = make_trainer(weight_normalization="sum_of_weights")
    twin = torch_twin(trainer.model)
    cost = one_step(trainer, (x, y), class_weight=class_weight)
    table = torch.tensor([class_weight[k] for k in range(3)])
    torch_cost_value, torch_weights = torch_step(
        twin, x, y, lambda logits, labels: torch.nn.functional.cross_entropy(logits, labels, weight=table))
    assert cost == pytest.approx(torch_cost_value, rel=1e-5)
    assert_state_close(trainer.model, torch_weights)


def test_class_weight_equals_the_matching_sample_weight():
    x, y = blobs(40)
    class_weight = {0: 1.0, 1: 4.0, 2: 0.25}
    by_class, by_sample = make_trainer(), make_trainer()
    by_class.fit((x, y), epochs=2, batch_size=8, seed=3, class_weight=class_weight)
    by_sample.fit((x, y), epochs=2, batch_size=8, seed=3, sample_weight=np.array([class_weight[k] for k in y]))
    assert by_class.history["loss"] == by_sample.history["loss"]
    for name, value in by_class.model.state_dict().items():
        np.testing.assert_array_equal(value, by_sample.model.state_dict()[name])


def test_one_hot_labels_and_an_array_of_class_weights_weigh_alike():
    x, y = blobs(40)
    weights = [1.0, 4.0, 0.25]
    sparse, one_hot = make_trainer(), make_trainer()
    sparse.fit((x, y), epochs=1, batch_size=8, seed=3, class_weight=dict(enumerate(weights)))
    one_hot.fit((x, np.eye(3, dtype=np.float32)[y]), epochs=1, batch_size=8, seed=3, class_weight=np.array(weights))
    np.testing.assert_allclose(sparse.history["loss"], one_hot.history["loss"], rtol=1e-6)


def test_weights_all_one_give_the_unweighted_run_bit_for_bit():
    x, y = blobs(40)
    plain, weighted = make_trainer(), make_trainer()
    plain.fit((x, y), epochs=2, batch_size=8, seed=3)
    weighted.fit((x, y, np.ones(len(y))), epochs=2, batch_size=8, seed=3, class_weight={0: 1.0})
    assert plain.history.iteration["loss"] == weighted.history.iteration["loss"]
    for name, value in plain.model.state_dict().items():
        np.testing.assert_array_equal(value, weighted.model.state_dict()[name])


class Triples:
    """A map-style dataset of (x_i, y_i, w_i) samples, indexed one by one."""

    def __init__(self, x, y, w):
        self.x, self.y, self.w = x, y, w

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.w[i]


def test_every_form_of_weighted_data_trains_alike():
    x, y = blobs(40)
    w = np.random.default_rng(2).uniform(0, 2, len(y)).astype(np.float32)
    forms = {
        "sample_weight": ((x, y), {"sample_weight": w}),
        "arrays": ((x, y, w), {}),
        "dataset": (ArrayDataset(x, y, w), {}),
        "loader": (DataLoader(ArrayDataset(x, y, w), batch_size=8, shuffle=False), {}),
        "samples": (DataLoader(Triples(x, y, w), batch_size=8, shuffle=False), {}),
    }
    losses = {}
    for name, (data, options) in forms.items():
        trainer = make_trainer()
        trainer.fit(data, epochs=2, batch_size=8, shuffle=False, **options)
        losses[name] = trainer.history.iteration["loss"]
    for name, values in losses.items():
        np.testing.assert_allclose(values, losses["sample_weight"], rtol=1e-6, err_msg=name)


def test_a_loss_module_is_weighted_like_the_loss_function():
    x, y = blobs()
    w = np.random.default_rng(1).uniform(0, 3, len(y))
    costs = []
    for loss in ("categorical_cross_entropy", nn.CrossEntropyLoss()):
        lamina.manual_seed(0)
        model = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(3))
        model.build((None, 4))
        if not isinstance(loss, str):
            trainer = Trainer(model, loss, optim.SGD(model.parameters(), lr=LR), metrics=(), verbose=0)
        else:
            trainer = Trainer(model, functools.partial(F.categorical_cross_entropy, from_logits=True),
                              optim.SGD(model.parameters(), lr=LR), metrics=(), verbose=0)
        costs.append(one_step(trainer, (x, y), sample_weight=w))
    assert costs[0] == pytest.approx(costs[1], rel=1e-6)
    assert loss.reduction == "mean"                   # the module given is left as it was


def test_class_weight_raises_the_recall_of_a_rare_class():
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=400) < 0.1).astype(np.int64)
    x = (rng.standard_normal((400, 2)) + 1.2 * y[:, None]).astype(np.float32)
    recalls = []
    for class_weight in (None, {0: 1.0, 1: 9.0}):
        lamina.manual_seed(0)
        model = models.mlp(hidden=(8,), num_classes=2, input_shape=(2,))
        trainer = Trainer(model, optimizer=optim.Adam(model.parameters(), lr=0.02), metrics=(), verbose=0)
        trainer.fit((x, y), epochs=6, batch_size=32, seed=0, class_weight=class_weight)
        predicted = trainer.predict(x).argmax(axis=1)
        recalls.append((predicted[y == 1] == 1).mean())
    assert recalls[1] > recalls[0] + 0.3


def test_weighted_metrics_are_weighted_means_and_validation_takes_triples():
    x, y = blobs(40)
    w = np.random.default_rng(4).uniform(0, 2, len(y))
    trainer = make_trainer(weighted_metrics=("accuracy",))
    history = trainer.fit((x[:32], y[:32]), val=(x[32:], y[32:], w[32:]), epochs=1, batch_size=8)
    right = trainer.predict(x[32:]).argmax(axis=1) == y[32:]
    expected = float((w[32:] * right).sum() / w[32:].sum())
    assert history["val_weighted_accuracy"][0] == pytest.approx(expected)
    assert trainer.evaluate((x[32:], y[32:]), sample_weight=w[32:])["weighted_accuracy"] == pytest.approx(expected)
    assert trainer.evaluate((x[32:], y[32:]))["weighted_accuracy"] == pytest.approx(right.mean())


def test_validation_split_holds_out_the_weights_with_the_samples():
    x, y = blobs(40)
    w = np.random.default_rng(5).uniform(0.5, 2, len(y))
    split, by_hand = make_trainer(), make_trainer()
    split.fit((x, y), sample_weight=w, validation_split=0.25, epochs=1, batch_size=8, shuffle=False)
    by_hand.fit((x[:30], y[:30], w[:30]), val=(x[30:], y[30:], w[30:]), epochs=1, batch_size=8, shuffle=False)
    assert split.history["loss"] == by_hand.history["loss"]
    assert split.history["val_loss"] == by_hand.history["val_loss"]


@pytest.mark.parametrize("fit_options, message", [
    ({"sample_weight": np.ones(5)}, r"one weight per sample, shape \(24,\); got shape \(5,\)"),
    ({"sample_weight": -np.ones(24)}, "must be >= 0; found -1.0 at sample 0"),
    ({"sample_weight": np.full(24, np.nan)}, "must be finite"),
    ({"class_weight": {3: 2.0}}, r"class_weight names class 3, but the model's 3 outputs give classes 0 to 2"),
    ({"class_weight": {0: -1.0}}, "class 0 has -1.0"),
    ({"class_weight": [1.0, 2.0]}, r"one weight per class, shape \(3,\)"),
])
def test_bad_weights_are_refused_naming_fit(fit_options, message):
    x, y = blobs()
    with pytest.raises(ValueError, match=message) as caught:
        make_trainer().fit((x, y), **fit_options)
    assert "Trainer.fit" in str(caught.value)


def test_weights_given_twice_and_weights_a_loss_cannot_take_are_refused():
    x, y = blobs()
    with pytest.raises(ValueError, match="Trainer.fit: sample weights given twice"):
        make_trainer().fit((x, y, np.ones(24)), sample_weight=np.ones(24))
    with pytest.raises(ValueError, match="Trainer.fit: sample weights given twice"):
        make_trainer().fit(ArrayDataset(x, y, np.ones(24)), sample_weight=np.ones(24))
    with pytest.raises(TypeError, match="sample_weight= goes with \\(x, y\\) arrays"):
        make_trainer().fit(ArrayDataset(x, y), sample_weight=np.ones(24))
    with pytest.raises(ValueError, match="Trainer.fit: sample weights must be >= 0"):
        make_trainer().fit(DataLoader(ArrayDataset(x, y, -np.ones(24)), batch_size=8))

    def plain_cost(out, labels):
        return F.categorical_cross_entropy(out, labels)

    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    trainer = Trainer(model, plain_cost, optim.SGD(model.parameters(), lr=LR), metrics=(), verbose=0)
    with pytest.raises(ValueError, match="'plain_cost' takes no reduction argument"):
        trainer.fit((x, y), sample_weight=np.full(24, 2.0))


def test_class_weight_with_a_regression_loss_is_refused():
    x, _ = blobs()
    model = nn.Sequential(nn.Dense(1))
    trainer = Trainer(model, "mse", optim.SGD(model, lr=LR), metrics=(), verbose=0)
    with pytest.raises(ValueError, match="Trainer.fit: class_weight needs a classification loss; the loss 'mse'"):
        trainer.fit((x, x[:, :1]), class_weight={0: 2.0})


def test_accumulated_weighted_mini_batches_equal_one_large_batch():
    x, y = blobs(16)
    w = np.random.default_rng(6).uniform(0, 2, len(y))
    whole, accumulated = make_trainer(), make_trainer(accumulate=2)
    whole.fit((x, y, w), epochs=1, batch_size=16, shuffle=False)
    accumulated.fit((x, y, w), epochs=1, batch_size=8, shuffle=False)
    assert_state_close(accumulated.model, whole.model.state_dict())


def test_labels_of_several_classes_per_sample_cannot_take_class_weights():
    with pytest.raises(ValueError, match=r"Trainer.fit: class weights need one class per sample .* shape \(2, 3\)"):
        class_indices(np.array([[0, 2, 1], [1, 1, 0]]), "Trainer.fit")
    np.testing.assert_array_equal(class_indices(np.eye(3, dtype=np.int64)[[2, 0]]), [2, 0])
    np.testing.assert_array_equal(class_indices(np.array([[0.2], [0.9]], dtype=np.float32)), [0, 1])


def test_a_trainer_with_a_cost_of_its_own_refuses_weights():
    x, y = blobs()
    lamina.manual_seed(0)
    student = nn.Sequential(nn.Dense(3))
    teacher = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(3))
    student.build((None, 4))
    teacher.build((None, 4))
    distiller = Distiller(student, teacher, optim.SGD(student, lr=LR), verbose=0)
    with pytest.raises(ValueError, match="Distiller: its cost is its own, and takes no sample or class weights"):
        distiller.fit((x, y, np.full(24, 2.0)), batch_size=8)


def test_class_weights_of_a_single_sigmoid_output_weigh_the_0_1_labels():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((24, 2)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(np.float32)[:, None]
    def right(scores, labels):
        return (scores[:, 0] > 0.5) == labels[:, 0]

    runs = []
    for options in ({"class_weight": {1: 3.0}}, {"sample_weight": np.where(y[:, 0] == 1, 3.0, 1.0)}):
        model = models.logistic_regression(input_shape=(2,))
        trainer = Trainer(model, "binary_cross_entropy", optim.SGD(model, lr=LR), metrics=(), verbose=0,
                          weighted_metrics=("binary_accuracy", right))
        trainer.fit((x, y), epochs=2, batch_size=8, seed=0, **options)
        runs.append(trainer.history)
    assert runs[0]["loss"] == runs[1]["loss"]
    assert runs[0]["weighted_binary_accuracy"] == runs[0]["weighted_right"] == runs[1]["weighted_right"]
