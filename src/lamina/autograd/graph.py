"""Graph recording switch and the reverse-mode sweep.

Backward visits the nodes in reverse topological order (built iteratively, so a chain
of any length works), hands each node its upstream gradient dJ/dy, and receives the
downstream gradients dJ/dx_i. Gradients reaching a value along several branches add
up (multivariable chain rule).

:func:`grad` (through :func:`gradients` and :func:`graph_gradients`) runs only the part of
the graph between the output and the tensors asked about, as PyTorch's engine does: one
pass over the topological order marks the nodes on a path to a wanted tensor (a node is on
one if it is wanted or one of its inputs is), and only their VJPs run. A node off every such
path is skipped whole: its VJP does not run, its hooks do not fire and, without
``retain_graph``, its saved arrays are kept (only the nodes that ran free theirs), so a later
backward through that part still works. The walk that lists the nodes stops early too: each
node records its ``graph_depth`` (1 + its deepest input's, leaves 0), so a node no deeper than
the shallowest wanted tensor cannot have one below it and is not expanded (PyTorch's
topological numbers). A loop that takes ``grad`` of a small function at each step of a
growing graph (a trace inside an ODE solve, a Hessian-vector product per iteration, with the
wanted tensor computed in that step) then costs each call its own few nodes, not the whole
graph so far; with wanted leaves the walk still lists the whole graph above them, but runs
only the VJPs on the way. :meth:`Tensor.backward` reaches every leaf, so it runs every node
as before.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import weakref
from typing import TYPE_CHECKING

from lamina import backend

if TYPE_CHECKING:
    from lamina.autograd.tensor import Tensor

class _GradMode(threading.local):
    """Whether ops record the graph, per thread (as PyTorch's grad mode): a data-loading
    thread under ``no_grad`` leaves the training thread recording."""

    enabled = True


_mode = _GradMode()
_recomputing = False
_node_observer = None
"""None, or a callable ``observer(vjp, g)`` that the backward sweeps call for every node
instead of ``vjp(g)`` (``vjp`` is the node's bound ``backward`` or ``backward_graph``); it
must return ``vjp(g)``. The profiler (:mod:`lamina.autograd.profiler`) sets it to time each
node's backward and puts None back; with None, a node costs one comparison more."""
_prune_to_wanted = True
"""Whether :func:`gradients` and :func:`graph_gradients` skip the nodes off every path to a
wanted tensor, and stop the walk at the wanted tensors' depth (their results are the same
either way; tests turn it off to compare)."""
_modifications = 0
"""How many times :func:`mark_modified` has run. Every recorded node keeps the count of its
time (``recorded_at``); a node whose count is the current one has seen no array change since."""
_modified_at: dict[int, list] = {}
"""id(tensor) -> [weak reference to it, the value of ``_modifications`` when its array was last
changed in place] (keyed by id: a tensor's ``==`` is elementwise; the entry goes with the tensor)."""


def is_grad_enabled() -> bool:
    """Whether new ops record the graph needed for backward."""
    return _mode.enabled


def is_recomputing() -> bool:
    """Whether a computation is being run again on the same mini-batch: a checkpointed
    function during backward (see :func:`lamina.autograd.checkpoint`), or the second pass of
    a sharpness-aware step (:class:`lamina.optim.SAM` under the trainer). Layers skip their
    side effects then, such as batch norm's update of its running statistics, which the first
    run already made."""
    return _recomputing


class _RecordingSwitch:
    """Sets whether ops record the graph to ``recording`` inside ``with`` (or a decorated
    function), and puts the previous setting back on the way out. As a decorator it takes
    parentheses or not (``@no_grad()``, ``@no_grad``); on a generator function, every
    resumption of the generator runs under the setting, and the caller's code between two
    ``next`` does not (as PyTorch's)."""

    recording: bool

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):     # bare @no_grad on a function
            return cls()(args[0])
        return super().__new__(cls)

    def __enter__(self) -> None:
        self._previous = _mode.enabled
        _mode.enabled = self.recording

    def __exit__(self, *exc) -> None:
        _mode.enabled = self._previous

    def _fresh(self) -> _RecordingSwitch:
        """A new switch with this one's setting, for one call of a decorated function."""
        return type(self)()

    def __call__(self, fn):
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}: as a decorator it takes a function, got {type(fn).__name__}")
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper

    def _wrap_generator(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            generator = fn(*args, **kwargs)
            try:
                with self._fresh():
                    response = generator.send(None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        with self._fresh():
                            generator.close()
                        raise
                    except BaseException as exc:
                        with self._fresh():
                            response = generator.throw(exc)
                    else:
                        with self._fresh():
                            response = generator.send(request)
            except StopIteration as stop:
                return stop.value

        return wrapper


class no_grad(_RecordingSwitch):
    """Context manager (or decorator) under which no graph is recorded."""

    recording = False


class enable_grad(_RecordingSwitch):
    """Context manager (or decorator) under which the graph is recorded, even inside
    :class:`no_grad`."""

    recording = True


class set_grad_enabled(_RecordingSwitch):
    """Records the graph or not as ``mode`` says, from the call on (``set_grad_enabled(False)``
    as a statement), and as a context manager or decorator puts the previous setting back on
    the way out, as PyTorch's."""

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled: mode must be True or False, got {mode!r}")
        self.recording = mode
        self._previous = _mode.enabled
        _mode.enabled = mode

    def __enter__(self) -> None:
        pass                                 # the call itself has set the mode

    def __call__(self, fn):
        _mode.enabled = self._previous       # as a decorator, the mode is set per call only
        return super().__call__(fn)

    def _fresh(self) -> _RecordingSwitch:
        return set_grad_enabled(self.recording)


class inference_mode(_RecordingSwitch):
    """PyTorch's ``inference_mode``, here the same as :class:`no_grad` (lamina has no separate
    inference tensors); ``inference_mode(False)`` leaves the setting as it is."""

    def __init__(self, mode: bool = True) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"inference_mode: mode must be True or False, got {mode!r}")
        self.mode = mode

    def __enter__(self) -> None:
        self._previous = _mode.enabled
        if self.mode:
            _mode.enabled = False

    def _fresh(self) -> _RecordingSwitch:
        return inference_mode(self.mode)


class recomputing:
    """Context manager marking a checkpointed function's second run (:func:`is_recomputing`)."""

    def __enter__(self) -> None:
        global _recomputing
        self._previous = _recomputing
        _recomputing = True

    def __exit__(self, *exc) -> None:
        global _recomputing
        _recomputing = self._previous


def mark_modified(*tensors) -> None:
    """Record that the arrays of ``tensors`` were just changed in place (an optimizer's step,
    weight clipping). A backward through an op recorded before the change
    that saved one of those arrays for its VJP then raises instead of silently using the new
    values, as PyTorch's version counters do; an op whose VJP does not read the value (an
    addition) still runs. Code that writes into ``tensor.data`` in place calls this to get the
    check (assigning a new array to ``data`` needs none: the recorded ops keep the old one)."""
    global _modifications
    _modifications += 1
    for t in tensors:
        entry = _modified_at.get(id(t))
        if entry is not None and entry[0]() is t:
            entry[1] = _modifications
        else:
            _modified_at[id(t)] = [weakref.ref(t, functools.partial(_forget, id(t))), _modifications]


def _forget(key: int, _ref) -> None:
    _modified_at.pop(key, None)


def check_unmodified(fn, who: str) -> None:
    """Raise if an array the node ``fn`` keeps for its VJP shares memory with a tensor changed in
    place after ``fn`` was recorded (the tensor itself, a view of it such as ``w.T``, or an
    input computed from it by a reshape or a slice), unless the op declares, through
    ``value_used_for``, that only the gradients of inputs which need none would read it."""
    recorded = getattr(fn, "recorded_at", _modifications)
    if recorded == _modifications:
        return
    changed = [t for t in (entry[0]() for entry in list(_modified_at.values()) if entry[1] > recorded)
               if t is not None]
    if not changed:
        return
    for array in _saved_arrays(fn):
        for t in changed:
            if array is t.data or backend.xp.may_share_memory(array, t.data):
                if _value_read(fn, array):
                    raise RuntimeError(
                        f"{who} through {type(fn).__name__}: an array it saved for its gradient shares memory with "
                        f"a tensor of shape {tuple(t.shape)} ({t.dtype}) changed in place after the op was "
                        "recorded (by an optimizer's step, or code that called mark_modified), so the gradient "
                        "would be computed from the new values; run backward before changing the tensor, or the "
                        "forward pass again after it"
                    )


def _saved_arrays(fn, depth: int = 0):
    """The arrays the node ``fn`` keeps (its attributes, one level into tuples, lists and nested
    nodes), its inputs' arrays excepted (it does not read those unless it kept them)."""
    array_type = backend.xp.ndarray
    for name, value in vars(fn).items():
        if name == "inputs":
            continue
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, array_type):
                yield v
            elif depth == 0 and hasattr(v, "inputs") and hasattr(v, "backward"):
                yield from _saved_arrays(v, 1)


