"""A registry of the named model builders, after torchvision's ``list_models`` / ``get_model``.

Every builder is listed once, in :data:`_BUILDERS`, under the task it solves:

* ``"classification"``: image classifiers (NHWC images in, class logits out), from
  :func:`lenet5` to :func:`vit_h_14`, and timm's MLP-Mixer, ResMLP, ConvMixer and DeiT (weights by
  :func:`load_timm_state_dict`);
* ``"segmentation"``: per-pixel classifiers (FCN, DeepLabV3, LR-ASPP, SegFormer, U-Net, PSPNet, UNet++);
* ``"detection"``: box (and mask or keypoint) detectors (RetinaNet, FCOS, DETR, Faster/Mask/Keypoint R-CNN,
  SSD, SSDlite, the grid detector);
* ``"video"``: clip classifiers on NDHWC clips (R3D, MC3, R(2+1)D, S3D);
* ``"language"``: models of token ids (GPT-2, BERT, Llama, Mistral, Qwen2, Gemma, Gemma 2, Phi-3,
  GPT-NeoX, Mixtral, Mamba, T5, the RNN and transformer language models), Whisper (speech to
  token ids) and wav2vec 2.0 (speech to CTC label scores);
* ``"generative"``: models that produce samples or densities (DCGAN, RealNVP);
* ``"multimodal"``: models of images and text together (CLIP, with ViT or ResNet image towers);
* ``"flow"``: optical flow between two images (RAFT large and small);
* ``"forecasting"``: time-series forecasters of (batch, input_length, channels) windows (TCN, N-BEATS,
  DLinear, PatchTST, Autoformer, Informer, N-HiTS, TSMixer) and the Temporal Fusion Transformer.

Names are the builders' own (``get_model("resnet18")`` calls :func:`resnet18`). lamina
ships no pretrained weights: convert published ones with :func:`load_torchvision_state_dict`,
:func:`load_hf_gpt2_state_dict`, :func:`load_hf_bert_state_dict`,
:func:`load_hf_llama_state_dict`, :func:`load_hf_mamba_state_dict` or :func:`load_hf_clip_state_dict`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MODEL_GROUPS", "get_model", "get_model_builder", "list_models"]

MODEL_GROUPS = ("classification", "segmentation", "detection", "video", "language", "generative", "multimodal",
                "flow", "forecasting")


def _named(module: str, *names: str) -> list[tuple[str, Callable[..., Any]]]:
    # Submodules are looked up by path: the package re-exports functions under some of their names.
    source = importlib.import_module(f"lamina.models.{module}")
    return [(name, getattr(source, name)) for name in names]


_BY_GROUP: dict[str, list[tuple[str, Callable[..., Any]]]] = {
    "classification": [
        *_named("classic", "lenet5"),
        *_named("alexnet", "alexnet", "zfnet"),
        *_named("vgg", "vgg11", "vgg13", "vgg16", "vgg19"),
        *_named("resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_cifar",
                "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"),
        *_named("googlenet", "googlenet"),
        *_named("inception", "inception_v3"),
        *_named("mobilenet", "mobilenet"),
        *_named("mobilenet_v2", "mobilenet_v2"),
        *_named("mobilenet_v3", "mobilenet_v3_small", "mobilenet_v3_large"),
        *_named("densenet", "densenet121", "densenet169", "densenet201"),
        *_named("squeezenet", "squeezenet1_0", "squeezenet1_1"),
        *_named("shufflenet", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"),
        *_named("mnasnet", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"),
        *_named("efficientnet", *(f"efficientnet_b{i}" for i in range(8)),
                "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"),
        *_named("regnet", *(f"regnet_{kind}_{size}" for kind in "xy"
                          for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
                "regnet_y_128gf"),
        *_named("convnext", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
                "convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano", "convnextv2_tiny"),
        *_named("swin", "swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b"),
        *_named("maxvit", "maxvit_t"),
        *_named("coatnet", "coatnet_0"),
        *_named("levit", "levit_128s"),
        *_named("vit", "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"),
        *_named("mlp_mixer", "mixer_s32_224", "mixer_s16_224", "mixer_b32_224", "mixer_b16_224", "mixer_l16_224",
                "resmlp_12_224", "resmlp_24_224"),
        *_named("convmixer", "convmixer_768_32", "convmixer_1536_20", "convmixer_1024_20_ks9_p14"),
        *_named("poolformer", "poolformer_s12", "poolformer_s24", "poolformer_s36", "poolformer_m36",
                "poolformer_m48"),
        *_named("deit", "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
                "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224",
                "deit_base_distilled_patch16_224"),
        *_named("cait", "cait_xxs24", "cait_xxs36", "cait_s24"),
        *_named("vision_mamba", "vim_tiny", "vim_small"),
        *_named("crossvit", "crossvit_9_240", "crossvit_tiny_240"),
        *_named("pvt", "pvt_v2_b0", "pvt_v2_b1"),
        *_named("cvt", "cvt_13"),
    ],
    "segmentation": [
        *_named("segmentation", "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"),
        *_named("deeplabv3_plus", "deeplabv3_plus_resnet50"),
        *_named("lraspp", "lraspp_mobilenet_v3_large"),
        *_named("segformer", "segformer"),
        *_named("unet", "unet"),
        *_named("pspnet", "pspnet_resnet50"),
        *_named("unet_plus_plus", "unet_plus_plus"),
    ],
    "detection": [
        *_named("retinanet", "retinanet_resnet50_fpn"),
        *_named("fcos", "fcos_resnet50_fpn"),
        *_named("detr", "detr_resnet50"),
        *_named("faster_rcnn", "fasterrcnn_resnet50_fpn"),
        *_named("mobilenet_fpn", "fasterrcnn_mobilenet_v3_large_fpn"),
        *_named("mask_rcnn", "maskrcnn_resnet50_fpn"),
        *_named("keypoint_rcnn", "keypointrcnn_resnet50_fpn"),
        *_named("ssd", "ssd300_vgg16"),
        *_named("ssdlite", "ssdlite320_mobilenet_v3_large"),
        *_named("detector", "grid_detector"),
    ],
    "video": [
        *_named("video", "r3d_18", "mc3_18", "r2plus1d_18"),
        *_named("s3d", "s3d"),
    ],
    "language": [
        *_named("gpt2", "gpt2"),
        *_named("bert", "bert"),
        *_named("llama", "llama"),
        *_named("mistral", "mistral"),
        *_named("qwen2", "qwen2"),
        *_named("gemma", "gemma", "gemma2"),
        *_named("phi3", "phi3"),
        *_named("gpt_neox", "gpt_neox"),
        *_named("mixtral", "mixtral"),
        *_named("mamba", "mamba"),
        *_named("t5", "t5"),
        *_named("whisper", "whisper"),
        *_named("wav2vec2", "wav2vec2"),
        *_named("wav2vec2_pretraining", "wav2vec2_pretraining"),
        *_named("sequence", "rnn_language_model", "rnn_classifier", "transformer_language_model"),
    ],
    "generative": [
        *_named("gan", "dcgan_generator", "dcgan_discriminator"),
        *_named("flows", "realnvp"),
    ],
    "multimodal": [
        *_named("clip", "clip"),
        *_named("clip_resnet", "clip_resnet"),
    ],
    "flow": [
        *_named("raft", "raft_large", "raft_small"),
    ],
    "forecasting": [
        *_named("forecasting", "tcn", "nbeats", "dlinear", "patchtst", "autoformer", "informer", "nhits", "tsmixer",
                "tft", "timesnet", "itransformer"),
    ],
}

_BUILDERS: dict[str, tuple[str, Callable[..., Any]]] = {
    name: (group, builder) for group, entries in _BY_GROUP.items() for name, builder in entries
}


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def list_models(
    module: str | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
) -> list[str]:
    """The registered model names, sorted.

    ``module`` keeps one group of :data:`MODEL_GROUPS` (``"classification"``, ``"detection"`` ...);
    ``include`` keeps names matching any of its fnmatch patterns (``"resnet*"``), ``exclude``
    then drops names matching any of its patterns.
    """
    if module is not None and module not in MODEL_GROUPS:
        raise ValueError(f"list_models: unknown module {module!r}; expected one of {', '.join(MODEL_GROUPS)}")
    names = [name for name, (group, _) in _BUILDERS.items() if module is None or group == module]
    included = _as_patterns(include)
    if included:
        names = [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in included)]
    excluded = _as_patterns(exclude)
    names = [name for name in names if not any(fnmatch.fnmatch(name, pattern) for pattern in excluded)]
    return sorted(names)


def get_model_builder(name: str) -> Callable[..., Any]:
    """The builder registered as ``name`` (a :class:`ValueError` listing close names if there is none)."""
    key = name.lower()
    if key not in _BUILDERS:
        close = difflib.get_close_matches(key, list(_BUILDERS), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see lamina.models.list_models()"
        raise ValueError(f"get_model: unknown model {name!r}{hint}")
    return _BUILDERS[key][1]


def get_model(name: str, *, weights: Any = None, **config: Any) -> Any:
    """The model ``name`` built by its builder with ``config`` (e.g. ``num_classes``, ``input_shape``).

    ``weights`` must be None: lamina ships no pretrained weights.
    """
    builder = get_model_builder(name)
    if weights is not None:
        raise ValueError(
            f"get_model({name!r}): weights={weights!r} requested, but lamina ships no pretrained weights; "
            "build with weights=None and load published ones with lamina.models.load_torchvision_state_dict "
            "(torchvision models) or load_hf_gpt2_state_dict / load_hf_bert_state_dict / load_hf_llama_state_dict "
            "/ load_hf_clip_state_dict / load_hf_segformer_state_dict / load_hf_wav2vec2_state_dict "
            "(Hugging Face models)"
        )
    return builder(**config)
