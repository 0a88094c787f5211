"""Training, evaluating and predicting with models of several inputs: x as a tuple of arrays."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import models, nn, optim
from lamina.data import ArrayDataset, DataLoader, load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.train import ModelCheckpoint, Trainer


def digits_with_row_sums():
    """Digits 8x8x1 in [0, 1] and, as a second input, each image's 8 row sums scaled to [0, 1]."""
    x, y = load_digits(size=8)
    images = x.astype(np.float32) / 255
    rows = images.sum(axis=2)[..., 0] / 8
    return images, rows, y


def two_input_model(filters=8, hidden=32, dropout=0.0):
    """Image -> Conv2D -> Flatten, joined with the row sums, -> Dense -> Dense softmax."""
    image = nn.Input((8, 8, 1), name="image")
    rows = nn.Input((8,), name="rows")
    features = nn.Concatenate()([nn.Flatten()(nn.Conv2D(filters, 3, activation="relu")(image)), rows])
    hidden_units = nn.Dense(hidden, activation="relu")(features)
    if dropout:
        hidden_units = nn.Dropout(dropout)(hidden_units)
    return nn.Model([image, rows], nn.Dense(10, activation="softmax")(hidden_units))


def adam_trainer(model, lr=3e-3, **kwargs):
    return Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=lr), verbose=0, **kwargs)


def test_two_input_model_learns_digits_and_predict_agrees_with_evaluate():
    images, rows, y = digits_with_row_sums()
    (train, y_train), (val, y_val), (test, y_test) = train_val_test_split(np.arange(len(y)), y, val=0.1, test=0.2,
                                                                          seed=0)
    lamina.manual_seed(0)
    trainer = adam_trainer(two_input_model())
    history = trainer.fit(((images[train], rows[train]), y_train), val=((images[val], rows[val]), y_val),
                          epochs=6, batch_size=32, seed=0)
    assert len(history["val_accuracy"]) == 6 and history["loss"][-1] < history["loss"][0]
    result = trainer.evaluate(((images[test], rows[test]), y_test))
    assert result["accuracy"] >= 0.9, result           # about 0.95 with these seeds

    probs = trainer.predict((images[test], rows[test]), batch_size=50)
    assert probs.shape == (len(test), 10)
    np.testing.assert_array_equal(trainer.predict([images[test], rows[test]], batch_size=50), probs)
    assert result["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == y_test))
    expected_loss = F.categorical_cross_entropy(lamina.tensor(probs), y_test).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    with lamina.no_grad():
        direct = trainer.model(images[test], rows[test]).numpy()   # one batch, no trainer
    np.testing.assert_allclose(probs, direct, rtol=1e-5, atol=1e-7)


def test_one_training_step_on_two_inputs_matches_torch():
    images, rows, y = digits_with_row_sums()
    images, rows, y = images[:16], rows[:16], y[:16]
    lamina.manual_seed(1)
    model = two_input_model(filters=3, hidden=12)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    lr = 0.5
    loss, _ = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=lr),
                      verbose=0).train_step((images, rows), y)

    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in before.items()}
    conv = torch.nn.functional.conv2d(torch.tensor(images, dtype=torch.float64).permute(0, 3, 1, 2),
                                      w["conv2d.weight"].permute(0, 3, 1, 2), w["conv2d.bias"])
    flat = torch.relu(conv).permute(0, 2, 3, 1).reshape(len(y), -1)           # flattened in NHWC order
    features = torch.cat([flat, torch.tensor(rows, dtype=torch.float64)], dim=1)
    hidden = torch.relu(features @ w["dense.weight"] + w["dense.bias"])
    logits = hidden @ w["dense_1.weight"] + w["dense_1.bias"]
    torch_loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    for name, value in model.state_dict().items():
        expected = (w[name] - lr * w[name].grad).detach().numpy()
        assert_close(value, expected, rtol=1e-5, what=name)
        assert not np.array_equal(value, before[name]), f"{name} was not updated"


def test_validation_split_holds_out_the_last_samples_of_every_input():
    images, rows, y = digits_with_row_sums()
    images, rows, y = images[:300], rows[:300], y[:300]
    lamina.manual_seed(2)
    split = adam_trainer(two_input_model())
    held_out = split.fit(((images, rows), y), validation_split=0.25, epochs=2, batch_size=32, seed=0)
    lamina.manual_seed(2)
    explicit = adam_trainer(two_input_model())
    cut = 225                                                      # floor(300 * 0.75)
    by_hand = explicit.fit(((images[:cut], rows[:cut]), y[:cut]), val=((images[cut:], rows[cut:]), y[cut:]),
                           epochs=2, batch_size=32, seed=0)
    assert split.samples_per_epoch == cut
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert held_out[key] == by_hand[key], key
    for name, value in split.model.state_dict().items():
        np.testing.assert_array_equal(value, explicit.model.state_dict()[name], err_msg=name)


