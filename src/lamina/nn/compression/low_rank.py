"""Low-rank factorisation of trained layers: one Dense or Conv2D replaced by a chain of smaller
layers whose composition approximates it (fewer parameters and multiply-accumulates).

Dense, W (n_in, n_out), truncated SVD W ~ U_r S_r V_r^T (Eckart-Young: the best rank-r
approximation), split as Dense(r, no bias) with U_r S_r^(1/2) then Dense(n_out) with
S_r^(1/2) V_r^T, the original bias and activation:  r (n_in + n_out) parameters for n_in n_out.

Conv2D, kernel W[k, i, j, c] of shape (K, f_h, f_w, c_in); stride, padding, dilation, bias and
activation carried; grouped convolutions are refused. Three chains:

* ``'tucker2'`` (Kim et al. 2016): W ~ sum_{a,b} U_out[k,a] G[a,i,j,b] U_in[c,b], i.e.
  1x1 conv c_in -> r_in (U_in^T), f_h x f_w conv r_in -> r_out (the core G, with the original
  stride, padding and dilation), 1x1 conv r_out -> K (U_out, with the bias):
  c_in r_in + f_h f_w r_in r_out + r_out K parameters. HOSVD, optionally HOOI sweeps.
* ``'cp'`` (Lebedev et al. 2015): W ~ sum_r A[k,r] B[i,r] C[j,r] D[c,r] (CP-ALS), i.e.
  1x1 conv c_in -> R (D^T), depthwise f_h x 1 (B), depthwise 1 x f_w (C), 1x1 conv R -> K (A):
  R (c_in + f_h + f_w + K) parameters.
* ``'svd'`` (Jaderberg et al. 2014, spatially separable): the matrix M[(i,c), (k,j)] = W[k,i,j,c]
  ~ P Q of rank r, i.e. f_h x 1 conv c_in -> r (P) then 1 x f_w conv r -> K (Q):
  r (f_h c_in + f_w K) parameters.

At full rank every chain computes the original layer exactly (up to rounding): Tucker-2 at
ranks (c_in, K) (or the ranks of the unfoldings), SVD at min(f_h c_in, f_w K), CP once the
CP rank of W is reached. The split stages share the padding: the vertical stage pads rows
only and the horizontal one columns only; the 1x1 stages have no bias, so zero padding
passes through them unchanged. A ``'same'`` padding is turned into explicit padding, which
needs stride 1 and odd kernel extents.

:func:`compress_model` applies these to the Dense and Conv2D layers of a Sequential model
(nested Sequentials included) and reports parameters and MACs (from
:func:`lamina.analysis.summary`) before and after, and each layer's relative reconstruction
error ||W - W_r||_F / ||W||_F.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lamina import backend
from lamina.nn.compression.decompositions import (
    cp_als,
    cp_to_tensor,
    rank_for_energy,
    relative_error,
    truncated_svd,
    tucker2,
    tucker2_to_tensor,
)
from lamina.nn.conv import Conv2D, DepthwiseConv2D
from lamina.nn.dense import Dense
from lamina.nn.module import Module
from lamina.nn.sequential import Sequential

__all__ = ["CompressionReport", "LayerCompression", "compress_model", "factorize_conv", "factorize_dense"]

METHODS = ("tucker2", "cp", "svd")


# -- helpers -------------------------------------------------------------------------------------

def _weights(layer: Module, who: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not layer.built:
        raise ValueError(f"{who}: {layer._label()} is not built; call it on an input or build(input_shape) first")
    if "weight" not in layer._parameters:
        raise ValueError(f"{who}: {layer._label()} has a pruned or parametrized weight; make it plain first "
                         "(lamina.nn.prune.remove)")
    bias = backend.to_numpy(layer.bias.data) if layer.use_bias else None
    return backend.to_numpy(layer.weight.data), bias


def _activation(layer: Module):
    if layer.activation is None:
        return None
    if isinstance(layer.activation_spec, str):
        return layer.activation_spec
    return copy.deepcopy(layer.activation)


def _set(layer: Module, input_channels: int, weight: np.ndarray, bias: np.ndarray | None, dtype) -> Module:
    """Build ``layer`` for ``input_channels`` and give it ``weight`` (and ``bias``) in ``dtype``."""
    shape = (None, input_channels) if isinstance(layer, Dense) else (None, None, None, input_channels)
    layer.build(shape)
    layer.built = True
    layer.weight.data = backend.xp.asarray(weight, dtype=dtype)
    if bias is not None:
        layer.bias.data = backend.xp.asarray(bias, dtype=dtype)
    return layer


def _check_ratio(ratio, who: str) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"{who}: ratio (the fraction of the layer's weights to keep) must be in (0, 1], "
                         f"got {ratio!r}")
    return float(ratio)


# -- Dense ---------------------------------------------------------------------------------------

def factorize_dense(layer: Dense, rank: int | None = None, energy: float | None = None) -> Sequential:
    """Replace ``layer`` (a built Dense, W of shape (n_in, n_out)) by
    ``Sequential(Dense(r, use_bias=False), Dense(n_out, bias, activation))`` holding the
    truncated SVD of W: U_r S_r^(1/2) and S_r^(1/2) V_r^T (module docstring). Give ``rank``
    (1 <= r <= min(n_in, n_out)) or ``energy``: the smallest r keeping that fraction of
    sum s_i^2. The new layers take the original's dtype."""
    who = "factorize_dense"
    if not isinstance(layer, Dense):
        raise ValueError(f"{who}: expected a Dense layer, got {type(layer).__name__}")
    w, b = _weights(layer, who)
    rank = _choose_rank(w, rank, energy, who)
    u, s, vt = truncated_svd(w, rank, who)
    root = np.sqrt(s)
    dtype = layer.weight.data.dtype
    first = _set(Dense(rank, use_bias=False), w.shape[0], u * root, None, dtype)
    second = _set(Dense(w.shape[1], activation=_activation(layer), use_bias=b is not None), rank,
                  root[:, None] * vt, b, dtype)
    return Sequential(first, second, name=layer.name)


