"""lamina: a deep-learning framework on NumPy with its own reverse-mode autodiff engine."""

from lamina import functional
from lamina.autograd import Function, Tensor, enable_grad, gradcheck, is_grad_enabled, no_grad, tensor
from lamina.backend import (
    are_deterministic_algorithms_enabled,
    get_default_dtype,
    manual_seed,
    set_default_dtype,
    use_deterministic_algorithms,
)
from lamina.errors import GradcheckError, ShapeError
from lamina.functional import concat, odeint, odeint_adjoint, pad, stack, where
from lamina.parallel import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "ShapeError", "Tensor", "concat", "enable_grad", "functional",
    "get_default_dtype", "get_num_threads", "gradcheck", "is_grad_enabled", "manual_seed", "no_grad", "odeint",
    "odeint_adjoint", "pad",
    "set_default_dtype", "set_num_threads", "stack", "tensor", "where",
]

from lamina import analysis, data, distributions, fft, linalg, models, nn, optim, text, vision  # noqa: E402
from lamina.export import export_onnx, load_onnx  # noqa: E402
from lamina.saving import load, load_bundle, save  # noqa: E402

__all__ += ["analysis", "data", "distributions", "export_onnx", "fft", "linalg", "load", "load_bundle", "models",
            "nn", "optim", "save", "text", "vision"]
__all__ += ["load_onnx"]

from lamina import func  # noqa: E402
from lamina.functional.rearrange import pack, rearrange, reduce, repeat, unpack  # noqa: E402

__all__ += ["func", "pack", "rearrange", "reduce", "repeat", "unpack"]

from lamina import amp  # noqa: E402
from lamina.amp import GradScaler, autocast  # noqa: E402

__all__ += ["GradScaler", "amp", "autocast"]

from lamina import sparse  # noqa: E402

__all__ += ["sparse"]

from lamina import rl  # noqa: E402

__all__ += ["rl"]
__all__ += ["are_deterministic_algorithms_enabled", "use_deterministic_algorithms"]

from lamina import distributed  # noqa: E402

__all__ += ["distributed"]

from lamina import manifolds  # noqa: E402

__all__ += ["manifolds"]