def _value_read(fn, array) -> bool:
    """Whether the VJP will read ``array``: an op's ``value_used_for`` maps an input's position
    to the inputs whose gradients read that input's value (input i of a product serves the other
    factor's gradient only); without it, or for an array that is not an input's, assume so."""
    used_for = getattr(type(fn), "value_used_for", None)
    if used_for is None or fn.inputs is None:
        return True
    for position, t in enumerate(fn.inputs):
        if array is t.data or backend.xp.may_share_memory(array, t.data):
            readers = used_for.get(position)
            return readers is None or any(fn.needs_grad[r] for r in readers if r < len(fn.needs_grad))
    return True


def depth_above(inputs) -> float:
    """The ``graph_depth`` of a node with these ``inputs``: 1 + the deepest input's, a leaf or
    a constant being 0, so a node is deeper than everything it depends on. A node without the
    number counts as infinitely deep, and so does every node built on it (a node freed by
    backward keeps its number)."""
    deepest = 0
    for t in inputs:                         # on every recorded op: plain comparisons are quickest
        fn = t._ctx
        if fn is not None:
            depth = getattr(fn, "graph_depth", math.inf)
            if depth > deepest:
                deepest = depth
    return deepest + 1


def depth_floor(wanted) -> float:
    """The smallest ``graph_depth`` among the ``wanted`` tensors (0 for a leaf, or for one
    whose depth is unknown or infinite): no node this deep or shallower has a wanted tensor below it."""
    floor = min((getattr(t._ctx, "graph_depth", 0) if t._ctx is not None else 0 for t in wanted), default=0)
    return 0 if floor == math.inf else floor


