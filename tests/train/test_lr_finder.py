import numpy as np
import pytest

import lamina
from lamina import backend, nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.optim.schedules import CosineDecay
from lamina.train import LRFinderResult, Trainer, find_learning_rate


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    train, val, _ = train_val_test_split(x, y, val=0.2, test=0.0, seed=0)
    return train, val


def mlp(dropout: float = 0.0):
    lamina.manual_seed(0)
    layers = [nn.Dense(64, activation="relu")]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Dense(10, activation="softmax"))


def trainer_for(model, lr=0.1, schedule=None):
    opt = optim.SGD(model, lr=lr, momentum=0.9)
    return Trainer(model, "categorical_cross_entropy", opt, metrics=(), verbose=0, schedule=schedule)


def snapshot(model):
    return {k: np.array(backend.to_numpy(v)) for k, v in model.state_dict().items()}


def test_rates_grow_geometrically_and_the_cost_is_the_bias_corrected_average(digits):
    result = find_learning_rate(trainer_for(mlp()), digits[0], start=1e-5, end=10.0, iterations=60, seed=0)
    k = np.arange(len(result.learning_rates))
    np.testing.assert_allclose(result.learning_rates, 1e-5 * (10.0 / 1e-5) ** (k / 59), rtol=1e-12)
    expected, v = [], 0.0
    for t, loss in enumerate(result.losses, start=1):
        v = 0.98 * v + 0.02 * loss
        expected.append(v / (1 - 0.98**t))
    np.testing.assert_allclose(result.smoothed, expected, rtol=1e-10)
    assert result.losses[0] == pytest.approx(np.log(10), rel=0.2)    # near chance at the start


def test_a_learning_rate_far_too_large_stops_the_run(digits):
    result = find_learning_rate(trainer_for(mlp()), digits[0], start=1e-5, end=1e3, iterations=100, seed=0)
    assert result.diverged
    assert len(result.losses) < 100
    assert result.smoothed[-1] > 4 * result.smoothed.min() or not np.isfinite(result.smoothed[-1])
    assert result.learning_rates[-1] > result.min_loss_lr


def test_nothing_changes_model_optimizer_schedule_or_random_state(digits):
    model = mlp(dropout=0.3)
    schedule_opt = optim.SGD(model, lr=0.05, momentum=0.9)
    schedule = CosineDecay(0.05, 50, per="iteration", optimizer=schedule_opt)
    trainer = Trainer(model, "categorical_cross_entropy", schedule_opt, metrics=(), verbose=0, schedule=schedule)
    trainer.fit(digits[0], epochs=1, batch_size=64, seed=1)        # momentum buffers and a moved schedule
    weights, state, lr = snapshot(model), schedule_opt.state_dict(), schedule_opt.lr
    schedule_state = schedule.state_dict()
    rng = backend.get_rng_state()
    model.eval()
    find_learning_rate(trainer, digits[0], start=1e-4, end=1.0, iterations=30, seed=0)
    assert not model.training
    for name, value in snapshot(model).items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)
    after = schedule_opt.state_dict()
    assert schedule_opt.lr == lr and after["param_groups"] == state["param_groups"]
    for i, entry in state["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][i][key], value)
    assert trainer.schedule is schedule and schedule.state_dict() == schedule_state
    assert backend.get_rng_state() == rng


def test_the_suggestion_trains_far_better_than_the_ends_of_the_range(digits):
    (x, y), (xv, yv) = digits
    result = find_learning_rate(trainer_for(mlp()), (x, y), start=1e-6, end=10.0, iterations=100, seed=0)
    assert 1e-4 < result.suggestion < result.min_loss_lr <= 10.0

    def accuracy_after_one_epoch(lr):
        model = mlp()
        trainer = trainer_for(model, lr=lr)
        trainer.fit((x, y), epochs=1, batch_size=32, seed=0)
        return float((trainer.predict(xv).argmax(axis=1) == yv).mean())

    suggested = accuracy_after_one_epoch(result.suggestion)
    assert suggested > 0.8
    assert suggested > accuracy_after_one_epoch(1e-6) + 0.5
    assert suggested > accuracy_after_one_epoch(10.0) + 0.5


def test_plot_writes_a_png(tmp_path, digits):
    result = find_learning_rate(trainer_for(mlp()), digits[0], start=1e-5, end=10.0, iterations=40, seed=0)
    path = result.plot(tmp_path / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "suggestion=" in repr(result)


def test_suggestion_on_a_known_curve():
    rates = np.logspace(-5, 0, 11)
    smoothed = np.array([2.3, 2.3, 2.29, 2.2, 1.6, 0.9, 0.6, 0.5, 0.55, 1.5, 9.0])
    result = LRFinderResult(rates, smoothed, smoothed, diverged=True)
    slope = np.gradient(smoothed[:8], np.log(rates[:8]))
    assert result.suggestion == rates[int(np.argmin(slope))] == rates[4]
    assert result.min_loss_lr == rates[7]


@pytest.mark.parametrize("kwargs, words", [
    ({"start": 1.0, "end": 0.1}, "start must be below end"),
    ({"start": 0.0}, "start must be a positive"),
    ({"iterations": 1}, "iterations must be an integer >= 2"),
    ({"beta": 1.0}, "beta must lie in [0, 1)"),
    ({"diverge": 1.0}, "diverge must be a number > 1"),
])
def test_bad_arguments(digits, kwargs, words):
    with pytest.raises(ValueError, match="find_learning_rate") as info:
        find_learning_rate(trainer_for(mlp()), digits[0], **kwargs)
    assert words in str(info.value)
