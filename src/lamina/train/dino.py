"""DINO training (Caron et al. 2021): multi-crop views, a student trained on all of them, a
teacher that is the exponential moving average of the student, as the authors' reference
(``main_dino.py``) trains them. The head and the loss are :class:`lamina.models.DINOHead`
and :class:`lamina.models.DINOLoss`.

One step on a batch x (:meth:`DINOTrainer.train_step`):

    crops  = [g_1, g_2, l_1, ..., l_n]       2 global and n local crops of every image
    t      = teacher(g_1, g_2)               no gradient
    s      = student(all crops)
    L      = DINOLoss(s, t, epoch)           (the loss moves its centre)
    student <- optimizer step on dL/dtheta_s; in the first ``freeze_last_layer`` epochs the
               head's last layer gets no update
    teacher <- m theta_t + (1 - m) theta_s, m from 0.996 to 1 along a cosine over all steps
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.dino import DINOLoss
from lamina.nn import RandomFlip, RandomResizedCrop
from lamina.nn.layer import pair, positive_int
from lamina.nn.module import Module, as_tensor
from lamina.optim import AdamW

__all__ = ["DINOTrainer", "MultiCrop", "MultiCropWrapper", "cosine_schedule"]


def cosine_schedule(base_value: float, final_value: float, epochs: int, steps_per_epoch: int,
                    warmup_epochs: int = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """One value per step (epochs * steps_per_epoch of them), the reference's
    ``cosine_scheduler``: a linear warm-up from ``start_warmup_value`` to ``base_value`` over
    ``warmup_epochs``, then v_i = final + (base - final) (1 + cos(pi i / n)) / 2 for the n
    remaining steps i = 0 .. n - 1 (so the last value is just short of ``final_value``)."""
    epochs = positive_int(epochs, "cosine_schedule: epochs")
    steps_per_epoch = positive_int(steps_per_epoch, "cosine_schedule: steps_per_epoch")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral) \
            or not 0 <= warmup_epochs < epochs:
        raise ValueError(f"cosine_schedule: warmup_epochs must be an int in [0, epochs={epochs}), "
                         f"got {warmup_epochs!r}")
    warmup_steps = warmup_epochs * steps_per_epoch
    warmup = np.linspace(start_warmup_value, base_value, warmup_steps)
    steps = np.arange(epochs * steps_per_epoch - warmup_steps)
    decay = final_value + 0.5 * (base_value - final_value) * (1.0 + np.cos(np.pi * steps / len(steps)))
    return np.concatenate([warmup, decay])


class MultiCrop(Module):
    """DINO's multi-crop views of a batch of NHWC images: ``forward(x)`` returns the list
    [global_1, global_2, local_1, ..., local_n] of (N, size, size, C) batches.

    Each crop is a :class:`~lamina.nn.RandomResizedCrop` (area fraction in ``global_scale``
    resized to ``global_size``, or ``local_scale`` to ``local_size``) followed by a random
    horizontal flip (unless ``flip`` is False: digits and text are not mirror-symmetric) and,
    when given, ``transform`` (further augmentation layers such as
    ColorJitter, RandomGrayscale, RandomGaussianBlur, applied to every crop). The reference's
    defaults are 224 and 96 pixels, scales (0.4, 1) and (0.05, 0.4)."""

    def __init__(self, global_size, local_size, local_crops_number: int = 8, global_scale=(0.4, 1.0),
                 local_scale=(0.05, 0.4), flip: bool = True, transform: Module | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(local_crops_number, bool) or not isinstance(local_crops_number, numbers.Integral) \
                or local_crops_number < 0:
            raise ValueError(f"MultiCrop: local_crops_number must be an int >= 0, got {local_crops_number!r}")
        self.local_crops_number = int(local_crops_number)
        self.global_size, self.local_size = pair(global_size, "MultiCrop: global_size"), \
            pair(local_size, "MultiCrop: local_size")
        self.global_crop = RandomResizedCrop(self.global_size, scale=global_scale, name="global_crop")
        self.local_crop = RandomResizedCrop(self.local_size, scale=local_scale, name="local_crop")
        if flip:
            self.flip = RandomFlip("horizontal", name="flip")
        if transform is not None:
            if not isinstance(transform, Module):
                raise TypeError(f"MultiCrop: transform must be a layer (or a Sequential of them), got {transform!r}")
            self.transform = transform

    @property
    def ncrops(self) -> int:
        """2 global crops + the local ones: DINOLoss's ``ncrops``."""
        return 2 + self.local_crops_number

    def _view(self, crop: Module, x: Tensor) -> Tensor:
        view = crop(x)
        if "flip" in self._modules:
            view = self.flip(view)
        return self.transform(view) if "transform" in self._modules else view

    def forward(self, x) -> list[Tensor]:
        x = as_tensor(x)
        if x.ndim != 4:
            raise ShapeError(f"MultiCrop: expected a 4-D NHWC batch of images, got shape {x.shape}")
        return [self._view(self.global_crop, x) for _ in range(2)] + \
               [self._view(self.local_crop, x) for _ in range(self.local_crops_number)]