def topological_order(root: Tensor | list[Tensor], floor: float = 0) -> list[Tensor]:
    """Tensors that ``root`` (or each of a list of roots) depends on (requiring grad), each
    after all its inputs. A node of ``graph_depth`` at most ``floor`` is listed but not
    expanded (with ``floor`` 0, every node is): ``floor`` from :func:`depth_floor` stops the
    walk where nothing wanted lies below."""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in reversed(_roots(root))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        fn = node._ctx
        if fn is not None and fn.inputs is not None and getattr(fn, "graph_depth", math.inf) > floor:
            for parent in fn.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def _paths_to(order: list[Tensor], wanted) -> tuple[set[int], set[int]]:
    """(ids of the tensors of ``order`` on a path to one of ``wanted`` (ids; None: every tensor
    is), ids of those whose node's VJP must run): a tensor is on a path if it is wanted or its
    VJP must run, and that VJP must run if one of its inputs is on a path. ``order`` lists
    inputs before their consumers, so one pass decides. A node freed by an earlier backward is
    not expanded by the walk: its VJP must run (and so raises, as PyTorch's) only if a wanted
    tensor lies below it (:func:`freed_reaches`)."""
    running: set[int] = set()
    reaching: set[int] = set()
    for node in order:
        fn = node._ctx
        if fn is not None and (wanted is None or (freed_reaches(fn, wanted) if fn.inputs is None
                                                  else any(id(parent) in reaching for parent in fn.inputs))):
            running.add(id(node))
            reaching.add(id(node))
        elif wanted is None or id(node) in wanted:
            reaching.add(id(node))
    return reaching, running


