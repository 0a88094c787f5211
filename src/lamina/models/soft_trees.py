"""Differentiable decision trees with sigmoid routing: the soft decision tree of Frosst &
Hinton 2017 ("Distilling a Neural Network Into a Soft Decision Tree") and the deep neural
decision forest of Kontschieder et al. 2015.

A complete binary tree of depth D has 2^D - 1 inner nodes (breadth first: the children of
node i are 2i + 1 and 2i + 2) and 2^D leaves. With g_i(x) the probability that x goes left at
node i, the probability of reaching a node is the product of the choices on its path,

    mu_root(x) = 1,   mu_left(i)(x) = mu_i(x) g_i(x),   mu_right(i)(x) = mu_i(x) (1 - g_i(x)).

Soft decision tree (classes k, leaves l, one-hot targets T):

    p_i(x)  = sigma(beta (x w_i + b_i))         the probability of going right, g_i = 1 - p_i
    Q_l     = softmax(phi_l)                    the leaf's class distribution
    L(x)    = - sum_l P_l(x) sum_k T_k log Q_lk  the path-probability-weighted cross-entropy
    alpha_i = sum_x P_i(x) p_i(x) / sum_x P_i(x)                  (over the batch)
    C       = - lambda sum_i 2^-depth(i) (log alpha_i + log(1 - alpha_i)) / 2

(P_i the probability of reaching node i); C pushes each node to split the data it sees evenly,
less so deeper down. The prediction is the mixture sum_l P_l(x) Q_l.

Neural decision forest (trees t, inner nodes n, leaves l, classes y):

    d_n(x)   = sigma(x w_tn + b_tn)             the probability of going left
    P_T[y|x] = sum_l pi_ly mu_l(x)              the tree's prediction
    P_F[y|x] = mean_T P_T[y|x]                  the forest's

trained on the mean over trees of -log P_T[y|x]. The leaf distributions pi are either learned
by gradient (softmax of free logits) or held fixed while the routing learns and updated in
between by the paper's fixed-point rule over a training set,

    pi_ly <- (1 / Z_l) sum_{(x, y') : y' = y} pi_ly mu_l(x) / P_T[y|x]    (Z_l: sum_y pi_ly = 1)
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.nn.tabular import check_numbers

__all__ = ["NeuralDecisionForest", "SoftDecisionTree", "routing_probabilities"]


def routing_probabilities(left, depth: int) -> tuple[list[Tensor], Tensor]:
    """From the probabilities ``left`` (..., 2^depth - 1) of going left at each inner node
    (breadth first), (the reaching probabilities of the nodes of each level, level d of shape
    (..., 2^d); the leaves' reaching probabilities (..., 2^depth))."""
    reach = Tensor._wrap(backend.xp.ones((*left.shape[:-1], 1), dtype=left.dtype))
    levels = []
    for level in range(depth):
        g = left[..., 2**level - 1:2**(level + 1) - 1]
        levels.append(reach)
        reach = F.stack([reach * g, reach * (1 - g)], axis=-1).reshape(*left.shape[:-1], 2**(level + 1))
    return levels, reach


def _one_hot(who: str, y, num_classes: int, batch: int):
    labels = backend.xp.asarray(y.data if isinstance(y, Tensor) else y)
    if labels.shape != (batch,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{who}: labels must be {batch} integers, got shape {labels.shape} of {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{who}: labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    return backend.xp.eye(num_classes, dtype=backend.get_default_dtype())[labels]


@register_with_arguments
class SoftDecisionTree(Module):
    """x (N, input_dim) -> log of the predicted class distribution (N, num_classes) (module
    docstring); :meth:`loss` is the weighted cross-entropy plus ``penalty_strength`` times the
    balanced-split penalty, ``penalty_decay`` its factor per level (the paper's 2^-depth)."""

    def __init__(self, depth: int, num_classes: int, input_dim: int, inverse_temperature: float = 1.0,
                 penalty_strength: float = 0.1, penalty_decay: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.depth = positive_int(depth, "SoftDecisionTree: depth")
        self.num_classes = positive_int(num_classes, "SoftDecisionTree: num_classes")
        self.input_dim = positive_int(input_dim, "SoftDecisionTree: input_dim")
        if not inverse_temperature > 0:
            raise ValueError(f"SoftDecisionTree: inverse_temperature must be positive, got {inverse_temperature!r}")
        self.inverse_temperature = float(inverse_temperature)
        self.penalty_strength, self.penalty_decay = float(penalty_strength), float(penalty_decay)
        xp, dtype, rng = backend.xp, backend.get_default_dtype(), backend.rng()
        n_inner, bound = 2**depth - 1, 1 / math.sqrt(input_dim)
        self.add_parameter("weight", xp.asarray((2 * rng.random((input_dim, n_inner)) - 1) * bound, dtype=dtype))
        self.add_parameter("bias", xp.zeros((n_inner,), dtype=dtype))
        self.add_parameter("leaf_logits", xp.asarray(0.1 * rng.standard_normal((2**depth, num_classes)), dtype=dtype))
        self.built = True

    def routing(self, x) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(the probabilities of going right, by level; the reaching probabilities, by level;
        the leaves' reaching probabilities (N, 2^depth))."""
        x = check_numbers(self._label(), x, self.input_dim)
        right = F.sigmoid((x @ self.weight + self.bias) * self.inverse_temperature)
        levels, leaves = routing_probabilities(1 - right, self.depth)
        rights = [right[:, 2**d - 1:2**(d + 1) - 1] for d in range(self.depth)]
        return rights, levels, leaves

    def forward(self, x) -> Tensor:
        leaves = self.routing(x)[2]
        return F.log(leaves @ F.softmax(self.leaf_logits, axis=1))

    def penalty(self, rights: list[Tensor], levels: list[Tensor]) -> Tensor:
        """C of the module docstring, without lambda, for the batch's routing."""
        total = None
        for d, (right, reach) in enumerate(zip(rights, levels)):
            alpha = (reach * right).sum(axis=0) / reach.sum(axis=0)
            level = (F.log(alpha) + F.log(1 - alpha)).sum() * (-0.5 * self.penalty_decay**d)
            total = level if total is None else total + level
        return total

    def loss(self, x, y) -> Tensor:
        """The batch mean of the path-weighted cross-entropy plus ``penalty_strength`` times C."""
        rights, levels, leaves = self.routing(x)
        targets = Tensor._wrap(_one_hot(self._label(), y, self.num_classes, leaves.shape[0]).astype(leaves.dtype))
        leaf_log_q = F.log_softmax(self.leaf_logits, axis=1)
        weighted = -(leaves * (targets @ leaf_log_q.T)).sum(axis=1).mean()
        if self.penalty_strength == 0:
            return weighted
        return weighted + self.penalty(rights, levels) * self.penalty_strength


@register_with_arguments
class NeuralDecisionForest(Module):
    """x (N, input_dim) -> log P_F[y|x] (N, num_classes) (module docstring). ``leaf_update`` is
    "fixed_point" (pi a buffer, updated by :meth:`update_leaves`) or "gradient" (pi the softmax
    of learned logits). :meth:`loss` is the mean over trees and samples of -log P_T[y|x]."""

    def __init__(self, num_trees: int, depth: int, input_dim: int, num_classes: int,
                 leaf_update: str = "fixed_point", name: str | None = None):
        super().__init__(name=name)
        who = "NeuralDecisionForest"
        self.num_trees = positive_int(num_trees, f"{who}: num_trees")
        self.depth = positive_int(depth, f"{who}: depth")
        self.input_dim = positive_int(input_dim, f"{who}: input_dim")
        self.num_classes = positive_int(num_classes, f"{who}: num_classes")
        if leaf_update not in ("fixed_point", "gradient"):
            raise ValueError(f"{who}: leaf_update must be 'fixed_point' or 'gradient', got {leaf_update!r}")
        self.leaf_update = leaf_update
        xp, dtype, rng = backend.xp, backend.get_default_dtype(), backend.rng()
        n_inner, n_leaves, bound = 2**depth - 1, 2**depth, 1 / math.sqrt(input_dim)
        shape = (num_trees, input_dim, n_inner)
        self.add_parameter("weight", xp.asarray((2 * rng.random(shape) - 1) * bound, dtype=dtype))
        self.add_parameter("bias", xp.zeros((num_trees, n_inner), dtype=dtype))
        if leaf_update == "gradient":
            self.add_parameter("leaf_logits", xp.zeros((num_trees, n_leaves, num_classes), dtype=dtype))
        else:
            self.register_buffer("leaf_distributions",
                                 xp.full((num_trees, n_leaves, num_classes), 1 / num_classes, dtype=dtype))
        self.built = True

    def routing(self, x) -> Tensor:
        """mu (N, num_trees, 2^depth): the probability that x reaches each leaf of each tree."""
        x = check_numbers(self._label(), x, self.input_dim)
        left = F.sigmoid(F.einsum("nd,tdk->ntk", x, self.weight) + self.bias)
        return routing_probabilities(left, self.depth)[1]

    def leaf_probabilities(self) -> Tensor:
        """pi (num_trees, 2^depth, num_classes)."""
        if self.leaf_update == "gradient":
            return F.softmax(self.leaf_logits, axis=-1)
        return Tensor._wrap(self.leaf_distributions)

    def tree_predictions(self, x) -> Tensor:
        """P_T[y|x] (N, num_trees, num_classes)."""
        return F.einsum("ntl,tlc->ntc", self.routing(x), self.leaf_probabilities())

    def forward(self, x) -> Tensor:
        return F.log(self.tree_predictions(x).mean(axis=1))

    def loss(self, x, y) -> Tensor:
        predictions = self.tree_predictions(x)
        targets = _one_hot(self._label(), y, self.num_classes, predictions.shape[0]).astype(predictions.dtype)
        chosen = (predictions * Tensor._wrap(targets[:, None, :])).sum(axis=-1)
        return -F.log(chosen).mean()

    def update_leaves(self, x, y, iterations: int = 20) -> None:
        """Run the fixed-point rule (module docstring) ``iterations`` times on the set (x, y),
        the routing held fixed."""
        if self.leaf_update != "fixed_point":
            raise ValueError("NeuralDecisionForest.update_leaves: the leaves are learned by gradient "
                             "(leaf_update='gradient'); build the forest with leaf_update='fixed_point'")
        xp = backend.xp
        with no_grad():
            mu = self.routing(x).data                                       # (N, T, L)
            targets = _one_hot(self._label(), y, self.num_classes, mu.shape[0]).astype(mu.dtype)
            pi = self.leaf_distributions
            for _ in range(iterations):
                tree = xp.einsum("ntl,tlc->ntc", mu, pi)                    # P_T[y|x]
                share = targets[:, None, :] / xp.maximum(tree, xp.finfo(mu.dtype).tiny)
                unnormalised = pi * xp.einsum("ntl,ntc->tlc", mu, share)
                total = unnormalised.sum(axis=-1, keepdims=True)
                pi = xp.where(total > 0, unnormalised / xp.where(total > 0, total, 1), pi)
            self.register_buffer("leaf_distributions", pi.astype(self.leaf_distributions.dtype))
