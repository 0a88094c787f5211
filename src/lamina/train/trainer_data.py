"""How :class:`~lamina.train.Trainer` takes its data: (x, y), (x, y, w) and (x,) arrays turned
into datasets and loaders, sample weights attached and checked, and the batches read as (x, y, w)
triples, the labels and weights None where there are none.

``_TrainerData``, a base class of ``Trainer`` (on :class:`~lamina.train.trainer_steps._TrainerSteps`),
holds the checks before training (finite inputs of the number and shapes the model takes,
labels within its classes, class weights that fit the loss, ``fit``'s counts), the hold-out
of ``validation_split``, and the passes over the data for epochs of ``steps_per_epoch``
batches, a stream's first batch, peeked at for the checks, trained on first.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

import lamina
from lamina.autograd import no_grad
from lamina.data import ArrayDataset, DataLoader, Subset
from lamina.data.dataset import num_samples, take
from lamina.data.iterable import is_iterable_dataset
from lamina.data.subsets import fetches_whole_batches, is_labelled
from lamina.errors import ShapeError
from lamina.train.trainer_steps import _input_list, _is_cross_entropy, _TrainerSteps
from lamina.train.weighting import check_weights, class_weight_table, is_regression_loss


def _array_dataset(data: tuple, where: str) -> ArrayDataset:
    """The dataset of ``(x, y)``, ``(x, y, w)`` or ``(x,)``, the inputs of a group of several
    checked to be of one length and the sample weights ``w`` checked first (an error names
    ``where``)."""
    if len(data) > 3:
        raise ValueError(f"{where}: data must be (x, y), (x, y, sample_weight) or (x,); got a tuple of "
                         f"{len(data)} items")
    if data:
        n = num_samples(data[0], where)
        if len(data) == 3:
            data = (*data[:2], check_weights(data[2], n, where))
    return ArrayDataset(*data)


def _with_sample_weight(data, sample_weight, where: str):
    """``(x, y)`` arrays with ``sample_weight`` attached as ``(x, y, w)``; ``data`` itself
    when no weights are given."""
    if sample_weight is None:
        return data
    given_twice = (isinstance(data, tuple) and len(data) == 3) or getattr(data, "w", None) is not None
    if given_twice:
        raise ValueError(f"{where}: sample weights given twice, as the data's third item and as "
                         "sample_weight=; give one of them")
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError(f"{where}: sample_weight= goes with (x, y) arrays; a {type(data).__name__} carries "
                        "its weights in (x, y, w) samples instead")
    return (*data, check_weights(sample_weight, num_samples(data[0], where), where))


def _check_metrics_have_labels(trainer, loader, where: str) -> None:
    dataset = loader.dataset
    if trainer.metrics and fetches_whole_batches(dataset) and not is_labelled(dataset):
        names = ", ".join(name for name, _ in trainer.metrics)
        raise ValueError(f"{where}: the metrics ({names}) compare outputs with labels, and the data has none "
                         "(inputs alone); pass metrics=() to the Trainer to train on unlabelled data")


def _labelled_batches(loader):
    """The loader's batches as (xb, yb, wb) triples: yb is None for an unlabelled array
    dataset (``fit((x,))``), whose loader yields the inputs alone (the loss then gets None);
    the sample weights wb are None unless the batches are (xb, yb, wb) triples."""
    dataset = loader.dataset
    if fetches_whole_batches(dataset) and not is_labelled(dataset):
        return ((xb, None, None) for xb in loader)
    return (batch if isinstance(batch, tuple) and len(batch) == 3 else (*batch, None) for batch in loader)


def _prepend(first, batches):
    """``first``, then the rest of ``batches`` (closed when this generator is)."""
    try:
        yield first
        yield from batches
    finally:
        batches.close()


class _TrainerData(_TrainerSteps):
    """The methods of :class:`~lamina.train.Trainer` that check and read its data (a base
    class of it; ``Trainer.__init__`` sets the attributes they read)."""

    # -- checks before training ----------------------------------------------
    def _validate(self, x, y) -> int:
        """Before training: the inputs (one array or a tuple of several) are finite, and are as
        many and of the shapes the model takes; the labels fit the model's classes. Returns the
        number of classes the model's outputs give (2 for one output)."""
        inputs = _input_list(x)
        self._check_input_count("Trainer.fit", len(inputs))
        for k, values in enumerate(inputs):
            values = np.asarray(values)
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                bad = np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0][0]
                which = f"input {k} contains" if len(inputs) > 1 else "the inputs contain"
                raise ValueError(f"Trainer.fit: {which} NaN or infinity (first at sample {bad}); "
                                 "clean or impute them before training")
        shapes = [tuple(np.shape(values)) for values in inputs]
        self.model.eval()
        try:
            with no_grad():
                out = self.model(*[lamina.tensor(np.asarray(values[:2])) for values in inputs])
        except ShapeError as exc:
            shown = shapes[0] if len(shapes) == 1 else ", ".join(f"input {k}: {s}" for k, s in enumerate(shapes))
            raise ShapeError(f"Trainer.fit: the model cannot take inputs of shape {shown}: {exc}") from exc
        finally:
            self.model.train()
        outputs = out.shape[-1] if out.ndim >= 2 else 1
        if y is None or not _is_cross_entropy(self.loss):
            return max(outputs, 2)
        labels = np.asarray(y)
        if labels.ndim == 1 and labels.size:
            classes = out.shape[-1]
            if labels.min() < 0 or labels.max() >= classes:
                raise ValueError(f"Trainer.fit: labels must lie in [0, {classes}) for a model with {classes} "
                                 f"outputs; found values from {labels.min()} to {labels.max()}")
        return max(outputs, 2)

    def _class_table(self, class_weight, labelled: bool, classes: int) -> np.ndarray | None:
        """The weight of each class from ``fit``'s ``class_weight``, checked against the loss,
        the labels and the model's ``classes``."""
        if class_weight is None:
            return None
        if is_regression_loss(self.loss):
            raise ValueError(f"Trainer.fit: class_weight needs a classification loss; the loss "
                             f"{self.loss_name!r} compares real values, which have no classes: use sample_weight")
        if not labelled:
            raise ValueError("Trainer.fit: class_weight needs labels, and the data has none (inputs alone)")
        return class_weight_table(class_weight, classes, "Trainer.fit")

    @staticmethod
    def _hold_out(train, val, fraction) -> tuple:
        """(training part, validation part) of ``train``: its last ``fraction`` of the samples,
        before any shuffling, is the validation set (as Keras's ``validation_split``)."""
        if val is not None:
            raise ValueError("Trainer.fit: give either val or validation_split, not both")
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating))
                or not 0 < fraction < 1):
            raise ValueError(f"Trainer.fit: validation_split must be a fraction in (0, 1), got {fraction!r}")
        if isinstance(train, tuple):
            train = _array_dataset(train, "Trainer.fit")
        if isinstance(train, DataLoader) or not (hasattr(train, "__len__") and hasattr(train, "__getitem__")):
            raise TypeError(f"Trainer.fit: validation_split needs arrays, (x, y) or a dataset, to hold out "
                            f"their last samples; got a {type(train).__name__}: pass val= instead")
        n = len(train)
        cut = int(math.floor(n * (1.0 - fraction)))
        if cut == 0 or cut == n:
            raise ValueError(f"Trainer.fit: validation_split={fraction!r} of {n} samples leaves "
                             f"{cut} for training and {n - cut} for validation; both need at least one")
        if not isinstance(train, ArrayDataset):
            return Subset(train, np.arange(cut)), Subset(train, np.arange(cut, n))
        y, w = train.y, train.w
        return (ArrayDataset(take(train.x, slice(None, cut)), None if y is None else y[:cut],
                             None if w is None else w[:cut]),
                ArrayDataset(take(train.x, slice(cut, None)), None if y is None else y[cut:],
                             None if w is None else w[cut:]))

    def _loader(self, data, batch_size: int, shuffle: bool, seed, where: str, num_workers: int = 0,
                worker_mode: str = "thread") -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        if isinstance(data, tuple):
            data = _array_dataset(data, where)
        if is_iterable_dataset(data):
            shuffle = False
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers,
                          worker_mode=worker_mode)

    @staticmethod
    def _check_fit_options(steps_per_epoch, initial_epoch, validation_freq, validation_batch_size,
                           validation_steps, resume_from) -> None:
        counts = {"initial_epoch": (initial_epoch, 0, False), "validation_freq": (validation_freq, 1, False),
                  "steps_per_epoch": (steps_per_epoch, 1, True),
                  "validation_batch_size": (validation_batch_size, 1, True),
                  "validation_steps": (validation_steps, 1, True)}
        for name, (value, least, optional) in counts.items():
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"Trainer.fit: {name} must be an integer >= {least}{' or None' if optional else ''}"
                                 f", got {value!r}")
        if initial_epoch and resume_from is not None:
            raise ValueError(f"Trainer.fit: give either initial_epoch ({initial_epoch}) or resume_from, not both; "
                             "a checkpoint holds the epoch to continue from")

    # -- the passes over the data ----------------------------------------------
    def _passes(self, loader):
        """The loader's batches pass after pass, for epochs of ``steps_per_epoch`` batches
        that continue where the last one stopped; ends when a pass yields nothing."""
        while True:
            empty = True
            for batch in self._next_pass(loader):
                empty = False
                yield batch
            if empty:
                return

    def _next_pass(self, loader):
        """The batches of a pass over ``loader``; the first pass over a stream goes on from the
        batch that ``fit`` peeked at, so a stream that can be read only once loses nothing."""
        if self._first_pass is None:
            return _labelled_batches(loader)
        (first, batches), self._first_pass = self._first_pass, None
        return _prepend(first, batches)

    def _close_first_pass(self) -> None:
        if self._first_pass is not None:
            self._first_pass[1].close()
            self._first_pass = None

    def _epoch_batches(self, loader):
        if self._stream is None:
            return self._next_pass(loader)
        return itertools.islice(self._stream, self.steps_per_epoch)
