"""Model merging: one model from several fine-tuned models of the same architecture, with no
further training (what mergekit does for language models).

Every function takes Modules or state dicts (name -> array) and returns a new state dict;
load it with ``model.load_state_dict(merged)``. The models must have the same keys and shapes
(the error names the first key that differs).

* :func:`uniform_soup`, :func:`greedy_soup`: model soups (Wortsman et al. 2022), averages of
  models fine-tuned from one initialisation;
* :func:`task_vectors`, :func:`task_arithmetic`: tau = theta_finetuned - theta_base added to the
  base with a scale, negative to remove a task (Ilharco et al. 2023);
* :func:`ties_merge`: trim, elect sign, disjoint mean (Yadav et al. 2023);
* :func:`dare`: random drop and rescale of task vectors, then task arithmetic or TIES
  (Yu et al. 2024; mergekit's dare_linear and dare_ties);
* :func:`slerp`: spherical interpolation of two models, tensor by tensor;
* :func:`fisher_merge` with :func:`diagonal_fisher`: the Fisher-weighted average (Matena &
  Raffel 2022);
* :func:`merge_models`: one front for all of them by name.

Buffers (batch-norm running statistics; recognised in Module inputs only, a plain state dict's
float entries all count as weights) are never passed through a method's rule, which would
make no sense for variances (a trimmed or negated variance): they are averaged — the models'
(weighted) mean for soups and Fisher merging, the fine-tuned models' mean for the task-vector
methods, the linear interpolation for SLERP. That is only an estimate of the merged network's
statistics; recompute them on data with :func:`lamina.optim.update_batch_norm` after loading.
Non-float entries (integer counters) are copied from the first model (the base), after
checking that all models hold the same values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from lamina.nn.merging.fisher import diagonal_fisher, fisher_merge
from lamina.nn.merging.soups import greedy_soup, slerp, uniform_soup
from lamina.nn.merging.states import ModelLike
from lamina.nn.merging.task_vectors import (
    dare,
    drop_and_rescale,
    elect_and_disjoint_mean,
    task_arithmetic,
    task_vectors,
    ties_merge,
    trim_to_top,
)

__all__ = [
    "METHODS", "dare", "diagonal_fisher", "drop_and_rescale", "elect_and_disjoint_mean", "fisher_merge",
    "greedy_soup", "merge_models", "slerp", "task_arithmetic", "task_vectors", "ties_merge", "trim_to_top",
    "uniform_soup",
]

# Names merge_models accepts; those after the soups need ``base``.
METHODS = ("uniform", "greedy", "slerp", "fisher", "task_arithmetic", "ties", "dare_linear", "dare_ties")


def merge_models(models: Sequence[ModelLike], method: str = "uniform", base: ModelLike | None = None,
                 **options) -> OrderedDict:
    """Merge ``models`` by ``method`` (one of :data:`METHODS`); ``options`` go to the function:

    ======================  =============================================================
    ``"uniform"``           :func:`uniform_soup` (``weights``)
    ``"greedy"``            :func:`greedy_soup` (``evaluate``, ``scores``)
    ``"slerp"``             :func:`slerp` of the two models (``t``)
    ``"fisher"``            :func:`fisher_merge` (``fishers``, ``weights``, ``epsilon``)
    ``"task_arithmetic"``   :func:`task_arithmetic` of the models' task vectors from ``base`` (``scaling``)
    ``"ties"``              :func:`ties_merge` from ``base`` (``density``, ``scaling``)
    ``"dare_linear"``       :func:`dare` from ``base``, combined linearly (``drop_rate``, ``seed``, ``scaling``)
    ``"dare_ties"``         :func:`dare` from ``base``, combined by TIES (``drop_rate``, ``seed``, ``scaling``)
    ======================  =============================================================

    Returns the merged state dict."""
    who = "merge_models"
    if method not in METHODS:
        raise ValueError(f"{who}: unknown method {method!r}; expected one of {METHODS}")
    models = list(models)
    needs_base = METHODS.index(method) >= METHODS.index("task_arithmetic")
    if needs_base and base is None:
        raise ValueError(f"{who}: method {method!r} merges task vectors and needs the base model (base=...)")
    if not needs_base and base is not None:
        raise ValueError(f"{who}: method {method!r} takes no base model")
    if method == "uniform":
        return uniform_soup(models, **options)
    if method == "greedy":
        return greedy_soup(models, **options)
    if method == "slerp":
        if len(models) != 2:
            raise ValueError(f"{who}: slerp interpolates two models, got {len(models)}")
        return slerp(models[0], models[1], **options)
    if method == "fisher":
        return fisher_merge(models, **options)
    if method == "task_arithmetic":
        return task_arithmetic(base, task_vectors(base, models), **options)
    if method == "ties":
        return ties_merge(base, models, **options)
    return dare(base, models, combine=method.removeprefix("dare_"), **options)
