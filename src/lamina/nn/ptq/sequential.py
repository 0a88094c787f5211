"""Running a model block by block on calibration data, as GPTQ and AWQ quantize it.

The calls of the first block are caught while the model runs on each calibration batch (the
run stops there): its hidden states and its other arguments (masks, positions). Each block is
then called on those states alone, and its outputs are the next block's inputs, so that a
block sees the outputs of the blocks before it as quantized. Within a block the weights are
read in the order the block uses them (:func:`block_sites`) and their inputs caught from its
calls (:func:`capture_layer_inputs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lamina.autograd import Tensor, no_grad
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.ptq.quant_attention import attention_heads, self_attention_input
from lamina.nn.quantize import _replace

__all__ = ["block_dense_layers", "block_sites", "capture_block_inputs", "capture_layer_inputs", "find_blocks",
           "replace_layers", "run_block"]

BLOCK_LISTS = ("layers", "h", "blocks")
"""The attribute names under which a model keeps its repeated blocks (Llama's, GPT-2's, others')."""


class _ReachedBlock(Exception):
    """Raised to stop a model's run once the first block's inputs are caught."""


def find_blocks(model: Module, blocks, who: str) -> list[Module]:
    """``blocks`` as a list, or the model's ModuleList of blocks (see :data:`BLOCK_LISTS`)."""
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a lamina Module, got {type(model).__name__}")
    if blocks is None:
        for name in BLOCK_LISTS:
            found = model._modules.get(name)
            if isinstance(found, ModuleList) and len(found):
                blocks = found
                break
        else:
            raise ValueError(f"{who}: {model._label()} has no ModuleList of blocks named one of {BLOCK_LISTS}; "
                             "pass blocks= (the sequence of blocks to quantize in turn)")
    blocks = list(blocks)
    if not blocks or not all(isinstance(block, Module) for block in blocks):
        raise ValueError(f"{who}: blocks must be a non-empty sequence of Modules")
    return blocks


def capture_block_inputs(model: Module, blocks: list[Module], batches: Iterable, who: str) -> list[tuple]:
    """(args, kwargs) of the first block's call on each calibration batch (a batch is the
    model's input, or a tuple of its arguments)."""
    if batches is None:
        raise ValueError(f"{who}: calibration data is missing; pass an iterable of input batches")
    first, caught = blocks[0], []

    def catch(module, inputs, kwargs, forward):
        if module is first:
            caught.append((tuple(inputs), dict(kwargs)))
            raise _ReachedBlock
        return forward()

    count = 0
    with evaluation_mode(model), no_grad(), intercept_calls(catch):
        for batch in batches:
            count += 1
            try:
                model(*batch) if isinstance(batch, tuple) else model(batch)
            except _ReachedBlock:
                pass
    if not count:
        raise ValueError(f"{who}: the calibration data is empty; expected at least one input batch")
    if len(caught) != count:
        raise ValueError(f"{who}: the first block ({first._label()}) was not called on every calibration batch "
                         f"({len(caught)} of {count})")
    return caught


def _call(block: Module, state: tuple):
    args, kwargs = state
    with evaluation_mode(block), no_grad():
        return block(*args, **kwargs)


def run_block(block: Module, states: list[tuple]) -> list[tuple]:
    """The states of the next block: each call's output in place of its first argument."""
    return [((_call(block, state),) + tuple(state[0][1:]), state[1]) for state in states]


def _input_array(inputs) -> object:
    x = inputs[0]
    return x.data if isinstance(x, Tensor) else x


def _skipped(path: str, skip) -> bool:
    return any(path == name or path.endswith("." + name) for name in skip)


def block_sites(block: Module, state: tuple, skip, who: str, attention: bool = False) -> list[tuple]:
    """The weights of ``block`` to quantize, in the order the block uses them on ``state``:
    (path, layer, name), name None for a Dense layer (exact type) and 'in_weight' then
    'out_weight' for a MultiHeadAttention (exact type) when ``attention``; layers named in
    ``skip`` (a path or its last component) left out."""
    skip = (skip,) if isinstance(skip, str) else tuple(skip or ())
    kinds = (Dense, MultiHeadAttention) if attention else (Dense,)
    paths = {id(m): path for path, m in block.named_modules() if type(m) in kinds}
    order: list[Module] = []

    def note(module, inputs, kwargs, forward):
        if id(module) in paths and module not in order:
            order.append(module)
        return forward()

    with intercept_calls(note):
        _call(block, state)
    sites = []
    for module in order:
        if _skipped(paths[id(module)], skip):
            continue
        names = (None,) if type(module) is Dense else ("in_weight", "out_weight")
        sites += [(paths[id(module)], module, name) for name in names]
    if not sites:
        raise ValueError(f"{who}: {block._label()} calls no Dense layer to quantize (supported: Dense"
                         + (" and MultiHeadAttention)" if attention else ")"))
    return sites


def block_dense_layers(block: Module, state: tuple, skip, who: str) -> list[tuple[str, Dense]]:
    """The (path, layer) of the Dense layers ``block`` calls, in call order (see :func:`block_sites`)."""
    return [(path, layer) for path, layer, _ in block_sites(block, state, skip, who)]


def _site_input(layer: Module, name: str | None, inputs: tuple, kwargs: dict):
    if name is None:
        return _input_array(inputs)
    if name == "in_weight":
        return self_attention_input(layer, inputs, kwargs)
    return attention_heads(layer, inputs, kwargs)


def capture_layer_inputs(block: Module, layer: Module, states: list[tuple], name: str | None = None,
                         with_kwargs: bool = False) -> Iterator:
    """The input array of each call of ``layer`` (of its projection ``name`` for an attention
    layer) while ``block`` runs on each state; with ``with_kwargs`` (array, the call's
    keyword arguments) pairs."""
    seen: list = []

    def catch(module, inputs, kwargs, forward):
        if module is layer:
            x = _site_input(layer, name, inputs, kwargs)
            seen.append((x, dict(kwargs)) if with_kwargs else x)
        return forward()

    for state in states:
        with intercept_calls(catch):
            _call(block, state)
        yield from seen
        seen.clear()


def replace_layers(root: Module, replacements: dict[int, Module]) -> None:
    """Swap every sub-module of ``root`` whose id is in ``replacements`` for its replacement."""
    _replace(root, replacements)
