"""DiffusionTrainer and train_diffusion: the history, callbacks and early stop, seeding, the
weight average (EMA), class-conditional training with classifier-free guidance, and errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.models import DenoisingMLP, DiffusionModel
from lamina.train import DiffusionTrainer, LambdaCallback, train_diffusion

CENTERS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def mixture(n, seed=0):
    """Samples of three Gaussian modes and the mode of each."""
    rng = np.random.default_rng(seed)
    modes = rng.integers(0, 3, n)
    return (CENTERS[modes] + 0.25 * rng.standard_normal((n, 2))).astype(np.float32), modes


def small_model(**options):
    return DiffusionModel(DenoisingMLP(hidden=(32, 32), time_dim=16, **options), schedule="cosine",
                          num_timesteps=50)


def test_history_and_evaluation_mode():
    x, _ = mixture(512)
    model = small_model()
    history = train_diffusion(model, x, epochs=6, batch_size=64, lr=5e-3, seed=0)
    assert list(history) == ["loss"] and len(history["loss"]) == 6
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert not model.training and model.sample_shape == (2,)


def test_seeded_training_is_reproducible():
    x, _ = mixture(200)
    runs = []
    for _ in range(2):
        lamina.manual_seed(3)
        model = small_model()
        history = train_diffusion(model, x, epochs=2, batch_size=50, seed=1)
        runs.append((history["loss"], model.sample(4, steps=5)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_callbacks_see_each_batch_and_can_stop():
    x, _ = mixture(70)
    seen = []

    def stop_after_three(iteration, logs):
        seen.append((iteration, logs["batch_size"]))
        if iteration == 3:
            trainer.stop_training = True

    trainer = DiffusionTrainer(small_model(), callbacks=[LambdaCallback(on_batch_end=stop_after_three)])
    history = trainer.fit(x, epochs=5, batch_size=32)
    assert seen == [(1, 32), (2, 32), (3, 6)]
    assert len(history["loss"]) == 1


def test_weight_average():
    x, _ = mixture(96)
    trainer = DiffusionTrainer(small_model(), lr=1e-2, ema=0.9)
    trainer.fit(x, epochs=2, batch_size=32)
    assert trainer.averaged.n_averaged == 6
    model_weights = [p.numpy() for p in trainer.model.parameters()]
    ema_weights = [p.numpy() for p in trainer.ema_model.parameters()]
    assert max(np.abs(a - b).max() for a, b in zip(model_weights, ema_weights)) > 1e-3
    assert trainer.ema_model.sample(3, steps=4).shape == (3, 2)
    # decay 0 keeps the last weights, which train_diffusion then copies into the model
    model = small_model()
    lamina.manual_seed(0)
    train_diffusion(model, x, epochs=1, batch_size=32, ema=0.0)
    lamina.manual_seed(0)
    plain = small_model()
    train_diffusion(plain, x, epochs=1, batch_size=32)
    for a, b in zip(model.parameters(), plain.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-9)


def test_conditional_training_and_guidance():
    """A net told each sample's mode learns the three modes; guided samples of one label land on its mode."""
    x, modes = mixture(1500)
    model = DiffusionModel(DenoisingMLP(hidden=(48, 48), time_dim=16, num_classes=3), schedule="cosine",
                           num_timesteps=50, label_dropout=0.2)
    history = train_diffusion(model, x, labels=modes, epochs=40, batch_size=128, lr=5e-3, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    for label in range(3):
        samples = model.sample(200, labels=label, guidance_scale=2.0)
        near = np.linalg.norm(samples - CENTERS[label], axis=1) < 0.75
        assert near.mean() > 0.8, (label, near.mean())


def test_errors():
    x, modes = mixture(10)
    with pytest.raises(TypeError, match="DiffusionTrainer: the model must be a DiffusionModel"):
        DiffusionTrainer(DenoisingMLP())
    with pytest.raises(ValueError, match=r"ema must be None or a decay in \[0, 1\)"):
        DiffusionTrainer(small_model(), ema=1.0)
    with pytest.raises(ValueError, match="clip_norm must be None or a number > 0"):
        DiffusionTrainer(small_model(), clip_norm=0)
    with pytest.raises(ValueError, match=r"labels must be 10 integers, one per sample, got shape \(9,\)"):
        train_diffusion(small_model(num_classes=3), x, labels=modes[:9])
    with pytest.raises(ValueError, match="train_diffusion: x must hold floating-point values"):
        train_diffusion(small_model(), np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="train_diffusion: epochs must be an int >= 0"):
        train_diffusion(small_model(), x, epochs=-1)
    with pytest.raises(ValueError, match="no num_classes"):
        train_diffusion(small_model(), x, labels=modes)


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_run(tmp_path, ema):
    x, modes = mixture(150)
    lamina.manual_seed(5)
    whole = small_model(num_classes=3)
    train_diffusion(whole, x, labels=modes, epochs=4, batch_size=40, ema=ema, seed=2)

    lamina.manual_seed(5)
    first = small_model(num_classes=3)
    path = tmp_path / "checkpoint.safetensors"
    train_diffusion(first, x, labels=modes, epochs=2, batch_size=40, ema=ema, seed=2, checkpoint=path)
    lamina.manual_seed(123)                            # the checkpoint restores lamina's generator
    resumed = small_model(num_classes=3)
    history = train_diffusion(resumed, x, labels=modes, epochs=4, batch_size=40, ema=ema, seed=2,
                              resume_from=path, checkpoint=path)
    assert len(history["loss"]) == 4
    for name, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)


def test_checkpoint_errors(tmp_path):
    x, _ = mixture(64)
    path = tmp_path / "checkpoint.safetensors"
    train_diffusion(small_model(), x, epochs=1, batch_size=32, checkpoint=path)
    with pytest.raises(ValueError, match="ema=None.*same option"):
        train_diffusion(small_model(), x, epochs=2, batch_size=32, ema=0.9, resume_from=path)
    with pytest.raises(ValueError, match="batch_size"):
        train_diffusion(small_model(), x, epochs=2, batch_size=16, resume_from=path)
    other = tmp_path / "other.safetensors"
    lamina.io.save_file({"w": np.zeros(2, np.float32)}, other, {"format": "something"})
    with pytest.raises(ValueError, match="not a diffusion training checkpoint"):
        train_diffusion(small_model(), x, epochs=2, batch_size=32, resume_from=other)
