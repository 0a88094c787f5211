"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"):
self-distillation with no labels. The head and the loss, in the layout of the authors'
reference (``vision_transformer.DINOHead``, ``main_dino.DINOLoss``); the training step is
:class:`lamina.train.DINOTrainer`.

A student g_s and a teacher g_t (same architecture; the teacher an exponential moving
average of the student) see different crops of an image. Each outputs K scores; the
teacher's are centred and sharpened into targets, the student's softened less:

    P_t(x) = softmax((g_t(x) - c) / tau_t)          (no gradient flows to the teacher)
    P_s(x) = softmax(g_s(x) / tau_s)
    L = 1 / T  sum_{i in global crops} sum_{v != i} mean_batch H(P_t(x_i), P_s(x_v))

with H(p, q) = -sum_k p_k log q_k and T the number of pairs. Centring (subtracting c, an
EMA of the teacher's mean output, c <- m c + (1 - m) mean_batch g_t) stops one dimension
from dominating; sharpening (tau_t < tau_s) stops the output from going uniform: together
they avoid collapse.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DINOHead", "DINOLoss", "dino_cross_entropy"]

HEAD_INIT_STD = 0.02       # the MLP's Dense weights start N(0, 0.02^2) truncated at +-2 std


@register_layer
class DINOHead(Block):
    """The projection head: an MLP of ``nlayers`` Dense layers (``hidden_dim`` units and GELU
    between them, ``bottleneck_dim`` at the end; sub-layer ``mlp``, a Sequential whose layer
    names are the reference's indices), the output scaled to unit length, then a
    weight-normalised Dense layer without bias to ``out_dim`` scores (``last_layer``, a
    :class:`~lamina.nn.WeightNorm` whose gains ``g`` start at 1):

        y = V^T (u / ||u||),  u = mlp(x),  V's columns v_k / ||v_k|| (times g_k)

    With ``norm_last_layer`` the gains stay 1 (not trainable): every output is a cosine
    similarity, as the reference recommends for ViTs. (N, in_dim) -> (N, out_dim)."""

    default_name = "dino_head"

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, norm_last_layer: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.in_dim = positive_int(in_dim, "DINOHead: in_dim")
        self.out_dim = positive_int(out_dim, "DINOHead: out_dim")
        self.hidden_dim = positive_int(hidden_dim, "DINOHead: hidden_dim")
        self.bottleneck_dim = positive_int(bottleneck_dim, "DINOHead: bottleneck_dim")
        self.nlayers = positive_int(nlayers, "DINOHead: nlayers")
        self.norm_last_layer = bool(norm_last_layer)
        layers: list[Module] = []
        for k in range(self.nlayers - 1):
            layers += [nn.Dense(self.hidden_dim, name=str(2 * k)), nn.GELU(name=str(2 * k + 1))]
        layers.append(nn.Dense(self.bottleneck_dim, name=str(2 * (self.nlayers - 1))))
        self.mlp = nn.Sequential(*layers, name="mlp")
        self.last_layer = nn.WeightNorm(nn.Dense(self.out_dim, use_bias=False), name="last_layer")

    def trace(self, shape, step):
        shape = check_shape_ndim(self, shape, 2, f"features (batch, {self.in_dim})")
        if shape[1] is not None and shape[1] != self.in_dim:
            raise ShapeError(f"{self._label()}: got features of shape {tuple(shape)}; expected {self.in_dim} "
                             "features (in_dim)")
        return step(self.last_layer, step(self.mlp, shape))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if initializers.is_meta():
            return
        for layer in self.mlp.children():
            if isinstance(layer, nn.Dense):
                n_in, n_out = layer.weight.shape
                layer.weight.data[...] = initializers.truncated_normal(HEAD_INIT_STD)((n_in, n_out), n_in, n_out,
                                                                                      layer.weight.dtype)
                layer.bias.data[...] = 0
        # torch's default Linear weights, U(-1 / sqrt(n_in), 1 / sqrt(n_in)), with unit gains
        v = self.last_layer.v
        v.data[...] = initializers.uniform(1.0 / np.sqrt(v.shape[0]))(v.shape, v.shape[0], v.shape[1], v.dtype)
        self.last_layer.g.data[...] = 1
        if self.norm_last_layer:
            self.last_layer.g.freeze()

    def forward(self, x) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(as_tensor(x)), axis=-1))

    def get_config(self) -> dict:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden_dim": self.hidden_dim,
                "bottleneck_dim": self.bottleneck_dim, "nlayers": self.nlayers,
                "norm_last_layer": self.norm_last_layer, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim}, layers={self.nlayers}, bottleneck={self.bottleneck_dim}"


def dino_cross_entropy(student_output, teacher_probs, ncrops: int) -> Tensor:
    """The loss of the module docstring for given teacher targets: ``student_output``
    (ncrops * B, K), the student's scores already divided by the student temperature, crop
    after crop; ``teacher_probs`` (2 * B, K) the teacher's targets of the two global
    crops (constants). Averages H(P_t(x_i), P_s(x_v)) over the batch and the 2 (ncrops - 1)
    pairs v != i."""
    student = as_tensor(student_output)
    targets = teacher_probs.data if isinstance(teacher_probs, Tensor) else backend.xp.asarray(teacher_probs)
    ncrops = positive_int(ncrops, "dino_cross_entropy: ncrops")
    if ncrops < 2 or student.ndim != 2 or student.shape[0] % ncrops:
        raise ShapeError(f"dino_cross_entropy: student outputs of shape {student.shape} are not {ncrops} crops of "
                         "(batch, K) stacked crop after crop (at least 2 crops)")
    batch, k = student.shape[0] // ncrops, student.shape[1]
    if targets.shape != (2 * batch, k):
        raise ShapeError(f"dino_cross_entropy: teacher targets of shape {tuple(targets.shape)}; expected (2 * {batch}, "
                         f"{k}): the two global crops of the student's batch")
    log_probs = F.reshape(F.log_softmax(student, axis=-1), ncrops, batch, k)
    targets = targets.reshape(2, batch, k)
    # sum over v != i of log P_s(x_v) = (sum over all v) - log P_s(x_i)
    others = F.sub(F.sum(log_probs, axis=0, keepdims=True), F.getitem(log_probs, slice(0, 2)))
    pairs = 2 * (ncrops - 1)
    return F.div(F.neg(F.sum(F.mul(others, targets))), float(batch * pairs))


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"DINOLoss: {what} must be a number > 0, got {value!r}")
    return float(value)


