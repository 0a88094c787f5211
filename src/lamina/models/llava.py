"""LLaVA (Liu et al. 2023, "Visual Instruction Tuning"): a vision encoder's patch features,
projected into a decoder language model's embedding width, stand in the text where an image
placeholder token stands.

    Z = hidden state ``vision_layer`` of the vision encoder (patch tokens, (P, D_v) per image)
    H = projector(Z):  linear:      H = Z W + b
                       mlp2x_gelu:  H = GELU(Z W_1 + b_1) W_2 + b_2       (P, D) per image
    inputs = the text's token embeddings with each placeholder replaced by the P rows of H
             of the next image (images taken in the order their placeholders appear, row by row)

The language model then reads ``inputs`` as it reads embedded text (positions 0, 1, ... over
the expanded sequence). Training (:func:`llava_loss`) is next-token cross-entropy on the
answer tokens only: image, instruction and padding positions carry the label -100. Stage 1
trains the projector alone (vision encoder and language model frozen); stage 2 the projector
and the language model (or LoRA adapters on it), the vision encoder still frozen
(:func:`freeze_for_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn import GELU, Dense, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.peft import get_peft_model
from lamina.text.generate import caching_keys_values, sample_token

__all__ = ["IGNORE_INDEX", "LLaVA", "SplicedInputs", "answer_labels", "freeze_for_stage", "llava_loss",
           "splice_image_tokens"]

IGNORE_INDEX = -100
"""The label of positions that add nothing to the loss (images, instructions, padding)."""

PROJECTORS = ("linear", "mlp2x_gelu")
SELECTS = ("patch", "cls_patch")


def _numpy_ids(ids, who: str, ndim: int = 2) -> np.ndarray:
    array = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids)
    if array.ndim == 1 and ndim == 2:
        array = array[None]
    if array.ndim != ndim or array.dtype.kind not in "iub":
        raise ShapeError(f"{who}: expected integer token ids of shape (batch, time), got {array.dtype} "
                         f"{array.shape}")
    return array.astype(np.int64)


@dataclass
class SplicedInputs:
    """What :func:`splice_image_tokens` gives: ``embeddings`` (N, L, D); ``mask`` (N, L) bool,
    False on padding; ``position_ids`` (N, L), counting 0, 1, ... over each row's real
    positions (0 on padding); ``source`` (N, L), the flat index n T + t of the text token each
    position holds, -1 for image and padding positions."""

    embeddings: Tensor
    mask: np.ndarray
    position_ids: np.ndarray
    source: np.ndarray

    @property
    def padded(self) -> bool:
        return not bool(self.mask.all())

    def labels(self, labels) -> np.ndarray:
        """Text labels (N, T) moved to the expanded positions (N, L); -100 on images and padding."""
        flat = _numpy_ids(labels, "SplicedInputs.labels").reshape(-1)
        return np.where(self.source >= 0, flat[np.maximum(self.source, 0)], IGNORE_INDEX)


def splice_image_tokens(text_embeddings, ids, image_tokens, image_token_id: int, attention_mask=None,
                        padding_side: str = "right") -> SplicedInputs:
    """The embedded text ``text_embeddings`` (N, T, D) of ``ids`` (N, T) with each
    ``image_token_id`` placeholder replaced by the P rows of the next image of
    ``image_tokens`` (M, P, D) (images in the order of their placeholders, row by row; M must
    equal the number of placeholders). ``attention_mask`` (N, T), 0 on padding: padded
    tokens are dropped and the rows padded again to the longest expanded row on
    ``padding_side`` ('right' for training, 'left' for generation). Gradients reach both the
    text embeddings and the image tokens."""
    who = "splice_image_tokens"
    text, images = as_tensor(text_embeddings), as_tensor(image_tokens)
    ids = _numpy_ids(ids, who)
    if padding_side not in ("left", "right"):
        raise ValueError(f"{who}: padding_side must be 'left' or 'right', got {padding_side!r}")
    if text.ndim != 3 or tuple(text.shape[:2]) != ids.shape:
        raise ShapeError(f"{who}: text embeddings of shape {tuple(text.shape)} for ids of shape {ids.shape}; "
                         f"expected ({ids.shape[0]}, {ids.shape[1]}, D)")
    if images.ndim != 3 or images.shape[-1] != text.shape[-1]:
        raise ShapeError(f"{who}: image tokens of shape {tuple(images.shape)}; expected (M, P, {text.shape[-1]})")
    real = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(
        attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask).astype(bool)
    if real.shape != ids.shape:
        raise ShapeError(f"{who}: attention_mask of shape {real.shape} for ids of shape {ids.shape}")
    placeholders = (ids == image_token_id) & real
    count, width = int(placeholders.sum()), text.shape[-1]
    m, p = images.shape[:2]
    if count != m:
        raise ValueError(f"{who}: the ids hold {count} image placeholders (id {image_token_id}) but {m} images "
                         "were given")
    n, t = ids.shape
    zero_row = n * t + m * p
    rows, sources, image = [], [], 0
    for row in range(n):
        table_rows, text_rows = [], []
        for step in np.flatnonzero(real[row]):
            if placeholders[row, step]:
                table_rows.extend(range(n * t + image * p, n * t + (image + 1) * p))
                text_rows.extend([-1] * p)
                image += 1
            else:
                table_rows.append(row * t + step)
                text_rows.append(row * t + step)
        rows.append(table_rows)
        sources.append(text_rows)
    length = max(len(r) for r in rows)
    index = np.full((n, length), zero_row, dtype=np.int64)
    source = np.full((n, length), -1, dtype=np.int64)
    mask = np.zeros((n, length), dtype=bool)
    for row, (table_rows, text_rows) in enumerate(zip(rows, sources, strict=True)):
        span = slice(0, len(table_rows)) if padding_side == "right" else slice(length - len(table_rows), length)
        index[row, span], source[row, span], mask[row, span] = table_rows, text_rows, True
    positions = np.where(mask, np.cumsum(mask, axis=1) - 1, 0)
    table = F.concat([F.reshape(text, n * t, width), F.reshape(images, m * p, width),
                      Tensor(backend.xp.zeros((1, width), dtype=text.dtype))], axis=0)
    embeddings = F.reshape(F.take_rows(table, index.reshape(-1)), n, length, width)
    return SplicedInputs(embeddings, mask, positions, source)


def answer_labels(ids, answer_mask) -> np.ndarray:
    """The labels of LLaVA training: ``ids`` (N, T) where ``answer_mask`` is True (the answer
    tokens; a mask that broadcasts to (N, T)), -100 elsewhere (instruction, image
    placeholders, padding)."""
    ids = _numpy_ids(ids, "answer_labels")
    answer = np.asarray(answer_mask).astype(bool)
    try:
        answer = np.broadcast_to(answer, ids.shape)
    except ValueError:
        raise ShapeError(f"answer_labels: answer_mask of shape {answer.shape} does not broadcast to the ids' "
                         f"shape {ids.shape}") from None
    return np.where(answer, ids, IGNORE_INDEX)


def llava_loss(scores, labels) -> Tensor:
    """Next-token cross-entropy: the mean over positions i with labels[n, i + 1] != -100 of
    -log softmax(scores[n, i])[labels[n, i + 1]]; ``scores`` (N, L, V), ``labels`` (N, L)."""
    scores = as_tensor(scores)
    labels = _numpy_ids(labels, "llava_loss")
    if scores.ndim != 3 or tuple(scores.shape[:2]) != labels.shape:
        raise ShapeError(f"llava_loss: scores of shape {tuple(scores.shape)} for labels of shape {labels.shape}; "
                         "expected (N, L, V) and (N, L)")
    targets = labels[:, 1:]
    if not (targets != IGNORE_INDEX).any():
        raise ValueError("llava_loss: no position has a label other than -100 after the first")
    n, length, vocab = scores.shape
    predicted = F.reshape(scores[:, :-1], n * (length - 1), vocab)
    return F.cross_entropy(predicted, targets.reshape(-1), ignore_index=IGNORE_INDEX)


def _projector(kind: str, width: int) -> Sequential:
    if kind == "linear":
        return Sequential(Dense(width, name="linear_1"), name="projector")
    return Sequential(Dense(width, name="linear_1"), GELU(name="act"), Dense(width, name="linear_2"),
                      name="projector")


@register_with_arguments(modules=("vision_encoder", "language_model"))
class LLaVA(Module):
    """A ``vision_encoder`` and a decoder ``language_model`` (a
    :class:`~lamina.models.decoder_lm.DecoderLM`: Llama and the families built on it) joined by
    a ``projector`` ('mlp2x_gelu', LLaVA-1.5's, or 'linear', LLaVA's) into the language model's
    ``hidden_size`` (module docstring).

    Image features: hidden state ``vision_layer`` (Python indexing over the embeddings and the
    output of every encoder layer; -2, the default, is the input of the last layer) of a
    :class:`~lamina.models.VisionTransformer` or a
    :class:`~lamina.models.CLIPVisionTransformer`; ``select`` 'patch' drops the class token,
    'cls_patch' keeps it. With ``vision_layer=None`` the encoder's output is used, read as
    (M, S, D_v) tokens or an (M, h, w, D_v) feature map (all of its tokens).

    ``model(ids, images, attention_mask=None)``: ids (N, T) holding one ``image_token_id``
    per image, images (M, h, w, c) NHWC in the order of their placeholders -> next-token
    scores (N, L, vocab) over the expanded sequence (right-padded; :meth:`splice` gives the
    mask and moves labels there)."""

    def __init__(self, vision_encoder: Module, language_model: Module, projector: str = "mlp2x_gelu",
                 image_token_id: int = 0, vision_layer: int | None = -2, select: str = "patch",
                 name: str | None = None):
        super().__init__(name=name)
        if not hasattr(language_model, "layers") or not hasattr(language_model, "token_embedding"):
            raise TypeError(f"LLaVA: language_model must be a decoder language model with token_embedding() and "
                            f"layers (Llama, Mistral, ...), got {type(language_model).__name__}")
        if projector not in PROJECTORS:
            raise ValueError(f"LLaVA: projector must be one of {PROJECTORS}, got {projector!r}")
        if select not in SELECTS:
            raise ValueError(f"LLaVA: select must be one of {SELECTS}, got {select!r}")
        self.vision_encoder, self.language_model = vision_encoder, language_model
        self.projector_kind, self.select = projector, select
        self.image_token_id = int(image_token_id)
        self.vision_layer = None if vision_layer is None else int(vision_layer)
        self.projector = _projector(projector, positive_int(language_model.hidden_size, "LLaVA: hidden_size"))

    def get_config(self) -> dict:
        return {"vision_encoder": self.vision_encoder, "language_model": self.language_model,
                "projector": self.projector_kind, "image_token_id": self.image_token_id,
                "vision_layer": self.vision_layer, "select": self.select, "name": self.name}

    def build_sample_inputs(self, shapes: list) -> tuple[np.ndarray, Tensor]:
        """What rebuilds the model from its saved input shapes [(N, T), (M, h, w, c)]
        (:func:`lamina.saving.model_from_config`): the ids [[image_token_id]] and one black
        image of the saved size, since ids of zeros need not hold one placeholder per image."""
        if len(shapes) != 2 or len(shapes[1]) != 4:
            raise ShapeError(f"{self._label()}: expected the input shapes [(N, T), (M, h, w, c)] of ids and images, "
                             f"got {shapes}")
        size = [1 if n is None else int(n) for n in shapes[1][1:]]
        images = Tensor(backend.xp.zeros([1, *size], dtype=backend.get_default_dtype()))
        return np.array([[self.image_token_id]], dtype=np.int64), images

    # -- images -----------------------------------------------------------------------------
    def _encoder_states(self, images) -> tuple[list, bool]:
        """(hidden states: the embeddings and each layer's output, whether token 0 is a class token)."""
        encoder = self.vision_encoder
        if hasattr(encoder, "pre_layrnorm"):                     # CLIPVisionTransformer
            if not encoder.built:
                encoder.build(tuple(images.shape))
            c = encoder.config
            n, e = images.shape[0], c["hidden_size"]
            patches = F.reshape(encoder.patch_embedding(images), n, -1, e)
            token = F.broadcast_to(F.reshape(encoder.class_embedding, 1, 1, e), (n, 1, e))
            positions = np.broadcast_to(np.arange(encoder.num_positions), (n, encoder.num_positions))
            z = encoder.pre_layrnorm(F.concat([token, patches], axis=1) + encoder.position_embedding(positions))
            layers = list(encoder.layers)
        elif hasattr(encoder, "conv_proj") and hasattr(encoder, "encoder"):   # VisionTransformer
            if not encoder.built:
                encoder.build(tuple(images.shape))
            z = encoder.dropout(encoder.embedding(encoder.flatten_patches(encoder.conv_proj(images))))
            layers = list(encoder.encoder)
        else:
            raise TypeError(f"{self._label()}: vision_layer={self.vision_layer} needs a VisionTransformer or a "
                            f"CLIPVisionTransformer, got {type(encoder).__name__}; pass vision_layer=None to use "
                            "the encoder's output")
        states = [z]
        for layer in layers:
            states.append(layer(states[-1]))
        return states, True

    def image_features(self, images) -> Tensor:
        """Images (M, h, w, c) -> the selected vision features (M, P, D_v), before the projector."""
        images = as_tensor(images)
        if images.ndim != 4:
            raise ShapeError(f"{self._label()}: expected NHWC images (M, height, width, channels), got shape "
                             f"{tuple(images.shape)}")
        if self.vision_layer is None:
            features = self.vision_encoder(images)
            if features.ndim == 4:
                features = F.reshape(features, features.shape[0], -1, features.shape[-1])
            if features.ndim != 3:
                raise ShapeError(f"{self._label()}: the vision encoder gave features of shape "
                                 f"{tuple(features.shape)}; expected (M, S, D_v) or (M, h, w, D_v)")
            return features
        states, has_class_token = self._encoder_states(images)
        if not -len(states) <= self.vision_layer < len(states):
            raise ValueError(f"{self._label()}: vision_layer {self.vision_layer} is out of range for "
                             f"{len(states)} hidden states")
        features = states[self.vision_layer]
        if self.select == "patch" and has_class_token:
            features = features[:, 1:]
        return features

    def image_tokens(self, images) -> Tensor:
        """Images (M, h, w, c) -> projected image tokens (M, P, hidden_size)."""
        return self.projector(self.image_features(images))

    # -- text -------------------------------------------------------------------------------
    def splice(self, ids, images, attention_mask=None, padding_side: str = "right") -> SplicedInputs:
        """The language model's input embeddings with the image tokens of ``images`` in place of
        the placeholders of ``ids`` (:func:`splice_image_tokens`)."""
        ids = _numpy_ids(ids, self._label())
        embedded = self.language_model.token_embedding()(np.where(ids == self.image_token_id, 0, ids))
        return splice_image_tokens(embedded, ids, self.image_tokens(images), self.image_token_id, attention_mask,
                                   padding_side)

    def scores_of(self, embeddings, mask=None, position_ids=None) -> Tensor:
        """The language model's scores (N, L, vocab) of input embeddings (N, L, D); ``mask``
        (N, L) False on padding (while caching (N, S) over every step read)."""
        lm = self.language_model
        x = as_tensor(embeddings)
        key_mask = None if mask is None else tensor(np.asarray(mask, dtype=bool))
        for layer in lm.layers:
            x = layer(x, key_mask=key_mask, position_ids=position_ids)
        return lm.logits(lm.final_norm()(x))

    def forward(self, ids, images, attention_mask=None) -> Tensor:
        spliced = self.splice(ids, images, attention_mask)
        if spliced.padded:
            return self.scores_of(spliced.embeddings, spliced.mask, spliced.position_ids)
        return self.scores_of(spliced.embeddings)

    def loss(self, ids, images, labels, attention_mask=None) -> Tensor:
        """:func:`llava_loss` of the text labels (N, T) (:func:`answer_labels`) moved to the
        expanded sequence."""
        spliced = self.splice(ids, images, attention_mask)
        scores = self.scores_of(spliced.embeddings, spliced.mask if spliced.padded else None,
                                spliced.position_ids if spliced.padded else None)
        return llava_loss(scores, spliced.labels(labels))

    # -- generation -------------------------------------------------------------------------
    def generate(self, images, prompt_ids, max_new_tokens: int = 16, attention_mask=None, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, eos_token_id: int | None = None, pad_token_id: int = 0,
                 use_cache: bool = True) -> np.ndarray:
        """Continue the prompts ``prompt_ids`` (N, T) (placeholders for ``images`` (M, h, w, c);
        ``attention_mask`` 0 on padding) by greedy decoding or, with ``do_sample``, draws at
        ``temperature`` kept to ``top_k`` / ``top_p`` (``seed``). The language model reads the
        spliced prompts once (left-padded), then one token per step through its key/value cache
        (``use_cache=False`` reruns on the whole text). A row that drew ``eos_token_id``
        continues with ``pad_token_id``. Returns the new tokens (N, steps)."""
        steps = positive_int(max_new_tokens, "LLaVA.generate: max_new_tokens")
        if not temperature > 0:
            raise ValueError(f"LLaVA.generate: temperature must be > 0, got {temperature!r}")
        rng = np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                spliced = self.splice(prompt_ids, images, attention_mask, padding_side="left")
                if use_cache:
                    with caching_keys_values(self.language_model):
                        return self._decode(spliced, steps, do_sample, temperature, top_k, top_p, rng,
                                            eos_token_id, pad_token_id, cached=True)
                return self._decode(spliced, steps, do_sample, temperature, top_k, top_p, rng, eos_token_id,
                                    pad_token_id, cached=False)
        finally:
            self.train(was_training)

    def _decode(self, spliced: SplicedInputs, steps: int, do_sample: bool, temperature: float, top_k, top_p, rng,
                eos_token_id, pad_token_id: int, cached: bool) -> np.ndarray:
        padded = spliced.padded
        mask, positions, embeddings = spliced.mask, spliced.position_ids, spliced.embeddings
        new_embeddings, new_positions = embeddings, positions
        unfinished = np.ones(len(mask), dtype=bool)
        chosen_steps = []
        for _ in range(steps):
            if cached:
                scores = self.scores_of(new_embeddings, mask if padded else None,
                                        new_positions if padded else None)
            else:
                scores = self.scores_of(embeddings, mask if padded else None, positions if padded else None)
            last = backend.to_numpy(scores.data[:, -1]).astype(np.float64)
            if do_sample:
                chosen = np.array([sample_token(row, rng, temperature, top_k, top_p) for row in last])
            else:
                chosen = last.argmax(axis=-1)
            chosen = np.where(unfinished, chosen, pad_token_id)
            chosen_steps.append(chosen)
            if eos_token_id is not None:
                unfinished &= chosen != eos_token_id
                if not unfinished.any():
                    break
            new_embeddings = self.language_model.token_embedding()(chosen[:, None])
            new_positions = positions[:, -1:] + 1
            embeddings = F.concat([embeddings, new_embeddings], axis=1)
            positions = np.concatenate([positions, new_positions], axis=1)
            mask = np.concatenate([mask, np.ones((len(mask), 1), dtype=bool)], axis=1)
        return np.stack(chosen_steps, axis=1)

    def extra_repr(self) -> str:
        return (f"projector={self.projector_kind!r}, image_token_id={self.image_token_id}, "
                f"vision_layer={self.vision_layer}, select={self.select!r}")


def freeze_for_stage(model: LLaVA, stage: int, lora=None) -> LLaVA:
    """LLaVA's two training stages (weights must exist: call the model once first). Stage 1
    (feature alignment): only the projector learns. Stage 2 (instruction tuning): the
    projector and the language model learn, the vision encoder stays frozen; with ``lora``
    (a :class:`~lamina.nn.LoraConfig`) the language model stays frozen and LoRA adapters
    added to it learn instead."""
    if stage not in (1, 2):
        raise ValueError(f"freeze_for_stage: stage must be 1 or 2, got {stage!r}")
    if not model.projector.built:
        raise ValueError("freeze_for_stage: the model has no weights yet; call it once on a batch first")
    if lora is not None and stage != 2:
        raise ValueError("freeze_for_stage: LoRA adapters belong to stage 2")
    model.vision_encoder.freeze()
    model.projector.unfreeze()
    if stage == 1:
        model.language_model.freeze()
    elif lora is None:
        model.language_model.unfreeze()
    else:
        model.language_model.freeze()
        get_peft_model(model.language_model, lora)
    return model
