"""Reading and changing a model's intermediate activations by module path.

* :func:`run_with_cache`: one forward pass that records the output of named sub-modules
  (dotted paths as ``named_modules`` gives them: ``'h.0'``, ``'h.0.dropout1'``) in an
  :class:`ActivationCache` of NumPy arrays.
* :func:`run_with_hooks`: one forward pass in which ``fn(activation, name)`` sees the output
  of each named sub-module and may replace it (activation patching, ablation, steering).
* :func:`transformer_parts`: where a decoder language model keeps its residual stream. For
  lamina's GPT-2 and the :class:`~lamina.models.decoder_lm.DecoderLM` family (Llama,
  Mistral, Qwen2...) it names the embedding output h_0, each block's output h_l, and each
  block's two residual branches, so that

      h_L = h_0 + sum_l (attn_l + mlp_l)

  (:meth:`ActivationCache.decompose_residual`). A branch is the output of the block's
  attention (and MLP) as added to the stream: GPT-2's ``dropout1`` / ``dropout2``,
  Llama's ``self_attn`` / ``mlp``. Attention layers hand back the heads already mixed by
  the output projection; their per-head outputs are recorded once their head hooks are on
  (:func:`~lamina.analysis.interpretability.enable_head_hooks`).

Both runs put the model in evaluation mode for the call (each module's mode comes back).
Hooks are removed afterwards, also when the forward raises.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode

__all__ = ["ActivationCache", "HookFunction", "TransformerParts", "run_with_cache", "run_with_hooks",
           "transformer_parts"]

HookFunction = Callable[[Tensor, str], Any]
"""``fn(activation, name)``: None keeps the activation, a Tensor or array of its shape replaces it."""


def _unknown_name_error(who: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {close}?" if close else f"; the names are {list(known)[:20]}"
    return ValueError(f"{who}: no sub-module named {name!r}{hint}")


def resolve_modules(model: Module, names: Sequence[str] | str | None, who: str) -> list[tuple[str, Module]]:
    """(name, module) for each of ``names`` (every named sub-module when None), in the order given."""
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a lamina Module, got {type(model).__name__}")
    named = {name: module for name, module in model.named_modules() if name}
    if names is None:
        return list(named.items())
    wanted = [names] if isinstance(names, str) else list(names)
    for name in wanted:
        if name not in named:
            _refuse_disabled_head_hooks(named, name, who)
            raise _unknown_name_error(who, name, list(named))
    return [(name, named[name]) for name in wanted]


def _refuse_disabled_head_hooks(named: Mapping[str, Module], name: str, who: str) -> None:
    """A clear error for the per-head outputs ``'<attention>.head_outputs'`` of an attention layer
    whose head hooks are off."""
    layer, _, last = name.rpartition(".")
    if last == "head_outputs" and callable(getattr(named.get(layer), "enable_head_hooks", None)):
        raise ValueError(f"{who}: {name!r}: head hooks are not enabled on {layer!r}; call "
                         "lamina.analysis.interpretability.enable_head_hooks(model) (or the layer's "
                         "enable_head_hooks()) first")


def _host(value):
    """A module output as NumPy data the model will not write over (a tuple for several)."""
    if isinstance(value, (tuple, list)):
        return tuple(_host(v) for v in value)
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, (np.ndarray, backend.xp.ndarray)):
        return np.array(backend.to_numpy(value), copy=True)
    return value


def _replacement(result, output, name: str, who: str) -> Tensor:
    """``result`` checked as the new output of the module called ``name``."""
    if not isinstance(output, Tensor):
        raise TypeError(f"{who}: the output of {name!r} is a {type(output).__name__}, not a tensor; only a "
                        "tensor output can be replaced")
    if not isinstance(result, Tensor):
        result = Tensor._wrap(backend.xp.asarray(result, dtype=output.dtype))
    if result.shape != output.shape:
        raise ShapeError(f"{who}: the hook on {name!r} returned an activation of shape {result.shape}; the "
                         f"activation has shape {output.shape}")
    return result


@contextlib.contextmanager
def hooks_installed(model: Module, fwd_hooks: Sequence[tuple[str, HookFunction]], who: str) -> Iterator[None]:
    """Within the block each ``(name, fn)`` watches (and may replace) that sub-module's output."""
    modules = dict(resolve_modules(model, [name for name, _ in fwd_hooks], who))
    handles = []

    def forward_hook(name: str, fn: HookFunction) -> Callable:
        def hook(module, inputs, output):
            result = fn(output, name)
            return None if result is None else _replacement(result, output, name, who)
        return hook

    try:
        for name, fn in fwd_hooks:
            if not callable(fn):
                raise TypeError(f"{who}: the hook for {name!r} is a {type(fn).__name__}, not a callable")
            handles.append(modules[name].register_forward_hook(forward_hook(name, fn)))
        with evaluation_mode(model):
            yield
    finally:
        for handle in handles:
            handle.remove()


