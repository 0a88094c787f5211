"""Loss modules under PyTorch's names: ``criterion = CrossEntropyLoss(); cost = criterion(input, target)``.

Each module holds its options (``reduction``, ``weight``, margins, ...) with PyTorch's names
and defaults and calls the PyTorch-named function of :mod:`lamina.functional.torch_losses`
(or lamina's own where that already has PyTorch's semantics), so its reductions are
PyTorch's: ``'none'`` gives one loss per value (per row for the losses over a class or
feature axis), ``'sum'`` their sum and ``'mean'`` their mean. lamina is channels-last: the
class axis of ``CrossEntropyLoss``, ``NLLLoss`` and ``MultiMarginLoss`` is the LAST one.

A module is a callable ``loss(output, labels)``, so it can be given to the Trainer:
``Trainer(model, loss=nn.CrossEntropyLoss(), optimizer=...)`` (the model then ends without a
softmax: the loss takes logits, as PyTorch's).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional import torch_losses as T
from lamina.nn.module import Module

__all__ = [
    "BCELoss", "BCEWithLogitsLoss", "CTCLoss", "CosineEmbeddingLoss", "CrossEntropyLoss", "GaussianNLLLoss",
    "HingeEmbeddingLoss", "HuberLoss", "KLDivLoss", "L1Loss", "MSELoss", "MarginRankingLoss", "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss", "MultiMarginLoss", "NLLLoss", "PoissonNLLLoss", "RelativeLpLoss", "SmoothL1Loss",
    "SoftMarginLoss", "TripletMarginLoss", "TripletMarginWithDistanceLoss",
]

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """A loss with a ``reduction``; the options a subclass lists in ``_options`` show in its
    repr where they differ from PyTorch's defaults (``_defaults``)."""

    _reductions = _REDUCTIONS
    _options: tuple[str, ...] = ()
    _defaults: dict = {}

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in self._reductions:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {self._reductions}, got {reduction!r}")
        self.reduction = reduction
        self.built = True

    def _set_weight(self, name: str, weight) -> None:
        """A class weight as a buffer (saved with the state and cast with the module), or None."""
        if weight is None:
            setattr(self, name, None)
        else:
            self.register_buffer(name, backend.xp.asarray(weight.data if isinstance(weight, Tensor) else weight))

    def extra_repr(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in self._options
                 if getattr(self, name) != self._defaults.get(name)]
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


def _weight_repr(loss: _Loss) -> str:
    weight = getattr(loss, "weight", None)
    return "" if weight is None else f"weight=<{tuple(weight.shape)}>"


class _WeightedLoss(_Loss):
    """A loss with an optional per-class ``weight``, shown by its shape in the repr."""

    def __init__(self, weight=None, reduction: str = "mean"):
        super().__init__(reduction)
        self._set_weight("weight", weight)

    def extra_repr(self) -> str:
        return ", ".join(p for p in (_weight_repr(self), super().extra_repr()) if p)


# -- over a class axis -----------------------------------------------------------------------


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy of logits, the classes on the LAST axis: targets are class
    indices or class probabilities (:func:`lamina.functional.cross_entropy`)."""

    _options = ("ignore_index", "label_smoothing")
    _defaults = {"ignore_index": -100, "label_smoothing": 0.0}

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
        self.ignore_index, self.label_smoothing = int(ignore_index), float(label_smoothing)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities, the classes on the LAST axis."""

    _options = ("ignore_index",)
    _defaults = {"ignore_index": -100}

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(weight, reduction)
        self.ignore_index = int(ignore_index)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MultiMarginLoss(_WeightedLoss):
    """Multi-class hinge loss of scores over the LAST axis and class indices."""

    _options = ("p", "margin")
    _defaults = {"p": 1, "margin": 1.0}

    def __init__(self, p: int = 1, margin: float = 1.0, weight=None, reduction: str = "mean"):
        super().__init__(weight, reduction)
        if p not in (1, 2):
            raise ValueError(f"MultiMarginLoss: p must be 1 or 2, got {p!r}")
        self.p, self.margin = p, float(margin)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.multi_margin_loss(input, target, p=self.p, margin=self.margin, weight=self.weight,
                                   reduction=self.reduction)


