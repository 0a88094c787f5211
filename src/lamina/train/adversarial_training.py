"""Training for robustness to small input perturbations.

Each objective is a callable ``objective(model, x, y) -> (cost, logits)``, the cost a scalar
Tensor to minimise over the weights; :class:`AdversarialTrainer` is the
:class:`~lamina.train.Trainer` that uses one in place of a loss. The attacks inside run the
model in evaluation mode with its weights out of the graph (:mod:`lamina.analysis.attacks`).

* :class:`PGDAdversarialTraining` (Madry et al. 2018): min_theta E max_{|d| <= eps} CE(f(x + d), y),
  the inner maximum approximated by PGD.
* :class:`FastAdversarialTraining` (Wong, Rice and Kolter 2020): the same with one FGSM step
  of size 1.25 eps from a uniform random start.
* :class:`FreeAdversarialTraining` (Shafahi et al. 2019): each mini-batch is replayed m
  times; every replay's one backward pass gives both the weights' gradient (the optimizer
  steps) and the input's, which moves a perturbation d <- clip(d + eps sign(dJ/dx), -eps, eps)
  kept from replay to replay and batch to batch: PGD-like training for the cost of m steps.
* :class:`TRADESLoss` (Zhang et al. 2019): CE(f(x), y) + beta KL(p(x) || p(x')), x' maximising
  the KL term by PGD from x + 0.001 N(0, I); beta = 6.
* :class:`MARTLoss` (Wang et al. 2020): BCE(p(x'), y) + beta KL(p(x) || p(x')) (1 - p_y(x)),
  with the boosted cross-entropy BCE = CE(p(x'), y) - log(1 - max_{k != y} p_k(x')) and x'
  from PGD on the cross-entropy.
* :class:`IBPTraining` (Gowal et al. 2018): kappa CE(z(x), y) + (1 - kappa) CE(z_hat(eps), y),
  z_hat the IBP upper bounds of z_k - z_y over the eps-box
  (:func:`lamina.analysis.bounds.worst_case_margins`); eps ramps linearly from 0 and kappa
  from 1 to ``kappa`` after a warm-up.
* :class:`GaussianAugmentation`: CE(f(x + N(0, sigma^2 I)), y), the base classifier's
  training for randomized smoothing (:class:`lamina.analysis.SmoothedClassifier`).

:func:`trades_loss` and :func:`mart_loss` are the two costs on given logits.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.analysis.adversarial import _check_clip, _check_radius
from lamina.analysis.attacks import _check_norm, _check_steps, _project, pgd
from lamina.analysis.bounds import input_box, worst_case_margins
from lamina.analysis.saliency import class_indices, gradient_wrt_input, input_analysis, model_logits
from lamina.autograd import Tensor, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module
from lamina.train.trainer import Trainer, _output_layer

__all__ = ["AdversarialTrainer", "FastAdversarialTraining", "FreeAdversarialTraining", "GaussianAugmentation",
           "IBPTraining", "MARTLoss", "PGDAdversarialTraining", "TRADESLoss", "mart_loss", "trades_loss"]


def _one_hot(labels, logits: Tensor) -> Tensor:
    xp = backend.xp
    mask = xp.zeros(logits.shape, dtype=logits.dtype)
    mask[xp.arange(len(labels)), labels] = 1
    return tensor(mask, dtype=logits.dtype)


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row from log-probabilities."""
    return (F.exp(log_p) * (log_p - log_q)).sum(axis=1)


def _check_beta(beta, fn: str) -> float:
    return _check_radius(beta, fn, "beta", allow_zero=True)


def trades_loss(clean_logits: Tensor, adversarial_logits: Tensor, labels, beta: float = 6.0) -> Tensor:
    """(1/n) sum_i [CE(z_i, y_i) + beta KL(softmax(z_i) || softmax(z'_i))]."""
    beta = _check_beta(beta, "trades_loss")
    labels = class_indices(labels, clean_logits.data, "trades_loss")
    natural = F.categorical_cross_entropy(clean_logits, labels, from_logits=True)
    robust = _kl_rows(F.log_softmax(clean_logits, axis=-1), F.log_softmax(adversarial_logits, axis=-1)).mean()
    return natural + beta * robust