class PairDataset:
    """A plain Dataset (not an ArrayDataset) whose samples are ((image, rows), label)."""

    def __init__(self, images, rows, y):
        self.images, self.rows, self.y = images, rows, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.images[i], self.rows[i]), self.y[i]


def test_datasets_and_loaders_batch_each_input_together():
    n = 23
    ids = np.arange(n)
    first = ids.reshape(n, 1, 1).repeat(2, axis=1).astype(np.float32) * 10.0   # (n, 2, 1), sample i holds 10 i
    second = -ids.astype(np.float64)                                           # (n,), sample i holds -i
    labels = ids + 100
    dataset = ArrayDataset((first, second), labels)
    assert len(dataset) == n and dataset.num_inputs == 2 and isinstance(dataset.x, tuple)
    (a, b), label = dataset[4]
    assert a.shape == (2, 1) and a[0, 0] == 40 and b == -4 and label == 104
    assert "(23, 2, 1) float32, (23,) float64" in repr(dataset)
    # one array, a list of numbers or lists, stays one input as before
    assert ArrayDataset([[1, 2], [3, 4], [5, 6]]).x.shape == (3, 2) and ArrayDataset(first).num_inputs == 1

    batches = list(DataLoader(dataset, batch_size=5, seed=3))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    order = np.concatenate([yb for _, yb in batches]) - 100
    assert sorted(order) == list(ids) and not np.array_equal(order, ids)   # shuffled, every sample once
    np.testing.assert_array_equal(np.concatenate([xb[0] for xb, _ in batches])[:, 0, 0], 10.0 * order)
    np.testing.assert_array_equal(np.concatenate([xb[1] for xb, _ in batches]), -order)
    assert batches[0][0][0].dtype == np.float32 and batches[0][0][1].dtype == np.float64

    # a plain Dataset of ((x1, x2), y) samples gives the same batches with the same seed
    plain = list(DataLoader(PairDataset(first, second, labels), batch_size=5, seed=3))
    for (xb, yb), (xp, yp) in zip(batches, plain, strict=True):
        np.testing.assert_array_equal(yp, yb)
        assert isinstance(xp, tuple) and len(xp) == 2
        np.testing.assert_array_equal(xp[0], xb[0])
        np.testing.assert_array_equal(xp[1], xb[1])

    # unlabelled: batches are the tuples of inputs; a transform sees the tuple
    unlabelled = list(DataLoader(ArrayDataset((first, second)), batch_size=5, shuffle=False,
                                 transform=lambda xb: (xb[0] + 1, xb[1])))
    assert isinstance(unlabelled[0], tuple) and unlabelled[0][0][0, 0, 0] == 1 and unlabelled[-1][1][-1] == -22

    # resuming in the middle of an epoch continues with the same batches
    loader = DataLoader(dataset, batch_size=5, seed=7)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    rest = list(iterator)
    resumed = DataLoader(ArrayDataset((first, second), labels), batch_size=5, seed=0)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(again) == len(rest) == 3
    for (xb, yb), (xr, yr) in zip(rest, again):
        np.testing.assert_array_equal(yr, yb)
        np.testing.assert_array_equal(xr[0], xb[0])
        np.testing.assert_array_equal(xr[1], xb[1])