def freed_reaches(fn, wanted) -> bool:
    """Whether one of ``wanted`` (ids) lies below ``fn``, a node freed by an earlier backward,
    found through the (id, node) pairs it kept of its inputs (``freed_inputs``) and the inputs
    of the nodes below (freed or not). A freed node that kept nothing counts as reaching."""
    stack, seen = [fn], set()
    while stack:
        node = stack.pop()
        if node.inputs is not None:
            below = [(id(t), t._ctx) for t in node.inputs if t.requires_grad]
        elif "freed_inputs" in node.__dict__:
            below = node.freed_inputs
        else:
            return True
        for key, parent in below:
            if key in wanted:
                return True
            if parent is not None and id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return False


def run_backward(root: Tensor, grad, retain_graph: bool = False) -> None:
    """Propagate ``grad`` (dJ/droot) to every leaf that requires a gradient."""
    _sweep(root, grad, retain_graph, wanted=None)


def run_backward_into(root: Tensor, grad, inputs: list[Tensor], retain_graph: bool = False) -> None:
    """Propagate ``grad`` (dJ/droot) to ``inputs`` only, adding dJ/dt into each one's ``grad``
    (``backward(inputs=...)``): only the nodes on a path to them run. A computed tensor among
    them retains its gradient from then on (as after ``retain_grad()``, as in PyTorch), and so
    do those that retain theirs on the way."""
    for t in inputs:
        if t._ctx is not None:
            t._retains_grad = True
    wanted = {id(t): None for t in inputs}
    _sweep(root, grad, retain_graph, wanted, depth_floor(inputs) if _prune_to_wanted else 0, retained=True)
    for t in inputs:
        g = wanted[id(t)]
        if g is not None and t._ctx is None:
            _accumulate_leaf(t, g, {id(g)})  # the sweep's array may be held elsewhere (a hook's)


def gradients(root: Tensor, grad, wanted: list[Tensor], retain_graph: bool = False,
              wanted_hooks: bool = True) -> list:
    """dJ/dt for each tensor t of ``wanted`` (``None`` where ``root`` does not depend on t),
    given ``grad`` = dJ/droot, without touching any leaf's ``grad``. ``root`` and ``grad``
    may be lists (several outputs, one gradient each): the VJPs add up, in one sweep.
    ``wanted_hooks=False`` leaves the hooks of the wanted tensors to the caller: a backward
    run inside an outer one (a checkpoint's) hands its results to the outer sweep, which
    runs them."""
    floor = depth_floor(wanted) if _prune_to_wanted else 0
    found = _sweep(root, grad, retain_graph, wanted={id(t): None for t in wanted}, floor=floor,
                   wanted_hooks=wanted_hooks)
    results, seen = [], {id(g) for g in (grad if isinstance(root, (list, tuple)) else [grad])}
    for t in wanted:
        g = found[id(t)]
        if g is not None:
            g = backend.xp.asarray(g)
            if id(g) in seen:                  # one array reached two tensors, or is the caller's
                g = g.copy()
            seen.add(id(g))
            if g.shape != t.shape and g.size == t.size:
                g = g.reshape(t.shape)
        results.append(g)
    return results


