"""Training loop for consistency models (:class:`lamina.models.ConsistencyModel`): consistency
training (CT) from data alone, or consistency distillation (CD) from a trained denoiser.

Each step takes one Adam step on the model's :meth:`~lamina.models.ConsistencyModel.ct_loss`
or :meth:`~lamina.models.ConsistencyModel.cd_loss`. Over the K = epochs x batches-per-epoch
steps of one ``fit``, the number of Karras times N(k) and the target network follow the
``curriculum`` (see :mod:`lamina.models.consistency`):

* ``'improved'`` (iCT, the default): N doubling from s0 = 10 to s1 = 1280, lognormal index
  sampling, pseudo-Huber metric, lambda = 1 / (t_{n+1} - t_n), and the target is the online
  network itself without gradient (mu = 0);
* ``'original'`` (CT of Song et al. 2023): N(k) growing from s0 = 2 to s1 = 150, uniform indices,
  squared L2 metric, lambda = 1, and a target network kept as the EMA of the online weights with
  decay mu(k) = exp(s0 ln(mu0) / N(k)).

With a ``denoiser`` the trainer distils instead: N = ``num_steps`` fixed (18), one ``solver``
step of the denoiser's ODE, the target an EMA with decay ``target_decay`` (default 0.95, as
the original CD; 0 uses the online network itself), and iCT's metric, weighting and lognormal
indices (which distil much faster than uniform ones on small problems). ``ema`` keeps, as for the other trainers, a
separate average of the weights for sampling.
"""

from __future__ import annotations

import copy
import numbers

from lamina.autograd import Tensor
from lamina.models.consistency import (
    ConsistencyModel,
    ct_discretization_steps,
    ct_target_decay,
    ict_discretization_steps,
)
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.train.diffusion import AdamLossTrainer
from lamina.train.generative import _check_epochs, _samples

__all__ = ["CURRICULA", "ConsistencyTrainer", "train_consistency"]

CURRICULA = ("improved", "original")
CURRICULUM_DEFAULTS = {
    "improved": {"s0": 10, "s1": 1280, "metric": "pseudo_huber", "weighting": "ict", "step_sampling": "lognormal"},
    "original": {"s0": 2, "s1": 150, "metric": "l2", "weighting": "uniform", "step_sampling": "uniform"},
    "distillation": {"metric": "pseudo_huber", "weighting": "ict", "step_sampling": "lognormal"},
}