def mart_loss(clean_logits: Tensor, adversarial_logits: Tensor, labels, beta: float = 6.0) -> Tensor:
    """(1/n) sum_i [CE(z'_i, y_i) - log(1.0001 - max_{k != y} p'_ik + 1e-12)
    + beta KL(p_i || p'_i) (1 - p_{i y_i})], p = softmax(z), p' = softmax(z'); the small
    constants (1.0001, and 1e-12 inside the logarithms) are those of the published code."""
    beta = _check_beta(beta, "mart_loss")
    labels = class_indices(labels, clean_logits.data, "mart_loss")
    own = _one_hot(labels, adversarial_logits)
    adversarial_p = F.softmax(adversarial_logits, axis=-1)
    others = adversarial_p.data.copy()
    others[backend.xp.arange(len(labels)), labels] = -1
    rival = _one_hot(others.argmax(axis=1), adversarial_logits)
    boosted = (F.categorical_cross_entropy(adversarial_logits, labels, from_logits=True)
               - F.log(1.0001 - (adversarial_p * rival).sum(axis=1) + 1e-12).mean())
    clean_p = F.softmax(clean_logits, axis=-1)
    kl = (clean_p * (F.log(clean_p) - F.log(adversarial_p + 1e-12))).sum(axis=1)
    weight = 1.0000001 - (clean_p * own).sum(axis=1)
    return boosted + beta * (kl * weight).mean()


class _Objective:
    """What the objectives share: the radius, the attack's steps and the random generator."""

    name = "objective"

    def __init__(self, epsilon: float, step_size: float | None, steps: int, clip, seed: int | None):
        self.epsilon = _check_radius(epsilon, self.name, "epsilon", allow_zero=True)
        self.steps = _check_steps(steps, self.name)
        default = 2.5 * self.epsilon / self.steps
        self.step_size = _check_radius(default if step_size is None else step_size, self.name, "step_size",
                                       allow_zero=True)
        self.clip = _check_clip(clip, self.name)
        self.rng = backend.xp.random.default_rng(seed)

    @staticmethod
    def _inputs(x, fn: str):
        data = backend.xp.asarray(x.data if isinstance(x, Tensor) else x)
        if data.dtype.kind != "f":
            data = data.astype(backend.get_default_dtype())
        if data.ndim < 2:
            raise ShapeError(f"{fn}: inputs of shape {data.shape}; expected (batch, features...)")
        return data

    def _labels(self, logits: Tensor, y):
        if y is None:
            raise ValueError(f"{self.name}: labels are required")
        return class_indices(backend.xp.asarray(y), logits.data, self.name)


class PGDAdversarialTraining(_Objective):
    """CE(f(x'), y) with x' = PGD(x) of ``steps`` steps of size ``step_size`` (default
    2.5 eps / steps) within ``epsilon`` in ``norm``, from a random start."""

    name = "PGDAdversarialTraining"

    def __init__(self, epsilon: float, step_size: float | None = None, steps: int = 7, norm: str = "linf",
                 clip=(0.0, 1.0), seed: int | None = None):
        super().__init__(epsilon, step_size, steps, clip, seed)
        self.norm = _check_norm(norm, self.name)

    def attack(self, model: Module, x, labels):
        start = backend.xp.zeros_like(x) if self.epsilon == 0 else True
        return pgd(model, x, labels, self.epsilon, self.step_size, self.steps, self.norm, random_start=start,
                   clip=self.clip, seed=int(self.rng.integers(2**31)))

    def __call__(self, model: Module, x, y):
        x = self._inputs(x, self.name)
        labels = backend.xp.asarray(y)
        adversarial = self.attack(model, x, labels)
        logits = model_logits(model, tensor(adversarial, dtype=x.dtype))
        return F.categorical_cross_entropy(logits, self._labels(logits, labels), from_logits=True), logits


