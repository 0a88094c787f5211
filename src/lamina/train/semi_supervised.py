r"""Semi-supervised classification: a few labelled samples and many unlabelled ones.

Every learner here takes at each step a labelled batch of B samples and an unlabelled batch
of mu B, and minimises L = L_s + lambda_u w(t) L_u, with L_s the cross-entropy of the
labelled batch (weakly augmented), L_u an unlabelled loss and w(t) a ramp-up of the step t:

- :class:`PseudoLabel` (Lee 2013): the confident (>= tau) argmax of the model's own
  prediction on an unlabelled sample is its hard label; L_u is their masked cross-entropy.
- :class:`MeanTeacher` (Tarvainen & Valpola 2017): a teacher whose weights are the
  exponential average of the student's, theta'_t = a_t theta'_{t-1} + (1 - a_t) theta_t with
  a_t = min(1 - 1/(t + 1), decay); L_u = mean squared difference between the student's and
  the teacher's softmax on two augmentations of a sample, w(t) the sigmoid ramp-up.
- :class:`MixMatch` (Berthelot et al. 2019): the guessed label of an unlabelled sample is the
  sharpened mean softmax over K augmentations; labelled and unlabelled samples with their
  (guessed) labels are then mixed with random partners from the whole set by MixUp with
  lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha); L_s is the cross-entropy of
  the mixed labelled part, L_u the squared error of the mixed unlabelled part (linear ramp-up).
- :class:`FixMatch` (Sohn et al. 2020): the confident (>= tau) pseudo-label of a weakly
  augmented view is the hard label of a strongly augmented view.
- :class:`FlexMatch` (Zhang et al. 2021): FixMatch with a threshold per class, scaled by how
  many unlabelled samples the model already predicts confidently as that class
  (:func:`lamina.functional.flexmatch_class_thresholds`).

Augmentations are per-sample transforms (those of :mod:`lamina.data.transforms`, such as
``RandomCrop`` for a weak view and ``RandAugment`` for a strong one); a batch is augmented
sample by sample, then ``preprocess`` turns it into model input (by default uint8 images are
divided by 255). The transforms draw from :func:`lamina.backend.rng`; the batches from a
generator seeded by ``seed``.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.data.labels import one_hot
from lamina.errors import ShapeError
from lamina.functional.semi_supervised import (
    check_threshold,
    consistency_loss,
    fixmatch_unlabeled_loss,
    flexmatch_class_thresholds,
    linear_rampup,
    sharpen,
    sigmoid_rampup,
)
from lamina.functional.shape import concat
from lamina.nn.module import Module
from lamina.optim import Optimizer

__all__ = ["FixMatch", "FlexMatch", "MeanTeacher", "MixMatch", "PseudoLabel", "SemiSupervisedLearner",
           "SupervisedBaseline", "mixmatch_mixup"]

Transform = Callable[[np.ndarray], np.ndarray]


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _non_negative(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{who}: {name} must be a number >= 0, got {value!r}")
    return float(value)


def default_preprocess(batch: np.ndarray) -> np.ndarray:
    """uint8 images scaled to [0, 1] as float32; anything else as it is."""
    return batch.astype(np.float32) / np.float32(255.0) if batch.dtype == np.uint8 else batch


def mixmatch_mixup(x: np.ndarray, targets: np.ndarray, alpha: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """MixMatch's MixUp of a whole batch with a random permutation pi of it:
    x~ = lambda' x + (1 - lambda') x[pi], t~ = lambda' t + (1 - lambda') t[pi] with
    lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha), so that each mixed sample
    stays nearer its own. Returns (x~, t~, lambda', pi)."""
    who = "mixmatch_mixup"
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"{who}: alpha must be a number > 0 (Beta(alpha, alpha)), got {alpha!r}")
    x, targets = np.asarray(x), np.asarray(targets)
    if len(x) != len(targets) or targets.ndim != 2:
        raise ShapeError(f"{who}: expected one (classes,) target row per input, got inputs {x.shape} and "
                         f"targets {targets.shape}")
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    permutation = rng.permutation(len(x))
    mixed_x = (lam * x + (1.0 - lam) * x[permutation]).astype(x.dtype if x.dtype.kind == "f" else np.float32)
    mixed_t = (lam * targets + (1.0 - lam) * targets[permutation]).astype(targets.dtype)
    return mixed_x, mixed_t, lam, permutation


