"""EarlyStopping's Keras options: start_from_epoch, baseline, restore_best_weights."""

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import EarlyStopping, LambdaCallback, Trainer


def scripted_fit(script, stopping, epochs=None):
    """Fit with the logged quantity 'score' set to script[e] at epoch e (a callback listed
    before ``stopping`` writes it); returns the trainer and the weights at each epoch's end."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    weights = []

    def score(epoch, logs):
        logs["score"] = script[epoch]
        weights.append({k: np.array(v, copy=True) for k, v in model.state_dict().items()})

    trainer = Trainer(model, "mse", optim.SGD(model, lr=0.05), metrics=(), verbose=0,
                      callbacks=[LambdaCallback(on_epoch_end=score), stopping])
    trainer.fit((x, y), epochs=epochs or len(script), batch_size=4)
    return trainer, weights


def test_start_from_epoch_ignores_the_warm_up_epochs():
    script = [5.0, 6.0, 7.0, 8.0, 1.0, 1.0, 1.0, 1.0]
    trainer, _ = scripted_fit(script, EarlyStopping("score", patience=1))
    assert trainer.history.epochs == [1, 2]
    trainer, _ = scripted_fit(script, EarlyStopping("score", patience=1, start_from_epoch=3))
    assert trainer.history.epochs == [1, 2, 3, 4, 5, 6]       # watched from epoch 3 (0-based): 8, 1 best, 1 stop


def test_a_baseline_not_beaten_does_not_reset_the_wait():
    script = [0.9, 0.8, 0.85, 0.7, 0.6, 0.6, 0.6]
    trainer, _ = scripted_fit(script, EarlyStopping("score", patience=3))
    assert trainer.history.epochs == [1, 2, 3, 4, 5, 6, 7]
    trainer, _ = scripted_fit(script, EarlyStopping("score", patience=3, baseline=0.5))
    assert trainer.history.epochs == [1, 2, 3]                # improving on 0.9, never below 0.5
    trainer, _ = scripted_fit(script, EarlyStopping("score", patience=3, baseline=0.82))
    assert trainer.history.epochs == [1, 2, 3, 4, 5, 6, 7]    # 0.8 beats the baseline: the wait restarts


@pytest.mark.parametrize("option", [{"restore_best_weights": True}, {"restore_best": True}])
def test_restore_best_weights_puts_back_the_best_epoch(option):
    script = [3.0, 2.0, 1.0, 1.5, 2.5, 3.0]
    stopping = EarlyStopping("score", patience=2, **option)
    trainer, weights = scripted_fit(script, stopping)
    assert trainer.history.epochs == [1, 2, 3, 4, 5] and stopping.best_epoch == 2
    for name, value in weights[2].items():
        np.testing.assert_array_equal(trainer.model.state_dict()[name], value, err_msg=name)
    assert not np.array_equal(weights[2]["dense.weight"], weights[4]["dense.weight"])


def test_restore_best_weights_false_overrides_restore_best_and_state_round_trips():
    stopping = EarlyStopping("score", restore_best=True, restore_best_weights=False)
    assert stopping.restore_best is False
    stopping.best, stopping.wait, stopping.best_epoch = 0.5, 2, 3
    other = EarlyStopping("score")
    other.load_state_dict(stopping.state_dict())
    assert (other.best, other.wait, other.best_epoch) == (0.5, 2, 3)
    with pytest.raises(ValueError, match="start_from_epoch must be"):
        EarlyStopping(start_from_epoch=-1)
