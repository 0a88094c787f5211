import csv
import math

import numpy as np
import pytest
from scipy import stats

import lamina
from lamina import models, nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train.search import SearchResult, coarse_to_fine, grid_search, random_search, tune_trainer
from lamina.train.search_space import Choice, IntUniform, LogUniform, Uniform, sample_config
from lamina.train.trainer import Trainer

N = 20_000
BINOMIAL_SD = math.sqrt(0.25 / N)  # standard deviation of a fraction with p = 1/2 over N draws


def draws(distribution, n=N, seed=0):
    rng = np.random.default_rng(seed)
    return [distribution.sample(rng) for _ in range(n)]


def log_distance_objective(config):
    """Peaks at lr = 10^-2.5: minus the squared distance in decades."""
    return -(math.log10(config["lr"]) + 2.5) ** 2


# -- distributions -------------------------------------------------------------
def test_log_uniform_gives_every_decade_the_same_share():
    values = np.array(draws(LogUniform(1e-4, 1.0)))
    assert values.min() >= 1e-4 and values.max() <= 1.0
    assert abs(np.mean(values < 1e-2) - 0.5) < 5 * BINOMIAL_SD  # below the geometric midpoint
    for decade in range(-4, 0):
        share = np.mean((values >= 10.0**decade) & (values < 10.0 ** (decade + 1)))
        assert abs(share - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N)
    assert stats.kstest(values, stats.loguniform(1e-4, 1.0).cdf).pvalue > 1e-3
    # a linear draw on the same range almost never goes below the geometric midpoint
    assert np.mean(np.array(draws(Uniform(1e-4, 1.0))) < 1e-2) < 0.02


def test_uniform_matches_scipy_uniform():
    values = draws(Uniform(-2.0, 3.0))
    assert min(values) >= -2.0 and max(values) <= 3.0
    assert stats.kstest(values, stats.uniform(-2.0, 5.0).cdf).pvalue > 1e-3


def test_int_uniform_covers_both_ends_evenly():
    values = np.array(draws(IntUniform(2, 5), n=8000))
    assert all(isinstance(v, int) for v in values.tolist())
    counts = np.bincount(values, minlength=6)[2:]
    assert values.min() == 2 and values.max() == 5
    assert stats.chisquare(counts).pvalue > 1e-3
    assert draws(IntUniform(7, 7), n=5) == [7] * 5


def test_choice_frequencies_and_original_objects():
    options = ["sgd", (64, 32), None]
    values = draws(Choice(options), n=9000)
    counts = [sum(v == o for v in values) for o in options]
    assert stats.chisquare(counts).pvalue > 1e-3
    assert any(v is options[1] for v in values)


def test_reprs_are_readable():
    assert repr(LogUniform(1e-05, 1.0)) == "LogUniform(low=1e-05, high=1.0)"
    assert repr(Choice(["a", "b"])) == "Choice(options=('a', 'b'))"


