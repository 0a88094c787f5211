"""Vector-quantisation layers: a learned codebook (VQ-VAE), its exponential-moving-average
variant, residual VQ and finite scalar quantisation.

:class:`VectorQuantizer` (van den Oord et al. 2017) learns the codebook by gradient descent
on ||sg(z) - e_k||^2 + beta ||z - sg(e_k)||^2 (:func:`lamina.functional.vector_quantize`).

:class:`VectorQuantizerEMA` (the paper's appendix, Razavi et al. 2019, sonnet's
``VectorQuantizerEMA``) moves each code to the running mean of the vectors assigned to it
instead, in training mode, after every call: with the one-hot assignments o (n, K),

    N_j <- gamma N_j + (1 - gamma) sum_i o_ij             (cluster sizes)
    m_j <- gamma m_j + (1 - gamma) sum_i o_ij z_i          (sums of the assigned vectors)
    N'_j = (N_j + eps) / (n_N + K eps) n_N,  n_N = sum_j N_j   (Laplace smoothing)
    e_j = m_j / N'_j

(gamma = ``decay``). With ``zero_debias`` (sonnet 2) N and m start at 0 and are read as
hidden / (1 - gamma^t) after t updates; without it (sonnet 1 and the paper's code) N starts
at 0 and m at the initial codebook, read as they are (an unused code then shrinks towards 0
in the first case and drifts away in the second). Its loss is the commitment term
beta ||z - sg(e_k)||^2 alone. ``dead_code_threshold``: a code whose (unsmoothed) cluster size
falls below it is restarted on a random input vector of the batch.

:class:`ResidualVQ` (SoundStream, Zeghidour et al. 2021; EnCodec) quantises the input, then what
the first codes left over, and so on: z_q = sum_s e^(s), r^(s+1) = r^(s) - sg(e^(s)); z is coded
by Q indices, Q log2(K) bits. Quantizer dropout trains every prefix of the stages, so that the
first n_q of them can code at a lower bitrate.

:class:`FSQ` (Mentzer et al. 2023) rounds each of d bounded channels to a few levels
(:func:`lamina.functional.finite_scalar_quantize`): no codebook, no loss.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.segment import take_rows
from lamina.functional.vector_quantize import (
    VQResult,
    check_levels,
    codebook_perplexity,
    finite_scalar_quantize,
    fsq_codes_to_indices,
    fsq_indices_to_codes,
    nearest_codes,
    straight_through,
    vector_quantize,
)
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["FSQ", "ResidualVQ", "VectorQuantizer", "VectorQuantizerEMA"]


def _check_vectors(layer: Module, z: Tensor, dim: int) -> None:
    if z.ndim < 1 or z.shape[-1] != dim:
        raise ShapeError(f"{layer._label()}: got an input of shape {tuple(z.shape)}; expected vectors of size "
                         f"{dim} on the last axis (..., {dim})")


def _fraction(value, what: str, low_open: bool = False) -> float:
    value = float(value)
    if not (0 < value < 1 if low_open else 0 <= value < 1):
        raise ValueError(f"{what} must be in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}")
    return value


class _Codebook(Module):
    """What the two single-codebook quantisers share: sizes, the code lookup, the checks."""

    def __init__(self, num_embeddings: int, dim: int, commitment_cost: float, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.num_embeddings = positive_int(num_embeddings, f"{who}: num_embeddings")
        self.dim = positive_int(dim, f"{who}: dim")
        self.commitment_cost = float(commitment_cost)
        if self.commitment_cost < 0:
            raise ValueError(f"{who}: commitment_cost must be >= 0, got {commitment_cost!r}")

    @property
    def codebook(self):
        raise NotImplementedError

    def lookup(self, indices) -> Tensor:
        """The codes of integer ``indices`` (...): shape (..., dim)."""
        xp = backend.xp
        indices = xp.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if indices.dtype.kind not in "iu" or (indices.size and (indices.min() < 0 or
                                                                indices.max() >= self.num_embeddings)):
            raise ValueError(f"{self._label()}: code indices must be integers in [0, {self.num_embeddings}), got "
                             f"dtype {indices.dtype}" + (f", range [{indices.min()}, {indices.max()}]"
                                                         if indices.size else ""))
        return take_rows(self.codebook, indices.reshape(-1)).reshape((*indices.shape, self.dim))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}, commitment_cost={self.commitment_cost}"


@register_layer
class VectorQuantizer(_Codebook):
    """z (..., dim) -> :class:`~lamina.functional.vector_quantize.VQResult` (quantized,
    loss, perplexity, indices) with a codebook ``embeddings`` (num_embeddings, dim) learned by
    gradient descent, initialised U(-1/K, 1/K) as in the paper's code."""

    def __init__(self, num_embeddings: int, dim: int, commitment_cost: float = 0.25, name: str | None = None):
        super().__init__(num_embeddings, dim, commitment_cost, name)
        limit = 1.0 / self.num_embeddings
        table = backend.rng().uniform(-limit, limit, (self.num_embeddings, self.dim))
        self.add_parameter("embeddings", backend.xp.asarray(table, dtype=backend.get_default_dtype()))
        self.built = True

    @property
    def codebook(self):
        return self.embeddings

    def forward(self, z) -> VQResult:
        z = as_tensor(z)
        _check_vectors(self, z, self.dim)
        return vector_quantize(z, self.embeddings, self.commitment_cost)

    def get_config(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "dim": self.dim, "commitment_cost": self.commitment_cost,
                "name": self.name}


