"""einsum: sums of products whose axes are named by letters, with its backward.

``einsum('ij,jk->ik', A, B)`` is C_ik = sum_j A_ij B_jk: each letter names an axis, a
letter of the output is kept and every other letter is summed over. Without '->' the
output holds the letters that appear once in the inputs, in alphabetical order (NumPy's
rule; capitals sort first).

The backward is the course notes' rule for a product node: the upstream gradient times
the other factors. For operand k, dJ/dX_k is the einsum of dJ/dY (under the output's
letters) with the other operands, producing X_k's letters. Two cases need more:

- a letter of X_k that is neither in the output nor in another operand was summed over
  inside X_k alone; every element it ran over gets the same gradient, so the result is
  broadcast back along it;
- a letter repeated within X_k (``'ii->i'``, a diagonal; ``'ii->'``, a trace) reads only
  the diagonal, so the gradient lands on that diagonal and is 0 elsewhere.

``'...'`` stands for the leading axes an operand has beyond its letters. They broadcast
across operands, aligned on the right as in NumPy, and are summed over when an explicit
output leaves ``'...'`` out (as PyTorch does). An axis of size 1 broadcasts against the
same letter's longer axis in another operand; its gradient is summed back.
"""

from __future__ import annotations

import math
import string

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.shape import broadcast_to

LETTERS = string.ascii_letters
ELLIPSIS = "..."


def _check_term(term: str, subscripts: str, what: str) -> None:
    named = term.replace(ELLIPSIS, "", 1)
    if term.count(ELLIPSIS) > 1 or any(c not in LETTERS for c in named):
        raise ValueError(f"einsum: {what} {term!r} of {subscripts!r} may hold only the letters a-z and A-Z "
                         f"and at most one '...'")


def _split(subscripts, count: int) -> tuple[list[str], str | None]:
    """The input terms and the output term (None when implicit) of ``subscripts``."""
    if not isinstance(subscripts, str):
        raise ValueError(f"einsum: subscripts must be a string such as 'ij,jk->ik', got {subscripts!r}")
    text = subscripts.replace(" ", "")
    if text.count("->") > 1:
        raise ValueError(f"einsum: subscripts {subscripts!r} hold more than one '->'")
    inputs, arrow, output = text.partition("->")
    terms = inputs.split(",")
    if len(terms) != count:
        raise ValueError(f"einsum: subscripts {subscripts!r} name {len(terms)} operand(s) but {count} were given")
    for k, term in enumerate(terms):
        _check_term(term, subscripts, f"operand {k}'s term")
    if arrow:
        _check_term(output, subscripts, "the output term")
    return terms, (output if arrow else None)


def _expand_ellipses(terms, shapes, subscripts: str) -> tuple[list[str], str]:
    """``terms`` with each '...' replaced by letters unused in ``subscripts`` (one per axis
    it covers, aligned on the right), and the letters of the longest '...'."""
    extras = []
    for k, (term, shape) in enumerate(zip(terms, shapes)):
        named = len(term.replace(ELLIPSIS, ""))
        extra = len(shape) - named
        if extra < 0 or (extra > 0 and ELLIPSIS not in term):
            raise ShapeError(f"einsum: operand {k} of shape {tuple(shape)} has {len(shape)} axes but its term "
                             f"{term!r} in {subscripts!r} names {named}")
        extras.append(extra if ELLIPSIS in term else 0)
    spare = [c for c in LETTERS if c not in subscripts]
    longest = max(extras, default=0)
    if longest > len(spare):
        raise ValueError(f"einsum: '...' covers {longest} axes but only {len(spare)} letters are left unused")
    ellipsis = "".join(spare[:longest])
    expanded = [term.replace(ELLIPSIS, ellipsis[longest - extra:]) for term, extra in zip(terms, extras)]
    return expanded, ellipsis


def _output_term(terms, output, ellipsis: str, subscripts: str) -> str:
    if output is None:
        named = "".join(t.replace(ELLIPSIS, "") for t in terms)
        return ellipsis + "".join(sorted(c for c in set(named) if named.count(c) == 1))
    output = output.replace(ELLIPSIS, ellipsis)
    inputs = "".join(terms).replace(ELLIPSIS, ellipsis)
    for c in output:
        if output.count(c) > 1:
            raise ValueError(f"einsum: the output of {subscripts!r} repeats the letter {c!r}")
        if c not in inputs:
            raise ValueError(f"einsum: the output letter {c!r} of {subscripts!r} is in no operand's term")
    return output