class FastAdversarialTraining(PGDAdversarialTraining):
    """"Fast is better than free": one L-inf FGSM step of ``step_size`` (default 1.25 eps)
    from a uniform random point of the eps-ball, then CE on it."""

    name = "FastAdversarialTraining"

    def __init__(self, epsilon: float, step_size: float | None = None, clip=(0.0, 1.0), seed: int | None = None):
        step_size = 1.25 * epsilon if step_size is None and isinstance(epsilon, (int, float)) else step_size
        super().__init__(epsilon, step_size, steps=1, norm="linf", clip=clip, seed=seed)


class FreeAdversarialTraining:
    """CE(f(clip(x + d)), y) with the perturbation d updated after every backward pass from
    the input's gradient (see the module notes); :class:`AdversarialTrainer` replays each
    mini-batch ``replays`` times, stepping the optimizer after each. Train for 1/m of the
    usual epochs for the usual cost."""

    name = "FreeAdversarialTraining"

    def __init__(self, epsilon: float, replays: int = 4, clip=(0.0, 1.0)):
        self.epsilon = _check_radius(epsilon, self.name, "epsilon", allow_zero=True)
        self.replays = _check_steps(replays, self.name, "replays")
        self.clip = _check_clip(clip, self.name)
        self.perturbation = None
        self._inputs_used: Tensor | None = None
        self._clean = None

    def __call__(self, model: Module, x, y):
        x = _Objective._inputs(x, self.name)
        if self.perturbation is None or self.perturbation.shape != x.shape:
            self.perturbation = backend.xp.zeros_like(x)  # a batch of another size starts afresh
        self._clean = x
        adversarial = _project(x + self.perturbation, x, self.epsilon, "linf", self.clip)
        self._inputs_used = tensor(adversarial, requires_grad=True, dtype=x.dtype)
        logits = model_logits(model, self._inputs_used)
        labels = class_indices(backend.xp.asarray(y), logits.data, self.name)
        return F.categorical_cross_entropy(logits, labels, from_logits=True), logits

    def after_backward(self) -> None:
        """d <- clip(d + eps sign(dJ/dx), -eps, eps), from the last backward pass."""
        grad = self._inputs_used.grad
        if grad is None:
            return
        step = self.perturbation + (self.epsilon * backend.xp.sign(grad)).astype(self.perturbation.dtype)
        self.perturbation = backend.xp.clip(step, -self.epsilon, self.epsilon)
        self._inputs_used = None


class _PairedObjective(_Objective):
    """TRADES and MART: an attack on x, then a cost of the clean and adversarial logits."""

    def __init__(self, beta: float, epsilon: float, step_size: float | None, steps: int, clip, seed: int | None):
        super().__init__(epsilon, step_size, steps, clip, seed)
        self.beta = _check_beta(beta, self.name)

    def attack_objective(self, logits: Tensor, clean_log_p: Tensor, labels) -> Tensor:
        raise NotImplementedError

    def attack(self, model: Module, x, labels):
        """L-inf PGD from x + 0.001 N(0, I) on ``attack_objective``."""
        xp = backend.xp
        with input_analysis(model):
            clean_log_p = F.log_softmax(model_logits(model, tensor(x, dtype=x.dtype)), axis=-1).detach()
            adversarial = x + (0.001 * self.rng.standard_normal(x.shape)).astype(x.dtype)
            adversarial = _project(adversarial, x, self.epsilon, "linf", self.clip)
            for _ in range(self.steps):
                grad, _ = gradient_wrt_input(model, adversarial,
                                             lambda z: self.attack_objective(z, clean_log_p, labels), self.name)
                adversarial = adversarial + (self.step_size * xp.sign(grad)).astype(x.dtype)
                adversarial = _project(adversarial, x, self.epsilon, "linf", self.clip)
        return adversarial

    def cost(self, clean_logits: Tensor, adversarial_logits: Tensor, labels) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: Module, x, y):
        x = self._inputs(x, self.name)
        clean_logits = model_logits(model, tensor(x, dtype=x.dtype))
        labels = self._labels(clean_logits, y)
        adversarial = self.attack(model, x, labels)
        adversarial_logits = model_logits(model, tensor(adversarial, dtype=x.dtype))
        return self.cost(clean_logits, adversarial_logits, labels), clean_logits


