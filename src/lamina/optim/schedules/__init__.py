r"""Learning-rate schedules: decay/annealing of :math:`\alpha` over training.

Course notes, "Learning rate schedules" (t counts steps of the schedule, from 0)::

    Step decay:          reduce the learning rate at fixed points
    Exponential decay:   alpha_t = alpha_0 * e^(-k t)
    Linear decay:        alpha_t = alpha_0 * (1 - t/T)          T: total iterations
    Cosine decay:        alpha_t = 1/2 * alpha_0 * (1 + cos(pi t/T))
    Inverse sqrt decay:  alpha_t = alpha_0 / sqrt(t)
    1/t decay:           alpha_t = alpha_0 / (1 + k t)

and "Generally, want to reduce learning rate once progress plateau":
:class:`ReduceOnPlateau`. :class:`Warmup` puts a linear ramp before any of them.
Beyond the notes: :class:`PolynomialDecay` (linear decay raised to a power),
:class:`CosineDecayRestarts` (SGDR's cosine cycles), :class:`OneCycle` (the 1cycle
policy's climb and anneal), and PyTorch's and Keras's others: :class:`PiecewiseConstant`,
:class:`LambdaSchedule`, :class:`MultiplicativeSchedule`, :class:`CyclicLR`,
:class:`ConstantFactor`, :class:`LinearFactor`, and the combinators :class:`SequentialSchedule`
(one schedule after another) and :class:`ChainedSchedule` (factors multiplied).

Every schedule is a pure formula ``schedule(t) -> lr``. Bound to an optimizer (the
``optimizer=`` argument or :meth:`Schedule.attach`) it sets ``optimizer.lr`` to
``schedule(0)`` at once, and each :meth:`Schedule.step` advances t by one and sets
``optimizer.lr = schedule(t)`` (the order of ``torch.optim.lr_scheduler``: step the
schedule after the optimizer). ``per`` (``'iteration'`` or ``'epoch'``) tells a
trainer when to call ``step()``. ``state_dict()``/``load_state_dict()`` save t.
"""

from lamina.optim.schedules.base import PERIODS, Schedule
from lamina.optim.schedules.cycles import CosineDecayRestarts, OneCycle, Warmup
from lamina.optim.schedules.decay import (
    CosineDecay,
    ExponentialDecay,
    InverseSqrtDecay,
    InverseTimeDecay,
    LinearDecay,
    PolynomialDecay,
    StepDecay,
)
from lamina.optim.schedules.more import (
    ChainedSchedule,
    ConstantFactor,
    CyclicLR,
    LambdaSchedule,
    LinearFactor,
    MultiplicativeSchedule,
    PiecewiseConstant,
    SequentialSchedule,
)
from lamina.optim.schedules.plateau import ReduceOnPlateau

__all__ = [
    "PERIODS", "CosineDecay", "CosineDecayRestarts", "ExponentialDecay", "InverseSqrtDecay", "InverseTimeDecay",
    "LinearDecay", "OneCycle", "PolynomialDecay", "ReduceOnPlateau", "Schedule", "StepDecay", "Warmup",
    "ChainedSchedule", "ConstantFactor", "CyclicLR", "LambdaSchedule", "LinearFactor", "MultiplicativeSchedule",
    "PiecewiseConstant", "SequentialSchedule",
]
