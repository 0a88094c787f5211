import csv

import numpy as np
import pytest

import lamina
from lamina import models, nn, optim
from lamina.errors import ShapeError
from lamina.train import (
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    TerminateOnNaN,
    Trainer,
)
from lamina.train import checkpoint as ckpt


def blobs(n=240, seed=0):
    """Three Gaussian blobs in 4 dimensions: an easy, real classification task."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 4)) * 3
    y = rng.integers(0, 3, n)
    x = (centres[y] + rng.standard_normal((n, 4))).astype(np.float32)
    return x, y


def make_trainer(callbacks=(), lr=0.01, dropout=0.0, schedule=None):
    model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,), dropout=dropout)
    opt = optim.Adam(model.parameters(), lr=lr)
    if schedule is not None:
        schedule.attach(opt)
    return Trainer(model, "categorical_cross_entropy", opt, callbacks=callbacks, schedule=schedule, verbose=0)


def test_fit_learns_and_records_history():
    x, y = blobs()
    trainer = make_trainer()
    history = trainer.fit((x[:200], y[:200]), val=(x[200:], y[200:]), epochs=8, batch_size=16, seed=0)
    assert len(history["loss"]) == 8 and len(history["val_accuracy"]) == 8
    assert len(history.iteration["loss"]) == 8 * 13
    assert history["loss"][-1] < history["loss"][0]
    assert trainer.evaluate((x[200:], y[200:]))["accuracy"] > 0.9
    probs = trainer.predict(x[200:], batch_size=7)
    assert probs.shape == (40, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_fused_softmax_cross_entropy_equals_unfused_cost():
    x, y = blobs(32)
    trainer = make_trainer()
    model = trainer.model
    with lamina.no_grad():
        probs = model(lamina.tensor(x))
        unfused = lamina.functional.categorical_cross_entropy(probs, y).item()
    assert trainer.evaluate((x, y))["loss"] == pytest.approx(unfused, rel=1e-5)


def test_cross_entropy_with_options_keeps_the_fused_softmax_and_the_label_checks():
    import functools

    x, y = blobs(32)
    model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
    smoothed = functools.partial(lamina.functional.categorical_cross_entropy, label_smoothing=0.2)
    trainer = Trainer(model, smoothed, optim.SGD(model.parameters(), lr=0.1), verbose=0)
    assert trainer._fused_softmax() and trainer.loss_name == "categorical_cross_entropy"
    with lamina.no_grad():
        logits = model[:-1](lamina.tensor(x))                 # the model ends in Softmax
        expected = lamina.functional.categorical_cross_entropy(logits, y, from_logits=True,
                                                               label_smoothing=0.2).item()
    assert trainer.evaluate((x, y))["loss"] == pytest.approx(expected, rel=1e-5)
    bad = y.copy()
    bad[0] = 3
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        trainer.fit((x, bad), epochs=1)


@pytest.mark.parametrize("clip", [{"clip_norm": 0.05}, {"clip_value": 0.01}, {"clip_norm": 0.05, "clip_value": 0.01}])
def test_gradient_clipping_before_each_update(clip):
    x, y = blobs(32)
    lamina.manual_seed(3)
    model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
    reference = {k: v.copy() for k, v in model.state_dict().items()}
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.5), verbose=0, **clip)
    trainer.train_step(x, y)
    grads = [p.grad for p in model.parameters()]
    if "clip_value" in clip:
        assert max(np.abs(g).max() for g in grads) <= clip["clip_value"]
    if "clip_norm" in clip:
        assert np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)) <= clip["clip_norm"] * (1 + 1e-6)
    # the same step by hand: backward, clip, then SGD on the clipped gradients
    lamina.manual_seed(3)
    again = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
    again.load_state_dict(reference)
    cost = lamina.functional.categorical_cross_entropy(again[:-1](lamina.tensor(x)), y, from_logits=True)
    cost.backward()
    if "clip_value" in clip:
        optim.clip_grad_value(again, clip["clip_value"])
    if "clip_norm" in clip:
        optim.clip_grad_norm(again, clip["clip_norm"])
    optim.SGD(again.parameters(), lr=0.5).step()
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
    for bad in ({"clip_norm": 0}, {"clip_value": -1.0}, {"clip_norm": True}, {"clip_value": float("inf")}):
        with pytest.raises(ValueError, match="Trainer: clip_"):
            Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.5), **bad)


def run(tmp_path, epochs, resume=None, stop_after=None):
    lamina.manual_seed(7)
    x, y = blobs()
    schedule = optim.schedules.CosineDecay(0.01, 5 * 15)
    trainer = make_trainer(callbacks=[ModelCheckpoint(tmp_path / "ckpt-{epoch}.safetensors")], dropout=0.2,
                           schedule=schedule)
    trainer.fit((x, y), epochs=stop_after or epochs, batch_size=16, resume_from=resume)
    if stop_after:  # a new process would start from scratch: new objects, same seed
        lamina.manual_seed(7)
        trainer = make_trainer(dropout=0.2, schedule=optim.schedules.CosineDecay(0.01, 5 * 15))
        trainer.fit((x, y), epochs=epochs, batch_size=16, resume_from=tmp_path / f"ckpt-{stop_after}.safetensors")
    return trainer.model.state_dict(), trainer


def test_resume_is_bit_exact(tmp_path):
    full, _ = run(tmp_path / "a", epochs=5)
    resumed, trainer = run(tmp_path / "b", epochs=5, stop_after=2)
    assert full.keys() == resumed.keys()
    for key in full:
        np.testing.assert_array_equal(full[key], resumed[key], err_msg=key)
    assert len(trainer.history["loss"]) == 5


def test_checkpoint_holds_training_state(tmp_path):
    x, y = blobs()
    trainer = make_trainer(callbacks=[ModelCheckpoint(tmp_path / "c.safetensors")])
    trainer.fit((x, y), epochs=2, batch_size=32)
    weights, state = ckpt.read(tmp_path / "c.safetensors")
    assert state["epoch"] == 2 and state["iteration"] == 16
    assert state["optimizer"]["step_count"] == 16
    assert set(weights) == set(trainer.model.state_dict())
    model = lamina.load(tmp_path / "c.safetensors")  # a checkpoint is also a loadable model
    np.testing.assert_array_equal(model.state_dict()["dense.weight"], trainer.model.state_dict()["dense.weight"])


def test_auto_mode_maximises_scores_and_minimises_losses_and_errors():
    for monitor in ("val_accuracy", "val_f1", "precision_weighted", "val_recall", "top5_accuracy", "val_auc",
                    "average_precision", "val_r2"):
        assert EarlyStopping(monitor).mode == "max", monitor
    for monitor in ("val_loss", "loss", "val_top5_error", "top1_error", "val_mae"):
        assert ModelCheckpoint("unused.safetensors", monitor=monitor).mode == "min", monitor


def test_save_best_only_and_early_stopping(tmp_path):
    x, y = blobs()
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss", save_best_only=True)
    stopper = EarlyStopping("val_loss", patience=1, restore_best=True)
    trainer = make_trainer(callbacks=[best, stopper], lr=0.5)  # a rate too high: the validation cost wobbles
    history = trainer.fit((x[:200], y[:200]), val=(x[200:], y[200:]), epochs=30, batch_size=16)
    assert stopper.stopped_epoch is not None and len(history["loss"]) < 30
    best_epoch = int(np.argmin(history["val_loss"]))
    assert best.best == pytest.approx(history["val_loss"][best_epoch])
    assert trainer.evaluate((x[200:], y[200:]))["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_terminate_on_nan_keeps_last_good_checkpoint(tmp_path, capsys):
    x, y = blobs()
    stop = TerminateOnNaN()
    trainer = make_trainer(callbacks=[ModelCheckpoint(tmp_path / "last.safetensors"), stop], lr=0.01)
    trainer.fit((x, y), epochs=1, batch_size=16)
    good = (tmp_path / "last.safetensors").read_bytes()
    trainer.optimizer.lr = 1e30  # the next steps blow the weights up
    trainer.fit((x, y), epochs=3, batch_size=16)
    assert stop.message is not None and "iteration" in stop.message
    assert "TerminateOnNaN" in capsys.readouterr().err
    assert not np.isfinite(trainer.history.iteration["loss"][-1])
    assert (tmp_path / "last.safetensors").read_bytes() == good


def test_csv_logger_and_lr_scheduler(tmp_path):
    x, y = blobs()
    trainer = make_trainer(callbacks=[CSVLogger(tmp_path / "log.csv"), LearningRateScheduler(lambda e: 0.01 / (e + 1))])
    trainer.fit((x, y), epochs=3, batch_size=32)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["loss"]) == pytest.approx(trainer.history["loss"][2])
    assert trainer.optimizer.lr == pytest.approx(0.01 / 3)


def test_history_plot_writes_png(tmp_path):
    x, y = blobs()
    trainer = make_trainer()
    history = trainer.fit((x[:200], y[:200]), val=(x[200:], y[200:]), epochs=2, batch_size=32)
    history.plot(tmp_path / "cost.png")
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_labels_rejected_before_training():
    x, y = blobs(40)
    trainer = make_trainer()
    before = {k: v.copy() for k, v in trainer.model.state_dict().items()}
    y = y.copy()
    y[5] = 3
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*3"):
        trainer.fit((x, y), epochs=1)
    for key, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_nan_inputs_rejected_before_training():
    x, y = blobs(40)
    x[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN.*sample 7"):
        make_trainer().fit((x, y), epochs=1)


def test_wrong_image_shape_rejected_before_training():
    model = nn.Sequential(nn.Flatten(), nn.Dense(3), nn.Softmax())
    model.build((None, 8, 8, 1))
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), verbose=0)
    x = np.zeros((10, 6, 6, 1), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"Trainer.fit: the model cannot take inputs of shape \(10, 6, 6, 1\)"):
        trainer.fit((x, np.zeros(10, dtype=np.int64)), epochs=1)


def test_unknown_loss_and_missing_optimizer():
    model = models.mlp(hidden=(4,), num_classes=2, input_shape=(3,))
    with pytest.raises(ValueError, match="unknown loss 'cosine_embedding'"):
        Trainer(model, "cosine_embedding", optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="optimizer is required"):
        Trainer(model, "categorical_cross_entropy")


def test_a_trainer_on_a_model_without_softmax_stops_at_once():
    model = nn.Sequential(nn.Dense(3))
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32) * 5
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model, lr=0.1), verbose=0)
    with pytest.raises(ValueError, match="must hold probabilities in"):
        trainer.fit((x, np.zeros(16, np.int64)), epochs=1)


def test_fit_on_a_subset_builds_a_lazy_model_and_checks_its_first_labels():
    from lamina.data import ArrayDataset, Subset

    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Dense(16, activation="relu"), nn.Dense(3, activation="softmax")

        def forward(self, x):
            return self.out(self.hidden(x))

    x, y = blobs(120)
    model = TwoLayers()
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=0.05), verbose=0)
    trainer.fit(Subset(ArrayDataset(x, y), np.arange(100)), epochs=5, seed=0)
    assert trainer.evaluate((x[100:], y[100:]))["accuracy"] > 0.9
    bad = y.copy()
    bad[0] = 7
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        trainer.fit(Subset(ArrayDataset(x, bad), np.arange(100)), epochs=1)
