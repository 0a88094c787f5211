"""``lamina.linalg``: linear algebra with gradients, after ``torch.linalg``.

Every op is batched over leading axes ((..., n, n) inputs), works in float32 and float64,
and has first and second derivatives, except the LDL^T ops and matrix_rank, which have none
(as in torch); LAPACK failures raise ``LinAlgError`` (NumPy's)::

    import lamina
    from lamina import linalg

    a = lamina.tensor([[4.0, 1.0], [1.0, 3.0]], requires_grad=True)
    linalg.logdet(a).backward()          # a.grad = A^-T
"""

from numpy.linalg import LinAlgError

from lamina.functional.arithmetic import matmul
from lamina.functional.linalg import (
    cholesky,
    cholesky_solve,
    det,
    inv,
    logdet,
    matrix_exp,
    matrix_power,
    slogdet,
    solve,
    solve_triangular,
)
from lamina.functional.linalg_decomp import eigh, eigvalsh, matrix_norm, pinv, qr, svd, svdvals
from lamina.functional.linalg_lu import (
    householder_product,
    ldl_factor,
    ldl_factor_ex,
    ldl_solve,
    lu,
    lu_factor,
    lu_factor_ex,
    lu_solve,
    lu_unpack,
)
from lamina.functional.linalg_more import (
    LstsqResult,
    cholesky_ex,
    cond,
    cross,
    inv_ex,
    lstsq,
    matrix_rank,
    multi_dot,
    norm,
    solve_ex,
    tensorinv,
    tensorsolve,
    vander,
    vecdot,
    vector_norm,
)
from lamina.functional.linalg_structure import diag_embed, diagonal, matrix_transpose, trace, tril, triu

__all__ = [
    "LinAlgError", "LstsqResult", "cholesky", "cholesky_ex", "cholesky_solve", "cond", "cross", "det", "diag_embed",
    "diagonal", "eigh", "eigvalsh", "householder_product", "inv", "inv_ex", "ldl_factor", "ldl_factor_ex",
    "ldl_solve", "logdet", "lstsq", "lu", "lu_factor", "lu_factor_ex", "lu_solve", "lu_unpack", "matmul",
    "matrix_exp", "matrix_norm", "matrix_power", "matrix_rank", "matrix_transpose", "multi_dot", "norm", "pinv", "qr",
    "slogdet", "solve", "solve_ex", "solve_triangular", "svd", "svdvals", "tensorinv", "tensorsolve", "trace", "tril",
    "triu", "vander", "vecdot", "vector_norm",
]
