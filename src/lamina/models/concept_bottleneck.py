"""Concept bottleneck models (Koh et al. 2020): x -> concept logits g(x) -> c = sigmoid(g(x)) -> label
logits f(c), so every prediction goes through k human-readable concepts.

Training (:func:`fit_concept_bottleneck`):

* ``'independent'``: g on the concept loss; f on the *true* concepts.
* ``'sequential'``: g on the concept loss; then f on g's (frozen) predicted concepts.
* ``'joint'``: both at once on  L = CE(f(c), y) + lambda * BCE(g(x), c_true)  (:meth:`ConceptBottleneck.joint_loss`).

Test-time intervention replaces chosen predicted concepts by their true values before f
(:meth:`ConceptBottleneck.forward` with ``intervene``; :func:`intervention_accuracy`).
:func:`digit_concepts` gives six concepts of a handwritten digit derived from its label.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["DIGIT_CONCEPTS", "ConceptBottleneck", "digit_concepts", "fit_concept_bottleneck", "intervention_accuracy"]

DIGIT_CONCEPTS = ("has_loop", "has_two_loops", "has_vertical_stroke", "has_horizontal_stroke", "has_diagonal_stroke",
                  "has_open_curve")
_DIGIT_TABLE = np.array([
    [1, 0, 0, 0, 0, 0],     # 0
    [0, 0, 1, 0, 0, 0],     # 1
    [0, 0, 0, 1, 1, 1],     # 2
    [0, 0, 0, 0, 0, 1],     # 3
    [0, 0, 1, 1, 1, 0],     # 4
    [0, 0, 1, 1, 0, 1],     # 5
    [1, 0, 0, 0, 0, 1],     # 6
    [0, 0, 0, 1, 1, 0],     # 7
    [1, 1, 0, 0, 0, 0],     # 8
    [1, 0, 1, 0, 0, 0],     # 9
])


def digit_concepts(labels) -> np.ndarray:
    """The six :data:`DIGIT_CONCEPTS` (0/1, float) of each digit label 0..9: (N,) -> (N, 6).
    Every digit has its own code, so the concepts determine the label."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"digit_concepts: labels must be integer digits 0..9, got dtype {labels.dtype} "
                         f"and range [{labels.min() if labels.size else ''}, {labels.max() if labels.size else ''}]")
    return _DIGIT_TABLE[labels].astype(np.float64)


def _check_concepts(concepts, n_concepts: int, who: str) -> np.ndarray:
    values = np.asarray(concepts.data if isinstance(concepts, Tensor) else concepts, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != n_concepts:
        raise ValueError(f"{who}: concept labels must have shape (batch, {n_concepts}), got {values.shape}")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{who}: concept labels must lie in [0, 1], got values in "
                         f"[{values.min():.4g}, {values.max():.4g}]")
    return values


@register_with_arguments(modules=("concept_model", "label_model"))
class ConceptBottleneck(Module):
    """``concept_model`` maps x to (N, n_concepts) concept logits, ``label_model`` maps concept
    probabilities (N, n_concepts) to label logits. ``forward`` returns (concept logits, label logits)."""

    def __init__(self, concept_model: Module, label_model: Module, n_concepts: int, name: str | None = None):
        super().__init__(name=name)
        self.concept_model, self.label_model = concept_model, label_model
        self.n_concepts = int(n_concepts)
        self.built = True

    def concept_logits(self, x) -> Tensor:
        logits = self.concept_model(x)
        if logits.ndim != 2 or logits.shape[1] != self.n_concepts:
            raise ValueError(f"ConceptBottleneck: the concept model must give (batch, {self.n_concepts}) logits, "
                             f"got {tuple(logits.shape)}")
        return logits

    def forward(self, x, true_concepts=None, intervene=None) -> tuple[Tensor, Tensor]:
        """``intervene``: the concept indices (or a boolean mask of n_concepts) whose predicted
        probabilities are replaced by ``true_concepts`` before the label model."""
        logits = self.concept_logits(x)
        concepts = F.sigmoid(logits)
        if intervene is not None:
            truth = _check_concepts(true_concepts, self.n_concepts, "ConceptBottleneck")
            mask = np.zeros(self.n_concepts, dtype=bool)
            mask[np.asarray(intervene)] = True
            concepts = F.where(mask[None, :], as_tensor(truth.astype(concepts.dtype)), concepts)
        return logits, self.label_model(concepts)

    def concept_loss(self, concept_logits: Tensor, true_concepts) -> Tensor:
        """Mean binary cross-entropy over rows and concepts."""
        truth = _check_concepts(true_concepts, self.n_concepts, "ConceptBottleneck.concept_loss")
        return F.binary_cross_entropy_with_logits(concept_logits, truth.astype(concept_logits.dtype))

    def joint_loss(self, x, labels, true_concepts, concept_weight: float = 1.0) -> Tensor:
        """CE(label logits, labels) + concept_weight * concept_loss (Koh et al.'s joint objective)."""
        truth = _check_concepts(true_concepts, self.n_concepts, "ConceptBottleneck.joint_loss")
        concept_logits, label_logits = self(x)
        return F.cross_entropy(label_logits, labels) + concept_weight * self.concept_loss(concept_logits, truth)


def _batches(n: int, batch_size: int, epochs: int, rng):
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]


def fit_concept_bottleneck(model: ConceptBottleneck, x, labels, concepts, mode: str = "joint", epochs: int = 20,
                           lr: float = 0.01, concept_weight: float = 1.0, batch_size: int = 64,
                           seed: int = 0) -> ConceptBottleneck:
    """Train ``model`` with Adam in the ``mode`` the module docstring describes; returns it in eval mode."""
    from lamina.optim import Adam  # same rank as models: imported when used

    if mode not in ("independent", "sequential", "joint"):
        raise ValueError(f"fit_concept_bottleneck: mode must be 'independent', 'sequential' or 'joint', got {mode!r}")
    x, labels = np.asarray(x), np.asarray(labels)
    truth = _check_concepts(concepts, model.n_concepts, "fit_concept_bottleneck").astype(backend.get_default_dtype())
    rng = np.random.default_rng(seed)
    with no_grad():
        model(x[:1])                            # builds lazily created layers before reading their weights
    model.train()
    if mode == "joint":
        optimizer = Adam(model.parameters(), lr=lr)
        for rows in _batches(len(x), batch_size, epochs, rng):
            optimizer.zero_grad()
            model.joint_loss(x[rows], labels[rows], truth[rows], concept_weight).backward()
            optimizer.step()
        return model.eval()
    optimizer = Adam(model.concept_model.parameters(), lr=lr)
    for rows in _batches(len(x), batch_size, epochs, rng):
        optimizer.zero_grad()
        model.concept_loss(model.concept_logits(x[rows]), truth[rows]).backward()
        optimizer.step()
    if mode == "independent":
        label_inputs = truth
    else:
        with no_grad():
            label_inputs = F.sigmoid(model.concept_logits(x)).numpy()
    optimizer = Adam(model.label_model.parameters(), lr=lr)
    for rows in _batches(len(x), batch_size, epochs, rng):
        optimizer.zero_grad()
        F.cross_entropy(model.label_model(label_inputs[rows]), labels[rows]).backward()
        optimizer.step()
    return model.eval()


def intervention_accuracy(model: ConceptBottleneck, x, labels, concepts, intervene=None) -> float:
    """Label accuracy with the ``intervene`` concepts set to their true values (none when None)."""
    with no_grad():
        _, logits = model(x, concepts, intervene)
    return float((logits.numpy().argmax(axis=1) == np.asarray(labels)).mean())
