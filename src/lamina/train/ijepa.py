"""I-JEPA training (Assran et al. 2023), as the authors' reference (``src/train.py``) trains:
one step on a batch x (:meth:`IJEPATrainer.train_step`):

    masks  = multiblock_masks(batch)                 M target blocks, one context block
    L      = model(x, masks=masks)                   predictor vs LN(target encoder), no gradient
                                                     reaches the target encoder
    context encoder and predictor <- optimizer step on dL/dtheta
    target encoder <- m theta_target + (1 - m) theta_context, m linear from ema[0] to ema[1]
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.models.ijepa import IJEPA, ema_momentum_schedule, multiblock_masks
from lamina.nn.layer import positive_int
from lamina.optim import AdamW

__all__ = ["IJEPATrainer"]


class IJEPATrainer:
    """Trains an :class:`~lamina.models.IJEPA` for ``epochs`` x ``steps_per_epoch`` steps.
    ``mask_options``: keyword arguments of :func:`~lamina.models.multiblock_masks` (the
    number of targets, the scale and aspect ranges, ``min_keep``); ``ema`` = (start, end) of
    the momentum schedule; ``optimizer``: a function of the trainable parameters returning an
    optimizer, by default AdamW(lr=``lr``, weight_decay=``weight_decay``); ``seed`` fixes the
    masks."""

    def __init__(self, model: IJEPA, epochs: int, steps_per_epoch: int, lr: float = 1e-3,
                 weight_decay: float = 0.04, ema=(0.996, 1.0), mask_options: dict | None = None, optimizer=None,
                 seed: int | None = None):
        if not isinstance(model, IJEPA):
            raise TypeError(f"IJEPATrainer: model must be an IJEPA, got {type(model).__name__}")
        self.model = model
        self.epochs = positive_int(epochs, "IJEPATrainer: epochs")
        self.steps_per_epoch = positive_int(steps_per_epoch, "IJEPATrainer: steps_per_epoch")
        start, end = ema
        self.momentum_schedule = ema_momentum_schedule(start, end, self.epochs * self.steps_per_epoch)
        self.mask_options = dict(mask_options or {})
        self.make_optimizer = optimizer or (lambda params: AdamW(params, lr=lr, weight_decay=weight_decay))
        self.optimizer = None
        self.rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        self.iteration = 0

    def train_step(self, images) -> float:
        """One step on a batch of NHWC images (the module docstring); returns the loss."""
        if self.iteration >= len(self.momentum_schedule):
            raise RuntimeError(f"IJEPATrainer.train_step: all {len(self.momentum_schedule)} steps of the schedule "
                               "(epochs * steps_per_epoch) are done")
        x = images if isinstance(images, Tensor) else Tensor(images)
        masks = multiblock_masks(x.shape[0], self.model.context_encoder.grid_size, rng=self.rng,
                                 **self.mask_options)
        self.model.train()
        loss = self.model(x, masks=masks)
        if self.optimizer is None:
            self.optimizer = self.make_optimizer(self.model.parameters(trainable_only=True))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with no_grad():
            self.model.update_target(float(self.momentum_schedule[self.iteration]))
        self.iteration += 1
        return loss.item()

    def fit(self, x, batch_size: int = 64) -> dict[str, list[float]]:
        """``epochs`` passes over the images ``x`` in shuffled batches of ``batch_size`` (the last,
        short batch dropped: ``steps_per_epoch`` must be len(x) // batch_size); returns
        ``{'loss': [...]}``, the mean loss of each epoch."""
        values = np.asarray(x)
        batch_size = positive_int(batch_size, "IJEPATrainer.fit: batch_size")
        if len(values) // batch_size != self.steps_per_epoch:
            raise ValueError(f"IJEPATrainer.fit: {len(values)} images in batches of {batch_size} make "
                             f"{len(values) // batch_size} steps per epoch, but the schedule was made for "
                             f"steps_per_epoch={self.steps_per_epoch}")
        if values.dtype.kind != "f":
            values = values.astype(backend.get_default_dtype())
        history: dict[str, list[float]] = {"loss": []}
        for _ in range(self.epochs):
            order = self.rng.permutation(len(values))
            losses = [self.train_step(values[order[k * batch_size:(k + 1) * batch_size]])
                      for k in range(self.steps_per_epoch)]
            history["loss"].append(float(np.mean(losses)))
        return history