def run_with_hooks(model: Module, inputs, fwd_hooks: Sequence[tuple[str, HookFunction]] = (), **kwargs):
    """``model(inputs, **kwargs)`` with ``fn(activation, name)`` called on the output of each
    sub-module ``name`` of ``fwd_hooks``, in evaluation mode; a returned value (Tensor or array of
    the same shape) replaces the activation for the rest of the pass. Several hooks on one
    name run in the order given. Returns the model's output (on the graph when gradients are
    being recorded)."""
    with hooks_installed(model, list(fwd_hooks), "run_with_hooks"):
        return model(inputs, **kwargs)


class ActivationCache(Mapping):
    """The activations of one forward pass: module path -> NumPy array (a tuple of them for a
    module with several outputs), in the order the names were asked for (``named_modules`` order
    by default). ``parts`` (a
    :class:`TransformerParts`, when the model is a decoder language model) lets
    :meth:`residual_stream` and :meth:`decompose_residual` find the residual stream; ``model``
    (the model run) lets :func:`~lamina.analysis.interpretability.head_contributions` read its weights."""

    def __init__(self, activations: Mapping[str, Any], parts: TransformerParts | None = None,
                 model: Module | None = None):
        self._activations = dict(activations)
        self.parts = parts
        self.model = model

    def __getitem__(self, name: str):
        if name not in self._activations:
            raise KeyError(str(_unknown_name_error("ActivationCache", name, list(self._activations))))
        return self._activations[name]

    def __iter__(self):
        return iter(self._activations)

    def __len__(self) -> int:
        return len(self._activations)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations)"

    def _stack(self, names: list[str], who: str) -> np.ndarray:
        missing = [name for name in names if name not in self._activations]
        if missing:
            raise KeyError(f"ActivationCache.{who}: the cache lacks {missing}; run run_with_cache with names=None "
                           "or with these names")
        return np.stack([self._activations[name] for name in names])

    def _parts(self, who: str) -> TransformerParts:
        if self.parts is None:
            raise TypeError(f"ActivationCache.{who}: the model's residual stream is unknown (not a decoder language "
                            "model transformer_parts recognises)")
        return self.parts

    def residual_stream(self) -> tuple[list[str], np.ndarray]:
        """The names and stacked values (L + 1, N, T, E) of h_0 (embeddings) and each block's output h_l."""
        names = self._parts("residual_stream").residual_names
        return names, self._stack(names, "residual_stream")

    def decompose_residual(self) -> tuple[list[str], np.ndarray]:
        """The names and stacked values (2L + 1, N, T, E) of h_0 and each block's attention and MLP
        branches, in the order added: their sum is the last block's output h_L."""
        parts = self._parts("decompose_residual")
        if parts.attention_outputs is None or parts.mlp_outputs is None:
            raise TypeError("ActivationCache.decompose_residual: the blocks' residual branches are not known "
                            "sub-modules; only residual_stream is available")
        names = [parts.embedding_output]
        for attention, mlp in zip(parts.attention_outputs, parts.mlp_outputs):
            names += [attention, mlp]
        return names, self._stack(names, "decompose_residual")


