"""``lamina.linalg``: linear algebra with gradients, after ``torch.linalg``.

Every op is batched over leading axes ((..., n, n) inputs), works in float32 and float64,
and has first and second derivatives::

    import lamina
    from lamina import linalg

    a = lamina.tensor([[4.0, 1.0], [1.0, 3.0]], requires_grad=True)
    linalg.logdet(a).backward()          # a.grad = A^-T
"""

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
    "LstsqResult", "cholesky", "cholesky_ex", "cholesky_solve", "cond", "cross", "det", "diag_embed", "diagonal",
    "eigh", "eigvalsh", "inv", "inv_ex", "logdet", "lstsq", "matrix_exp", "matrix_norm", "matrix_power",
    "matrix_rank", "matrix_transpose", "multi_dot", "norm", "pinv", "qr", "slogdet", "solve", "solve_ex",
    "solve_triangular", "svd", "svdvals", "tensorinv", "tensorsolve", "trace", "tril", "triu", "vander", "vecdot",
    "vector_norm",
]
