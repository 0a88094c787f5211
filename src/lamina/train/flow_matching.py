"""Training loop for flow matching (:class:`lamina.models.FlowMatchingModel`), and rectified
flow's reflow.

Each step takes a mini-batch of data x1, a source batch x0 and one Adam step on the model's
:meth:`~lamina.models.FlowMatchingModel.loss`. The source is, by ``fit``'s arguments:

* ``x0=None``: N(0, I) draws from lamina's generator;
* ``x0`` given, ``paired=False``: rows of ``x0`` drawn uniformly at random for each batch
  (an independent coupling, which an optimal transport matcher then re-pairs);
* ``x0`` given, ``paired=True``: ``x0[i]`` always goes with ``x1[i]`` (reflow's pairs).

``ema`` and ``clip_norm`` are as for :class:`~lamina.train.DiffusionTrainer`; callbacks get the
batch's ``loss`` in ``on_batch_end`` and the epoch's mean in ``on_epoch_end``.

:func:`reflow`: one round of rectified flow, training a model on the pairs
(x0, ODE_theta(x0)) of a trained one (:func:`lamina.models.reflow_pairs`).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.models.flow_matching import FlowMatchingModel, reflow_pairs
from lamina.nn.layer import positive_int
from lamina.train.diffusion import AdamLossTrainer
from lamina.train.generative import _check_epochs, _samples

__all__ = ["FlowMatchingTrainer", "reflow", "train_flow_matching"]


class FlowMatchingTrainer(AdamLossTrainer):
    """Adam steps on a :class:`~lamina.models.FlowMatchingModel`'s loss (``lr``, ``ema`` and
    ``clip_norm`` as :class:`~lamina.train.diffusion.AdamLossTrainer`'s)."""

    model_class = FlowMatchingModel

    def __init__(self, model: FlowMatchingModel, lr: float = 1e-3, ema: float | None = None,
                 clip_norm: float | None = None, callbacks=None):
        super().__init__(model, lr, ema, clip_norm, callbacks)
        self._source: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._paired = False

    def _first_call(self, sample: Tensor, labels) -> None:
        self.model(sample, 0.0) if labels is None else self.model(sample, 0.0, labels)

    def train_step(self, batch) -> dict[str, float]:
        """One Adam step on a batch of (data, row numbers); returns its 'loss'."""
        x1, rows = batch
        rows = np.asarray(backend.to_numpy(rows))
        x0 = None
        if self._source is not None:
            picks = rows if self._paired else backend.rng().integers(0, len(self._source), len(rows))
            x0 = self._source[picks]
        labels = None if self._labels is None else self._labels[rows]
        return self._step(self.model.loss(x1, x0=x0, labels=labels, couple=not self._paired))

    def fit(self, x1, x0=None, labels=None, paired: bool = False, epochs: int = 1, batch_size: int = 64,
            seed: int | None = None) -> dict[str, list[float]]:
        """Train on the data ``x1`` (n, ...) from the source ``x0`` (see the module notes for
        ``x0`` and ``paired``), with class ``labels`` (n ints) for a conditional net, for
        ``epochs`` epochs of shuffled batches; ``seed`` fixes their order, lamina's generator
        the times, the noise and the source draws. Returns :attr:`history`."""
        who = "train_flow_matching"
        x1 = _samples(x1, who)
        if x0 is not None:
            x0 = _samples(x0, who)
            if x0.shape[1:] != x1.shape[1:]:
                raise ValueError(f"{who}: source samples of shape {x0.shape[1:]} do not match the data's "
                                 f"{x1.shape[1:]}")
            if paired and len(x0) != len(x1):
                raise ValueError(f"{who}: paired=True needs one source sample per data sample, got {len(x0)} and "
                                 f"{len(x1)}")
        elif paired:
            raise ValueError(f"{who}: paired=True needs the source samples x0")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(x1),) or labels.dtype.kind not in "iu":
                raise ValueError(f"{who}: labels must be {len(x1)} integers, one per sample, got shape "
                                 f"{labels.shape} ({labels.dtype})")
        epochs = _check_epochs(epochs, who)
        positive_int(batch_size, f"{who}: batch_size")
        self._prepare(x1, labels)
        self._source, self._labels, self._paired = x0, labels, bool(paired)
        try:
            # the loader yields (data, row numbers): the rows find each batch's labels and paired sources
            return self._run(x1, epochs, batch_size, seed, labels=np.arange(len(x1)))
        finally:
            self._source, self._labels = None, None


def _finish(trainer: FlowMatchingTrainer, model: FlowMatchingModel) -> None:
    if trainer.ema_model is not None and trainer.averaged.n_averaged:
        model.load_state_dict(trainer.ema_model.state_dict())


def train_flow_matching(model: FlowMatchingModel, x1, x0=None, labels=None, paired: bool = False, epochs: int = 1,
                        batch_size: int = 64, lr: float = 1e-3, ema: float | None = None,
                        clip_norm: float | None = None, seed: int | None = None,
                        callbacks=None) -> dict[str, list[float]]:
    """Train a flow matching model on ``x1`` (see :class:`FlowMatchingTrainer`); returns
    ``{'loss': [...]}``, one mean per epoch. With ``ema`` the averaged weights are copied into
    the model at the end. The model is left in evaluation mode."""
    trainer = FlowMatchingTrainer(model, lr=lr, ema=ema, clip_norm=clip_norm, callbacks=callbacks)
    history = trainer.fit(x1, x0=x0, labels=labels, paired=paired, epochs=epochs, batch_size=batch_size, seed=seed)
    _finish(trainer, model)
    return history


def reflow(teacher: FlowMatchingModel, student: FlowMatchingModel, x0=None, n: int | None = None,
           steps: int = 100, method: str = "euler", epochs: int = 1, batch_size: int = 64, lr: float = 1e-3,
           ema: float | None = None, seed: int | None = None, callbacks=None) -> dict[str, list[float]]:
    """One reflow round: the ``teacher``'s pairs (x0, ODE(x0)) (:func:`lamina.models.reflow_pairs`
    with ``steps`` steps of ``method``; ``x0`` default ``n`` draws of N(0, I)), then the
    ``student`` (which may be the teacher itself, fine-tuned) trained on them as fixed pairs.
    Returns the history."""
    sources, targets = reflow_pairs(teacher, x0, n, steps=steps, method=method)
    return train_flow_matching(student, targets, x0=sources, paired=True, epochs=epochs, batch_size=batch_size,
                               lr=lr, ema=ema, seed=seed, callbacks=callbacks)
