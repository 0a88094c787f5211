"""The reverse-mode differentiation engine: tensors, graph nodes, backward, gradcheck."""

from lamina.autograd.function import Function
from lamina.autograd.gradcheck import gradcheck
from lamina.autograd.graph import is_grad_enabled, no_grad
from lamina.autograd.tensor import Tensor, tensor

__all__ = ["Function", "Tensor", "gradcheck", "is_grad_enabled", "no_grad", "tensor"]
