"""Training loops for image-to-image translation: pix2pix (paired) and CycleGAN (unpaired),
following the authors' reference code (Isola et al. 2017; Zhu et al. 2017).

pix2pix, for input images a and target images b (one batch, G: a -> b, D on the pair [a, image]
joined along the channels):

    J_D = (gan(D([a, b]), real) + gan(D([a, G(a)]), fake)) / 2                (D's Adam step)
    J_G = gan(D([a, G(a)]), real) + lambda_L1 mean |G(a) - b|                  (G's Adam step)

with the 'vanilla' (logistic) :func:`lamina.functional.gan_loss` and lambda_L1 = 100.

CycleGAN, for unpaired images a (domain A) and b (domain B), generators G_AB: A -> B and
G_BA: B -> A, discriminators D_A (judges A images) and D_B (judges B images), and the 'lsgan'
cost (least squares):

    J_G = gan(D_B(G_AB(a)), real) + gan(D_A(G_BA(b)), real)
          + lambda_A |G_BA(G_AB(a)) - a|_1 + lambda_B |G_AB(G_BA(b)) - b|_1        (cycle)
          + lambda_id (lambda_A |G_BA(a) - a|_1 + lambda_B |G_AB(b) - b|_1)        (identity)
    J_D = (gan(D_B(b), real) + gan(D_B(pool_B(G_AB(a))), fake)) / 2 + the same for D_A

(lambda_A = lambda_B = 10, lambda_id = 0.5; each |.|_1 a mean over pixels). One Adam step on
both generators together, then one on both discriminators, which see made images through
:class:`ImagePool`s of the last 50 (the reference's D_A is this module's D_B: it judges B images).

Both use Adam with betas (0.5, 0.999), lr 2e-4, kept for ``n_epochs`` epochs and then lowered
linearly over ``n_epochs_decay`` more (:func:`linear_decay_factor`).
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional import concat, gan_loss, l1_loss
from lamina.functional.gan_losses import GAN_MODES
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam
from lamina.train.generative import GAN_BETAS, _check_epochs, _EpochLoop, _samples

__all__ = ["CycleGANTrainer", "ImagePool", "Pix2PixTrainer", "linear_decay_factor"]


def linear_decay_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """The reference's learning-rate multiplier for the 0-based ``epoch``: 1 for the first
    ``n_epochs`` epochs, then 1 - (epoch + 1 - n_epochs) / (n_epochs_decay + 1), falling
    linearly to 1 / (n_epochs_decay + 1) in the last of the ``n_epochs_decay`` epochs."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


class ImagePool:
    """A history of made images for the discriminator (Shrivastava et al. 2017), as in CycleGAN's
    reference: :meth:`query` takes a batch and returns one of the same shape. Until the pool
    holds ``pool_size`` images, each image is stored and returned as is; afterwards, with
    probability 1/2, an image stored earlier (drawn uniformly) is returned and the new one
    takes its place, else the new one is returned and the pool is left alone.
    ``pool_size=0`` returns every batch unchanged. ``seed`` fixes the draws."""

    def __init__(self, pool_size: int = 50, seed: int | None = None):
        if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 0:
            raise ValueError(f"ImagePool: pool_size must be an int >= 0, got {pool_size!r}")
        self.pool_size = int(pool_size)
        self.images: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images) -> np.ndarray:
        """The batch to show the discriminator in place of ``images`` (N, ...): an array (the
        values only; no gradient flows back to the generator)."""
        values = np.asarray(images.data if isinstance(images, Tensor) else images)
        if values.ndim < 1:
            raise ShapeError(f"ImagePool.query: expected a batch of images (N, ...), got shape {values.shape}")
        if self.pool_size == 0:
            return values
        returned = []
        for image in values:
            if len(self.images) < self.pool_size:
                self.images.append(image.copy())
                returned.append(image)
            elif self._rng.uniform() > 0.5:
                slot = int(self._rng.integers(self.pool_size))
                returned.append(self.images[slot])
                self.images[slot] = image.copy()
            else:
                returned.append(image)
        return np.stack(returned)


def _tensor(values) -> Tensor:
    return values if isinstance(values, Tensor) else Tensor(backend.xp.asarray(values))


def _check_mode(mode, who: str) -> str:
    if mode not in GAN_MODES:
        raise ValueError(f"{who}: gan_mode must be one of {GAN_MODES}, got {mode!r}")
    return mode


