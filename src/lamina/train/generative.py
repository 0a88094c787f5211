"""Training loops for the generative models: the GAN's alternating game and the VAE.

Neither fits :class:`~lamina.train.Trainer`'s one model, one output, one cost: a GAN has two
models with two costs and two optimizers, and a VAE's output is a tuple (reconstruction
logits, mu, log_var) whose cost also needs the input. (A plain autoencoder does fit it:
``Trainer(model, "mse", optimizer, metrics=()).fit((x, x))``.)

GAN (Goodfellow et al., 2014). For a batch of m real samples x and m codes z ~ N(0, I),
with D's logits l and BCE the binary cross-entropy on logits averaged over the batch:

* discriminator step: J_D = BCE(l(x), 1) + BCE(l(G(z)), 0), G held fixed; D learns to
  tell real from made (log 4 = 1.386 when it cannot);
* generator step: J_G = BCE(l(G(z)), 1) = -(1/m) sum log D(G(z)), D held fixed: the
  non-saturating cost, whose gradient stays large while D easily rejects G's samples
  (minimising log(1 - D(G(z))) instead gives almost none then).

Both use Adam with beta_1 = 0.5 (DCGAN's setting: less momentum in a game whose target
moves).

WGAN-GP (Gulrajani et al., 2017), ``loss="wasserstein"``: D is a critic giving a score, not a
logit; J_D = mean D(G(z)) - mean D(x) + lambda GP (:func:`lamina.functional.gradient_penalty`,
lambda = ``gradient_penalty``, 10 in the paper) estimates the Wasserstein distance between the
two distributions, and J_G = -mean D(G(z)). The critic takes ``n_critic`` steps (5 in the
paper), one per batch, for each generator step; the paper's Adam has betas (0, 0.9).

VAE: mini-batch Adam steps on :func:`lamina.functional.losses_vae.vae_loss`.

Callbacks are :class:`~lamina.train.Callback` objects: ``set_trainer`` gets the
:class:`GANTrainer` or :class:`VAETrainer`, then ``on_train_begin``, ``on_epoch_begin``,
``on_batch_end`` (the batch's losses), ``on_epoch_end`` (the epoch's mean losses),
``on_train_end`` or ``on_exception``; setting ``trainer.stop_training = True`` stops after
the current batch.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.data import ArrayDataset, DataLoader
from lamina.errors import ShapeError
from lamina.functional import binary_cross_entropy, gradient_penalty
from lamina.functional.losses_vae import gaussian_kl, vae_loss
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam

__all__ = ["GANTrainer", "VAETrainer", "train_gan", "train_vae"]

GAN_BETAS = (0.5, 0.999)


def _samples(x, fn: str) -> np.ndarray:
    """``x`` as a float array of the default dtype, checked: samples first, finite values."""
    values = np.asarray(x)
    if values.ndim < 2 or len(values) == 0:
        raise ShapeError(f"{fn}: x must be samples of shape (n, ...) with n >= 1, got shape {values.shape}")
    if values.dtype.kind != "f":
        raise ValueError(f"{fn}: x must hold floating-point values (scale uint8 images, e.g. x / 255), got "
                         f"{values.dtype}")
    if not np.isfinite(values).all():
        raise ValueError(f"{fn}: x contains NaN or infinity")
    return values.astype(backend.get_default_dtype(), copy=False)


def _check_epochs(epochs, fn: str) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"{fn}: epochs must be an int >= 0, got {epochs!r}")
    return int(epochs)


class _EpochLoop:
    """Epochs of shuffled mini-batches of unlabelled samples, with callbacks and a history of
    per-epoch mean losses: what both trainers share. A subclass names its losses in
    ``log_names`` and gives ``train_step(batch) -> {name: value}`` and ``models``."""

    log_names: tuple[str, ...] = ()

    def __init__(self, callbacks):
        self.callbacks = list(callbacks or ())
        for callback in self.callbacks:
            callback.set_trainer(self)
        self.stop_training = False
        self.epoch = 0
        self.iteration = 0
        self.history: dict[str, list[float]] = {name: [] for name in self.log_names}

    @property
    def models(self) -> tuple[Module, ...]:
        raise NotImplementedError

    def train_step(self, batch: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def _run(self, x: np.ndarray, epochs: int, batch_size: int, seed: int | None,
             labels: np.ndarray | None = None, start_epoch: int = 0,
             loader_state: dict | None = None) -> dict[str, list[float]]:
        """Epochs ``start_epoch`` .. ``epochs - 1``; ``loader_state`` restores the shuffling
        (a resumed run draws the batches the uninterrupted one would have)."""
        # with labels, each batch is a (samples, labels) pair
        dataset = ArrayDataset(x) if labels is None else ArrayDataset(x, labels)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
        if loader_state is not None:
            loader.load_state_dict(loader_state)
        self.stop_training = False
        logs: dict = {}
        for callback in self.callbacks:
            callback.on_train_begin(logs)
        try:
            for epoch in range(start_epoch, epochs):
                self.epoch = epoch
                logs = self._run_epoch(loader)
                self._epoch_done(epoch, loader)
                if self.stop_training:
                    break
        except BaseException as error:
            for callback in self.callbacks:
                callback.on_exception(error)
            raise
        for callback in self.callbacks:
            callback.on_train_end(logs)
        for model in self.models:
            model.eval()
        return self.history

    def _epoch_done(self, epoch: int, loader: DataLoader) -> None:
        """Called after each epoch's callbacks (a trainer that writes checkpoints does it here)."""

    def _run_epoch(self, loader: DataLoader) -> dict[str, float]:
        for model in self.models:
            model.train()
        logs: dict = {}
        for callback in self.callbacks:
            callback.on_epoch_begin(self.epoch, logs)
        totals = dict.fromkeys(self.log_names, 0.0)
        seen = dict.fromkeys(self.log_names, 0)         # samples of the batches that report each loss
        for batch in loader:
            n = len(batch[0]) if isinstance(batch, tuple) else len(batch)
            batch_logs = self.train_step(batch)
            self.iteration += 1
            for name in self.log_names:
                if name in batch_logs:
                    totals[name] += batch_logs[name] * n
                    seen[name] += n
            for callback in self.callbacks:
                callback.on_batch_end(self.iteration, {**batch_logs, "batch_size": n})
            if self.stop_training:
                break
        logs = {name: total / seen[name] if seen[name] else float("nan") for name, total in totals.items()}
        for name, value in logs.items():
            self.history[name].append(value)
        for callback in self.callbacks:
            callback.on_epoch_end(self.epoch, logs)
        return logs


