"""lamina.train.pruning: the median rule on scripted learning curves, and the pruning callback
stopping poor runs of tune_trainer early."""

import numpy as np
import pytest

from lamina import models, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train.pruning import MedianPruner
from lamina.train.search import tune_trainer
from lamina.train.search_space import LogUniform
from lamina.train.trainer import Trainer

# (name, curve, the step it is pruned at or None) in the order the trials run; with
# n_startup_trials=2 and n_warmup_steps=1, by hand:
CURVES = [
    ("a", [0.2, 0.5, 0.7, 0.8], None),   # startup: never pruned
    ("b", [0.4, 0.6, 0.8, 0.9], None),   # startup
    ("c", [0.1, 0.3, 0.9, 0.9], 1),      # step 0 is warm-up; step 1: best 0.3 < median(0.5, 0.6)
    ("d", [0.6, 0.5, 0.76, 0.1], 3),     # step 3: best so far 0.76 < median(0.8, 0.9) = 0.85
    ("e", [0.3, 0.9, 0.1, 0.1], None),   # its best (0.9) stays above every median
    ("f", [0.0, 0.56, 0.9, 0.9], 1),     # median(0.5, 0.6, 0.9) = 0.6: e counts, pruned c and d do not
    ("g", [0.0, 0.65, 0.0, 0.0], 2),     # step 1: 0.65 >= 0.6; step 2: median(0.7, 0.8, 0.1) = 0.7
]


def run(pruner, sign=1.0):
    pruned = {}
    for name, curve, _ in CURVES:
        pruned[name] = None
        for step, value in enumerate(curve):
            pruner.report(name, step, sign * value)
            if pruner.should_prune(name, step):
                pruned[name] = step
                break
        else:
            pruner.complete(name)
    return pruned


def test_median_pruner_prunes_exactly_the_scripted_trials():
    expected = {name: step for name, _, step in CURVES}
    assert run(MedianPruner(n_startup_trials=2, n_warmup_steps=1)) == expected
    assert run(MedianPruner(n_startup_trials=2, n_warmup_steps=1, direction="minimize"), sign=-1.0) == expected
    # without warm-up c is pruned at step 0 (0.1 < median(0.2, 0.4)), f too (0.0 < 0.3)
    no_warmup = run(MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    assert no_warmup["c"] == 0 and no_warmup["f"] == 0
    # with 7 startup trials nothing is pruned
    assert set(run(MedianPruner(n_startup_trials=7)).values()) == {None}


def test_a_trial_with_only_nan_is_pruned_and_no_reference_means_go_on():
    pruner = MedianPruner(n_startup_trials=1)
    pruner.report("a", 0, 0.5)
    pruner.complete("a")
    pruner.report("b", 0, float("nan"))
    assert pruner.should_prune("b", 0)
    pruner.report("c", 5, 0.0)  # no completed trial reported step 5
    assert not pruner.should_prune("c", 5)


@pytest.mark.parametrize("kwargs, words", [
    ({"n_startup_trials": -1}, "n_startup_trials must be an integer >= 0"),
    ({"n_warmup_steps": 1.5}, "n_warmup_steps must be an integer >= 0"),
    ({"direction": "max"}, "direction must be 'maximize' or 'minimize'"),
])
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MedianPruner(**kwargs)


def test_tune_trainer_stops_poor_runs_early():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    train, val, _ = train_val_test_split(x, y, val=0.2, test=0.2, seed=0)
    trainers = []

    def build(config):
        model = models.mlp(hidden=(16,), num_classes=10, input_shape=(64,))
        trainers.append(Trainer(model, "categorical_cross_entropy", optim.SGD(model, lr=config["lr"]), verbose=0))
        return trainers[-1]

    pruner = MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    checked = []

    def check(trial):  # runs after each trial: the pruner is as it was when the run stopped
        trainer = trainers[trial.index]
        epochs = len(trainer.history.epochs)
        assert (epochs < 4) == (not trial.ok)
        if not trial.ok:  # its best fell below the median of the completed runs at that epoch
            assert max(trainer.history["val_accuracy"]) < pruner.median_at(epochs - 1)
            checked.append(trial.index)

    result = tune_trainer(build, train, val, {"lr": LogUniform(1e-4, 1.0)}, trials=8, epochs=4, batch_size=32,
                          pruner=pruner, callback=check)
    pruned = [t for t in result.trials if not t.ok]
    assert pruned and checked == [t.index for t in pruned]
    assert all(t.error.startswith("TrialPruned: pruned at epoch") for t in pruned)
    assert len(pruner.completed) == sum(t.ok for t in result.trials) >= 2
    assert result.best.score == max(t.score for t in result.trials if t.ok)
