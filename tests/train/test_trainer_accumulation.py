"""Gradient accumulation, ``validation_split`` and ``LambdaCallback`` in the fit loop."""

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import models, nn, optim
from lamina.data import ArrayDataset, DataLoader, Subset
from lamina.train import Callback, LambdaCallback, ModelCheckpoint, Trainer
from lamina.train import checkpoint as ckpt


def blobs(n=240, seed=0):
    """Three Gaussian blobs in 4 dimensions: an easy, real classification task."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 4)) * 3
    y = rng.integers(0, 3, n)
    x = (centres[y] + rng.standard_normal((n, 4))).astype(np.float32)
    return x, y


OPTIMIZERS = {
    "sgd": lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
    "adam": lambda params: optim.Adam(params, lr=0.01),
}


def weights_after(n, batch_size, accumulate, kind, epochs=2, clip_norm=None, schedule=False):
    """The weights of an MLP trained in float64 on n samples, without shuffling."""
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(5)
    x, y = blobs(n)
    model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
    opt = OPTIMIZERS[kind](model.parameters())
    steps_per_epoch = -(-n // (batch_size * accumulate))
    cosine = optim.CosineDecay(opt.lr, 2 * steps_per_epoch, optimizer=opt) if schedule else None
    trainer = Trainer(model, "categorical_cross_entropy", opt, verbose=0, accumulate=accumulate, clip_norm=clip_norm,
                      schedule=cosine)
    trainer.fit((x.astype(np.float64), y), epochs=epochs, batch_size=batch_size, shuffle=False)
    return model.state_dict(), trainer


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("options", [{}, {"clip_norm": 0.05, "schedule": True}], ids=["plain", "clip+schedule"])
@pytest.mark.parametrize("n", [128, 92], ids=["full-groups", "last-group-short"])
def test_four_batches_of_8_step_as_one_batch_of_32(kind, options, n):
    # n = 92: each epoch ends in a group of mini-batches of 8, 8, 8 and 4, which must weigh
    # them 8/28 and 4/28 as the one batch of 28 the other run ends its epoch with
    big, one = weights_after(n, 32, 1, kind, **options)
    small, four = weights_after(n, 8, 4, kind, **options)
    assert big.keys() == small.keys()
    for key in big:
        assert big[key].dtype == np.float64
        np.testing.assert_allclose(small[key], big[key], rtol=1e-12, atol=1e-12, err_msg=key)
    batches = -(-n // 8)
    assert four.steps == one.steps == four.optimizer.step_count == 2 * -(-n // 32)
    assert four.iteration == 2 * batches and len(four.history.iteration["loss"]) == 2 * batches
    if options.get("schedule"):
        assert four.schedule.t == one.schedule.t == four.steps
    # the weights really moved, and differ from those of 8-sample steps
    start, _ = weights_after(n, 8, 1, kind, epochs=0, **options)
    per_batch, _ = weights_after(n, 8, 1, kind, **options)
    assert not np.allclose(start["dense.weight"], small["dense.weight"])
    assert not np.allclose(per_batch["dense.weight"], small["dense.weight"], rtol=1e-6, atol=1e-9)


def test_epoch_loss_and_callbacks_stay_per_mini_batch():
    x, y = blobs(100)
    batches, steps = [], []
    spy = LambdaCallback(on_batch_end=lambda it, logs: (batches.append((it, logs["batch_size"])),
                                                         steps.append(trainer.optimizer.step_count)))
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), verbose=0,
                      accumulate=3, callbacks=[spy])
    history = trainer.fit((x, y), epochs=1, batch_size=16, shuffle=False)
    assert batches == [(i + 1, 16) for i in range(6)] + [(7, 4)]
    assert steps == [0, 0, 1, 1, 1, 2, 3]           # a step after batches 3 and 6 and the short group (batch 7)
    assert trainer.steps == 3 and trainer.iteration == 7
    losses = history.iteration["loss"]
    assert history["loss"][0] == pytest.approx((sum(losses[:6]) * 16 + losses[6] * 4) / 100)


def test_accumulate_must_be_a_positive_integer():
    model = models.mlp(hidden=(4,), num_classes=3, input_shape=(4,))
    for bad in (0, -2, 1.5, 2.0, True, "2", None):
        with pytest.raises(ValueError, match="Trainer: accumulate must be a positive integer"):
            Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), accumulate=bad)
    assert Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1),
                   accumulate=np.int64(3)).accumulate == 3


def test_stopping_in_the_middle_of_a_group_takes_no_step():
    x, y = blobs(64)
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    before = {k: v.copy() for k, v in model.state_dict().items()}

    class StopAtTwo(Callback):
        def on_batch_end(self, iteration, logs):
            if iteration == 2:
                self.trainer.stop_training = True

    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.5), verbose=0,
                      accumulate=4, callbacks=[StopAtTwo()])
    trainer.fit((x, y), epochs=3, batch_size=8)
    assert trainer.iteration == 2 and trainer.steps == 0 and trainer.optimizer.step_count == 0
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def train_with_accumulation(tmp_path, epochs, stop_after=None):
    def make():
        model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,), dropout=0.2)
        opt = optim.Adam(model.parameters(), lr=0.01)
        schedule = optim.schedules.CosineDecay(0.01, 5 * 4, optimizer=opt)   # 15 batches: 4 steps an epoch
        return Trainer(model, "categorical_cross_entropy", opt, schedule=schedule, verbose=0, accumulate=4,
                       callbacks=[ModelCheckpoint(tmp_path / "ckpt-{epoch}.safetensors")])

    lamina.manual_seed(7)
    x, y = blobs()
    trainer = make()
    trainer.fit((x, y), epochs=stop_after or epochs, batch_size=16)
    if stop_after:  # a new process would start from scratch: new objects, same seed
        lamina.manual_seed(7)
        trainer = make()
        trainer.fit((x, y), epochs=epochs, batch_size=16, resume_from=tmp_path / f"ckpt-{stop_after}.safetensors")
    return trainer.model.state_dict(), trainer


def test_resume_with_accumulation_is_bit_exact(tmp_path):
    full, straight = train_with_accumulation(tmp_path / "a", epochs=5)
    resumed, trainer = train_with_accumulation(tmp_path / "b", epochs=5, stop_after=2)
    assert full.keys() == resumed.keys()
    for key in full:
        np.testing.assert_array_equal(full[key], resumed[key], err_msg=key)
    for run in (straight, trainer):
        assert run.iteration == 75 and run.steps == 20 and run.schedule.t == 20
        assert run.optimizer.step_count == 20
    for key in ("loss", "accuracy"):
        assert trainer.history[key] == straight.history[key], key
    assert trainer.history.iteration["loss"] == straight.history.iteration["loss"]
    _, state = ckpt.read(tmp_path / "b" / "ckpt-2.safetensors")
    assert state["iteration"] == 30 and state["steps"] == 8 and state["optimizer"]["step_count"] == 8


# -- validation_split ---------------------------------------------------------------
def test_validation_split_holds_out_the_last_samples_before_shuffling():
    n = 50
    x = np.random.default_rng(0).standard_normal((n, 3)).astype(np.float32)
    ids = np.arange(n, dtype=np.float32).reshape(-1, 1)      # each target names its sample
    trained_on = []

    def spying_mse(out, target):
        if lamina.is_grad_enabled():                            # training, not evaluation
            trained_on.extend(np.asarray(target).ravel().astype(int).tolist())
        return F.mean_squared_error(out, target)

    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    trainer = Trainer(model, spying_mse, optim.SGD(model.parameters(), lr=1e-4), metrics=(), verbose=0)
    history = trainer.fit((x, ids), epochs=3, batch_size=7, shuffle=True, seed=1, validation_split=0.2)
    assert sorted(trained_on) == sorted(list(range(40)) * 3)     # floor(50 * 0.8) = 40 training samples
    assert trained_on[:40] != list(range(40))                      # and they were shuffled
    assert trainer.samples_per_epoch == 40 and len(history["val_loss"]) == 3
    assert history["val_loss"][-1] == trainer.evaluate((x[40:], ids[40:]))["loss"]


def test_validation_split_matches_an_explicit_validation_set():
    x, y = blobs()

    def train(**kwargs):
        lamina.manual_seed(3)
        model = models.mlp(hidden=(16,), num_classes=3, input_shape=(4,))
        trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=0.01), verbose=0)
        return trainer, trainer.fit(epochs=3, batch_size=16, seed=0, **kwargs)

    split, history = train(train=ArrayDataset(x, y), validation_split=0.25)     # floor(240 * 0.75) = 180
    explicit, reference = train(train=(x[:180], y[:180]), val=(x[180:], y[180:]))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == reference[key], key
    assert history["val_loss"][-1] == split.evaluate((x[180:], y[180:]))["loss"]
    assert history["val_accuracy"][-1] == split.evaluate((x[180:], y[180:]))["accuracy"]
    for key, value in split.model.state_dict().items():
        np.testing.assert_array_equal(value, explicit.model.state_dict()[key])
    from_subset, subset_history = train(train=Subset(ArrayDataset(x, y), np.arange(240)), validation_split=0.25)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert subset_history[key] == reference[key], key


def test_validation_split_errors():
    x, y = blobs(40)
    model = models.mlp(hidden=(4,), num_classes=3, input_shape=(4,))
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), verbose=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="validation_split needs arrays.*DataLoader"):
        trainer.fit(DataLoader(ArrayDataset(x, y), batch_size=8), validation_split=0.1)
    with pytest.raises(ValueError, match="either val or validation_split"):
        trainer.fit((x, y), val=(x, y), validation_split=0.1)
    for bad in (0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match=r"validation_split must be a fraction in \(0, 1\)"):
            trainer.fit((x, y), validation_split=bad)
    with pytest.raises(ValueError, match="leaves 0 for training and 5 for validation"):
        trainer.fit((x[:5], y[:5]), validation_split=0.9)
    with pytest.raises(ValueError, match="leaves 5 for training and 0 for validation"):
        trainer.fit((x[:5], y[:5]), validation_split=1e-17)
    assert trainer.optimizer.step_count == 0
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# -- LambdaCallback -----------------------------------------------------------------
def test_lambda_callback_calls_each_hook_with_its_arguments():
    x, y = blobs(100)
    calls = []
    callback = LambdaCallback(
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch, dict(logs))),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, dict(logs))),
        on_batch_end=lambda iteration, logs: calls.append(("batch_end", iteration, dict(logs))),
        on_train_begin=lambda logs: calls.append(("train_begin", dict(logs))),
        on_train_end=lambda logs: calls.append(("train_end", dict(logs))),
    )
    model = models.mlp(hidden=(8,), num_classes=3, input_shape=(4,))
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), verbose=0,
                      callbacks=[callback])
    history = trainer.fit((x, y), val=(x[:20], y[:20]), epochs=2, batch_size=32)
    assert callback.trainer is trainer
    names = [call[0] for call in calls]
    per_epoch = ["epoch_begin"] + ["batch_end"] * 4 + ["epoch_end"]
    assert names == ["train_begin"] + per_epoch * 2 + ["train_end"]
    assert calls[0] == ("train_begin", {})
    assert [c[1] for c in calls if c[0] == "epoch_begin"] == [0, 1]
    assert [c[1] for c in calls if c[0] == "epoch_end"] == [0, 1]
    batch_calls = [c for c in calls if c[0] == "batch_end"]
    assert [c[1] for c in batch_calls] == list(range(1, 9))
    assert [c[2]["batch_size"] for c in batch_calls] == [32, 32, 32, 4] * 2
    assert [c[2]["loss"] for c in batch_calls] == history.iteration["loss"]
    assert [c[2]["accuracy"] for c in batch_calls] == history.iteration["accuracy"]
    ends = [c[2] for c in calls if c[0] == "epoch_end"]
    assert [e["loss"] for e in ends] == history["loss"] and [e["val_loss"] for e in ends] == history["val_loss"]
    assert calls[-1] == ("train_end", ends[-1])
    assert calls[names.index("epoch_begin", 2)][2] == ends[0]   # an epoch begins with the last epoch's logs


def test_lambda_callback_hooks_are_optional_and_must_be_callable():
    x, y = blobs(40)
    ends = []
    model = models.mlp(hidden=(4,), num_classes=3, input_shape=(4,))
    trainer = Trainer(model, "categorical_cross_entropy", optim.SGD(model.parameters(), lr=0.1), verbose=0,
                      callbacks=[LambdaCallback(), LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(epoch))])
    trainer.fit((x, y), epochs=3, batch_size=16)
    assert ends == [0, 1, 2]
    with pytest.raises(TypeError, match="LambdaCallback: on_batch_end must be callable"):
        LambdaCallback(on_batch_end="print")