class GANTrainer(_EpochLoop):
    """Alternating Adam steps on a generator G (codes (m, ``code_size``) -> samples) and a
    discriminator D (samples -> one logit each), as the module notes describe.

    ``code_size``: the length of G's codes; None takes it from a built generator's input
    shape. ``lr`` and ``betas`` are the two Adam optimizers' settings (:attr:`g_optimizer`,
    :attr:`d_optimizer`). ``loss``: ``"bce"`` (the non-saturating GAN) or ``"wasserstein"``
    (WGAN-GP, with ``gradient_penalty`` = lambda and ``n_critic`` critic steps per generator
    step). :attr:`history` holds the per-epoch means of ``d_loss`` and ``g_loss`` (over the
    batches with a generator step), over every :meth:`fit` so far.
    """

    log_names = ("d_loss", "g_loss")

    def __init__(self, generator: Module, discriminator: Module, code_size: int | None = None, lr: float = 2e-4,
                 betas: tuple[float, float] = GAN_BETAS, callbacks=None, loss: str = "bce",
                 gradient_penalty: float = 10.0, n_critic: int = 1):
        for what, model in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(model, Module):
                raise TypeError(f"GANTrainer: the {what} must be a Module, got {type(model).__name__}")
        if generator is discriminator:
            raise ValueError("GANTrainer: the generator and the discriminator must be two different models")
        if loss not in ("bce", "wasserstein"):
            raise ValueError(f"GANTrainer: loss must be 'bce' or 'wasserstein', got {loss!r}")
        if not isinstance(gradient_penalty, numbers.Real) or gradient_penalty < 0:
            raise ValueError(f"GANTrainer: gradient_penalty must be a number >= 0, got {gradient_penalty!r}")
        self.loss, self.penalty_weight = loss, float(gradient_penalty)
        self.n_critic = positive_int(n_critic, "GANTrainer: n_critic")
        self.generator, self.discriminator = generator, discriminator
        self.code_size = self._code_size(generator, code_size)
        self.g_optimizer = Adam(generator, lr=lr, betas=betas)
        self.d_optimizer = Adam(discriminator, lr=lr, betas=betas)
        self._noise_generator: np.random.Generator | None = None
        super().__init__(callbacks)

    @staticmethod
    def _code_size(generator: Module, code_size: int | None) -> int:
        if code_size is not None:
            return positive_int(code_size, "GANTrainer: code_size")
        shape = getattr(generator, "build_input_shape", None)
        if not generator.built or shape is None or len(shape) != 2 or not isinstance(shape[1], int):
            raise ValueError("GANTrainer: code_size is required unless the generator is built for codes of "
                             f"shape (batch, code_size); its build input shape is {shape!r}")
        return shape[1]

    @property
    def models(self) -> tuple[Module, ...]:
        return self.generator, self.discriminator

    def codes(self, n: int) -> Tensor:
        """n codes z ~ N(0, I), (n, code_size): from the generator seeded by :meth:`fit`'s
        ``seed``, else from lamina's generator."""
        source = self._noise_generator if self._noise_generator is not None else backend.rng()
        dtype = backend.get_default_dtype()
        return Tensor(backend.xp.asarray(source.standard_normal((n, self.code_size)), dtype=dtype), dtype=dtype)

    def _bce(self, logits: Tensor, target: float) -> Tensor:
        return binary_cross_entropy(logits, backend.xp.full(logits.shape, target, dtype=logits.dtype),
                                    from_logits=True)

    def _critic_cost(self, real: Tensor, fake: Tensor) -> Tensor:
        """J_D: the BCE pair, or mean D(fake) - mean D(real) + lambda GP."""
        if self.loss == "bce":
            return self._bce(self.discriminator(real), 1.0) + self._bce(self.discriminator(fake), 0.0)
        cost = self.discriminator(fake).mean() - self.discriminator(real).mean()
        if self.penalty_weight:
            cost = cost + self.penalty_weight * gradient_penalty(self.discriminator, real, fake,
                                                                 eps=self._mixing_weights(real.shape[0]))
        return cost

    def _mixing_weights(self, n: int):
        source = self._noise_generator if self._noise_generator is not None else backend.rng()
        return source.uniform(size=n)

    def train_step(self, batch) -> dict[str, float]:
        """One discriminator step, then (every ``n_critic``-th batch) one generator step, on a
        batch of real samples (and as many codes); returns {'d_loss': J_D, 'g_loss': J_G},
        without 'g_loss' for a batch on which the generator did not step."""
        real = batch if isinstance(batch, Tensor) else Tensor(backend.xp.asarray(batch))
        fake = self.generator(self.codes(real.shape[0]))

        self.d_optimizer.zero_grad()
        d_loss = self._critic_cost(real, fake.detach())
        d_loss.backward()
        self.d_optimizer.step()

        if self.iteration % self.n_critic == self.n_critic - 1:
            self.g_optimizer.zero_grad()
            scores = self.discriminator(fake)
            g_loss = self._bce(scores, 1.0) if self.loss == "bce" else -scores.mean()
            g_loss.backward()                   # D's gradients from here are cleared by its next step
            self.g_optimizer.step()
            return {"d_loss": float(d_loss.item()), "g_loss": float(g_loss.item())}
        return {"d_loss": float(d_loss.item())}

    def _check_shapes(self, x: np.ndarray) -> None:
        """G makes samples of x's shape and D gives one logit per sample, or a ShapeError."""
        dtype = backend.get_default_dtype()
        with no_grad(), evaluation_mode(self.generator), evaluation_mode(self.discriminator):
            made = self.generator(Tensor(backend.xp.zeros((2, self.code_size), dtype=dtype), dtype=dtype))
            if tuple(made.shape[1:]) != tuple(x.shape[1:]):
                raise ShapeError(f"train_gan: the generator makes samples of shape {tuple(made.shape[1:])} from "
                                 f"codes of {self.code_size} values, but x holds samples of shape "
                                 f"{tuple(x.shape[1:])}")
            logits = self.discriminator(Tensor(backend.xp.asarray(x[:2])))
        if tuple(logits.shape) not in ((len(x[:2]), 1), (len(x[:2]),)):
            raise ShapeError(f"train_gan: the discriminator must give one logit per sample, (batch, 1); it gives "
                             f"shape {tuple(logits.shape)} for a batch of {len(x[:2])}")

    def fit(self, x, epochs: int = 1, batch_size: int = 64, seed: int | None = None) -> dict[str, list[float]]:
        """Train on the real samples ``x`` (n, ...) for ``epochs`` epochs of shuffled batches;
        ``seed`` fixes the batch order and the codes. Returns :attr:`history`."""
        x = _samples(x, "train_gan")
        epochs = _check_epochs(epochs, "train_gan")
        positive_int(batch_size, "train_gan: batch_size")
        self._check_shapes(x)
        self._noise_generator = None if seed is None else np.random.default_rng([seed, 1])
        try:
            return self._run(x, epochs, batch_size, seed)
        finally:
            self._noise_generator = None


