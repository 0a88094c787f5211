"""The reverse-mode differentiation engine: tensors, graph nodes, backward, gradcheck,
derivatives of derivatives, a profiler of the ops, views of the graph (``Tensor.grad_fn``,
:func:`to_dot`), and functions with a hand-written backward in PyTorch's form (:class:`CustomFunction`)."""

from lamina.autograd.checkpoint import checkpoint, checkpoint_sequential
from lamina.autograd.custom_function import CustomFunction, FunctionCtx, once_differentiable
from lamina.autograd.derivatives import grad, hessian, hvp, jacobian, jvp, vhp, vjp
from lamina.autograd.dot import DotSource, to_dot
from lamina.autograd.function import Function, differentiable_ops
from lamina.autograd.grad_fn import AccumulateGrad, GradFn
from lamina.autograd.gradcheck import gradcheck, gradgradcheck
from lamina.autograd.graph import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_recomputing,
    mark_modified,
    no_grad,
    set_grad_enabled,
)
from lamina.autograd.profiler import profile, record_function
from lamina.autograd.tensor import Tensor, tensor

__all__ = ["AccumulateGrad", "CustomFunction", "DotSource", "Function", "FunctionCtx", "GradFn", "Tensor",
           "checkpoint", "checkpoint_sequential", "differentiable_ops", "enable_grad", "grad", "gradcheck",
           "gradgradcheck", "hessian", "hvp", "inference_mode", "is_grad_enabled", "is_recomputing", "jacobian",
           "jvp", "mark_modified", "no_grad", "once_differentiable", "profile", "record_function",
           "set_grad_enabled", "tensor", "to_dot", "vhp", "vjp"]
