"""lamina.train.hyperband: the Hyperband schedule against the paper's table, the resource it
spends, successive halving's promotions, resumable objectives, ASHA's promotion rule on a
scripted trace, and tune_trainer with Hyperband and ASHA on digits."""

import csv
import math

import numpy as np
import pytest

from lamina import models, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train.hyperband import ASHA, asha_search, hyperband, hyperband_schedule, successive_halving
from lamina.train.search import tune_trainer
from lamina.train.search_space import IntUniform, LogUniform, Uniform

# Li et al. (2018), Table 1: R = 81, eta = 3; one list per bracket s = 4, ..., 0 of (n_i, r_i)
PAPER_TABLE = [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
]


def closeness(config, resource):
    """Peaks at lr = 10^-2.5; a smaller resource gives a noisier-looking, lower score."""
    return -(math.log10(config["lr"]) + 2.5) ** 2 - 1.0 / resource


def test_schedule_is_the_papers_table():
    assert hyperband_schedule(81, 3) == PAPER_TABLE
    assert hyperband_schedule(81.0, 3) == PAPER_TABLE
    # R = 9: s_max = 2, B = 27; n = ceil(3 * 9 / 3), ceil(3 * 3 / 2), ceil(3 / 1)
    assert hyperband_schedule(9, 3) == [[(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)]]
    # R not a power of eta: fractional resources, s_max = floor(log_3 10) = 2
    assert hyperband_schedule(10, 3)[0] == [(9, 10 / 9), (3, 10 / 3), (1, 10)]
    assert hyperband_schedule(2, 3) == [[(1, 2)]]


def test_hyperband_runs_the_schedule_and_spends_the_formula_budget():
    calls = []

    def objective(config, resource):
        calls.append(resource)
        return closeness(config, resource)

    result = hyperband(objective, {"lr": LogUniform(1e-6, 1.0)}, max_resource=81, eta=3, seed=0)
    expected = [(stage, rung, n, r) for stage, bracket in enumerate(PAPER_TABLE) for rung, (n, r) in enumerate(bracket)]
    seen = [(stage, rung, sum(t.stage == stage and t.rung == rung for t in result.trials),
             next(t.resource for t in result.trials if t.stage == stage and t.rung == rung))
            for stage, rung, _, _ in expected]
    assert seen == expected
    assert len(calls) == len(result.trials) == sum(n for _, _, n, _ in expected) == 206
    budget = sum(n * r for _, _, n, r in expected)
    assert budget == 405 + (102 + 99 + 81 + 81) + (135 + 135 + 81) + (216 + 162) + 405 == 1902
    assert result.budget == sum(calls) == budget
    # each bracket draws fresh configurations; a configuration keeps its id through the rungs
    for stage, bracket in enumerate(PAPER_TABLE):
        ids = {t.config_id for t in result.trials if t.stage == stage}
        assert len(ids) == bracket[0][0]
    assert abs(math.log10(result.best_config["lr"]) + 2.5) < 0.1
    assert result.best.resource == 81


def test_halving_promotes_the_best_third_ties_in_order_and_never_a_failed_run():
    def objective(config, resource):
        if config["x"] > 0.9:
            raise RuntimeError("too big")
        return round(config["x"], 1)  # coarse scores: many ties

    result = successive_halving(objective, {"x": Uniform(0.0, 1.0)}, configs=27, min_resource=1, max_resource=9,
                                eta=3, seed=1)
    rungs = [[t for t in result.trials if t.rung == i] for i in range(3)]
    assert [len(r) for r in rungs] == [27, 9, 3] and [r[0].resource for r in rungs] == [1, 3, 9]
    failed = [t for t in rungs[0] if not t.ok]
    assert failed and all("too big" in t.error for t in failed)
    for below, above in zip(rungs, rungs[1:], strict=False):
        ranked = sorted((t for t in below if t.ok), key=lambda t: -t.score)  # stable: ties in run order
        assert [t.config_id for t in above] == [t.config_id for t in ranked[:len(above)]]
    assert result.best.score == max(t.score for t in result.trials if t.ok)
    with pytest.raises(RuntimeError, match="all 27 trials failed"):
        successive_halving(lambda c, r: math.nan, {"x": Uniform(0.0, 1.0)}, 27, 1, 9)


def test_resumed_objective_continues_and_pays_only_the_extra_resource():
    runs = []

    def objective(config, resource, state):
        trained = 0 if state is None else state["trained"]
        assert state is None or state["config"] == config
        runs.append((trained, resource))
        return {"score": closeness(config, resource), "state": {"config": config, "trained": resource}}

    result = hyperband(objective, {"lr": LogUniform(1e-6, 1.0)}, max_resource=9, eta=3, seed=0, resume=True)
    schedule = hyperband_schedule(9, 3)
    extra = sum(n * (r - (bracket[i - 1][1] if i else 0)) for bracket in schedule for i, (n, r) in enumerate(bracket))
    assert extra == (9 + 3 * 2 + 6) + (15 + 6) + 27 == 69
    assert result.budget == extra == sum(r - t for t, r in runs)
    assert all(t < r for t, r in runs) and any(t > 0 for t, _ in runs)
    assert "state" not in result.best.metrics


def test_csv_has_the_rung_columns(tmp_path):
    path = tmp_path / "hb.csv"
    result = hyperband(closeness, {"lr": LogUniform(1e-4, 1.0), "act": "relu"}, 9, seed=2, csv_path=path)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0])[:5] == ["trial", "stage", "config", "rung", "resource"]
    assert [(int(r["config"]), int(r["rung"]), float(r["resource"])) for r in rows] == \
        [(t.config_id, t.rung, t.resource) for t in result.trials]


