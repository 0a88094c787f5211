"""LoRA, low-rank adaptation (Hu et al. 2021): fine-tune a large pretrained layer by
learning a small correction to its weight instead of the weight itself.

A Dense layer y = x W + b, W of shape (n_in, n_out), is frozen and gets the trainable
low-rank term

    y = x W + b + (alpha / r) dropout(x) A B,   A: (n_in, r),  B: (r, n_out),  r << n_in, n_out

A starts Kaiming-uniform (U(-1/sqrt(n_in), 1/sqrt(n_in)), as the peft library draws it) and B
at zero, so the adapted model starts equal to the pretrained one. Only r (n_in + n_out) values
learn instead of n_in n_out. After training the term folds into the weight,
W' = W + (alpha / r) A B (:func:`merge_lora`), and the model costs no more than before.

:func:`apply_lora` freezes a built model and adapts its Dense layers (or those chosen by type,
name or predicate) in place, each replaced by a :class:`LoRADense` that holds the original
layer as ``base``. A :class:`~lamina.nn.MultiHeadAttention` chosen as a target gets adapters
on its query and value projections (peft's default for attention; ``attention_parts``
chooses others) as its sub-modules ``lora_q`` and ``lora_v``.

QLoRA (Dettmers et al. 2023): the frozen base may be a 4-bit :class:`~lamina.nn.Dense4bit`
(:func:`lamina.nn.quantize_model_4bit`); the adapter, in float, learns on top of the
dequantized weight. Merging into a 4-bit base (:func:`merge_lora`) dequantizes W, adds
(alpha / r) A B and quantizes the sum again in the layer's format (the outputs then change by
the new rounding, as peft's merge does; unmerging subtracts and quantizes again, so it is not
exact), or with ``dequantize=True`` first replaces the base by a float Dense holding the
dequantized W, so that the merge is exact and the merged model is float.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.nn.activation import activate_fresh
from lamina.nn.dense import Dense, linear
from lamina.nn.dense4bit import Dense4bit
from lamina.nn.dropout import DropoutFunction
from lamina.nn.layer import dropout_rate, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import LORA_ADAPTERS, MultiHeadAttention

__all__ = ["LoRAAdapter", "LoRADense", "apply_lora", "lora_state_dict", "merge_lora", "unmerge_lora"]


@register_layer
class LoRAAdapter(Module):
    """The low-rank term delta(x) = (alpha / r) dropout(x) A B of one projection, with A
    (in_features, r) and B (r, out_features) its parameters ``A`` and ``B``."""

    def __init__(self, in_features: int, out_features: int, r: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, dtype=None, name: str | None = None):
        super().__init__(name=name)
        positive_int(in_features, "LoRAAdapter: in_features")
        positive_int(out_features, "LoRAAdapter: out_features")
        positive_int(r, "LoRAAdapter: r (the rank)")
        if not float(alpha) > 0:
            raise ValueError(f"LoRAAdapter: alpha must be > 0, got {alpha!r}")
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / r
        self.dropout = dropout_rate(dropout, "LoRAAdapter")
        self.merged = False
        dtype = backend.get_default_dtype() if dtype is None else dtype
        bound = 1.0 / math.sqrt(in_features)
        a = backend.rng().uniform(-bound, bound, (in_features, r)).astype(dtype)
        self.add_parameter("A", backend.xp.asarray(a))
        self.add_parameter("B", backend.xp.zeros((r, out_features), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        if self.dropout and self.training:
            x = DropoutFunction.apply(x, rate=self.dropout)
        return linear(linear(x, self.A), self.B) * self.scaling

    def delta_weight(self):
        """(alpha / r) A B as an array (n_in, n_out): what merging adds to the weight."""
        return (self.A.data @ self.B.data) * self.A.data.dtype.type(self.scaling)

    def get_config(self) -> dict:
        n_in, n_out = self.A.shape[0], self.B.shape[1]
        return {"in_features": int(n_in), "out_features": int(n_out), "r": self.r, "alpha": self.alpha,
                "dropout": self.dropout, "dtype": self.A.dtype.name, "merged": self.merged, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> LoRAAdapter:
        config = dict(config)
        merged = config.pop("merged", False)
        adapter = cls(**config)
        adapter.merged = merged
        return adapter

    def extra_repr(self) -> str:
        n_in, n_out = self.A.shape[0], self.B.shape[1]
        return f"{n_in} -> {n_out}, r={self.r}, alpha={self.alpha:g}" + (", merged" if self.merged else "")


@register_layer
class LoRADense(Module):
    """A built :class:`Dense` or :class:`~lamina.nn.Dense4bit` ``dense`` (frozen) with a LoRA
    term on its weight: g(x W + b + (alpha / r) dropout(x) A B), g the layer's activation. The
    original layer is the sub-module ``base`` and the adapter ``lora`` (:class:`LoRAAdapter`;
    over a 4-bit base, in the base's compute dtype or the default dtype)."""

    def __init__(self, dense: Dense | Dense4bit, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 name: str | None = None):
        if not isinstance(dense, (Dense, Dense4bit)):
            raise TypeError(f"LoRADense: expected a Dense or Dense4bit layer to adapt, got {type(dense).__name__}")
        if not dense.built:
            raise ValueError(f"LoRADense: {dense._label()} has no weights yet; call it on an input or build it "
                             "before adapting it")
        super().__init__(name=name or dense.name)
        dense.freeze()
        self.base = dense
        if isinstance(dense, Dense4bit):
            shape, dtype = (dense.in_features, dense.units), dense.compute_dtype
        else:
            shape, dtype = dense.weight.shape, dense.weight.dtype
        self.lora = LoRAAdapter(shape[0], shape[1], r, alpha, dropout, dtype=dtype)
        self.built = True

    def forward(self, x) -> Tensor:
        base = self.base
        if isinstance(base, Dense4bit):
            z = base.apply_weights(x, activate=False)
        else:
            z = base.apply_weights(x, base.weight, activate=False)
        if not self.lora.merged:
            z = z + self.lora(x)
        return z if base.activation is None else activate_fresh(base.activation, z)

    def merge(self) -> None:
        """Fold the adapter into the weight: W <- W + (alpha / r) A B (the outputs do not change;
        a 4-bit weight is quantized again, see the module's docstring)."""
        self._fold(+1)

    def unmerge(self) -> None:
        """Undo :meth:`merge`: W <- W - (alpha / r) A B."""
        self._fold(-1)

    def _fold(self, sign: int) -> None:
        if isinstance(self.base, Dense4bit):
            _fold_4bit(self.base, self.lora, sign, self._label())
        else:
            _fold(self.base.weight, self.lora, sign, self._label())

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return lora_layer_config(self)

    @classmethod
    def from_config(cls, config: dict) -> LoRADense:
        config = dict(config)
        merged = config.pop("merged", False)
        layer = cls(adapted_base_from_config(config), **config)
        layer.lora.merged = merged
        return layer

    def extra_repr(self) -> str:
        return self.base.extra_repr() + f", r={self.lora.r}, alpha={self.lora.alpha:g}"


def lora_layer_config(layer: Module) -> dict:
    """The config of a layer adapting ``layer.base`` by its ``layer.lora`` factors (LoRA, DoRA)."""
    lora = layer.lora
    return {**adapted_base_config(layer.base), "r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
            "merged": lora.merged, "name": layer.name}


def adapted_base_config(base: Module) -> dict:
    """The part of an adapted layer's config that describes its built ``base`` (a Dense or
    Dense4bit): ``{"base": its config, "in_features": the input width it was built for}``."""
    n_in = base.in_features if isinstance(base, Dense4bit) else base.weight.shape[0]
    return {"base": layer_to_config(base), "in_features": int(n_in)}


def adapted_base_from_config(config: dict) -> Module:
    """The base layer of :func:`adapted_base_config`, built (fresh weights); pops both keys
    from ``config``."""
    base = layer_from_config(config.pop("base"))
    base.build((None, config.pop("in_features")))
    base.built = True
    return base


def _fold(weight, adapter: LoRAAdapter, sign: int, label: str, columns: slice = slice(None)) -> None:
    if adapter.merged == (sign > 0):
        state = "already merged" if adapter.merged else "not merged"
        raise ValueError(f"{label}: the LoRA adapter is {state}")
    with no_grad():
        updated = weight.data.copy()
        updated[:, columns] += sign * adapter.delta_weight()
        weight.data = updated
    adapter.merged = sign > 0


def _fold_4bit(layer: Dense4bit, adapter: LoRAAdapter, sign: int, label: str) -> None:
    """W_4bit <- quantize(dequantize(W_4bit) + sign (alpha / r) A B), in the layer's format."""
    if adapter.merged == (sign > 0):
        state = "already merged" if adapter.merged else "not merged"
        raise ValueError(f"{label}: the LoRA adapter is {state}")
    weight = layer.dequantized_weight(backend.xp.float64)
    layer.set_weight(weight + sign * adapter.delta_weight().astype(backend.xp.float64))
    adapter.merged = sign > 0


# -- whole models ---------------------------------------------------------------------------

_PARTS = {"q": 0, "k": 1, "v": 2}


def _selector(target) -> Callable[[str, Module], bool]:
    """(path, module) -> whether to adapt it, from a type, a tuple of types, a name or list of
    names (a module's dotted path, or its last components), or a predicate."""
    if isinstance(target, type) or (isinstance(target, tuple) and target and all(isinstance(t, type) for t in target)):
        return lambda path, module: isinstance(module, target)
    if isinstance(target, str):
        target = [target]
    if isinstance(target, Iterable) and not callable(target):
        names = list(target)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"apply_lora: target names must be strings, got {names!r}")
        return lambda path, module: any(path == n or path.endswith("." + n) for n in names)
    if callable(target):
        return target
    raise ValueError(f"apply_lora: target must be a layer type, a tuple of types, module names or a predicate "
                     f"(path, module) -> bool, got {target!r}")


