"""fit on data that can be read only once (a generator): the check of the first batch before
training must not use it up."""

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.data import DataLoader
from lamina.train import LambdaCallback, Trainer


def trainer_recording(seen):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))

    def labels(scores, y):
        seen.extend(np.asarray(y)[:, 0].astype(int).tolist())
        return 0.0

    return Trainer(model, "mse", optim.SGD(model, lr=0.01), metrics=(labels,), verbose=0)


def samples(n):
    """A generator of (x, y) samples whose label is the sample's index: readable once."""
    rng = np.random.default_rng(0)
    for i in range(n):
        yield rng.standard_normal(3).astype(np.float32), np.array([i], np.float32)


@pytest.mark.parametrize("as_loader", [False, True], ids=["generator", "loader-of-generator"])
def test_a_one_pass_generator_is_trained_on_whole(as_loader):
    seen = []
    trainer = trainer_recording(seen)
    data = DataLoader(samples(10), batch_size=4) if as_loader else samples(10)
    trainer.fit(data, epochs=1, batch_size=4)
    assert seen == list(range(10))
    assert trainer.iteration == 3


def test_the_first_batch_is_still_checked():
    def bad():
        yield np.array([np.nan, 0, 0], np.float32), np.array([0.0], np.float32)

    seen = []
    with pytest.raises(ValueError, match="NaN or infinity"):
        trainer_recording(seen).fit(bad(), epochs=1, batch_size=4)


def test_a_one_pass_generator_with_steps_per_epoch_is_spread_over_the_epochs():
    seen, per_epoch = [], []
    trainer = trainer_recording(seen)
    trainer.callbacks.append(LambdaCallback(on_epoch_end=lambda epoch, logs: per_epoch.append(len(seen))))
    for cb in trainer.callbacks:
        cb.set_trainer(trainer)
    with pytest.warns(RuntimeWarning, match="ran out of batches at epoch 4"):
        trainer.fit(samples(10), epochs=5, batch_size=2, steps_per_epoch=2)
    assert seen == list(range(10)) and per_epoch == [4, 8, 10]


def test_an_empty_stream_trains_on_nothing():
    seen = []
    trainer = trainer_recording(seen)
    trainer.fit(samples(0), epochs=1, batch_size=4)
    assert seen == [] and trainer.iteration == 0