def _letter_sizes(terms, shapes, ellipsis: str, subscripts: str) -> dict[str, int]:
    """The length of each letter's axis: equal wherever the letter appears, or 1 (broadcast)."""
    sizes: dict[str, int] = {}
    for k, (term, shape) in enumerate(zip(terms, shapes)):
        own: dict[str, int] = {}
        for c, n in zip(term, shape):
            name = "an axis under '...'" if c in ellipsis else f"letter {c!r}"
            if own.setdefault(c, n) != n:
                raise ShapeError(f"einsum: operand {k} of shape {tuple(shape)} repeats {name} of {subscripts!r} "
                                 f"over axes of lengths {own[c]} and {n}; a repeated letter needs equal lengths")
            seen = sizes.get(c, 1)
            if n != 1 and seen not in (1, n):
                raise ShapeError(f"einsum: {name} of {subscripts!r} has length {seen} in one operand and {n} in "
                                 f"operand {k} (operand shapes {[tuple(s) for s in shapes]}); lengths must "
                                 f"match or be 1")
            if n != 1:                   # a length 1 broadcasts to the other, 0 included
                sizes[c] = n
            else:
                sizes.setdefault(c, 1)
    return sizes


def _contract(terms, arrays, output: str):
    if len(arrays) == 2 and all(len(set(t)) == len(t) for t in terms):
        return _contract_pair(terms[0], terms[1], arrays[0], arrays[1], output)
    spec = ",".join(terms) + "->" + output
    return backend.xp.einsum(spec, *arrays, optimize=len(arrays) >= 3)


def _sum_private(term: str, array, other: str, output: str):
    """``array`` summed over the letters of ``term`` found neither in ``other`` nor in ``output``."""
    private = [i for i, c in enumerate(term) if c not in other and c not in output]
    if not private:
        return term, array
    kept = "".join(c for c in term if c in other or c in output)
    return kept, array.sum(axis=tuple(private))


def _contract_pair(term_a: str, term_b: str, a, b, output: str):
    """A two-operand einsum as one batched matrix product, which runs on BLAS where
    NumPy's einsum loops in C: the letters shared by both operands and the output are the
    batch, the letters shared by both operands only are summed by the product, and the
    letters kept from one operand only are the rows (from ``a``) and the columns (``b``).
    Letters with no repeat inside a term only (a diagonal goes through ``xp.einsum``)."""
    xp = backend.xp
    term_a, a = _sum_private(term_a, a, term_b, output)
    term_b, b = _sum_private(term_b, b, term_a, output)
    batch = [c for c in output if c in term_a and c in term_b]
    summed = [c for c in term_a if c in term_b and c not in output]
    rows = [c for c in term_a if c not in term_b]
    cols = [c for c in term_b if c not in term_a]
    size = dict(zip(term_a, a.shape)) | dict(zip(term_b, b.shape))

    def block(term, array, first, second):
        order = [term.index(c) for c in batch + first + second]
        shape = (math.prod(size[c] for c in batch), math.prod(size[c] for c in first),
                 math.prod(size[c] for c in second))
        return xp.transpose(array, order).reshape(shape)

    product = xp.matmul(block(term_a, a, rows, summed), block(term_b, b, summed, cols))
    letters = batch + rows + cols
    product = product.reshape([size[c] for c in letters])
    return xp.transpose(product, [letters.index(c) for c in output])


def _onto_diagonal(g, letters: str, term: str):
    """Zeros with one axis per letter of ``term``, holding ``g`` (one axis per distinct
    letter, in ``letters`` order) where the axes of a repeated letter share an index."""
    xp = backend.xp
    out = xp.zeros(tuple(g.shape[letters.index(c)] for c in term), dtype=g.dtype)
    grid = xp.ix_(*[xp.arange(n) for n in g.shape])
    out[tuple(grid[letters.index(c)] for c in term)] = g
    return out


