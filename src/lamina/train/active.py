r"""Pool-based active learning: train on a small labelled set, ask an oracle for the labels of
the pool samples a query strategy finds most useful, retrain, repeat.

Query strategies, each picking ``k`` pool indices (ties go to the lower index):

- :func:`least_confidence`: the largest 1 - max_c p_c.
- :func:`margin_sampling`: the smallest p_(1) - p_(2), the gap between the two most likely
  classes.
- :func:`entropy_sampling`: the largest predictive entropy H[p] = -sum_c p_c log p_c.
- :func:`bald` (Houlsby et al. 2011; Gal et al. 2017 with MC dropout): the largest mutual
  information between the label and the weights, H[p_bar] - (1/T) sum_t H[p_t] over T
  stochastic forward passes p_t (:func:`lamina.train.mc_dropout_predict`).
- :func:`core_set` (Sener & Savarese 2018): greedy k-centre on embeddings: repeatedly the pool
  sample farthest (Euclidean) from its nearest labelled or already chosen sample.
- :func:`random_sampling`: uniformly at random, the baseline.

:class:`ActiveLearningLoop` runs the rounds and records the accuracy at each labelled-set size.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.functional.semi_supervised import consistency_loss
from lamina.nn import Sequential
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam
from lamina.train.uncertainty import mc_dropout_predict, model_input

__all__ = ["STRATEGIES", "ActiveLearningLoop", "bald", "bald_scores", "core_set", "entropy_sampling",
           "least_confidence", "margin_sampling", "random_sampling", "train_classifier"]


def _check_k(k, available: int, who: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{who}: the query size k must be a positive integer, got {k!r}")
    if k > available:
        raise ValueError(f"{who}: query size {k} is larger than the pool of {available} unlabelled samples")
    return int(k)


def _probabilities(probs, who: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ShapeError(f"{who}: probs must be (pool samples, classes >= 2), got shape {probs.shape}")
    return probs


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k largest scores, the lower index first among equal ones."""
    return np.argsort(-scores, kind="stable")[:k]


def _entropy(probs: np.ndarray) -> np.ndarray:
    return -np.sum(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=-1)


def least_confidence(probs, k: int) -> np.ndarray:
    """The k pool samples with the largest 1 - max_c p_c."""
    probs = _probabilities(probs, "least_confidence")
    return _top(1.0 - probs.max(axis=1), _check_k(k, len(probs), "least_confidence"))


def margin_sampling(probs, k: int) -> np.ndarray:
    """The k pool samples with the smallest p_(1) - p_(2)."""
    probs = _probabilities(probs, "margin_sampling")
    k = _check_k(k, len(probs), "margin_sampling")
    two_largest = np.sort(probs, axis=1)[:, -2:]
    return _top(two_largest[:, 0] - two_largest[:, 1], k)


def entropy_sampling(probs, k: int) -> np.ndarray:
    """The k pool samples with the largest entropy -sum_c p_c log p_c."""
    probs = _probabilities(probs, "entropy_sampling")
    return _top(_entropy(probs), _check_k(k, len(probs), "entropy_sampling"))


def bald_scores(mc_probs) -> np.ndarray:
    """H[p_bar] - (1/T) sum_t H[p_t] per pool sample, from (T, N, C) sampled probabilities."""
    mc_probs = np.asarray(mc_probs, dtype=np.float64)
    if mc_probs.ndim != 3 or mc_probs.shape[0] < 1:
        raise ShapeError(f"bald: expected (samples T >= 1, pool N, classes C) probabilities, got {mc_probs.shape}")
    return _entropy(mc_probs.mean(axis=0)) - _entropy(mc_probs).mean(axis=0)


def bald(mc_probs, k: int) -> np.ndarray:
    """The k pool samples with the largest :func:`bald_scores`."""
    scores = bald_scores(mc_probs)
    return _top(scores, _check_k(k, len(scores), "bald"))


