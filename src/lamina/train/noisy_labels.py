r"""Training on noisy labels: co-teaching and confident learning.

Co-teaching (Han et al. 2018) trains two networks side by side. On each batch both rank the
samples by their own cross-entropy, keep the 1 - R(t) fraction with the smallest loss (likely
clean, since networks fit clean labels before noisy ones) and hand that selection to the
OTHER network, which takes its gradient step on it. The forget rate grows over the epochs t,
R(t) = tau min(t^c / T_k, 1), to tau, the assumed noise rate. Co-teaching+ (Yu et al. 2019)
keeps the networks from agreeing too soon: after ``init_epochs`` epochs of co-teaching, the
small-loss selection runs only among the samples on which their predictions disagree (the
whole batch when they agree everywhere).

Confident learning (Northcutt et al. 2021, cleanlab's ``find_label_issues``) finds the
mislabelled samples from out-of-sample predicted probabilities p (``pred_probs``, from
:func:`cross_val_predict_proba`) and the given labels y~:

- per-class thresholds t_j = mean of p_j over the samples labelled j;
- the confident joint C[i, j]: the samples labelled i whose confident class is j, the
  confident class being the argmax of p over the classes k with p_k >= t_k (samples with no
  such class are not counted);
- the calibrated joint Q: row i of C rescaled to n_i (the count of label i), then divided by
  n, so that it estimates P(y~ = i, y* = j);
- ``filter_by`` in :func:`find_label_issues`: ``'prune_by_class'`` flags, per given class i,
  the sum_{j != i} round(n Q[i, j]) samples labelled i with the lowest p_i;
  ``'prune_by_noise_rate'`` flags, per pair i != j, the round(n Q[i, j]) samples labelled i
  with the largest margin p_j - p_i; ``'both'`` flags the samples both rules flag;
  ``'confident_learning'`` the off-diagonal entries of C itself. As cleanlab, at least one
  sample of every class is kept (``min_examples_per_class``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.activation import softmax
from lamina.functional.losses_noisy import check_pred_probs
from lamina.functional.torch_losses import cross_entropy
from lamina.nn.module import Module
from lamina.optim import Adam, Optimizer

__all__ = ["CoTeaching", "CoTeachingPlus", "calibrate_confident_joint", "class_thresholds", "confident_joint",
           "coteaching_select", "cross_val_predict_proba", "estimate_joint", "estimate_noise_rate", "find_label_issues",
           "fit_classifier", "forget_rate", "label_quality_scores", "predict_proba"]

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


def _positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _labels(labels, classes: int, n: int, fn: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels must be {n} integer class indices, got {y.dtype} of shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{fn}: labels must lie in 0..{classes - 1}, got values {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _inputs(labels, pred_probs, fn: str) -> tuple[np.ndarray, np.ndarray]:
    probs = check_pred_probs(pred_probs, fn)
    return _labels(labels, probs.shape[1], probs.shape[0], fn), probs


# ---- co-teaching ---------------------------------------------------------------------------

def forget_rate(epoch: int, tau: float, num_gradual: int = 10, exponent: float = 1.0) -> float:
    """R(t) = tau min(t^c / T_k, 1): 0 at epoch 0, reaching ``tau`` at epoch T_k."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"forget_rate: tau must lie in [0, 1), got {tau!r}")
    if num_gradual <= 0:
        return float(tau)
    return float(tau * min(epoch ** exponent / num_gradual, 1.0))