class VAETrainer(_EpochLoop):
    """Adam steps on a VAE's cost :func:`~lamina.functional.losses_vae.vae_loss`; ``model(x)``
    must return (reconstruction logits, mu, log_var), as :class:`lamina.models.VAE` does.
    :attr:`history` holds the per-epoch means of ``loss`` (the negative ELBO with ``beta``),
    ``reconstruction`` (the summed cross-entropy) and ``kl``, over every :meth:`fit` so far.
    """

    log_names = ("loss", "reconstruction", "kl")

    def __init__(self, model: Module, lr: float = 1e-3, beta: float = 1.0, callbacks=None):
        if not isinstance(model, Module):
            raise TypeError(f"VAETrainer: the model must be a Module, got {type(model).__name__}")
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta >= 0:
            raise ValueError(f"VAETrainer: beta must be a number >= 0, got {beta!r}")
        self.model, self.beta = model, float(beta)
        self.optimizer = Adam(model, lr=lr)
        super().__init__(callbacks)

    @property
    def models(self) -> tuple[Module, ...]:
        return (self.model,)

    def train_step(self, batch) -> dict[str, float]:
        """One Adam step on the batch; returns its 'loss', 'reconstruction' and 'kl'."""
        x = batch if isinstance(batch, Tensor) else Tensor(backend.xp.asarray(batch))
        outputs = self.model(x)
        if not isinstance(outputs, tuple) or len(outputs) != 3:
            raise TypeError(f"VAETrainer: the model must return (reconstruction logits, mu, log_var), got "
                            f"{type(outputs).__name__}")
        logits, mu, log_var = outputs
        loss = vae_loss(x, logits, mu, log_var, beta=self.beta)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        kl = float(gaussian_kl(mu.detach(), log_var.detach(), reduction="mean").item())
        value = float(loss.item())
        return {"loss": value, "reconstruction": value - self.beta * kl, "kl": kl}

    def fit(self, x, epochs: int = 1, batch_size: int = 64, seed: int | None = None) -> dict[str, list[float]]:
        """Train on ``x`` (n, ...) with values in [0, 1] for ``epochs`` epochs of shuffled
        batches (``seed`` fixes their order; the noise eps comes from lamina's generator).
        Returns :attr:`history`."""
        x = _samples(x, "train_vae")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError(f"train_vae: x must hold values in [0, 1] (the targets of the pixel cross-entropy), "
                             f"got values from {float(x.min()):.4g} to {float(x.max()):.4g}")
        epochs = _check_epochs(epochs, "train_vae")
        positive_int(batch_size, "train_vae: batch_size")
        return self._run(x, epochs, batch_size, seed)


