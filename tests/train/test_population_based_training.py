import math
import re
from pathlib import Path

import numpy as np
import pytest

import lamina
import lamina.functional as F
from lamina import nn, optim
from lamina.train import (
    PBTResult,
    apply_hyperparameters,
    copy_member,
    explore_config,
    plot_pbt,
    population_based_training,
    quantile_members,
)
from lamina.train.pbt import _PB2
from lamina.train.search import random_search
from lamina.train.search_space import Choice, IntUniform, LogUniform, Uniform

N = 4000


# -- a toy problem whose best learning rate changes over time -----------------------------------
# sum_i log cosh(w_i), started at w_i = 1000: far away the gradient is tanh(w) ~ 1, so only a
# large learning rate covers the distance in time; near the minimum the curvature is 1 and a
# large learning rate (above 2 (1 + momentum) for SGD) oscillates instead of converging.
START, DIM = 1000.0, 4


class Valley(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(np.full(DIM, START))


def build_valley(config):
    model = Valley()
    return model, optim.SGD(model.parameters(), lr=config["lr"], momentum=0.5)


def valley_step(model, optimizer, config):
    optimizer.zero_grad()
    loss = (F.softplus(2 * model.w) - model.w).sum()  # sum log cosh(w), up to a constant
    loss.backward()
    optimizer.step()


def valley_loss(model) -> float:
    w = np.abs(model.w.data.astype(np.float64))
    return float(np.sum(w + np.log1p(np.exp(-2 * w)) - math.log(2)))


def valley_score(model) -> float:
    return -valley_loss(model)


VALLEY_SPACE = {"lr": LogUniform(1e-2, 1e2)}


# -- a deterministic problem where optimizer state matters (Adam on least squares) ---------------
X = np.random.default_rng(1).normal(size=(32, 3))
Y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3


class LinearModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(np.full((3, 1), 0.1))
        self.bias = nn.Parameter(np.zeros(1))

    def forward(self, x):
        return lamina.Tensor(x) @ self.weight + self.bias


def build_linear(config):
    model = LinearModel()
    return model, optim.Adam(model.parameters(), lr=config["lr"])


def linear_step(model, optimizer, config):
    optimizer.zero_grad()
    loss = ((model(X) - Y) ** 2).mean()
    loss.backward()
    optimizer.step()


def linear_score(model):
    return -float(((model(X).data - Y) ** 2).mean())


# -- quantiles ---------------------------------------------------------------------------------
def test_quantile_members_on_a_hand_made_score_table():
    scores = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6]
    assert quantile_members(scores, 0.25) == ([1, 5], [2, 6])
    assert quantile_members(scores, 0.25, "minimize") == ([2, 6], [1, 5])
    assert quantile_members(scores, 0.1) == ([1], [2])  # ceil(0.8) = 1
    assert quantile_members(scores, 0.5) == ([1, 5, 3, 7], [2, 6, 4, 0])
    # never more than half the population on each side, and tied members never on both
    assert quantile_members([1.0, 1.0, 1.0, 1.0, 1.0], 0.5) == ([0, 1], [4, 3])
    assert quantile_members([0.3, math.nan, 0.9], 0.34) == ([2], [1])  # a failed score ranks last
    with pytest.raises(ValueError, match="quantile"):
        quantile_members(scores, 0.6)


# -- exploit -----------------------------------------------------------------------------------
def trained_pair(lr, steps):
    model, optimizer = build_linear({"lr": lr})
    for _ in range(steps):
        linear_step(model, optimizer, {})
    return model, optimizer


def test_copy_member_copies_weights_and_optimizer_state_bit_for_bit():
    target, source = trained_pair(0.01, 3), trained_pair(0.05, 7)
    copy_member(*target, *source)
    for (name, a), b in zip(target[0].state_dict().items(), source[0].state_dict().values(), strict=True):
        assert a.tobytes() == b.tobytes(), name
    mine, theirs = target[1].state_dict(), source[1].state_dict()
    assert mine["step_count"] == theirs["step_count"] == 7
    for i in theirs["state"]:
        for key, value in theirs["state"][i].items():
            assert np.asarray(mine["state"][i][key]).tobytes() == np.asarray(value).tobytes(), (i, key)
    assert target[1].lr == source[1].lr == 0.05
    # nothing is shared, and the same further steps keep the two identical
    kept = source[0].weight.data.copy()
    source[0].weight.data[...] += 1.0
    assert not np.array_equal(target[0].weight.data, source[0].weight.data)
    source[0].weight.data[...] = kept
    for _ in range(5):
        linear_step(*target, {})
        linear_step(*source, {})
    assert target[0].weight.data.tobytes() == source[0].weight.data.tobytes()


