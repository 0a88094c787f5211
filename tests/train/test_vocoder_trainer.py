import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import models, train
from lamina.errors import ShapeError

MEL = dict(sample_rate=2000, n_fft=64, n_mels=16, hop_length=16, win_length=64, f_max=None)


def sinusoids(frequencies=(150.0, 310.0, 470.0, 620.0), frames=32):
    t = np.arange(frames * MEL["hop_length"]) / MEL["sample_rate"]
    wave = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in frequencies]).astype(np.float32)
    return F.vocoder_log_mel_spectrogram(wave, **MEL).data, wave


def tiny_generator():
    return models.HiFiGANGenerator((4, 4), (8, 8), 32, "2", (3,), ((1, 3),), in_channels=MEL["n_mels"])


def tiny_discriminators():
    return [models.MultiPeriodDiscriminator((2, 3), channels=(4, 8, 8, 8, 8)),
            models.MultiScaleDiscriminator(channels=(4, 8, 8, 8, 8, 8, 8), groups=(1, 2, 2, 2, 2, 2, 1))]


def test_mel_loss_of_the_generator_drops_on_single_sinusoids():
    lamina.manual_seed(0)
    mel, wave = sinusoids()
    trainer = train.VocoderTrainer(tiny_generator(), lr=2e-3, mel_options=MEL, adversarial=False)
    losses = [trainer.train_step(mel, wave)["mel"] for _ in range(80)]
    assert np.mean(losses[-5:]) < 0.65 * losses[0]


def test_adversarial_steps_update_both_sides_with_finite_losses():
    lamina.manual_seed(1)
    mel, wave = sinusoids((200.0, 400.0), frames=16)
    generator, discriminators = tiny_generator(), tiny_discriminators()
    d_before = [p.data.copy() for d in discriminators for p in d.parameters()]
    g_before = [p.data.copy() for p in generator.parameters()]
    trainer = train.VocoderTrainer(generator, discriminators, mel_options=MEL)
    logs = [trainer.train_step(mel, wave) for _ in range(3)]
    assert set(logs[0]) == {"discriminator", "generator", "mel", "adversarial", "feature_matching"}
    assert all(np.isfinite(v) for step in logs for v in step.values())
    for step in logs:
        total = step["mel"] + step["adversarial"] + step["feature_matching"]
        assert abs(step["generator"] - total) < 1e-3 * total
    assert all(np.any(a != p.data) for a, p in zip(d_before, [p for d in discriminators for p in d.parameters()]))
    assert all(np.any(a != p.data) for a, p in zip(g_before, generator.parameters()))


def test_trainer_checks_its_arguments():
    with pytest.raises(ValueError, match="at least one discriminator"):
        train.VocoderTrainer(tiny_generator())
    mel, wave = sinusoids((200.0,), frames=8)
    trainer = train.VocoderTrainer(tiny_generator(), adversarial=False, mel_options=MEL)
    with pytest.raises(ShapeError, match="expected equal shapes"):
        trainer.train_step(mel, wave[:, :-16])


def test_readme_example_runs():
    printed, names = run_readme_section("GAN vocoders")
    assert printed.splitlines() == ["(2, 512)", "['adversarial', 'discriminator', 'feature_matching', 'generator', "
                                    "'mel']", "True"]
    assert not any(name.endswith("weight_v") for name, _ in names["generator"].named_parameters())