def train_gan(generator: Module, discriminator: Module, x, epochs: int = 1, batch_size: int = 64,
              code_size: int | None = None, lr: float = 2e-4, seed: int | None = None,
              callbacks=None, **options) -> dict[str, list[float]]:
    """Train a GAN on the real samples ``x`` (see the module notes and :class:`GANTrainer`,
    whose ``betas``, ``loss``, ``gradient_penalty`` and ``n_critic`` may be given); returns
    ``{'d_loss': [...], 'g_loss': [...]}``, one mean per epoch. The models are left in
    evaluation mode."""
    trainer = GANTrainer(generator, discriminator, code_size=code_size, lr=lr, callbacks=callbacks, **options)
    return trainer.fit(x, epochs=epochs, batch_size=batch_size, seed=seed)


def train_vae(model: Module, x, epochs: int = 1, batch_size: int = 64, lr: float = 1e-3, beta: float = 1.0,
              seed: int | None = None, callbacks=None) -> dict[str, list[float]]:
    """Train a VAE on ``x`` in [0, 1] (see :class:`VAETrainer`); returns ``{'loss': [...],
    'reconstruction': [...], 'kl': [...]}``, one mean per epoch. The model is left in
    evaluation mode."""
    trainer = VAETrainer(model, lr=lr, beta=beta, callbacks=callbacks)
    return trainer.fit(x, epochs=epochs, batch_size=batch_size, seed=seed)
