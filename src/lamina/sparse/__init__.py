"""Sparse tensors (COO and CSR) with gradients, in the manner of ``torch.sparse``.

A :class:`SparseTensor` keeps its stored entries' positions (constant integer arrays) and
their ``values`` (a Tensor that can require grad). Products with dense matrices run on
scipy's CSR kernels on the CPU; every op's gradient is a VJP over the stored entries.

Importing this package also gives tensors ``x.to_sparse()`` and ``x.to_sparse_csr()``.
"""

from lamina.autograd import Tensor
from lamina.sparse.creation import from_dense, from_dense_csr, from_scipy, sparse_coo_tensor, sparse_csr_tensor
from lamina.sparse.ops import (
    add,
    addmm,
    dense_spmm,
    div,
    log_softmax,
    mm,
    mul,
    sampled_addmm,
    softmax,
    spmm,
    sum,  # noqa: A004 - torch.sparse.sum's name
)
from lamina.sparse.tensor import SparseTensor

__all__ = ["SparseTensor", "add", "addmm", "dense_spmm", "div", "from_dense", "from_dense_csr", "from_scipy",
           "log_softmax", "mm", "mul", "sampled_addmm", "softmax", "sparse_coo_tensor", "sparse_csr_tensor", "spmm",
           "sum"]

Tensor.to_sparse = from_dense
Tensor.to_sparse_csr = from_dense_csr