class Einsum(Function):
    """One einsum over any number of operands; ``subscripts`` is parsed when the shapes are known."""

    def forward(self, *arrays):
        xp = backend.xp
        shapes = [a.shape for a in arrays]
        written, output = _split(self.subscripts, len(arrays))
        self.terms, ellipsis = _expand_ellipses(written, shapes, self.subscripts)
        self.output = _output_term(written, output, ellipsis, self.subscripts)
        self.sizes = _letter_sizes(self.terms, shapes, ellipsis, self.subscripts)
        self.shapes = shapes
        self.arrays = [a if a.shape == self._full_shape(k) else xp.broadcast_to(a, self._full_shape(k))
                       for k, a in enumerate(arrays)]
        return _contract(self.terms, self.arrays, self.output)

    def _full_shape(self, k: int) -> tuple[int, ...]:
        return tuple(self.sizes[c] for c in self.terms[k])

    def backward(self, dy):
        return tuple(self._operand_gradient(k, dy) if needed else None for k, needed in enumerate(self.needs_grad))

    def _operand_gradient(self, k: int, dy):
        xp = backend.xp
        term, others = self.terms[k], [j for j in range(len(self.terms)) if j != k]
        reachable = set(self.output).union(*(self.terms[j] for j in others))
        letters = "".join(dict.fromkeys(term))
        g = _contract([self.output] + [self.terms[j] for j in others], [dy] + [self.arrays[j] for j in others],
                      "".join(c for c in letters if c in reachable))
        # letters summed inside this operand alone: each of their values got the same gradient
        g = g.reshape([self.sizes[c] if c in reachable else 1 for c in letters])
        g = xp.broadcast_to(g, [self.sizes[c] for c in letters])
        if len(letters) < len(term):
            g = _onto_diagonal(g, letters, term)
        return unbroadcast(g, self.shapes[k])

    def backward_graph(self, dy):
        return tuple(self._operand_gradient_graph(k, dy) if needed else None
                     for k, needed in enumerate(self.needs_grad))

    def _full_operand(self, j: int) -> Tensor:
        """Input j as a tensor broadcast to the letters' full lengths (as ``self.arrays``)."""
        x, full = self.inputs[j], self._full_shape(j)
        return x if x.shape == full else broadcast_to(x, full)

    def _operand_gradient_graph(self, k: int, dy: Tensor) -> Tensor:
        """:meth:`_operand_gradient` by recorded ops: the einsum of dJ/dY with the other
        operand tensors, broadcast along the letters summed inside X_k alone, and put on the
        diagonal of a repeated letter by an einsum with identity matrices (a constant)."""
        xp = backend.xp
        term, others = self.terms[k], [j for j in range(len(self.terms)) if j != k]
        reachable = set(self.output).union(*(self.terms[j] for j in others))
        letters = "".join(dict.fromkeys(term))
        kept = "".join(c for c in letters if c in reachable)
        spec = ",".join([self.output] + [self.terms[j] for j in others]) + "->" + kept
        g = einsum(spec, dy, *(self._full_operand(j) for j in others))
        if len(kept) < len(letters):
            g = g.reshape([self.sizes[c] if c in reachable else 1 for c in letters])
            g = broadcast_to(g, tuple(self.sizes[c] for c in letters))
        if len(letters) < len(term):
            # X_k's axes repeat a letter: each repeat after the first gets a fresh letter, tied
            # to the first by an identity matrix, so that g lands on the diagonal
            spare = iter(c for c in LETTERS if c not in letters)
            fresh, ties, seen = "", [], set()
            for c in term:
                if c in seen:
                    f = next(spare)
                    ties.append(c + f)
                    fresh += f
                else:
                    seen.add(c)
                    fresh += c
            identities = [xp.eye(self.sizes[t[0]], dtype=dy.dtype) for t in ties]
            g = einsum(",".join([letters] + ties) + "->" + fresh, g, *identities)
        return sum_to(g, self.shapes[k])


def einsum(subscripts: str, *operands) -> Tensor:
    """The sum of products that ``subscripts`` names, e.g. ``einsum('bij,bjk->bik', a, b)``
    (a batched matmul), ``einsum('ii->', a)`` (a trace) or ``einsum('bi,ij,bj->b', x, w, y)``."""
    if not operands:
        raise ValueError(f"einsum: no operands given for subscripts {subscripts!r}")
    return Einsum.apply(*operands, subscripts=subscripts)
