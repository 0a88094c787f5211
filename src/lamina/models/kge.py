"""Knowledge-graph embeddings: a score f(h, r, t) for every (head, relation, tail) triple,
high for true facts and low for false ones.

    TransE   (Bordes et al. 2013)   f = -||h + r - t||_p                 (p = 1 or 2)
    DistMult (Yang et al. 2015)     f = <h, r, t> = sum_k h_k r_k t_k     (symmetric in h, t)
    ComplEx  (Trouillon et al. 2016) f = Re(<h, r, conj(t)>)             (h, r, t complex)
    RotatE   (Sun et al. 2019)      f = -sum_k |h_k r_k - t_k|,  r_k = e^(i theta_k)

``dim`` is the number of real numbers per entity. The complex models need it even: an entity
of ComplEx or RotatE is a complex vector of dim / 2 entries stored in ONE real row, the real
parts in the first half and the imaginary parts in the second, row = [Re(e) | Im(e)]. ComplEx
stores its relations the same way; RotatE stores only the dim / 2 phases theta of each
relation, so every r_k has modulus 1 and h o r rotates h entry by entry. RotatE's distance
is the sum over the complex entries of their moduli, as in the paper's reference code.

Every model gives ``score_hrt(h, r, t)`` for (B,) id arrays (B,), ``score_t(h, r)``: the
scores (B, n_entities) of every entity as the tail (1-N scoring, evaluation), and
``score_h(r, t)``: of every entity as the head. ``model(h, r, t)`` is ``score_hrt``.
"""

from __future__ import annotations

import math

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

from .id_inputs import checked_ids

__all__ = ["KGEModel", "TransE", "DistMult", "ComplEx", "RotatE"]