class TRADESLoss(_PairedObjective):
    """:func:`trades_loss` with x' from ``steps`` L-inf steps of ``step_size`` up
    sum_i KL(p(x_i) || p(x'_i)) within ``epsilon`` (defaults as the published CIFAR-10
    settings: 10 steps of 0.007 within 0.031)."""

    name = "TRADESLoss"

    def __init__(self, beta: float = 6.0, epsilon: float = 0.031, step_size: float | None = 0.007, steps: int = 10,
                 clip=(0.0, 1.0), seed: int | None = None):
        super().__init__(beta, epsilon, step_size, steps, clip, seed)

    def attack_objective(self, logits: Tensor, clean_log_p: Tensor, labels) -> Tensor:
        return _kl_rows(clean_log_p, F.log_softmax(logits, axis=-1)).sum()

    def cost(self, clean_logits: Tensor, adversarial_logits: Tensor, labels) -> Tensor:
        return trades_loss(clean_logits, adversarial_logits, labels, self.beta)


class MARTLoss(_PairedObjective):
    """:func:`mart_loss` with x' from ``steps`` L-inf steps of ``step_size`` up the
    cross-entropy within ``epsilon``."""

    name = "MARTLoss"

    def __init__(self, beta: float = 6.0, epsilon: float = 0.031, step_size: float | None = 0.007, steps: int = 10,
                 clip=(0.0, 1.0), seed: int | None = None):
        super().__init__(beta, epsilon, step_size, steps, clip, seed)

    def attack_objective(self, logits: Tensor, clean_log_p: Tensor, labels) -> Tensor:
        return F.categorical_cross_entropy(logits, labels, from_logits=True, reduction="sum")

    def cost(self, clean_logits: Tensor, adversarial_logits: Tensor, labels) -> Tensor:
        return mart_loss(clean_logits, adversarial_logits, labels, self.beta)


