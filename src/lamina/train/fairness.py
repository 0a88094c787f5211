r"""In-training fairness mitigations for lamina models of a binary label.

Fairness penalties (differentiable relaxations of the group disparities, computed on the
predicted probabilities p_i = sigmoid(z_i) of a mini-batch, so that the means are smooth in the
weights):

* :func:`demographic_parity_penalty` = sum_a |mean(p | A = a) - mean(p)|;
* :func:`equalized_odds_penalty` = sum_{y in {0, 1}} sum_a |mean(p | A = a, Y = y) - mean(p | Y = y)|
  (the soft gaps of FPR and TPR);

(``power=2`` squares each gap; cells with no sample in the batch are left out.)
:class:`FairnessPenaltyLoss` adds ``weight`` times one of them to the binary cross-entropy of the
logits, as a Trainer loss whose labels are the (n, 2) array ``[y, group]`` (:func:`fair_labels`).

:class:`AdversarialDebiasing` (Zhang, Lemoine & Mitchell 2018, "Mitigating unwanted biases with
adversarial learning"): a predictor gives logits z of y; an adversary sees s = sigmoid((1 + |c|) z)
(and, for equalized odds, s y and s (1 - y)) and predicts the group A by a logistic layer. The
adversary descends its cross-entropy L_A; the predictor's weights W move along

    grad_W L_P - proj_{grad_W L_A} grad_W L_P - alpha grad_W L_A        (``method="projection"``),

the paper's update: the projection removes the part of the predictor's step that would help
the adversary, and the last term hurts it. The projection is taken over all predictor weights
as one vector, and the predictor steps by plain SGD with a decaying rate, as in the paper (a
per-coordinate rescaling such as Adam's would undo the projection). ``method="reversal"``
drops the projection, which is gradient reversal (``F.gradient_reversal`` with lambda = alpha
between the logits and the adversary): one backward pass of L_P + L_A.
:func:`adversary_advantage` measures what a fresh adversary can still learn.

:class:`TrainedClassifier` makes a lamina model, trained by the Trainer with sample weights, the
weighted learner of :class:`~lamina.analysis.fairness.ExponentiatedGradient`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

import lamina
import lamina.functional as F
from lamina.analysis.fairness import WeightedLogisticRegression
from lamina.autograd import Tensor
from lamina.autograd import grad as gradients_of
from lamina.nn import Dense, Module, Parameter
from lamina.optim import SGD, Adam

__all__ = ["AdversarialDebiasing", "FairnessPenaltyLoss", "TrainedClassifier", "adversary_advantage",
           "demographic_parity_penalty", "equalized_odds_penalty", "fair_labels"]


def _per_sample(output) -> Tensor:
    """``output`` as a tensor with one value per sample: (n, 1) becomes (n,)."""
    output = output if isinstance(output, Tensor) else lamina.tensor(np.asarray(output, np.float32))
    return output.reshape((-1,)) if output.ndim == 2 and output.shape[1] == 1 else output


def _gaps(p: Tensor, cells: list[tuple[np.ndarray, np.ndarray]], power: int) -> Tensor:
    total = None
    for within, cell in cells:
        if cell.sum() == 0 or within.sum() == 0:
            continue
        cell_mean = (p * cell.astype(p.data.dtype)).sum() / float(cell.sum())
        within_mean = (p * within.astype(p.data.dtype)).sum() / float(within.sum())
        gap = F.abs(cell_mean - within_mean) if power == 1 else (cell_mean - within_mean) ** 2
        total = gap if total is None else total + gap
    return total if total is not None else (p * 0.0).sum()


def _check(p: Tensor, groups: np.ndarray, who: str, power: int, y=None) -> None:
    if p.ndim != 1:
        raise ValueError(f"{who}: probabilities must be one per sample, shape (n,) or (n, 1); got {p.shape}")
    if len(groups) != p.shape[0] or (y is not None and len(y) != p.shape[0]):
        raise ValueError(f"{who}: {p.shape[0]} probabilities, {len(groups)} groups"
                         + ("" if y is None else f", {len(y)} labels") + "; each sample needs one of each")
    if power not in (1, 2):
        raise ValueError(f"{who}: power must be 1 or 2, got {power!r}")


def demographic_parity_penalty(probabilities, groups, power: int = 1) -> Tensor:
    """sum_a |mean(p | a) - mean(p)|^power over the groups present."""
    p, groups = _per_sample(probabilities), np.asarray(groups).ravel()
    _check(p, groups, "demographic_parity_penalty", power)
    everyone = np.ones(len(groups), dtype=bool)
    return _gaps(p, [(everyone, groups == g) for g in np.unique(groups)], power)


def equalized_odds_penalty(probabilities, y_true, groups, power: int = 1) -> Tensor:
    """sum_y sum_a |mean(p | a, y) - mean(p | y)|^power over the cells present."""
    p, groups, labels = _per_sample(probabilities), np.asarray(groups).ravel(), np.asarray(y_true).ravel()
    _check(p, groups, "equalized_odds_penalty", power, labels)
    return _gaps(p, [(labels == y, (labels == y) & (groups == g)) for y in (0, 1) for g in np.unique(groups)], power)


PENALTIES = ("demographic_parity", "equalized_odds")


def fair_labels(y_true, groups) -> np.ndarray:
    """The (n, 2) label array ``[y, group]`` that :class:`FairnessPenaltyLoss` reads."""
    return np.stack([np.asarray(y_true).ravel(), np.asarray(groups).ravel()], axis=1).astype(np.float32)


class FairnessPenaltyLoss:
    """BCE(z, y) + weight * penalty(sigmoid(z), ...), for a model giving one logit per sample;
    ``labels`` is :func:`fair_labels` (y, group)."""

    def __init__(self, penalty: str = "demographic_parity", weight: float = 1.0, power: int = 1):
        if penalty not in PENALTIES:
            raise ValueError(f"FairnessPenaltyLoss: unknown penalty {penalty!r}; expected one of {PENALTIES}")
        self.penalty, self.weight, self.power = penalty, float(weight), power
        self.__name__ = f"bce_plus_{penalty}"

    def __call__(self, output, labels) -> Tensor:
        labels = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
        if labels.ndim != 2 or labels.shape[1] != 2:
            raise ValueError(f"FairnessPenaltyLoss: labels must be the (n, 2) array [y, group] of fair_labels, "
                             f"got shape {labels.shape}")
        logits = _per_sample(output)
        y, groups = labels[:, 0], labels[:, 1]
        cost = F.binary_cross_entropy(logits, y.astype(logits.data.dtype), from_logits=True)
        p = F.sigmoid(logits)
        if self.penalty == "demographic_parity":
            return cost + self.weight * demographic_parity_penalty(p, groups, self.power)
        return cost + self.weight * equalized_odds_penalty(p, y, groups, self.power)


class TrainedClassifier:
    """A binary classifier with ``fit(X, y, sample_weight)`` and ``predict(X)``: each ``fit``
    builds a fresh model with ``build()`` (one logit per sample) and trains it by the Trainer
    on the weighted binary cross-entropy of its logit (weights rescaled to mean 1), with Adam."""

    def __init__(self, build: Callable[[], Module], epochs: int = 20, lr: float = 0.05, batch_size: int = 64,
                 seed: int = 0):
        self.build, self.epochs, self.lr, self.batch_size, self.seed = build, epochs, lr, batch_size, seed
        self.model: Module | None = None

    def fit(self, x, y, sample_weight=None) -> TrainedClassifier:
        from lamina.train.trainer import Trainer

        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.float32).reshape(-1, 1)
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        if len(weights) != len(y) or len(x) != len(y):
            raise ValueError(f"TrainedClassifier.fit: {len(x)} inputs, {len(y)} labels, {len(weights)} weights")
        lamina.manual_seed(self.seed)
        self.model = self.build()
        self.model(lamina.tensor(x[:2]))
        trainer = Trainer(self.model, loss=functools.partial(F.binary_cross_entropy, from_logits=True),
                          optimizer=Adam(self.model.parameters(), lr=self.lr), metrics=(), verbose=0)
        trainer.fit((x, y), epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
                    sample_weight=weights * len(weights) / max(weights.sum(), 1e-300))
        return self

    def decision_function(self, x) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("TrainedClassifier: call fit first")
        with lamina.no_grad():
            return self.model(lamina.tensor(np.asarray(x, np.float32))).data.reshape(-1).astype(np.float64)

    def predict(self, x) -> np.ndarray:
        return (self.decision_function(x) > 0).astype(np.int64)


class _Adversary(Module):
    """Logits of A from s = sigmoid((1 + |c|) z) (and s y, s (1 - y) for equalized odds)."""

    def __init__(self, use_labels: bool):
        super().__init__()
        self.use_labels = use_labels
        self.c = Parameter(np.ones(1, np.float32))
        self.head = Dense(1, kernel_init="glorot_uniform")

    def forward(self, logits: Tensor, y: np.ndarray) -> Tensor:
        s = F.sigmoid(logits * (F.abs(self.c) + 1.0)).reshape((-1, 1))
        if self.use_labels:
            y_col = y.reshape(-1, 1).astype(s.data.dtype)
            s = F.concat([s, s * y_col, s * (1.0 - y_col)], axis=1)
        return self.head(s).reshape((-1,))


class AdversarialDebiasing:
    """Train ``predictor`` (a Module mapping x to one logit per sample) against an adversary
    predicting the group from its output; see the module docstring. ``constraint``:
    ``"demographic_parity"`` or ``"equalized_odds"`` (the adversary also sees y); ``alpha``: the
    weight of the adversary's gradient in the predictor's update; ``debias=False`` trains the
    predictor alone (the baseline). The predictor steps by SGD at ``lr / (1 + decay * epoch)``,
    the adversary by Adam at ``adversary_lr``. ``fit`` returns the mean predictor and adversary
    losses per epoch."""

    def __init__(self, predictor: Module, constraint: str = "demographic_parity", alpha: float = 1.0,
                 method: str = "projection", lr: float = 0.3, adversary_lr: float = 0.2, epochs: int = 40,
                 batch_size: int = 100, decay: float = 0.5, debias: bool = True, seed: int = 0):
        if constraint not in PENALTIES:
            raise ValueError(f"AdversarialDebiasing: unknown constraint {constraint!r}; expected one of {PENALTIES}")
        if method not in ("projection", "reversal"):
            raise ValueError(f"AdversarialDebiasing: method must be 'projection' or 'reversal', got {method!r}")
        self.predictor, self.constraint, self.alpha, self.method = predictor, constraint, float(alpha), method
        self.adversary = _Adversary(constraint == "equalized_odds")
        self.lr, self.adversary_lr, self.epochs, self.batch_size, self.seed = lr, adversary_lr, epochs, batch_size, seed
        self.decay, self.debias = float(decay), bool(debias)

    def _logits(self, x) -> Tensor:
        return _per_sample(self.predictor(lamina.tensor(np.asarray(x, np.float32))))

    def fit(self, x, y_true, groups) -> dict[str, list[float]]:
        x = np.asarray(x, np.float32)
        y, a = np.asarray(y_true).ravel().astype(np.float32), np.asarray(groups).ravel().astype(np.float32)
        if not len(x) == len(y) == len(a) or len(x) == 0:
            raise ValueError(f"AdversarialDebiasing.fit: {len(x)} inputs, {len(y)} labels, {len(a)} groups; "
                             "needs one label and one group per input")
        if not (np.isin(y, (0, 1)).all() and np.isin(a, (0, 1)).all()):
            raise ValueError("AdversarialDebiasing.fit: labels and groups must be binary (0/1)")
        self.adversary(self._logits(x[:2]), y[:2])  # builds the lazy layers
        predictor_params = self.predictor.parameters(trainable_only=True)
        adversary_params = self.adversary.parameters(trainable_only=True)
        predictor_opt = SGD(predictor_params, lr=self.lr)
        adversary_opt = Adam(adversary_params, lr=self.adversary_lr)
        rng = np.random.default_rng(self.seed)
        history: dict[str, list[float]] = {"predictor_loss": [], "adversary_loss": []}
        for epoch in range(self.epochs):
            predictor_opt.lr = self.lr / (1.0 + self.decay * epoch)
            order = rng.permutation(len(x))
            totals = [0.0, 0.0]
            for start in range(0, len(x), self.batch_size):
                rows = order[start:start + self.batch_size]
                losses = self._step(x[rows], y[rows], a[rows], predictor_params, adversary_params,
                                    predictor_opt, adversary_opt)
                totals = [t + v * len(rows) for t, v in zip(totals, losses, strict=True)]
            history["predictor_loss"].append(totals[0] / len(x))
            history["adversary_loss"].append(totals[1] / len(x))
        return history

    def _step(self, x, y, a, predictor_params, adversary_params, predictor_opt, adversary_opt) -> tuple[float, float]:
        predictor_opt.zero_grad()
        adversary_opt.zero_grad()
        logits = self._logits(x)
        predictor_loss = F.binary_cross_entropy(logits, y, from_logits=True)
        if not self.debias:
            adversary_loss = F.binary_cross_entropy(self.adversary(logits.detach(), y), a, from_logits=True)
            (predictor_loss + adversary_loss).backward()
        elif self.method == "reversal":
            adversary_loss = F.binary_cross_entropy(
                self.adversary(F.gradient_reversal(logits, self.alpha), y), a, from_logits=True)
            (predictor_loss + adversary_loss).backward()
        else:
            adversary_loss = F.binary_cross_entropy(self.adversary(logits, y), a, from_logits=True)
            prediction_grads = gradients_of(predictor_loss, predictor_params, retain_graph=True)
            everything = gradients_of(adversary_loss, predictor_params + adversary_params)
            adversary_grads = everything[:len(predictor_params)]
            for p, g in zip(adversary_params, everything[len(predictor_params):], strict=True):
                p.grad = g
            g_p = np.concatenate([g.ravel() for g in prediction_grads])
            g_a = np.concatenate([g.ravel() for g in adversary_grads])
            norm = math.sqrt(float(g_a @ g_a))
            unit = g_a / norm if norm > 0 else g_a
            update = g_p - (g_p @ unit) * unit - self.alpha * g_a
            offset = 0
            for p in predictor_params:
                p.grad = update[offset:offset + p.data.size].reshape(p.shape).astype(p.data.dtype)
                offset += p.data.size
        predictor_opt.step()
        adversary_opt.step()
        return float(predictor_loss.item()), float(adversary_loss.item())

    def predict_proba(self, x) -> np.ndarray:
        """P(y = 1 | x) = sigmoid of the predictor's logit."""
        with lamina.no_grad():
            return 1.0 / (1.0 + np.exp(-self._logits(x).data.astype(np.float64)))

    def predict(self, x) -> np.ndarray:
        return (self.predict_proba(x) > 0.5).astype(np.int64)