class DINOLoss(Module):
    """The DINO loss with its centre (module docstring). ``loss(student_output,
    teacher_output, epoch)``: ``student_output`` (ncrops * B, out_dim) the student's scores of
    every crop, crop after crop (the two global crops first); ``teacher_output`` (2 * B,
    out_dim) the teacher's of the two global crops. Returns the scalar loss and, in training
    mode, moves the centre (buffer ``center`` (1, out_dim), starting at 0):
    c <- center_momentum c + (1 - center_momentum) mean_batch teacher_output.

    The teacher temperature of ``epoch`` (counted from 0) rises linearly from
    ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs,
    then stays (:attr:`teacher_temp_schedule`, ``nepochs`` values)."""

    def __init__(self, out_dim: int, ncrops: int, warmup_teacher_temp: float, teacher_temp: float,
                 warmup_teacher_temp_epochs: int, nepochs: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9, name: str | None = None):
        super().__init__(name=name)
        self.out_dim = positive_int(out_dim, "DINOLoss: out_dim")
        self.ncrops = positive_int(ncrops, "DINOLoss: ncrops")
        if self.ncrops < 2:
            raise ValueError(f"DINOLoss: ncrops must count the 2 global crops and any local ones, got {ncrops}")
        self.student_temp = _positive_number(student_temp, "student_temp")
        warm, final = _positive_number(warmup_teacher_temp, "warmup_teacher_temp"), \
            _positive_number(teacher_temp, "teacher_temp")
        nepochs = positive_int(nepochs, "DINOLoss: nepochs")
        warmup = int(warmup_teacher_temp_epochs)
        if not 0 <= warmup <= nepochs:
            raise ValueError(f"DINOLoss: warmup_teacher_temp_epochs must be in [0, nepochs={nepochs}], "
                             f"got {warmup_teacher_temp_epochs!r}")
        if isinstance(center_momentum, bool) or not isinstance(center_momentum, numbers.Real) \
                or not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"DINOLoss: center_momentum must be a number in [0, 1], got {center_momentum!r}")
        self.center_momentum = float(center_momentum)
        self.warmup_teacher_temp, self.final_teacher_temp = warm, final
        self.warmup_teacher_temp_epochs, self.nepochs = warmup, nepochs
        self.teacher_temp_schedule = np.concatenate([np.linspace(warm, final, warmup),
                                                     np.full(nepochs - warmup, final)])
        self.register_buffer("center", backend.xp.zeros((1, self.out_dim), dtype=backend.get_default_dtype()))

    def teacher_temp(self, epoch: int) -> float:
        if not 0 <= epoch < len(self.teacher_temp_schedule):
            raise ValueError(f"DINOLoss: epoch {epoch} is outside the schedule of {len(self.teacher_temp_schedule)} "
                             "epochs (nepochs)")
        return float(self.teacher_temp_schedule[epoch])

    def teacher_targets(self, teacher_output, epoch: int):
        """softmax((teacher_output - center) / tau_t(epoch)) as a constant array."""
        scores = teacher_output.data if isinstance(teacher_output, Tensor) else backend.xp.asarray(teacher_output)
        if scores.ndim != 2 or scores.shape[1] != self.out_dim:
            raise ShapeError(f"DINOLoss: teacher outputs of shape {tuple(scores.shape)}; expected (2 * batch, "
                             f"{self.out_dim})")
        z = (scores - self.center) / self.teacher_temp(epoch)
        z = backend.xp.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def update_center(self, teacher_output) -> None:
        """c <- m c + (1 - m) mean over the batch of the teacher's outputs."""
        scores = teacher_output.data if isinstance(teacher_output, Tensor) else backend.xp.asarray(teacher_output)
        batch_center = scores.mean(axis=0, keepdims=True)
        self.center = (self.center * self.center_momentum + batch_center * (1.0 - self.center_momentum)).astype(
            self.center.dtype)

    def forward(self, student_output, teacher_output, epoch: int = 0) -> Tensor:
        student = as_tensor(student_output)
        if student.ndim != 2 or student.shape[1] != self.out_dim:
            raise ShapeError(f"DINOLoss: student outputs of shape {student.shape}; expected ({self.ncrops} * batch, "
                             f"{self.out_dim})")
        targets = self.teacher_targets(teacher_output, epoch)
        loss = dino_cross_entropy(F.div(student, self.student_temp), targets, self.ncrops)
        if self.training:
            self.update_center(teacher_output)
        return loss

    def get_config(self) -> dict:
        return {"out_dim": self.out_dim, "ncrops": self.ncrops, "warmup_teacher_temp": self.warmup_teacher_temp,
                "teacher_temp": self.final_teacher_temp, "warmup_teacher_temp_epochs": self.warmup_teacher_temp_epochs,
                "nepochs": self.nepochs, "student_temp": self.student_temp, "center_momentum": self.center_momentum,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, ncrops={self.ncrops}, student_temp={self.student_temp}"
