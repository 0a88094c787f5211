"""lamina: a deep-learning framework on NumPy with its own reverse-mode autodiff engine.

``import lamina`` loads the engine, the ops, the layers, the optimizers, the data pipeline and
saving; the larger packages above them (the model zoo, analysis, text, vision, reinforcement
learning, ONNX export, ...) load on first use (``lamina.models``, ``from lamina import
models``), and the first :func:`lamina.load` or registry lookup that needs one of their
layers loads them all.
"""

import importlib

from lamina import functional
from lamina.autograd import (
    Function,
    Tensor,
    enable_grad,
    gradcheck,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
    tensor,
)
from lamina.backend import (
    are_deterministic_algorithms_enabled,
    get_default_dtype,
    manual_seed,
    set_default_dtype,
    use_deterministic_algorithms,
)
from lamina.errors import GradcheckError, ShapeError
from lamina.functional import concat, odeint, odeint_adjoint, pad, stack, where
from lamina.lazy import names_on_first_use
from lamina.parallel import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "ShapeError", "Tensor", "concat", "enable_grad", "functional",
    "get_default_dtype", "get_num_threads", "gradcheck", "inference_mode", "is_grad_enabled", "manual_seed",
    "no_grad", "odeint", "set_grad_enabled",
    "odeint_adjoint", "pad",
    "set_default_dtype", "set_num_threads", "stack", "tensor", "where",
]

from lamina import amp, data, fft, func, manifolds, nn, optim, sparse  # noqa: E402
from lamina.amp import GradScaler, autocast  # noqa: E402
from lamina.functional.rearrange import pack, rearrange, reduce, repeat, unpack  # noqa: E402
from lamina.nn.layer import add_layer_source  # noqa: E402
from lamina.saving import load, load_bundle, save  # noqa: E402

__all__ += ["GradScaler", "amp", "autocast", "data", "fft", "func", "load", "load_bundle", "manifolds", "nn",
            "optim", "pack", "rearrange", "reduce", "repeat", "save", "sparse", "unpack"]
__all__ += ["are_deterministic_algorithms_enabled", "use_deterministic_algorithms"]

_MODULES_ON_FIRST_USE = {"analysis": (), "distributed": (), "distributions": (), "export": ("export_onnx", "load_onnx"),
                         "linalg": (), "models": (), "rl": (), "special": (), "text": (), "vision": ()}
"""Subpackages imported on first use rather than by ``import lamina`` (with the names taken from them)."""

__all__ += [*_MODULES_ON_FIRST_USE, "export_onnx", "load_onnx"]

__getattr__, __dir__ = names_on_first_use("lamina", _MODULES_ON_FIRST_USE, globals())


def _import_layer_packages() -> None:
    """Every subpackage that registers layers, for a saved architecture that names one of them."""
    for name in ("models", "rl", "rl.offline", "export", "analysis", "text", "vision", "keras"):
        importlib.import_module(f"lamina.{name}")


add_layer_source(_import_layer_packages)