def test_fit_takes_loaders_and_datasets_of_two_inputs_and_accumulates_by_sample_count():
    images, rows, y = digits_with_row_sums()
    images, rows, y = images[:96], rows[:96], y[:96]

    def fitted(train, **kwargs):
        lamina.manual_seed(4)
        model = two_input_model(filters=4, hidden=16)
        trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), verbose=0,
                          **{k: v for k, v in kwargs.items() if k == "accumulate"})
        trainer.fit(train, epochs=2, batch_size=kwargs.get("batch_size", 32), seed=0)
        return model.state_dict()

    arrays = fitted(((images, rows), y))
    for train in (DataLoader(ArrayDataset((images, rows), y), batch_size=32, seed=0),
                  DataLoader(PairDataset(images, rows, y), batch_size=32, seed=0),
                  ArrayDataset([images, rows], y)):
        weights = fitted(train)
        for name, value in arrays.items():
            np.testing.assert_array_equal(weights[name], value, err_msg=f"{type(train).__name__}: {name}")
    # two mini-batches of 16 per step weigh each by 16/32: the same steps as batches of 32
    accumulated = fitted(((images, rows), y), batch_size=16, accumulate=2)
    for name, value in arrays.items():
        np.testing.assert_allclose(accumulated[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def run(directory, epochs, stop_after=None):
    """Fit the two-input model with dropout and a cosine schedule, checkpointing every epoch;
    with ``stop_after``, stop there and resume in a fresh trainer as a new process would."""
    images, rows, y = digits_with_row_sums()
    data = ((images[:160], rows[:160]), y[:160])

    def trainer_for(callbacks=()):
        lamina.manual_seed(7)
        model = two_input_model(filters=4, hidden=16, dropout=0.3)
        opt = optim.Adam(model.parameters(), lr=0.01)
        schedule = optim.schedules.CosineDecay(0.01, epochs * 10)
        schedule.attach(opt)
        return Trainer(model, "categorical_cross_entropy", opt, callbacks=callbacks, schedule=schedule, verbose=0)

    trainer = trainer_for([ModelCheckpoint(directory / "ckpt-{epoch}.safetensors")])
    trainer.fit(data, epochs=stop_after or epochs, batch_size=16)
    if stop_after:
        trainer = trainer_for()
        trainer.fit(data, epochs=epochs, batch_size=16, resume_from=directory / f"ckpt-{stop_after}.safetensors")
    return trainer


def test_resume_of_a_two_input_run_is_bit_exact(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = run(tmp_path / "a", epochs=4)
    resumed = run(tmp_path / "b", epochs=4, stop_after=2)
    assert full.model.state_dict().keys() == resumed.model.state_dict().keys()
    for name, value in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)
    assert resumed.history["loss"] == full.history["loss"] and len(resumed.history["loss"]) == 4


def test_inputs_of_different_lengths_are_rejected():
    images, rows, y = digits_with_row_sums()
    trainer = adam_trainer(two_input_model())
    short = rows[:99]
    with pytest.raises(ValueError, match=r"Trainer.fit: the 2 inputs must have the same number of samples; "
                                         r"got lengths \[100, 99\]"):
        trainer.fit(((images[:100], short), y[:100]))
    with pytest.raises(ValueError, match=r"Trainer.fit: the 2 inputs .* lengths \[100, 99\]"):
        trainer.fit(((images[:100], short), y[:100]), validation_split=0.2)
    with pytest.raises(ValueError, match=r"Trainer.evaluate: the 2 inputs .* lengths \[100, 99\]"):
        trainer.evaluate(((images[:100], short), y[:100]))
    with pytest.raises(ValueError, match=r"Trainer.predict: the 2 inputs .* lengths \[100, 99\]"):
        trainer.predict([images[:100], short])
    with pytest.raises(ValueError, match=r"ArrayDataset: the 2 inputs .* lengths \[100, 99\]"):
        ArrayDataset((images[:100], short))
    with pytest.raises(ValueError, match=r"ArrayDataset: x and y .* len\(x\) = 100, len\(y\) = 98"):
        ArrayDataset((images[:100], rows[:100]), y[:98])


def test_the_wrong_number_of_inputs_names_both_counts():
    images, rows, y = digits_with_row_sums()
    trainer = adam_trainer(two_input_model())
    with pytest.raises(ValueError, match=r"Trainer.fit: the model takes 2 input\(s\) \(image, rows\) but the data "
                                         r"holds 1 input array\(s\)"):
        trainer.fit((images[:50], y[:50]))
    with pytest.raises(ValueError, match=r"Trainer.predict: the model takes 2 input\(s\) .* holds 3 input"):
        trainer.predict((images[:50], rows[:50], rows[:50]))
    with pytest.raises(ValueError, match=r"Trainer: the model takes 2 input\(s\) .* holds 1 input"):
        trainer.evaluate((images[:50], y[:50]))
    sequential = models.mlp(hidden=(8,), num_classes=10, input_shape=(8,))
    with pytest.raises(ValueError, match=r"Trainer.fit: the model takes 1 input\(s\) but the data holds 2 input "
                                         r"array\(s\); give x as one array"):
        adam_trainer(sequential).fit(((rows[:50], rows[:50]), y[:50]))


def test_bad_values_and_shapes_name_the_input():
    images, rows, y = digits_with_row_sums()
    trainer = adam_trainer(two_input_model())
    bad = rows[:50].copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"Trainer.fit: input 1 contains NaN or infinity \(first at sample 5\)"):
        trainer.fit(((images[:50], bad), y[:50]))
    with pytest.raises(ShapeError, match=r"Trainer.fit: the model cannot take inputs of shape input 0: "
                                         r"\(50, 8, 8, 1\), input 1: \(50, 7\).*'rows'"):
        trainer.fit(((images[:50], rows[:50, :7]), y[:50]))
    labels = y[:50].copy()
    labels[0] = 10
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        trainer.fit(((images[:50], rows[:50]), labels))
