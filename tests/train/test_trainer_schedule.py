"""A schedule given to the Trainer without an optimizer drives the Trainer's optimizer."""

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import LambdaCallback, Trainer


def _fit(schedule, epochs=3, lr=0.1, optimizer=None):
    """Fit a one-layer model for ``epochs`` epochs of two mini-batches; returns the optimizer and
    its learning rate after each epoch."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(2))
    model.build((None, 4))
    optimizer = optimizer or optim.SGD(model, lr=lr)
    rates = []
    recorder = LambdaCallback(on_epoch_end=lambda epoch, logs: rates.append(optimizer.lr))
    Trainer(model, "mse", optimizer, metrics=(), schedule=schedule, callbacks=[recorder], verbose=0).fit(
        (x, y), epochs=epochs, batch_size=8, shuffle=False)
    return optimizer, rates


def test_an_unattached_epoch_schedule_drives_the_trainers_optimizer():
    schedule = optim.StepDecay(0.1, step_size=1, gamma=0.5, per="epoch")
    optimizer, rates = _fit(schedule)
    assert schedule.optimizer is optimizer
    assert rates == pytest.approx([0.05, 0.025, 0.0125])


def test_an_unattached_iteration_schedule_takes_its_rate_at_once_and_steps_per_batch():
    schedule = optim.schedules.ExponentialDecay(0.2, k=np.log(2.0), per="iteration")
    optimizer, rates = _fit(schedule, epochs=2, lr=0.01)
    assert rates == pytest.approx([0.2 / 4, 0.2 / 16])


def test_an_unattached_plateau_schedule_is_attached_too():
    schedule = optim.ReduceOnPlateau(factor=0.5, patience=0, monitor="loss", mode="max")
    _, rates = _fit(schedule, epochs=3)               # the loss falls: every epoch is a bad one in max mode
    assert rates == pytest.approx([0.1, 0.05, 0.025])


def test_a_schedule_attached_beforehand_keeps_its_optimizer():
    rng = np.random.default_rng(1)
    other = optim.SGD([lamina.tensor(rng.standard_normal(3), requires_grad=True)], lr=1.0)
    schedule = optim.StepDecay(0.1, step_size=1, gamma=0.5, per="epoch", optimizer=other)
    optimizer, rates = _fit(schedule, lr=0.3)
    assert schedule.optimizer is other and rates == [0.3, 0.3, 0.3]
    assert other.lr == pytest.approx(0.0125)


def test_a_schedule_without_attach_and_without_an_optimizer_is_refused():
    class Fixed:
        per, optimizer = "epoch", None

        def step(self):
            pass

    model = nn.Sequential(nn.Dense(2))
    with pytest.raises(TypeError, match=r"Trainer: the schedule Fixed drives no optimizer"):
        Trainer(model, "mse", optim.SGD(model, lr=0.1), schedule=Fixed(), verbose=0)
