"""A linear-chain conditional random field over tag sequences, with pytorch-crf's interface
(``torchcrf.CRF``) and parameters.

For emission scores E (one row of K tag scores per step, e.g. a BiLSTM's outputs through a
Dense layer) the layer scores a tag path y_1..y_L as

    s(y) = start[y_1] + sum_t E[t, y_t] + sum_{t > 1} A[y_{t-1}, y_t] + end[y_L]

and models p(y | x) = exp(s(y)) / Z (:mod:`lamina.functional.crf` has the forward algorithm
for log Z). Parameters: ``start_transitions`` (K,), ``end_transitions`` (K,) and
``transitions`` (K, K), A[i, j] the score of tag i followed by tag j, all drawn from
U(-0.1, 0.1) as pytorch-crf's.

* ``crf(emissions, tags, mask=None, reduction="sum")`` is the log-likelihood
  log p(y | x) = s(y) - log Z of the gold tags: maximise it (the loss is its negative);
  ``reduction`` 'none' gives one value per sequence, 'sum' and 'mean' their sum and mean over
  the batch, 'token_mean' the sum divided by the number of real steps.
* ``crf.decode(emissions, mask=None, nbest=None)``: the Viterbi path of each sequence, a list
  of tag ids over its real steps; with ``nbest=n`` the n best paths of each, best first.
* ``crf.marginal_probabilities(emissions, mask=None)``: p(y_t = j | x), zero at padded steps.

``batch_first=True`` (lamina's default; pytorch-crf's is False) takes emissions (N, T, K) and
tags and mask (N, T); ``batch_first=False`` takes them time first, (T, N, K) and (T, N).
The mask is boolean (or 0/1 integers), True at the real steps, which must come first in each
sequence (padding at the end), and the first step must be on; tags at padded steps are not
read (any value, -100 included). The transition scores are used in the emissions' dtype.

Constraints (AllenNLP's ``ConditionalRandomField(constraints=...)``): ``allowed_transitions``,
a boolean (K + 2, K + 2) matrix with index K for the start and K + 1 for the end of a sequence
(as :func:`lamina.text.bio_allowed_transitions` returns), or (K, K) for the tag-to-tag moves
alone. Every forbidden move scores ``FORBIDDEN`` (-10000) in place of its learned parameter,
in training and decoding alike, so decoding never picks one when a legal path exists, and a
gold path that breaks a rule gives a large but finite loss.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.functional.crf import crf_log_partition, crf_path_score
from lamina.functional.crf import crf_marginals as _crf_marginals
from lamina.functional.crf_decode import crf_nbest_paths
from lamina.functional.elementwise import where
from lamina.nn import init as initializers
from lamina.nn.layer import describe, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["CRF", "FORBIDDEN"]

#: The score of a transition that ``allowed_transitions`` forbids.
FORBIDDEN = -10000.0

_REDUCTIONS = ("none", "sum", "mean", "token_mean")


@register_layer
class CRF(Module):
    """A linear-chain CRF over ``num_tags`` tags (see the module notes)."""

    def __init__(self, num_tags: int, batch_first: bool = True, allowed_transitions=None, name: str | None = None):
        super().__init__(name=name)
        positive_int(num_tags, "CRF: num_tags")
        self.num_tags = num_tags
        self.batch_first = bool(batch_first)
        self.allowed_transitions = self._check_allowed(allowed_transitions)
        dtype = backend.get_default_dtype()
        draw = initializers.uniform(0.1)
        self.add_parameter("start_transitions", draw((num_tags,), num_tags, num_tags, dtype))
        self.add_parameter("end_transitions", draw((num_tags,), num_tags, num_tags, dtype))
        self.add_parameter("transitions", draw((num_tags, num_tags), num_tags, num_tags, dtype))
        self.built = True

    # -- the log-likelihood ------------------------------------------------------------------
    def forward(self, emissions, tags, mask=None, reduction: str = "sum") -> Tensor:
        """log p(tags | emissions) = s(tags) - log Z, reduced by ``reduction``."""
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{self._label()}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        emissions = self._time_first(self._check_emissions(emissions))
        mask = self._check_mask(mask, emissions)
        tags = self._check_tags(tags, emissions, mask)
        transitions, start, end = (cast(s, emissions.dtype) for s in self.scores())
        gold = crf_path_score(emissions, transitions, start, end, tags, mask)
        log_likelihood = gold - crf_log_partition(emissions, transitions, start, end, mask)
        if reduction == "none":
            return log_likelihood
        if reduction == "sum":
            return log_likelihood.sum()
        if reduction == "mean":
            return log_likelihood.mean()
        return log_likelihood.sum() / float(mask.sum())

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """(transitions, start, end) as the model uses them: the parameters, with the
        forbidden moves (if any) at ``FORBIDDEN``."""
        allowed = self.allowed_transitions
        if allowed is None:
            return self.transitions, self.start_transitions, self.end_transitions
        k = self.num_tags
        return (where(allowed[:k, :k], self.transitions, FORBIDDEN),
                where(allowed[k, :k], self.start_transitions, FORBIDDEN),
                where(allowed[:k, k + 1], self.end_transitions, FORBIDDEN))

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, emissions, mask=None, nbest: int | None = None) -> list:
        """The Viterbi path of each sequence (a list of tag ids over its real steps); with
        ``nbest`` an int, a list of up to that many paths per sequence, best first."""
        if nbest is not None:
            positive_int(nbest, f"{self._label()}.decode: nbest")
        emissions = self._time_first(self._check_emissions(emissions))
        mask = self._check_mask(mask, emissions)
        transitions, start, end = (s.data.astype(emissions.dtype, copy=False) for s in self.scores())
        found = crf_nbest_paths(emissions.data, transitions, start, end, mask, 1 if nbest is None else nbest)
        if nbest is None:
            return [paths[0][0] for paths in found]
        return [[path for path, _ in paths] for paths in found]

    def marginal_probabilities(self, emissions, mask=None) -> Tensor:
        """p(y_t = j | x) for every step and tag, in the emissions' layout, zero at the
        padded steps (a constant tensor: no gradient flows through it)."""
        emissions = self._time_first(self._check_emissions(emissions))
        mask = self._check_mask(mask, emissions)
        transitions, start, end = (s.data.astype(emissions.dtype, copy=False) for s in self.scores())
        marginals = _crf_marginals(emissions.data, transitions, start, end, mask)
        return Tensor._wrap(marginals.transpose(1, 0, 2) if self.batch_first else marginals)

    # -- checks ------------------------------------------------------------------------------
    def _layout(self, last: str = "") -> str:
        return f"(batch, time{last})" if self.batch_first else f"(time, batch{last})"

    def _time_first(self, x: Tensor) -> Tensor:
        return x.transpose(1, 0, 2) if self.batch_first else x

    def _check_emissions(self, emissions) -> Tensor:
        emissions = as_tensor(emissions)
        k = self.num_tags
        if emissions.dtype.kind != "f":
            raise TypeError(f"{self._label()}: emissions must be floating point scores, got {describe(emissions)}")
        if emissions.ndim != 3 or emissions.shape[-1] != k or 0 in emissions.shape[:2]:
            raise ShapeError(f"{self._label()}: got emissions of {describe(emissions)}; expected "
                             f"{self._layout(f', {k}')}: scores of the {k} tags at each step of a non-empty batch")
        return emissions

    def _check_mask(self, mask, emissions: Tensor):
        """The mask, time first, as booleans (all True when None), checked."""
        xp = backend.xp
        steps, batch = emissions.shape[:2]
        if mask is None:
            return xp.ones((steps, batch), dtype=bool)
        data = xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
        expected = (batch, steps) if self.batch_first else (steps, batch)
        if data.shape != expected:
            raise ShapeError(f"{self._label()}: got a mask of {describe(data)}; expected {self._layout()} = "
                             f"{expected} as the emissions")
        if data.dtype != bool:
            if data.dtype.kind not in "iu" or ((data != 0) & (data != 1)).any():
                raise TypeError(f"{self._label()}: the mask must be boolean (or 0/1 integers), got {describe(data)}")
            data = data.astype(bool)
        data = data.T if self.batch_first else data
        if not data[0].all():
            rows = xp.flatnonzero(~data[0]).tolist()
            raise ValueError(f"{self._label()}: the mask's first step must be on for every sequence; it is off "
                             f"in sequence(s) {rows}")
        if (data[1:] & ~data[:-1]).any():
            rows = xp.flatnonzero((data[1:] & ~data[:-1]).any(axis=0)).tolist()
            raise ValueError(f"{self._label()}: the mask must be on for a prefix of each sequence (padding at the "
                             f"end); sequence(s) {rows} have a real step after a padded one")
        return data

    def _check_tags(self, tags, emissions: Tensor, mask):
        """The tags, time first, as integers in [0, num_tags) (0 at the padded steps)."""
        xp = backend.xp
        data = xp.asarray(tags.data if isinstance(tags, Tensor) else tags)
        steps, batch, k = emissions.shape
        expected = (batch, steps) if self.batch_first else (steps, batch)
        if data.dtype.kind not in "iu":
            raise TypeError(f"{self._label()}: tags must be integer tag ids, got {describe(data)}")
        if data.shape != expected:
            raise ShapeError(f"{self._label()}: got tags of {describe(data)}; expected {self._layout()} = "
                             f"{expected} as the emissions")
        data = data.T if self.batch_first else data
        real = data[mask]
        if real.size and (real.min() < 0 or real.max() >= k):
            bad = int(real.min()) if real.min() < 0 else int(real.max())
            raise ValueError(f"{self._label()}: tag id {bad} at a real step is out of range for num_tags={k}")
        return xp.where(mask, data, 0)

    def _check_allowed(self, allowed):
        if allowed is None:
            return None
        xp = backend.xp
        data = xp.asarray(allowed)
        k = self.num_tags
        if data.dtype != bool:
            raise TypeError(f"{self._label()}: allowed_transitions must be a boolean matrix, got {describe(data)}")
        if data.shape == (k, k):
            full = xp.ones((k + 2, k + 2), dtype=bool)
            full[:k, :k] = data
            return full
        if data.shape != (k + 2, k + 2):
            raise ShapeError(f"{self._label()}: allowed_transitions of {describe(data)} does not fit num_tags={k}; "
                             f"expected ({k + 2}, {k + 2}) (start and end rows included) or ({k}, {k})")
        return data.copy()

    # -- configuration -----------------------------------------------------------------------
    def get_config(self) -> dict:
        allowed = self.allowed_transitions
        return {"num_tags": self.num_tags, "batch_first": self.batch_first,
                "allowed_transitions": None if allowed is None else allowed.tolist(), "name": self.name}

    def extra_repr(self) -> str:
        constrained = "" if self.allowed_transitions is None else ", constrained"
        return f"num_tags={self.num_tags}, batch_first={self.batch_first}{constrained}"