def test_an_exploited_member_continues_exactly_as_its_source():
    # explore keeps the configuration (factor 1, no resampling): after the next generation the
    # exploited member must hold the very bits of its source; without the Adam state it would not
    result = population_based_training(build_linear, linear_step, linear_score, {"lr": LogUniform(1e-3, 1e-1)},
                                       population=4, generations=2, ready_every=5, quantile=0.25,
                                       perturb=(1.0,), resample_probability=0.0, seed=3)
    (exploit,) = result.exploits
    member, source = result.members[exploit.member], result.members[exploit.source]
    assert member[0].weight.data.tobytes() == source[0].weight.data.tobytes()
    assert member[1].state_dict()["step_count"] == 10
    scores = result.final_scores()
    assert scores[exploit.member] == scores[exploit.source]


# -- explore -----------------------------------------------------------------------------------
def test_explore_perturbs_by_the_factors_within_the_range():
    rng = np.random.default_rng(0)
    space = {"lr": LogUniform(1e-4, 1.0), "momentum": Uniform(0.0, 0.99), "layers": IntUniform(1, 20),
             "act": Choice(["relu", "tanh", "gelu"]), "batch": 32}
    config = {"lr": 0.01, "momentum": 0.5, "layers": 10, "act": "tanh", "batch": 32}
    ratios = []
    for _ in range(N):
        new = explore_config(config, space, rng, perturb=(0.8, 1.2), resample_probability=0.0)
        ratios.append(new["lr"] / config["lr"])
        assert new["layers"] in (8, 12) and new["act"] in ("relu", "gelu") and new["batch"] == 32
        assert new["momentum"] in (pytest.approx(0.4), pytest.approx(0.6))
    ratios = np.array(ratios)
    assert np.all(np.isclose(ratios, 0.8) | np.isclose(ratios, 1.2))
    assert abs(np.mean(np.isclose(ratios, 1.2)) - 0.5) < 5 * math.sqrt(0.25 / N)
    # clipped to the range at its ends
    edge = {"lr": 1.0, "momentum": 0.99, "layers": 20, "act": "gelu", "batch": 32}
    for _ in range(50):
        new = explore_config(edge, space, rng, perturb=(1.2,), resample_probability=0.0)
        assert new["lr"] == 1.0 and new["momentum"] == 0.99 and new["layers"] == 20 and new["act"] == "tanh"


@pytest.mark.parametrize("probability", [0.25, 0.6])
def test_explore_resamples_with_the_set_probability(probability):
    rng = np.random.default_rng(1)
    space = {"lr": LogUniform(1e-4, 1.0)}
    changed = sum(explore_config({"lr": 0.01}, space, rng, perturb=(1.0,), resample_probability=probability)["lr"]
                  != 0.01 for _ in range(N))
    assert abs(changed / N - probability) < 5 * math.sqrt(probability * (1 - probability) / N)


def test_hyperparameters_reach_the_live_optimizer():
    model = LinearModel()
    optimizer = optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.2}], lr=0.1, momentum=0.0)
    seen = []
    apply_hyperparameters(model, optimizer, {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3, "batch": 8,
                                             "temperature": 2.0},
                          setters={"temperature": lambda m, o, v: seen.append((m, o, v))})
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 1.0])  # group scale kept
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 1e-3 for g in optimizer.param_groups)
    assert seen == [(model, optimizer, 2.0)]


# -- bookkeeping, determinism ------------------------------------------------------------------
def run_valley(seed=0, **options):
    return population_based_training(build_valley, valley_step, valley_score, VALLEY_SPACE, population=8,
                                     generations=10, ready_every=20, seed=seed, **options)


