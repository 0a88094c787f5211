"""The training step of :class:`~lamina.train.Trainer`: the model's output, the cost J, its
gradient dJ/dtheta and the optimizer's update.

``LOSSES``, the loss names a Trainer takes, and the helpers of a step: the model's inputs
(one array or a group of several), a loss under ``functools.partial``, the model's output
layer, the training and evaluation modes of schedule-free optimizers, and mixed precision.
``_TrainerSteps``, a base class of ``Trainer``, holds the methods of one step: forward the
mini-batch, compute its cost (weighted by sample and class weights, or not), back-propagate
(scaled under mixed precision), clip the gradients, let the optimizer update theta and step an
iteration schedule; the grouping of mini-batches for gradient accumulation; and the step of a
per-epoch schedule after each epoch.
"""

from __future__ import annotations

import functools

import numpy as np

import lamina
from lamina import backend
from lamina import functional as F
from lamina.amp import GradScaler, autocast
from lamina.autograd import Tensor
from lamina.autograd.graph import recomputing
from lamina.data.dataset import is_multi_input, num_samples
from lamina.errors import ShapeError
from lamina.nn import Model, Sequential
from lamina.optim import clip_grad_norm, clip_grad_value
from lamina.train.weighting import check_weights, class_indices, per_sample_loss

__all__ = ["LOSSES"]

LOSSES = {
    "categorical_cross_entropy": F.categorical_cross_entropy,
    "binary_cross_entropy": F.binary_cross_entropy,
    "mean_squared_error": F.mean_squared_error,
    "mse": F.mean_squared_error,
    "mean_absolute_error": F.mean_absolute_error,
    "mae": F.mean_absolute_error,
    "huber": F.huber,
    "hinge": F.hinge,
    "smooth_l1": F.smooth_l1,
    "multiclass_hinge": F.multiclass_hinge,
    "kl_divergence": F.kl_divergence,
    "nll": F.nll_loss,
    "binary_focal": F.binary_focal_loss,
    "categorical_focal": F.categorical_focal_loss,
    "poisson_nll": F.poisson_nll_loss,
    "soft_margin": F.soft_margin_loss,
    "multilabel_soft_margin": F.multilabel_soft_margin_loss,
    "hinge_embedding": F.hinge_embedding_loss,
    "multilabel_margin": F.multilabel_margin_loss,
    "log_cosh": F.log_cosh,
    "squared_hinge": F.squared_hinge,
    "poisson": F.poisson,
    "mean_squared_logarithmic_error": F.mean_squared_logarithmic_error,
    "msle": F.mean_squared_logarithmic_error,
    "mean_absolute_percentage_error": F.mean_absolute_percentage_error,
    "mape": F.mean_absolute_percentage_error,
    "cosine_similarity": F.cosine_similarity_loss,
}


def _plain(loss):
    """The function under a ``functools.partial`` (the loss with some options fixed)."""
    while isinstance(loss, functools.partial):
        loss = loss.func
    return loss


def _input_list(x) -> list:
    """The model's inputs in ``x``: the arrays of a group of several, or ``[x]``."""
    return list(x) if is_multi_input(x) else [x]


def _expected_inputs(model) -> tuple[int, list[str]] | None:
    """(how many inputs ``model`` takes, their names), or None when the model does not say."""
    if isinstance(model, Model):
        return len(model.inputs), list(model.input_names)
    if isinstance(model, Sequential):
        return 1, []
    return None


def _is_cross_entropy(loss) -> bool:
    """Whether ``loss`` is categorical cross-entropy, maybe with options fixed by a partial
    (``partial(F.categorical_cross_entropy, label_smoothing=0.1)``): a Softmax last layer is
    then fused into it, and the labels are checked against the classes."""
    return _plain(loss) is F.categorical_cross_entropy


def _output_layer(model):
    """The layer that gives ``model``'s output: a Sequential's last, a functional Model's
    :attr:`~lamina.nn.Model.output_layer`; None when there is no such single layer."""
    if hasattr(model, "output_layer"):
        return model.output_layer
    layers = list(model) if hasattr(model, "__iter__") else []
    return layers[-1] if layers else None


def _set_optimizer_mode(optimizer, training: bool) -> bool | None:
    """Put an optimizer with training and evaluation modes (``train()``, ``eval()`` and
    ``train_mode``: the schedule-free ones), or the one a wrapper (SAM, Lookahead) holds, in
    the mode asked for; returns the mode it was in (None for an optimizer without modes,
    left alone)."""
    while not hasattr(optimizer, "train_mode") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    if not (hasattr(optimizer, "train_mode") and callable(getattr(optimizer, "train", None))
            and callable(getattr(optimizer, "eval", None))):
        return None
    before = bool(optimizer.train_mode)
    if training:
        optimizer.train()
    else:
        optimizer.eval()
    return before