def apply_lora(model: Module, r: int = 8, alpha: float = 16.0, target=(Dense, Dense4bit), dropout: float = 0.0,
               attention_parts: tuple[str, ...] = ("q", "v"), use_dora: bool = False) -> Module:
    """Freeze the built ``model`` and add LoRA adapters (rank ``r``, scale alpha / r, input
    dropout ``dropout``) to the layers ``target`` chooses (Dense and 4-bit Dense4bit by default):
    a layer type or tuple of types,
    module names (dotted paths as ``named_modules`` gives them, or their last components) or
    a predicate ``(path, module) -> bool``. A chosen Dense is replaced in its parent by a
    :class:`LoRADense`; a chosen MultiHeadAttention gets adapters on the projections named in
    ``attention_parts`` ('q', 'k', 'v'). Only the adapters learn afterwards (unfreeze other
    layers, such as a new head, by hand). Returns the model (the new LoRADense when ``model``
    itself is a Dense). ``use_dora=True`` makes DoRA adapters instead
    (:func:`lamina.nn.apply_dora`; float Dense layers only)."""
    from lamina.nn.functional_model import Model

    if use_dora:
        from lamina.nn.dora import apply_dora

        return apply_dora(model, r, alpha, Dense if target == (Dense, Dense4bit) else target, dropout)

    parts = tuple(attention_parts)
    if not parts or any(p not in _PARTS for p in parts):
        raise ValueError(f"apply_lora: attention_parts must name some of 'q', 'k', 'v', got {attention_parts!r}")
    chosen = _selector(target)
    found = []
    for path, module in _adaptable(model):
        if isinstance(module, (Dense, Dense4bit, MultiHeadAttention)) and chosen(path, module):
            if not module.built:
                raise ValueError(f"apply_lora: {module._label()} ({path or 'the model'}) has no weights yet; call "
                                 "the model on an input first")
            found.append((path, module))
    if not found:
        raise ValueError(f"apply_lora: no Dense, Dense4bit or MultiHeadAttention layer of {model._label()} matches the "
                         f"target {target!r}")
    model.freeze()
    for path, module in found:
        if isinstance(module, MultiHeadAttention):
            module.require_joint_projection("apply_lora")
            for part in parts:
                columns = module.projection_columns(_PARTS[part])
                width = columns.stop - columns.start
                setattr(module, LORA_ADAPTERS[_PARTS[part]], LoRAAdapter(
                    module.embed_dim, width, r, alpha, dropout, dtype=module.in_weight.dtype))
            continue
        adapted = LoRADense(module, r, alpha, dropout)
        if not path:
            return adapted
        parent_path, _, key = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        if isinstance(parent, Model):
            raise ValueError(f"apply_lora: {module._label()} is called by the graph of the functional "
                             f"{parent._label()}, which cannot swap its layers; build the graph with "
                             "LoRADense layers instead")
        setattr(parent, key, adapted)
    return model


