"""Feature distillation: the student learns from the teacher's intermediate layers as well
as from its logits, and born-again self-distillation.

:class:`FeatureDistiller` is the :class:`~lamina.train.distillation.Distiller` (the logit
cost of Hinton et al., alpha = 0 for the labels alone) plus, for each pair (student layer,
teacher layer), a feature loss between their outputs for the same mini-batch:

    J = distillation cost + feature_weight * sum_k loss(a_k(s_k), t_k)

s_k and t_k the two layers' outputs (NHWC feature maps, or (batch, features)), collected
with forward hooks on the two models (the teacher's under ``no_grad`` in evaluation mode,
so none of it is trained), and a_k an adapter where the student's channels must be mapped
onto the teacher's: a 1x1 :class:`~lamina.nn.Conv2D` for a feature map, a
:class:`~lamina.nn.Dense` for a vector, without bias (FitNets' regressor). Adapters are
built on the first mini-batch, once the two sides' shapes are known, and added to the
optimizer as a parameter group of their own, so they are trained jointly with the student;
they are not part of the student (nor of its checkpoints): :attr:`FeatureDistiller.adapters`.

:func:`born_again` distils a model into a fresh one of the same architecture, generation
after generation (Furlanello et al. 2018).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.losses_feature_distill import (
    attention_transfer_loss,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_loss,
    similarity_preserving_loss,
)
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.module import Module
from lamina.train.distillation import Distiller, train_distillation
from lamina.train.history import History

__all__ = ["FEATURE_LOSSES", "FeatureDistiller", "born_again", "resolve_layer"]

FEATURE_LOSSES: dict[str, Callable] = {
    "hint": hint_loss,
    "attention": attention_transfer_loss,
    "nst": nst_loss,
    "rkd": rkd_loss,
    "pkt": pkt_loss,
    "similarity": similarity_preserving_loss,
}
"""The feature losses by name; ``'hint'`` (FitNets) compares the features element by element
and so is the one that needs adapters where the channel counts differ."""


def resolve_layer(model: Module, name: str, who: str) -> Module:
    """The sub-module of ``model`` with the dotted name ``name`` (as ``named_modules`` gives
    it), or a ValueError listing the closest names."""
    modules = {n: m for n, m in model.named_modules() if n}
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise ValueError(f"FeatureDistiller: the {who} has no layer named {name!r}{hint}; its layers are "
                     f"{list(modules)}")


def _pairs(layers) -> list[tuple[str, str]]:
    if isinstance(layers, dict):
        pairs = list(layers.items())
    elif isinstance(layers, str):
        pairs = [(layers, layers)]
    else:
        pairs = [(item, item) if isinstance(item, str) else tuple(item) for item in layers]
    if not pairs or any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
        raise ValueError("FeatureDistiller: layers must be a dict {student layer: teacher layer}, a list of "
                         f"(student layer, teacher layer) pairs or of names common to both; got {layers!r}")
    return pairs


class _Recorder:
    """Forward hooks keeping the last output of each of some modules while attached."""

    def __init__(self, modules: Sequence[Module]):
        self.modules = list(modules)
        self.outputs: list = [None] * len(self.modules)
        self.handles: list = []

    def __enter__(self) -> _Recorder:
        self.outputs = [None] * len(self.modules)
        for k, module in enumerate(self.modules):
            self.handles.append(module.register_forward_hook(self._hook(k)))
        return self

    def _hook(self, k: int):
        def record(module, inputs, output):
            self.outputs[k] = output
        return record

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class FeatureDistiller(Distiller):
    """Distil ``teacher`` into ``student`` through pairs of intermediate layers (see the module notes).

    ``layers``: ``{student layer: teacher layer}`` by dotted name (``named_modules``), a list
    of such pairs, or a list of names common to both. ``feature_loss``: a name of
    :data:`FEATURE_LOSSES` or a callable ``loss(student_features, teacher_features)`` (the
    student's adapted). ``feature_weight``: its weight (e.g. 1 for hints, 1 for attention
    transfer whose beta is in the loss). ``adapters``: ``'auto'`` (for ``'hint'``, an adapter
    where the last-axis sizes differ), True (one for every pair), or False (none; a mismatch
    is then a ShapeError). ``temperature`` and ``alpha`` are the logit cost's (alpha = 0: the
    labels alone); the other keywords are the :class:`~lamina.train.Trainer`'s. The reported
    ``loss`` is the whole cost J.
    """

    def __init__(self, student: Module, teacher: Module, optimizer, layers, feature_loss="hint",
                 feature_weight: float = 1.0, adapters="auto", temperature: float = 4.0, alpha: float = 0.9,
                 **trainer_options):
        super().__init__(student, teacher, optimizer, temperature=temperature, alpha=alpha, **trainer_options)
        self.pairs = _pairs(layers)
        self._student_layers = _Recorder([resolve_layer(student, s, "student") for s, _ in self.pairs])
        self._teacher_layers = _Recorder([resolve_layer(teacher, t, "teacher") for _, t in self.pairs])
        if isinstance(feature_loss, str):
            if feature_loss not in FEATURE_LOSSES:
                raise ValueError(f"FeatureDistiller: unknown feature_loss {feature_loss!r}; expected one of "
                                 f"{sorted(FEATURE_LOSSES)} or a callable")
            self.feature_loss_name, self.feature_loss = feature_loss, FEATURE_LOSSES[feature_loss]
        elif callable(feature_loss):
            self.feature_loss_name, self.feature_loss = getattr(feature_loss, "__name__", "loss"), feature_loss
        else:
            raise ValueError(f"FeatureDistiller: feature_loss must be a name or a callable, got {feature_loss!r}")
        if isinstance(feature_weight, bool) or not isinstance(feature_weight, (int, float)) or feature_weight < 0:
            raise ValueError(f"FeatureDistiller: feature_weight must be a number >= 0, got {feature_weight!r}")
        self.feature_weight = float(feature_weight)
        if adapters not in ("auto", True, False):
            raise ValueError(f"FeatureDistiller: adapters must be 'auto', True or False, got {adapters!r}")
        self.adapter_policy = adapters
        self.adapters: list[Module | None] | None = None

    # -- adapters ----------------------------------------------------------------
    def _needs_adapter(self, student_shape: tuple, teacher_shape: tuple) -> bool:
        if self.adapter_policy is True:
            return True
        return (self.adapter_policy == "auto" and self.feature_loss_name == "hint"
                and student_shape[-1] != teacher_shape[-1])

    def _build_adapters(self, student_features: list, teacher_features: list) -> None:
        adapters: list[Module | None] = []
        for (s_name, _), s, t in zip(self.pairs, student_features, teacher_features):
            if not self._needs_adapter(tuple(s.shape), tuple(t.shape)):
                adapters.append(None)
                continue
            if s.ndim == 4:
                adapter = Conv2D(t.shape[-1], 1, use_bias=False)
            elif s.ndim == 2:
                adapter = Dense(t.shape[-1], use_bias=False)
            else:
                raise ShapeError(f"FeatureDistiller: adapters map NHWC feature maps (1x1 convolution) or "
                                 f"(batch, features) vectors; the student's layer {s_name!r} gives shape "
                                 f"{tuple(s.shape)}")
            adapter.build(tuple(s.shape))
            adapter.to(s.dtype)
            adapters.append(adapter)
        self.adapters = adapters
        params = [p for adapter in adapters if adapter is not None for p in adapter.parameters()]
        if params:
            self.optimizer.add_param_group({"params": params})

    # -- the forward and the cost ------------------------------------------------
    def _forward(self, x, for_loss: bool):
        if not for_loss:
            return super()._forward(x, for_loss)
        with self._student_layers, self._teacher_layers:
            out, teacher_logits = super()._forward(x, for_loss)
        features = []
        for (s_name, t_name), s, t in zip(self.pairs, self._student_layers.outputs, self._teacher_layers.outputs):
            for who, name, value in (("student", s_name, s), ("teacher", t_name, t)):
                if not isinstance(value, Tensor):
                    raise ValueError(f"FeatureDistiller: the {who}'s layer {name!r} did not give one tensor in "
                                     f"the forward pass (got {type(value).__name__}); pick a layer that runs "
                                     "and returns a single tensor")
            features.append((s, t))
        return out, (teacher_logits, features)

    def feature_cost(self, features: list) -> Tensor:
        """feature_weight * sum_k loss(a_k(s_k), t_k) over the layer pairs (building the
        adapters on the first call)."""
        if self.adapters is None:
            self._build_adapters([s for s, _ in features], [t for _, t in features])
        total = None
        for (s, t), adapter in zip(features, self.adapters):
            if self.feature_loss is hint_loss:
                term = hint_loss(s, t.data, regressor=adapter)
            else:
                term = self.feature_loss(s if adapter is None else adapter(s), t.data)
            total = term if total is None else total + term
        return total * self.feature_weight

    def _cost(self, out, teacher_parts, y):
        teacher_logits, features = teacher_parts
        return self.loss(out, teacher_logits, y) + self.feature_cost(features)


def born_again(make_student: Callable[[], Module], teacher: Module, train, generations: int = 2,
               epochs: int = 1, batch_size: int = 32, lr: float = 1e-3, temperature: float = 4.0,
               alpha: float = 0.9, val=None, seed: int | None = None, metrics=("accuracy",),
               verbose: int = 0) -> list[tuple[Module, History]]:
    """Born-again networks: ``make_student()`` (a fresh model, usually of the teacher's
    architecture) is distilled from ``teacher`` with :func:`train_distillation`, then becomes
    the teacher of the next generation. Returns [(model, History)] for the ``generations``
    students in order; the last is the final model."""
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"born_again: generations must be a positive integer, got {generations!r}")
    results: list[tuple[Module, History]] = []
    for generation in range(generations):
        student = make_student()
        if not isinstance(student, Module) or student is teacher:
            raise ValueError(f"born_again: make_student must return a new Module each call; generation "
                             f"{generation + 1} got {student!r}")
        history = train_distillation(student, teacher, train, epochs=epochs, batch_size=batch_size, lr=lr,
                                     temperature=temperature, alpha=alpha, val=val,
                                     seed=None if seed is None else seed + generation, metrics=metrics,
                                     verbose=verbose)
        results.append((student, history))
        teacher = student
    return results
