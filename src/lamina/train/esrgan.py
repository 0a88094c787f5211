"""ESRGAN's training steps (Wang et al. 2018), for a generator G (low -> high resolution), a critic
C (images -> logits) and, optionally, a perceptual loss network phi:

    L_G = L_percep + lambda L_G^Ra + eta L_1     L_1 = mean |G(x_lr) - x_hr|,
    L_D = L_D^Ra                                  (lambda = 5e-3, eta = 1e-2)

with L_percep the mean absolute difference of phi's features before activation
(:func:`lamina.models.esrgan.feature_l1_loss`) and the relativistic average losses of
:mod:`lamina.models.esrgan`. One :meth:`ESRGANTrainer.step` is an Adam step of G on L_G, then one
of C on L_D against the same (detached) made images. ``pixel_weight=1`` and
``perceptual=None`` with ``gan_weight=0`` give the PSNR-oriented pre-training (L_1 only).
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import l1_loss
from lamina.models.esrgan import feature_l1_loss, relativistic_discriminator_loss, relativistic_generator_loss
from lamina.nn.module import Module
from lamina.nn.perceptual_loss import PerceptualLoss
from lamina.optim import Adam

__all__ = ["ESRGANTrainer"]


def _weight(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"ESRGANTrainer: {what} must be a number >= 0, got {value!r}")
    return float(value)


class ESRGANTrainer:
    """Alternating Adam steps (lr 1e-4, betas (0.9, 0.99), the paper's) on ``generator`` and
    ``discriminator`` (None: no adversarial term, the discriminator is not trained). Weights:
    ``pixel_weight`` (eta), ``perceptual_weight`` and ``gan_weight`` (lambda); ``perceptual``
    is a :class:`~lamina.nn.PerceptualLoss` whose content layers are compared (None: no
    perceptual term)."""

    def __init__(self, generator: Module, discriminator: Module | None = None,
                 perceptual: PerceptualLoss | None = None, pixel_weight: float = 1e-2,
                 perceptual_weight: float = 1.0, gan_weight: float = 5e-3, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99)):
        if perceptual is not None and not isinstance(perceptual, PerceptualLoss):
            raise TypeError(f"ESRGANTrainer: perceptual must be a PerceptualLoss or None, got "
                            f"{type(perceptual).__name__}")
        self.generator, self.discriminator, self.perceptual = generator, discriminator, perceptual
        self.pixel_weight = _weight(pixel_weight, "pixel_weight")
        self.perceptual_weight = _weight(perceptual_weight, "perceptual_weight")
        self.gan_weight = _weight(gan_weight, "gan_weight")
        if not (isinstance(lr, numbers.Real) and lr > 0):
            raise ValueError(f"ESRGANTrainer: lr must be a positive number, got {lr!r}")
        self.lr, self.betas = float(lr), tuple(betas)
        self.g_optimizer: Adam | None = None
        self.d_optimizer: Adam | None = None

    def _optimizers(self) -> None:
        if self.g_optimizer is None:
            self.g_optimizer = Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)
            if self.discriminator is not None:
                self.d_optimizer = Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)

    def generator_loss(self, lr_images, hr_images) -> tuple[Tensor, dict[str, float], Tensor]:
        """(L_G, its parts, the made images G(x_lr))."""
        made = self.generator(lr_images)
        hr = hr_images if isinstance(hr_images, Tensor) else Tensor(np.asarray(hr_images, dtype=made.dtype))
        if made.shape != hr.shape:
            raise ShapeError(f"ESRGANTrainer: the generator makes images of shape {made.shape} but the "
                             f"high-resolution targets have shape {hr.shape}")
        pixel = l1_loss(made, hr)
        total, parts = pixel * self.pixel_weight, {"pixel": float(pixel.item())}
        if self.perceptual is not None and self.perceptual_weight:
            percep = feature_l1_loss(self.perceptual, made, hr)
            total, parts["perceptual"] = total + percep * self.perceptual_weight, float(percep.item())
        if self.discriminator is not None and self.gan_weight:
            adversarial = relativistic_generator_loss(self.discriminator(hr).detach(), self.discriminator(made))
            total, parts["gan"] = total + adversarial * self.gan_weight, float(adversarial.item())
        return total, parts, made

    def step(self, lr_images, hr_images) -> dict[str, float]:
        """One generator step, then one discriminator step; the losses by name."""
        lr_images = lr_images if isinstance(lr_images, Tensor) else Tensor(np.asarray(lr_images))
        total, parts, made = self.generator_loss(lr_images, hr_images)
        self._optimizers()
        self.g_optimizer.zero_grad()
        total.backward()
        self.g_optimizer.step()
        parts["generator"] = float(total.item())
        if self.discriminator is not None and self.gan_weight:
            hr = hr_images if isinstance(hr_images, Tensor) else Tensor(np.asarray(hr_images, dtype=made.dtype))
            d_loss = relativistic_discriminator_loss(self.discriminator(hr), self.discriminator(made.detach()))
            self.d_optimizer.zero_grad()
            d_loss.backward()
            self.d_optimizer.step()
            parts["discriminator"] = float(d_loss.item())
        return parts
