"""Callbacks across a resumed fit (their state is in the training checkpoint) and when fit
is left by an exception (each callback's ``on_exception`` runs before the error propagates)."""

import csv

import numpy as np
import pytest

import lamina
from lamina import models, optim
from lamina.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    ProgressBar,
    TensorBoard,
    Trainer,
    WeightAveraging,
)
from lamina.train import checkpoint as ckpt


def blobs(n=120, seed=0):
    """Three Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((3, 4))[y] * 3 + rng.standard_normal((n, 4))).astype(np.float32)
    return x, y


def stateful_callbacks(directory):
    # ModelCheckpoint first: the file must still hold the later callbacks' state after this epoch.
    return [ModelCheckpoint(directory / "ckpt-{epoch}.safetensors"),
            WeightAveraging(decay=None, start_epoch=1),
            EarlyStopping("val_loss", patience=50, restore_best=False),
            CSVLogger(directory / "log.csv")]


def run(directory, epochs, resume_epoch=None):
    """Train with SGD; with ``resume_epoch`` k, a fresh trainer continues from the k-th checkpoint
    of a run made earlier in ``directory``. Returns the trainer and its callbacks."""
    lamina.manual_seed(3)
    x, y = blobs()
    model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
    callbacks = stateful_callbacks(directory)
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                      callbacks=callbacks, verbose=0)
    resume = None if resume_epoch is None else directory / f"ckpt-{resume_epoch}.safetensors"
    trainer.fit((x[:90], y[:90]), val=(x[90:], y[90:]), epochs=epochs, batch_size=16, seed=0, resume_from=resume)
    return trainer, callbacks


def csv_rows(path):
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k != "samples_per_s"} for row in csv.DictReader(handle)]


def test_a_resumed_fit_carries_on_the_averages_the_patience_and_the_log(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, full_callbacks = run(tmp_path / "a", epochs=5)
    run(tmp_path / "b", epochs=2)
    resumed, resumed_callbacks = run(tmp_path / "b", epochs=5, resume_epoch=2)

    # The weights after the swap are the average of epochs 1..4: equal only if the average went on.
    for key, value in full.model.state_dict().items():
        np.testing.assert_array_equal(value, resumed.model.state_dict()[key], err_msg=key)
    assert full_callbacks[1].averaged.n_averaged == resumed_callbacks[1].averaged.n_averaged == 4
    assert resumed_callbacks[2].best == full_callbacks[2].best
    assert resumed_callbacks[2].wait == full_callbacks[2].wait
    rows = csv_rows(tmp_path / "b" / "log.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert rows == csv_rows(tmp_path / "a" / "log.csv")


def test_the_checkpoint_holds_the_state_of_callbacks_listed_after_model_checkpoint(tmp_path):
    _, callbacks = run(tmp_path, epochs=2)
    _, state = ckpt.read(tmp_path / "ckpt-2.safetensors")
    saved = {entry["class"]: entry["state"] for entry in state["callbacks"]}
    assert saved["WeightAveraging"]["averaged"]["n_averaged"] == 1  # epoch 1 (counted from 0) entered
    assert len(saved["CSVLogger"]["rows"]) == 2
    assert saved["EarlyStopping"]["best"] == callbacks[2].best
    assert saved["ProgressBar"] is None


def test_callbacks_added_since_the_checkpoint_start_fresh(tmp_path):
    run(tmp_path, epochs=2)
    lamina.manual_seed(3)
    x, y = blobs()
    model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
    stopper = EarlyStopping("loss", patience=50)
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.05),
                      callbacks=[stopper], verbose=0)
    trainer.fit((x[:90], y[:90]), epochs=3, batch_size=16, seed=0, resume_from=tmp_path / "ckpt-2.safetensors")
    # The saved list was [ProgressBar, ModelCheckpoint, ...]: no EarlyStopping at position 1.
    assert stopper.wait == 0 and len(trainer.history["loss"]) == 3


class Explodes(Callback):
    def __init__(self, at_iteration, error):
        self.at_iteration, self.error = at_iteration, error

    def on_batch_end(self, iteration, logs):
        if iteration == self.at_iteration:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_in_fit_closes_tensorboard_and_the_progress_bar_and_propagates(tmp_path, error):
    x, y = blobs()
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    seen, ended = [], []
    board = TensorBoard(tmp_path / "logs", update_freq="batch")
    bar = ProgressBar(verbose=1, force=True)
    told = LambdaCallback(on_exception=seen.append, on_train_end=ended.append)
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.05),
                      callbacks=[bar, board, told, Explodes(3, error)], verbose=0)
    with pytest.raises(type(error)):
        trainer.fit((x, y), epochs=2, batch_size=16)
    assert seen == [error] and ended == []
    assert bar.bar is None
    writers = list((tmp_path / "logs" / "train").iterdir())
    assert len(writers) == 1 and board._writers == {}
    again = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.05),
                    callbacks=[board], verbose=0)
    again.fit((x, y), epochs=1, batch_size=16)  # a later fit opens a new file
    assert len(list((tmp_path / "logs" / "train").iterdir())) == 2


def test_a_callback_failing_in_on_exception_does_not_hide_the_training_error():
    x, y = blobs()
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))

    def broken(error):
        raise ValueError("cleanup failed")

    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.05),
                      callbacks=[LambdaCallback(on_exception=broken), Explodes(2, RuntimeError("boom"))], verbose=0)
    with pytest.raises(RuntimeError, match="boom") as raised:
        trainer.fit((x, y), epochs=1, batch_size=16)
    assert any("LambdaCallback.on_exception also failed" in note and "cleanup failed" in note
               for note in raised.value.__notes__)
