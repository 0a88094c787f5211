"""DINOv2 training (Oquab et al. 2023): DINO's image-level self-distillation, iBOT's masked
patch-level self-distillation and the KoLeo regulariser, with an EMA teacher.

One step on a batch x (:meth:`DINOv2Trainer.train_step`):

    crops   = [g_1, g_2, l_1, ..., l_n]            MultiCrop views of every image
    m       = block_masks(g_1 and g_2)             masked patches of the global crops
    teacher = backbone(g_1, g_2) unmasked          no gradient; class tokens -> dino_head,
                                                   patch tokens -> ibot_head
    student = backbone((g_1, g_2), m), backbone(l_1..l_n)
    L       = dino_weight   L_DINO(student class tokens of all crops, teacher's)
            + ibot_weight   L_MIM(student patch scores, teacher's, m)
            + koleo_weight  sum over g_1, g_2 of L_koleo(student class tokens)
    student <- optimizer step; teacher <- m theta_t + (1 - m) theta_s

The teacher's targets are centred by Sinkhorn-Knopp (``centering='sinkhorn_knopp'``, as
DINOv2) or by DINO's and iBOT's EMA centres (``centering='ema'``).
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.dino import DINOLoss, dino_cross_entropy
from lamina.models.dinov2 import koleo_loss, sinkhorn_knopp_centering
from lamina.models.ibot import CENTERINGS, IBOTLoss, block_masks
from lamina.nn.module import Module, as_tensor
from lamina.train.dino import DINOTrainer, MultiCrop

__all__ = ["DINOv2Networks", "DINOv2Trainer"]


class DINOv2Networks(Module):
    """The student's (or the teacher's) networks: a ``backbone`` mapping (N, H, W, C) images
    and optional (N, P) masks to (N, 1 + P, D) tokens (as
    :class:`~lamina.models.MaskedViTEncoder`), the image-level ``dino_head`` on the class
    token and the patch-level ``ibot_head`` on each patch token (both
    :class:`~lamina.models.DINOHead`)."""

    def __init__(self, backbone: Module, dino_head: Module, ibot_head: Module, name: str | None = None):
        super().__init__(name=name)
        self.backbone, self.dino_head, self.ibot_head = backbone, dino_head, ibot_head

    def patch_scores(self, tokens: Tensor) -> Tensor:
        """ibot_head on every patch token: (N, 1 + P, D) tokens -> (N, P, K)."""
        batch, length, width = tokens.shape
        patches = F.reshape(F.getitem(tokens, (slice(None), slice(1, None))), batch * (length - 1), width)
        scores = self.ibot_head(patches)
        return F.reshape(scores, batch, length - 1, scores.shape[-1])

    def forward(self, images, masks=None) -> Tensor:
        """The class tokens' image-level scores (N, K)."""
        tokens = self.backbone(images) if masks is None else self.backbone(images, masks=masks)
        return self.dino_head(F.getitem(tokens, (slice(None), 0)))


def _weight(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"DINOv2Trainer: {what} must be a number >= 0, got {value!r}")
    return float(value)