def _with_evaluation_weights(method):
    """Run a Trainer method with the optimizer in evaluation mode (the model's weights then
    the schedule-free average x), and put back the mode it was in."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        before = _set_optimizer_mode(self.optimizer, training=False)
        try:
            return method(self, *args, **kwargs)
        finally:
            if before:
                _set_optimizer_mode(self.optimizer, training=True)

    return run


def _mixed_precision(amp, optimizer) -> tuple[autocast, GradScaler]:
    """The autocast context and the loss scaler for ``Trainer(amp=...)``: ``False`` gives
    disabled ones (pass-throughs), ``True`` float16, a dtype that dtype."""
    if amp is False or amp is None:
        return autocast(enabled=False), GradScaler(enabled=False)
    if getattr(optimizer, "needs_closure", False):
        raise ValueError(f"Trainer: amp does not work with {type(optimizer).__name__}, whose step needs a closure")
    return autocast(dtype=np.float16 if amp is True else amp), GradScaler()


class _TrainerSteps:
    """The methods of a training step, a base class of :class:`~lamina.train.Trainer` (which
    sets the attributes they read: ``model``, ``loss``, ``optimizer``, ``accumulate``, ...)."""

    # -- the model's output and the cost --------------------------------------
    def _fused_softmax(self) -> bool:
        """Softmax followed by cross-entropy is computed as one stable op on the logits."""
        return _is_cross_entropy(self.loss) and type(_output_layer(self.model)).__name__ == "Softmax"

    def _check_input_count(self, where: str, given: int) -> None:
        """Raise unless the model takes ``given`` inputs (when it says how many it takes)."""
        expected = _expected_inputs(self.model)
        if expected is None or expected[0] == given:
            return
        count, names = expected
        named = f" ({', '.join(names)})" if names else ""
        how = "one array" if count == 1 else f"a tuple or list of {count} arrays, one per input"
        raise ValueError(f"{where}: the model takes {count} input(s){named} but the data holds {given} input "
                         f"array(s); give x as {how}")

    def _forward(self, x, for_loss: bool):
        inputs = _input_list(x)
        self._check_input_count("Trainer", len(inputs))
        inputs = [v if isinstance(v, Tensor) else lamina.tensor(v) for v in inputs]
        if for_loss and self._fused_softmax():
            if hasattr(self.model, "forward_to_output_layer"):
                return self.model.forward_to_output_layer(*inputs), True
            out = inputs[0]  # a Sequential: one input
            for layer in list(self.model)[:-1]:
                out = layer(out)
            return out, True
        return self.model(*inputs), False

    def _cost(self, out, logits: bool, y):
        if logits:
            return self.loss(out, y, from_logits=True)
        return self.loss(out, y)

    def _weighted_cost(self, out, logits: bool, y, weights: np.ndarray):
        """sum_i w_i L_i over the batch size, or over sum_i w_i (``weight_normalization``)."""
        if type(self)._cost is not _TrainerSteps._cost:
            raise ValueError(f"{type(self).__name__}: its cost is its own, and takes no sample or class weights; "
                             "give (x, y) data without weights")
        if self._unreduced_loss is None:
            self._unreduced_loss = per_sample_loss(self.loss)
            if self._unreduced_loss is None:
                raise ValueError(f"Trainer: sample or class weights need the loss's per-sample values, and "
                                 f"the loss {self.loss_name!r} takes no reduction argument; give a loss "
                                 "function taking reduction='none' or a loss module with a reduction")
        losses = self._unreduced_loss(out, y, from_logits=True) if logits else self._unreduced_loss(out, y)
        if losses.ndim > 1:                          # a sample of several rows: their mean
            losses = losses.mean(axis=tuple(range(1, losses.ndim)))
        if losses.shape != (len(weights),):
            raise ShapeError(f"Trainer: the loss {self.loss_name!r} with reduction='none' gave shape "
                             f"{losses.shape} for a batch of {len(weights)} weighted samples; expected "
                             f"({len(weights)},)")
        total = (losses * backend.xp.asarray(weights, dtype=losses.dtype)).sum()
        if self.weight_normalization == "batch_size":
            return total / float(len(weights))
        return total / max(float(weights.sum()), np.finfo(np.float64).tiny)

    def _weights_of(self, y, w, class_table: np.ndarray | None, where: str) -> np.ndarray | None:
        """A batch's sample weights times its samples' class weights; None when there are
        none, or when all are 1 (the unweighted cost is then the same)."""
        if w is None and class_table is None:
            return None
        n = len(y) if y is not None else len(w)
        weights = np.ones(n) if w is None else check_weights(w, n, where)
        if class_table is not None:
            classes = class_indices(y, where)
            inside = (classes >= 0) & (classes < len(class_table))
            weights = weights * np.where(inside, class_table[np.clip(classes, 0, len(class_table) - 1)], 1.0)
        return None if bool((weights == 1).all()) else weights

    def train_step(self, x, y, w=None) -> tuple[float, np.ndarray]:
        """One optimizer step on the mini-batch (x, y), with sample weights ``w`` if given,
        whatever ``accumulate`` is; returns the cost and the model's output. A schedule-free
        optimizer is put in (and left in) training mode."""
        _set_optimizer_mode(self.optimizer, training=True)
        self.optimizer.zero_grad()
        loss, out = self._backward(x, y, 1.0, self._weights_of(y, w, self._class_weights, "Trainer.train_step"))
        self._update([(x, y, w)])
        return loss, out

    def _backward(self, x, y, weight: float, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Forward (x, y) and add ``weight`` times the gradient of its cost (with the samples
        weighted by ``weights``) to the gradients."""
        with self._autocast:
            out, logits = self._forward(x, for_loss=True)
            cost = self._cost(out, logits, y) if weights is None else self._weighted_cost(out, logits, y, weights)
        scaled = self._scaler.scale(cost)
        if weight == 1.0:
            scaled.backward()
        else:
            scaled.backward(backend.xp.full_like(scaled.data, weight))
        return float(cost.item()), out.data

    def _update(self, group: list) -> None:
        """Clip the gradients, let the optimizer step, step an iteration schedule. An optimizer
        that ``needs_closure`` (SAM) gets one that recomputes the gradients of ``group``, the
        mini-batches whose gradients it steps on."""
        self._scaler.unscale_(self.optimizer)        # clipping must see the true gradients
        if self.clip_value is not None:
            clip_grad_value(self.model, self.clip_value)
        if self.clip_norm is not None:
            clip_grad_norm(self.model, self.clip_norm)
        if getattr(self.optimizer, "needs_closure", False):
            self.optimizer.step(self._closure(group))
        else:
            self._scaler.step(self.optimizer)
            self._scaler.update()
        if self.schedule is not None and getattr(self.schedule, "per", "epoch") == "iteration":
            self.schedule.step()

    def _closure(self, group: list):
        """A closure for ``optimizer.step``: zero the gradients, add those of ``group``'s
        mini-batches weighted as in the fit loop, return the group's cost."""
        group_size = sum(num_samples(xb) for xb, _, _ in group)

        def closure() -> float:
            self.optimizer.zero_grad()
            # The weights differ from the first pass's (SAM perturbs them), so this is no
            # checkpoint's rerun; but recomputing() does nothing except make layers skip their
            # side effects, and batch norm's running statistics were already updated from
            # these mini-batches: they must not move twice in one step.
            cost = 0.0
            with recomputing():
                for xb, yb, wb in group:
                    share = num_samples(xb) / group_size
                    weights = self._weights_of(yb, wb, self._class_weights, "Trainer.fit")
                    cost += share * self._backward(xb, yb, share, weights)[0]
            return cost

        return closure

    def _groups(self, batches):
        """The epoch's mini-batches, ``accumulate`` at a time (fewer in the epoch's last group)."""
        group = []
        for batch in batches:
            group.append(batch)
            if len(group) == self.accumulate:
                yield group
                group = []
        if group:
            yield group

    def _step_epoch_schedule(self, logs: dict, validated: bool, has_val: bool) -> None:
        """Step a per-epoch schedule. One with a ``monitor`` (:class:`~lamina.optim.ReduceOnPlateau`)
        is stepped with that logged quantity (None: 'val_loss' when there is validation data,
        else 'loss'), skipping the epochs left unvalidated when it is a ``val_`` one."""
        if self.schedule is None or getattr(self.schedule, "per", "epoch") != "epoch":
            return
        if not hasattr(self.schedule, "monitor"):
            self.schedule.step()
            return
        name = self.schedule.monitor or ("val_loss" if has_val else "loss")
        if name in logs:
            self.schedule.step(logs[name])
        elif not (name.startswith("val_") and has_val and not validated):
            raise KeyError(f"Trainer.fit: the schedule {type(self.schedule).__name__} monitors {name!r}, which "
                           f"is not logged; logged: {sorted(logs)}"
                           + ("" if has_val or not name.startswith("val_") else " (pass val= to validate)"))
