"""Knowledge distillation: train a small student on a trained teacher's softened outputs.

:class:`Distiller` is the :class:`~lamina.train.Trainer` of the student with the cost
:func:`lamina.functional.distillation_loss` (Hinton, Vinyals and Dean 2015),

    J = (1/m) sum_i [alpha T^2 KL(softmax(t_i / T) || softmax(s_i / T)) + (1 - alpha) CE(softmax(s_i), y_i)],

s_i the student's logits and t_i the teacher's for the same input. Everything else is the
Trainer's: mini-batches, callbacks, the History, validation, gradient accumulation and
clipping, schedules, checkpoints of the student; ``val_loss`` is the same cost on the
validation set and the metrics score the student's outputs against the labels.

The teacher's logits are computed batch by batch, on the very inputs the student gets, with
the teacher in evaluation mode (dropout off, batch-norm statistics fixed), under ``no_grad``
and with its parameters frozen for the whole fit. This costs one forward pass of the teacher
per mini-batch, and in return holds for any data, a loader that augments its samples
included; precomputing them once would save that pass only for data that never change.

A model ending in a Softmax layer (student or teacher) is run without it: the cost needs logits.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

import lamina
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.losses_distill import check_distillation_settings, distillation_loss
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam
from lamina.train.history import History
from lamina.train.trainer import Trainer, _input_list, _output_layer

__all__ = ["Distiller", "train_distillation"]


def _ends_in_softmax(model: Module) -> bool:
    return type(_output_layer(model)).__name__ == "Softmax"


def _logits(model: Module, inputs: list):
    """``model``'s output for ``inputs`` (tensors), taken before a last Softmax layer."""
    if not _ends_in_softmax(model):
        return model(*inputs)
    if hasattr(model, "forward_to_output_layer"):
        return model.forward_to_output_layer(*inputs)
    out = inputs[0]  # a Sequential: one input
    for layer in list(model)[:-1]:
        out = layer(out)
    return out


@contextlib.contextmanager
def _frozen(model: Module) -> Iterator[Module]:
    """Within the block no parameter of ``model`` is trainable; on exit each gets back its
    own setting (a teacher may have been partly frozen already)."""
    settings = [(p, p.trainable, p.requires_grad) for p in model.parameters()]
    model.freeze()
    try:
        yield model
    finally:
        for p, trainable, requires_grad in settings:
            p.trainable, p.requires_grad = trainable, requires_grad


def _looks_like_probabilities(values: np.ndarray) -> bool:
    """Rows in [0, 1] adding up to 1: the output of a softmax, not logits."""
    return (values.shape[-1] > 1 and bool(((values >= 0) & (values <= 1)).all())
            and bool(np.allclose(values.sum(axis=-1), 1.0, atol=1e-4)))