def core_set(pool_embeddings, labelled_embeddings, k: int) -> np.ndarray:
    """Greedy k-centre: k times, the pool sample whose distance to its nearest centre (the
    labelled samples and the ones chosen so far) is the largest becomes a centre. Without
    labelled samples the first choice is pool sample 0."""
    who = "core_set"
    pool = np.asarray(pool_embeddings, dtype=np.float64)
    labelled = np.asarray(labelled_embeddings, dtype=np.float64).reshape(-1, *pool.shape[1:])
    if pool.ndim != 2:
        raise ShapeError(f"{who}: pool_embeddings must be (pool samples, features), got shape {pool.shape}")
    k = _check_k(k, len(pool), who)
    nearest = np.full(len(pool), np.inf)
    for start in range(0, len(labelled), 256):
        centres = labelled[start:start + 256]
        distances = np.sqrt(np.maximum(((pool[:, None, :] - centres[None]) ** 2).sum(-1), 0.0))
        nearest = np.minimum(nearest, distances.min(axis=1))
    chosen = []
    for _ in range(k):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.sqrt(((pool - pool[pick]) ** 2).sum(-1)))
    return np.asarray(chosen, dtype=np.int64)


def random_sampling(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices of range(n), uniformly at random."""
    return rng.choice(n, _check_k(k, n, "random_sampling"), replace=False)


def _predicted_probs(model: Module, x) -> np.ndarray:
    with no_grad(), evaluation_mode(model):
        logits = np.asarray(model(model_input(model, x)).numpy(), dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _embeddings(model: Module, x) -> np.ndarray:
    """The output of the layer before the last for a Sequential model, else the flat inputs."""
    if isinstance(model, Sequential) and len(model) > 1:
        with no_grad(), evaluation_mode(model):
            features = model[:-1](model_input(model, x)).numpy()
        return np.asarray(features, dtype=np.float64).reshape(len(x), -1)
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def _by_probabilities(rule: Callable) -> Callable:
    def query(model, unlabelled_x, labelled_x, k, rng):
        return rule(_predicted_probs(model, unlabelled_x), k)
    return query


def _bald_query(model, unlabelled_x, labelled_x, k, rng, samples: int = 20):
    return bald(mc_dropout_predict(model, unlabelled_x, samples=samples, outputs="logits").samples, k)


def _core_set_query(model, unlabelled_x, labelled_x, k, rng):
    return core_set(_embeddings(model, unlabelled_x), _embeddings(model, labelled_x), k)


def _random_query(model, unlabelled_x, labelled_x, k, rng):
    return random_sampling(len(unlabelled_x), k, rng)


STRATEGIES: dict[str, Callable] = {
    "least_confidence": _by_probabilities(least_confidence),
    "margin": _by_probabilities(margin_sampling),
    "entropy": _by_probabilities(entropy_sampling),
    "bald": _bald_query,
    "core_set": _core_set_query,
    "random": _random_query,
}
"""The named strategies of :class:`ActiveLearningLoop`, each a function
``(model, unlabelled_x, labelled_x, k, rng) -> k indices into unlabelled_x``."""


def train_classifier(model: Module, x, y, epochs: int = 100, batch_size: int = 64, lr: float = 0.01,
                     rng: np.random.Generator | None = None) -> Module:
    """Minimise the cross-entropy of ``model``'s logits on (x, y) with Adam: ``epochs`` passes
    of shuffled mini-batches."""
    rng = np.random.default_rng(0) if rng is None else rng
    x, y = np.asarray(x), np.asarray(y)
    optimizer = None
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            logits = model(model_input(model, x[rows]))
            if optimizer is None:
                optimizer = Adam(model, lr=lr)
            optimizer.zero_grad()
            consistency_loss(logits, y[rows], kind="ce").backward()
            optimizer.step()
    return model


class ActiveLearningLoop:
    """Active learning on a pool (``pool_x``, with the oracle's labels ``pool_y``).

    ``initial``: the size of a random first labelled set, or its pool indices. Each of the
    ``rounds`` rounds trains a new ``model_factory()`` with ``train(model, x, y)`` (by default
    :func:`train_classifier`) on the labelled set, measures its accuracy on ``eval_data``
    (x, y) (by default the whole pool), then labels ``query_size`` more pool samples chosen by
    ``strategy`` (a name of :data:`STRATEGIES` or a function of the same form); a last model is
    trained and measured after the last query. :meth:`run` returns ``{labelled-set size:
    accuracy}``; :attr:`labelled` holds the labelled pool indices in the order they were added.
    """

    def __init__(self, model_factory: Callable[[], Module], pool_x, pool_y, initial, query_size: int, rounds: int,
                 strategy: str | Callable = "entropy", train: Callable | None = None, eval_data=None,
                 seed: int = 0):
        who = "ActiveLearningLoop"
        self.pool_x, self.pool_y = np.asarray(pool_x), np.asarray(pool_y)
        if len(self.pool_x) != len(self.pool_y) or len(self.pool_x) == 0:
            raise ShapeError(f"{who}: pool_x ({len(self.pool_x)} samples) and pool_y ({len(self.pool_y)} labels) "
                             "must be non-empty and of equal length")
        if isinstance(strategy, str) and strategy not in STRATEGIES:
            raise ValueError(f"{who}: strategy must be one of {tuple(STRATEGIES)} or a function, got {strategy!r}")
        if not callable(model_factory):
            raise TypeError(f"{who}: model_factory must be a function () -> a new lamina Module")
        self.rng = np.random.default_rng(seed)
        n = len(self.pool_x)
        if isinstance(initial, numbers.Integral) and not isinstance(initial, bool):
            self.labelled = list(random_sampling(n, int(initial), self.rng)) if initial > 0 else []
        else:
            self.labelled = [int(i) for i in np.asarray(initial, dtype=np.int64).ravel()]
        if not self.labelled or len(set(self.labelled)) != len(self.labelled) \
                or min(self.labelled) < 0 or max(self.labelled) >= n:
            raise ValueError(f"{who}: initial must be a positive size or distinct indices of the pool of {n}, "
                             f"got {initial!r}")
        self.query_size = _check_k(query_size, n, who)
        if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
            raise ValueError(f"{who}: rounds must be an integer >= 0, got {rounds!r}")
        if len(self.labelled) + rounds * self.query_size > n:
            raise ValueError(f"{who}: {rounds} rounds of query_size {self.query_size} after {len(self.labelled)} "
                             f"initial labels need {len(self.labelled) + rounds * self.query_size} samples, more "
                             f"than the pool of {n}")
        self.rounds = int(rounds)
        self.strategy = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
        self.model_factory = model_factory
        self.train = train if train is not None else (lambda model, x, y: train_classifier(model, x, y, rng=self.rng))
        self.eval_x, self.eval_y = (self.pool_x, self.pool_y) if eval_data is None else map(np.asarray, eval_data)
        self.model: Module | None = None

    def _fit_and_score(self) -> float:
        rows = np.asarray(self.labelled)
        self.model = self.model_factory()
        self.train(self.model, self.pool_x[rows], self.pool_y[rows])
        return float(np.mean(_predicted_probs(self.model, self.eval_x).argmax(axis=1) == self.eval_y))

    def run(self) -> dict[int, float]:
        accuracy = {}
        for round_ in range(self.rounds + 1):
            accuracy[len(self.labelled)] = self._fit_and_score()
            if round_ == self.rounds:
                break
            unlabelled = np.setdiff1d(np.arange(len(self.pool_x)), self.labelled)
            picked = np.asarray(self.strategy(self.model, self.pool_x[unlabelled], self.pool_x[self.labelled],
                                              self.query_size, self.rng))
            if picked.shape != (self.query_size,) or len(set(picked.tolist())) != self.query_size:
                raise ValueError(f"ActiveLearningLoop: the strategy must return {self.query_size} distinct indices "
                                 f"into the unlabelled pool, got {picked!r}")
            self.labelled.extend(int(i) for i in unlabelled[picked])
        return accuracy
