"""Scores of GNN explanations (edge importances, one per edge).

* explanation AUC (Ying et al. 2019; Luo et al. 2020): the ROC AUC of the importances against
  the ground-truth motif edges (``sklearn.metrics.roc_auc_score``), over the chosen edges
  (those of the explained computation subgraphs);
* fidelity (Pope et al. 2019; Yuan et al. 2022), with S the k most important edges and p the
  model's probability of its class y^ on the full graph:

      fidelity+ = p(y^ | G) - p(y^ | G without S)    (high: the explanation is necessary)
      fidelity- = p(y^ | G) - p(y^ | S alone)        (low: the explanation is sufficient)

  Edges are removed from ``edge_index`` (no edge weights needed).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.analysis.graph_masks import check_edge_scores, check_node, graph_arrays, instance_logits
from lamina.analysis.saliency import input_analysis
from lamina.autograd import no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["explanation_auc", "fidelity"]


def explanation_auc(edge_mask, ground_truth, edges=None) -> float:
    """ROC AUC of ``edge_mask`` (E,) against the boolean ``ground_truth`` (E,), over the edge ids
    ``edges`` (all by default; a list of id arrays is joined)."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(ground_truth).astype(bool)
    scores = check_edge_scores(edge_mask, truth.shape[0], "explanation_auc")
    if truth.ndim != 1:
        raise ShapeError(f"explanation_auc: ground_truth of shape {truth.shape}; expected (num_edges,)")
    if edges is not None:
        ids = np.concatenate([np.asarray(e).reshape(-1) for e in edges]) if isinstance(edges, list) else edges
        ids = np.asarray(ids, dtype=np.int64)
        scores, truth = scores[ids], truth[ids]
    if truth.all() or not truth.any():
        raise ValueError(f"explanation_auc: the {truth.shape[0]} edges scored are all "
                         f"{'motif' if truth.any() else 'non-motif'} edges; the AUC needs both kinds")
    return float(roc_auc_score(truth, scores))


def _probability(model: Module, x: np.ndarray, edge_index: np.ndarray, node: int | None, c: int | None,
                 fn: str) -> tuple[float, int]:
    with no_grad():
        p = F.softmax(instance_logits(model, tensor(x, dtype=x.dtype), edge_index, None, node, fn), axis=-1).numpy()
    c = int(p.argmax()) if c is None else c
    return float(p[c]), c


def fidelity(model: Module, graph, edge_mask, node: int | None = None, k: int = 6) -> tuple[float, float]:
    """(fidelity+, fidelity-) of the ``k`` edges with the largest ``edge_mask`` (E,) for the
    model's prediction on ``node`` (the graph when None). The model is called as
    ``model(x, edge_index, edge_weight=None)``."""
    fn = "fidelity"
    x, edge_index = graph_arrays(graph, fn)
    scores = check_edge_scores(edge_mask, edge_index.shape[1], fn)
    if node is not None:
        check_node(node, x.shape[0], fn)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= edge_index.shape[1]:
        raise ValueError(f"fidelity: k must be an int in [1, {edge_index.shape[1]}] (the number of edges), got {k!r}")
    top = np.zeros(edge_index.shape[1], dtype=bool)
    top[np.argsort(-scores, kind="stable")[:k]] = True
    with input_analysis(model):
        full, c = _probability(model, x, edge_index, node, None, fn)
        without, _ = _probability(model, x, edge_index[:, ~top], node, c, fn)
        alone, _ = _probability(model, x, edge_index[:, top], node, c, fn)
    return full - without, full - alone
