"""The bilinear layer: each output a quadratic form coupling two input vectors,

    y_k = x1^T A_k x2 + b_k = sum_i sum_j x1_i A_kij x2_j + b_k,   k = 1 .. out

with the weight A of shape (out, in1, in2), as PyTorch's ``nn.Bilinear`` (one matrix A_k
per output). It scores how two representations interact (a question and an answer, two
modalities) where a Dense layer on their concatenation only adds their separate effects.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.einsum import einsum
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Bilinear", "BilinearFunction", "bilinear"]


class BilinearFunction(Function):
    """y = x1^T A x2 (+ b) for x1 (..., in1), x2 (..., in2), A (out, in1, in2), as one node.

    The leading axes are folded into M rows; each product is a matrix product:

        y_mk      = sum_j (x1 A)_m,kj x2_mj        (x1 A: (M, in1) @ (in1, out in2))
        dJ/dx1_mi = sum_kj dJ/dy_mk x2_mj A_kij  = (dJ/dy ⊗ x2) @ (A as (in1, out in2))^T
        dJ/dx2_mj = sum_ki dJ/dy_mk x1_mi A_kij  = (dJ/dy ⊗ x1) @ (A as (out in1, in2))
        dJ/dA_kij = sum_m dJ/dy_mk x1_mi x2_mj   = (dJ/dy ⊗ x1)^T @ x2
        dJ/db_k   = sum_m dJ/dy_mk

    with (u ⊗ v)_m,(k,i) = u_mk v_mi the row-wise outer products.
    """

    def forward(self, x1, x2, weight, bias=None):
        xp = backend.xp
        out, in1, in2 = weight.shape
        self.lead = x1.shape[:-1]
        a = x1.reshape(-1, in1)
        b = x2.reshape(-1, in2)
        self.x1, self.x2, self.weight = a, b, weight
        by_first = xp.ascontiguousarray(weight.transpose(1, 0, 2)).reshape(in1, out * in2)
        left = parallel.matmul(a, by_first).reshape(-1, out, in2)       # (x1 A)_m,kj
        y = xp.matmul(left, b[:, :, None])[:, :, 0]
        if bias is not None:
            y += bias
        return y.reshape(self.lead + (out,))

    def backward(self, dy):
        out, in1, in2 = self.weight.shape
        need_x1, need_x2, need_w = self.needs_grad[:3]
        d = dy.reshape(-1, out)
        grads = [None, None, None]
        if need_x1:
            outer = (d[:, :, None] * self.x2[:, None, :]).reshape(-1, out * in2)
            by_first = self.weight.transpose(1, 0, 2).reshape(in1, out * in2)
            grads[0] = parallel.matmul(outer, by_first.T).reshape(self.lead + (in1,))
        if need_x2 or need_w:
            outer = (d[:, :, None] * self.x1[:, None, :]).reshape(-1, out * in1)
            if need_x2:
                grads[1] = parallel.matmul(outer, self.weight.reshape(out * in1, in2)).reshape(self.lead + (in2,))
            if need_w:
                grads[2] = parallel.matmul(outer.T, self.x2).reshape(out, in1, in2)
        if len(self.needs_grad) == 4:
            grads.append(d.sum(axis=0) if self.needs_grad[3] else None)
        return tuple(grads)

    def backward_graph(self, dy):
        """The same VJP as einsums of tensors: dJ/dx1_mi = sum_kj dJ/dy_mk x2_mj A_kij, and so on."""
        x1, x2, weight = self.inputs[:3]
        out, in1, in2 = weight.shape
        d, a, b = dy.reshape(-1, out), x1.reshape(-1, in1), x2.reshape(-1, in2)
        need_x1, need_x2, need_w = self.needs_grad[:3]
        grads = [einsum("mk,mj,kij->mi", d, b, weight).reshape(x1.shape) if need_x1 else None,
                 einsum("mk,mi,kij->mj", d, a, weight).reshape(x2.shape) if need_x2 else None,
                 einsum("mk,mi,mj->kij", d, a, b) if need_w else None]
        if len(self.needs_grad) == 4:
            grads.append(d.sum(axis=0) if self.needs_grad[3] else None)
        return tuple(grads)


def bilinear(x1, x2, weight, bias=None) -> Tensor:
    """y_k = x1^T A_k x2 + b_k for ``x1`` (..., in1), ``x2`` (..., in2) of the same leading
    shape and ``weight`` A (out, in1, in2): shape (..., out). As ``torch.nn.functional.bilinear``."""
    x1, x2, weight = as_tensor(x1), as_tensor(x2), as_tensor(weight)
    if weight.ndim != 3:
        raise ShapeError(f"bilinear: the weight must be 3-D (out, in1, in2), got shape {weight.shape}")
    out, in1, in2 = weight.shape
    if x1.ndim < 1 or x2.ndim < 1 or x1.shape[-1] != in1 or x2.shape[-1] != in2 or x1.shape[:-1] != x2.shape[:-1]:
        raise ShapeError(f"bilinear: inputs of shapes {x1.shape} and {x2.shape} do not fit the weight of shape "
                         f"{weight.shape}; expected (..., {in1}) and (..., {in2}) with the same leading axes")
    if bias is not None:
        bias = as_tensor(bias)
        if bias.shape != (out,):
            raise ShapeError(f"bilinear: the bias must have shape ({out},), got {bias.shape}")
        return BilinearFunction.apply(x1, x2, weight, bias)
    return BilinearFunction.apply(x1, x2, weight)


def _pair(inputs: tuple, who: str) -> tuple:
    """The two inputs, given as two arguments or as one list or tuple of two."""
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])
    if len(inputs) != 2:
        raise ShapeError(f"{who}: expected two inputs, layer(x1, x2), got {len(inputs)}")
    return inputs


@register_layer
class Bilinear(Module):
    """y = x1^T A x2 + b with A (out_features, in1, in2), called as ``layer(x1, x2)`` on
    x1 (..., in1) and x2 (..., in2) of the same leading shape; in1 and in2 come from the
    first call. Initialised as PyTorch: A and b uniform in ±1/sqrt(in1). Parameters
    ``weight`` (A) and ``bias`` (b, left out when ``use_bias=False``).
    """

    def __init__(self, out_features: int, use_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "Bilinear: out_features")
        self.use_bias = bool(use_bias)

    def _input_shapes(self, input_shape) -> tuple[tuple, tuple]:
        if (not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2
                or not all(isinstance(s, (list, tuple)) for s in input_shape)):
            raise ShapeError(f"{self._label()}: expected the shapes of two inputs, got {input_shape!r}")
        first, second = (tuple(s) for s in input_shape)
        if not first or not second or len(first) != len(second) or any(
                a is not None and b is not None and a != b for a, b in zip(first[:-1], second[:-1])):
            raise ShapeError(f"{self._label()}: got input shapes {first} and {second}; expected (..., in1) and "
                             "(..., in2) with the same leading axes")
        if self.built:
            _, in1, in2 = self.weight.shape
            if first[-1] not in (None, in1) or second[-1] not in (None, in2):
                raise ShapeError(f"{self._label()}: got input shapes {first} and {second}; the layer was built "
                                 f"for in1={in1} and in2={in2} features")
        return first, second

    def build(self, input_shape) -> None:
        first, second = self._input_shapes(input_shape)
        in1, in2 = first[-1], second[-1]
        if in1 is None or in2 is None:
            raise ShapeError(f"{self._label()}: the feature (last) axes of {first} and {second} must be known")
        dtype = backend.get_default_dtype()
        draw = initializers.uniform(in1 ** -0.5)
        self.add_parameter("weight", draw((self.out_features, in1, in2), dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", draw((self.out_features,), dtype=dtype))
        self.built = True

    def forward(self, *inputs) -> Tensor:
        x1, x2 = (as_tensor(x) for x in _pair(inputs, self._label()))
        _, in1, in2 = self.weight.shape
        if x1.ndim < 1 or x2.ndim < 1 or x1.shape[-1] != in1 or x2.shape[-1] != in2 or x1.shape[:-1] != x2.shape[:-1]:
            raise ShapeError(f"{self._label()}: got inputs of shapes {x1.shape} and {x2.shape}; expected "
                             f"(..., {in1}) and (..., {in2}) with the same leading axes")
        return bilinear(x1, x2, self.weight, self.bias if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        first, _ = self._input_shapes(input_shape)
        return first[:-1] + (self.out_features,)

    def macs(self, input_shapes, output_shapes) -> int:
        """Per pair of vectors, x1 A (in1 · out in2), then each of its out rows times x2 (in2)."""
        first, second = input_shapes[0], input_shapes[1]
        return math.prod(first[:-1]) * self.out_features * second[-1] * (first[-1] + 1)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "use_bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        if self.built:
            _, in1, in2 = self.weight.shape
            sizes = f"in1={in1}, in2={in2}, "
        else:
            sizes = ""
        return f"{sizes}out_features={self.out_features}" + ("" if self.use_bias else ", use_bias=False")
