"""One front for the parameter-efficient fine-tuning methods, in the manner of the peft
library: a config per method, :func:`get_peft_model` to adapt a built model,
:func:`print_trainable_parameters`, merging and unmerging every adapter at once, and the
trainable (adapter) weights alone saved to and loaded from a file.

    model = get_peft_model(gpt2_model, LoraConfig(r=4, target_modules=["linear1", "linear2"]))
    print_trainable_parameters(model)
    ... train ...
    save_adapter(model, "adapter.npz")
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.io.atomic import atomic_write
from lamina.nn.adapters import apply_bottleneck_adapters
from lamina.nn.dense import Dense
from lamina.nn.dense4bit import Dense4bit
from lamina.nn.dora import DoRADense
from lamina.nn.ia3 import IA3Dense, apply_ia3, fold_attention_scale, ia3_attention_scales
from lamina.nn.loha import DeltaDense, apply_loha, apply_lokr, apply_vera
from lamina.nn.lora import apply_lora, merge_lora, unmerge_lora
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.prompt_tuning import PrefixTuningLM, PromptTuningLM
from lamina.nn.transformer import TransformerEncoderLayer

__all__ = ["AdapterConfig", "IA3Config", "LoHaConfig", "LoKrConfig", "LoraConfig", "PrefixTuningConfig",
           "PromptEncoderConfig", "PromptTuningConfig", "VeraConfig", "adapter_state_dict", "get_peft_model",
           "load_adapter", "merge_adapters", "print_trainable_parameters", "save_adapter",
           "trainable_parameter_counts", "unmerge_adapters"]


@dataclass
class LoraConfig:
    """LoRA (:func:`~lamina.nn.apply_lora`), or DoRA with ``use_dora`` (Dense layers only).
    ``target_modules``: a type, names or a predicate (MultiHeadAttention adapts the queries
    and values for LoRA); None adapts every Dense."""
    r: int = 8
    lora_alpha: float = 16.0
    target_modules: object = None
    lora_dropout: float = 0.0
    use_dora: bool = False


@dataclass
class IA3Config:
    """IA3 (:func:`~lamina.nn.apply_ia3`): ``target_modules`` rescaled, the
    ``feedforward_modules`` among them on their inputs."""
    target_modules: object = (Dense, MultiHeadAttention)
    feedforward_modules: object = ()


@dataclass
class LoHaConfig:
    r: int = 8
    alpha: float = 8.0
    target_modules: object = Dense
    module_dropout: float = 0.0


@dataclass
class LoKrConfig:
    r: int = 4
    alpha: float = 4.0
    target_modules: object = Dense
    module_dropout: float = 0.0


@dataclass
class VeraConfig:
    r: int = 16
    target_modules: object = Dense
    d_initial: float = 0.1
    projection_prng_key: int = 0
    vera_dropout: float = 0.0


@dataclass
class AdapterConfig:
    """Bottleneck adapters (:func:`~lamina.nn.apply_bottleneck_adapters`)."""
    bottleneck: int = 16
    placement: str = "houlsby"
    activation: str = "relu"
    up_std: float = 0.0
    target_modules: object = TransformerEncoderLayer


@dataclass
class PromptTuningConfig:
    """Prompt tuning (:class:`~lamina.nn.PromptTuningLM`); ``prompt_tuning_init`` 'random',
    'vocab' or 'text' (then ``init_ids``, the token ids of the text)."""
    num_virtual_tokens: int = 8
    prompt_tuning_init: str = "random"
    init_ids: object = None


@dataclass
class PromptEncoderConfig:
    """P-tuning: prompt tuning whose virtual tokens pass through an MLP
    (:class:`~lamina.nn.PromptTuningLM` with ``prompt_encoder='mlp'``)."""
    num_virtual_tokens: int = 8
    encoder_hidden_size: int | None = None


@dataclass
class PrefixTuningConfig:
    """Prefix tuning (:class:`~lamina.nn.PrefixTuningLM`)."""
    num_virtual_tokens: int = 8
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None


def get_peft_model(model: Module, config) -> Module:
    """``model`` (built) adapted by the method ``config`` names: the model itself with
    adapted layers, or for prompt and prefix tuning a wrapper around it. Only the new
    weights learn."""
    if isinstance(config, LoraConfig):
        target = (Dense, Dense4bit) if config.target_modules is None else config.target_modules
        return apply_lora(model, config.r, config.lora_alpha, target, config.lora_dropout, use_dora=config.use_dora)
    if isinstance(config, IA3Config):
        return apply_ia3(model, config.target_modules, config.feedforward_modules)
    if isinstance(config, LoHaConfig):
        return apply_loha(model, config.r, config.alpha, config.target_modules, config.module_dropout)
    if isinstance(config, LoKrConfig):
        return apply_lokr(model, config.r, config.alpha, config.target_modules, config.module_dropout)
    if isinstance(config, VeraConfig):
        return apply_vera(model, config.r, config.target_modules, config.d_initial, config.projection_prng_key,
                          config.vera_dropout)
    if isinstance(config, AdapterConfig):
        return apply_bottleneck_adapters(model, config.bottleneck, config.placement, config.activation,
                                         config.up_std, config.target_modules)
    if isinstance(config, PromptTuningConfig):
        return PromptTuningLM(model, config.num_virtual_tokens, config.prompt_tuning_init, config.init_ids)
    if isinstance(config, PromptEncoderConfig):
        return PromptTuningLM(model, config.num_virtual_tokens, prompt_encoder="mlp",
                              encoder_hidden_size=config.encoder_hidden_size)
    if isinstance(config, PrefixTuningConfig):
        return PrefixTuningLM(model, config.num_virtual_tokens, config.prefix_projection, config.encoder_hidden_size)
    raise TypeError(f"get_peft_model: unknown config {type(config).__name__}; expected one of LoraConfig, "
                    "IA3Config, LoHaConfig, LoKrConfig, VeraConfig, AdapterConfig, PromptTuningConfig, "
                    "PromptEncoderConfig, PrefixTuningConfig")


def trainable_parameter_counts(model: Module) -> tuple[int, int]:
    """(trainable, all) parameter values of ``model``."""
    return model.num_parameters(trainable_only=True), model.num_parameters()


def print_trainable_parameters(model: Module) -> str:
    """Print (and return) peft's line 'trainable params: T || all params: A || trainable%: p'."""
    trainable, total = trainable_parameter_counts(model)
    line = (f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}")
    print(line)
    return line


