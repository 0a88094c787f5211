"""Promptable segmentation in the style of Segment Anything (Kirillov et al. 2023, "Segment
Anything"; SAM): an image encoder gives an embedding grid once, and a light prompt encoder and
mask decoder turn points, boxes or a coarse mask into masks.

    image:    E = image_encoder(x)                 (N, h, w, C), NHWC, computed once per image
    prompts:  sparse tokens  (N, P, C): a point p (pixels, centre p + 0.5) becomes
                  pe(p / (W, H)) + e_label,  pe(u) = [cos(2 pi (2u - 1) B), sin(2 pi (2u - 1) B)]
              with B ~ N(0, 1) of shape (2, C / 2) (random Fourier features, a buffer), e_label
              a learned embedding of a negative (0) or positive (1) point; a padding point
              (label -1) is the learned "not a point" embedding alone, without pe; a box is its
              two corners, pe(corner) + e_top_left / e_bottom_right. Points without a box get
              one padding point appended (the reference encoder's rule).
              dense (N, h, w, C): a low-res mask prompt (N, 4h, 4w, 1) through two stride-2
              2x2 convolutions (LayerNorm and GELU after each) and a 1x1 one, or else a learned
              "no mask" vector at every cell
    decoder:  tokens = [iou token; M + 1 mask tokens; sparse tokens], image = E + dense,
              a :class:`TwoWayTransformer` with the grid's positional encoding pe(cell centres),
              the image upscaled 4x by two 2x2 stride-2 transposed convolutions (to C / 8
              channels), mask k = <MLP_k(mask token k), upscaled feature of each pixel>
              (hypernetwork weights), IoU scores = MLP(iou token)
    output:   ``multimask_output``: the M masks of tokens 1..M (ambiguity-aware), else the one
              mask of token 0; masks bilinearly upsampled to the input size

Masks are returned as (N, masks, H, W) logits (each mask a separate answer, not a channel).
:func:`sam_loss` is the paper's training loss: 20 focal + 1 dice for each mask, the lowest of
the M masks back-propagated, plus the mean squared error between the predicted IoU and the IoU
of the thresholded mask with the target. :func:`tiny_sam` builds a small model around a strided
CNN image encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.nn import Conv2D, Conv2DTranspose, Dense, FourierFeatures, LayerNorm, ModuleList, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["SAMAttention", "SAMMaskDecoder", "SAMOutput", "SAMPromptEncoder", "SegmentAnything",
           "TwoWayAttentionBlock", "TwoWayTransformer", "sam_loss", "tiny_sam"]

NORM_EPS = 1e-6          # the channel layer norms of the image-side convolutions


def _pair(value, who: str, what: str) -> tuple[int, int]:
    sizes = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(sizes) != 2:
        raise ValueError(f"{who}: {what} must be an int or a (height, width) pair, got {value!r}")
    return tuple(positive_int(n, f"{who}: {what}") for n in sizes)


def _as_float(x, dtype) -> Tensor:
    x = as_tensor(x)
    return x if x.dtype == dtype else cast(x, dtype)


def _mlp(widths: list[int], prefix: str) -> ModuleList:
    return ModuleList([Dense(width, name=f"{prefix}{k}") for k, width in enumerate(widths)])


def _run_mlp(layers: ModuleList, x: Tensor) -> Tensor:
    """Dense layers with ReLU between them (none after the last)."""
    for k, layer in enumerate(layers):
        x = layer(x)
        if k < len(layers) - 1:
            x = F.relu(x)
    return x


# -- prompt encoder ------------------------------------------------------------------------
@register_with_arguments
class SAMPromptEncoder(Module):
    """Sparse and dense prompt embeddings (module notes). ``embed_dim`` C (even);
    ``image_embedding_size`` (h, w) of the image encoder's grid; ``input_image_size`` (H, W)
    in pixels, the frame of the point and box coordinates (x, y); ``mask_in_chans`` the
    hidden channels of the mask downscaler.

    ``forward(points=None, labels=None, boxes=None, masks=None, batch_size=None)`` ->
    (sparse (N, P, C), dense (N, h, w, C)); points (N, n, 2) with labels (N, n) in {-1, 0, 1},
    boxes (N, 4) as (x0, y0, x1, y1), masks (N, 4h, 4w, 1) logits. :meth:`get_dense_pe` is the
    positional encoding (1, h, w, C) of the grid's cell centres.
    """

    default_name = "sam_prompt_encoder"

    def __init__(self, embed_dim: int, image_embedding_size, input_image_size, mask_in_chans: int = 16,
                 name: str | None = None):
        super().__init__(name=name)
        who = "SAMPromptEncoder"
        self.embed_dim = positive_int(embed_dim, f"{who}: embed_dim")
        if self.embed_dim % 2:
            raise ValueError(f"{who}: embed_dim must be even (cos and sin halves), got {embed_dim}")
        self.image_embedding_size = _pair(image_embedding_size, who, "image_embedding_size")
        self.input_image_size = _pair(input_image_size, who, "input_image_size")
        self.mask_in_chans = positive_int(mask_in_chans, f"{who}: mask_in_chans")
        self.pe_layer = FourierFeatures(2, self.embed_dim // 2, scale=1.0, name="pe_layer")
        rng, dtype = backend.rng(), backend.get_default_dtype()
        # rows: not a point (label -1), negative point, positive point, box top-left, box bottom-right
        self.add_parameter("point_embeddings", rng.standard_normal((5, self.embed_dim)).astype(dtype))
        self.add_parameter("no_mask_embed", rng.standard_normal((self.embed_dim,)).astype(dtype))
        quarter = max(1, self.mask_in_chans // 4)
        self.mask_downscaling = ModuleList([
            Conv2D(quarter, 2, stride=2, name="conv0"), LayerNorm(-1, eps=NORM_EPS, name="norm0"),
            Conv2D(self.mask_in_chans, 2, stride=2, name="conv1"), LayerNorm(-1, eps=NORM_EPS, name="norm1"),
            Conv2D(self.embed_dim, 1, name="conv2")])

    def _positional(self, unit: Tensor) -> Tensor:
        """pe(u) for coordinates u in [0, 1] (..., 2) -> (..., C)."""
        return self.pe_layer(2.0 * unit - 1.0)

    def get_dense_pe(self) -> Tensor:
        h, w = self.image_embedding_size
        ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        grid = np.stack([xs, ys], axis=-1)[None].astype(self.point_embeddings.dtype)
        return self._positional(Tensor._wrap(backend.xp.asarray(grid)))

    def _unit(self, pixels: Tensor) -> Tensor:
        height, width = self.input_image_size
        scale = np.array([1.0 / width, 1.0 / height], dtype=pixels.dtype)
        return (pixels + 0.5) * Tensor._wrap(backend.xp.asarray(scale))

    def _embed_points(self, points: Tensor, labels: np.ndarray) -> Tensor:
        if np.any((labels < -1) | (labels > 1)):
            raise ValueError(f"{self._label()}: point labels must be -1 (padding), 0 or 1, got {np.unique(labels)}")
        keep = (labels != -1).astype(points.dtype)[..., None]
        chosen = np.eye(5, dtype=points.dtype)[labels + 1]                    # (N, n, 5) one-hot rows
        learned = Tensor._wrap(backend.xp.asarray(chosen)) @ self.point_embeddings
        return self._positional(self._unit(points)) * Tensor._wrap(backend.xp.asarray(keep)) + learned

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        corners = F.reshape(boxes, boxes.shape[0], 2, 2)
        return self._positional(self._unit(corners)) + F.getitem(self.point_embeddings, slice(3, 5))

    def _embed_masks(self, masks: Tensor) -> Tensor:
        x = masks
        for layer in self.mask_downscaling:
            x = layer(x)
            if isinstance(layer, LayerNorm):
                x = F.gelu(x)
        return x

    def forward(self, points=None, labels=None, boxes=None, masks=None, batch_size: int | None = None):
        dtype = self.point_embeddings.dtype
        sizes = [a.shape[0] for a in (points, boxes, masks) if a is not None] + ([batch_size] if batch_size else [])
        if not sizes:
            raise ValueError(f"{self._label()}: give points, boxes, masks or batch_size")
        n = sizes[0]
        if any(s != n for s in sizes):
            raise ShapeError(f"{self._label()}: the prompts disagree on the batch size: {sizes}")
        parts = []
        if points is not None:
            points = _as_float(points, dtype)
            labels = np.asarray(labels if labels is not None else np.ones(points.shape[:2], np.int64)).astype(np.int64)
            if points.ndim != 3 or points.shape[2] != 2 or labels.shape != tuple(points.shape[:2]):
                raise ShapeError(f"{self._label()}: points {tuple(points.shape)} and labels {labels.shape} must be "
                                 f"(batch, points, 2) and (batch, points)")
            if boxes is None:               # the reference's pad rule: a padding point when no box is given
                points = F.concat([points, Tensor._wrap(backend.xp.zeros((n, 1, 2), dtype=dtype))], axis=1)
                labels = np.concatenate([labels, -np.ones((n, 1), np.int64)], axis=1)
            parts.append(self._embed_points(points, labels))
        if boxes is not None:
            boxes = _as_float(boxes, dtype)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ShapeError(f"{self._label()}: boxes must be (batch, 4) as (x0, y0, x1, y1), got "
                                 f"{tuple(boxes.shape)}")
            parts.append(self._embed_boxes(boxes))
        sparse = (F.concat(parts, axis=1) if parts
                  else Tensor._wrap(backend.xp.zeros((n, 0, self.embed_dim), dtype=dtype)))
        h, w = self.image_embedding_size
        if masks is not None:
            masks = _as_float(masks, dtype)
            if tuple(masks.shape[1:]) != (4 * h, 4 * w, 1):
                raise ShapeError(f"{self._label()}: mask prompts must be (batch, {4 * h}, {4 * w}, 1), got "
                                 f"{tuple(masks.shape)}")
            dense = self._embed_masks(masks)
        else:
            dense = F.broadcast_to(F.reshape(self.no_mask_embed, 1, 1, 1, self.embed_dim), (n, h, w, self.embed_dim))
        return sparse, dense


# -- two-way transformer -------------------------------------------------------------------
@register_with_arguments
class SAMAttention(Module):
    """Multi-head attention whose queries, keys and values are projected down to
    ``embed_dim / downsample_rate`` features: out = W_o concat_h softmax(q_h k_h^T / sqrt(d_h)) v_h.
    ``forward(q, k, v)`` on (N, T, C) queries and (N, S, C) keys and values."""

    default_name = "sam_attention"

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.embed_dim = positive_int(embed_dim, "SAMAttention: embed_dim")
        self.num_heads = positive_int(num_heads, "SAMAttention: num_heads")
        self.downsample_rate = positive_int(downsample_rate, "SAMAttention: downsample_rate")
        self.internal_dim = self.embed_dim // self.downsample_rate
        if self.internal_dim == 0 or self.internal_dim % self.num_heads:
            raise ValueError(f"SAMAttention: embed_dim / downsample_rate = {embed_dim} / {downsample_rate} must be "
                             f"a positive multiple of num_heads {num_heads}")
        self.q_proj, self.k_proj, self.v_proj = (Dense(self.internal_dim, name=n) for n in ("q_proj", "k_proj",
                                                                                             "v_proj"))
        self.out_proj = Dense(self.embed_dim, name="out_proj")

    def _heads(self, x: Tensor) -> Tensor:
        n, t, _ = x.shape
        return F.transpose(F.reshape(x, n, t, self.num_heads, self.internal_dim // self.num_heads), 0, 2, 1, 3)

    def forward(self, q, k, v) -> Tensor:
        q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
        if q.ndim != 3 or k.ndim != 3 or q.shape[-1] != self.embed_dim or k.shape != v.shape:
            raise ShapeError(f"{self._label()}: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                             f"expected (batch, tokens, {self.embed_dim}) with k and v alike")
        qh, kh, vh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        scores = (qh @ F.transpose(kh, 0, 1, 3, 2)) * (1.0 / math.sqrt(qh.shape[-1]))
        context = F.transpose(F.softmax(scores, axis=-1) @ vh, 0, 2, 1, 3)
        return self.out_proj(F.reshape(context, q.shape[0], q.shape[1], self.internal_dim))


@register_with_arguments
class TwoWayAttentionBlock(Module):
    """One block of :class:`TwoWayTransformer` on tokens q (N, T, C) and image features k
    (N, S, C), with their positional encodings q_pe, k_pe re-added before every attention:

        q <- LN1(q + self_attn(q + q_pe, q + q_pe, q))   (the first block: LN1(self_attn(q, q, q)))
        q <- LN2(q + attn_t2i(q + q_pe, k + k_pe, k))
        q <- LN3(q + MLP(q))                               (ReLU MLP with ``mlp_dim`` hidden units)
        k <- LN4(k + attn_i2t(k + k_pe, q + q_pe, q))

    The cross attentions work at ``embed_dim / attention_downsample_rate`` features.
    ``forward(queries, keys, query_pe, key_pe)`` -> (queries, keys)."""

    default_name = "two_way_attention_block"

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.embed_dim = positive_int(embed_dim, "TwoWayAttentionBlock: embed_dim")
        self.skip_first_layer_pe = bool(skip_first_layer_pe)
        self.self_attn = SAMAttention(embed_dim, num_heads, name="self_attn")
        self.cross_attn_token_to_image = SAMAttention(embed_dim, num_heads, attention_downsample_rate,
                                                      name="cross_attn_token_to_image")
        self.mlp = _mlp([positive_int(mlp_dim, "TwoWayAttentionBlock: mlp_dim"), embed_dim], "mlp")
        self.cross_attn_image_to_token = SAMAttention(embed_dim, num_heads, attention_downsample_rate,
                                                      name="cross_attn_image_to_token")
        self.norm1, self.norm2, self.norm3, self.norm4 = (LayerNorm(-1, name=f"norm{k}") for k in range(1, 5))

    def forward(self, queries, keys, query_pe, key_pe):
        queries, keys, query_pe, key_pe = (as_tensor(a) for a in (queries, keys, query_pe, key_pe))
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + _run_mlp(self.mlp, queries))
        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


@register_with_arguments
class TwoWayTransformer(Module):
    """``depth`` :class:`TwoWayAttentionBlock` (the first without the positional encoding in
    its self-attention), then a final token-to-image attention: q <- LN(q + attn(q + q_pe,
    k + k_pe, k)). ``forward(image_embedding (N, h, w, C), image_pe (N or 1, h, w, C),
    point_embedding (N, T, C))`` -> (tokens (N, T, C), image features (N, h w, C)); the
    prompt tokens are their own positional encoding q_pe."""

    default_name = "two_way_transformer"

    def __init__(self, depth: int, embed_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.depth = positive_int(depth, "TwoWayTransformer: depth")
        self.embed_dim = positive_int(embed_dim, "TwoWayTransformer: embed_dim")
        self.layers = ModuleList([TwoWayAttentionBlock(embed_dim, num_heads, mlp_dim, attention_downsample_rate,
                                                       skip_first_layer_pe=k == 0, name=str(k))
                                  for k in range(self.depth)])
        self.final_attn_token_to_image = SAMAttention(embed_dim, num_heads, attention_downsample_rate,
                                                      name="final_attn_token_to_image")
        self.norm_final_attn = LayerNorm(-1, name="norm_final_attn")

    def forward(self, image_embedding, image_pe, point_embedding):
        image, image_pe, tokens = (as_tensor(a) for a in (image_embedding, image_pe, point_embedding))
        if image.ndim != 4 or image.shape[-1] != self.embed_dim or tokens.ndim != 3 \
                or tokens.shape[0] != image.shape[0] or tokens.shape[-1] != self.embed_dim:
            raise ShapeError(f"{self._label()}: image {tuple(image.shape)} and tokens {tuple(tokens.shape)}; "
                             f"expected (batch, h, w, {self.embed_dim}) and (batch, tokens, {self.embed_dim})")
        n, h, w, c = image.shape
        keys = F.reshape(image, n, h * w, c)
        key_pe = F.broadcast_to(F.reshape(image_pe, image_pe.shape[0], h * w, c), (n, h * w, c))
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attended), keys


# -- mask decoder --------------------------------------------------------------------------
@register_with_arguments(modules=("transformer",))
class SAMMaskDecoder(Module):
    """Masks and IoU scores from an image embedding and prompt embeddings (module notes).
    ``transformer`` a :class:`TwoWayTransformer` of width ``transformer_dim`` C (a multiple of
    8); ``num_multimask_outputs`` M; the IoU head an MLP of ``iou_head_depth`` layers
    (``iou_head_hidden_dim`` hidden units) to M + 1 scores.

    ``forward(image_embeddings (N, h, w, C), image_pe (1, h, w, C), sparse (N, P, C), dense
    (N, h, w, C), multimask_output=True)`` -> (mask logits (N, M or 1, 4h, 4w), IoU scores
    (N, M or 1))."""

    default_name = "sam_mask_decoder"

    def __init__(self, transformer_dim: int, transformer: Module, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256, name: str | None = None):
        super().__init__(name=name)
        self.transformer_dim = positive_int(transformer_dim, "SAMMaskDecoder: transformer_dim")
        if self.transformer_dim % 8:
            raise ValueError(f"SAMMaskDecoder: transformer_dim must be a multiple of 8, got {transformer_dim}")
        self.transformer = transformer
        self.num_multimask_outputs = positive_int(num_multimask_outputs, "SAMMaskDecoder: num_multimask_outputs")
        self.num_mask_tokens = self.num_multimask_outputs + 1
        c = self.transformer_dim
        rng, dtype = backend.rng(), backend.get_default_dtype()
        self.add_parameter("iou_token", rng.standard_normal((1, c)).astype(dtype))
        self.add_parameter("mask_tokens", rng.standard_normal((self.num_mask_tokens, c)).astype(dtype))
        self.upscale0 = Conv2DTranspose(c // 4, 2, stride=2, name="upscale0")
        self.upscale_norm = LayerNorm(-1, eps=NORM_EPS, name="upscale_norm")
        self.upscale1 = Conv2DTranspose(c // 8, 2, stride=2, name="upscale1")
        self.output_hypernetworks_mlps = ModuleList([_mlp([c, c, c // 8], f"hyper{k}_")
                                                     for k in range(self.num_mask_tokens)])
        depth = positive_int(iou_head_depth, "SAMMaskDecoder: iou_head_depth")
        hidden = positive_int(iou_head_hidden_dim, "SAMMaskDecoder: iou_head_hidden_dim")
        self.iou_prediction_head = _mlp([hidden] * (depth - 1) + [self.num_mask_tokens], "iou")

    def predict_masks(self, image_embeddings, image_pe, sparse, dense):
        """All M + 1 masks (N, M + 1, 4h, 4w) and IoU scores (N, M + 1)."""
        image, sparse, dense = as_tensor(image_embeddings), as_tensor(sparse), as_tensor(dense)
        n, c = image.shape[0], self.transformer_dim
        if image.ndim != 4 or image.shape[-1] != c or tuple(dense.shape) != tuple(image.shape) \
                or sparse.ndim != 3 or sparse.shape[0] != n:
            raise ShapeError(f"{self._label()}: image embeddings {tuple(image.shape)}, sparse {tuple(sparse.shape)}, "
                             f"dense {tuple(dense.shape)}; expected (batch, h, w, {c}) for the image and the dense "
                             f"prompt and (batch, prompts, {c})")
        output_tokens = F.concat([self.iou_token, self.mask_tokens], axis=0)
        tokens = F.concat([F.broadcast_to(F.expand_dims(output_tokens, 0), (n, *output_tokens.shape)), sparse], axis=1)
        hs, keys = self.transformer(image + dense, image_pe, tokens)
        h, w = image.shape[1:3]
        grid = F.gelu(self.upscale_norm(self.upscale0(F.reshape(keys, n, h, w, c))))
        upscaled = F.gelu(self.upscale1(grid))                                      # (N, 4h, 4w, C / 8)
        hyper_in = F.stack([_run_mlp(mlp, F.getitem(hs, (slice(None), 1 + k)))
                            for k, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1)   # (N, M + 1, C / 8)
        masks = F.einsum("nyxc,nmc->nmyx", upscaled, hyper_in)
        iou = _run_mlp(self.iou_prediction_head, F.getitem(hs, (slice(None), 0)))
        return masks, iou

    def forward(self, image_embeddings, image_pe, sparse, dense, multimask_output: bool = True):
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse, dense)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return F.getitem(masks, (slice(None), chosen)), F.getitem(iou, (slice(None), chosen))


# -- the whole model -----------------------------------------------------------------------
@dataclass
class SAMOutput:
    """``masks`` (N, K, H, W) logits at the input size, ``iou_predictions`` (N, K),
    ``low_res_logits`` (N, K, 4h, 4w); K = M with ``multimask_output``, else 1."""

    masks: Tensor
    iou_predictions: Tensor
    low_res_logits: Tensor


@register_with_arguments(modules=("image_encoder", "prompt_encoder", "mask_decoder"))
class SegmentAnything(Module):
    """Segment Anything: ``image_encoder`` (NHWC images -> (N, h, w, C)), a
    :class:`SAMPromptEncoder` and a :class:`SAMMaskDecoder` (module notes).
    Calling the model is :meth:`predict`."""

    default_name = "segment_anything"

    def __init__(self, image_encoder: Module, prompt_encoder: Module, mask_decoder: Module, name: str | None = None):
        super().__init__(name=name)
        self.image_encoder, self.prompt_encoder, self.mask_decoder = image_encoder, prompt_encoder, mask_decoder

    def predict(self, images, points=None, labels=None, boxes=None, mask_inputs=None,
                multimask_output: bool = True, image_embeddings=None) -> SAMOutput:
        """Masks for one prompt set per image: ``points`` (N, n, 2) pixel (x, y) with
        ``labels`` (N, n) (1 positive, 0 negative, -1 padding; all 1 if omitted), ``boxes``
        (N, 4), ``mask_inputs`` (N, 4h, 4w, 1) low-res logits (an earlier ``low_res_logits``
        moved to the last axis). ``image_embeddings`` reuses an encoder output."""
        return self(images, points=points, labels=labels, boxes=boxes, mask_inputs=mask_inputs,
                    multimask_output=multimask_output, image_embeddings=image_embeddings)

    def forward(self, images, points=None, labels=None, boxes=None, mask_inputs=None,
                multimask_output: bool = True, image_embeddings=None) -> SAMOutput:
        images = as_tensor(images)
        expected = self.prompt_encoder.input_image_size
        if images.ndim != 4 or tuple(images.shape[1:3]) != expected:
            raise ShapeError(f"{self._label()}: images {tuple(images.shape)}; expected (batch, {expected[0]}, "
                             f"{expected[1]}, channels)")
        embeddings = self.image_encoder(images) if image_embeddings is None else as_tensor(image_embeddings)
        if tuple(embeddings.shape[1:3]) != self.prompt_encoder.image_embedding_size:
            raise ShapeError(f"{self._label()}: the image encoder gives a grid {tuple(embeddings.shape)}; the prompt "
                             f"encoder expects {self.prompt_encoder.image_embedding_size}")
        sparse, dense = self.prompt_encoder(points, labels, boxes, mask_inputs, batch_size=images.shape[0])
        low_res, iou = self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                         multimask_output)
        channels_last = F.transpose(low_res, 0, 2, 3, 1)
        masks = F.transpose(F.interpolate(channels_last, size=expected, mode="bilinear", align_corners=False),
                            0, 3, 1, 2)
        return SAMOutput(masks, iou, low_res)


def tiny_sam(image_size: int = 32, embed_dim: int = 32, depth: int = 2, num_heads: int = 2, mlp_dim: int = 64,
             in_channels: int = 3, encoder_widths: tuple[int, ...] = (16, 32), num_multimask_outputs: int = 3,
             iou_head_hidden_dim: int = 32) -> SegmentAnything:
    """A small :class:`SegmentAnything`: an image encoder of stride-2 3x3 convolutions (GELU)
    of ``encoder_widths`` channels and a 1x1 one to ``embed_dim``, so the grid is
    ``image_size / 2^len(encoder_widths)`` cells a side."""
    image_size = positive_int(image_size, "tiny_sam: image_size")
    stride = 2 ** len(encoder_widths)
    if image_size % stride:
        raise ValueError(f"tiny_sam: image_size {image_size} must be a multiple of {stride}")
    encoder = Sequential([*(Conv2D(width, 3, stride=2, padding="same", activation="gelu") for width in encoder_widths),
                          Conv2D(embed_dim, 1)])
    grid = image_size // stride
    prompt_encoder = SAMPromptEncoder(embed_dim, grid, image_size, mask_in_chans=16)
    decoder = SAMMaskDecoder(embed_dim, TwoWayTransformer(depth, embed_dim, num_heads, mlp_dim),
                             num_multimask_outputs=num_multimask_outputs, iou_head_hidden_dim=iou_head_hidden_dim)
    return SegmentAnything(encoder, prompt_encoder, decoder)


def _per_mask_losses(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> tuple[Tensor, Tensor]:
    """Focal (mean over pixels) and dice losses of each mask: (N, K) each."""
    p = F.sigmoid(logits)
    ce = -(target * F.log_sigmoid(logits) + (1.0 - target) * F.log_sigmoid(-logits))
    p_t = p * target + (1.0 - p) * (1.0 - target)
    weight = alpha * target + (1.0 - alpha) * (1.0 - target)
    focal = F.mean(weight * ce * (1.0 - p_t) ** gamma, axis=(2, 3))
    dice = 1.0 - (2.0 * F.sum(p * target, axis=(2, 3)) + 1.0) / (F.sum(p, axis=(2, 3))
                                                                  + F.sum(target, axis=(2, 3)) + 1.0)
    return focal, dice


def sam_loss(mask_logits, iou_predictions, target, focal_weight: float = 20.0, dice_weight: float = 1.0,
             iou_weight: float = 1.0, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """The paper's loss, averaged over the batch: for each mask k of (N, K, H, W) logits
    against the (N, H, W) binary ``target``, L_k = focal_weight focal_k + dice_weight dice_k
    (sigmoid focal loss with ``alpha``, ``gamma``, mean over pixels; dice with +1 smoothing);
    only min_k L_k is kept (the best of the multimask outputs), plus iou_weight (iou_k* -
    IoU(logits_k* > 0, target))^2 for that mask k*, the IoU target held constant."""
    logits, iou_pred = as_tensor(mask_logits), as_tensor(iou_predictions)
    target = np.asarray(backend.to_numpy(target.data) if isinstance(target, Tensor) else target)
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]) \
            or tuple(iou_pred.shape) != tuple(logits.shape[:2]):
        raise ShapeError(f"sam_loss: logits {tuple(logits.shape)}, IoU predictions {tuple(iou_pred.shape)} and "
                         f"target {target.shape}; expected (N, K, H, W), (N, K) and (N, H, W)")
    target_k = Tensor._wrap(backend.xp.asarray(target[:, None].astype(logits.dtype)))
    focal, dice = _per_mask_losses(logits, target_k, alpha, gamma)
    per_mask = focal_weight * focal + dice_weight * dice                           # (N, K)
    best = np.argmin(backend.to_numpy(per_mask.data), axis=1)
    pick = Tensor._wrap(backend.xp.asarray(np.eye(logits.shape[1], dtype=logits.dtype)[best]))
    predicted = backend.to_numpy(logits.data) > 0
    truth = target[:, None] > 0.5
    union = np.logical_or(predicted, truth).sum(axis=(2, 3))
    actual_iou = np.where(union > 0, np.logical_and(predicted, truth).sum(axis=(2, 3)) / np.maximum(union, 1), 1.0)
    iou_error = (iou_pred - Tensor._wrap(backend.xp.asarray(actual_iou.astype(logits.dtype)))) ** 2
    return F.mean(F.sum((per_mask + iou_weight * iou_error) * pick, axis=1))
