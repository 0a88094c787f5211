"""Optimizers, learning-rate schedules, gradient clipping and cost-function regularizers.

Course notes, "Gradient Descent & optimization": an optimizer searches parameter space
for values that minimise the cost J, here by first-order updates from dJ/dw::

    from lamina.optim import Adam, CosineDecay, clip_grad_norm, l2

    opt = Adam(model.parameters(), lr=1e-3)
    schedule = CosineDecay(1e-3, total_steps=10_000, optimizer=opt)
    reg = l2(0.01)
    for x, y in batches:
        opt.zero_grad()
        cost = loss(model(x), y) + reg(model)
        cost.backward()
        clip_grad_norm(model, 5.0)
        opt.step()
        schedule.step()
"""

from lamina.optim import privacy, regularizers, schedules
from lamina.optim.adabelief import AdaBelief
from lamina.optim.adadelta import Adadelta
from lamina.optim.adafactor import Adafactor
from lamina.optim.adagrad import Adagrad
from lamina.optim.adam import Adam, AdamW
from lamina.optim.adam_mini import AdamMini
from lamina.optim.adamax import Adamax
from lamina.optim.adan import Adan
from lamina.optim.ademamix import AdEMAMix
from lamina.optim.adopt import ADOPT
from lamina.optim.agc import AGC, adaptive_clip_grad, unitwise_norm
from lamina.optim.asgd import ASGD
from lamina.optim.averaging import AveragedModel, update_batch_norm
from lamina.optim.clip import clip_grad_norm, clip_grad_value
from lamina.optim.d_adaptation import DAdaptAdam
from lamina.optim.dp import DPOptimizer
from lamina.optim.evolution import CMAES, PGPE, SNES, XNES, OpenAIES, evolve_module
from lamina.optim.ewa import ExponentialMovingAverage
from lamina.optim.galore import GaLore, optimizer_state_bytes
from lamina.optim.gradient_surgery import (
    SURGERY_METHODS,
    cagrad,
    combine_task_gradients,
    graddrop,
    imtl_g,
    mgda,
    min_norm_frank_wolfe,
    min_norm_two,
    pcgrad,
    project_conflicting,
)
from lamina.optim.hypergradient import HDSGD, HDAdam
from lamina.optim.kfac import EKFAC, KFAC, exact_fisher_block, kronecker_factors
from lamina.optim.lamb import LAMB, LARS
from lamina.optim.lbfgs import LBFGS
from lamina.optim.learned import LearnedOptimizer, LSTMOptimizer, preprocess_gradients
from lamina.optim.lion import Lion
from lamina.optim.lookahead import Lookahead
from lamina.optim.mars import MARS
from lamina.optim.muon import Muon
from lamina.optim.nadam import NAdam
from lamina.optim.optimizer import Optimizer
from lamina.optim.prodigy import Prodigy
from lamina.optim.radam import RAdam
from lamina.optim.regularizers import Regularizer, elastic_net, l1, l2
from lamina.optim.riemannian import RiemannianAdam, RiemannianSGD
from lamina.optim.rmsprop import RMSProp, RMSprop
from lamina.optim.rprop import Rprop
from lamina.optim.sam import SAM
from lamina.optim.schedule_free import AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree
from lamina.optim.schedules import (
    ChainedSchedule,
    ConstantFactor,
    CosineDecay,
    CosineDecayRestarts,
    CyclicLR,
    ExponentialDecay,
    InverseSqrtDecay,
    InverseTimeDecay,
    LambdaSchedule,
    LinearDecay,
    LinearFactor,
    MultiplicativeSchedule,
    OneCycle,
    PiecewiseConstant,
    PolynomialDecay,
    ReduceOnPlateau,
    Schedule,
    SequentialSchedule,
    StepDecay,
    Warmup,
)
from lamina.optim.sgd import SGD
from lamina.optim.shampoo import Shampoo
from lamina.optim.soap import SOAP
from lamina.optim.sophia import SophiaG
from lamina.optim.sparse_adam import SparseAdam

__all__ = [
    "SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "CosineDecay", "CosineDecayRestarts", "ExponentialDecay",
    "ExponentialMovingAverage", "InverseSqrtDecay", "InverseTimeDecay", "LinearDecay", "NAdam", "OneCycle",
    "Optimizer", "PolynomialDecay", "RAdam", "RMSProp", "RMSprop", "ReduceOnPlateau", "Regularizer",
    "RiemannianAdam", "RiemannianSGD", "Schedule",
    "StepDecay", "Warmup", "AGC", "adaptive_clip_grad", "unitwise_norm",
    "clip_grad_norm", "clip_grad_value", "elastic_net", "l1", "l2", "regularizers",
    "schedules", "AveragedModel", "update_batch_norm", "LBFGS", "Lion", "Lookahead", "Rprop", "SAM",
    "ChainedSchedule", "ConstantFactor", "CyclicLR", "LambdaSchedule", "LinearFactor", "MultiplicativeSchedule",
    "PiecewiseConstant", "SequentialSchedule", "DPOptimizer", "privacy",
    "ASGD", "Adafactor", "LAMB", "LARS", "Muon", "SparseAdam",
    "AdamWScheduleFree", "DAdaptAdam", "Prodigy", "RAdamScheduleFree", "SGDScheduleFree",
    "SOAP", "AdaBelief", "AdEMAMix", "Adan", "Shampoo", "SophiaG",
    "EKFAC", "KFAC", "exact_fisher_block", "kronecker_factors",
    "HDAdam", "HDSGD", "LSTMOptimizer", "LearnedOptimizer", "preprocess_gradients",
]
__all__ += ["SURGERY_METHODS", "cagrad", "combine_task_gradients", "graddrop", "imtl_g", "mgda",
            "min_norm_frank_wolfe", "min_norm_two", "pcgrad", "project_conflicting"]  # multi-task gradient surgery
__all__ += ["GaLore", "optimizer_state_bytes"]  # gradient low-rank projection (galore)
__all__ += ["CMAES", "OpenAIES", "PGPE", "SNES", "XNES", "evolution", "evolve_module"]  # evolution strategies
__all__ += ["ADOPT", "AdamMini", "MARS"]  # recent Adam variants
