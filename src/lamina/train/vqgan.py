"""Training a VQGAN (Esser et al. 2021, "Taming Transformers for High-Resolution Image
Synthesis") and its transformer prior.

Generator cost (:func:`vqgan_loss`), for an image x, its reconstruction x_hat = G(q(E(x))) and
a patch discriminator D:

    L_rec = mean |x - x_hat| + w_p mean LPIPS(x, x_hat)       (w_p = ``perceptual_weight``)
    L_GAN = -mean D(x_hat)                                     (hinge; 'vanilla': mean softplus(-D(x_hat)))
    lambda = clip(||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + 1e-4), 0, 1e4)   (:func:`adaptive_weight`)
    L = L_rec + L_VQ + f(t) w_d lambda L_GAN

G_L the last layer of the decoder (:attr:`lamina.models.VQGAN.last_layer`), the norms taken
over its whole weight and lambda held constant (no gradient flows through it); w_d =
``disc_weight``; f(t) = ``disc_factor`` once the step t reaches ``disc_start``, 0 before (the
autoencoder first learns to reconstruct alone).

Discriminator cost (:func:`vqgan_discriminator_loss`), hinge:

    L_D = f(t) (mean relu(1 - D(x)) + mean relu(1 + D(sg(x_hat)))) / 2

('vanilla': softplus(-D(x)) and softplus(D(x_hat)) in place of the two hinges).
:class:`VQGANTrainer` alternates one Adam step of each (the generator first, as the
reference); :func:`train_vqgan_prior` fits a :class:`lamina.models.VQGANTransformer`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, grad
from lamina.errors import ShapeError
from lamina.models.vqgan import VQGAN
from lamina.models.vqgan_prior import VQGANTransformer
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor, evaluation_mode
from lamina.optim import Adam

__all__ = ["VQGANLoss", "VQGANTrainer", "adaptive_weight", "train_vqgan_prior", "vqgan_discriminator_loss",
           "vqgan_loss"]

GAN_KINDS = ("hinge", "vanilla")
VQGAN_BETAS = (0.5, 0.9)


class VQGANLoss(NamedTuple):
    """The generator's cost ``total`` (a scalar Tensor) and its parts as floats: ``l1``,
    ``perceptual``, ``codebook``, ``gan`` (L_GAN before weighting), ``adaptive_weight``
    (lambda; 0 while the GAN term is off) and ``disc_factor`` (f(t))."""

    total: Tensor
    l1: float
    perceptual: float
    codebook: float
    gan: float
    adaptive_weight: float
    disc_factor: float


def _check_kind(gan: str, who: str) -> str:
    if gan not in GAN_KINDS:
        raise ValueError(f"{who}: gan must be one of {GAN_KINDS}, got {gan!r}")
    return gan


def disc_factor_at(step: int, disc_start: int, disc_factor: float = 1.0) -> float:
    """f(t): ``disc_factor`` once ``step`` >= ``disc_start``, 0 before."""
    return float(disc_factor) if step >= disc_start else 0.0


def adaptive_weight(rec_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, delta: float = 1e-4,
                    max_weight: float = 1e4) -> float:
    """lambda = clip(||dL_rec/dW|| / (||dL_GAN/dW|| + delta), 0, max_weight), W = ``last_layer``,
    the norms Frobenius norms over the whole weight. Neither loss's graph is freed."""
    if not isinstance(last_layer, Tensor) or not last_layer.requires_grad:
        raise TypeError("adaptive_weight: last_layer must be a weight Tensor that requires grad")
    rec_grad, = grad(rec_loss, [last_layer], retain_graph=True)
    gan_grad, = grad(gan_loss, [last_layer], retain_graph=True)
    xp = backend.xp
    ratio = float(xp.sqrt((rec_grad * rec_grad).sum())) / (float(xp.sqrt((gan_grad * gan_grad).sum())) + delta)
    return float(np.clip(ratio, 0.0, max_weight))