class MultiLabelMarginLoss(_Loss):
    """Multi-label hinge loss; each target row lists its classes and ends with -1."""

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return F.multilabel_margin_loss(input, target, reduction=self.reduction)


class MultiLabelSoftMarginLoss(_WeightedLoss):
    """Binary cross-entropy of independent labels, averaged over the classes (one loss per row)."""

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return F.multilabel_soft_margin_loss(input, target, weight=self.weight, reduction=self.reduction)


# -- binary ----------------------------------------------------------------------------------


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities; ``weight`` broadcasts to the input."""

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy of logits (sigmoid fused in); ``pos_weight`` weighs the positives
    of each class (the last axis)."""

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None):
        super().__init__(weight, reduction)
        self._set_weight("pos_weight", pos_weight)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.binary_cross_entropy_with_logits(input, target, weight=self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)

    def extra_repr(self) -> str:
        shown = "" if self.pos_weight is None else f"pos_weight=<{tuple(self.pos_weight.shape)}>"
        return ", ".join(p for p in (super().extra_repr(), shown) if p)


class SoftMarginLoss(_Loss):
    """Two-class logistic loss log(1 + e^(-y x)) with labels y in {-1, 1}."""

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.soft_margin_loss(input, target, reduction=self.reduction)


# -- regression ------------------------------------------------------------------------------


class MSELoss(_Loss):
    """Squared error (x - y)^2."""

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Absolute error |x - y|."""

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.l1_loss(input, target, reduction=self.reduction)


class RelativeLpLoss(_Loss):
    """The relative error ||x_i - y_i||_p / ||y_i||_p of each sample (its values after the first
    axis as one vector), Li et al.'s ``LpLoss`` for operator learning
    (:func:`lamina.functional.relative_lp_loss`); ``reduction='mean'`` averages the samples."""

    _options = ("p",)
    _defaults = {"p": 2}

    def __init__(self, p: float = 2, reduction: str = "mean"):
        super().__init__(reduction)
        self.p = p

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return F.relative_lp_loss(input, target, p=self.p, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """Smooth L1: quadratic below ``beta``, linear above, slope at most 1."""

    _options = ("beta",)
    _defaults = {"beta": 1.0}

    def __init__(self, reduction: str = "mean", beta: float = 1.0):
        super().__init__(reduction)
        self.beta = float(beta)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Huber: quadratic below ``delta``, linear above, slope at most delta."""

    _options = ("delta",)
    _defaults = {"delta": 1.0}

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        self.delta = float(delta)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class PoissonNLLLoss(_Loss):
    """Poisson negative log-likelihood of counts; ``log_input`` says the input is log(rate)."""

    _options = ("log_input", "full", "eps")
    _defaults = {"log_input": True, "full": False, "eps": 1e-8}

    def __init__(self, log_input: bool = True, full: bool = False, eps: float = 1e-8, reduction: str = "mean"):
        super().__init__(reduction)
        self.log_input, self.full, self.eps = bool(log_input), bool(full), float(eps)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.poisson_nll_loss(input, target, log_input=self.log_input, full=self.full, eps=self.eps,
                                  reduction=self.reduction)


class GaussianNLLLoss(_Loss):
    """Gaussian negative log-likelihood, called as ``loss(input, target, var)``."""

    _options = ("full", "eps")
    _defaults = {"full": False, "eps": 1e-6}

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean"):
        super().__init__(reduction)
        self.full, self.eps = bool(full), float(eps)

    def forward(self, input, target, var) -> Tensor:  # noqa: A002
        return T.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


