"""CLIP's image preprocessing (Hugging Face's ``CLIPImageProcessor``, OpenAI's ``preprocess``)
and one-call zero-shot classification.

    resize:     the shorter side to ``size`` (the longer to floor(size · long / short)),
                bicubic with antialiasing as PIL resizes (below)
    crop:       the centred crop_size x crop_size window, top = (H - crop) // 2,
                left = (W - crop) // 2
    rescale:    x / 255
    normalise:  (x - mean_c) / std_c, CLIP's mean (0.48145466, 0.4578275, 0.40821073) and
                std (0.26862954, 0.26130258, 0.27577711)

PIL's bicubic resize of an axis from n to m pixels (scale s = n / m) is a matrix A (m, n):
output i is centred at c = (i + 1/2) s in input coordinates and averages the pixels j within
2 max(s, 1) of it with weights k((j + 1/2 - c) / max(s, 1)) normalised to sum 1, k Keys'
cubic with a = -0.5. Stretching the kernel by s when shrinking averages every input pixel
(antialiasing); enlarging (s < 1) is plain bicubic interpolation. ``torch``'s
``interpolate(mode='bicubic', antialias=True)`` computes the same weights. A uint8 image is
resized as PIL resizes 8-bit images: along the width, rounded and clipped to 0..255, then
along the height, rounded and clipped again (PIL's fixed-point weights may still put a value
one level apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.functional import normalize
from lamina.models.clip import CLIP, ZeroShotClassifier, zero_shot_classifier

__all__ = ["CLIP_MEAN", "CLIP_STD", "CLIPImageProcessor", "antialiased_bicubic_matrix", "zero_shot_classify"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def antialiased_bicubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The (n_out, n_in) float64 matrix of PIL's bicubic resize of one axis (module docstring)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi)
        weights = _keys_cubic((j + 0.5 - centre) / stretch)
        a[i, lo:hi] = weights / weights.sum()
    return a


def _to_levels(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255)


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"CLIPImageProcessor: {what} must be a positive int, got {value!r}")
    return int(value)


class CLIPImageProcessor:
    """``processor(images)`` -> float32 NHWC pixels (N, crop_size, crop_size, C) for a CLIP
    model (module docstring). ``images``: an NHWC batch, one (H, W, C) image or a list of
    them (sizes may differ), 0..255 (uint8 or float). Defaults are CLIP's: ``size`` 224,
    ``crop_size`` 224, ``rescale_factor`` 1 / 255, CLIP's ``image_mean`` / ``image_std``; the
    ``do_*`` flags skip steps, as Hugging Face's do."""

    def __init__(self, size: int = 224, crop_size: int = 224, do_resize: bool = True, do_center_crop: bool = True,
                 do_rescale: bool = True, rescale_factor: float = 1 / 255, do_normalize: bool = True,
                 image_mean: Sequence[float] = CLIP_MEAN, image_std: Sequence[float] = CLIP_STD):
        self.size, self.crop_size = _positive(size, "size"), _positive(crop_size, "crop_size")
        self.do_resize, self.do_center_crop = bool(do_resize), bool(do_center_crop)
        self.do_rescale, self.rescale_factor = bool(do_rescale), float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = np.asarray(image_mean, dtype=np.float64)
        self.image_std = np.asarray(image_std, dtype=np.float64)
        if self.image_mean.shape != self.image_std.shape or self.image_mean.ndim != 1 or (self.image_std <= 0).any():
            raise ValueError(f"CLIPImageProcessor: image_mean and image_std must be per-channel lists of the same "
                             f"length, std positive; got {tuple(image_mean)} and {tuple(image_std)}")

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') with the shorter side ``size`` and the longer floor(size · long / short)."""
        short, long = min(height, width), max(height, width)
        longer = int(self.size * long / short)
        return (self.size, longer) if height <= width else (longer, self.size)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """One (H, W, C) image with its shorter side resized to ``size`` (float64; a uint8
        image resized in two passes, each rounded to 0..255 levels, as PIL does)."""
        h, w = image.shape[:2]
        ho, wo = self.resized_shape(h, w)
        a_h, a_w = antialiased_bicubic_matrix(ho, h), antialiased_bicubic_matrix(wo, w)
        if image.dtype != np.uint8:
            return np.einsum("ih,hwc,jw->ijc", a_h, image.astype(np.float64), a_w, optimize=True)
        rows = _to_levels(np.einsum("hwc,jw->hjc", image.astype(np.float64), a_w))    # PIL: the width first
        return _to_levels(np.einsum("ih,hjc->ijc", a_h, rows))

    def center_crop(self, image: np.ndarray) -> np.ndarray:
        """The centred crop_size x crop_size window of one (H, W, C) image."""
        h, w = image.shape[:2]
        c = self.crop_size
        if h < c or w < c:
            raise ShapeError(f"CLIPImageProcessor: cannot crop {c}x{c} from an image of {h}x{w}; resize it first "
                             "(do_resize=True) or lower crop_size")
        top, left = (h - c) // 2, (w - c) // 2
        return image[top:top + c, left:left + c]

    def _one(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != len(self.image_mean):
            raise ShapeError(f"CLIPImageProcessor: expected HWC images with {len(self.image_mean)} channels (or an "
                             f"NHWC batch of them), got an image of shape {image.shape}")
        x = self.resize(image) if self.do_resize else image.astype(np.float64)
        if self.do_center_crop:
            x = self.center_crop(x)
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            x = (x - self.image_mean) / self.image_std
        return x

    def __call__(self, images) -> np.ndarray:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        processed = [self._one(image) for image in images]
        shapes = {x.shape for x in processed}
        if len(shapes) != 1:
            raise ShapeError(f"CLIPImageProcessor: the processed images have different shapes {sorted(shapes)}; "
                             "keep do_center_crop=True to give them one size")
        return np.stack(processed).astype(np.float32)


def _class_embeddings_from_ids(model: CLIP, ids) -> np.ndarray:
    ids = np.asarray(ids)
    with no_grad():
        return normalize(model.get_text_features(ids), axis=-1).numpy()


def zero_shot_classify(model: CLIP, images, class_texts: Sequence[str], tokenizer,
                       template: str | Sequence[str] = "a photo of a {}.") -> np.ndarray:
    """Class probabilities (N, C) of the N ``images`` (the model's NHWC input, e.g. from
    :class:`CLIPImageProcessor`) over the C ``class_texts``: softmax over the classes of
    exp(s) cos(image embedding, class embedding).

    ``tokenizer``: a lamina tokenizer or a callable giving ids (as
    :func:`~lamina.models.clip_tokenize` takes it), the class embedding then being the
    normalised mean of the normalised embeddings of ``template.format(text)`` over the
    templates; or the token ids themselves, an integer array (C, T) with one tokenized
    prompt per class (the template is then unused)."""
    class_texts = [class_texts] if isinstance(class_texts, str) else list(class_texts)
    if isinstance(tokenizer, np.ndarray) or (isinstance(tokenizer, (list, tuple)) and tokenizer
                                             and not isinstance(tokenizer[0], str)):
        ids = np.asarray(tokenizer)
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or len(ids) != len(class_texts):
            raise ShapeError(f"zero_shot_classify: token ids must be an integer array (classes, time) with one row "
                             f"per class ({len(class_texts)}), got {ids.dtype} ids of shape {ids.shape}")
        if not isinstance(model, CLIP):
            raise TypeError(f"zero_shot_classify: expected a CLIP model, got {type(model).__name__}")
        classifier = ZeroShotClassifier(model, _class_embeddings_from_ids(model, ids), class_texts)
    else:
        templates = (template,) if isinstance(template, str) else tuple(template)
        classifier = zero_shot_classifier(model, tokenizer, class_texts, templates)
    return classifier(images)
