"""``Tensor``: an array on the computation graph.

A tensor holds its value (``data``), the gradient dJ/dtensor once backward has run
(``grad``), and the node that produced it (``_ctx``), from which backward walks the
graph. Operators and methods are attached by :mod:`lamina.functional`, which owns the
ops; this module knows only the value and the graph.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.grad_fn import GradFn, grad_fn_of

_NUMERIC_KINDS = "biuf"


class Tensor:
    # _hooks and _retains_grad are set only on tensors that use them (read with getattr)
    __slots__ = ("data", "_grad", "requires_grad", "_ctx", "_hooks", "_retains_grad", "__weakref__")
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"tensor(requires_grad=True) needs a floating dtype, got {self.data.dtype}"
            )
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None

    @classmethod
    def _wrap(cls, array) -> Tensor:
        """A constant tensor around an existing array (no copy, no cast)."""
        t = cls.__new__(cls)
        t.data = array
        t._grad = None
        t.requires_grad = False
        t._ctx = None
        return t

    @classmethod
    def _constant(cls, value, dtype=None) -> Tensor:
        """A constant operand; numbers meeting a floating tensor take its dtype."""
        cast = dtype if dtype is not None and dtype.kind == "f" else None
        return cls._wrap(_to_array(value, cast))

    # -- value ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> numpy.ndarray:
        """The value as a NumPy array (shares memory on the CPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def _one_value(self, what: str):
        if self.data.size != 1:
            raise ValueError(f"{what}: only a tensor of one element has a single value, got one of shape "
                             f"{self.shape}" + ("; use .any() or .all()" if what == "bool(tensor)" else ""))
        return self.data.item()

    def __bool__(self) -> bool:
        """The truth of a one-element tensor (of any number of axes), as NumPy and PyTorch;
        more elements, or none, are ambiguous: a ValueError."""
        return bool(self._one_value("bool(tensor)"))

    def __float__(self) -> float:
        return float(self._one_value("float(tensor)"))

    def __int__(self) -> int:
        """int() of the one value, truncated toward zero as Python's int(float)."""
        return int(self._one_value("int(tensor)"))

    def __index__(self) -> int:
        """A one-element integer tensor as an index (``range(t)``, ``seq[t]``), as PyTorch."""
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError(f"tensor index: only an integer tensor of one element can be an index, "
                            f"got dtype {self.data.dtype} and shape {self.shape}")
        return int(self.data.item())

    def detach(self) -> Tensor:
        """The same value, cut from the graph."""
        return Tensor._wrap(self.data)

    def astype(self, dtype) -> Tensor:
        """A copy in another dtype, cut from the graph (for casting constants)."""
        return Tensor._wrap(self.data.astype(dtype))

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self) -> GradFn | None:
        """The node of the op that computed this tensor, as PyTorch's ``grad_fn`` (a read-only
        view; see :mod:`lamina.autograd.grad_fn`); None for a leaf or a constant."""
        return grad_fn_of(self)

    # -- gradient ------------------------------------------------------------
    @property
    def grad(self):
        """dJ/dself after backward (an array shaped like ``data``), or None."""
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        # NumPy's arithmetic on 0-d arrays gives scalars (2 * w.data is an np.float64), which
        # the optimizers cannot update in place: any value that is not an array becomes one
        # (of its own dtype). Arrays and tensors are stored as given, without a copy.
        if value is not None and not isinstance(value, (numpy.ndarray, Tensor)):
            value = backend.xp.asarray(value)
        self._grad = value

    def zero_grad(self) -> None:
        self.grad = None

    def retain_grad(self) -> None:
        """Keep dJ/dself in ``grad`` after backward, for a tensor computed by an op (a leaf
        keeps its gradient anyway); like a leaf's, it adds up over backward passes."""
        self._check_tracked("retain_grad")
        if self._ctx is not None:
            self._retains_grad = True

    def register_hook(self, hook) -> _HookHandle:
        """Call ``hook(g)`` with dJ/dself (an array) when backward has computed it, before it
        flows on (or, for a leaf, into ``grad``); a returned array replaces g. Under
        ``grad(..., create_graph=True)`` g is a tensor, and a tensor returned is recorded on
        the graph (as PyTorch's). Hooks run in the order registered. Returns a handle whose
        ``remove()`` unregisters the hook."""
        self._check_tracked("register_hook")
        if not callable(hook):
            raise TypeError(f"register_hook: expected a callable, got {type(hook).__name__}")
        hooks = getattr(self, "_hooks", None)
        if hooks is None:
            hooks = self._hooks = {}
        handle = _HookHandle(hooks)
        hooks[handle] = hook
        return handle

    def _check_tracked(self, what: str) -> None:
        if not self.requires_grad:
            raise RuntimeError(f"{what}: the tensor does not require grad, so backward never reaches it")

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place and return the tensor, as PyTorch's. Only a floating
        tensor can require grad, and only a leaf's flag can be turned off (a computed tensor
        is cut from its graph with :meth:`detach`)."""
        requires_grad = bool(requires_grad)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad_(True): only a floating tensor can require grad, got {self.data.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False): the tensor was computed by an op (it is not a leaf); "
                               "use detach() for a copy off the graph")
        self.requires_grad = requires_grad
        return self

    def backward(self, grad=None, retain_graph: bool = False, create_graph: bool = False, inputs=None) -> None:
        """Back-propagate dJ/dself (``grad``; 1 for a scalar) to every leaf below, or, with
        ``inputs`` (a tensor or a sequence of them, leaves or computed), into the ``grad`` of
        those only (adding up, as a leaf's does; a computed one retains its gradient from then
        on, as after :meth:`retain_grad`, as in PyTorch). A leaf's ``grad`` is an array; for gradients
        on the graph (to differentiate them again) use
        ``lamina.autograd.grad(output, inputs, create_graph=True)``."""
        if create_graph:
            raise TypeError("backward(create_graph=True): a leaf's .grad is an array in lamina, off the graph; "
                            "use lamina.autograd.grad(output, inputs, create_graph=True), which returns the "
                            "gradients as tensors that can be differentiated again")
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input on its graph "
                "was created with requires_grad=True (or it was computed under no_grad)"
            )
        grad = output_gradient(self, grad, "backward", "grad")
        if inputs is None:
            graph.run_backward(self, grad, retain_graph=retain_graph)
            return
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not inputs:
            raise RuntimeError("backward: inputs= was given but is empty; pass None to reach every leaf")
        for i, t in enumerate(inputs):
            if not isinstance(t, Tensor) or not t.requires_grad:
                what = type(t).__name__ if not isinstance(t, Tensor) else f"one of shape {t.shape} that does not"
                raise RuntimeError(f"backward: inputs[{i}] must be a tensor that requires grad, got {what}")
        graph.run_backward_into(self, grad, inputs, retain_graph=retain_graph)

    def __repr__(self) -> str:
        body = numpy.array2string(self.numpy(), separator=", ", precision=4, threshold=20)
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.data.dtype}{extra})"

    __hash__ = object.__hash__


def _to_array(data, dtype):
    xp = backend.xp
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = numpy.dtype(dtype)
    try:
        arr = xp.asarray(data, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"tensor(): cannot make a numeric array from {type(data).__name__} ({exc})"
        ) from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"tensor(): expected numbers (bool, int or float), got an array of dtype {arr.dtype}"
            f" from {type(data).__name__}"
        )
    if dtype is None and arr.dtype.kind == "f" and arr.dtype != backend.get_default_dtype():
        arr = arr.astype(backend.get_default_dtype())
    return arr


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Make a tensor. Floating data takes the default dtype (float32) unless ``dtype`` says."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


class _HookHandle:
    """What :meth:`Tensor.register_hook` returns (and the hook's key in the tensor's hooks):
    ``remove()`` takes the hook away."""

    def __init__(self, hooks: dict):
        self.hooks = hooks

    def remove(self) -> None:
        self.hooks.pop(self, None)


def output_gradient(output: Tensor, grad, who: str, argument: str):
    """dJ/doutput to start a backward sweep from: ones for a scalar output when ``grad`` is
    None, else ``grad`` as an array of the output's shape and dtype (no copy: the sweep never
    lets a leaf keep the caller's array as its ``grad``)."""
    if grad is None:
        if output.data.size != 1:
            raise RuntimeError(f"{who}: an output of shape {output.shape} needs {argument}= of the same shape "
                               "(only a scalar's is implied)")
        return backend.xp.ones_like(output.data)
    grad = backend.xp.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=output.data.dtype)
    if grad.shape != output.shape:
        from lamina.errors import ShapeError

        raise ShapeError(f"{who}: {argument} of shape {grad.shape} for an output of shape {output.shape}")
    return grad