class KLDivLoss(_Loss):
    """KL(target || input) from log-probabilities ``input``; ``reduction='batchmean'`` is the
    divergence per sample (PyTorch's default 'mean' divides by every value)."""

    _reductions = ("mean", "batchmean", "sum", "none")
    _options = ("log_target",)
    _defaults = {"log_target": False}

    def __init__(self, reduction: str = "mean", log_target: bool = False):
        super().__init__(reduction)
        self.log_target = bool(log_target)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


# -- pairs, triplets, sequences --------------------------------------------------------------


class _MarginLoss(_Loss):
    """A loss whose one option is its ``margin``."""

    _options = ("margin",)
    _defaults = {"margin": 0.0}

    def __init__(self, margin: float = 0.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.margin = float(margin)


class MarginRankingLoss(_MarginLoss):
    """max(0, -y (x1 - x2) + margin), called as ``loss(input1, input2, target)``."""

    def forward(self, input1, input2, target) -> Tensor:
        return T.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class HingeEmbeddingLoss(_MarginLoss):
    """x for alike pairs (y = 1), max(0, margin - x) for unlike ones (y = -1)."""

    _defaults = {"margin": 1.0}

    def __init__(self, margin: float = 1.0, reduction: str = "mean"):
        super().__init__(margin, reduction)

    def forward(self, input, target) -> Tensor:  # noqa: A002
        return T.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class CosineEmbeddingLoss(_MarginLoss):
    """1 - cos for alike rows, max(0, cos - margin) for unlike ones; ``loss(input1, input2, target)``."""

    def forward(self, input1, input2, target) -> Tensor:
        return F.cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class TripletMarginLoss(_Loss):
    """max(0, margin + d(a, p) - d(a, n)) with the p-norm distance; ``loss(anchor, positive, negative)``."""

    _options = ("margin", "p", "eps", "swap")
    _defaults = {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": False}

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 reduction: str = "mean"):
        super().__init__(reduction)
        self.margin, self.p, self.eps, self.swap = float(margin), float(p), float(eps), bool(swap)

    def forward(self, anchor, positive, negative) -> Tensor:
        return F.triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps,
                                     swap=self.swap, reduction=self.reduction)


class TripletMarginWithDistanceLoss(_Loss):
    """The triplet loss with any ``distance_function(x1, x2)`` (default: the Euclidean one)."""

    _options = ("margin", "swap")
    _defaults = {"margin": 1.0, "swap": False}

    def __init__(self, *, distance_function=None, margin: float = 1.0, swap: bool = False, reduction: str = "mean"):
        super().__init__(reduction)
        self.distance_function, self.margin, self.swap = distance_function, float(margin), bool(swap)

    def forward(self, anchor, positive, negative) -> Tensor:
        return T.triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=self.distance_function,
                                                   margin=self.margin, swap=self.swap, reduction=self.reduction)

    def extra_repr(self) -> str:
        named = getattr(self.distance_function, "__name__", None)
        shown = "" if self.distance_function is None else f"distance_function={named or repr(self.distance_function)}"
        return ", ".join(p for p in (shown, super().extra_repr()) if p)


class CTCLoss(_Loss):
    """Connectionist Temporal Classification, ``loss(log_probs, targets, input_lengths,
    target_lengths)`` with ``log_probs`` BATCH-FIRST (N, T, C), as lamina's recurrent layers
    give them (PyTorch's CTCLoss takes (T, N, C)): :func:`lamina.functional.ctc_loss`."""

    _options = ("blank", "zero_infinity")
    _defaults = {"blank": 0, "zero_infinity": False}

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
        super().__init__(reduction)
        self.blank, self.zero_infinity = int(blank), bool(zero_infinity)

    def forward(self, log_probs, targets, input_lengths, target_lengths) -> Tensor:
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=self.blank,
                          reduction=self.reduction, zero_infinity=self.zero_infinity)