def _generator_gan_loss(logits: Tensor, gan: str) -> Tensor:
    return F.hinge_g_loss(logits) if gan == "hinge" else F.logistic_g_loss(logits)


def vqgan_loss(model: VQGAN, discriminator: Module, x, step: int = 0, perceptual: Module | None = None,
               perceptual_weight: float = 1.0, disc_start: int = 0, disc_weight: float = 1.0,
               disc_factor: float = 1.0, gan: str = "hinge", output=None) -> VQGANLoss:
    """The generator's cost L (module docstring) on images ``x`` (N, H, W, C) at training step
    ``step``. ``perceptual``: a distance network called as perceptual(x, x_hat) -> (N,) (an
    :class:`lamina.models.LPIPS`), or None for none. ``output``: the model's forward pass on
    ``x`` when already made (it is made here otherwise)."""
    gan = _check_kind(gan, "vqgan_loss")
    x = as_tensor(x)
    out = model(x) if output is None else output
    x_hat = out.reconstruction
    if x_hat.shape != x.shape:
        raise ShapeError(f"vqgan_loss: the reconstruction has shape {tuple(x_hat.shape)}, the images "
                         f"{tuple(x.shape)}")
    l1 = F.l1_loss(x_hat, x)
    rec = l1
    distance = 0.0
    if perceptual is not None and perceptual_weight:
        perceptual_term = perceptual(x, x_hat).mean()
        distance = float(perceptual_term.item())
        rec = rec + perceptual_weight * perceptual_term
    total = rec + out.vq_loss
    factor = disc_factor_at(step, disc_start, disc_factor)
    g_loss, weight = None, 0.0
    if factor:
        g_loss = _generator_gan_loss(discriminator(x_hat), gan)
        weight = adaptive_weight(rec, g_loss, model.last_layer) * float(disc_weight)
        total = total + (factor * weight) * g_loss
    return VQGANLoss(total, float(l1.item()), distance, float(out.vq_loss.item()),
                     0.0 if g_loss is None else float(g_loss.item()), weight, factor)


def vqgan_discriminator_loss(discriminator: Module, real, fake, step: int = 0, disc_start: int = 0,
                             disc_factor: float = 1.0, gan: str = "hinge") -> Tensor:
    """L_D (module docstring): f(t) (hinge(real) + hinge(fake)) / 2, ``fake`` detached."""
    gan = _check_kind(gan, "vqgan_discriminator_loss")
    real, fake = as_tensor(real), as_tensor(fake).detach()
    if real.shape != fake.shape:
        raise ShapeError(f"vqgan_discriminator_loss: real images {tuple(real.shape)} and fakes "
                         f"{tuple(fake.shape)} must have one shape")
    real_logits, fake_logits = discriminator(real), discriminator(fake)
    if gan == "hinge":
        pair = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    else:
        pair = F.logistic_d_loss(real_logits, fake_logits)
    return (0.5 * disc_factor_at(step, disc_start, disc_factor)) * pair