def _choose_rank(w: np.ndarray, rank, energy, who: str) -> int:
    if (rank is None) == (energy is None):
        raise ValueError(f"{who}: give exactly one of rank and energy, got rank={rank!r}, energy={energy!r}")
    if energy is not None:
        return rank_for_energy(np.linalg.svd(w, compute_uv=False), energy, who)
    return rank


# -- Conv2D --------------------------------------------------------------------------------------

def _explicit_padding(layer: Conv2D, who: str) -> tuple[int, int]:
    if layer.padding == "valid":
        return 0, 0
    if layer.padding == "same":
        extents = [d * (f - 1) + 1 for f, d in zip(layer.kernel_size, layer.dilation)]
        if layer.stride != (1, 1) or any(e % 2 == 0 for e in extents):
            raise ValueError(f"{who}: {layer._label()} has padding='same' with stride {layer.stride} and kernel "
                             f"extent {tuple(extents)}; the factorised chain needs explicit padding, which 'same' "
                             "is only at stride 1 with odd kernel extents")
        return tuple((e - 1) // 2 for e in extents)
    return tuple(layer.padding)


def _conv(filters, kernel_size, stride=1, padding=0, dilation=1, use_bias=False, activation=None,
          algorithm="im2col") -> Conv2D:
    return Conv2D(filters, kernel_size, stride=stride, padding=padding, dilation=dilation, use_bias=use_bias,
                  activation=activation, algorithm=algorithm)


def _depthwise(kernel_size, stride, padding, dilation, algorithm) -> DepthwiseConv2D:
    return DepthwiseConv2D(kernel_size, stride=stride, padding=padding, dilation=dilation, use_bias=False,
                           algorithm=algorithm)


def _conv_ranks(ranks, method: str, who: str) -> tuple[int, ...]:
    if method == "tucker2":
        if isinstance(ranks, numbers.Integral) and not isinstance(ranks, bool):
            return int(ranks), int(ranks)
        if isinstance(ranks, (tuple, list)) and len(ranks) == 2:
            return tuple(ranks)
        raise ValueError(f"{who}: Tucker-2 ranks must be an int or a pair (r_in, r_out), got {ranks!r}")
    if isinstance(ranks, bool) or not isinstance(ranks, numbers.Integral):
        raise ValueError(f"{who}: the rank of method {method!r} must be an int, got {ranks!r}")
    return (int(ranks),)


def factorize_conv(layer: Conv2D, method: str = "tucker2", ranks=None, energy: float | None = None,
                   iterations: int | None = None, seed: int | None = 0) -> tuple[Sequential, float]:
    """Replace ``layer`` (a built Conv2D with groups=1) by a chain of convolutions from a
    decomposition of its kernel (module docstring). Returns (the chain as a Sequential named
    as the layer, relative reconstruction error ||W - W_r||_F / ||W||_F).

    ``method='tucker2'``: ``ranks`` an int or (r_in, r_out), or ``energy`` (the rank of each
    channel unfolding keeping that fraction of its sum s_i^2); ``iterations`` HOOI sweeps
    (default 0: plain HOSVD). ``'cp'``: ``ranks`` the CP rank R; ``iterations`` ALS sweeps
    (default 200), started from ``seed``. ``'svd'``: ``ranks`` the rank r, or ``energy``."""
    who = "factorize_conv"
    if not isinstance(layer, Conv2D):
        raise ValueError(f"{who}: expected a Conv2D layer, got {type(layer).__name__}")
    if method not in METHODS:
        raise ValueError(f"{who}: method must be one of {METHODS}, got {method!r}")
    if layer.groups != 1:
        raise ValueError(f"{who}: {layer._label()} is a grouped convolution (groups={layer.groups}); only groups=1 "
                         "kernels are factorised")
    w, b = _weights(layer, who)
    padding = _explicit_padding(layer, who)
    if method == "cp" and energy is not None:
        raise ValueError(f"{who}: method 'cp' takes a rank, not energy")
    if (ranks is None) == (energy is None):
        raise ValueError(f"{who}: give exactly one of ranks and energy, got ranks={ranks!r}, energy={energy!r}")
    build = {"tucker2": _tucker2_chain, "cp": _cp_chain, "svd": _svd_chain}[method]
    layers, approximation = build(layer, w, b, padding, ranks, energy, iterations, seed, who)
    dtype = layer.weight.data.dtype
    chain = Sequential(*[_set(new, c_in, weight, bias, dtype) for new, c_in, weight, bias in layers],
                       name=layer.name)
    return chain, relative_error(w, approximation)


def _tucker2_chain(layer, w, b, padding, ranks, energy, iterations, seed, who):
    k, fh, fw, c_in = w.shape
    if energy is not None:
        ranks = tuple(rank_for_energy(np.linalg.svd(np.moveaxis(w, m, 0).reshape(w.shape[m], -1),
                                                    compute_uv=False), energy, who) for m in (3, 0))
    r_in, r_out = _conv_ranks(ranks, "tucker2", who)
    core, u_in, u_out = tucker2(w, (3, 0), (r_in, r_out), iterations or 0, who)
    # core axes: (r_out, f_h, f_w, r_in) after contracting mode 3 with U_in and mode 0 with U_out
    first = _conv(r_in, 1, algorithm=layer.algorithm)
    middle = _conv(r_out, layer.kernel_size, layer.stride, padding, layer.dilation, algorithm=layer.algorithm)
    last = _conv(k, 1, use_bias=b is not None, activation=_activation(layer), algorithm=layer.algorithm)
    layers = [(first, c_in, u_in.T[:, None, None, :], None), (middle, r_in, core, None),
              (last, r_out, u_out[:, None, None, :], b)]
    return layers, tucker2_to_tensor(core, u_in, u_out, (3, 0))


def _cp_chain(layer, w, b, padding, ranks, energy, iterations, seed, who):
    k, fh, fw, c_in = w.shape
    (rank,) = _conv_ranks(ranks, "cp", who)
    if rank < 1:
        raise ValueError(f"{who}: the CP rank must be positive, got {rank}")
    (a, vertical, horizontal, d), _ = cp_als(w, rank, 200 if iterations is None else iterations, seed=seed, who=who)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, padding, layer.dilation
    algorithm = layer.algorithm
    layers = [(_conv(rank, 1, algorithm=algorithm), c_in, d.T[:, None, None, :], None),
              (_depthwise((fh, 1), (sh, 1), (ph, 0), (dh, 1), algorithm), rank, vertical.T[:, :, None, None], None),
              (_depthwise((1, fw), (1, sw), (0, pw), (1, dw), algorithm), rank, horizontal.T[:, None, :, None], None),
              (_conv(k, 1, use_bias=b is not None, activation=_activation(layer), algorithm=algorithm), rank,
               a[:, None, None, :], b)]
    return layers, cp_to_tensor([a, vertical, horizontal, d])


def _svd_chain(layer, w, b, padding, ranks, energy, iterations, seed, who):
    k, fh, fw, c_in = w.shape
    matrix = w.transpose(1, 3, 0, 2).reshape(fh * c_in, k * fw)          # rows (i, c), columns (k, j)
    rank = rank_for_energy(np.linalg.svd(matrix, compute_uv=False), energy, who) if energy is not None else \
        _conv_ranks(ranks, "svd", who)[0]
    u, s, vt = truncated_svd(matrix, rank, who)
    root = np.sqrt(s)
    vertical = (u * root).reshape(fh, c_in, rank).transpose(2, 0, 1)[:, :, None, :]       # (r, f_h, 1, c_in)
    horizontal = (root[:, None] * vt).reshape(rank, k, fw).transpose(1, 2, 0)[:, None]    # (K, 1, f_w, r)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, padding, layer.dilation
    layers = [(_conv(rank, (fh, 1), (sh, 1), (ph, 0), (dh, 1), algorithm=layer.algorithm), c_in, vertical, None),
              (_conv(k, (1, fw), (1, sw), (0, pw), (1, dw), use_bias=b is not None, activation=_activation(layer),
                     algorithm=layer.algorithm), rank, horizontal, b)]
    approximation = ((u * s) @ vt).reshape(fh, c_in, k, fw).transpose(2, 0, 3, 1)
    return layers, approximation


# -- ranks from a parameter ratio ----------------------------------------------------------------

def _dense_rank_for_ratio(w: np.ndarray, ratio: float) -> int:
    n_in, n_out = w.shape
    return max(1, min(min(n_in, n_out), math.floor(ratio * n_in * n_out / (n_in + n_out))))


def _conv_ranks_for_ratio(w: np.ndarray, method: str, ratio: float):
    k, fh, fw, c_in = w.shape
    budget = ratio * w.size
    if method == "cp":
        return max(1, math.floor(budget / (c_in + fh + fw + k)))
    if method == "svd":
        return max(1, min(fh * c_in, fw * k, math.floor(budget / (fh * c_in + fw * k))))
    limit_in, limit_out = min(c_in, k * fh * fw), min(k, c_in * fh * fw)
    for scale in np.linspace(1.0, 0.0, 201):
        r_in = max(1, min(limit_in, round(scale * c_in)))
        r_out = max(1, min(limit_out, round(scale * k)))
        if c_in * r_in + fh * fw * r_in * r_out + r_out * k <= budget:
            return r_in, r_out
    return 1, 1


# -- whole models --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerCompression:
    """One factorised layer: its dotted path, kind ('dense' or the conv method), ranks,
    weights before and after (kernel and bias) and relative reconstruction error of W."""

    path: str
    method: str
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    error: float


@dataclass(frozen=True)
class CompressionReport:
    """What :func:`compress_model` did: totals of the whole model from its summary and one
    :class:`LayerCompression` per factorised layer."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: list[LayerCompression] = field(default_factory=list)

    @property
    def compression(self) -> float:
        """params_before / params_after."""
        return self.params_before / self.params_after

    def __str__(self) -> str:
        lines = [f"{'layer':<20} {'method':<8} {'ranks':<12} {'params':>18} {'rel. error':>10}"]
        for row in self.layers:
            lines.append(f"{row.path:<20} {row.method:<8} {str(row.ranks):<12} "
                         f"{f'{row.params_before:,} -> {row.params_after:,}':>18} {row.error:>10.4f}")
        lines.append(f"parameters {self.params_before:,} -> {self.params_after:,} "
                     f"({self.compression:.2f}x); MACs {self.macs_before:,} -> {self.macs_after:,}")
        return "\n".join(lines)


def _leaf_layers(model: Sequential, prefix: str = ""):
    """(dotted path, parent Sequential, key, layer) of every layer, nested Sequentials expanded."""
    for key, layer in model._modules.items():
        path = f"{prefix}{key}"
        if isinstance(layer, Sequential):
            yield from _leaf_layers(layer, path + ".")
        else:
            yield path, model, key, layer


def _size(module: Module) -> int:
    return sum(int(p.data.size) for p in module.parameters())


def compress_model(model: Sequential, ratio: float | None = None, ranks: dict | None = None,
                   layers: Iterable[str] | None = None, method: str = "tucker2",
                   input_shape: tuple[int, ...] | None = None) -> tuple[Sequential, CompressionReport]:
    """Factorise the Dense and Conv2D layers of a built Sequential ``model`` (nested
    Sequentials included); the model itself is left unchanged.

    ``layers``: the dotted paths to factorise (default: every Dense and every Conv2D with
    groups=1 and a kernel larger than 1x1 for 'cp' and 'svd'). Each layer's ranks come from
    ``ranks`` (path -> rank, or (r_in, r_out) for Tucker-2) or else from ``ratio``: the
    largest ranks whose factors hold at most ``ratio`` times the layer's kernel weights.
    Convolutions use ``method`` ('tucker2', 'cp' or 'svd'). ``input_shape`` (without the
    batch axis) for the MAC counts, default the shape the model was built for.

    Returns (the new model, a :class:`CompressionReport`)."""
    who = "compress_model"
    from lamina.analysis import summary

    if not isinstance(model, Sequential):
        raise ValueError(f"{who}: expected a Sequential model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{who}: the model is not built; call it on an input or build(input_shape) first")
    if method not in METHODS:
        raise ValueError(f"{who}: method must be one of {METHODS}, got {method!r}")
    if ratio is None and ranks is None:
        raise ValueError(f"{who}: give ratio or ranks (or both: ranks first, ratio for the other layers)")
    if ratio is not None:
        ratio = _check_ratio(ratio, who)
    ranks = dict(ranks or {})
    new = copy.deepcopy(model)
    found = {path: (parent, key, layer) for path, parent, key, layer in _leaf_layers(new)}
    chosen = _chosen_layers(found, layers, ranks, method, who)
    rows = []
    for path in chosen:
        parent, key, layer = found[path]
        if path not in ranks and ratio is None:
            continue
        if isinstance(layer, Dense):
            w = backend.to_numpy(layer.weight.data)
            rank = ranks.get(path) or _dense_rank_for_ratio(w, ratio)
            replacement = factorize_dense(layer, rank=rank)
            error = relative_error(w, _product(replacement))
            used, kind = (rank,), "dense"
        else:
            w = backend.to_numpy(layer.weight.data)
            used = ranks.get(path) or _conv_ranks_for_ratio(w, method, ratio)
            replacement, error = factorize_conv(layer, method, ranks=used)
            used, kind = tuple(np.atleast_1d(used).tolist()), method
        rows.append(LayerCompression(path, kind, used, _size(layer), _size(replacement), error))
        parent._modules[key] = replacement
    shape = input_shape if input_shape is not None else model.build_input_shape[1:]
    before, after = summary(model, tuple(shape)), summary(new, tuple(shape))
    return new, CompressionReport(before.total_params, after.total_params, before.total_macs, after.total_macs, rows)


def _product(chain: Sequential) -> np.ndarray:
    first, second = chain
    return backend.to_numpy(first.weight.data).astype(np.float64) @ backend.to_numpy(second.weight.data)


def _chosen_layers(found: dict, layers, ranks: dict, method: str, who: str) -> list[str]:
    for path in list(ranks) + list(layers or []):
        if path not in found:
            raise ValueError(f"{who}: layer {path!r} not found; the model's layers: {sorted(found)}")
        layer = found[path][2]
        if type(layer) not in (Dense, Conv2D):
            raise ValueError(f"{who}: layer {path!r} is a {type(layer).__name__}; only Dense and Conv2D layers "
                             "are factorised")
        if isinstance(layer, Conv2D) and layer.groups != 1:
            raise ValueError(f"{who}: layer {path!r} is a grouped convolution (groups={layer.groups}); only "
                             "groups=1 kernels are factorised")
    if layers is not None:
        return list(layers)

    def eligible(layer) -> bool:
        if type(layer) is Dense:
            return True
        return type(layer) is Conv2D and layer.groups == 1 and (method == "tucker2" or layer.kernel_size != (1, 1))
    return [path for path, (_, _, layer) in found.items() if eligible(layer)]