def _adaptable(model: Module):
    """(path, module) of the modules not inside a LoRA wrapper or adapter."""
    stack = [("", model)]
    while stack:
        path, module = stack.pop()
        if isinstance(module, (LoRADense, LoRAAdapter)):
            continue
        yield path, module
        children = [(f"{path}.{k}" if path else k, child) for k, child in module.named_children()]
        stack.extend(reversed(children))


def _attention_adapters(module: Module):
    return [(part, module._modules[name]) for part, name in enumerate(LORA_ADAPTERS) if name in module._modules]


def merge_lora(model: Module, unload: bool = False, dequantize: bool = False) -> Module:
    """Fold every adapter of ``model`` into its layer's weight, W <- W + (alpha / r) A B (the
    outputs stay the same to rounding). ``unload=True`` also removes the adapters, putting
    back the plain Dense layers: the model is then the pretrained architecture with new
    weights (savable and exportable as before). Returns the model (the Dense when ``model``
    itself is a LoRADense and ``unload`` is true).

    A 4-bit base (QLoRA) is dequantized, merged and quantized again in its format (it stays a
    Dense4bit; the outputs move by the new 4-bit rounding); ``dequantize=True`` replaces it by
    a float Dense with the dequantized weight first, so that the merge is exact and the
    merged layers are float (8 times the bytes of NF4)."""
    for path, module in list(model.named_modules()):
        if isinstance(module, LoRADense):
            if dequantize and isinstance(module.base, Dense4bit):
                module.base = module.base.to_dense().freeze()
            if not module.lora.merged:
                module.merge()
            if unload:
                if not path:
                    return module.base
                parent_path, _, key = path.rpartition(".")
                setattr(model.get_submodule(parent_path), key, module.base)
        elif isinstance(module, MultiHeadAttention):
            for part, adapter in _attention_adapters(module):
                if not adapter.merged:
                    _fold(module.in_weight, adapter, +1, module._label(), module.projection_columns(part))
                if unload:
                    delattr(module, LORA_ADAPTERS[part])
    return model


def unmerge_lora(model: Module) -> Module:
    """Undo :func:`merge_lora` (without ``unload``): subtract each merged adapter's term from
    its weight again, so that the adapters can go on learning. Returns the model."""
    for _, module in model.named_modules():
        if isinstance(module, LoRADense) and module.lora.merged:
            module.unmerge()
        elif isinstance(module, MultiHeadAttention):
            for part, adapter in _attention_adapters(module):
                if adapter.merged:
                    _fold(module.in_weight, adapter, -1, module._label(), module.projection_columns(part))
    return model


def lora_state_dict(model: Module) -> OrderedDict:
    """The adapters' parameters alone, by dotted name as in ``model.state_dict()`` (load them
    into an adapted copy of the pretrained model with ``load_state_dict(state, strict=False)``)."""
    state = OrderedDict()
    for path, module in model.named_modules():
        if isinstance(module, LoRAAdapter):
            for key, param in module._parameters.items():
                state[f"{path}.{key}" if path else key] = param.data
    return state
