"""Candidate-function libraries for SINDy: Theta(X), one column per candidate term.

* :class:`PolynomialLibrary`: every monomial of total degree <= ``degree`` in the input columns,
  ordered by degree, then as ``itertools.combinations_with_replacement`` (sklearn's
  PolynomialFeatures order): 1, x0, x1, x0^2, x0 x1, x1^2, ...
* :class:`FourierLibrary`: sin(k x_j), cos(k x_j) for k = 1..n_frequencies, frequency-major.
* :class:`CustomLibrary`: given functions, each applied to every input column (or, with
  ``arity`` > 1 in the function, to every combination of that many columns).
* ``a + b`` concatenates the columns of two libraries; ``a * b`` tensors them (every product
  of a column of ``a`` with a column of ``b``).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence

import numpy

from lamina.errors import ShapeError

__all__ = ["ConcatLibrary", "CustomLibrary", "FeatureLibrary", "FourierLibrary", "PolynomialLibrary",
           "TensoredLibrary"]


def _as_matrix(x, who: str) -> numpy.ndarray:
    x = numpy.asarray(x, dtype=numpy.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ShapeError(f"{who}: expected samples of shape (n_samples, n_features), got {x.shape}")
    return x


def default_names(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


class FeatureLibrary:
    """A map from states (n_samples, n_inputs) to candidate terms (n_samples, n_output_features)."""

    def transform(self, x) -> numpy.ndarray:
        raise NotImplementedError

    def feature_names(self, input_names: Sequence[str] | None = None, n_inputs: int | None = None) -> list[str]:
        raise NotImplementedError

    def n_output_features(self, n_inputs: int) -> int:
        return len(self.feature_names(n_inputs=n_inputs))

    def _names(self, input_names, n_inputs) -> list[str]:
        if input_names is not None:
            return list(input_names)
        if n_inputs is None:
            raise ValueError(f"{type(self).__name__}.feature_names: give input_names or n_inputs")
        return default_names(n_inputs)

    def __add__(self, other: FeatureLibrary) -> ConcatLibrary:
        return ConcatLibrary([self, other])

    def __mul__(self, other: FeatureLibrary) -> TensoredLibrary:
        return TensoredLibrary(self, other)


class PolynomialLibrary(FeatureLibrary):
    """Monomials of total degree 0 (with ``include_bias``) to ``degree``; ``interaction_only``
    keeps only products of distinct inputs (no powers)."""

    def __init__(self, degree: int = 2, include_bias: bool = True, interaction_only: bool = False):
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(f"PolynomialLibrary: degree must be an int >= 0, got {degree!r}")
        self.degree, self.include_bias, self.interaction_only = degree, bool(include_bias), bool(interaction_only)

    def powers(self, n_inputs: int) -> list[tuple[int, ...]]:
        """The input indices multiplied in each term (an empty tuple is the constant)."""
        choose = itertools.combinations if self.interaction_only else itertools.combinations_with_replacement
        start = 0 if self.include_bias else 1
        return [c for d in range(start, self.degree + 1) for c in choose(range(n_inputs), d)]

    def transform(self, x) -> numpy.ndarray:
        x = _as_matrix(x, "PolynomialLibrary")
        return numpy.stack([numpy.prod(x[:, list(c)], axis=1) for c in self.powers(x.shape[1])], axis=1)

    def feature_names(self, input_names=None, n_inputs=None) -> list[str]:
        names = self._names(input_names, n_inputs)
        out = []
        for combo in self.powers(len(names)):
            if not combo:
                out.append("1")
                continue
            counts = {i: combo.count(i) for i in sorted(set(combo))}
            out.append(" ".join(names[i] if p == 1 else f"{names[i]}^{p}" for i, p in counts.items()))
        return out


class FourierLibrary(FeatureLibrary):
    """sin(k x_j) and cos(k x_j), k = 1..``n_frequencies``, for every input j."""

    def __init__(self, n_frequencies: int = 1, include_sin: bool = True, include_cos: bool = True):
        if isinstance(n_frequencies, bool) or not isinstance(n_frequencies, int) or n_frequencies < 1:
            raise ValueError(f"FourierLibrary: n_frequencies must be a positive int, got {n_frequencies!r}")
        if not (include_sin or include_cos):
            raise ValueError("FourierLibrary: include_sin and include_cos cannot both be False")
        self.n_frequencies, self.include_sin, self.include_cos = n_frequencies, include_sin, include_cos

    def _terms(self, n_inputs):
        for k in range(1, self.n_frequencies + 1):
            for j in range(n_inputs):
                if self.include_sin:
                    yield "sin", k, j
                if self.include_cos:
                    yield "cos", k, j

    def transform(self, x) -> numpy.ndarray:
        x = _as_matrix(x, "FourierLibrary")
        fns = {"sin": numpy.sin, "cos": numpy.cos}
        return numpy.stack([fns[f](k * x[:, j]) for f, k, j in self._terms(x.shape[1])], axis=1)

    def feature_names(self, input_names=None, n_inputs=None) -> list[str]:
        names = self._names(input_names, n_inputs)
        return [f"{f}({k} {names[j]})" for f, k, j in self._terms(len(names))]


class CustomLibrary(FeatureLibrary):
    """User functions: ``functions[i]`` (taking one array per argument) applied to every
    combination of as many input columns as it has arguments; ``names[i]`` (taking the same
    number of input names) names the term, default ``f{i}(x0,x1)``."""

    def __init__(self, functions: Sequence[Callable], names: Sequence[Callable] | None = None):
        if not functions:
            raise ValueError("CustomLibrary: give at least one function")
        if names is not None and len(names) != len(functions):
            raise ValueError(f"CustomLibrary: {len(functions)} functions but {len(names)} name functions")
        self.functions, self.names = list(functions), None if names is None else list(names)
        self.arities = [_arity(f) for f in self.functions]

    def _terms(self, n_inputs):
        for i, arity in enumerate(self.arities):
            for combo in itertools.combinations(range(n_inputs), arity):
                yield i, combo

    def transform(self, x) -> numpy.ndarray:
        x = _as_matrix(x, "CustomLibrary")
        columns = [numpy.broadcast_to(self.functions[i](*(x[:, j] for j in combo)), (x.shape[0],))
                   for i, combo in self._terms(x.shape[1])]
        return numpy.stack(columns, axis=1).astype(numpy.float64)

    def feature_names(self, input_names=None, n_inputs=None) -> list[str]:
        names = self._names(input_names, n_inputs)
        out = []
        for i, combo in self._terms(len(names)):
            args = [names[j] for j in combo]
            out.append(self.names[i](*args) if self.names else f"f{i}({','.join(args)})")
        return out


def _arity(function: Callable) -> int:
    """The number of required positional arguments (1 for NumPy ufuncs and signature-less callables)."""
    if isinstance(function, numpy.ufunc):
        return function.nin
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 1
    required = [p for p in parameters if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return max(len(required), 1)


class ConcatLibrary(FeatureLibrary):
    """The columns of several libraries side by side."""

    def __init__(self, libraries: Sequence[FeatureLibrary]):
        self.libraries = []
        for library in libraries:
            self.libraries += library.libraries if isinstance(library, ConcatLibrary) else [library]

    def transform(self, x) -> numpy.ndarray:
        return numpy.concatenate([lib.transform(x) for lib in self.libraries], axis=1)

    def feature_names(self, input_names=None, n_inputs=None) -> list[str]:
        names = self._names(input_names, n_inputs)
        return [name for lib in self.libraries for name in lib.feature_names(names)]


class TensoredLibrary(FeatureLibrary):
    """Every product of a column of ``left`` with a column of ``right`` (left-major)."""

    def __init__(self, left: FeatureLibrary, right: FeatureLibrary):
        self.left, self.right = left, right

    def transform(self, x) -> numpy.ndarray:
        a, b = self.left.transform(x), self.right.transform(x)
        return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)

    def feature_names(self, input_names=None, n_inputs=None) -> list[str]:
        names = self._names(input_names, n_inputs)
        return [f"{p} {q}" for p in self.left.feature_names(names) for q in self.right.feature_names(names)]