def graph_gradients(root: Tensor, grad: Tensor, wanted: list[Tensor], wanted_hooks: bool = True) -> list:
    """dJ/dt for each tensor t of ``wanted`` as tensors on a graph of their own (``None``
    where ``root`` does not depend on t), given ``grad`` = dJ/droot as a tensor: every node
    hands back its VJP computed by ops (``Function.backward_graph``), recorded as any
    forward computation is, so the gradients can be differentiated again. A tensor's hooks
    receive its gradient as a tensor, and what they return is taken as it is, on the graph
    (as PyTorch's); ``wanted_hooks`` and lists for ``root`` and ``grad`` as for
    :func:`gradients`. Nothing is freed and no leaf's ``grad`` changes."""
    found: dict[int, Tensor | None] = {id(t): None for t in wanted}
    grads: dict[int, Tensor] = _seeds(root, grad)
    order = topological_order(root, depth_floor(wanted) if _prune_to_wanted else 0)
    reaching, running = _paths_to(order, found if _prune_to_wanted else None)
    with enable_grad():
        while order:
            node = order.pop()
            g = grads.pop(id(node), None)
            if g is None or id(node) not in reaching:
                continue
            hooks = getattr(node, "_hooks", None)
            if hooks and (wanted_hooks or id(node) not in found):
                g = _run_graph_hooks(hooks, g, node.shape)
            if id(node) in found:
                found[id(node)] = g
            fn = node._ctx
            if fn is None or id(node) not in running:
                continue
            if fn.inputs is None:
                raise RuntimeError(
                    f"grad(create_graph=True) through {type(fn).__name__}: its saved arrays were freed by an "
                    "earlier backward; call that one with retain_graph=True"
                )
            if getattr(fn, "recorded_at", _modifications) != _modifications:
                check_unmodified(fn, "grad(create_graph=True)")
            input_grads = (fn.backward_graph(g) if _node_observer is None
                           else _node_observer(fn.backward_graph, g))
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(fn.inputs, input_grads):
                if pg is None or id(parent) not in reaching:
                    continue
                if pg.shape != parent.shape:
                    pg = pg.reshape(parent.shape)
                previous = grads.get(id(parent))
                grads[id(parent)] = pg if previous is None else previous + pg
    return [found[id(t)] for t in wanted]


