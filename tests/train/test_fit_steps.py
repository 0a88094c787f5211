"""Trainer.fit's epoch options: steps_per_epoch, initial_epoch, validation_freq,
validation_batch_size, validation_steps, and resuming with them."""

import numpy as np
import pytest

import lamina
from lamina import models, nn, optim
from lamina.data import DataLoader, IterableDataset
from lamina.train import EarlyStopping, LambdaCallback, ModelCheckpoint, Trainer


def regression(n=10):
    """Inputs whose label is the sample's index, to see which samples each batch held."""
    x = np.random.default_rng(0).standard_normal((n, 3)).astype(np.float32)
    return x, np.arange(n, dtype=np.float32)[:, None]


def recording_trainer(seen, callbacks=(), **options):
    """A linear regression whose metric records the labels (sample indices) of each batch."""

    def labels(scores, y):
        seen.append(np.asarray(y)[:, 0].astype(int))
        return 0.0

    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    return Trainer(model, "mse", optim.SGD(model, lr=0.01), metrics=(labels,), callbacks=callbacks, verbose=0,
                   **options)


def test_steps_per_epoch_continues_where_the_last_epoch_stopped():
    x, y = regression(10)
    seen = []
    history = recording_trainer(seen).fit((x, y), epochs=4, batch_size=2, shuffle=False, steps_per_epoch=3)
    assert len(history.iteration["loss"]) == 12 and len(history["loss"]) == 4
    order = np.concatenate(seen)
    np.testing.assert_array_equal(order, np.r_[np.arange(10), np.arange(10), np.arange(4)])


def test_steps_per_epoch_reshuffles_each_new_pass():
    x, y = regression(10)
    seen = []
    recording_trainer(seen).fit((x, y), epochs=3, batch_size=5, seed=1, steps_per_epoch=2)
    passes = [np.concatenate(seen[k:k + 2]) for k in (0, 2, 4)]
    for order in passes:
        assert sorted(order) == list(range(10))
    assert not np.array_equal(passes[0], passes[1]) and not np.array_equal(passes[1], passes[2])


class Stream(IterableDataset):
    """A stream of ``passes`` passes over (x, y) samples; each later pass yields nothing."""

    def __init__(self, x, y, passes):
        self.x, self.y, self.passes = x, y, passes

    def __iter__(self):
        if self.passes == 0:
            return
        self.passes -= 1
        yield from zip(self.x, self.y)


def test_a_stream_that_runs_dry_ends_training_with_a_warning():
    x, y = regression(10)
    seen = []
    trainer = recording_trainer(seen)
    with pytest.warns(RuntimeWarning, match="ran out of batches at epoch 4"):
        # fit checks the first batch of the first pass and trains on it: both passes are trained on
        history = trainer.fit(DataLoader(Stream(x, y, passes=2), batch_size=2), epochs=5, steps_per_epoch=4)
    assert history.epochs == [1, 2, 3]
    assert [b.tolist() for b in seen] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]] * 2  # 10 batches: 4, 4, 2


def test_initial_epoch_numbers_the_epochs_of_callbacks_and_history():
    x, y = regression(10)
    begun = []
    trainer = recording_trainer([], callbacks=[LambdaCallback(on_epoch_begin=lambda epoch, logs: begun.append(epoch))])
    history = trainer.fit((x, y), epochs=5, initial_epoch=3, batch_size=5)
    assert begun == [3, 4] and history.epochs == [4, 5]


def test_validation_freq_validates_every_kth_epoch():
    x, y = regression(10)
    ends = {}
    log_end = LambdaCallback(on_epoch_end=lambda epoch, logs: ends.update({epoch: sorted(logs)}))
    history = recording_trainer([], callbacks=[log_end]).fit((x, y), val=(x, y), epochs=5, batch_size=5,
                                                             validation_freq=2)
    assert len(history["loss"]) == 5 and len(history["val_loss"]) == 2
    assert history.curve("val_loss")[0].tolist() == [2, 4] and history.curve("loss")[0].tolist() == [1, 2, 3, 4, 5]
    assert ["val_loss" in ends[epoch] for epoch in range(5)] == [False, True, False, True, False]


def test_early_stopping_on_a_validation_quantity_counts_the_validated_epochs_only():
    x, y = regression(10)
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=1e9)   # no epoch counts as better
    history = recording_trainer([], callbacks=[stopper]).fit((x, y), val=(x, y), epochs=10, batch_size=5,
                                                             validation_freq=2)
    assert history.epochs == [1, 2, 3, 4, 5, 6] and stopper.stopped_epoch == 5


def test_validation_batch_size_and_steps_pick_the_validation_batches():
    x, y = regression(10)
    seen = []
    trainer = recording_trainer(seen)
    history = trainer.fit((x, y), val=(x, y), epochs=1, batch_size=10, validation_batch_size=3, validation_steps=2)
    assert [list(b) for b in seen[1:]] == [[0, 1, 2], [3, 4, 5]]   # after the one training batch
    assert history["val_loss"][0] == pytest.approx(trainer.evaluate((x[:6], y[:6]))["loss"], rel=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"steps_per_epoch": 0}, "steps_per_epoch must be an integer >= 1 or None, got 0"),
    ({"initial_epoch": -1}, "initial_epoch must be an integer >= 0, got -1"),
    ({"validation_freq": 0}, "validation_freq must be an integer >= 1, got 0"),
    ({"validation_steps": 1.5}, "validation_steps must be an integer >= 1 or None, got 1.5"),
    ({"initial_epoch": 2, "resume_from": "checkpoint.safetensors"}, "give either initial_epoch \\(2\\) or resume_from"),
])
def test_bad_epoch_options_are_refused_naming_fit(options, message):
    x, y = regression(10)
    with pytest.raises(ValueError, match=f"Trainer.fit: {message}"):
        recording_trainer([]).fit((x, y), **options)


def weighted_classifier(callbacks=()):
    lamina.manual_seed(0)
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    return Trainer(model, optimizer=optim.Adam(model.parameters(), lr=0.01), callbacks=callbacks, verbose=0,
                   weighted_metrics=("accuracy",))


def test_resuming_mid_pass_with_steps_per_epoch_and_weights_matches_an_unbroken_run(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 4)).astype(np.float32), rng.integers(0, 3, 30)
    w = rng.uniform(0.5, 2.0, 30)
    options = {"batch_size": 4, "seed": 7, "steps_per_epoch": 3, "class_weight": {2: 3.0}}
    unbroken = weighted_classifier()
    unbroken.fit((x, y, w), val=(x, y, w), epochs=5, **options)

    first = weighted_classifier([ModelCheckpoint(tmp_path / "epoch{epoch}.safetensors", monitor="loss")])
    first.fit((x, y, w), val=(x, y, w), epochs=2, **options)
    resumed = weighted_classifier()
    resumed.fit((x, y, w), val=(x, y, w), epochs=5, resume_from=tmp_path / "epoch2.safetensors", **options)
    assert resumed.history.epochs == [1, 2, 3, 4, 5]
    assert resumed.history["loss"] == unbroken.history["loss"]
    assert resumed.history["val_weighted_accuracy"] == unbroken.history["val_weighted_accuracy"]
    for name, value in unbroken.model.state_dict().items():
        np.testing.assert_array_equal(value, resumed.model.state_dict()[name], err_msg=name)
