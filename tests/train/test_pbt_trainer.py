import numpy as np
import pytest

from lamina import models, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train import LogUniform, Trainer, Uniform, pbt_trainer


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    return train_val_test_split(x, y, val=0.2, test=0.2, seed=0)


def build_mlp(config):
    model = models.mlp(hidden=(16,), num_classes=10, input_shape=(64,))
    return model, optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])


def test_pbt_trainer_trains_a_population_on_digits(digits):
    train, val, _ = digits
    space = {"lr": LogUniform(1e-4, 1.0), "momentum": Uniform(0.0, 0.95)}
    result = pbt_trainer(build_mlp, train, val, space, population=4, generations=3, batch_size=32, seed=0)
    assert result.direction == "maximize" and len(result.exploits) == 2 * 1
    assert len(result.trainers) == 4 and all(len(t.history.epochs) == 3 for t in result.trainers)
    best = result.trainers[result.best_member]
    assert best.evaluate(val)["accuracy"] == pytest.approx(result.final_scores().max(), abs=1e-12)
    assert result.final_scores().max() > 0.85
    for trainer, trial in zip(result.trainers, [t for t in result.trials if t.stage == 3], strict=True):
        group = trainer.optimizer.param_groups[0]  # the explored values are the live ones
        assert group["lr"] == pytest.approx(trial.config["lr"]) and group["momentum"] == trial.config["momentum"]
    again = pbt_trainer(build_mlp, train, val, space, population=4, generations=3, batch_size=32, seed=0)
    assert [t.score for t in again.trials] == [t.score for t in result.trials]


def test_pbt_trainer_takes_a_trainer_and_a_loss_metric(digits):
    train, val, _ = digits

    def build(config):
        model = models.mlp(hidden=(16,), num_classes=10, input_shape=(64,))
        return Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=config["lr"]),
                       verbose=0)

    result = pbt_trainer(build, train, val, {"lr": LogUniform(1e-3, 1e-1)}, population=2, generations=2,
                         metric="val_loss", seed=1)
    assert result.direction == "minimize" and len(result.exploits) == 1
    assert result.final_scores().min() < 1.5
    with pytest.raises(ValueError, match="val is required"):
        pbt_trainer(build, train, None, {"lr": LogUniform(1e-3, 1e-1)}, population=2, generations=2)