class MultiCropWrapper(Module):
    """``backbone`` then ``head`` on a list of crops, as the reference's wrapper: runs of
    consecutive crops of one size are concatenated and go through the backbone together,
    the features of all crops are joined (crop after crop) and go through the head once:
    (sum of the crops' batches, out_dim). A single tensor is taken as one crop."""

    def __init__(self, backbone: Module, head: Module, name: str | None = None):
        super().__init__(name=name)
        self.backbone, self.head = backbone, head

    def forward(self, crops) -> Tensor:
        crops = [as_tensor(c) for c in (crops if isinstance(crops, (list, tuple)) else [crops])]
        if not crops:
            raise ValueError("MultiCropWrapper: no crops given")
        features, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[1:] == crops[start].shape[1:]:
                end += 1
            group = crops[start] if end == start + 1 else F.concat(crops[start:end], axis=0)
            out = self.backbone(group)
            features.append(out if out.ndim == 2 else F.reshape(out, out.shape[0], -1))
            start = end
        return self.head(features[0] if len(features) == 1 else F.concat(features, axis=0))


class DINOTrainer:
    """Self-distillation of ``backbone`` (a module mapping images to (N, D) features) with a
    ``head`` (:class:`~lamina.models.DINOHead`), the ``loss``
    (:class:`~lamina.models.DINOLoss`, its ``ncrops`` equal to the augmentation's) and the
    multi-crop ``augment`` (:class:`MultiCrop`); the steps of the module docstring.

    :attr:`student` is ``MultiCropWrapper(backbone, head)``; :attr:`teacher` a copy of it made
    at the first step (same weights, every parameter frozen), updated only by the EMA with the
    momentum :attr:`momentum_schedule` = cosine_schedule(``momentum_teacher``, 1, ``epochs``,
    ``steps_per_epoch``). ``optimizer``: a function of the student's parameter list returning
    an optimizer, by default AdamW(lr=``lr``, weight_decay=``weight_decay``) (the reference
    also schedules both; wrap the optimizer to do so). ``clip_grad``: each parameter's
    gradient scaled down to this norm, as the reference's ``clip_gradients``.
    ``freeze_last_layer``: epochs during which the head's ``last_layer`` is not updated.
    """

    def __init__(self, backbone: Module, head: Module, loss: DINOLoss, augment: MultiCrop, epochs: int,
                 steps_per_epoch: int, momentum_teacher: float = 0.996, lr: float = 5e-4, weight_decay: float = 0.04,
                 optimizer=None, clip_grad: float | None = 3.0, freeze_last_layer: int = 1):
        if not isinstance(loss, DINOLoss):
            raise TypeError(f"DINOTrainer: loss must be a DINOLoss, got {type(loss).__name__}")
        if not callable(augment):
            raise TypeError(f"DINOTrainer: augment must be a MultiCrop (a layer returning a list of crops), got "
                            f"{augment!r}")
        crops = getattr(augment, "ncrops", loss.ncrops)
        if crops != loss.ncrops:
            raise ValueError(f"DINOTrainer: the augmentation makes {crops} crops but the loss expects "
                             f"ncrops={loss.ncrops}")
        if isinstance(momentum_teacher, bool) or not isinstance(momentum_teacher, numbers.Real) \
                or not 0.0 <= momentum_teacher <= 1.0:
            raise ValueError(f"DINOTrainer: momentum_teacher must be a number in [0, 1], got {momentum_teacher!r}")
        if clip_grad is not None and not (isinstance(clip_grad, numbers.Real) and clip_grad > 0):
            raise ValueError(f"DINOTrainer: clip_grad must be None or a number > 0, got {clip_grad!r}")
        self.epochs = positive_int(epochs, "DINOTrainer: epochs")
        self.steps_per_epoch = positive_int(steps_per_epoch, "DINOTrainer: steps_per_epoch")
        self.student = MultiCropWrapper(backbone, head, name="student")
        self.teacher: MultiCropWrapper | None = None
        self.loss, self.augment = loss, augment
        self.momentum_schedule = cosine_schedule(float(momentum_teacher), 1.0, self.epochs, self.steps_per_epoch)
        self.make_optimizer = optimizer or (lambda params: AdamW(params, lr=lr, weight_decay=weight_decay))
        self.optimizer = None
        self.clip_grad = None if clip_grad is None else float(clip_grad)
        self.freeze_last_layer = int(freeze_last_layer)
        self.iteration = 0

    def _start(self, crops: list[Tensor]) -> None:
        """Build the student on the first crops, copy it into the teacher, make the optimizer."""
        with no_grad():
            self.student(crops[:1])
        self.teacher = copy.deepcopy(self.student)
        self.teacher.name = "teacher"
        self.teacher.freeze()
        self.optimizer = self.make_optimizer(self.student.parameters(trainable_only=True))

    def _last_layer_parameters(self) -> list:
        head = self.student.head
        last = head.last_layer if "last_layer" in head._modules else None
        return [] if last is None else last.parameters()

    def _clip(self) -> None:
        for p in self.student.parameters(trainable_only=True):
            if p.grad is None:
                continue
            grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
            norm = float(backend.xp.sqrt((grad * grad).sum()))
            if norm > self.clip_grad:
                p.grad = grad * (self.clip_grad / (norm + 1e-6))

    def update_teacher(self, momentum: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s for every parameter (buffers are copied)."""
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.data[...] = momentum * t.data + (1.0 - momentum) * s.data
        for (_, module), (_, source) in zip(self.teacher.named_modules(), self.student.named_modules(), strict=True):
            for key in module._buffers:
                module._buffers[key] = copy.deepcopy(source._buffers[key])

    def train_step(self, images, epoch: int) -> float:
        """One step on a batch (the module docstring); returns the loss."""
        self._check_step(epoch)
        for module in (self.augment, self.loss):
            if isinstance(module, Module):
                module.train()
        crops = self.augment(as_tensor(images))
        if self.teacher is None:
            self._start(crops)
        self.student.train()
        with no_grad():
            teacher_output = self.teacher(crops[:2])
        loss = self.loss(self.student(crops), teacher_output, epoch)
        self._descend(loss, epoch)
        return loss.item()

    def _check_step(self, epoch: int) -> None:
        """Refuse an epoch outside the schedules, or a step past their end."""
        label = f"{type(self).__name__}.train_step"
        if not 0 <= epoch < self.epochs:
            raise ValueError(f"{label}: epoch {epoch} is outside [0, {self.epochs})")
        if self.iteration >= len(self.momentum_schedule):
            raise RuntimeError(f"{label}: all {len(self.momentum_schedule)} steps of the schedule "
                               "(epochs * steps_per_epoch) are done")

    def _descend(self, loss: Tensor, epoch: int) -> None:
        """The student's optimizer step on ``loss`` (gradients clipped, the last layer frozen
        in the first ``freeze_last_layer`` epochs), then the teacher's EMA update."""
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_grad is not None:
            self._clip()
        if epoch < self.freeze_last_layer:
            for p in self._last_layer_parameters():
                p.grad = None
        self.optimizer.step()
        with no_grad():
            self.update_teacher(float(self.momentum_schedule[self.iteration]))
        self.iteration += 1

    def fit(self, x, batch_size: int = 64, seed: int | None = None) -> dict[str, list[float]]:
        """``epochs`` passes over the images ``x`` in shuffled batches of ``batch_size`` (the
        last, short batch dropped, so ``steps_per_epoch`` must be len(x) // batch_size);
        returns ``{'loss': [...]}``, the mean loss of each epoch."""
        values = np.asarray(x)
        batch_size = positive_int(batch_size, "DINOTrainer.fit: batch_size")
        if len(values) // batch_size != self.steps_per_epoch:
            raise ValueError(f"DINOTrainer.fit: {len(values)} images in batches of {batch_size} make "
                             f"{len(values) // batch_size} steps per epoch, but the schedules were made for "
                             f"steps_per_epoch={self.steps_per_epoch}")
        if values.dtype.kind != "f":
            values = values.astype(backend.get_default_dtype())
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        history: dict[str, list[float]] = {"loss": []}
        for epoch in range(self.epochs):
            order = rng.permutation(len(values))
            losses = [self.train_step(Tensor(values[order[k * batch_size:(k + 1) * batch_size]]), epoch)
                      for k in range(self.steps_per_epoch)]
            history["loss"].append(float(np.mean(losses)))
        return history