class _Cycle:
    """Batches of ``size`` indices of range(n), walking through fresh permutations."""

    def __init__(self, n: int, size: int, rng: np.random.Generator):
        self.n, self.size, self.rng = n, size, rng
        self.order, self.position = rng.permutation(n), 0

    def next(self) -> np.ndarray:
        picked = []
        remaining = self.size
        while remaining:
            if self.position == self.n:
                self.order, self.position = self.rng.permutation(self.n), 0
            take = min(remaining, self.n - self.position)
            picked.append(self.order[self.position:self.position + take])
            self.position += take
            remaining -= take
        return np.concatenate(picked)


class SemiSupervisedLearner:
    """What the learners share: the data, augmentation, the step loop and its history.

    ``model`` maps a batch to class logits; ``optimizer`` steps its parameters. ``weak`` and
    ``strong`` are per-sample transforms (None: the identity); ``preprocess`` turns an
    augmented batch into model input. ``lambda_u`` weighs the unlabelled loss, ``mu`` is the
    number of unlabelled samples per labelled one, ``batch_size`` the labelled batch B,
    ``rampup_steps`` the length of the ramp-up w(t) (0: none). A subclass defines
    :meth:`losses`.
    """

    rampup: Callable[[float, float], float] = staticmethod(linear_rampup)

    def __init__(self, model: Module, optimizer: Optimizer, num_classes: int, weak: Transform | None = None,
                 strong: Transform | None = None, lambda_u: float = 1.0, mu: int = 7, batch_size: int = 16,
                 rampup_steps: int = 0, preprocess: Callable[[np.ndarray], np.ndarray] = default_preprocess,
                 seed: int = 0):
        who = type(self).__name__
        if not isinstance(model, Module):
            raise TypeError(f"{who}: model must be a lamina Module, got {type(model).__name__}")
        self.model, self.optimizer = model, optimizer
        self.num_classes = _positive_int(num_classes, "num_classes", who)
        self.weak, self.strong, self.preprocess = weak, strong, preprocess
        self.lambda_u = _non_negative(lambda_u, "lambda_u", who)
        self.mu = _positive_int(mu, "mu", who)
        self.batch_size = _positive_int(batch_size, "batch_size", who)
        self.rampup_steps = _non_negative(rampup_steps, "rampup_steps", who)
        self.rng = np.random.default_rng(seed)
        self.iteration = 0
        self.history: dict[str, list[float]] = {"loss": [], "supervised": [], "unsupervised": [], "mask": []}

    def view(self, batch: np.ndarray, transform: Transform | None) -> Tensor:
        """``batch`` augmented sample by sample with ``transform``, preprocessed, as a tensor of
        the dtype of the model's weights."""
        if transform is not None:
            batch = np.stack([np.asarray(transform(sample)) for sample in batch])
        values = np.asarray(self.preprocess(batch))
        weights = next(iter(self.model.parameters()), None)
        dtype = weights.data.dtype if weights is not None and values.dtype.kind == "f" else None
        return Tensor(values, dtype=dtype)

    def supervised_loss(self, logits: Tensor, labels: np.ndarray) -> Tensor:
        return consistency_loss(logits, labels, kind="ce")

    def losses(self, labelled_x: np.ndarray, labels: np.ndarray, unlabelled_x: np.ndarray,
               unlabelled_index: np.ndarray) -> tuple[Tensor, Tensor, float]:
        """(L_s, L_u, the fraction of unlabelled samples that contribute to L_u)."""
        raise NotImplementedError

    def unsupervised_weight(self) -> float:
        """lambda_u w(t) at the current step t."""
        return self.lambda_u * type(self).rampup(self.iteration, self.rampup_steps)

    def after_step(self) -> None:
        """Called after each optimizer step (Mean Teacher updates its teacher here)."""

    def start(self, labelled_x: np.ndarray, labels: np.ndarray, unlabelled_x: np.ndarray) -> None:
        """Called once at the start of :meth:`fit`."""

    def fit(self, labelled_x, labels, unlabelled_x, steps: int) -> dict[str, list[float]]:
        """``steps`` optimizer steps on the labelled ``(labelled_x, labels)`` and the unlabelled
        ``unlabelled_x``; calling it again carries on (the step count t continues). Returns the
        history: per step the total, supervised and unsupervised losses and the mask rate."""
        who = type(self).__name__
        steps = _positive_int(steps, "steps", who)
        labelled_x, labels, unlabelled_x = np.asarray(labelled_x), np.asarray(labels), np.asarray(unlabelled_x)
        if len(labelled_x) == 0 or len(labelled_x) != len(labels) or labels.ndim != 1:
            raise ShapeError(f"{who}.fit: needs labelled samples with one integer label each, got {labelled_x.shape} "
                             f"inputs and labels {labels.shape}")
        if len(unlabelled_x) == 0 or unlabelled_x.shape[1:] != labelled_x.shape[1:]:
            raise ShapeError(f"{who}.fit: unlabelled samples {unlabelled_x.shape} must be like the labelled ones "
                             f"{labelled_x.shape[1:]}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"{who}.fit: labels must lie in 0..{self.num_classes - 1}, got {labels.min()}.."
                             f"{labels.max()}")
        self.start(labelled_x, labels, unlabelled_x)
        labelled = _Cycle(len(labelled_x), self.batch_size, self.rng)
        unlabelled = _Cycle(len(unlabelled_x), self.mu * self.batch_size, self.rng)
        self.model.train()
        for _ in range(steps):
            rows, unlabelled_rows = labelled.next(), unlabelled.next()
            self.optimizer.zero_grad()
            supervised, unsupervised, mask_rate = self.losses(labelled_x[rows], labels[rows],
                                                              unlabelled_x[unlabelled_rows], unlabelled_rows)
            total = supervised + unsupervised * self.unsupervised_weight()
            total.backward()
            self.optimizer.step()
            self.iteration += 1
            self.after_step()
            for key, value in (("loss", total.item()), ("supervised", supervised.item()),
                               ("unsupervised", unsupervised.item()), ("mask", mask_rate)):
                self.history[key].append(float(value))
        return self.history


