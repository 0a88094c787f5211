"""The focal losses by name in the Trainer: a real fit on the digits and on breast cancer."""

import numpy as np
from sklearn.datasets import load_breast_cancer

import lamina
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train import Trainer


def test_categorical_focal_trains_a_digit_classifier():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    (xt, yt), (xv, yv), _ = train_val_test_split(x, y, val=0.2, test=0.0, seed=0)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10), nn.Softmax())
    trainer = Trainer(model, "categorical_focal", optim.Adam(model, lr=3e-3), verbose=0)
    history = trainer.fit((xt, yt), val=(xv, yv), epochs=8, batch_size=32, seed=0)
    assert trainer.loss_name == "categorical_focal"
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert trainer.evaluate((xv, yv))["accuracy"] > 0.9


def test_binary_focal_trains_a_tumour_classifier():
    data = load_breast_cancer()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    (xt, yt), (xv, yv), _ = train_val_test_split(x, data.target, val=0.25, test=0.0, seed=0)
    yt, yv = yt.astype(np.float32)[:, None], yv.astype(np.float32)[:, None]
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(1, activation="sigmoid"))
    trainer = Trainer(model, "binary_focal", optim.Adam(model, lr=1e-2), verbose=0)
    trainer.fit((xt, yt), epochs=15, batch_size=32, seed=0)
    assert trainer.evaluate((xv, yv))["accuracy"] > 0.93
