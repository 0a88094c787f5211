"""What the Keras-style preprocessing layers share: ``adapt`` over any kind of data, the
categorical encodings of integer indices, and a stable hash.

``layer.adapt(data, batch_size=None, steps=None)`` learns a layer's state (a mean and a
variance, bin boundaries, a vocabulary) from ``data``, which may be

* an array, a list or a :class:`lamina.Tensor`: cut into batches of ``batch_size`` rows
  (one batch when ``batch_size`` is None);
* a lamina dataset (``len`` and integer indexing, e.g. :class:`lamina.data.ArrayDataset`):
  read in order by a :class:`lamina.data.DataLoader` of ``batch_size`` (default 32);
* any other iterable of batches (a DataLoader, a generator).

A batch that is a tuple ``(features, labels)`` contributes its features only. ``steps``
caps the number of batches read. Every layer combines its batches exactly, so that the
state learned batch by batch equals the state learned from all the data at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.data.loader import DataLoader
from lamina.nn.module import Module

__all__ = ["PreprocessingLayer", "encode_categorical", "stable_hash"]

ENCODINGS = ("one_hot", "multi_hot", "count")


def as_array(x: Any) -> np.ndarray:
    """A layer input (array, list, Tensor) as a NumPy array."""
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def adapt_batches(data: Any, batch_size: int | None, steps: int | None, who: str) -> Iterator[np.ndarray]:
    """The batches of ``data`` as NumPy arrays (see the module docstring)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"{who}: batch_size must be a positive int or None; got {batch_size!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"{who}: steps must be a positive int or None; got {steps!r}")
    if isinstance(data, (Tensor, np.ndarray, list, str, bytes, int, float)):
        array = as_array(data)
        array = array.reshape(1) if array.ndim == 0 else array
        size = batch_size or max(len(array), 1)
        batches: Iterable = (array[start:start + size] for start in range(0, len(array), size))
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (tuple, dict)):
        batches = DataLoader(data, batch_size=batch_size or 32, shuffle=False)
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError(f"{who}: expected an array, a Tensor, a dataset or an iterable of batches; "
                        f"got {type(data).__name__}")
    for step, batch in enumerate(batches):
        if steps is not None and step >= steps:
            break
        if isinstance(batch, tuple):
            batch = batch[0]
        yield as_array(batch)