@register_layer
class VectorQuantizerEMA(_Codebook):
    """A vector quantiser whose codes follow exponential moving averages of the vectors
    assigned to them (see the module docstring); the codebook ``embeddings`` and the
    averages are buffers, updated by every call in training mode."""

    def __init__(self, num_embeddings: int, dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 epsilon: float = 1e-5, zero_debias: bool = True, dead_code_threshold: float | None = None,
                 seed: int | None = None, name: str | None = None):
        super().__init__(num_embeddings, dim, commitment_cost, name)
        self.decay = _fraction(decay, "VectorQuantizerEMA: decay", low_open=True)
        self.epsilon = float(epsilon)
        if self.epsilon <= 0:
            raise ValueError(f"VectorQuantizerEMA: epsilon must be > 0, got {epsilon!r}")
        self.zero_debias = bool(zero_debias)
        if dead_code_threshold is not None and float(dead_code_threshold) <= 0:
            raise ValueError(f"VectorQuantizerEMA: dead_code_threshold must be > 0 or None, got "
                             f"{dead_code_threshold!r}")
        self.dead_code_threshold = None if dead_code_threshold is None else float(dead_code_threshold)
        self.seed = seed
        self._rng = None if seed is None else numpy.random.default_rng(seed)
        xp, dtype = backend.xp, backend.get_default_dtype()
        table = xp.asarray(self._generator().standard_normal((self.num_embeddings, self.dim)), dtype=dtype)
        self.register_buffer("embeddings", table)
        self.register_buffer("ema_cluster_size", xp.zeros(self.num_embeddings, dtype=dtype))
        self.register_buffer("ema_dw", xp.zeros_like(table) if self.zero_debias else table.copy())
        self.register_buffer("updates", xp.zeros((), dtype=xp.int64))
        self.built = True

    @property
    def codebook(self):
        return Tensor._wrap(self.embeddings)

    def _generator(self) -> numpy.random.Generator:
        return backend.rng() if self._rng is None else self._rng

    def _averages(self):
        """The cluster sizes N and sums m as read (debiased when ``zero_debias``)."""
        if not self.zero_debias:
            return self.ema_cluster_size, self.ema_dw
        correction = 1 - self.decay ** int(self.updates)
        return self.ema_cluster_size / correction, self.ema_dw / correction

    def forward(self, z) -> VQResult:
        z = as_tensor(z)
        _check_vectors(self, z, self.dim)
        indices = nearest_codes(z, self.embeddings)
        codes = self.embeddings[indices]
        loss = self.commitment_cost * (z - Tensor._wrap(codes)).square().mean()
        if self.training:
            self._update(z.data.reshape(-1, self.dim), indices.reshape(-1))
        return VQResult(straight_through(z, codes), loss, codebook_perplexity(indices, self.num_embeddings), indices)

    def _update(self, flat, indices) -> None:
        xp, gamma = backend.xp, self.decay
        one_hot = xp.zeros((flat.shape[0], self.num_embeddings), dtype=flat.dtype)
        one_hot[xp.arange(flat.shape[0]), indices] = 1
        self.updates = self.updates + 1
        self.ema_cluster_size = gamma * self.ema_cluster_size + (1 - gamma) * one_hot.sum(axis=0)
        self.ema_dw = gamma * self.ema_dw + (1 - gamma) * (one_hot.T @ flat)
        sizes, sums = self._averages()
        dead = backend.xp.flatnonzero(sizes < self.dead_code_threshold) if self.dead_code_threshold else []
        if len(dead):
            picks = flat[self._generator().integers(0, flat.shape[0], len(dead))]
            sizes, sums = self._restart(dead, picks, sizes, sums)
        total = sizes.sum()
        smoothed = (sizes + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        self.embeddings = (sums / smoothed[:, None]).astype(self.embeddings.dtype)
        if len(dead):
            self.embeddings[dead] = sums[dead]

    def _restart(self, dead, picks, sizes, sums):
        """Dead codes move to the input vectors ``picks``, with a cluster size of one (the
        stored averages set to match)."""
        sizes, sums = sizes.copy(), sums.copy()
        sizes[dead], sums[dead] = 1, picks
        scale = 1 - self.decay ** int(self.updates) if self.zero_debias else 1
        self.ema_cluster_size = sizes * scale
        self.ema_dw = sums * scale
        return sizes, sums

    def get_config(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "dim": self.dim, "commitment_cost": self.commitment_cost,
                "decay": self.decay, "epsilon": self.epsilon, "zero_debias": self.zero_debias,
                "dead_code_threshold": self.dead_code_threshold, "seed": self.seed, "name": self.name}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay={self.decay}"


@register_layer
class ResidualVQ(Module):
    """``num_quantizers`` quantisers in turn, each on the residual the previous ones left:
    quantized = z + sg(sum_s e^(s) - z), loss = sum of the stages' losses, indices (..., Q),
    perplexity: that of the first stage. ``ema=True`` uses :class:`VectorQuantizerEMA`
    stages (the other keywords go to them).

    With ``quantizer_dropout`` (SoundStream) each example of a training batch (the first axis)
    uses only its first n ~ U{1, ..., Q} stages, so that one model serves every bitrate: its
    later indices are -1 and each stage's loss and EMA step see only the examples that use it.
    ``n_q`` (at call or :meth:`encode` time) uses the first ``n_q`` stages for every example.
    ``seed`` fixes the dropout draws and, with ``ema=True``, the stages' initial codebooks and
    restarts (a different stream per stage)."""

    def __init__(self, num_quantizers: int, num_embeddings: int, dim: int, commitment_cost: float = 0.25,
                 ema: bool = False, quantizer_dropout: bool = False, seed: int | None = None, name: str | None = None,
                 **ema_options):
        super().__init__(name=name)
        self.num_quantizers = positive_int(num_quantizers, "ResidualVQ: num_quantizers")
        self.dim = positive_int(dim, "ResidualVQ: dim")
        self.ema = bool(ema)
        if ema_options and not self.ema:
            raise ValueError(f"ResidualVQ: {sorted(ema_options)} apply to ema=True only")
        self.ema_options = ema_options
        self.quantizer_dropout = bool(quantizer_dropout)
        self.seed = seed
        self._rng = None if seed is None else numpy.random.default_rng(seed)
        for s in range(self.num_quantizers):
            if self.ema:
                stage = VectorQuantizerEMA(num_embeddings, dim, commitment_cost, seed=self._stage_seed(s),
                                           **ema_options)
            else:
                stage = VectorQuantizer(num_embeddings, dim, commitment_cost)
            setattr(self, f"stage{s}", stage)
        self.built = True

    @property
    def stages(self) -> list[_Codebook]:
        return [getattr(self, f"stage{s}") for s in range(self.num_quantizers)]

    def _stage_seed(self, s: int) -> int | None:
        if self.seed is None:
            return None
        return int(numpy.random.SeedSequence((self.seed, s + 1)).generate_state(1)[0])

    @property
    def num_embeddings(self) -> int:
        return self.stage0.num_embeddings

    def bits_per_vector(self, n_q: int | None = None) -> float:
        """n_q log2(num_embeddings): the bits that code one vector with the first ``n_q``
        stages (all by default)."""
        return self._stage_count(n_q) * math.log2(self.num_embeddings)

    def _stage_count(self, n_q) -> int:
        if n_q is None:
            return self.num_quantizers
        if isinstance(n_q, bool) or int(n_q) != n_q or not 1 <= int(n_q) <= self.num_quantizers:
            raise ValueError(f"{self._label()}: n_q must be an int in [1, {self.num_quantizers}], got {n_q!r}")
        return int(n_q)

    def forward(self, z, n_q: int | None = None) -> VQResult:
        """Quantise z (..., dim) with the first ``n_q`` stages (all by default; a random count
        per example in training with ``quantizer_dropout`` and no ``n_q``)."""
        z = as_tensor(z)
        _check_vectors(self, z, self.dim)
        count = self._stage_count(n_q)
        xp = backend.xp
        batch = z.shape[0] if z.ndim > 1 else 1
        if self.training and self.quantizer_dropout and n_q is None:
            generator = backend.rng() if self._rng is None else self._rng
            used = xp.asarray(generator.integers(1, self.num_quantizers + 1, batch))
        else:
            used = xp.full(batch, count)
        examples = z if z.ndim > 1 else z.reshape((1, self.dim))
        total = xp.zeros(examples.shape, dtype=examples.dtype)
        indices = xp.full((*examples.shape[:-1], count), -1, dtype=xp.int64)
        loss, perplexity = None, None
        for s, stage in enumerate(self.stages[:int(used.max())]):
            rows = xp.flatnonzero(used > s)
            every = len(rows) == batch
            residual = examples - Tensor._wrap(total) if every else examples[rows] - Tensor._wrap(total[rows])
            out = stage(residual)
            codes = out.quantized.data
            if every:
                total = total + codes
                indices[..., s] = out.indices
            else:
                total[rows] += codes
                indices[rows, ..., s] = out.indices
            loss = out.loss if loss is None else loss + out.loss
            perplexity = out.perplexity if perplexity is None else perplexity
        if z.ndim == 1:
            total, indices = total[0], indices[0]
        return VQResult(straight_through(z, total), loss, perplexity, indices)

    def encode(self, z, n_q: int | None = None) -> numpy.ndarray:
        """The indices (..., n_q) of z (..., dim) with the first ``n_q`` stages (all by
        default): no loss, no update, no dropout."""
        z = as_tensor(z)
        _check_vectors(self, z, self.dim)
        residual, indices = z.data, []
        for stage in self.stages[:self._stage_count(n_q)]:
            table = stage.codebook.data
            found = nearest_codes(residual, table)
            residual = residual - table[found]
            indices.append(found)
        return backend.xp.stack(indices, axis=-1)

    def lookup(self, indices) -> Tensor:
        """The summed codes of ``indices`` (..., n) of the first n <= Q stages, -1 marking a
        stage an example did not use: shape (..., dim)."""
        xp = backend.xp
        indices = xp.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if indices.ndim < 1 or not 1 <= indices.shape[-1] <= self.num_quantizers:
            raise ShapeError(f"{self._label()}: indices of shape {tuple(indices.shape)}; expected (..., n) with "
                             f"1 <= n <= {self.num_quantizers}, one index per stage")
        if indices.dtype.kind in "iu" and indices.size and indices.min() < -1:
            raise ValueError(f"{self._label()}: code indices must be in [0, {self.num_embeddings}) or -1 for an "
                             f"unused stage, got a minimum of {indices.min()}")
        out = None
        for s in range(indices.shape[-1]):
            column = indices[..., s]
            unused = column == -1
            codes = self.stages[s].lookup(xp.where(unused, 0, column) if unused.any() else column)
            if unused.any():
                codes = codes * Tensor._wrap((~unused)[..., None].astype(codes.dtype))
            out = codes if out is None else out + codes
        return out

    decode = lookup

    def get_config(self) -> dict:
        first = self.stage0
        return {"num_quantizers": self.num_quantizers, "num_embeddings": first.num_embeddings, "dim": self.dim,
                "commitment_cost": first.commitment_cost, "ema": self.ema,
                "quantizer_dropout": self.quantizer_dropout, "seed": self.seed, "name": self.name,
                **self.ema_options}


@register_layer
class FSQ(Module):
    """Finite scalar quantisation: z (..., len(levels)) -> codes in [-1, 1] on a grid of
    prod(levels) points, with the rounding passed straight through; ``forward`` returns
    (codes, indices). No parameters."""

    def __init__(self, levels, eps: float = 1e-3, name: str | None = None):
        super().__init__(name=name)
        self.levels = check_levels(levels, "FSQ")
        self.eps = float(eps)
        self.built = True

    @property
    def codebook_size(self) -> int:
        return int(numpy.prod(self.levels))

    def forward(self, z) -> tuple[Tensor, numpy.ndarray]:
        z = as_tensor(z)
        _check_vectors(self, z, len(self.levels))
        codes = finite_scalar_quantize(z, self.levels, self.eps)
        return codes, fsq_codes_to_indices(codes, self.levels)

    def lookup(self, indices) -> Tensor:
        """The codes (..., d) of integer ``indices`` (...)."""
        return Tensor._wrap(fsq_indices_to_codes(indices, self.levels))

    def get_config(self) -> dict:
        return {"levels": list(self.levels), "eps": self.eps, "name": self.name}

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}"
