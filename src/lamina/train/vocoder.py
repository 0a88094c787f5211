"""Adversarial training of a GAN vocoder (HiFi-GAN, Kong et al. 2020).

One step on a batch of mel spectrograms s (batch, frames, n_mels) and their waveforms x
(batch, frames hop):

    x^ = G(s)
    discriminators:  minimise sum over the ensembles of L_D(D(x), D(stop_gradient(x^)))
    generator:       minimise sum over the ensembles of L_adv(D(x^)) + L_fm(D(x), D(x^))
                     + L_mel(x^, x)

(the costs of :mod:`lamina.functional.vocoder_losses`), each with its own AdamW (the paper's
lr 2e-4, betas (0.8, 0.99), weight decay 0.01). ``adversarial=False`` trains the generator on
L_mel alone (a warm-up, or a quick check that the generator learns).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.vocoder_losses import (
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mel_spectrogram_l1_loss,
)
from lamina.nn.module import Module
from lamina.optim import AdamW

__all__ = ["VocoderTrainer"]


class VocoderTrainer:
    """Alternating discriminator and generator updates of a vocoder (module docstring).

    ``generator`` maps (batch, frames, n_mels) to (batch, samples); each of ``discriminators``
    (e.g. a :class:`lamina.models.MultiPeriodDiscriminator` and a
    :class:`lamina.models.MultiScaleDiscriminator`) maps waveforms to (scores, feature maps).
    ``mel_options`` go to :func:`lamina.functional.vocoder_log_mel_spectrogram`;
    ``mel_weight`` and ``feature_weight`` scale L_mel and L_fm (45 and 2 in the paper)."""

    def __init__(self, generator: Module, discriminators: Sequence[Module] = (), lr: float = 2e-4,
                 betas: tuple[float, float] = (0.8, 0.99), weight_decay: float = 0.01, mel_weight: float = 45.0,
                 feature_weight: float = 2.0, mel_options: dict | None = None, adversarial: bool = True):
        self.generator = generator
        self.discriminators = list(discriminators)
        self.adversarial = bool(adversarial)
        if self.adversarial and not self.discriminators:
            raise ValueError("VocoderTrainer: adversarial training needs at least one discriminator; pass "
                             "discriminators=(...) or adversarial=False")
        self.mel_weight, self.feature_weight = float(mel_weight), float(feature_weight)
        self.mel_options = dict(mel_options or {})
        self.g_optimizer = AdamW(generator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        d_params = [p for d in self.discriminators for p in d.parameters()]
        self.d_optimizer = AdamW(d_params, lr=lr, betas=betas, weight_decay=weight_decay) if d_params else None

    def _check(self, mel: Tensor, wave: Tensor, fake: Tensor) -> None:
        if tuple(fake.shape) != tuple(wave.shape):
            raise ShapeError(f"VocoderTrainer: the generator made waveforms of shape {tuple(fake.shape)} from mel "
                             f"spectrograms of shape {tuple(mel.shape)}, but the target waveforms have shape "
                             f"{tuple(wave.shape)}; expected equal shapes (frames x hop samples)")

    def discriminator_step(self, wave: Tensor, fake: Tensor) -> float:
        """One update of every discriminator on real ``wave`` and generated ``fake`` (held
        constant); returns L_D summed over the ensembles."""
        self.d_optimizer.zero_grad()
        total = None
        for discriminator in self.discriminators:
            real_scores, _ = discriminator(wave)
            fake_scores, _ = discriminator(fake)
            loss = lsgan_discriminator_loss(real_scores, fake_scores)
            total = loss if total is None else total + loss
        total.backward()
        self.d_optimizer.step()
        return float(total.item())

    def generator_step(self, mel: Tensor, wave: Tensor) -> dict[str, float]:
        """One update of the generator; returns its cost terms."""
        self.g_optimizer.zero_grad()
        fake = self.generator(mel)
        self._check(mel, wave, fake)
        mel_loss = mel_spectrogram_l1_loss(fake, wave, self.mel_weight, **self.mel_options)
        total, logs = mel_loss, {"mel": float(mel_loss.item())}
        if self.adversarial:
            adversarial = features = 0.0
            for discriminator in self.discriminators:
                with no_grad():
                    _, real_features = discriminator(wave)
                fake_scores, fake_features = discriminator(fake)
                adversarial = adversarial + lsgan_generator_loss(fake_scores)
                features = features + feature_matching_loss(real_features, fake_features, self.feature_weight)
            total = total + adversarial + features
            logs.update(adversarial=float(adversarial.item()), feature_matching=float(features.item()))
        total.backward()                   # the discriminators' gradients are cleared by their next step
        self.g_optimizer.step()
        logs["generator"] = float(total.item())
        return logs

    def train_step(self, mel, wave) -> dict[str, float]:
        """A discriminator update (when adversarial) then a generator update on one batch; returns
        the losses as floats: 'discriminator', 'generator', 'mel' and, when adversarial,
        'adversarial' and 'feature_matching'."""
        mel = mel if isinstance(mel, Tensor) else Tensor(mel)
        wave = wave if isinstance(wave, Tensor) else Tensor(wave)
        logs = {}
        if self.adversarial:
            with no_grad():
                fake = self.generator(mel)
            self._check(mel, wave, fake)
            logs["discriminator"] = self.discriminator_step(wave, Tensor(fake.data))
        logs.update(self.generator_step(mel, wave))
        return logs
