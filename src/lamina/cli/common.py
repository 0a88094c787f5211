"""What the commands share: the optimizer and schedule choices and their builders."""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Iterator

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adamax", "nadam", "adadelta",
              "radam", "lion", "adafactor", "asgd", "lamb", "lars", "sgd_schedulefree", "adamw_schedulefree",
              "radam_schedulefree", "prodigy", "dadapt_adam", "adabelief", "adan", "ademamix")
SCHEDULES = ("none", "cosine", "step", "exponential", "linear", "polynomial", "inverse_time", "cosine_restarts",
             "onecycle", "cyclic")


def _argument_type(convert, accept, expected: str):
    """An argparse type: ``convert(text)`` when ``accept`` takes it, else a usage error that
    says what was ``expected``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


class ChoicesFrom:
    """An argument's ``choices``, the tuple ``name`` of ``module``, read when first needed
    (checking a value, or the command's own help), so that building the whole parser for
    ``lamina --help`` does not import the module that defines them."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def _values(self) -> tuple:
        return getattr(importlib.import_module(self.module), self.name)

    def __contains__(self, value) -> bool:
        return value in self._values()

    def __iter__(self) -> Iterator:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


positive_int = _argument_type(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _argument_type(int, lambda v: v >= 0, "an integer >= 0")
positive_number = _argument_type(float, lambda v: 0 < v < math.inf, "a positive finite number")
unit_interval = _argument_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
probability = _argument_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0):
    from lamina import optim

    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name in ("momentum", "nesterov"):
        return optim.SGD(params, lr=lr, momentum=0.9, nesterov=name == "nesterov", weight_decay=weight_decay)
    if name == "rmsprop":
        return optim.RMSProp(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adamax":
        return optim.Adamax(params, lr=lr, weight_decay=weight_decay)
    if name == "nadam":
        return optim.NAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "adadelta":
        return optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    if name == "radam":
        return optim.RAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "lion":
        return optim.Lion(params, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        return optim.Adafactor(params, lr=lr, weight_decay=weight_decay)
    if name == "asgd":
        return optim.ASGD(params, lr=lr, weight_decay=weight_decay)
    if name == "lamb":
        return optim.LAMB(params, lr=lr, weight_decay=weight_decay)
    if name == "lars":
        return optim.LARS(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd_schedulefree":
        return optim.SGDScheduleFree(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw_schedulefree":
        return optim.AdamWScheduleFree(params, lr=lr, weight_decay=weight_decay)
    if name == "radam_schedulefree":
        return optim.RAdamScheduleFree(params, lr=lr, weight_decay=weight_decay)
    if name == "prodigy":
        return optim.Prodigy(params, lr=lr, weight_decay=weight_decay)
    if name == "dadapt_adam":
        return optim.DAdaptAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "adabelief":
        return optim.AdaBelief(params, lr=lr, weight_decay=weight_decay)
    if name == "adan":
        return optim.Adan(params, lr=lr, weight_decay=weight_decay)
    if name == "ademamix":
        return optim.AdEMAMix(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def build_schedule(name: str, optimizer, lr: float, total_iterations: int, warmup: int = 0):
    """The schedule ``name`` over the iterations after a linear warm-up of ``warmup`` of them."""
    from lamina.optim import schedules

    if warmup:
        if warmup < 0 or warmup >= total_iterations:
            raise ValueError(f"--warmup must lie in [0, {total_iterations}) (the run's iterations), got {warmup}")
        if name == "none":
            raise ValueError("--warmup needs a schedule to warm up into; choose one with --schedule")
        return schedules.Warmup(build_schedule(name, None, lr, total_iterations - warmup), warmup,
                                optimizer=optimizer)
    if name == "none":
        return None
    if name == "cosine":
        return schedules.CosineDecay(lr, total_iterations, optimizer=optimizer)
    if name == "linear":
        return schedules.LinearDecay(lr, total_iterations, optimizer=optimizer)
    if name == "exponential":
        return schedules.ExponentialDecay(lr, 3.0 / max(total_iterations, 1), optimizer=optimizer)
    if name == "step":
        return schedules.StepDecay(lr, step_size=max(total_iterations // 3, 1), gamma=0.1, optimizer=optimizer,
                                   per="iteration")
    if name == "polynomial":
        return schedules.PolynomialDecay(lr, total_iterations, power=2.0, optimizer=optimizer)
    if name == "cosine_restarts":
        # three cycles, each twice as long as the one before (1/7, 2/7, 4/7 of the run)
        return schedules.CosineDecayRestarts(lr, first_period=max(math.ceil(total_iterations / 7), 1), t_mult=2,
                                             optimizer=optimizer)
    if name == "inverse_time":
        # alpha_0 / (1 + kt) with k chosen so that the run ends at a twentieth of --lr
        return schedules.InverseTimeDecay(lr, 19.0 / max(total_iterations - 1, 1), optimizer=optimizer)
    if name == "onecycle":
        return schedules.OneCycle(lr, total_iterations, optimizer=optimizer)
    if name == "cyclic":
        # four triangles between --lr / 10 and --lr, each half as tall as the one before
        half = max(total_iterations // 8, 1)
        return schedules.CyclicLR(lr / 10, lr, step_size_up=half, mode="triangular2", optimizer=optimizer)
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")