class VQGANTrainer:
    """Alternating Adam steps (``lr``, betas (0.5, 0.9) as the reference) on a VQGAN and a
    discriminator (module docstring): :meth:`train_step` on one batch, :meth:`fit` over epochs.
    ``perceptual`` (e.g. an LPIPS) stays fixed. :attr:`step` counts the generator steps;
    :attr:`history` the per-step values 'l1', 'perceptual', 'codebook', 'gan', 'd_loss',
    'adaptive_weight'."""

    def __init__(self, model: VQGAN, discriminator: Module, perceptual: Module | None = None,
                 perceptual_weight: float = 1.0, disc_start: int = 0, disc_weight: float = 1.0,
                 disc_factor: float = 1.0, gan: str = "hinge", lr: float = 2e-4,
                 betas: tuple[float, float] = VQGAN_BETAS):
        if not isinstance(model, VQGAN):
            raise TypeError(f"VQGANTrainer: model must be a VQGAN, got {type(model).__name__}")
        if not isinstance(discriminator, Module) or discriminator is model:
            raise TypeError("VQGANTrainer: discriminator must be a Module other than the model")
        self.model, self.discriminator, self.perceptual = model, discriminator, perceptual
        self.options = {"perceptual_weight": float(perceptual_weight), "disc_start": int(disc_start),
                        "disc_weight": float(disc_weight), "disc_factor": float(disc_factor),
                        "gan": _check_kind(gan, "VQGANTrainer")}
        self.lr, self.betas = float(lr), tuple(betas)
        self.g_optimizer = Adam(model.parameters(), lr=self.lr, betas=self.betas)
        self.d_optimizer: Adam | None = None
        self.step = 0
        self.history: dict[str, list[float]] = {}

    def _d_optimizer(self, x: Tensor) -> Adam:
        if self.d_optimizer is None:
            if not self.discriminator.built:
                with evaluation_mode(self.discriminator):
                    self.discriminator(x[:1].detach())
            self.d_optimizer = Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)
        return self.d_optimizer

    def train_step(self, x) -> dict[str, float]:
        """One generator step, then one discriminator step, on the batch ``x``."""
        x = as_tensor(x)
        d_optimizer = self._d_optimizer(x)
        options = self.options
        self.model.train()
        self.discriminator.train()
        self.g_optimizer.zero_grad()
        out = self.model(x)
        loss = vqgan_loss(self.model, self.discriminator, x, self.step, self.perceptual, output=out,
                          **{k: options[k] for k in ("perceptual_weight", "disc_start", "disc_weight",
                                                     "disc_factor", "gan")})
        loss.total.backward()
        self.g_optimizer.step()
        d_optimizer.zero_grad()
        d_loss = vqgan_discriminator_loss(self.discriminator, x, out.reconstruction, self.step, options["disc_start"],
                                          options["disc_factor"], options["gan"])
        if d_loss.requires_grad and loss.disc_factor:
            d_loss.backward()
            d_optimizer.step()
        self.step += 1
        values = {"l1": loss.l1, "perceptual": loss.perceptual, "codebook": loss.codebook, "gan": loss.gan,
                  "d_loss": float(d_loss.item()), "adaptive_weight": loss.adaptive_weight}
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        return values

    def fit(self, x, epochs: int = 1, batch_size: int = 32, seed: int | None = None) -> dict[str, list[float]]:
        """Train on images ``x`` (n, H, W, C) for ``epochs`` epochs of shuffled batches; returns
        :attr:`history`. The models are left in evaluation mode."""
        x = np.asarray(x)
        if x.ndim != 4 or x.dtype.kind != "f":
            raise ShapeError(f"VQGANTrainer.fit: x must be float NHWC images (n, H, W, C), got shape {x.shape}, "
                             f"dtype {x.dtype}")
        batch_size = positive_int(batch_size, "VQGANTrainer.fit: batch_size")
        rng = np.random.default_rng(seed)
        for _ in range(int(epochs)):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                self.train_step(x[order[start:start + batch_size]].astype(backend.get_default_dtype()))
        self.model.eval()
        self.discriminator.eval()
        return self.history


def train_vqgan_prior(prior: VQGANTransformer, data, epochs: int = 1, batch_size: int = 32, lr: float = 1e-3,
                      seed: int | None = None) -> list[float]:
    """Fit ``prior``'s transformer (its VQGAN stays fixed) by Adam on the next-code
    cross-entropy of ``data``: images (n, H, W, C), encoded once, or index maps (n, h, w).
    Returns the loss of every step."""
    data = np.asarray(data)
    indices = prior.encode(data.astype(backend.get_default_dtype())) if data.ndim == 4 else data
    batch_size = positive_int(batch_size, "train_vqgan_prior: batch_size")
    optimizer = Adam(prior.transformer.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    prior.transformer.train()
    for _ in range(int(epochs)):
        order = rng.permutation(len(indices))
        for start in range(0, len(indices), batch_size):
            optimizer.zero_grad()
            loss = prior.loss(indices[order[start:start + batch_size]])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
    prior.eval()
    return losses