class ConsistencyTrainer(AdamLossTrainer):
    """Adam steps on a :class:`~lamina.models.ConsistencyModel`'s CT or CD loss (module notes).

    ``curriculum``: 'improved' or 'original' (CT); ``s0``, ``s1``, ``mu0``, ``metric``,
    ``weighting`` and ``step_sampling`` override its settings (None: the curriculum's).
    ``denoiser``: distil from it instead (a Module ``D(x, sigma)`` such as an EDMPrecond, or a
    function of arrays) with ``num_steps`` times, ``solver`` ('heun' or 'euler') and the target
    decay ``target_decay``. ``lr``, ``ema``, ``clip_norm`` as :class:`AdamLossTrainer`'s.
    :attr:`num_steps_now` and :attr:`target_decay_now` hold the last step's N and mu.
    """

    model_class = ConsistencyModel

    def __init__(self, model: ConsistencyModel, lr: float = 1e-3, curriculum: str = "improved", denoiser=None,
                 num_steps: int = 18, solver: str = "heun", target_decay: float | None = None, s0: int | None = None,
                 s1: int | None = None, mu0: float = 0.9, metric: str | None = None, weighting: str | None = None,
                 step_sampling: str | None = None, ema: float | None = None, clip_norm: float | None = None,
                 callbacks=None):
        super().__init__(model, lr, ema, clip_norm, callbacks)
        if curriculum not in CURRICULA:
            raise ValueError(f"ConsistencyTrainer: curriculum must be one of {CURRICULA}, got {curriculum!r}")
        if target_decay is not None and (isinstance(target_decay, bool) or not isinstance(target_decay, numbers.Real)
                                         or not 0 <= target_decay < 1):
            raise ValueError(f"ConsistencyTrainer: target_decay must be None or a number in [0, 1), got "
                             f"{target_decay!r}")
        self.denoiser, self.solver = denoiser, solver
        self.curriculum = "distillation" if denoiser is not None else curriculum
        settings = dict(CURRICULUM_DEFAULTS[self.curriculum])
        for key, value in (("s0", s0), ("s1", s1), ("metric", metric), ("weighting", weighting),
                           ("step_sampling", step_sampling)):
            if value is not None:
                settings[key] = value
        self.settings = settings
        self.num_steps = positive_int(num_steps, "ConsistencyTrainer: num_steps")
        if self.num_steps < 2:
            raise ValueError(f"ConsistencyTrainer: num_steps must be >= 2, got {num_steps}")
        self.mu0 = mu0
        # None: the original curriculum's mu(k); otherwise a fixed decay (0: no separate target network)
        default_decay = {"improved": 0.0, "original": None, "distillation": 0.95}[self.curriculum]
        self.target_decay = default_decay if target_decay is None else float(target_decay)
        self.target: Module | None = None
        self.total_steps = 1
        self._start_iteration = 0
        self.num_steps_now: int | None = None
        self.target_decay_now: float | None = None

    def _first_call(self, sample: Tensor, labels) -> None:
        self.model(sample, self.model.T)

    def _schedule(self, k: int) -> tuple[int, float]:
        """N and the target decay mu at step ``k`` of this fit."""
        s = self.settings
        if self.curriculum == "distillation":
            return self.num_steps, self.target_decay
        if self.curriculum == "improved":
            n = ict_discretization_steps(k, self.total_steps, s["s0"], s["s1"])
        else:
            n = ct_discretization_steps(k, self.total_steps, s["s0"], s["s1"])
        mu = ct_target_decay(n, s["s0"], self.mu0) if self.target_decay is None else self.target_decay
        return n, mu

    def _update_target(self, mu: float) -> None:
        """theta^- <- mu theta^- + (1 - mu) theta (stop-gradient)."""
        if self.target is None:
            return
        online = dict(self.model.named_parameters())
        for name, param in self.target.named_parameters():
            param.data = mu * param.data + (1.0 - mu) * online[name].data

    def train_step(self, batch) -> dict[str, float]:
        """One Adam step on a batch of samples; returns its 'loss'."""
        x = batch[0] if isinstance(batch, tuple) else batch
        n, mu = self._schedule(self.iteration - self._start_iteration)
        self.num_steps_now, self.target_decay_now = n, mu
        s = self.settings
        target = self.target if mu > 0 else None
        if self.denoiser is None:
            loss = self.model.ct_loss(x, n, target=target, metric=s["metric"], weighting=s["weighting"],
                                      step_sampling=s["step_sampling"])
        else:
            loss = self.model.cd_loss(x, self.denoiser, n, target=target, solver=self.solver, metric=s["metric"],
                                      weighting=s["weighting"], step_sampling=s["step_sampling"])
        logs = self._step(loss)
        self._update_target(mu)
        return logs

    def fit(self, x, epochs: int = 1, batch_size: int = 64, seed: int | None = None) -> dict[str, list[float]]:
        """Train on the samples ``x`` (n, ...) for ``epochs`` epochs of shuffled batches (the
        curriculum spans them all); ``seed`` fixes their order, lamina's generator the indices
        and the noise. Returns :attr:`history`."""
        who = "train_consistency"
        x = _samples(x, who)
        epochs = _check_epochs(epochs, who)
        batch_size = positive_int(batch_size, f"{who}: batch_size")
        self._prepare(x, None)
        if self.target is None and self.target_decay != 0:
            self.target = copy.deepcopy(self.model)
            self.target.zero_grad()
        self.total_steps = epochs * -(-len(x) // batch_size)
        self._start_iteration = self.iteration
        return self._run(x, epochs, batch_size, seed)


def train_consistency(model: ConsistencyModel, x, epochs: int = 1, batch_size: int = 64, lr: float = 1e-3,
                      curriculum: str = "improved", denoiser=None, ema: float | None = None, seed: int | None = None,
                      callbacks=None, **options) -> dict[str, list[float]]:
    """Train a consistency model on ``x`` by CT (or CD with a ``denoiser``); ``options`` go to
    :class:`ConsistencyTrainer`. Returns ``{'loss': [...]}``, one mean per epoch; with ``ema``
    the averaged weights are copied into the model at the end, left in evaluation mode."""
    trainer = ConsistencyTrainer(model, lr=lr, curriculum=curriculum, denoiser=denoiser, ema=ema,
                                 callbacks=callbacks, **options)
    history = trainer.fit(x, epochs=epochs, batch_size=batch_size, seed=seed)
    if trainer.ema_model is not None and trainer.averaged.n_averaged:
        model.load_state_dict(trainer.ema_model.state_dict())
    return history
