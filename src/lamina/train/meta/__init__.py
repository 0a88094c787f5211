"""Meta-learning: models that learn to adapt to a new task from a few examples.

- :class:`MAML` (second or first order), :class:`MetaSGD` (learned inner learning rates), and
  ANIL through ``adapt_only``: ``clone()`` gives a :class:`FastLearner` whose inner steps stay
  on the graph, so the outer loss trains the starting weights through them;
- :class:`Reptile`: first-order, moving the weights towards those adapted on each task.

Tasks come from :class:`lamina.data.FewShotTasks` (N-way K-shot classification) and
:class:`lamina.data.SinusoidTasks` (the MAML paper's regression problem); metric-based
few-shot learning uses :func:`lamina.functional.prototypical_loss`, and the models
:class:`lamina.models.MatchingNetwork` and :class:`lamina.models.RelationNetwork`;
:func:`episode_accuracy` gives the mean accuracy over test episodes with its 95% confidence
interval.

The package sits in ``lamina.train`` (a training procedure over any ``nn`` module, like the
other trainers here); the task samplers are data (``lamina.data``) and the loss a function
(``lamina.functional``), so models and data pipelines can use those without it.
"""

from lamina.train.meta.episodes import EpisodeAccuracy, episode_accuracy
from lamina.train.meta.learner import FastLearner
from lamina.train.meta.maml import MAML, MetaSGD
from lamina.train.meta.reptile import Reptile

__all__ = ["MAML", "EpisodeAccuracy", "FastLearner", "MetaSGD", "Reptile", "episode_accuracy"]
