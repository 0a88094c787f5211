"""``Optimizer``: the base of every update rule.

An optimizer holds the parameters it trains in *parameter groups* (PyTorch's idea: one
group per set of hyperparameters), a per-parameter *state* (momentum buffers, running
averages of squared gradients...) and the number of ``step()`` calls made. Each step
reads ``p.grad`` (dJ/dw, left by backward) and changes ``p.data`` **in place**, so every
reference to the parameter's array sees the new value and no array is allocated per
step: the arithmetic runs through in-place ufuncs (``out=``) into a small scratch
workspace that the optimizer reuses across parameters and steps, and the running sums
(y = beta y + a x, w = w - lr d) through BLAS's one-pass axpy and scal (:mod:`lamina.optim.inplace`).

``p.grad`` is never written: weight decay adds ``weight_decay * w`` to a scratch copy
of the gradient, as ``torch.optim`` does, so the gradient the user reads after
``step()`` is the one backward produced.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from lamina import backend, parallel
from lamina.autograd import Tensor
from lamina.autograd.graph import mark_modified
from lamina.nn.module import Module
from lamina.optim.inplace import axpy

#: What an optimizer accepts as ``params``: a module, tensors, or parameter groups.
ParamsLike = Module | Iterable[Tensor] | Iterable[dict]


class Optimizer:
    r"""Base class: parameter groups, per-parameter state, ``step``, ``state_dict``.

    Parameters
    ----------
    params:
        The parameters to train: a :class:`~lamina.nn.Module` (its ``parameters()``;
        read at the first ``step()`` if the module has not built its weights yet), an
        iterable of parameters, or an iterable of dicts ``{'params': [...], 'lr': ...,
        ...}`` (parameter groups). A group's keys override the optimizer's defaults for
        its parameters.
    lr:
        The learning rate :math:`\alpha` (``learning_rate`` in the course notes).
    weight_decay:
        L2 penalty coefficient: the update uses ``dJ_dw + weight_decay * w`` in place of
        ``dJ_dw``, the gradient of the cost :math:`J + \frac{\lambda}{2}\sum w^2` with
        :math:`\lambda` = ``weight_decay`` (see :mod:`lamina.optim.regularizers` for the
        course notes' cost-function form, :math:`\lambda \sum w^2`, whose gradient is
        :math:`2\lambda w`).

    Parameters whose ``grad`` is ``None`` or whose ``trainable`` is ``False`` are skipped
    by ``step()`` (their state is not created or advanced).

    The learning rate of every group can be set at once through ``optimizer.lr`` (what
    the schedules of :mod:`lamina.optim.schedules` do). A group created with its own
    ``lr`` keeps its ratio to the optimizer's ``lr``: setting ``optimizer.lr = a`` gives
    that group ``a * group_lr / lr`` (its ``'lr_scale'`` entry). With ``lr=0`` that ratio
    does not exist, so setting ``optimizer.lr`` while a group has an lr of its own is refused
    (a ValueError that says so) rather than giving every group the same rate.
    """

    #: Entries of a parameter's state that are arrays shaped like the parameter.
    _state_arrays: tuple[str, ...] = ()
    #: Entries of a parameter's state that are numbers (step counts).
    _state_numbers: tuple[str, ...] = ()
    #: Entries of a parameter's state that are real numbers (running products).
    _state_floats: tuple[str, ...] = ()

    def __init__(self, params: ParamsLike, lr: float, weight_decay: float = 0.0, **hyperparameters: Any):
        self.defaults: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, **hyperparameters}
        self._validate(self.defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        self.step_count = 0
        self._work: dict[tuple, Any] = {}
        self._pending_module: Module | None = None
        if isinstance(params, Module):
            found = params.parameters()
            if not found:
                self._pending_module = params
                return
            params = found
        elif isinstance(params, Tensor):
            params = [params]
        params = list(params)
        if not params:
            raise ValueError(f"{self._name}: got an empty parameter list (a model's parameters() is empty until "
                             "its first call builds the weights: pass the model itself to read them then)")
        if all(isinstance(g, dict) for g in params):
            for group in params:
                self.add_param_group(group)
        elif any(isinstance(g, dict) for g in params):
            raise ValueError(f"{self._name}: params mixes parameter groups (dicts) and parameters")
        else:
            self.add_param_group({"params": params})

    # -- parameter groups ------------------------------------------------------
    @property
    def _name(self) -> str:
        return type(self).__name__

    def add_param_group(self, group: dict) -> None:
        """Add a group ``{'params': [...], hyperparameter: value, ...}`` (e.g. to train a
        layer unfrozen during fine-tuning); unnamed hyperparameters take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"{self._name}: a parameter group is a dict with a 'params' entry, got {group!r}")
        group = dict(group)
        params = group.pop("params")
        if isinstance(params, Module):
            params = params.parameters()
        elif isinstance(params, Tensor):
            params = [params]
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise ValueError(f"{self._name}: expected parameters (tensors), got {type(p).__name__}")
        unknown = sorted(set(group) - set(self.defaults) - {"lr_scale"})
        if unknown:
            raise ValueError(
                f"{self._name}: unknown hyperparameter(s) {unknown} in a parameter group; "
                f"known: {sorted(self.defaults)}"
            )
        self._check_unique(params)
        full = {**self.defaults, **group}
        if "lr_scale" not in group:
            base = self.defaults["lr"]
            full["lr_scale"] = full["lr"] / base if "lr" in group and base > 0 else 1.0
        self._validate(full)
        full["params"] = params
        self.param_groups.append(full)

    def _check_unique(self, params: list[Tensor]) -> None:
        """Raise ValueError if a parameter of the new group is repeated in it or already in a group."""
        k = len(self.param_groups)
        owner = {id(p): j for j, g in enumerate(self.param_groups) for p in g["params"]}
        position: dict[int, int] = {}
        for i, p in enumerate(params):
            if id(p) in position:
                raise ValueError(
                    f"{self._name}: parameter {i} of parameter group {k} (shape {tuple(p.shape)}) is repeated within "
                    f"group {k} (it is also parameter {position[id(p)]}); pass each parameter once")
            if id(p) in owner:
                raise ValueError(
                    f"{self._name}: parameter {i} of parameter group {k} (shape {tuple(p.shape)}) is already in "
                    f"parameter group {owner[id(p)]}; a parameter belongs to one group only")
            position[id(p)] = i

    def _resolve(self) -> None:
        """Read the parameters of a module that had none when the optimizer was made."""
        if self._pending_module is None:
            return
        params = self._pending_module.parameters()
        if not params:
            raise RuntimeError(
                f"{self._name}: the model has no parameters yet; build it (call it on an input "
                "or call build(input_shape)) before stepping"
            )
        self._pending_module = None
        self.add_param_group({"params": params})

    def _indexed(self) -> Iterable[tuple[int, Tensor, dict]]:
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, p, group
                i += 1

    @property
    def params(self) -> list[Tensor]:
        """Every parameter, in state-dict index order."""
        self._resolve()
        return [p for _, p, _ in self._indexed()]

    # -- learning rate ---------------------------------------------------------
    @property
    def lr(self) -> float:
        """The base learning rate; setting it sets every group's (times its ``lr_scale``)."""
        return self.defaults["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self._check_number("lr", value, low=0.0)
        if self.defaults["lr"] == 0:
            own = {k: group["lr"] for k, group in enumerate(self.param_groups) if group["lr"] != 0}
            if own:
                raise ValueError(
                    f"{self._name}: cannot set lr to {value!r}: the base lr is 0 but parameter group(s) "
                    f"{sorted(own)} have their own lr {list(own.values())}, which has no ratio to a base of 0 to "
                    "keep; create the optimizer with a nonzero lr (e.g. the largest group's), and each group keeps "
                    "its ratio to it")
        self.defaults["lr"] = float(value)
        for group in self.param_groups:
            group["lr"] = float(value) * group["lr_scale"]

    # -- hyperparameter checks ---------------------------------------------------
    def _check_number(self, name: str, value: Any, low: float | None = None, high: float | None = None,
                      high_open: bool = False) -> None:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if ok and low is not None:
            ok = value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            if low is not None and high is not None:
                rng = f"in [{low:g}, {high:g}{')' if high_open else ']'}"
            elif low is not None:
                rng = f">= {low:g}"
            else:
                rng = "a finite number"
            raise ValueError(f"{self._name}: invalid {name} {value!r} (must be {rng})")

    def _validate(self, hp: dict) -> None:
        """Raise ValueError naming the optimizer and the value for a bad hyperparameter."""
        self._check_number("lr", hp["lr"], low=0.0)
        self._check_number("weight_decay", hp["weight_decay"], low=0.0)
        if "lr_scale" in hp:
            self._check_number("lr_scale", hp["lr_scale"], low=0.0)

    # -- stepping ----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``None``, or zeros in place with ``set_to_none=False``)."""
        self._resolve()
        for _, p, _ in self._indexed():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.fill(0)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()`` if given
        (the closure re-evaluates the cost and runs backward)."""
        loss = closure() if closure is not None else None
        self._resolve()
        self.step_count += 1
        with parallel.one_blas_thread():  # two BLAS libraries' spinning threads would meet
            self._update_all()
        self._mark_updated()
        return loss

    def _mark_updated(self) -> None:
        """Tell the engine that the parameters with a gradient changed in place, so that a
        backward through a graph recorded before the step raises instead of using new weights."""
        mark_modified(*[p for _, p, _ in self._indexed() if p.grad is not None])

    def _update_all(self) -> None:
        for i, p, group in self._indexed():
            grad = p.grad
            if grad is None or not getattr(p, "trainable", True):
                continue
            if isinstance(grad, Tensor):
                grad = grad.data
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = self._init_state(p, group)
            self._update(p, grad, state, group)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        """The state of a parameter before its first update."""
        return {}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        """Change ``p.data`` in place from ``grad`` (never written) and ``state``."""
        raise NotImplementedError(f"{self._name} does not implement an update rule")

    # -- in-place helpers for subclasses ---------------------------------------------
    def _scratch(self, p: Tensor, slot: int = 0):
        """A reusable work array shaped like ``p`` (contents undefined); ``slot`` picks
        one of several independent buffers. Shared by all parameters of a dtype."""
        xp = backend.xp
        key = (id(xp), p.data.dtype.str, slot)
        buf = self._work.get(key)
        if buf is None or buf.size < p.data.size:
            buf = xp.empty(p.data.size, dtype=p.data.dtype)
            self._work[key] = buf
        return buf[: p.data.size].reshape(p.data.shape)

    def _decayed_grad(self, p: Tensor, grad, weight_decay: float):
        """``grad + weight_decay * w`` in scratch slot 0 (or ``grad`` itself when no decay)."""
        if weight_decay == 0:
            return grad
        out = self._scratch(p, 0)
        out[...] = grad
        axpy(weight_decay, p.data, out)
        return out

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A serialisable snapshot: per-parameter state keyed by parameter index (copies of
        the arrays as NumPy arrays, step counts as ints, running products as floats), the
        hyperparameters of every group (with the indices of its parameters) and the number
        of steps taken.

        Only dicts, lists, strings, numbers, booleans and NumPy arrays appear (no pickle
        needed: JSON with arrays as lists, or safetensors with the arrays flattened).
        """
        self._resolve()
        state: dict[int, dict[str, Any]] = {}
        for i, entry in sorted(self.state.items()):
            saved: dict[str, Any] = {}
            for key, value in entry.items():
                if key in self._state_arrays:
                    host = backend.to_numpy(value)
                    saved[key] = host.copy() if host is value else host
                else:
                    saved[key] = value
            state[i] = saved
        groups = []
        i = 0
        for group in self.param_groups:
            saved_group = {k: _plain(v) for k, v in group.items() if k != "params"}
            saved_group["params"] = list(range(i, i + len(group["params"])))
            i += len(group["params"])
            groups.append(saved_group)
        return {"optimizer": self._name, "step_count": self.step_count, "lr": self.lr, "state": state,
                "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (state keys may be ints or their strings, arrays
        may be nested lists, as after a JSON round trip). Checks the optimizer type, the
        group sizes and every array's shape before changing anything."""
        self._resolve()
        kind = state_dict.get("optimizer", self._name)
        if kind != self._name:
            raise ValueError(f"{self._name}.load_state_dict: the state dict is from a {kind} optimizer")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{self._name}.load_state_dict: {len(saved_groups)} parameter groups in the state dict, "
                f"{len(self.param_groups)} in the optimizer"
            )
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{self._name}.load_state_dict: group {k} has {len(saved['params'])} parameters in the "
                    f"state dict, {len(group['params'])} in the optimizer"
                )
        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            hp = {k: v for k, v in saved.items() if k != "params"}
            unknown = sorted(set(hp) - set(self.defaults) - {"lr_scale"})
            if unknown:
                raise ValueError(f"{self._name}.load_state_dict: unknown hyperparameter(s) {unknown}")
            hp = {k: self._restore_hyperparameter(k, v) for k, v in hp.items()}
            merged = {**group, **hp}
            self._validate(merged)
            new_groups.append(merged)
        params = [p for _, p, _ in self._indexed()]
        xp = backend.xp
        new_state: dict[int, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{self._name}.load_state_dict: state for parameter {i}, the optimizer has "
                                 f"{len(params)}")
            p = params[i]
            restored: dict[str, Any] = {}
            for name, value in entry.items():
                if name in self._state_arrays:
                    arr = xp.array(value, dtype=p.data.dtype)
                    expected = self._state_shape(name, p)
                    if tuple(arr.shape) != expected:
                        raise ValueError(
                            f"{self._name}.load_state_dict: {name!r} of parameter {i} has shape "
                            f"{tuple(arr.shape)}, expected {expected} (the parameter's is {tuple(p.data.shape)})"
                        )
                    restored[name] = arr
                elif name in self._state_numbers:
                    restored[name] = int(value)
                elif name in self._state_floats:
                    restored[name] = float(value)
                else:
                    raise ValueError(f"{self._name}.load_state_dict: unknown state entry {name!r}")
            new_state[i] = restored
        for group, merged in zip(self.param_groups, new_groups):
            group.update({k: v for k, v in merged.items() if k != "params"})
        if "lr" in state_dict:
            self.defaults["lr"] = float(state_dict["lr"])
        elif self.param_groups:
            first = self.param_groups[0]
            self.defaults["lr"] = first["lr"] / first["lr_scale"] if first["lr_scale"] > 0 else first["lr"]
        self.state = new_state
        self.step_count = int(state_dict.get("step_count", 0))

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        """The shape of the state array ``name`` of parameter ``p`` (the parameter's own,
        unless the optimizer keeps a reduced statistic)."""
        return tuple(p.data.shape)

    def _restore_hyperparameter(self, key: str, value: Any) -> Any:
        if key in self.defaults and isinstance(self.defaults[key], tuple):
            return tuple(value)
        return value

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{self._name}({hp})"


def _plain(value: Any) -> Any:
    """Hyperparameters as JSON-friendly values (tuples become lists)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
