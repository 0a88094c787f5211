"""Training loop for denoising diffusion models (:class:`lamina.models.DiffusionModel`).

Each step draws, for a mini-batch of data x_0, timesteps t ~ U{0 .. T-1} and noise
eps ~ N(0, I) from lamina's generator and takes one Adam step on the model's
:meth:`~lamina.models.DiffusionModel.loss`, the mean squared error of the net's prediction
at x_t. With ``ema=beta`` the trainer also keeps the exponentially weighted average of the
weights, v <- beta v + (1 - beta) theta after every step (:class:`lamina.optim.AveragedModel`):
samples from the averaged weights are usually much better than from the last ones.

Callbacks are :class:`~lamina.train.Callback` objects, as for :class:`~lamina.train.VAETrainer`:
``on_batch_end`` gets the batch's ``loss``, ``on_epoch_end`` the epoch's mean.

Checkpoints: ``fit(..., checkpoint=path)`` writes, after every epoch, one safetensors file with
the weights, Adam's moments, the weight average, lamina's generator, the loader's shuffling
state and the history; ``fit(..., resume_from=path)`` continues from it up to ``epochs`` epochs
in all. On the CPU, with the same data and options, the resumed run ends with the same weights,
bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import json
import numbers
import os

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.data import DataLoader
from lamina.io import load_file, save_file
from lamina.io.state import flatten_state, unflatten_state
from lamina.models.diffusion import DiffusionModel
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam, AveragedModel, clip_grad_norm
from lamina.train.generative import _check_epochs, _EpochLoop, _samples

__all__ = ["AdamLossTrainer", "DiffusionTrainer", "train_diffusion"]

CHECKPOINT_FORMAT = "lamina-diffusion-checkpoint-1"


class AdamLossTrainer(_EpochLoop):
    """Adam steps on one generative model's ``loss`` (the base of :class:`DiffusionTrainer` and
    :class:`~lamina.train.FlowMatchingTrainer`).

    ``lr``: Adam's learning rate (:attr:`optimizer`). ``ema``: None, or the decay beta in
    [0, 1) of the weight average kept in :attr:`ema_model` (a copy of the model, sampled like
    it), updated after every step and carried across ``fit`` calls. ``clip_norm``: the
    largest global gradient norm (None: no clipping). :attr:`history` holds the per-epoch mean
    ``loss`` over every ``fit`` so far.
    """

    log_names = ("loss",)
    model_class: type = Module

    def __init__(self, model, lr: float = 1e-3, ema: float | None = None, clip_norm: float | None = None,
                 callbacks=None):
        who, wanted = type(self).__name__, self.model_class.__name__
        if not isinstance(model, self.model_class):
            raise TypeError(f"{who}: the model must be a {wanted}, got {type(model).__name__}")
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 <= ema < 1):
            raise ValueError(f"{who}: ema must be None or a decay in [0, 1), got {ema!r}")
        if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real)
                                      or not clip_norm > 0):
            raise ValueError(f"{who}: clip_norm must be None or a number > 0, got {clip_norm!r}")
        self.model, self.lr, self.ema, self.clip_norm = model, lr, ema, clip_norm
        self.optimizer: Adam | None = None
        self.averaged: AveragedModel | None = None
        super().__init__(callbacks)

    @property
    def models(self) -> tuple[Module, ...]:
        return (self.model,)

    @property
    def ema_model(self):
        """The model with the averaged weights (None without ``ema`` or before training)."""
        return None if self.averaged is None else self.averaged.module

    def _first_call(self, sample: Tensor, labels) -> None:
        """Call the model once on one sample, which builds its weights."""
        raise NotImplementedError

    def _prepare(self, x: np.ndarray, labels) -> None:
        """Build the model on the data (its weights exist before Adam is made), then Adam and the average."""
        if not self.model.built or not self.model.net.built:
            with no_grad(), evaluation_mode(self.model):
                self._first_call(Tensor(backend.xp.asarray(x[:1])), None if labels is None else labels[:1])
        if self.optimizer is None:
            self.optimizer = Adam(self.model, lr=self.lr)
        if self.ema is not None and self.averaged is None:
            self.averaged = AveragedModel(self.model, decay=self.ema)

    def _step(self, loss: Tensor) -> dict[str, float]:
        """One Adam step on ``loss`` (clipped, then averaged); returns its 'loss'."""
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_norm is not None:
            clip_grad_norm(self.model, self.clip_norm)
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update(self.model)
        return {"loss": float(loss.item())}


class DiffusionTrainer(AdamLossTrainer):
    """Adam steps on a :class:`~lamina.models.DiffusionModel`'s loss (``lr``, ``ema`` and
    ``clip_norm`` as :class:`AdamLossTrainer`'s)."""

    model_class = DiffusionModel

    def __init__(self, model: DiffusionModel, lr: float = 1e-3, ema: float | None = None,
                 clip_norm: float | None = None, callbacks=None):
        super().__init__(model, lr, ema, clip_norm, callbacks)
        self.checkpoint: str | os.PathLike | None = None

    def _first_call(self, sample: Tensor, labels) -> None:
        steps = np.zeros(1, dtype=np.int64)
        self.model(sample, steps) if labels is None else self.model(sample, steps, labels)

    def train_step(self, batch) -> dict[str, float]:
        """One Adam step on a batch of samples, or of (samples, labels); returns its 'loss'."""
        x, labels = batch if isinstance(batch, tuple) else (batch, None)
        return self._step(self.model.loss(x, labels=labels))

    def fit(self, x, labels=None, epochs: int = 1, batch_size: int = 64, seed: int | None = None,
            checkpoint: str | os.PathLike | None = None, resume_from: str | os.PathLike | None = None
            ) -> dict[str, list[float]]:
        """Train on the samples ``x`` (n, ...) (with class ``labels``, n ints, for a conditional
        net) for ``epochs`` epochs of shuffled batches; ``seed`` fixes their order, lamina's
        generator the timesteps and the noise. ``checkpoint``: a file rewritten after every
        epoch; ``resume_from``: a checkpoint to continue from (``epochs`` counts the epochs
        before it too). Returns :attr:`history`."""
        x = _samples(x, "train_diffusion")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(x),) or labels.dtype.kind not in "iu":
                raise ValueError(f"train_diffusion: labels must be {len(x)} integers, one per sample, got shape "
                                 f"{labels.shape} ({labels.dtype})")
        epochs = _check_epochs(epochs, "train_diffusion")
        positive_int(batch_size, "train_diffusion: batch_size")
        self._prepare(x, labels)
        self.checkpoint = checkpoint
        start_epoch, loader_state = 0, None
        if resume_from is not None:
            start_epoch, loader_state = self._restore(resume_from, batch_size, len(x))
        return self._run(x, epochs, batch_size, seed, labels=labels, start_epoch=start_epoch,
                         loader_state=loader_state)

    def _epoch_done(self, epoch: int, loader: DataLoader) -> None:
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint, epoch + 1, loader)

    def save_checkpoint(self, path: str | os.PathLike, epochs_done: int, loader: DataLoader | None = None) -> None:
        """Write the training state after ``epochs_done`` epochs to ``path`` (atomically)."""
        arrays = {f"model/{k}": backend.to_numpy(v) for k, v in self.model.state_dict().items()}
        if self.averaged is not None:
            arrays.update({f"ema/{k}": backend.to_numpy(v) for k, v in self.averaged.state_dict().items()})
        state = {"epoch": epochs_done, "iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                 "rng": backend.get_rng_state(), "loader": None if loader is None else loader.state_dict(),
                 "history": self.history, "ema": self.ema}
        tree, extra = flatten_state(state, "state")
        arrays.update(extra)
        save_file(arrays, path, {"format": CHECKPOINT_FORMAT, "state": json.dumps(tree)})

    def _restore(self, path: str | os.PathLike, batch_size: int, num_samples: int) -> tuple[int, dict | None]:
        """Load a checkpoint of :meth:`save_checkpoint`; returns (epochs done, loader state).
        Everything is checked before the model, Adam or the generator is changed."""
        arrays, metadata = load_file(path)
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"DiffusionTrainer: {path} is not a diffusion training checkpoint (format "
                             f"{metadata.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        state = unflatten_state(json.loads(metadata["state"]), arrays)
        if (state["ema"] is None) != (self.ema is None):
            raise ValueError(f"DiffusionTrainer: {path} was written with ema={state['ema']!r}; resume with the "
                             f"same option (got ema={self.ema!r})")
        saved = state["loader"] or {}
        for what, mine in (("batch_size", batch_size), ("num_samples", num_samples)):
            if what in saved and saved[what] != mine:
                raise ValueError(f"DiffusionTrainer: {path} was written training with {what}={saved[what]}; "
                                 f"resuming needs the same, got {mine}")
        self.model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        if self.averaged is not None:
            self.averaged.load_state_dict({k[len("ema/"):]: v for k, v in arrays.items() if k.startswith("ema/")})
        self.optimizer.load_state_dict(state["optimizer"])
        backend.set_rng_state(state["rng"])
        self.history = {name: [float(v) for v in values] for name, values in state["history"].items()}
        self.iteration = int(state["iteration"])
        return int(state["epoch"]), state["loader"]


def train_diffusion(model: DiffusionModel, x, epochs: int = 1, batch_size: int = 64, lr: float = 1e-3,
                    labels=None, ema: float | None = None, clip_norm: float | None = None, seed: int | None = None,
                    callbacks=None, checkpoint: str | os.PathLike | None = None,
                    resume_from: str | os.PathLike | None = None) -> dict[str, list[float]]:
    """Train a diffusion model on ``x`` (see :class:`DiffusionTrainer`, also for ``checkpoint``
    and ``resume_from``); returns ``{'loss': [...]}``, one mean per epoch. With ``ema`` the
    averaged weights are copied into the model at the end. The model is left in evaluation mode."""
    trainer = DiffusionTrainer(model, lr=lr, ema=ema, clip_norm=clip_norm, callbacks=callbacks)
    history = trainer.fit(x, labels=labels, epochs=epochs, batch_size=batch_size, seed=seed,
                          checkpoint=checkpoint, resume_from=resume_from)
    if trainer.ema_model is not None and trainer.averaged.n_averaged:
        model.load_state_dict(trainer.ema_model.state_dict())
    return history