class KGEModel(Module):
    """The tables and id checks shared by the scoring models: ``entities`` (n_entities, dim)
    and ``relations`` (n_relations, relation_dim), initialised from U(-bound, bound)."""

    reads_ids = True
    complex_valued = False

    def __init__(self, n_entities: int, n_relations: int, dim: int, init_bound: float | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        for value, what in ((n_entities, "n_entities"), (n_relations, "n_relations"), (dim, "dim")):
            positive_int(value, f"{who}: {what}")
        if self.complex_valued and dim % 2:
            raise ValueError(f"{who}: dim must be even (dim / 2 complex entries stored as [real | imaginary] "
                             f"halves), got dim={dim}")
        self.n_entities, self.n_relations, self.dim = n_entities, n_relations, dim
        bound = 6.0 / math.sqrt(dim) if init_bound is None else float(init_bound)
        self.init_bound = bound
        uniform = {"name": "uniform", "limit": bound}
        self.entities = Embedding(n_entities, dim, embeddings_init=uniform)
        self.relations = Embedding(n_relations, self.relation_dim(), embeddings_init=self.relation_init(bound))
        self.build(None)

    def relation_dim(self) -> int:
        return self.dim

    def relation_init(self, bound: float):
        return {"name": "uniform", "limit": bound}

    def build(self, input_shape) -> None:
        for table in self.children():
            if not table.built:
                table.build(None)
        self.built = True

    def _ids(self, ids, count: int, what: str):
        return checked_ids(ids, count, what, self._label())

    def _lookup(self, h=None, r=None, t=None):
        """Embeddings of the given id arrays, (B, dim) each, checked for range and length."""
        out, lengths = [], set()
        for ids, count, table, what in ((h, self.n_entities, self.entities, "head"),
                                        (r, self.n_relations, self.relations, "relation"),
                                        (t, self.n_entities, self.entities, "tail")):
            if ids is None:
                continue
            ids = self._ids(ids, count, what)
            lengths.add(ids.shape[0])
            out.append(table(ids))
        if len(lengths) > 1:
            raise ShapeError(f"{self._label()}: the head, relation and tail ids must have one length, got "
                             f"lengths {sorted(lengths)}")
        return out

    def forward(self, h, r, t) -> Tensor:
        return self.score_hrt(h, r, t)

    def score_hrt(self, h, r, t) -> Tensor:
        """Scores (B,) of the triples (h[i], r[i], t[i])."""
        raise NotImplementedError

    def score_t(self, h, r) -> Tensor:
        """Scores (B, n_entities): column e is the score of (h[i], r[i], e)."""
        raise NotImplementedError

    def score_h(self, r, t) -> Tensor:
        """Scores (B, n_entities): column e is the score of (e, r[i], t[i])."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"n_entities": self.n_entities, "n_relations": self.n_relations, "dim": self.dim,
                "init_bound": self.init_bound, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.n_entities} entities, {self.n_relations} relations, dim={self.dim}"


def _halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """[Re | Im] rows -> (Re, Im)."""
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


@register_layer
class TransE(KGEModel):
    """f(h, r, t) = -||h + r - t||_p: a relation translates its heads onto its tails.

    ``p``: 1 or 2. score_t and score_h form a (B, n_entities, dim) difference."""

    def __init__(self, n_entities: int, n_relations: int, dim: int, p: int = 1, init_bound: float | None = None,
                 name: str | None = None):
        if p not in (1, 2):
            raise ValueError(f"TransE: p must be 1 or 2, got {p!r}")
        super().__init__(n_entities, n_relations, dim, init_bound, name)
        self.p = p

    def score_hrt(self, h, r, t) -> Tensor:
        h, r, t = self._lookup(h, r, t)
        return -F.norm(h + r - t, self.p, axis=-1)

    def score_t(self, h, r) -> Tensor:
        h, r = self._lookup(h, r)
        query = F.reshape(h + r, (-1, 1, self.dim))
        return -F.norm(query - self.entities.weight, self.p, axis=-1)

    def score_h(self, r, t) -> Tensor:
        r, t = self._lookup(r=r, t=t)
        target = F.reshape(t - r, (-1, 1, self.dim))
        return -F.norm(self.entities.weight - target, self.p, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p}


@register_layer
class DistMult(KGEModel):
    """f(h, r, t) = sum_k h_k r_k t_k, a bilinear form with a diagonal matrix, hence
    symmetric: f(h, r, t) = f(t, r, h)."""

    def score_hrt(self, h, r, t) -> Tensor:
        h, r, t = self._lookup(h, r, t)
        return F.sum(h * r * t, axis=-1)

    def score_t(self, h, r) -> Tensor:
        h, r = self._lookup(h, r)
        return F.matmul(h * r, F.transpose(self.entities.weight))

    def score_h(self, r, t) -> Tensor:
        r, t = self._lookup(r=r, t=t)
        return F.matmul(r * t, F.transpose(self.entities.weight))


@register_layer
class ComplEx(KGEModel):
    """f(h, r, t) = Re(sum_k h_k r_k conj(t_k)) with h, r, t complex (dim / 2 entries each,
    rows [Re | Im]); with q = h r,  f = Re(q) . Re(t) + Im(q) . Im(t)."""

    complex_valued = True

    def score_hrt(self, h, r, t) -> Tensor:
        h, r, t = self._lookup(h, r, t)
        return F.sum(_complex_product_rows(h, r) * t, axis=-1)

    def score_t(self, h, r) -> Tensor:
        h, r = self._lookup(h, r)
        return F.matmul(_complex_product_rows(h, r), F.transpose(self.entities.weight))

    def score_h(self, r, t) -> Tensor:
        # f = Re(h . x) with x = r conj(t): Re(h) . Re(x) - Im(h) . Im(x)
        r, t = self._lookup(r=r, t=t)
        r_re, r_im = _halves(r)
        t_re, t_im = _halves(t)
        x_re = r_re * t_re + r_im * t_im
        x_im = r_im * t_re - r_re * t_im
        return F.matmul(F.concat([x_re, -x_im], axis=-1), F.transpose(self.entities.weight))


def _complex_product_rows(a: Tensor, b: Tensor) -> Tensor:
    """Entry-wise product of complex rows [Re | Im] as a row [Re | Im]."""
    a_re, a_im = _halves(a)
    b_re, b_im = _halves(b)
    return F.concat([a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re], axis=-1)


@register_layer
class RotatE(KGEModel):
    """f(h, r, t) = -sum_k |h_k e^(i theta_k) - t_k|: each relation rotates the complex
    entries of its heads by its phases theta (the relation table, (n_relations, dim / 2),
    initialised from U(-pi, pi)).

    Rotations compose and invert: r1 o r2 has phases theta1 + theta2, and the inverse of r
    has -theta, so RotatE can model composition, inversion and (theta in {0, pi}) symmetry."""

    complex_valued = True

    def relation_dim(self) -> int:
        return self.dim // 2

    def relation_init(self, bound: float):
        return {"name": "uniform", "limit": math.pi}

    def _rotated(self, e: Tensor, theta: Tensor, sign: float = 1.0) -> tuple[Tensor, Tensor]:
        """e o e^(i sign theta) as (Re, Im)."""
        e_re, e_im = _halves(e)
        cos, sin = F.cos(theta), sign * F.sin(theta)
        return e_re * cos - e_im * sin, e_re * sin + e_im * cos

    @staticmethod
    def _distance(d_re: Tensor, d_im: Tensor) -> Tensor:
        return F.sum(F.sqrt(d_re * d_re + d_im * d_im), axis=-1)

    def score_hrt(self, h, r, t) -> Tensor:
        h, theta, t = self._lookup(h, r, t)
        q_re, q_im = self._rotated(h, theta)
        t_re, t_im = _halves(t)
        return -self._distance(q_re - t_re, q_im - t_im)

    def score_t(self, h, r) -> Tensor:
        h, theta = self._lookup(h, r)
        q_re, q_im = self._rotated(h, theta)
        half = self.dim // 2
        e_re, e_im = _halves(self.entities.weight)
        return -self._distance(F.reshape(q_re, (-1, 1, half)) - e_re, F.reshape(q_im, (-1, 1, half)) - e_im)

    def score_h(self, r, t) -> Tensor:
        # |h r - t| = |h - t conj(r)| since |r| = 1
        theta, t = self._lookup(r=r, t=t)
        q_re, q_im = self._rotated(t, theta, sign=-1.0)
        half = self.dim // 2
        e_re, e_im = _halves(self.entities.weight)
        return -self._distance(e_re - F.reshape(q_re, (-1, 1, half)), e_im - F.reshape(q_im, (-1, 1, half)))
