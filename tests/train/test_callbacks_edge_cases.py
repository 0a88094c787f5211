"""Edge cases of the fit loop and its callbacks: the direction ``mode='auto'`` gives each
logged metric, callbacks reused for a second fit, resuming after a callback changed the
learning rate under a schedule, a loss that is not finite, log values in checkpoint names,
and predicting on no samples."""

import csv

import numpy as np
import pytest

import lamina
from lamina import keras, nn, optim
from lamina.optim import ReduceOnPlateau
from lamina.train import (
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
    Trainer,
)
from lamina.train.metrics import EPOCH_METRICS, METRICS, get_metric
from lamina.train.weighting import PER_SAMPLE_METRICS, get_weighted_metric

# Keras's direction for each metric lamina logs: up for accuracies, scores, IoU and cosine
# similarity, down for errors and the regression losses.
MAXIMISED = {"accuracy", "binary_accuracy", "top5_accuracy", "precision", "recall", "f1", "auc",
             "average_precision", "r2", "mean_iou", "pixel_accuracy", "mean_class_accuracy", "dice_score",
             "cosine_similarity"}
MINIMISED = {"logcosh", "top1_error", "top5_error", "mae", "mse", "loss"}


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % 3


def classifier(seed=0):
    lamina.manual_seed(seed)
    return nn.Sequential(nn.Dense(3), nn.Softmax())


def test_auto_mode_follows_the_direction_of_every_logged_metric():
    names = {get_metric(m)[0] for m in (*METRICS, *EPOCH_METRICS)}
    weighted = {get_weighted_metric(m)[0] for m in PER_SAMPLE_METRICS}
    assert names | {"mse", "loss"} == MAXIMISED | MINIMISED
    for name in sorted(names | weighted | {"loss"}):
        plain = name.removeprefix("weighted_")
        expected = "max" if plain in MAXIMISED else "min"
        for logged in (name, f"val_{name}"):
            assert EarlyStopping(monitor=logged).mode == expected, logged
            assert ReduceLROnPlateau(monitor=logged).mode == expected, logged
            assert ModelCheckpoint("m.st", monitor=logged).mode == expected, logged
            assert ReduceOnPlateau(monitor=logged, mode="auto").mode == expected, logged
    assert EarlyStopping(monitor="val_f1_micro").mode == "max"


def test_a_reused_early_stopping_starts_afresh():
    x, y = data(40)
    model = classifier()
    stop = EarlyStopping(patience=1, restore_best=True)
    first = Trainer(model, optimizer=optim.SGD(model, lr=0.0), verbose=0, callbacks=[stop])
    assert first.fit((x, y), val=(x, y), epochs=5).epochs == [1, 2]     # no progress at lr 0
    kept = {k: v.copy() for k, v in model.state_dict().items()}
    model.load_state_dict({k: -3 * v for k, v in kept.items()})
    again = Trainer(model, optimizer=optim.SGD(model, lr=1e-3), verbose=0, callbacks=[stop])
    assert again.fit((x, y), val=(x, y), epochs=5).epochs == [1, 2, 3, 4, 5]
    for key, value in kept.items():
        assert not np.array_equal(model.state_dict()[key], value)
    assert stop.stopped_epoch is None and stop.best == pytest.approx(again.history["val_loss"][-1])


@pytest.mark.parametrize("logger", [CSVLogger, keras.callbacks.CSVLogger])
def test_a_reused_csv_logger_writes_a_new_file(tmp_path, logger):
    x, y = data()
    model = classifier()
    log = logger(tmp_path / "log.csv")
    for _ in range(2):
        Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0, callbacks=[log]).fit((x, y), epochs=2)
    with open(tmp_path / "log.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def test_a_reused_fit_resumed_from_a_checkpoint_keeps_the_saved_callback_state(tmp_path):
    x, y = data(40)
    model = classifier()
    stop, log = EarlyStopping(patience=50), CSVLogger(tmp_path / "log.csv")
    callbacks = [stop, log, ModelCheckpoint(tmp_path / "c{epoch}.st")]
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0, callbacks=callbacks)
    trainer.fit((x, y), val=(x, y), epochs=3)
    best = stop.best
    trainer.fit((x, y), val=(x, y), epochs=3, resume_from=tmp_path / "c2.st")
    assert [row["epoch"] for row in log.rows] == [1, 2, 3] and stop.best <= best


