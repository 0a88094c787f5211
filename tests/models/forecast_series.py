"""Shared checks of the forecasters' tests: float64 gradients of a tiny model, its save/load
round trip, and for learning, a series cut into train and test windows, a short Adam run on the
squared error and the test MAE."""

import numpy as np

import lamina
from helpers import check_gradients, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import TimeSeriesDataset
from lamina.train import mae


def check_tiny_model_gradients(model, x) -> bool:
    """The float64 gradient check of ``model(x)`` with respect to ``x`` and every parameter, each
    parameter moved off its initial value (no 0 or 1 left) by 0.1 standard normal noise."""
    model.to(dtype=np.float64)
    model.eval()
    parameters = dict(model.named_parameters())
    keys = list(parameters)
    arrays = [np.asarray(parameters[key].numpy(), dtype=np.float64) + 0.1 * randn(*parameters[key].shape, seed=i)
              for i, key in enumerate(keys)]

    def function(inputs, *params):
        return nn.functional_call(model, dict(zip(keys, params)), inputs)

    return check_gradients(function, x, *arrays)


def saved_and_loaded_outputs(model, x, path):
    """``model``'s evaluation outputs on ``x`` after checking that the model saved to ``path`` and
    loaded gives the same outputs, type and config."""
    model.eval()
    lamina.save(model, path)
    loaded = lamina.load(path)
    loaded.eval()
    with lamina.no_grad():
        y = model(x).numpy()
        np.testing.assert_array_equal(loaded(x).numpy(), y)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    return y


def forecast_windows(series, input_length, horizon):
    """(x, y, x_test, y_test): the windows of the first 70% and the last 20% of ``series``."""
    data = TimeSeriesDataset(series, input_length, horizon, splits=(0.7, 0.1))
    return (*data.windows("train"), *data.windows("test"))


def train_forecaster(model, x, y, steps, lr, batch=32):
    """``steps`` Adam steps on the mean squared error of random batches of ``batch`` windows;
    returns the model in evaluation mode."""
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        rows = rng.choice(len(x), batch, replace=False)
        loss = F.mean(F.square(model(x[rows]) - y[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def forecast_mae(model, x_test, y_test):
    """The model's mean absolute error on the test windows."""
    with lamina.no_grad():
        return mae(y_test, model(x_test).numpy())