def merge_adapters(model: Module) -> Module:
    """Fold every weight adapter of ``model`` (LoRA, DoRA, IA3, LoHa, LoKr, VeRA) into its
    layer's weights; the outputs stay the same to rounding. Merging a merged adapter is an
    error (ValueError). Bottleneck adapters and virtual tokens cannot merge and stay."""
    _fold_all(model, merge=True)
    return model


def unmerge_adapters(model: Module) -> Module:
    """Undo :func:`merge_adapters`, each adapter learning on afterwards."""
    _fold_all(model, merge=False)
    return model


def _fold_all(model: Module, merge: bool) -> None:
    from lamina.nn.lora import LoRADense, _attention_adapters

    foldable = [m for m in model.modules() if isinstance(m, (DoRADense, IA3Dense, DeltaDense))]
    has_lora = any(isinstance(m, LoRADense) or (isinstance(m, MultiHeadAttention) and _attention_adapters(m))
                   for m in model.modules())
    for module in foldable:
        if module.merged == merge:
            raise ValueError(f"{'merge' if merge else 'unmerge'}_adapters: {module._label()} is "
                             f"{'already' if merge else 'not'} merged")
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            for part, scale in ia3_attention_scales(module):
                if scale.merged == merge:
                    raise ValueError(f"{'merge' if merge else 'unmerge'}_adapters: the IA3 vectors of "
                                     f"{module._label()} are {'already' if merge else 'not'} merged")
                fold_attention_scale(module, part, scale, +1 if merge else -1)
    for module in foldable:
        if merge:
            module.merge()
        else:
            module.unmerge()
    if has_lora:
        (merge_lora if merge else unmerge_lora)(model)


def adapter_state_dict(model: Module) -> OrderedDict:
    """The trainable parameters alone (the adapters, prompts and prefixes after
    :func:`get_peft_model`), by their names in ``model.state_dict()``."""
    return OrderedDict((name, p.data) for name, p in model.named_parameters(trainable_only=True))


def save_adapter(model: Module, path: str | os.PathLike) -> None:
    """Write :func:`adapter_state_dict` to ``path`` (an .npz archive), atomically."""
    arrays = {name: backend.to_numpy(value) for name, value in adapter_state_dict(model).items()}
    if not arrays:
        raise ValueError(f"save_adapter: {model._label()} has no trainable parameters to save")
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def load_adapter(model: Module, path: str | os.PathLike) -> Module:
    """Load the adapter weights :func:`save_adapter` wrote into ``model``, adapted the same
    way (the other weights untouched). A KeyError lists names the model lacks. Returns it."""
    with np.load(path) as archive:
        state = {name: archive[name] for name in archive.files}
    own = dict(model.named_parameters())
    unknown = [name for name in state if name not in own]
    if unknown:
        raise KeyError(f"load_adapter: {path} holds weights the model lacks: {unknown}; adapt the model as it was "
                       "when saved first")
    model.load_state_dict(state, strict=False)
    return model