class PreprocessingLayer(Module):
    """A layer whose state is learned from data by :meth:`adapt` (or given to the
    constructor) rather than by gradient descent.

    Subclasses implement ``_start_adapt()``, ``_update_adapt(batch)`` (one NumPy batch)
    and ``_finish_adapt()`` (install the state), and report ``is_adapted``.
    """

    reads_strings = False      # whether the layer's inputs are strings (saving builds it on "")

    def adapt(self, data: Any, batch_size: int | None = None, steps: int | None = None) -> None:
        """Learn the layer's state from ``data``, replacing any state it had."""
        who = f"{self._label()}.adapt"
        self._start_adapt()
        seen = 0
        for batch in adapt_batches(data, batch_size, steps, who):
            if batch.size:
                self._update_adapt(batch)
                seen += batch.shape[0] if batch.ndim else 1
        if not seen:
            raise ValueError(f"{who}: got no data (an empty array or no batches); adapt needs at least one sample")
        self._finish_adapt()

    @property
    def is_adapted(self) -> bool:
        raise NotImplementedError

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """As :meth:`Module.load_state_dict`, except that the state may differ in size from
        the layer's (a longer vocabulary) or fill a layer not adapted yet. (Inside a model
        the model's own method runs, which needs states of equal shapes: rebuild the model
        from its config, as :func:`lamina.load` does.)"""
        slots = {f"{path}.{attr}" if path else attr: (module, attr)
                 for path, module in self.named_modules() for attr in module._buffers}
        unexpected = [k for k in state if k not in slots]
        missing = [k for k, (module, attr) in slots.items() if k not in state and module._buffers[attr] is not None]
        if strict and (missing or unexpected):
            raise KeyError(f"{self._label()}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, value in state.items():
            if key in slots:
                module, attr = slots[key]
                module._buffers[attr] = np.array(value)

    def _require_adapted(self) -> None:
        if not self.is_adapted:
            raise RuntimeError(f"{self._label()}: the layer has no state yet; call adapt(data) first "
                               "(or pass the state to the constructor)")

    def _start_adapt(self) -> None:
        raise NotImplementedError

    def _update_adapt(self, batch: np.ndarray) -> None:
        raise NotImplementedError

    def _finish_adapt(self) -> None:
        raise NotImplementedError


def check_mode(mode: str, allowed: tuple[str, ...], who: str) -> str:
    if mode not in allowed:
        raise ValueError(f"{who}: output_mode must be one of {allowed}; got {mode!r}")
    return mode


def check_not_sparse(sparse: bool, who: str) -> bool:
    if sparse:
        raise ValueError(f"{who}: sparse outputs are not supported (lamina has no sparse tensors); use sparse=False")
    return False


def encode_categorical(indices: np.ndarray, depth: int, mode: str, weights: np.ndarray | None = None) -> np.ndarray:
    """Dense encodings of integer ``indices`` in ``[0, depth)`` (negative entries are dropped).

    ``'one_hot'``: one row e_i per index; a last axis of size 1 is replaced by the encoding,
    otherwise one is appended. ``'multi_hot'`` / ``'count'``: the last axis is one sample's
    set of indices, reduced to a vector of indicators / counts (``weights``, of the shape of
    ``indices``, make the counts weighted sums). Float arrays of lamina's default dtype.
    """
    dtype = backend.get_default_dtype()
    indices = np.asarray(indices, dtype=np.int64)
    if mode == "one_hot":
        if indices.ndim and indices.shape[-1] == 1:
            indices = indices[..., 0]
        flat = indices.reshape(-1)
        out = np.zeros((flat.size, depth), dtype=dtype)
        rows = np.flatnonzero(flat >= 0)
        out[rows, flat[rows]] = 1
        return out.reshape(*indices.shape, depth)
    if indices.ndim == 0:
        indices = indices.reshape(1)
    lead = indices.shape[:-1]
    samples = int(np.prod(lead, dtype=np.int64))
    row_ids = np.repeat(np.arange(samples), indices.shape[-1])
    flat = indices.reshape(-1)
    keep = flat >= 0
    values = np.ones(flat.size) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    out = np.zeros((samples, depth))
    np.add.at(out, (row_ids[keep], flat[keep]), values[keep])
    if mode == "multi_hot":
        out = (out > 0).astype(np.float64)
    return out.reshape(*lead, depth).astype(dtype)


def encoded_shape(shape: tuple, depth: int, mode: str) -> tuple:
    """The output shape of :func:`encode_categorical` (or of the indices for ``'int'``)."""
    shape = tuple(shape)
    if mode == "int":
        return shape
    if mode == "one_hot":
        return (*shape[:-1], depth) if shape and shape[-1] == 1 else (*shape, depth)
    return (*shape[:-1], depth)


def _salt_key(salt: Any, who: str) -> bytes:
    if salt is None:
        return b""
    parts = [salt] if isinstance(salt, int) else list(salt)
    if len(parts) not in (1, 2) or not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        raise ValueError(f"{who}: salt must be None, an int or a pair of ints; got {salt!r}")
    return b"".join((p % 2**64).to_bytes(8, "little") for p in parts)


def stable_hash(values: np.ndarray, num_bins: int, salt: Any = None, who: str = "stable_hash") -> np.ndarray:
    """Each value's bucket in ``[0, num_bins)``: the 64-bit BLAKE2b digest (keyed by ``salt``)
    of the value's text (an integer's decimal digits, a string's UTF-8 bytes), read
    little-endian, modulo ``num_bins``. The same on every run and machine, unlike ``hash()``."""
    key = _salt_key(salt, who)
    values = np.asarray(values)
    uniques, inverse = np.unique(values.reshape(-1), return_inverse=True)
    codes = np.empty(len(uniques), dtype=np.int64)
    for k, value in enumerate(uniques.tolist()):
        text = value if isinstance(value, bytes) else str(value).encode("utf-8")
        digest = hashlib.blake2b(text, digest_size=8, key=key).digest()
        codes[k] = int.from_bytes(digest, "little") % num_bins
    return codes[inverse].reshape(values.shape)