def adversary_advantage(probabilities, groups, y_true=None, l2: float = 1e-3) -> float:
    """What a fresh logistic adversary learns about the group from the predictions: the drop
    of its mean cross-entropy (nats) when it sees s, the logit of p, against one seeing nothing
    (the entropy of the group shares), a lower estimate of the information I(s; A). With
    ``y_true`` (equalized odds) it sees [s, s y, s (1 - y), y] against y alone, for I(s; A | Y).
    0: the predictions tell the adversary nothing more about the group."""
    p = np.clip(np.asarray(probabilities, np.float64).ravel(), 1e-7, 1 - 1e-7)
    a = np.asarray(groups).ravel()
    if len(p) != len(a) or (y_true is not None and len(np.ravel(y_true)) != len(p)):
        raise ValueError(f"adversary_advantage: {len(p)} probabilities and {len(a)} groups"
                         + ("" if y_true is None else f" and {len(np.ravel(y_true))} labels") + " must match")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("adversary_advantage: groups must be binary (0/1)")

    def cross_entropy(features: np.ndarray) -> float:
        q = np.clip(WeightedLogisticRegression(l2=l2).fit(features, a).predict_proba(features), 1e-12, 1 - 1e-12)
        return float(-np.mean(a * np.log(q) + (1 - a) * np.log(1 - q)))

    s = np.log(p / (1 - p))[:, None]
    if y_true is None:
        return cross_entropy(np.zeros((len(a), 1))) - cross_entropy(s)
    y = np.asarray(y_true, np.float64).ravel()[:, None]
    return cross_entropy(y) - cross_entropy(np.hstack([s, s * y, s * (1 - y), y]))