def run_with_cache(model: Module, inputs, names: Sequence[str] | str | None = None,
                   fwd_hooks: Sequence[tuple[str, HookFunction]] = (), **kwargs) -> tuple[np.ndarray, ActivationCache]:
    """``(output, cache)`` of ``model(inputs, **kwargs)`` run without recording a graph, in
    evaluation mode: the output as a NumPy array and the outputs of the sub-modules ``names``
    (every named one by default) as an :class:`ActivationCache`. ``fwd_hooks`` run first (a patched
    run records the patched values). A module called twice keeps its last output."""
    who = "run_with_cache"
    wanted = resolve_modules(model, names, who)
    recorded: dict[str, Any] = {}

    def recorder(activation, name):
        recorded[name] = _host(activation)

    hooks = list(fwd_hooks) + [(name, recorder) for name, _ in wanted]
    with no_grad(), hooks_installed(model, hooks, who):
        output = model(inputs, **kwargs)
    if names is not None:
        silent = [name for name, _ in wanted if name not in recorded]
        if silent:
            raise ValueError(f"{who}: the sub-modules {silent} did not run")
    order = [name for name, _ in wanted if name in recorded]
    return _host(output), ActivationCache({name: recorded[name] for name in order}, _parts_or_none(model), model)


@dataclass(frozen=True)
class TransformerParts:
    """Where a decoder language model keeps its residual stream (module paths) and how it reads it out.

    ``embedding_output``: the module whose output is h_0; ``blocks``: the blocks, whose outputs
    are h_1 .. h_L; ``attention_outputs`` / ``mlp_outputs``: each block's branches as added to the
    stream (None when not separate modules); ``final_norm`` and ``unembed``: logits = unembed(final_norm(h))."""

    embedding_output: str
    blocks: list[str]
    attention_outputs: list[str] | None
    mlp_outputs: list[str] | None
    final_norm: Module
    unembed: Callable[[Tensor], Tensor]

    @property
    def residual_names(self) -> list[str]:
        """h_0 .. h_L: the embedding output, then each block's output."""
        return [self.embedding_output, *self.blocks]

    @property
    def resid_pre(self) -> list[str]:
        """The module whose output is block l's input, for each l."""
        return self.residual_names[:-1]

    def logits(self, hidden) -> Tensor:
        """unembed(final_norm(hidden)) for residual-stream values (N, T, E)."""
        hidden = hidden if isinstance(hidden, Tensor) else Tensor._wrap(backend.xp.asarray(hidden))
        return self.unembed(self.final_norm(hidden))


def _branch_names(model: Module, blocks: list[str], options: tuple[str, ...]) -> list[str] | None:
    found = []
    for block in blocks:
        children = dict(model.get_submodule(block).named_children())
        name = next((option for option in options if option in children), None)
        if name is None:
            return None
        found.append(f"{block}.{name}")
    return found


def _parts_or_none(model: Module) -> TransformerParts | None:
    try:
        return transformer_parts(model)
    except TypeError:
        return None


def transformer_parts(model: Module) -> TransformerParts:
    """The residual stream's module paths in lamina's GPT-2 (``wte``, ``h``, ``ln_f``) or a
    :class:`~lamina.models.decoder_lm.DecoderLM` (``layers``, ``final_norm()``, ``logits``);
    TypeError for any other model."""
    paths = {id(module): name for name, module in model.named_modules() if name}
    if all(hasattr(model, attribute) for attribute in ("wte", "h", "ln_f", "drop")):
        stack, embedding, norm = model.h, model.drop, model.ln_f
        table = model.wte

        def unembed(hidden: Tensor) -> Tensor:
            return F.matmul(hidden, F.transpose(table.weight, 1, 0))
    elif all(callable(getattr(model, attribute, None)) for attribute in ("token_embedding", "final_norm", "logits")) \
            and hasattr(model, "layers"):
        stack, embedding, norm, unembed = model.layers, model.token_embedding(), model.final_norm(), model.logits
    else:
        raise TypeError(f"transformer_parts: {type(model).__name__} is not a decoder language model with a known "
                        "layout (GPT2, or a DecoderLM such as Llama)")
    blocks = [paths[id(block)] for block in stack]
    return TransformerParts(
        embedding_output=paths[id(embedding)], blocks=blocks,
        attention_outputs=_branch_names(model, blocks, ("dropout1", "self_attn")),
        mlp_outputs=_branch_names(model, blocks, ("dropout2", "mlp")),
        final_norm=norm, unembed=unembed)
