"""Reducing the learning rate on a plateau of any logged quantity from fit: the schedule
ReduceOnPlateau (PyTorch's rules, checked against torch) and the callback ReduceLROnPlateau
(Keras's rules)."""

import numpy as np
import pytest
import torch

import lamina
from lamina import nn, optim
from lamina.train import LambdaCallback, ReduceLROnPlateau, Trainer
from lamina.train.epoch_metric import EpochMetric


class Scripted(EpochMetric):
    """A metric whose value at epoch e (counted from 0) is script[e] on the validation data
    and -e on the training data (a plateau only the val_ quantity has)."""

    def __init__(self, name, script):
        self.name, self.script, self.trainer = name, script, None

    def reset(self):
        pass

    def update(self, scores, y_true):
        return 0.0

    def result(self):
        epoch = self.trainer.epoch
        return -float(epoch) if self.trainer.model.training else float(self.script[epoch])


def scripted_fit(name, script, lr=0.1, schedule=None, callbacks=(), **fit_options):
    """Fit for len(script) epochs; returns the learning rate after each epoch."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    optimizer = optim.SGD(model, lr=lr)
    if schedule is not None:
        schedule.attach(optimizer)
    metric = Scripted(name, script)
    rates = []
    recorder = LambdaCallback(on_epoch_end=lambda epoch, logs: rates.append(optimizer.lr))
    trainer = Trainer(model, "mse", optimizer, metrics=(metric,), schedule=schedule,
                      callbacks=[*callbacks, recorder], verbose=0)
    metric.trainer = trainer
    trainer.fit((x, y), val=(x, y), epochs=len(script), batch_size=8, **fit_options)
    return rates


def torch_rates(values, lr=0.1, **options):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
    rates = []
    for value in values:
        schedule.step(value)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


SCRIPT = [0.5, 0.6, 0.6, 0.61, 0.6, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8]


@pytest.mark.parametrize("validation_freq", [1, 2])
def test_reduce_on_plateau_steps_on_the_monitored_val_quantity_as_torch(validation_freq):
    options = {"factor": 0.5, "patience": 1, "threshold": 0.05, "cooldown": 1}
    schedule = lamina.optim.ReduceOnPlateau(monitor="val_accuracy", mode="auto", **options)
    assert schedule.mode == "max"
    rates = scripted_fit("accuracy", SCRIPT, schedule=schedule, validation_freq=validation_freq)
    validated = SCRIPT[validation_freq - 1::validation_freq]
    expected = torch_rates(validated, mode="max", **options)
    assert rates[validation_freq - 1::validation_freq] == pytest.approx(expected)
    assert min(expected) < 0.1                     # the script does reach a plateau


def test_reduce_on_plateau_without_a_monitor_watches_the_loss_when_nothing_is_validated():
    schedule = lamina.optim.ReduceOnPlateau(factor=0.5, patience=0, threshold=0.5)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    optimizer = optim.SGD(model, lr=0.01)
    schedule.attach(optimizer)
    trainer = Trainer(model, "mse", optimizer, metrics=(), schedule=schedule, verbose=0)
    history = trainer.fit((x, y), epochs=3, batch_size=8)
    expected = torch_rates(history["loss"], lr=0.01, factor=0.5, patience=0, threshold=0.5)
    assert optimizer.lr == pytest.approx(expected[-1]) and expected[-1] < 0.01


def test_reduce_on_plateau_monitoring_a_quantity_never_logged_is_refused():
    schedule = lamina.optim.ReduceOnPlateau(monitor="val_f1")
    with pytest.raises(KeyError, match="monitors 'val_f1', which is not logged"):
        scripted_fit("accuracy", [0.5, 0.5], schedule=schedule)


def test_reduce_lr_on_plateau_callback_follows_keras_patience_cooldown_min_delta_and_min_lr():
    # Keras's rules by hand, lr 0.1, patience 2, factor 0.5, min_delta 0.05, cooldown 2, min_lr 0.03:
    # e0 best 1.0; e1, e2 not 0.05 better: wait 1, 2 -> lr 0.05, cooldown 2; e3 cooldown 2 -> 1,
    # no counting; e4 cooldown 1 -> 0, then wait 1; e5 best 0.5; e6, e7 wait 1, 2 -> lr
    # max(0.025, 0.03) = 0.03; e8 cooldown; e9 cooldown over, wait 1; e10 wait 2: lr is min_lr already.
    script = [1.0, 0.98, 0.97, 0.96, 0.99, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    callback = ReduceLROnPlateau(monitor="val_score", factor=0.5, patience=2, min_delta=0.05, cooldown=2,
                                 min_lr=0.03)
    rates = scripted_fit("score", script, callbacks=[callback])
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.03, 0.03, 0.03, 0.03])


def test_reduce_lr_on_plateau_counts_validated_epochs_only_and_maximises_accuracies():
    assert ReduceLROnPlateau(monitor="val_accuracy").mode == "max"
    assert ReduceLROnPlateau(monitor="val_loss").mode == "min"
    # Validated epochs 2, 4, 6, 8 (0-based 1, 3, 5, 7) see 0.5, 0.5, 0.5, 0.9: patience 2 ends at epoch 6.
    script = [0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0, 0.9]
    callback = ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=2)
    rates = scripted_fit("accuracy", script, callbacks=[callback], validation_freq=2)
    assert rates == pytest.approx([0.1] * 5 + [0.01] * 3)


def test_reduce_lr_on_plateau_state_is_kept_by_a_checkpoint():
    callback = ReduceLROnPlateau(patience=3)
    callback.best, callback.wait, callback.cooldown_counter = 0.25, 2, 1
    other = ReduceLROnPlateau(patience=3)
    other.load_state_dict(callback.state_dict())
    assert (other.best, other.wait, other.cooldown_counter) == (0.25, 2, 1)


@pytest.mark.parametrize("options, message", [({"factor": 1.0}, "factor must be in"),
                                              ({"patience": -1}, "patience must be"),
                                              ({"mode": "up"}, "mode must be")])
def test_bad_reduce_lr_on_plateau_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ReduceLROnPlateau(**options)
