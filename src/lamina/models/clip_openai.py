"""Loading OpenAI's CLIP checkpoints (the ``clip`` package's state dicts) into lamina: the
ResNet models (RN50, RN101, RN50x4 ...) into :class:`~lamina.models.ResNetCLIP`, the ViT
models (ViT-B/32, ViT-B/16, ViT-L/14) into :class:`~lamina.models.CLIP`.

OpenAI's names and lamina's:

    visual.*  (ResNet)                         the same names (the tower is ``visual`` here too);
                                               conv weights (K, c, f, f) -> (K, f, f, c),
                                               attnpool's Linear weights (out, in) -> (in, out)
    visual.conv1.weight  (ViT)                 vision_model.patch_embedding.weight, (K, c, p, p) -> (K, p, p, c)
    visual.class_embedding                     vision_model.class_embedding
    visual.positional_embedding                vision_model.position_embedding.weight
    visual.ln_pre / ln_post                    vision_model.pre_layrnorm / post_layernorm
    visual.transformer.resblocks.i.*           vision_model.layers.i.* (as the text layers below)
    visual.proj (width, D), x P                visual_projection.weight, as it is
    token_embedding.weight                     text_model.token_embedding.weight
    positional_embedding                       text_model.position_embedding.weight
    transformer.resblocks.i.attn.in_proj_*     text_model.layers.i.self_attention.in_* (weight transposed)
    transformer.resblocks.i.attn.out_proj.*    text_model.layers.i.self_attention.out_*
    transformer.resblocks.i.ln_1 / ln_2        text_model.layers.i.norm1 / norm2
    transformer.resblocks.i.mlp.c_fc / c_proj  text_model.layers.i.linear1 / linear2
    ln_final                                   text_model.final_layer_norm
    text_projection (width, D), x P            text_projection.weight, as it is
    logit_scale                                logit_scale

BatchNorm's ``num_batches_tracked`` and the checkpoint's ``input_resolution``,
``context_length`` and ``vocab_size`` entries are ignored.
"""

from __future__ import annotations

import numpy as np

from lamina.models.clip import CLIP
from lamina.models.clip_resnet import ResNetCLIP
from lamina.models.hf_weights import HFWeight, copied, linear, load_hf_state_dict, read_state_dict

__all__ = ["load_openai_clip_state_dict", "openai_clip_table"]

_IGNORED = ("input_resolution", "context_length", "vocab_size")


def _conv(key: str) -> HFWeight:
    """A PyTorch Conv2d weight (K, c, f, f) as lamina's (K, f, f, c)."""
    return HFWeight((key,), lambda w: np.transpose(w, (0, 2, 3, 1)))


def _resblock(openai: str, ours: str) -> dict[str, HFWeight]:
    return {
        f"{ours}self_attention.in_weight": linear(f"{openai}attn.in_proj_weight"),
        f"{ours}self_attention.in_bias": copied(f"{openai}attn.in_proj_bias"),
        f"{ours}self_attention.out_weight": linear(f"{openai}attn.out_proj.weight"),
        f"{ours}self_attention.out_bias": copied(f"{openai}attn.out_proj.bias"),
        f"{ours}norm1.weight": copied(f"{openai}ln_1.weight"), f"{ours}norm1.bias": copied(f"{openai}ln_1.bias"),
        f"{ours}linear1.weight": linear(f"{openai}mlp.c_fc.weight"),
        f"{ours}linear1.bias": copied(f"{openai}mlp.c_fc.bias"),
        f"{ours}linear2.weight": linear(f"{openai}mlp.c_proj.weight"),
        f"{ours}linear2.bias": copied(f"{openai}mlp.c_proj.bias"),
        f"{ours}norm2.weight": copied(f"{openai}ln_2.weight"), f"{ours}norm2.bias": copied(f"{openai}ln_2.bias"),
    }


def _visual_weight(key: str, array) -> HFWeight:
    if np.ndim(array) == 4:
        return _conv(key)
    if key.startswith("visual.attnpool.") and key.endswith("_proj.weight"):
        return linear(key)
    return copied(key)


def _vit_table(model: CLIP) -> dict[str, HFWeight]:
    ours, theirs = "vision_model.", "visual."
    table = {f"{ours}patch_embedding.weight": _conv(f"{theirs}conv1.weight"),
             f"{ours}class_embedding": copied(f"{theirs}class_embedding"),
             f"{ours}position_embedding.weight": copied(f"{theirs}positional_embedding"),
             "visual_projection.weight": copied(f"{theirs}proj")}
    for norm, their_norm in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        table.update({f"{ours}{norm}.{p}": copied(f"{theirs}{their_norm}.{p}") for p in ("weight", "bias")})
    for i in range(model.vision_config["num_hidden_layers"]):
        table.update(_resblock(f"{theirs}transformer.resblocks.{i}.", f"{ours}layers.{i}."))
    return table


def openai_clip_table(model: CLIP) -> dict[str, HFWeight]:
    """The state-dict key of ``model`` (:class:`ResNetCLIP` or :class:`CLIP`) -> OpenAI's
    weight (module docstring)."""
    table = {"logit_scale": copied("logit_scale"), "text_projection.weight": copied("text_projection"),
             "text_model.token_embedding.weight": copied("token_embedding.weight"),
             "text_model.position_embedding.weight": copied("positional_embedding")}
    for part in ("weight", "bias"):
        table[f"text_model.final_layer_norm.{part}"] = copied(f"ln_final.{part}")
    for i in range(model.text_config["num_hidden_layers"]):
        table.update(_resblock(f"transformer.resblocks.{i}.", f"text_model.layers.{i}."))
    if not isinstance(model, ResNetCLIP):
        return {**table, **_vit_table(model)}
    for key, array in model.state_dict().items():
        if key.startswith("visual."):
            table[key] = _visual_weight(key, array)
    return table


def load_openai_clip_state_dict(model: CLIP, state_dict, strict: bool = True) -> None:
    """Load an OpenAI CLIP checkpoint into ``model``, a :class:`ResNetCLIP` (RN50 ...) or a
    :class:`CLIP` (ViT-B/32 ...) of the same config: ``state_dict`` maps OpenAI's names
    ('visual.layer1.0.conv1.weight', 'visual.transformer.resblocks.0.ln_1.weight',
    'transformer.resblocks.0.attn.in_proj_weight', ...) to arrays or torch tensors (the
    ``state_dict()`` of ``clip.load(name)[0]``), or is the path of a .safetensors file.
    Convolution weights (K, c, f, f) become (K, f, f, c), ``Linear`` weights are transposed
    (module docstring). An unbuilt model is built first. ``strict``: every weight present
    and every other key used, else a KeyError listing them; a mis-shaped value raises
    :class:`lamina.ShapeError`."""
    who = "load_openai_clip_state_dict"
    if not isinstance(model, CLIP):
        raise TypeError(f"{who}: expected a CLIP or ResNetCLIP model, got {type(model).__name__}")
    arrays = read_state_dict(state_dict, who)
    model._ensure_built()

    def ignored(key: str) -> bool:
        return key in _IGNORED or key.endswith("num_batches_tracked")

    load_hf_state_dict(model, arrays, openai_clip_table(model), ignored, strict, who)
