"""Trainer.fit((x,)) trains on inputs alone: the loss gets None for the labels."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.train import Trainer


def _shrinking_trainer(metrics=()):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(4))
    seen = []

    def energy(out, labels):
        seen.append(labels)
        return F.mean(out * out)

    return Trainer(model, energy, optim.SGD(model, lr=0.1), metrics=metrics, verbose=0), seen


def test_fit_and_evaluate_on_inputs_alone():
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    trainer, seen = _shrinking_trainer()
    history = trainer.fit((x,), epochs=3, batch_size=5)
    assert len(seen) == 12 and all(labels is None for labels in seen)
    assert history["loss"][2] < history["loss"][0]
    assert trainer.evaluate((x,))["loss"] < history["loss"][0]


def test_metrics_on_unlabelled_data_are_refused_by_name():
    x = np.zeros((6, 4), dtype=np.float32)
    trainer, _ = _shrinking_trainer(metrics=("accuracy",))
    with pytest.raises(ValueError, match=r"Trainer.fit: the metrics \(accuracy\) compare outputs with labels.*"
                                         r"metrics=\(\)"):
        trainer.fit((x,), epochs=1)
    with pytest.raises(ValueError, match=r"Trainer.evaluate: the metrics \(accuracy\)"):
        trainer.evaluate((x,))