def coteaching_select(losses_a, losses_b, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows for network b, rows for network a): the round((1 - rate) B) rows of smallest loss
    under network a, and those under network b; each network is then updated on the rows the
    OTHER one chose (ties keep the earlier row)."""
    a, b = np.asarray(losses_a), np.asarray(losses_b)
    keep = max(1, int(round((1.0 - rate) * len(a))))
    return np.argsort(a, kind="stable")[:keep], np.argsort(b, kind="stable")[:keep]


class CoTeaching:
    """Two networks that teach each other on small-loss samples (Han et al. 2018).

    ``tau`` is the final forget rate (the assumed noise rate), reached after ``num_gradual``
    epochs (T_k) with exponent c. :meth:`fit` runs epochs of shuffled batches; ``history``
    records per epoch the forget rate and the mean loss of each network on its kept rows.
    """

    def __init__(self, model_a: Module, model_b: Module, optimizer_a: Optimizer, optimizer_b: Optimizer,
                 tau: float = 0.4, num_gradual: int = 10, exponent: float = 1.0, batch_size: int = 64,
                 preprocess: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0):
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"CoTeaching: tau (the final forget rate) must lie in [0, 1), got {tau!r}")
        self.models, self.optimizers = (model_a, model_b), (optimizer_a, optimizer_b)
        self.tau, self.num_gradual, self.exponent = float(tau), int(num_gradual), float(exponent)
        self.batch_size = _positive_int(batch_size, "batch_size", "CoTeaching")
        self.preprocess = preprocess
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.history: dict[str, list[float]] = {"forget_rate": [], "loss_a": [], "loss_b": []}

    def _input(self, batch: np.ndarray) -> Tensor:
        values = batch if self.preprocess is None else self.preprocess(batch)
        return Tensor(np.asarray(values))

    def step(self, x: np.ndarray, y: np.ndarray, rate: float) -> tuple[float, float]:
        """One co-teaching step on the batch (x, y) with forget rate ``rate``."""
        inputs = self._input(x)
        for model in self.models:
            model.train()
        logits = [model(inputs) for model in self.models]
        losses = [backend.to_numpy(cross_entropy(z, y, reduction="none").data) for z in logits]
        predictions = [backend.to_numpy(z.data).argmax(axis=-1) for z in logits]
        for_a, for_b = self.select(losses, predictions, rate)
        results = []
        for model, optimizer, rows in zip(self.models, self.optimizers, (for_a, for_b)):
            optimizer.zero_grad()
            loss = cross_entropy(model(self._input(x[rows])), y[rows])
            loss.backward()
            optimizer.step()
            results.append(loss.item())
        return results[0], results[1]

    def select(self, losses: list[np.ndarray], predictions: list[np.ndarray], rate: float,
               ) -> tuple[np.ndarray, np.ndarray]:
        """(rows network a steps on, rows network b steps on): each the other's small-loss rows."""
        for_b, for_a = coteaching_select(losses[0], losses[1], rate)
        return for_a, for_b

    def fit(self, x, labels, epochs: int) -> dict[str, list[float]]:
        """``epochs`` more epochs on ``(x, labels)``; calling again carries on the schedule."""
        x, y = np.asarray(x), np.asarray(labels).astype(np.int64)
        if len(x) != len(y) or y.ndim != 1:
            raise ValueError(f"CoTeaching.fit: needs one label per sample, got {len(x)} samples, labels {y.shape}")
        for _ in range(_positive_int(epochs, "epochs", "CoTeaching.fit")):
            rate = forget_rate(self.epoch, self.tau, self.num_gradual, self.exponent)
            order = self.rng.permutation(len(x))
            totals = np.zeros(2)
            batches = range(0, len(x), self.batch_size)
            for start in batches:
                rows = order[start:start + self.batch_size]
                totals += self.step(x[rows], y[rows], rate)
            self.epoch += 1
            self.history["forget_rate"].append(rate)
            self.history["loss_a"].append(float(totals[0] / len(batches)))
            self.history["loss_b"].append(float(totals[1] / len(batches)))
        return self.history


