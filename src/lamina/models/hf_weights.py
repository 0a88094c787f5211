"""Loading Hugging Face (``transformers``) state dicts into lamina's language models.

A model describes its weights as a table ``lamina key -> HFWeight(keys, convert)``: the
Hugging Face keys that make the array and how (one key copied, a PyTorch ``Linear`` weight
(out, in) transposed to lamina's (in, out), BERT's separate query, key and value projections
joined side by side into one ``in_weight``...). :func:`load_hf_state_dict` checks that every
key the table needs is there and that every key given is used, then copies the arrays with
the model's own shape checks. Values may be NumPy arrays or torch tensors; torch itself is
never imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from lamina.io.safetensors import load_file
from lamina.models.torchvision import to_numpy
from lamina.nn.module import Module

__all__ = ["SHARD_INDEX", "ConfigBuiltModel", "HFWeight", "build_children", "copied", "joined_linear", "linear",
           "load_hf_state_dict", "main_input_shape", "read_state_dict"]


@dataclass(frozen=True)
class HFWeight:
    """The Hugging Face ``keys`` of one lamina array, and ``convert`` making it from their arrays."""

    keys: tuple[str, ...]
    convert: Callable[..., np.ndarray]


def copied(key: str) -> HFWeight:
    """An array stored as it is (an embedding table, a LayerNorm, a bias, a ``Conv1D`` weight)."""
    return HFWeight((key,), lambda a: a)


def linear(key: str) -> HFWeight:
    """A PyTorch ``Linear`` weight (out, in), lamina's Dense weight (in, out) transposed."""
    return HFWeight((key,), lambda w: w.T)


def joined_linear(*keys: str) -> HFWeight:
    """Several ``Linear`` weights (out_i, in) side by side as one (in, sum out_i) weight, or
    several biases (out_i,) end to end: the query, key and value projections of one
    attention layer."""
    return HFWeight(tuple(keys), lambda *arrays: np.concatenate([a.T for a in arrays], axis=-1))


def read_state_dict(state_dict, who: str) -> dict[str, np.ndarray]:
    """A dict of NumPy arrays from a mapping of arrays or torch tensors, or from safetensors
    files: the path of one, a list of paths (the shards of one checkpoint), the path of
    Hugging Face's shard index (``model.safetensors.index.json``, its ``weight_map`` naming
    the shards beside it), or a checkpoint folder holding ``model.safetensors`` or that index."""
    if isinstance(state_dict, (str, os.PathLike)):
        return _read_checkpoint(os.fspath(state_dict), who)
    if isinstance(state_dict, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in state_dict):
        return {key: value for path in state_dict for key, value in load_file(path)[0].items()}
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{who}: expected a mapping of arrays, the path of a .safetensors file (or of a shard "
                        f"index or checkpoint folder) or a list of them, got {type(state_dict).__name__}")
    return {str(key): to_numpy(value) for key, value in state_dict.items()}


SHARD_INDEX = "model.safetensors.index.json"
"""The name Hugging Face gives the index of a checkpoint split in several safetensors files."""


def _read_checkpoint(path: str, who: str) -> dict[str, np.ndarray]:
    if os.path.isdir(path):
        for name in ("model.safetensors", SHARD_INDEX):
            if os.path.isfile(os.path.join(path, name)):
                return _read_checkpoint(os.path.join(path, name), who)
        raise FileNotFoundError(f"{who}: the folder {path} holds neither model.safetensors nor {SHARD_INDEX}")
    if not path.endswith(".json"):
        return load_file(path)[0]
    with open(path, encoding="utf-8") as handle:
        weight_map = json.load(handle).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{who}: {path} has no weight_map (name -> shard file); not a safetensors shard index")
    folder = os.path.dirname(path)
    return read_state_dict([os.path.join(folder, shard) for shard in sorted(set(weight_map.values()))], who)


def load_hf_state_dict(model: Module, arrays: Mapping[str, np.ndarray], table: Mapping[str, HFWeight],
                       ignored: Callable[[str], bool], strict: bool, who: str) -> None:
    """Copy ``arrays`` into ``model`` through ``table`` (lamina key -> :class:`HFWeight`).

    ``strict``: every key the table needs must be in ``arrays`` and every key of ``arrays``
    used but those ``ignored`` accepts, else a KeyError lists the missing and unexpected
    keys; otherwise the arrays whose keys are all present are copied. A mis-shaped array
    raises :class:`lamina.ShapeError` naming it, before anything is copied."""
    needed = {key for weight in table.values() for key in weight.keys}
    missing = sorted(needed - set(arrays))
    unexpected = sorted(key for key in arrays if key not in needed and not ignored(key))
    if strict and (missing or unexpected):
        raise KeyError(f"{who}: missing keys {missing}, unexpected keys {unexpected} (model {model._label()})")
    state = {ours: weight.convert(*(np.asarray(arrays[key]) for key in weight.keys))
             for ours, weight in table.items() if all(key in arrays for key in weight.keys)}
    model.load_state_dict(state, strict=strict)


def build_children(pairs) -> None:
    """Build each ``(layer, input_shape)`` of ``pairs`` whose layer is not built yet."""
    for layer, shape in pairs:
        if not layer.built:
            layer.build(shape)
            layer.built = True


def main_input_shape(input_shape) -> tuple:
    """The shape of the first input (a call with several inputs builds with a list of shapes)."""
    shape = list(input_shape) if input_shape is not None else []
    return tuple(shape[0]) if shape and isinstance(shape[0], (tuple, list)) else tuple(shape)


class ConfigBuiltModel(Module):
    """A model whose weights' shapes follow from its config alone: ``build()`` needs no input
    shape, none is recorded (a saved model is rebuilt by :meth:`load_state_dict`, not by a
    call on dummy inputs), and :meth:`load_state_dict` builds the model first when needed."""

    @property
    def build_input_shape(self) -> None:
        return None

    @build_input_shape.setter
    def build_input_shape(self, shape) -> None:
        pass

    def _ensure_built(self) -> None:
        if not self.built:
            self.build()
            self.built = True

    def load_state_dict(self, state: dict, strict: bool = True):
        """:meth:`Module.load_state_dict`, building the model first when it is not built yet."""
        self._ensure_built()
        return super().load_state_dict(state, strict=strict)