class IBPTraining:
    """kappa CE(z(x), y) + (1 - kappa) CE(z_hat(eps_t), y) (see the module notes). Counting
    calls (optimizer steps) t: eps_t = 0 and kappa_t = 1 for ``warmup`` steps, then both move
    linearly over ``ramp`` steps to ``epsilon`` and ``kappa``. The model: supported by
    :func:`lamina.analysis.interval_bounds` (no batch norm in training mode), ending in a
    Dense layer without activation."""

    name = "IBPTraining"

    def __init__(self, epsilon: float, kappa: float = 0.5, warmup: int = 0, ramp: int = 1000, clip=(0.0, 1.0)):
        self.epsilon = _check_radius(epsilon, self.name, "epsilon", allow_zero=True)
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 <= kappa <= 1:
            raise ValueError(f"{self.name}: kappa must lie in [0, 1], got {kappa!r}")
        self.kappa = float(kappa)
        for what, value in (("warmup", warmup), ("ramp", ramp)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{self.name}: {what} must be a non-negative int, got {value!r}")
        self.warmup, self.ramp = warmup, ramp
        self.clip = _check_clip(clip, self.name)
        self.step = 0

    def schedule(self, step: int | None = None) -> tuple[float, float]:
        """(eps_t, kappa_t) at step t (default: the current one)."""
        step = self.step if step is None else step
        progress = min(max(step - self.warmup, 0) / self.ramp, 1.0) if self.ramp else float(step >= self.warmup)
        return self.epsilon * progress, 1.0 + (self.kappa - 1.0) * progress

    def __call__(self, model: Module, x, y):
        x = _Objective._inputs(x, self.name)
        epsilon, kappa = self.schedule()
        self.step += 1
        logits = model_logits(model, tensor(x, dtype=x.dtype))
        labels = class_indices(backend.xp.asarray(y), logits.data, self.name)
        natural = F.categorical_cross_entropy(logits, labels, from_logits=True)
        if kappa == 1.0:
            return natural, logits
        lower, upper = input_box(x, epsilon, self.clip)
        worst = worst_case_margins(model, lower, upper, labels)
        robust = F.categorical_cross_entropy(worst, labels, from_logits=True)
        return kappa * natural + (1.0 - kappa) * robust, logits


class GaussianAugmentation:
    """CE(f(x + d), y), d ~ N(0, sigma^2 I) drawn anew for every batch (not clipped)."""

    name = "GaussianAugmentation"

    def __init__(self, sigma: float, seed: int | None = None):
        self.sigma = _check_radius(sigma, self.name, "sigma", allow_zero=True)
        self.rng = backend.xp.random.default_rng(seed)

    def __call__(self, model: Module, x, y):
        x = _Objective._inputs(x, self.name)
        noisy = x + (self.sigma * self.rng.standard_normal(x.shape)).astype(x.dtype)
        logits = model_logits(model, tensor(noisy, dtype=x.dtype))
        labels = class_indices(backend.xp.asarray(y), logits.data, self.name)
        return F.categorical_cross_entropy(logits, labels, from_logits=True), logits


def logits_cross_entropy(logits: Tensor, labels, from_logits: bool = True) -> Tensor:
    """The mean cross-entropy of logits (a final Softmax layer is left out by the trainer)."""
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


class AdversarialTrainer(Trainer):
    """A :class:`~lamina.train.Trainer` whose training cost is ``objective(model, x, y)``
    (one of this module's objectives, or any callable returning (cost, logits)); validation
    and ``evaluate`` use ``loss`` (default: the cross-entropy of the logits, a final Softmax
    layer left out) on clean inputs. Sample and class weights are not taken."""

    def __init__(self, model: Module, objective, optimizer, loss=logits_cross_entropy,
                 metrics=("accuracy",), callbacks=(), schedule=None, verbose: int = 1,
                 clip_norm: float | None = None, clip_value: float | None = None, accumulate: int = 1):
        if not callable(objective):
            raise TypeError(f"AdversarialTrainer: objective must be callable as objective(model, x, y) -> "
                            f"(cost, logits), got {type(objective).__name__}")
        super().__init__(model, loss, optimizer, metrics=metrics, callbacks=callbacks, schedule=schedule,
                         verbose=verbose, clip_norm=clip_norm, clip_value=clip_value, accumulate=accumulate)
        if getattr(objective, "replays", 1) > 1 and accumulate != 1:
            raise ValueError(f"AdversarialTrainer: {type(objective).__name__} steps the optimizer on every replay "
                             f"of a mini-batch; it cannot accumulate gradients (accumulate={accumulate})")
        self.objective = objective

    def _fused_softmax(self) -> bool:
        """A model ending in Softmax is run without it for the cost: the objectives take logits."""
        return type(_output_layer(self.model)).__name__ == "Softmax"

    def _backward(self, x, y, weight: float, weights=None) -> tuple[float, object]:
        if weights is not None:
            raise ValueError("AdversarialTrainer: its cost is the objective's, and takes no sample or class weights; "
                             "give (x, y) data without weights")
        replays = getattr(self.objective, "replays", 1)
        for replay in range(replays):
            if replay:                       # the previous replay's step; the last one is the Trainer's
                self._update([(x, y, None)])
                self.optimizer.zero_grad()
            cost, logits = self.objective(self.model, x, y)
            if weight == 1.0:
                cost.backward()
            else:
                cost.backward(backend.xp.full_like(cost.data, weight))
            if hasattr(self.objective, "after_backward"):
                self.objective.after_backward()
        return float(cost.item()), logits.data