# -- ASHA --------------------------------------------------------------------------------------
def test_asha_promotions_follow_the_hand_trace():
    first_scores = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.95, 0.6]
    asha = ASHA(max_t=9, grace_period=1, reduction_factor=3)
    assert asha.milestones == [1, 3, 9]
    jobs, started = [], 0
    while True:
        job = asha.next_job()
        if job is None:
            if started == len(first_scores):
                break
            job, started = (started, 0), started + 1
        jobs.append(job)
        asha.report(job[0], job[1], first_scores[job[0]] + job[1])  # a promotion scores one more per rung
    # c1 enters the top third of rung 0 once rung 0 has 3 results, c5 when it has 6; c7 tops rungs 0 and 1
    assert jobs == [(0, 0), (1, 0), (2, 0), (1, 1), (3, 0), (4, 0), (5, 0), (5, 1), (6, 0), (7, 0), (7, 1), (7, 2),
                    (8, 0)]
    assert ASHA(max_t=100, grace_period=1, reduction_factor=4).milestones == [1, 4, 16, 64, 100]


def test_asha_search_promotes_only_from_the_top_of_the_rung_below():
    space = {"lr": LogUniform(1e-6, 1.0)}
    result = asha_search(closeness, space, trials=30, max_t=27, grace_period=1, reduction_factor=3, seed=0)
    assert len({t.config_id for t in result.trials}) == 30
    for at, trial in enumerate(result.trials):
        if trial.rung == 0:
            continue
        below = [t for t in result.trials[:at] if t.rung == trial.rung - 1]
        ranked = sorted(below, key=lambda t: -t.score)[:len(below) // 3]
        assert trial.config_id in [t.config_id for t in ranked]
    assert max(t.rung for t in result.trials) == 3 and result.best.resource == 27
    assert result.budget == sum(t.resource for t in result.trials)


@pytest.mark.parametrize("call, words", [
    (lambda: hyperband_schedule(81, 1), "eta must be an integer >= 2, got 1"),
    (lambda: hyperband_schedule(81, 2.5), "eta must be an integer >= 2, got 2.5"),
    (lambda: hyperband_schedule(0, 3), "max_resource must be a finite number > 0, got 0"),
    (lambda: hyperband(closeness, {}, math.inf), "max_resource must be a finite number"),
    (lambda: hyperband(closeness, {}, 9, direction="up"), "direction must be one of"),
    (lambda: hyperband(None, {}, 9), r"objective must be callable as objective\(config, resource\)"),
    (lambda: successive_halving(closeness, {}, 9, 3, 1), r"max_resource \(1\) must be >= min_resource \(3\)"),
    (lambda: successive_halving(closeness, {}, 0, 1, 9), "configs must be a positive integer"),
    (lambda: ASHA(max_t=9, reduction_factor=1), "ASHA: reduction_factor must be an integer >= 2"),
    (lambda: ASHA(max_t=1, grace_period=3), r"max_t \(1\) must be >= grace_period \(3\)"),
])
def test_bad_arguments_raise(call, words):
    with pytest.raises(ValueError, match=words):
        call()


# -- tuning a real training run ----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    return train_val_test_split(x, y, val=0.2, test=0.2, seed=0)


def build_mlp(config):
    model = models.mlp(hidden=(config["units"],), num_classes=10, input_shape=(64,))
    return model, optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)


SPACE = {"lr": LogUniform(1e-4, 1.0), "units": IntUniform(8, 64)}


def test_tune_trainer_with_hyperband_spends_fewer_epochs_for_a_comparable_best(digits):
    train, val, _ = digits
    fast = tune_trainer(build_mlp, train, val, SPACE, trials=None, epochs=9, batch_size=32, scheduler="hyperband")
    configs = len({t.config_id for t in fast.trials})
    assert configs == sum(b[0][0] for b in hyperband_schedule(9, 3)) == 17
    full = tune_trainer(build_mlp, train, val, SPACE, trials=configs, epochs=9, batch_size=32)
    assert fast.budget == 69 < 0.5 * configs * 9  # resumed, not retrained: 69 epochs against 153
    assert fast.best.score >= full.best.score - 0.02 and fast.best.score > 0.9
    asha = tune_trainer(build_mlp, train, val, SPACE, trials=configs, epochs=9, batch_size=32, scheduler="asha",
                        grace_period=1, eta=3)
    assert asha.budget < configs * 9 and asha.best.score >= full.best.score - 0.02


def test_tune_trainer_rejects_unknown_and_mixed_options(digits):
    train, val, _ = digits
    with pytest.raises(ValueError, match=r"scheduler must be one of \(None, 'hyperband', 'asha'\), got 'median'"):
        tune_trainer(build_mlp, train, val, SPACE, trials=3, epochs=1, scheduler="median")
    with pytest.raises(ValueError, match="strategy must be one of"):
        tune_trainer(build_mlp, train, val, SPACE, trials=3, epochs=1, strategy="grid")
    with pytest.raises(ValueError, match="pass trials=None"):
        tune_trainer(build_mlp, train, val, SPACE, trials=3, epochs=3, scheduler="hyperband")
    with pytest.raises(ValueError, match="strategy='tpe' works with scheduler=None only"):
        tune_trainer(build_mlp, train, val, SPACE, trials=3, epochs=3, scheduler="asha", strategy="tpe")