class Distiller(Trainer):
    """Fit ``student`` to ``teacher``'s softened predictions and the labels (see the module notes).

    ``teacher``: a trained, built model of the same inputs and classes; it is not changed.
    ``optimizer``: a :class:`lamina.optim.Optimizer` over the student's parameters.
    ``temperature`` T > 0 and ``alpha`` in [0, 1]: the cost's settings
    (:func:`lamina.functional.distillation_loss`); alpha = 0 is plain training on the labels.
    ``metrics``, ``callbacks``, ``schedule``, ``verbose``, ``clip_norm``, ``clip_value`` and
    ``accumulate`` are the :class:`~lamina.train.Trainer`'s. :attr:`model` (also
    :attr:`student`) is the student; :meth:`predict` gives its outputs.
    """

    def __init__(self, student: Module, teacher: Module, optimizer, temperature: float = 4.0, alpha: float = 0.9,
                 metrics=("accuracy",), callbacks=(), schedule=None, verbose: int = 1,
                 clip_norm: float | None = None, clip_value: float | None = None, accumulate: int = 1):
        for what, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, Module):
                raise TypeError(f"Distiller: the {what} must be a Module, got {type(model).__name__}")
        if student is teacher:
            raise ValueError("Distiller: the student and the teacher must be two different models")
        if not teacher.built:
            raise ValueError("Distiller: the teacher is not built (it has never been called, so never trained); "
                             "train it first")
        teacher_params = {id(p) for p in teacher.parameters()}
        if any(id(p) in teacher_params for group in getattr(optimizer, "param_groups", ()) for p in group["params"]):
            raise ValueError("Distiller: the optimizer holds parameters of the teacher; give it the student's "
                             "(the teacher is not trained)")
        self.temperature, self.alpha = check_distillation_settings(temperature, alpha, "Distiller")
        cost = functools.partial(distillation_loss, temperature=self.temperature, alpha=self.alpha)
        super().__init__(student, cost, optimizer, metrics=metrics, callbacks=callbacks, schedule=schedule,
                         verbose=verbose, clip_norm=clip_norm, clip_value=clip_value, accumulate=accumulate)
        self.teacher = teacher

    @property
    def student(self) -> Module:
        return self.model

    # -- the two models' logits and the cost ---------------------------------
    def _fused_softmax(self) -> bool:
        """The Trainer then runs the student without a last Softmax layer: its logits."""
        return _ends_in_softmax(self.model)

    def teacher_logits(self, x):
        """The teacher's logits for the inputs ``x`` (one array or tensor, or several for a model
        of several inputs), computed in evaluation mode without a graph."""
        inputs = [v if isinstance(v, Tensor) else lamina.tensor(v) for v in _input_list(x)]
        with no_grad(), evaluation_mode(self.teacher):
            return _logits(self.teacher, inputs)

    def _forward(self, x, for_loss: bool):
        """(the student's output, and for the cost the teacher's logits for the same ``x``)."""
        out, _ = super()._forward(x, for_loss)
        return out, (self.teacher_logits(x) if for_loss else None)

    def _cost(self, out, teacher_logits, y):
        return self.loss(out, teacher_logits, y)

    # -- checks before training ----------------------------------------------
    def _validate(self, x, y) -> int:
        """The Trainer's checks, then: both models give logits of one shape, and the labels
        fit their classes. Returns the Trainer's count of classes."""
        counted = super()._validate(x, y)
        inputs = [lamina.tensor(np.asarray(values[:2])) for values in _input_list(x)]
        with no_grad(), evaluation_mode(self.model):
            student = _logits(self.model, inputs).numpy()
        teacher = self.teacher_logits(inputs).numpy()
        if student.shape != teacher.shape:
            raise ShapeError(f"Distiller.fit: the student gives logits of shape {student.shape} but the teacher "
                             f"gives {teacher.shape} for the same {len(student)} samples; they must match")
        for what, values in (("student", student), ("teacher", teacher)):
            if _looks_like_probabilities(values):
                raise ValueError(f"Distiller.fit: the {what}'s outputs are probabilities (rows in [0, 1] adding "
                                 "up to 1); it must give logits, or end with a Softmax layer (left out here)")
        labels = np.asarray(y) if y is not None else None
        classes = student.shape[-1]
        if labels is not None and labels.dtype.kind in "iu" and labels.size:
            if labels.min() < 0 or labels.max() >= classes:
                raise ValueError(f"Distiller.fit: labels must lie in [0, {classes}) for models of {classes} "
                                 f"classes; found values from {labels.min()} to {labels.max()}")
        return counted

    # -- fit ------------------------------------------------------------------
    def fit(self, train, val=None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            seed: int | None = None, resume_from=None, validation_split: float | None = None) -> History:
        """:meth:`Trainer.fit <lamina.train.Trainer.fit>` with the teacher frozen throughout."""
        with _frozen(self.teacher):
            return super().fit(train, val=val, epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                               resume_from=resume_from, validation_split=validation_split)


def train_distillation(student: Module, teacher: Module, train, epochs: int = 1, batch_size: int = 32,
                       lr: float = 1e-3, temperature: float = 4.0, alpha: float = 0.9, val=None,
                       seed: int | None = None, metrics=("accuracy",), callbacks=(), verbose: int = 1) -> History:
    """Distil ``teacher`` into ``student`` on ``train`` ((x, y), a Dataset or a DataLoader) with
    Adam at learning rate ``lr`` (see :class:`Distiller`); returns the History. The student is
    left in evaluation mode."""
    distiller = Distiller(student, teacher, Adam(student, lr=lr), temperature=temperature, alpha=alpha,
                          metrics=metrics, callbacks=callbacks, verbose=verbose)
    return distiller.fit(train, val=val, epochs=epochs, batch_size=batch_size, seed=seed)