def _check_weight(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


def _parameters(*models: Module) -> list:
    return [p for model in models for p in model.parameters()]


class _TranslationLoop(_EpochLoop):
    """What both trainers share: Adam optimizers made once the models are built (by the shape
    check of the first :meth:`fit`), and the linear learning-rate decay per epoch."""

    generator_models: tuple[Module, ...] = ()
    discriminator_models: tuple[Module, ...] = ()

    def __init__(self, lr, betas, n_epochs, n_epochs_decay, callbacks, who: str):
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise ValueError(f"{who}: lr must be a positive number, got {lr!r}")
        self.lr, self.betas = float(lr), tuple(betas)
        self.n_epochs = None if n_epochs is None else _check_epochs(n_epochs, who)
        self.n_epochs_decay = _check_epochs(n_epochs_decay, who)
        self.g_optimizer: Adam | None = None
        self.d_optimizer: Adam | None = None
        super().__init__(callbacks)

    def _make_optimizers(self) -> None:
        if self.g_optimizer is None:
            self.g_optimizer = Adam(_parameters(*self.generator_models), lr=self.lr, betas=self.betas)
            self.d_optimizer = Adam(_parameters(*self.discriminator_models), lr=self.lr, betas=self.betas)

    def _run_epoch(self, loader):
        if self.n_epochs is not None:
            factor = linear_decay_factor(self.epoch, self.n_epochs, self.n_epochs_decay)
            self.g_optimizer.lr = self.d_optimizer.lr = self.lr * factor
        return super()._run_epoch(loader)

    def _fit_epochs(self, epochs) -> int:
        if epochs is None:
            if self.n_epochs is None:
                raise ValueError(f"{type(self).__name__}.fit: give epochs, or n_epochs to the trainer")
            return self.n_epochs + self.n_epochs_decay
        return _check_epochs(epochs, f"{type(self).__name__}.fit")


def _translated_shape(generator: Module, x: np.ndarray, who: str) -> tuple:
    """The shape of ``generator`` on two samples of ``x`` (building it on first use)."""
    with no_grad(), evaluation_mode(generator):
        return tuple(generator(Tensor(backend.xp.asarray(x[:2]))).shape)


class Pix2PixTrainer(_TranslationLoop):
    """pix2pix's alternating Adam steps (module docstring) on a generator G (a -> b images of
    the same height and width) and a conditional discriminator D (the pair [a, image] joined
    along the channels -> logits, one per patch or per image). ``lambda_l1`` weighs the L1
    term (100), ``gan_mode``: 'vanilla' (the paper's), 'lsgan' or 'wgangp'. With ``n_epochs``,
    the learning rate decays linearly over ``n_epochs_decay`` epochs after the first
    ``n_epochs``. :attr:`history` holds the per-epoch means of ``d_loss``, ``g_gan`` and
    ``g_l1`` (the L1 before weighting)."""

    log_names = ("d_loss", "g_gan", "g_l1")

    def __init__(self, generator: Module, discriminator: Module, lambda_l1: float = 100.0,
                 gan_mode: str = "vanilla", lr: float = 2e-4, betas: tuple[float, float] = GAN_BETAS,
                 n_epochs: int | None = None, n_epochs_decay: int = 0, callbacks=None):
        for what, model in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(model, Module):
                raise TypeError(f"Pix2PixTrainer: the {what} must be a Module, got {type(model).__name__}")
        if generator is discriminator:
            raise ValueError("Pix2PixTrainer: the generator and the discriminator must be two different models")
        self.generator, self.discriminator = generator, discriminator
        self.generator_models, self.discriminator_models = (generator,), (discriminator,)
        self.lambda_l1 = _check_weight(lambda_l1, "Pix2PixTrainer: lambda_l1")
        self.gan_mode = _check_mode(gan_mode, "Pix2PixTrainer")
        super().__init__(lr, betas, n_epochs, n_epochs_decay, callbacks, "Pix2PixTrainer")

    @property
    def models(self) -> tuple[Module, ...]:
        return self.generator, self.discriminator

    def train_step(self, batch) -> dict[str, float]:
        """One discriminator step, then one generator step, on a batch (a, b); returns its
        'd_loss', 'g_gan' and 'g_l1'."""
        real_a, real_b = (_tensor(part) for part in batch)
        fake_b = self.generator(real_a)

        self.d_optimizer.zero_grad()
        d_loss = 0.5 * (gan_loss(self.discriminator(concat([real_a, fake_b.detach()], axis=-1)), False, self.gan_mode)
                        + gan_loss(self.discriminator(concat([real_a, real_b], axis=-1)), True, self.gan_mode))
        d_loss.backward()
        self.d_optimizer.step()

        self.g_optimizer.zero_grad()
        g_gan = gan_loss(self.discriminator(concat([real_a, fake_b], axis=-1)), True, self.gan_mode)
        g_l1 = l1_loss(fake_b, real_b)
        (g_gan + self.lambda_l1 * g_l1).backward()     # D's gradients from here are cleared by its next step
        self.g_optimizer.step()
        return {"d_loss": float(d_loss.item()), "g_gan": float(g_gan.item()), "g_l1": float(g_l1.item())}

    def fit(self, a, b, epochs: int | None = None, batch_size: int = 1,
            seed: int | None = None) -> dict[str, list[float]]:
        """Train on the pairs (``a[i]``, ``b[i]``) for ``epochs`` epochs (default ``n_epochs +
        n_epochs_decay``) of shuffled batches (``seed`` fixes their order); returns
        :attr:`history`. The models are left in evaluation mode."""
        a, b = _samples(a, "Pix2PixTrainer.fit"), _samples(b, "Pix2PixTrainer.fit")
        if len(a) != len(b):
            raise ShapeError(f"Pix2PixTrainer.fit: a and b must hold as many images (pairs), got {len(a)} and "
                             f"{len(b)}")
        epochs = self._fit_epochs(epochs)
        positive_int(batch_size, "Pix2PixTrainer.fit: batch_size")
        made = _translated_shape(self.generator, a, "Pix2PixTrainer")
        if made[1:] != b.shape[1:]:
            raise ShapeError(f"Pix2PixTrainer.fit: the generator turns a {tuple(a.shape[1:])} into {made[1:]}, but "
                             f"the targets b are {tuple(b.shape[1:])}")
        with no_grad(), evaluation_mode(self.discriminator):
            self.discriminator(Tensor(backend.xp.asarray(np.concatenate([a[:2], b[:2]], axis=-1))))
        self._make_optimizers()
        return self._run(a, epochs, batch_size, seed, labels=b)


class CycleGANTrainer(_TranslationLoop):
    """CycleGAN's alternating Adam steps (module docstring) on generators ``generator_ab``
    (A -> B) and ``generator_ba`` (B -> A) and discriminators ``discriminator_a`` (A images ->
    logits) and ``discriminator_b``. ``lambda_a``, ``lambda_b``: the cycle weights (10);
    ``lambda_identity``: the identity weight relative to them (0.5; 0 leaves the identity
    terms out, which lets A and B have different channel counts); ``gan_mode``: 'lsgan' (the
    paper's), 'vanilla' or 'wgangp'; ``pool_size``: the :class:`ImagePool` size (50).
    :attr:`history` holds the per-epoch means of ``d_a``, ``d_b``, ``g_gan``, ``cycle``
    (both cycle terms, weighted) and ``identity`` (weighted)."""

    log_names = ("d_a", "d_b", "g_gan", "cycle", "identity")

    def __init__(self, generator_ab: Module, generator_ba: Module, discriminator_a: Module, discriminator_b: Module,
                 lambda_a: float = 10.0, lambda_b: float = 10.0, lambda_identity: float = 0.5,
                 gan_mode: str = "lsgan", pool_size: int = 50, lr: float = 2e-4,
                 betas: tuple[float, float] = GAN_BETAS, n_epochs: int | None = None, n_epochs_decay: int = 0,
                 callbacks=None, seed: int | None = None):
        models = (generator_ab, generator_ba, discriminator_a, discriminator_b)
        names = ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b")
        for what, model in zip(names, models):
            if not isinstance(model, Module):
                raise TypeError(f"CycleGANTrainer: {what} must be a Module, got {type(model).__name__}")
        if len({id(m) for m in models}) != 4:
            raise ValueError("CycleGANTrainer: the two generators and two discriminators must be four different models")
        self.generator_ab, self.generator_ba = generator_ab, generator_ba
        self.discriminator_a, self.discriminator_b = discriminator_a, discriminator_b
        self.generator_models = (generator_ab, generator_ba)
        self.discriminator_models = (discriminator_a, discriminator_b)
        self.lambda_a = _check_weight(lambda_a, "CycleGANTrainer: lambda_a")
        self.lambda_b = _check_weight(lambda_b, "CycleGANTrainer: lambda_b")
        self.lambda_identity = _check_weight(lambda_identity, "CycleGANTrainer: lambda_identity")
        self.gan_mode = _check_mode(gan_mode, "CycleGANTrainer")
        self.pool_a = ImagePool(pool_size, seed=None if seed is None else [seed, 1])   # made A images
        self.pool_b = ImagePool(pool_size, seed=None if seed is None else [seed, 2])   # made B images
        self._b_images: np.ndarray | None = None
        self._b_rng = np.random.default_rng(None if seed is None else [seed, 3])
        super().__init__(lr, betas, n_epochs, n_epochs_decay, callbacks, "CycleGANTrainer")

    @property
    def models(self) -> tuple[Module, ...]:
        return (*self.generator_models, *self.discriminator_models)

    def _gan(self, prediction, real: bool):
        return gan_loss(prediction, real, self.gan_mode)

    def generator_cost(self, real_a: Tensor, real_b: Tensor) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
        """J_G on a pair of batches; returns (J_G, its parts, G_AB(a), G_BA(b))."""
        fake_b, fake_a = self.generator_ab(real_a), self.generator_ba(real_b)
        g_gan = self._gan(self.discriminator_b(fake_b), True) + self._gan(self.discriminator_a(fake_a), True)
        cycle = (self.lambda_a * l1_loss(self.generator_ba(fake_b), real_a)
                 + self.lambda_b * l1_loss(self.generator_ab(fake_a), real_b))
        total = g_gan + cycle
        identity = 0.0
        if self.lambda_identity:
            identity_cost = self.lambda_identity * (self.lambda_a * l1_loss(self.generator_ba(real_a), real_a)
                                                    + self.lambda_b * l1_loss(self.generator_ab(real_b), real_b))
            total = total + identity_cost
            identity = float(identity_cost.item())
        parts = {"g_gan": float(g_gan.item()), "cycle": float(cycle.item()), "identity": identity}
        return total, parts, fake_b, fake_a

    def _discriminator_cost(self, discriminator: Module, real: Tensor, made: np.ndarray) -> Tensor:
        return 0.5 * (self._gan(discriminator(real), True) + self._gan(discriminator(_tensor(made)), False))

    def train_step(self, batch) -> dict[str, float]:
        """One step of both generators, then one of both discriminators, on a batch of A images
        and as many B images drawn at random (as the reference's unaligned data set does);
        returns 'd_a', 'd_b', 'g_gan', 'cycle' and 'identity'."""
        real_a = _tensor(batch)
        real_b = _tensor(self._b_images[self._b_rng.integers(len(self._b_images), size=real_a.shape[0])])

        self.g_optimizer.zero_grad()
        total, logs, fake_b, fake_a = self.generator_cost(real_a, real_b)
        total.backward()                           # the discriminators' gradients are cleared below
        self.g_optimizer.step()

        self.d_optimizer.zero_grad()
        d_b = self._discriminator_cost(self.discriminator_b, real_b, self.pool_b.query(fake_b.detach()))
        d_a = self._discriminator_cost(self.discriminator_a, real_a, self.pool_a.query(fake_a.detach()))
        (d_a + d_b).backward()
        self.d_optimizer.step()
        return {"d_a": float(d_a.item()), "d_b": float(d_b.item()), **logs}

    def fit(self, a, b, epochs: int | None = None, batch_size: int = 1,
            seed: int | None = None) -> dict[str, list[float]]:
        """Train on unpaired A images ``a`` and B images ``b`` for ``epochs`` epochs (default
        ``n_epochs + n_epochs_decay``) of shuffled batches of ``a`` (``seed`` fixes their order);
        each batch meets B images drawn at random. Returns :attr:`history`; the models are left
        in evaluation mode."""
        a, b = _samples(a, "CycleGANTrainer.fit"), _samples(b, "CycleGANTrainer.fit")
        epochs = self._fit_epochs(epochs)
        positive_int(batch_size, "CycleGANTrainer.fit: batch_size")
        for generator, source, target, name in ((self.generator_ab, a, b, "generator_ab"),
                                                 (self.generator_ba, b, a, "generator_ba")):
            made = _translated_shape(generator, source, "CycleGANTrainer")
            if made[1:] != target.shape[1:]:
                raise ShapeError(f"CycleGANTrainer.fit: {name} turns a {tuple(source.shape[1:])} image into "
                                 f"{made[1:]}, but the other domain's images are {tuple(target.shape[1:])}")
        for discriminator, images in ((self.discriminator_a, a), (self.discriminator_b, b)):
            with no_grad(), evaluation_mode(discriminator):
                discriminator(Tensor(backend.xp.asarray(images[:2])))
        self._make_optimizers()
        self._b_images = b
        try:
            return self._run(a, epochs, batch_size, seed)
        finally:
            self._b_images = None
