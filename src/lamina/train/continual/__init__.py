"""Continual learning: tasks learnt one after another without forgetting the earlier ones.

Strategies against catastrophic forgetting (:class:`EWC` and online EWC,
:class:`SynapticIntelligence`, :class:`MAS`, :class:`LwF`, :class:`ExperienceReplay` over a
reservoir :class:`ReplayBuffer`), the loop :func:`train_continual` with its accuracy matrix
and the GEM metrics (average accuracy, backward and forward transfer). The task sequences
come from :func:`lamina.data.permuted_tasks`, :func:`~lamina.data.split_tasks` and
:func:`~lamina.data.rotated_tasks`.
"""

from lamina.train.continual.learner import ContinualResult, evaluate_tasks, train_continual
from lamina.train.continual.metrics import average_accuracy, backward_transfer, forward_transfer
from lamina.train.continual.regularizers import (
    EWC,
    MAS,
    LwF,
    SynapticIntelligence,
    fisher_diagonal,
    output_sensitivity,
)
from lamina.train.continual.replay import ExperienceReplay, ReplayBuffer
from lamina.train.continual.strategy import ContinualCallback, ContinualStrategy, penalized_loss

__all__ = [
    "EWC", "MAS", "ContinualCallback", "ContinualResult", "ContinualStrategy", "ExperienceReplay", "LwF",
    "ReplayBuffer", "SynapticIntelligence", "average_accuracy", "backward_transfer", "evaluate_tasks",
    "fisher_diagonal", "forward_transfer", "output_sensitivity", "penalized_loss", "train_continual",
]
