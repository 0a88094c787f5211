"""Saving and loading models: the architecture as JSON, the weights as safetensors.

``lamina.save(model, path)`` writes one safetensors file: the weights under
``model/<name>``, a fitted preprocessor's statistics under ``preprocessing/<name>``,
and as string metadata the architecture (``layer_to_config`` plus the input shape the
model was built for), the preprocessor's configuration and any JSON-serialisable
``info``. Nothing is pickled, so loading an untrusted file can run no code; the write
is atomic. ``lamina.load`` also reads training checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

import lamina
from lamina import backend
from lamina.autograd import no_grad
from lamina.data.preprocessing import Preprocessor
from lamina.io import FormatError, load_file, save_file
from lamina.nn import layer_from_config, layer_to_config
from lamina.nn.layer import reads_ids, reads_strings
from lamina.nn.module import Module
from lamina.nn.prune_masks import _pruned

FORMAT = "lamina-model-1"
_READABLE = (FORMAT, "lamina-checkpoint-1")


def _shape_list(shape) -> list:
    """A shape, or a list of shapes (a model of several inputs), as JSON lists."""
    if shape and isinstance(shape[0], (list, tuple)):
        return [_shape_list(s) for s in shape]
    return [None if s is None else int(s) for s in shape]


def model_config(model: Module) -> dict:
    """The architecture of a built model: its layer config and its input shape (a list of
    shapes for a model called with several inputs)."""
    shape = getattr(model, "build_input_shape", None)
    return {"architecture": layer_to_config(model), "input_shape": None if shape is None else _shape_list(shape)}


def model_from_config(config: dict) -> Module:
    """Rebuild a model (fresh weights) from :func:`model_config`'s dict, built for its input
    shape(s) by a call on one sample of zeros (integer zeros for a model that reads ids), or
    on what the model's ``build_sample_inputs(shapes)`` gives where zeros would not do."""
    model = layer_from_config(config["architecture"])
    shape = config.get("input_shape")
    if shape is not None:
        shapes = shape if shape and isinstance(shape[0], list) else [shape]
        dtype = np.int64 if reads_ids(model) else np.str_ if reads_strings(model) else backend.get_default_dtype()
        with no_grad():
            model.eval()
            hook = getattr(model, "build_sample_inputs", None)
            if hook is not None:                            # inputs zeros cannot stand for (LLaVA's)
                model(*hook(shapes))
                return model
            samples = [np.zeros((1, *[1 if n is None else n for n in s[1:]]), dtype=dtype) for s in shapes]
            model(*[a if a.dtype.kind == "U" else lamina.tensor(a) for a in samples])
    return model


def save(model: Module, path: str | os.PathLike, preprocessing: Preprocessor | None = None,
         info: dict | None = None) -> None:
    """Write ``model`` (built), an optional fitted preprocessor and ``info`` to ``path`` atomically."""
    if not model.built:
        raise RuntimeError(f"lamina.save: {model._label()} has no weights yet; call it on an input first")
    _refuse_pruned(model)
    arrays = {f"model/{k}": backend.to_numpy(v) for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(model_config(model))}
    if preprocessing is not None:
        arrays.update({f"preprocessing/{k}": np.asarray(v) for k, v in preprocessing.state_dict().items()})
        metadata["preprocessing"] = json.dumps(preprocessing.get_config())
    if info is not None:
        metadata["info"] = json.dumps(info)
    save_file(arrays, path, metadata)


def _refuse_pruned(model: Module) -> None:
    """A pruned parameter is held as ``<name>_orig`` and ``<name>_mask`` behind a hook that an
    architecture config cannot describe, so the file would not load: refuse it here."""
    pruned = [f"{path}.{name}" if path else name for path, module in model.named_modules() for name in _pruned(module)]
    if pruned:
        raise ValueError(f"lamina.save: {model._label()} has pruned parameters {pruned}, which a model file cannot "
                         "hold; make the pruning permanent first with lamina.nn.prune.remove(module, name) for "
                         "each (or save its state_dict, which loads into a model pruned the same way)")


@dataclass
class Loaded:
    """What a model file holds besides the model."""

    model: Module
    preprocessing: Preprocessor | None = None
    info: dict = field(default_factory=dict)


def load_bundle(path: str | os.PathLike) -> Loaded:
    """The model (in evaluation mode), its preprocessor and its info from a model or checkpoint file."""
    arrays, metadata = load_file(path)
    if metadata.get("format") not in _READABLE:
        raise FormatError(f"{path}: not a lamina model file (format {metadata.get('format')!r}; "
                          f"expected one of {_READABLE})")
    if "config" not in metadata:
        raise FormatError(f"{path}: the file holds no architecture (no 'config' metadata)")
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: the architecture is not valid JSON ({exc})") from None
    model = model_from_config(config)
    model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
    model.eval()
    preprocessing = None
    if "preprocessing" in metadata:
        state = {k[len("preprocessing/"):]: v for k, v in arrays.items() if k.startswith("preprocessing/")}
        preprocessing = Preprocessor.from_state(json.loads(metadata["preprocessing"]), state)
    info = json.loads(metadata["info"]) if "info" in metadata else {}
    return Loaded(model, preprocessing, info)


def load(path: str | os.PathLike) -> Module:
    """The model saved by :func:`save` (or in a training checkpoint), in evaluation mode."""
    return load_bundle(path).model