def _split(logits: Tensor, *sizes: int) -> list[Tensor]:
    parts, start = [], 0
    for size in sizes:
        parts.append(logits[start:start + size])
        start += size
    return parts


class SupervisedBaseline(SemiSupervisedLearner):
    """The labelled loss alone (L_u = 0): the baseline the others are measured against."""

    def losses(self, labelled_x, labels, unlabelled_x, unlabelled_index):
        supervised = self.supervised_loss(self.model(self.view(labelled_x, self.weak)), labels)
        return supervised, supervised * 0.0, 0.0


class PseudoLabel(SemiSupervisedLearner):
    """Pseudo-Label (Lee 2013): the argmax of the model's prediction on a weakly augmented
    unlabelled sample, where its confidence is >= ``threshold`` tau, is its label:
    L_u = (1/(mu B)) sum_b [max_c p_bc >= tau] CE(argmax_c p_bc, z_b); linear ramp-up."""

    def __init__(self, *args, threshold: float = 0.95, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = check_threshold(threshold, "PseudoLabel")

    def losses(self, labelled_x, labels, unlabelled_x, unlabelled_index):
        inputs = concat([self.view(labelled_x, self.weak), self.view(unlabelled_x, self.weak)], axis=0)
        logits_l, logits_u = _split(self.model(inputs), len(labelled_x), len(unlabelled_x))
        unsupervised, mask = fixmatch_unlabeled_loss(logits_u, logits_u, self.threshold)
        return self.supervised_loss(logits_l, labels), unsupervised, float(mask.mean())


class MeanTeacher(SemiSupervisedLearner):
    """Mean Teacher (see the module's docstring): ``ema_decay`` is the teacher's decay, the
    ramp-up is the sigmoid one. :attr:`teacher` is a copy of the model, made at the first step
    and updated after each; it predicts in training mode (dropout on) without gradients, as
    the student does, and takes the student's buffers (batch-norm statistics) as they are."""

    rampup = staticmethod(sigmoid_rampup)

    def __init__(self, *args, ema_decay: float = 0.999, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, numbers.Real) or not 0 <= ema_decay < 1:
            raise ValueError(f"MeanTeacher: ema_decay must be in [0, 1), got {ema_decay!r}")
        self.ema_decay = float(ema_decay)
        self.teacher: Module | None = None
        self.teacher_updates = 0

    def ema_weight(self, update: int) -> float:
        """a_t = min(1 - 1/(t + 1), decay) for the t-th teacher update (t >= 1)."""
        return min(1.0 - 1.0 / (update + 1), self.ema_decay)

    def losses(self, labelled_x, labels, unlabelled_x, unlabelled_index):
        inputs = concat([self.view(labelled_x, self.weak), self.view(unlabelled_x, self.weak)], axis=0)
        logits_l, logits_u = _split(self.model(inputs), len(labelled_x), len(unlabelled_x))
        if self.teacher is None:
            self.teacher = copy.deepcopy(self.model)
            self.teacher.zero_grad()
        with no_grad():
            self.teacher.train(self.model.training)
            teacher_logits = self.teacher(self.view(unlabelled_x, self.weak)).data
        shifted = backend.xp.exp(teacher_logits - teacher_logits.max(axis=-1, keepdims=True))
        teacher_probs = shifted / shifted.sum(axis=-1, keepdims=True)
        unsupervised = consistency_loss(logits_u, teacher_probs, kind="mse")
        return self.supervised_loss(logits_l, labels), unsupervised, 1.0

    def after_step(self) -> None:
        self.teacher_updates += 1
        a = self.ema_weight(self.teacher_updates)
        for mean, current in zip(self.teacher.parameters(), self.model.parameters()):
            mean.data[...] = a * mean.data + (1.0 - a) * current.data
        student_buffers = dict(self.model.named_buffers())
        for name, buffer in self.teacher.named_buffers():
            buffer[...] = student_buffers[name]


class MixMatch(SemiSupervisedLearner):
    """MixMatch (see the module's docstring): ``augmentations`` K weak views per unlabelled
    sample, sharpening ``temperature`` T, MixUp's ``alpha``; linear ramp-up of lambda_u (the
    paper's 75-100 with a ramp-up over the first steps)."""

    def __init__(self, *args, augmentations: int = 2, temperature: float = 0.5, alpha: float = 0.75, **kwargs):
        super().__init__(*args, **kwargs)
        self.augmentations = _positive_int(augmentations, "augmentations", "MixMatch")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
            raise ValueError(f"MixMatch: temperature T must be > 0, got {temperature!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"MixMatch: alpha must be > 0, got {alpha!r}")
        self.temperature, self.alpha = float(temperature), float(alpha)

    def losses(self, labelled_x, labels, unlabelled_x, unlabelled_index):
        labelled_view = self.view(labelled_x, self.weak)
        unlabelled_views = [self.view(unlabelled_x, self.weak) for _ in range(self.augmentations)]
        with no_grad():
            mean_probs = sum(np.asarray(backend.to_numpy(_softmax(self.model(view).data)), dtype=np.float64)
                             for view in unlabelled_views) / self.augmentations
            guessed = backend.to_numpy(sharpen(mean_probs, self.temperature).data)
        inputs = np.concatenate([backend.to_numpy(view.data) for view in [labelled_view, *unlabelled_views]])
        targets = np.concatenate([one_hot(labels, self.num_classes, dtype=np.float64)]
                                 + [guessed] * self.augmentations)
        mixed_x, mixed_t, _, _ = mixmatch_mixup(inputs, targets, self.alpha, self.rng)
        logits = self.model(Tensor(mixed_x, dtype=labelled_view.dtype))
        n = len(labelled_x)
        supervised = consistency_loss(logits[:n], mixed_t[:n], kind="ce")
        unsupervised = consistency_loss(logits[n:], mixed_t[n:], kind="mse")
        return supervised, unsupervised, 1.0


def _softmax(logits):
    shifted = backend.xp.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class FixMatch(SemiSupervisedLearner):
    """FixMatch (see the module's docstring): ``threshold`` tau (0.95), the weak and strong
    transforms, lambda_u (1) without ramp-up. The labelled batch and both unlabelled views go
    through the model in one batch."""

    def __init__(self, *args, threshold: float = 0.95, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = check_threshold(threshold, type(self).__name__)

    def unlabelled_logits(self, labelled_x, unlabelled_x) -> tuple[Tensor, Tensor, Tensor]:
        """The logits of the labelled batch and of the weak and strong unlabelled views."""
        inputs = concat([self.view(labelled_x, self.weak), self.view(unlabelled_x, self.weak),
                         self.view(unlabelled_x, self.strong)], axis=0)
        return tuple(_split(self.model(inputs), len(labelled_x), len(unlabelled_x), len(unlabelled_x)))

    def losses(self, labelled_x, labels, unlabelled_x, unlabelled_index):
        logits_l, logits_w, logits_s = self.unlabelled_logits(labelled_x, unlabelled_x)
        unsupervised, mask = fixmatch_unlabeled_loss(logits_w, logits_s, self.threshold)
        return self.supervised_loss(logits_l, labels), unsupervised, float(mask.mean())


class FlexMatch(FixMatch):
    """FlexMatch (see the module's docstring): FixMatch whose sample b is kept when
    max_c p_bc >= T_{argmax_c p_bc}, the class thresholds of
    :func:`~lamina.functional.flexmatch_class_thresholds` (``warmup``, ``mapping``).
    :attr:`predicted` holds, per unlabelled sample, the class of its last prediction with
    confidence >= tau (-1 before any), whose counts sigma_c give the thresholds; they are
    updated after each batch is masked, and :attr:`class_thresholds` holds the latest."""

    def __init__(self, *args, warmup: bool = True, mapping: str = "convex", **kwargs):
        super().__init__(*args, **kwargs)
        self.warmup, self.mapping = bool(warmup), mapping
        flexmatch_class_thresholds(np.zeros(self.num_classes), 0, self.threshold, self.warmup, mapping)
        self.predicted: np.ndarray | None = None
        self.class_thresholds = np.zeros(self.num_classes)

    def start(self, labelled_x, labels, unlabelled_x) -> None:
        if self.predicted is None or len(self.predicted) != len(unlabelled_x):
            self.predicted = np.full(len(unlabelled_x), -1, dtype=np.int64)
            self.class_thresholds = self.thresholds()

    def thresholds(self) -> np.ndarray:
        counts = np.bincount(self.predicted[self.predicted >= 0], minlength=self.num_classes)
        return flexmatch_class_thresholds(counts, len(self.predicted), self.threshold, self.warmup, self.mapping)

    def losses(self, labelled_x, labels, unlabelled_x, unlabelled_index):
        logits_l, logits_w, logits_s = self.unlabelled_logits(labelled_x, unlabelled_x)
        probs = np.asarray(backend.to_numpy(_softmax(logits_w.data)), dtype=np.float64)
        confidence, pseudo = probs.max(axis=-1), probs.argmax(axis=-1)
        mask = (confidence >= self.class_thresholds[pseudo]).astype(np.float64)
        unsupervised = consistency_loss(logits_s, pseudo, kind="ce", mask=mask)
        confident = confidence >= self.threshold
        self.predicted[unlabelled_index[confident]] = pseudo[confident]
        self.class_thresholds = self.thresholds()
        return self.supervised_loss(logits_l, labels), unsupervised, float(mask.mean())
