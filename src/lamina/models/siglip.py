"""SigLIP (Zhai et al., "Sigmoid loss for language image pre-training", 2023): CLIP's two towers
trained with a sigmoid loss over every image-text pair instead of CLIP's softmax over the batch.

    logits_per_text = exp(s) (t / |t|)(v / |v|)^T + b,  logits_per_image = its transpose
    loss = -1/N sum_ij log sigmoid(z_ij logits_per_image_ij),  z = 2 I - 1

(:func:`lamina.functional.siglip_loss`). ``s`` (``logit_scale``, the paper's t') starts at
log 10 and the learnable bias ``b`` (``logit_bias``) at -10. A pair's probability of matching
is sigmoid(logit), on its own, not normalised over the classes or the batch.
:func:`lamina.distributed.siglip_loss_ring` computes the same loss with the batch spread over
several processes. The towers are :class:`~lamina.models.CLIP`'s (ViT image tower, causal text
tower pooled at its end-of-text token); Google's released SigLIP weights use other towers (an
attention-pooling head, a bidirectional text encoder) and do not load here.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models.clip import CLIP, CLIP_CONFIGS, CLIPOutput
from lamina.nn.layer import register_layer

__all__ = ["SigLIP", "siglip"]


def sigmoid_pair_scores(model, embeds, text_embeds, return_loss: bool, what: str) -> tuple:
    """(logits (N, M), their transpose, SigLIP loss or None) of unit-length embeddings of N
    inputs (``what`` names them in errors) and M texts, with ``model``'s ``logit_scale`` t' and
    ``logit_bias`` b; the loss needs matching pairs (N = M)."""
    logits = F.siglip_logits(embeds, text_embeds, model.logit_scale, model.logit_bias)
    loss = None
    if return_loss:
        if embeds.shape[0] != text_embeds.shape[0]:
            raise ShapeError(f"{model._label()}: return_loss needs as many texts as {what} (matching pairs), got "
                             f"{text_embeds.shape[0]} texts and {embeds.shape[0]} {what}")
        loss = F.siglip_loss(embeds, text_embeds, model.logit_scale, model.logit_bias, normalize=False)
    return logits, F.transpose(logits, 1, 0), loss


@register_layer
class SigLIP(CLIP):
    """:class:`CLIP` with SigLIP's logits and loss (see the module docstring): ``model(
    pixel_values, input_ids, attention_mask=None, return_loss=False)`` -> :class:`CLIPOutput`
    whose logits include the bias and whose loss is the sigmoid loss. Parameters
    ``logit_scale`` (t', starting at ``logit_scale_init_value``) and ``logit_bias`` (b, starting
    at ``logit_bias_init_value``); the other arguments are :class:`CLIP`'s."""

    def __init__(self, text_config: dict | None = None, vision_config: dict | None = None,
                 projection_dim: int = 512, logit_scale_init_value: float = F.SIGLIP_LOG_TEMPERATURE_INIT,
                 logit_bias_init_value: float = F.SIGLIP_BIAS_INIT, name: str | None = None):
        super().__init__(text_config, vision_config, projection_dim, logit_scale_init_value, name=name)
        self.logit_bias_init_value = float(logit_bias_init_value)

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        self.add_parameter("logit_bias", backend.xp.asarray(self.logit_bias_init_value, dtype=dtype))

    def forward(self, pixel_values, input_ids, attention_mask=None, return_loss: bool = False) -> CLIPOutput:
        image_embeds = F.normalize(self.get_image_features(pixel_values), axis=-1)
        text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask), axis=-1)
        logits, transposed, loss = sigmoid_pair_scores(self, image_embeds, text_embeds, return_loss, "images")
        return CLIPOutput(logits, transposed, image_embeds, text_embeds, loss)

    def get_config(self) -> dict:
        return {**super().get_config(), "logit_bias_init_value": self.logit_bias_init_value}


def siglip(config: str = "tiny", **options) -> SigLIP:
    """A :class:`SigLIP` with the towers of :func:`~lamina.models.clip` ``(config)`` ('tiny',
    'vit_b_32', 'vit_b_16', 'vit_l_14'); ``options`` override :class:`SigLIP`'s arguments
    (``text_config`` / ``vision_config`` entries are merged). Unbuilt."""
    if config not in CLIP_CONFIGS:
        raise ValueError(f"siglip: config must be one of {tuple(CLIP_CONFIGS)}, got {config!r}")
    base = CLIP_CONFIGS[config]
    merged = {**base, **options}
    for key in ("text_config", "vision_config"):
        merged[key] = {**base[key], **options.get(key, {})}
    return SigLIP(**merged)