def lr_cut_run(directory, resume=None):
    """Three epochs of SGD under an iteration schedule, ReduceLROnPlateau cutting the rate
    after each; returns the model and the learning rate at the start of the last epoch."""
    x, y = data()
    model = classifier()
    opt = optim.SGD(model, lr=0.1)
    rates = []
    callbacks = [ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0),
                 ModelCheckpoint(directory / "ck{epoch}.st"),
                 LambdaCallback(on_epoch_begin=lambda epoch, logs: rates.append(opt.lr))]
    schedule = optim.StepDecay(0.1, 100, per="iteration", optimizer=opt)
    Trainer(model, optimizer=opt, schedule=schedule, verbose=0, callbacks=callbacks).fit(
        (x, y), epochs=3, batch_size=4, shuffle=False, resume_from=resume)
    return model, rates[-1]


def test_a_resumed_fit_keeps_the_rate_a_callback_set_under_a_schedule(tmp_path):
    whole, rate = lr_cut_run(tmp_path)
    resumed, resumed_rate = lr_cut_run(tmp_path, tmp_path / "ck2.st")
    assert rate == resumed_rate == pytest.approx(0.01)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def exploding_fit(callbacks, epochs=3, **options):
    x = (np.random.default_rng(0).normal(size=(16, 4)) * 100).astype(np.float32)
    model = nn.Sequential(nn.Dense(1))
    trainer = Trainer(model, loss="mse", metrics=(), optimizer=optim.SGD(model, lr=1e10), verbose=0,
                      callbacks=callbacks)
    with np.errstate(all="ignore"):
        return trainer, trainer.fit((x, x[:, :1] * 100), val=(x, x[:, :1] * 100), epochs=epochs, batch_size=4,
                                    **options)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_monitors_see_a_validation_loss_when_the_training_loss_is_not_finite(tmp_path):
    stop = EarlyStopping(patience=1)
    cut = ReduceLROnPlateau(patience=1)
    best = ModelCheckpoint(tmp_path / "best.st", save_best_only=True)
    trainer, history = exploding_fit([stop, cut, best])
    assert not np.isfinite(history["loss"]).any() and len(history["val_loss"]) == len(history["loss"])
    assert not np.isfinite(history["val_loss"]).any()
    assert history.epochs == [1] and stop.stopped_epoch == 0        # a NaN is no improvement
    assert trainer.optimizer.lr == pytest.approx(1e9)
    assert not (tmp_path / "best.st").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_terminate_on_nan_still_ends_the_epoch_for_the_callbacks(tmp_path):
    ended = []
    log = CSVLogger(tmp_path / "log.csv")
    _, history = exploding_fit([TerminateOnNaN(), log, LambdaCallback(on_epoch_end=lambda e, l: ended.append(e))])
    assert history.epochs == [1] and ended == [0] and [row["epoch"] for row in log.rows] == [1]
    assert "val_loss" in log.rows[0]


def test_checkpoint_names_take_logged_values(tmp_path):
    x, y = data()
    model = classifier()
    callback = ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.st")
    history = Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0, callbacks=[callback]).fit(
        (x, y), val=(x, y), epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"m-{e + 1:02d}-{history['val_loss'][e]:.3f}.st" for e in range(2)]
    missing = ModelCheckpoint(tmp_path / "m-{val_los:.3f}.st")
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0, callbacks=[missing])
    with pytest.raises(KeyError, match=r"'val_los', which is not logged at epoch 1; logged: .*'val_loss'"):
        trainer.fit((x, y), val=(x, y), epochs=1)


def test_keras_checkpoint_names_take_logged_values(tmp_path):
    x, y = data()
    lamina.manual_seed(0)
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,))])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y), callbacks=[
        keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.keras"))])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"m-{e + 1:02d}-{history.history['val_loss'][e]:.3f}.keras" for e in range(2)]
    with pytest.raises(KeyError, match=r"ModelCheckpoint: the path .* names 'val_los', which is not logged"):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[
            keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{val_los:.3f}.keras"))])


class RefusesNoSamples(nn.Module):
    """A classifier whose forward pass needs at least one sample."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(3)

    def forward(self, x):
        if x.shape[0] == 0:
            raise ValueError("no samples")
        return self.dense(x)


@pytest.mark.parametrize("make", [classifier, RefusesNoSamples])
def test_predict_on_no_samples_has_the_output_shape(make):
    model = make()
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0)
    out = trainer.predict(np.zeros((0, 4), np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32
    assert trainer.predict(np.ones((2, 4), np.float32)).shape == (2, 3)
