"""NODE, neural oblivious decision ensembles (Popov, Morozov & Babenko 2019), in the layout of
their reference code.

An oblivious tree of depth D asks the same question of every node of a level. A layer of
``num_trees`` such trees, for x (N, d_in):

    S        = entmax15(A, over the features)       A (d_in, trees, D): one feature choice per level
    f        = x S                                  (N, trees, D) the chosen feature values
    c        = entmoid15((f - b) exp(-log_t))       b thresholds, log_t log-temperatures (trees, D)
    match_dl = c_d if bit d of leaf l is 0, else 1 - c_d
    w_l      = prod_d match_dl                      (N, trees, 2^D) soft leaf weights
    h        = sum_l w_l R_l                        R (trees, tree_dim, 2^D) the leaf responses

Data-aware initialisation, on the first batch a layer sees: each threshold b_td is the q_td-th
quantile of f_td over the batch, q_td ~ Beta(beta, beta) (``threshold_init_beta``), and each
temperature exp(log_t_td) the ``threshold_init_cutoff`` quantile of |f_td - b_td| (scaled
down by the cutoff when it exceeds one).

The model stacks ``num_layers`` layers densely: layer k reads x joined with the outputs of
layers 1 .. k-1, and the prediction averages the first ``output_dim`` response components
over all trees of all layers.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn import ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.nn.tabular import check_numbers

__all__ = ["NODE", "ObliviousDecisionTrees"]

TEMPERATURE_EPS = 1e-6


def leaf_bits(depth: int, dtype):
    """(depth, 2^depth): bit d of leaf l, the branch it takes at level d."""
    xp = backend.xp
    return ((xp.arange(2**depth)[None, :] >> xp.arange(depth)[:, None]) & 1).astype(dtype)


@register_with_arguments
class ObliviousDecisionTrees(Module):
    """x (N, input_dim) -> (N, num_trees * tree_dim): one NODE layer (module docstring)."""

    def __init__(self, input_dim: int, num_trees: int, depth: int = 6, tree_dim: int = 1,
                 threshold_init_beta: float = 1.0, threshold_init_cutoff: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        who = "ObliviousDecisionTrees"
        self.input_dim = positive_int(input_dim, f"{who}: input_dim")
        self.num_trees = positive_int(num_trees, f"{who}: num_trees")
        self.depth = positive_int(depth, f"{who}: depth")
        self.tree_dim = positive_int(tree_dim, f"{who}: tree_dim")
        if not threshold_init_beta > 0 or not threshold_init_cutoff > 0:
            raise ValueError(f"{who}: threshold_init_beta and threshold_init_cutoff must be positive, "
                             f"got {threshold_init_beta!r} and {threshold_init_cutoff!r}")
        self.threshold_init_beta, self.threshold_init_cutoff = float(threshold_init_beta), float(threshold_init_cutoff)
        xp, dtype, rng = backend.xp, backend.get_default_dtype(), backend.rng()
        self.add_parameter("selection_logits", xp.asarray(rng.random((input_dim, num_trees, depth)), dtype=dtype))
        self.add_parameter("thresholds", xp.zeros((num_trees, depth), dtype=dtype))
        self.add_parameter("log_temperatures", xp.zeros((num_trees, depth), dtype=dtype))
        self.add_parameter("response", xp.asarray(rng.standard_normal((num_trees, tree_dim, 2**depth)), dtype=dtype))
        self.register_buffer("initialized", xp.zeros((), dtype=dtype))
        self.threshold_quantiles = None             # q of the thresholds, once initialised
        self.built = True

    def chosen_features(self, x) -> Tensor:
        """f (N, num_trees, depth): the entmax-weighted feature of each tree level."""
        return F.einsum("ni,itd->ntd", x, F.entmax15(self.selection_logits, axis=0))

    def initialize(self, x) -> None:
        """The data-aware initialisation of the thresholds and temperatures on the batch x."""
        xp = backend.xp
        with no_grad():
            values = self.chosen_features(check_numbers(self._label(), x, self.input_dim)).data
        quantiles = backend.rng().beta(self.threshold_init_beta, self.threshold_init_beta,
                                       size=(self.num_trees, self.depth))
        columns = values.reshape(len(values), -1)
        thresholds = xp.stack([xp.quantile(columns[:, j], q) for j, q in enumerate(quantiles.ravel())])
        thresholds = thresholds.reshape(self.num_trees, self.depth)
        spread = xp.quantile(xp.abs(values - thresholds), min(1.0, self.threshold_init_cutoff), axis=0)
        spread = spread / max(1.0, self.threshold_init_cutoff)
        self.thresholds.data[...] = thresholds
        self.log_temperatures.data[...] = xp.log(spread + TEMPERATURE_EPS)
        self.threshold_quantiles = quantiles
        self.register_buffer("initialized", xp.ones((), dtype=self.initialized.dtype))

    def forward(self, x) -> Tensor:
        x = check_numbers(self._label(), x, self.input_dim)
        if not self.initialized:
            self.initialize(x)
        steps = F.entmoid15((self.chosen_features(x) - self.thresholds) * F.exp(-self.log_temperatures))
        bits = Tensor._wrap(leaf_bits(self.depth, steps.dtype))
        weights = None
        for level in range(self.depth):
            c = steps[:, :, level:level + 1]                                # (N, trees, 1)
            match = c + bits[level] * (1 - 2 * c)                           # (N, trees, 2^D)
            weights = match if weights is None else weights * match
        return F.einsum("ntl,tkl->ntk", weights, self.response).reshape(x.shape[0], -1)


@register_with_arguments
class NODE(Module):
    """x (N, input_dim) -> (N, output_dim): ``num_layers`` densely connected layers of
    ``num_trees`` oblivious trees (module docstring); ``output_dim`` defaults to ``tree_dim``
    and may not exceed it. Use logits for classification, the output itself for regression."""

    def __init__(self, num_layers: int, num_trees: int, depth: int, tree_dim: int, input_dim: int,
                 output_dim: int | None = None, threshold_init_beta: float = 1.0,
                 threshold_init_cutoff: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.num_layers = positive_int(num_layers, "NODE: num_layers")
        self.num_trees = positive_int(num_trees, "NODE: num_trees")
        self.depth = positive_int(depth, "NODE: depth")
        self.tree_dim = positive_int(tree_dim, "NODE: tree_dim")
        self.input_dim = positive_int(input_dim, "NODE: input_dim")
        self.output_dim = positive_int(output_dim if output_dim is not None else tree_dim, "NODE: output_dim")
        if self.output_dim > tree_dim:
            raise ValueError(f"NODE: output_dim ({self.output_dim}) may not exceed tree_dim ({tree_dim})")
        width = num_trees * tree_dim
        self.layers = ModuleList([
            ObliviousDecisionTrees(input_dim + k * width, num_trees, depth, tree_dim,
                                   threshold_init_beta, threshold_init_cutoff) for k in range(num_layers)])
        self.built = True

    def forward(self, x) -> Tensor:
        features = check_numbers(self._label(), x, self.input_dim)
        outputs = []
        for layer in self.layers:
            outputs.append(layer(features))
            features = F.concat([features, outputs[-1]], axis=1)
        responses = F.concat(outputs, axis=1).reshape(features.shape[0], -1, self.tree_dim)
        return responses[:, :, :self.output_dim].mean(axis=1)