def test_lineage_bookkeeping_is_consistent():
    result = run_valley()
    assert isinstance(result, PBTResult) and result.generations == 10
    assert len(result.trials) == 8 * 11 and len(result.exploits) == 9 * 2
    by_key = {(t.stage, t.config_id): t for t in result.trials}
    for e in result.exploits:
        assert e.source != e.member and e.step == 20 * e.generation
        assert by_key[(e.generation, e.member)].config == e.old  # trained with the old config
        assert by_key[(e.generation + 1, e.member)].config == e.new  # then with the new one
        top, bottom = quantile_members([by_key[(e.generation, m)].score for m in range(8)])
        assert e.member in bottom and e.source in top
    best = result.best_member
    assert result.final_scores()[best] == max(result.final_scores())
    lineage, schedule = result.lineage(best), result.schedule()
    assert lineage[-1] == best and len(lineage) == len(schedule) == 10
    assert [start for start, _ in schedule] == list(range(0, 200, 20))
    copied = {(e.generation, e.member): e.source for e in result.exploits}
    for generation in range(1, 10):
        owner, previous = lineage[generation], lineage[generation - 1]
        assert copied.get((generation, owner), owner) == previous
    assert result.best_model is result.members[best][0]
    assert "8 members" in repr(result) and "18 exploits" in repr(result)


def test_a_seed_makes_the_run_repeatable():
    first, again, other = run_valley(seed=5), run_valley(seed=5), run_valley(seed=6)
    assert [(t.config, t.score) for t in first.trials] == [(t.config, t.score) for t in again.trials]
    assert first.exploits == again.exploits
    assert [t.config for t in first.trials] != [t.config for t in other.trials]


# -- learning ----------------------------------------------------------------------------------
def fixed_lr_objective(config):
    model, optimizer = build_valley(config)
    for _ in range(200):
        valley_step(model, optimizer, config)
    return valley_score(model)


def test_pbt_beats_the_best_fixed_learning_rate_with_the_same_budget():
    # 8 members x 200 steps both ways; the best fixed rate either stops short or oscillates
    fixed = random_search(fixed_lr_objective, VALLEY_SPACE, trials=8, seed=0)
    result = run_valley(seed=0)
    best_fixed_loss = -fixed.best.score
    pbt_loss = valley_loss(result.best_model)
    assert best_fixed_loss > 0.1
    assert pbt_loss < 0.01 * best_fixed_loss
    rates = [config["lr"] for _, config in result.schedule()]
    assert rates[0] > 5 and rates[-1] < 1  # large early, small late


def test_pb2_explore_also_finds_a_decaying_schedule():
    fixed = random_search(fixed_lr_objective, VALLEY_SPACE, trials=8, seed=0)
    result = run_valley(seed=0, explore="pb2", candidates=32)
    assert valley_loss(result.best_model) < 0.01 * -fixed.best.score
    assert all(1e-2 <= t.config["lr"] <= 1e2 for t in result.trials)
    rates = [config["lr"] for _, config in result.schedule()]
    assert rates[0] > 5 and min(rates) < 1  # at the minimum to float precision the rate no longer matters


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pb2_picks_the_configuration_the_model_expects_to_gain_most(sign):
    bandit = _PB2({"lr": Uniform(0.0, 1.0)}, total_steps=100, kappa=0.0, candidates=32)
    rng = np.random.default_rng(0)
    for t in range(20):
        lr = float(rng.uniform())
        bandit.record(5 * t, {"lr": lr}, sign * lr)  # the score change grows (or falls) with lr
    chosen = [bandit.choose(50, {"lr": 0.5}, rng, (0.8, 1.2), 0.25)["lr"] for _ in range(3)]
    assert all(c > 0.85 for c in chosen) if sign > 0 else all(c < 0.15 for c in chosen)


# -- plots, errors, README ---------------------------------------------------------------------
def test_plot_pbt_writes_a_png(tmp_path):
    path = plot_pbt(run_valley(), tmp_path / "pbt.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pbt.png"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="population must be an integer >= 2"):
        population_based_training(build_valley, valley_step, valley_score, VALLEY_SPACE, 1, 2, 2)
    with pytest.raises(ValueError, match="explore must be one of"):
        population_based_training(build_valley, valley_step, valley_score, VALLEY_SPACE, 4, 2, 2, explore="bo")
    with pytest.raises(ValueError, match="quantile must be in"):
        population_based_training(build_valley, valley_step, valley_score, VALLEY_SPACE, 4, 2, 2, quantile=0.7)
    with pytest.raises(ValueError, match="resample_probability"):
        population_based_training(build_valley, valley_step, valley_score, VALLEY_SPACE, 4, 2, 2,
                                  resample_probability=1.5)


def test_readme_example_runs():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Population-based training", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README-pbt", "exec"), namespace)
    rates = [config["lr"] for _, config in namespace["result"].schedule()]
    assert rates[0] > 5 and rates[-1] < 1