@pytest.mark.parametrize("make, words", [
    (lambda: LogUniform(0.0, 1.0), "0 < low < high"),
    (lambda: LogUniform(1.0, 0.1), "0 < low < high"),
    (lambda: Uniform(1.0, 1.0), "low < high"),
    (lambda: Uniform(0.0, math.inf), "finite"),
    (lambda: IntUniform(1.5, 3), "integer"),
    (lambda: IntUniform(4, 3), "low <= high"),
    (lambda: Choice([]), "non-empty"),
    (lambda: Choice("abc"), "non-empty list"),
])
def test_bad_distributions_raise(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_sample_config_keeps_constants_and_reads_lists_as_choices():
    space = {"lr": LogUniform(1e-3, 1e-1), "hidden": (64, 32), "act": ["relu", "tanh"], "epochs": 3}
    config = sample_config(space, np.random.default_rng(1))
    assert list(config) == list(space)
    assert config["hidden"] == (64, 32) and config["epochs"] == 3 and config["act"] in ("relu", "tanh")
    assert 1e-3 <= config["lr"] <= 1e-1


# -- random search -------------------------------------------------------------
def recorded_configs(seed):
    seen = []
    space = {"lr": LogUniform(1e-5, 1.0), "units": IntUniform(8, 64), "opt": Choice(["sgd", "adam"])}
    random_search(lambda c: seen.append(c) or 0.0, space, trials=6, seed=seed)
    return seen


def test_random_search_is_reproducible_with_a_seed():
    assert recorded_configs(3) == recorded_configs(3)
    assert recorded_configs(3) != recorded_configs(4)


def test_random_search_finds_the_peak_on_a_log_scale():
    result = random_search(log_distance_objective, {"lr": LogUniform(1e-5, 1.0)}, trials=60, seed=0)
    assert len(result.trials) == 60 and [t.index for t in result.trials] == list(range(60))
    best_lr = result.best_config["lr"]
    assert 10**-2.5 / 3 < best_lr < 10**-2.5 * 3
    assert result.best.score == max(t.score for t in result.trials)
    assert result.best.score > log_distance_objective({"lr": 1e-5})
    scores = [t.score for t in result.ranked()]
    assert scores == sorted(scores, reverse=True)


def test_minimize_direction():
    def distance(config):
        return (math.log10(config["lr"]) + 2.5) ** 2

    result = random_search(distance, {"lr": LogUniform(1e-5, 1.0)}, trials=60, seed=0, direction="minimize")
    assert result.best.score == min(t.score for t in result.trials)
    assert 10**-2.5 / 3 < result.best_config["lr"] < 10**-2.5 * 3
    assert str(result).splitlines()[1].split()[2] == f"{result.best.score:.4g}"


def test_failed_trials_are_recorded_and_the_search_goes_on():
    def objective(config):
        if config["x"] > 0.7:
            raise RuntimeError(f"too big: {config['x']:.2f}")
        if config["x"] < 0.3:
            return {"score": math.nan, "loss": 5.0}
        return {"score": config["x"], "loss": 1.0 - config["x"]}

    seen = []
    result = random_search(objective, {"x": Uniform(0.0, 1.0)}, trials=30, seed=0, callback=seen.append)
    assert seen == result.trials and len(result.trials) == 30
    raised = [t for t in result.trials if t.config["x"] > 0.7]
    nans = [t for t in result.trials if t.config["x"] < 0.3]
    assert raised and nans
    assert all(not t.ok and "RuntimeError: too big" in t.error and math.isnan(t.score) for t in raised)
    assert all(not t.ok and "non-finite" in t.error for t in nans)
    good = [t for t in result.trials if t.ok]
    assert len(good) == 30 - len(raised) - len(nans)
    assert result.best.config["x"] == max(t.config["x"] for t in good) <= 0.7
    assert result.best.metrics["loss"] == pytest.approx(1.0 - result.best.config["x"])
    assert result.ranked()[-1].ok is False and "error" in result.table().splitlines()[0]


def test_all_failed_raises_with_the_messages():
    def objective(config):
        raise ValueError("the model cannot be built")

    with pytest.raises(RuntimeError, match="all 4 trials failed: ValueError: the model cannot be built"):
        random_search(objective, {"x": Uniform(0.0, 1.0)}, trials=4)
    with pytest.raises(RuntimeError, match="without a 'score' key"):
        random_search(lambda c: {"accuracy": 1.0}, {"x": Uniform(0.0, 1.0)}, trials=2)


def test_bad_arguments_raise():
    space = {"x": Uniform(0.0, 1.0)}
    with pytest.raises(ValueError, match="random_search: trials must be a positive integer"):
        random_search(lambda c: 0.0, space, trials=0)
    with pytest.raises(ValueError, match="direction must be one of"):
        random_search(lambda c: 0.0, space, trials=2, direction="max")
    with pytest.raises(ValueError, match="must be a dict"):
        random_search(lambda c: 0.0, [("x", 1)], trials=2)
    with pytest.raises(ValueError, match="cannot be enumerated"):
        grid_search(lambda c: 0.0, space)


# -- grid search and coarse to fine --------------------------------------------
def test_grid_search_visits_the_cartesian_product_in_order():
    seen = []
    grid = {"a": [1, 2], "b": Choice(["x", "y", "z"]), "c": 5}
    result = grid_search(lambda c: seen.append(c) or c["a"] * 10 + "xyz".index(c["b"]), grid)
    expected = [{"a": a, "b": b, "c": 5} for a in (1, 2) for b in "xyz"]
    assert seen == expected and [t.config for t in result.trials] == expected
    assert result.best_config == {"a": 2, "b": "z", "c": 5}


def test_coarse_to_fine_zooms_around_the_best():
    space = {"lr": LogUniform(1e-5, 1.0), "opt": Choice(["sgd", "adam"])}
    result = coarse_to_fine(log_distance_objective, space, trials=15, rounds=2, shrink=0.25, seed=0)
    assert [t.stage for t in result.trials] == [0] * 15 + [1] * 15
    coarse_best = SearchResult(result.trials[:15]).best.config["lr"]
    fine = result.spaces[1]["lr"]
    assert math.log10(fine.high / fine.low) == pytest.approx(0.25 * 5)
    assert fine.low < coarse_best < fine.high and fine.low >= 1e-5 * (1 - 1e-9) and fine.high <= 1.0
    assert result.spaces[1]["opt"] == space["opt"]
    assert all(fine.low <= t.config["lr"] <= fine.high for t in result.trials[15:])
    assert abs(math.log10(result.best_config["lr"]) + 2.5) < math.log10(1.5)
    assert "stage" in result.table().splitlines()[0]


# -- CSV -------------------------------------------------------------------------
def test_csv_is_written_atomically_and_parses(tmp_path):
    path = tmp_path / "runs" / "search.csv"

    def objective(config):
        if config["units"] == 3:
            raise ValueError("three units, no")
        return {"score": config["lr"] * config["units"], "loss": 1.0 / config["units"]}

    space = {"lr": LogUniform(1e-3, 1.0), "units": IntUniform(1, 4), "act": "relu"}
    result = random_search(objective, space, trials=12, seed=2, csv_path=path)
    rows = list(csv.DictReader(path.open()))
    assert [p.name for p in path.parent.iterdir()] == ["search.csv"]
    assert list(rows[0]) == ["trial", "lr", "units", "act", "score", "loss", "seconds", "error"]
    assert len(rows) == 12
    for row, trial in zip(rows, result.trials, strict=True):
        assert int(row["trial"]) == trial.index and float(row["lr"]) == trial.config["lr"]
        assert int(row["units"]) == trial.config["units"] and row["act"] == "relu"
        if trial.ok:
            assert float(row["score"]) == trial.score and row["error"] == ""
        else:
            assert math.isnan(float(row["score"])) and row["error"] == "ValueError: three units, no"


# -- tuning a real training run --------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    return train_val_test_split(x, y, val=0.2, test=0.2, seed=0)


def build_mlp(config):
    model = models.mlp(hidden=(32,), num_classes=10, input_shape=(64,))
    return model, optim.SGD(model.parameters(), lr=config["lr"])


def test_tune_trainer_picks_a_good_learning_rate_on_digits(digits):
    train, val, _ = digits
    space = {"lr": LogUniform(1e-5, 10.0)}
    result = tune_trainer(build_mlp, train, val, space, trials=10, epochs=4, batch_size=16, seed=0)
    scores = [t.score for t in result.trials if t.ok]
    assert result.best.score >= 0.9 and result.best.score - min(scores) > 0.5
    assert 1e-3 < result.best_config["lr"] < 10.0
    assert {"loss", "accuracy", "val_loss"} <= set(result.best.metrics)
    # every trial starts from the same seed: the best run is reproduced exactly, on val only
    lamina.manual_seed(0)
    model, optimizer = build_mlp(result.best_config)
    trainer = Trainer(model, "categorical_cross_entropy", optimizer, verbose=0)
    trainer.fit(train, epochs=4, batch_size=16, seed=0)
    assert trainer.evaluate(val)["accuracy"] == pytest.approx(result.best.score, abs=1e-12)


def test_tune_trainer_records_a_diverging_run_as_failed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = x @ rng.standard_normal((5, 1)).astype(np.float32)

    def build(config):  # linear regression: SGD diverges for a learning rate far above 2 / lambda_max
        model = nn.Sequential(nn.Dense(1))
        return Trainer(model, "mse", optim.SGD(model, lr=config["lr"]), metrics=(), verbose=0)

    train, val = (x[:150], y[:150]), (x[150:], y[150:])
    with np.errstate(over="ignore", invalid="ignore"):
        result = tune_trainer(build, train, val, {"lr": [10.0, 0.1]}, trials=6, epochs=3, metric="val_loss")
    assert result.direction == "minimize"
    failed = [t for t in result.trials if not t.ok]
    assert failed and all(t.config["lr"] == 10.0 and "diverged" in t.error for t in failed)
    assert result.best_config["lr"] == 0.1 and result.best.score < 0.01
    with pytest.raises(ValueError, match="val is required"):
        tune_trainer(build, train, None, {"lr": 0.1}, trials=1, epochs=1)