def _sweep(root: Tensor, grad, retain_graph: bool, wanted: dict | None, floor: float = 0,
           wanted_hooks: bool = True, retained: bool = False):
    """The reverse sweep from ``root``. With ``wanted`` None, leaves accumulate their
    gradients in ``grad``; otherwise the gradients reaching the wanted tensors (a dict keyed
    by id) are stored there (after their hooks ran, unless ``wanted_hooks`` is False), no
    leaf is touched, and only the nodes on a path to a wanted tensor run (and, without
    ``retain_graph``, are freed); the walk stops at ``floor`` (see :func:`topological_order`).
    The tensors that retain their gradient get it when ``wanted`` is None or ``retained``."""
    grads = _seeds(root, grad)
    handed_to_leaves: set[int] = {id(g) for g in grads.values()}    # the caller's: a leaf gets a copy
    order = topological_order(root, floor)
    reaching = running = None                # None: every node (backward reaches all leaves)
    if wanted is not None:
        reaching, running = _paths_to(order, wanted if _prune_to_wanted else None)
    while order:
        node = order.pop()                   # dropped from the list once handled: its value can go
        g = grads.pop(id(node), None)
        if g is None or (reaching is not None and id(node) not in reaching):
            continue
        hooks = getattr(node, "_hooks", None)
        if hooks and (wanted_hooks or wanted is None or id(node) not in wanted):
            hooked = _run_hooks(hooks, g, node.shape)
            if hooked is not g:              # the hook's array may be held elsewhere: a leaf copies it
                handed_to_leaves.add(id(hooked))
                g = hooked
        fn = node._ctx
        if wanted is not None and id(node) in wanted:
            wanted[id(node)] = g
        if fn is None:
            if wanted is None:
                _accumulate_leaf(node, g, handed_to_leaves)
            continue
        if (wanted is None or retained) and getattr(node, "_retains_grad", False):
            node.grad = g.copy() if node.grad is None else node.grad + g
        if running is not None and id(node) not in running:
            continue
        if fn.inputs is None:
            raise RuntimeError(
                f"backward through {type(fn).__name__} a second time: its saved arrays were "
                "freed after the first backward; call backward(retain_graph=True) the first time"
            )
        if getattr(fn, "recorded_at", _modifications) != _modifications:
            check_unmodified(fn, "backward")
        input_grads = fn.backward(g) if _node_observer is None else _node_observer(fn.backward, g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, pg in zip(fn.inputs, input_grads):
            if pg is None or not parent.requires_grad or (reaching is not None and id(parent) not in reaching):
                continue
            key = id(parent)
            previous = grads.get(key)
            grads[key] = pg if previous is None else previous + pg
        if not retain_graph:
            fn.release()
    return wanted


def _roots(root) -> list:
    return list(root) if isinstance(root, (list, tuple)) else [root]


def _seeds(root, grad) -> dict:
    """id -> the gradient a sweep starts from at each root (``root`` and ``grad`` both lists
    for several outputs: their VJPs add up, as PyTorch's for a sequence of outputs)."""
    roots = _roots(root)
    if len(roots) == 1 and not isinstance(root, (list, tuple)):
        return {id(root): grad}
    seeds: dict = {}
    for r, g in zip(roots, grad):
        seeds[id(r)] = g if id(r) not in seeds else seeds[id(r)] + g
    return seeds


def _run_hooks(hooks: dict, g, shape):
    for hook in list(hooks.values()):
        result = hook(g)
        if result is not None:
            result = backend.xp.asarray(getattr(result, "data", result), dtype=g.dtype)
            if result.shape != tuple(shape):
                from lamina.errors import ShapeError

                raise ShapeError(f"backward: the hook {getattr(hook, '__name__', hook)!r} returned a gradient of "
                                 f"shape {result.shape} for a tensor of shape {tuple(shape)}")
            g = result
    return g


def _run_graph_hooks(hooks: dict, g: Tensor, shape) -> Tensor:
    """The hooks under ``create_graph``: each receives the gradient as a tensor; a returned
    tensor replaces it as it is (on the graph), an array as a constant."""
    for hook in list(hooks.values()):
        result = hook(g)
        if result is None:
            continue
        if not isinstance(result, type(g)):
            result = type(g)._wrap(backend.xp.asarray(result, dtype=g.dtype))
        if result.shape != tuple(shape):
            from lamina.errors import ShapeError

            raise ShapeError(f"grad(create_graph=True): the hook {getattr(hook, '__name__', hook)!r} returned a "
                             f"gradient of shape {result.shape} for a tensor of shape {tuple(shape)}")
        g = result
    return g


def _accumulate_leaf(leaf: Tensor, g, handed: set[int]) -> None:
    g = backend.xp.asarray(g)  # 0-d arithmetic in NumPy yields scalars, not arrays
    if g.dtype != leaf.data.dtype:
        g = g.astype(leaf.data.dtype)
    if g.shape != leaf.data.shape:
        g = g.reshape(leaf.data.shape) if g.size == leaf.data.size else g
    if leaf.grad is None:
        # A leaf's .grad must own its memory: optimizers may update it in place. A reshaped
        # view of a whole fresh array (a backward's own result) is taken as it is.
        base = g
        while isinstance(base.base, type(g)):
            base = base.base
        spans_base = base is g or (g.size == base.size and g.flags.c_contiguous and base.flags.c_contiguous)
        # (CuPy's arrays have no read-only flag: all are writeable)
        read_only = not getattr(g.flags, "writeable", True)
        if id(base) in handed or id(g) in handed or not spans_base or read_only or base.base is not None:
            g = base = g.copy()
        handed.update((id(g), id(base)))
        leaf.grad = g
    else:
        leaf.grad = backend.xp.asarray(leaf.grad + g)