class CoTeachingPlus(CoTeaching):
    """Co-teaching+ (Yu et al. 2019): co-teaching on the samples the networks disagree on,
    after ``init_epochs`` epochs of plain co-teaching."""

    def __init__(self, *args, init_epochs: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_epochs = int(init_epochs)

    def select(self, losses, predictions, rate):
        if self.epoch < self.init_epochs:
            return super().select(losses, predictions, rate)
        disagree = np.flatnonzero(predictions[0] != predictions[1])
        if disagree.size == 0:
            everything = np.arange(len(losses[0]))
            return everything, everything
        for_b, for_a = coteaching_select(losses[0][disagree], losses[1][disagree], rate)
        return disagree[for_a], disagree[for_b]


# ---- out-of-sample probabilities -----------------------------------------------------------

def fit_classifier(model: Module, x, labels, epochs: int = 10, batch_size: int = 64, lr: float = 1e-2,
                   seed: int = 0, loss: Callable | None = None) -> Module:
    """Train ``model`` on (x, labels) with Adam and ``loss(logits, labels)`` (default the
    cross-entropy) for ``epochs`` epochs of shuffled batches; returns the model. ``labels`` are
    class indices, or (N, C) class probabilities (soft labels, e.g. a label model's)."""
    x, y = np.asarray(x), np.asarray(labels)
    y = y.astype(np.int64) if y.dtype.kind in "iub" else y.astype(x.dtype if x.dtype.kind == "f" else np.float32)
    loss = cross_entropy if loss is None else loss
    optimizer = Adam(model, lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(_positive_int(epochs, "epochs", "fit_classifier")):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            value = loss(model(Tensor(x[rows])), y[rows])  # before zero_grad: builds a model on first call
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
    return model


def predict_proba(model: Module, x, batch_size: int = 512) -> np.ndarray:
    """softmax of the model's logits on x, in eval mode, as float64 (N, C)."""
    model.eval()
    parts = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            parts.append(backend.to_numpy(softmax(model(Tensor(np.asarray(x[start:start + batch_size]))), -1).data))
    return np.concatenate(parts).astype(np.float64)


def cross_val_predict_proba(make_model: Callable[[], Module], x, labels, folds: int = 5, seed: int = 0,
                            train: Callable[[Module, np.ndarray, np.ndarray], Module] | None = None,
                            ) -> np.ndarray:
    """Out-of-sample predicted probabilities by K-fold cross-validation: the samples are
    split into ``folds`` stratified folds; for each, a fresh ``make_model()`` is trained on
    the others with ``train(model, x, y)`` (default :func:`fit_classifier`) and predicts it."""
    fn = "cross_val_predict_proba"
    x, y = np.asarray(x), np.asarray(labels)
    folds = _positive_int(folds, "folds", fn)
    if folds < 2 or len(x) != len(y) or len(y) < folds:
        raise ValueError(f"{fn}: needs folds >= 2 and at least that many samples with one label each, got "
                         f"folds={folds}, {len(x)} samples, {len(y)} labels")
    train = fit_classifier if train is None else train
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold_of[members] = (np.arange(members.size) + rng.integers(folds)) % folds
    probs = None
    for k in range(folds):
        held = fold_of == k
        if not held.any():
            continue
        model = train(make_model(), x[~held], y[~held])
        part = predict_proba(model, x[held])
        if probs is None:
            probs = np.zeros((len(y), part.shape[1]))
        probs[held] = part
    return probs


# ---- confident learning --------------------------------------------------------------------

def class_thresholds(labels, pred_probs) -> np.ndarray:
    """t_j = mean of p_j over the samples labelled j (classes with no sample: 1)."""
    y, probs = _inputs(labels, pred_probs, "class_thresholds")
    t = np.ones(probs.shape[1])
    for j in range(probs.shape[1]):
        if (y == j).any():
            t[j] = probs[y == j, j].mean()
    return t


def _confident_classes(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each sample's confident class (argmax of p over the classes at or above their
    threshold), -1 where no class reaches its threshold."""
    above = probs >= class_thresholds(y, probs)
    masked = np.where(above, probs, -np.inf)
    return np.where(above.any(axis=1), masked.argmax(axis=1), -1)


def confident_joint(labels, pred_probs) -> np.ndarray:
    """C[i, j]: the count of samples labelled i whose confident class is j (int64, C x C)."""
    y, probs = _inputs(labels, pred_probs, "confident_joint")
    confident = _confident_classes(y, probs)
    counted = confident >= 0
    c = probs.shape[1]
    return np.bincount(y[counted] * c + confident[counted], minlength=c * c).reshape(c, c)


def calibrate_confident_joint(joint, labels) -> np.ndarray:
    """Rows of the confident joint rescaled so that row i sums to n_i, the count of label i."""
    joint = np.asarray(joint, dtype=np.float64)
    counts = np.bincount(np.asarray(labels), minlength=joint.shape[0]).astype(np.float64)
    sums = joint.sum(axis=1, keepdims=True)
    return np.where(sums > 0, joint / np.where(sums > 0, sums, 1.0), 0.0) * counts[:, None]


def estimate_joint(labels, pred_probs) -> np.ndarray:
    """Q = calibrated confident joint / n: the estimate of P(given label i, true label j)."""
    y, probs = _inputs(labels, pred_probs, "estimate_joint")
    calibrated = calibrate_confident_joint(confident_joint(y, probs), y)
    return calibrated / calibrated.sum()


def estimate_noise_rate(labels, pred_probs) -> float:
    """The estimated fraction of wrong labels, 1 - trace(Q)."""
    return float(1.0 - np.trace(estimate_joint(labels, pred_probs)))


def find_label_issues(labels, pred_probs, filter_by: str = "prune_by_noise_rate",
                      min_examples_per_class: int = 1) -> np.ndarray:
    """A boolean mask of the samples whose given label is likely wrong (see the module)."""
    fn = "find_label_issues"
    if filter_by not in FILTERS:
        raise ValueError(f"{fn}: filter_by must be one of {FILTERS}, got {filter_by!r}")
    y, probs = _inputs(labels, pred_probs, fn)
    n, c = probs.shape
    if filter_by == "confident_learning":
        confident = _confident_classes(y, probs)
        return (confident >= 0) & (confident != y)
    counts = np.rint(estimate_joint(y, probs) * n).astype(np.int64)
    np.fill_diagonal(counts, 0)
    by_class = np.zeros(n, dtype=bool)
    by_noise = np.zeros(n, dtype=bool)
    for i in range(c):
        members = np.flatnonzero(y == i)
        room = max(members.size - min_examples_per_class, 0)
        if filter_by in ("prune_by_class", "both"):
            worst = members[np.argsort(probs[members, i], kind="stable")]
            by_class[worst[:min(counts[i].sum(), room)]] = True
        if filter_by in ("prune_by_noise_rate", "both"):
            for j in range(c):
                if j != i and counts[i, j]:
                    margin = probs[members, j] - probs[members, i]
                    by_noise[members[np.argsort(-margin, kind="stable")[:min(counts[i, j], room)]]] = True
    if filter_by == "prune_by_class":
        return by_class
    if filter_by == "prune_by_noise_rate":
        return by_noise
    return by_class & by_noise


def label_quality_scores(labels, pred_probs, method: str = "self_confidence") -> np.ndarray:
    """A score in [0, 1] per sample, low for a likely wrong label: ``'self_confidence'`` p_y,
    ``'normalized_margin'`` (p_y - max_{k != y} p_k + 1) / 2."""
    fn = "label_quality_scores"
    y, probs = _inputs(labels, pred_probs, fn)
    rows = np.arange(len(y))
    if method == "self_confidence":
        return probs[rows, y]
    if method == "normalized_margin":
        others = probs.copy()
        others[rows, y] = -np.inf
        return (probs[rows, y] - others.max(axis=1) + 1.0) / 2.0
    raise ValueError(f"{fn}: method must be 'self_confidence' or 'normalized_margin', got {method!r}")