class DINOv2Trainer(DINOTrainer):
    """The steps of the module docstring for a ``backbone`` such as
    :class:`~lamina.models.MaskedViTEncoder` (its ``patch_size`` gives the mask grid), a
    ``dino_head`` and an ``ibot_head`` with ``out_dim`` and ``patch_out_dim`` scores, and the
    multi-crop ``augment``.

    Teacher temperatures follow DINO's schedule (``warmup_teacher_temp`` to ``teacher_temp``
    over ``warmup_teacher_temp_epochs``; the student's is ``student_temp``); the masks cover
    a ratio in ``mask_ratio`` of the patches of a fraction ``mask_probability`` of the global
    crops. ``lr``, ``weight_decay``, ``momentum_teacher``, ``optimizer``, ``clip_grad`` and
    ``freeze_last_layer`` (of both heads) as :class:`DINOTrainer`. :attr:`student` and
    :attr:`teacher` are :class:`DINOv2Networks`; :attr:`last_losses` the parts of the last
    step's loss."""

    def __init__(self, backbone: Module, dino_head: Module, ibot_head: Module, augment: MultiCrop, epochs: int,
                 steps_per_epoch: int, out_dim: int, patch_out_dim: int | None = None,
                 centering: str = "sinkhorn_knopp",
                 dino_weight: float = 1.0, ibot_weight: float = 1.0, koleo_weight: float = 0.1,
                 student_temp: float = 0.1, teacher_temp: float = 0.07, warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: int = 0, center_momentum: float = 0.9, mask_ratio=(0.1, 0.5),
                 mask_probability: float = 0.5, momentum_teacher: float = 0.992, lr: float = 5e-4,
                 weight_decay: float = 0.04, optimizer=None, clip_grad: float | None = 3.0, freeze_last_layer: int = 1,
                 mask_seed: int | None = None):
        if centering not in CENTERINGS:
            raise ValueError(f"DINOv2Trainer: centering must be one of {CENTERINGS}, got {centering!r}")
        ncrops = getattr(augment, "ncrops", None)
        if not isinstance(ncrops, int) or ncrops < 2:
            raise TypeError(f"DINOv2Trainer: augment must be a MultiCrop (2 global crops and any local ones), got "
                            f"{augment!r}")
        if not hasattr(backbone, "patch_size"):
            raise TypeError(f"DINOv2Trainer: the backbone must have a patch_size (a MaskedViTEncoder), got "
                            f"{type(backbone).__name__}")
        dino_loss = DINOLoss(out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, epochs,
                             student_temp=student_temp, center_momentum=center_momentum)
        super().__init__(backbone, dino_head, dino_loss, augment, epochs, steps_per_epoch,
                         momentum_teacher=momentum_teacher, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                         clip_grad=clip_grad, freeze_last_layer=freeze_last_layer)
        self.student = DINOv2Networks(backbone, dino_head, ibot_head, name="student")
        self.ibot_loss = IBOTLoss(out_dim if patch_out_dim is None else patch_out_dim, student_temp=student_temp,
                                  teacher_temp=teacher_temp, centering=centering, center_momentum=center_momentum)
        self.centering = centering
        self.dino_weight = _weight(dino_weight, "dino_weight")
        self.ibot_weight = _weight(ibot_weight, "ibot_weight")
        self.koleo_weight = _weight(koleo_weight, "koleo_weight")
        self.mask_ratio, self.mask_probability = mask_ratio, float(mask_probability)
        self.mask_rng = mask_seed
        self.last_losses: dict[str, float] = {}

    def _start(self, crops: list[Tensor]) -> None:
        with no_grad():
            self.student.patch_scores(self.student.backbone(crops[0]))
            self.student(crops[0])
        self.teacher = copy.deepcopy(self.student)
        self.teacher.name = "teacher"
        self.teacher.freeze()
        self.optimizer = self.make_optimizer(self.student.parameters(trainable_only=True))

    def _last_layer_parameters(self) -> list:
        heads = (self.student.dino_head, self.student.ibot_head)
        return [p for head in heads if "last_layer" in head._modules for p in head.last_layer.parameters()]

    def masks(self, global_crops: Tensor):
        """Block masks (N, P) for the stacked global crops."""
        if not isinstance(self.mask_rng, np.random.Generator):
            self.mask_rng = np.random.default_rng(self.mask_rng)
        grid = self.student.backbone.grid(global_crops.shape)
        return block_masks(global_crops.shape[0], grid, self.mask_ratio, mask_probability=self.mask_probability,
                           rng=self.mask_rng)

    def _dino_targets(self, teacher_scores: Tensor, epoch: int):
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp_centering(teacher_scores, self.loss.teacher_temp(epoch))
        targets = self.loss.teacher_targets(teacher_scores, epoch)
        self.loss.update_center(teacher_scores)
        return targets

    def losses(self, crops: list[Tensor], masks, epoch: int) -> dict[str, Tensor]:
        """The three terms of the loss (unweighted) for given crops and masks of the global ones."""
        global_crops = F.concat(crops[:2], axis=0)
        with no_grad():
            teacher_tokens = self.teacher.backbone(global_crops)
            teacher_scores = self.teacher.dino_head(F.getitem(teacher_tokens, (slice(None), 0)))
            teacher_patches = self.teacher.patch_scores(teacher_tokens)
        tokens = self.student.backbone(global_crops, masks=masks)
        class_tokens = [F.getitem(tokens, (slice(None), 0))]
        if len(crops) > 2:
            local_tokens = self.student.backbone(F.concat(crops[2:], axis=0))
            class_tokens.append(F.getitem(local_tokens, (slice(None), 0)))
        student_scores = self.student.dino_head(F.concat(class_tokens, axis=0))
        dino = dino_cross_entropy(F.div(student_scores, self.loss.student_temp),
                                  self._dino_targets(teacher_scores, epoch), self.loss.ncrops)
        ibot = self.ibot_loss(self.student.patch_scores(tokens), teacher_patches, masks,
                              teacher_temp=self.loss.teacher_temp(epoch))
        batch = crops[0].shape[0]
        koleo = F.add(koleo_loss(F.getitem(class_tokens[0], slice(0, batch))),
                      koleo_loss(F.getitem(class_tokens[0], slice(batch, 2 * batch))))
        return {"dino": dino, "ibot": ibot, "koleo": koleo}

    def train_step(self, images, epoch: int) -> float:
        """One step on a batch (the module docstring); returns the weighted loss."""
        self._check_step(epoch)
        images = as_tensor(images)
        if images.ndim != 4 or images.shape[0] < 2:
            raise ShapeError(f"DINOv2Trainer.train_step: expected a 4-D NHWC batch of at least 2 images, got shape "
                             f"{images.shape}")
        for module in (self.augment, self.loss, self.ibot_loss):
            module.train()
        crops = self.augment(images)
        if self.teacher is None:
            self._start(crops)
        self.student.train()
        parts = self.losses(crops, self.masks(F.concat(crops[:2], axis=0)), epoch)
        loss = F.add(F.add(F.mul(parts["dino"], self.dino_weight), F.mul(parts["ibot"], self.ibot_weight)),
                     F.mul(parts["koleo"], self.koleo_weight))
        self._descend(loss, epoch)
        self.last_losses = {key: value.item() for key, value in parts.items()}
        return loss.item()
