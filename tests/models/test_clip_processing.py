"""CLIP's image preprocessing against references of its formula (PyTorch's antialiased bicubic
resize, PIL's resize of 8-bit images) and zero-shot classification against the model's own
logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import models
from lamina.models.clip_processing import antialiased_bicubic_matrix
from lamina.text import BPETokenizer

HF_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
HF_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def _torch_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    x = torch.tensor(image.astype(np.float64)).permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).numpy()


def _reference(image: np.ndarray, size: int, crop: int) -> np.ndarray:
    """Shorter side to ``size`` (the longer truncated), centre crop, / 255, CLIP's mean and std."""
    h, w = image.shape[:2]
    if h <= w:
        height, width = size, int(size * w / h)
    else:
        height, width = int(size * h / w), size
    x = _torch_resize(image, height, width)
    top, left = (height - crop) // 2, (width - crop) // 2
    x = x[top:top + crop, left:left + crop] / 255.0
    return (x - HF_MEAN) / HF_STD


@pytest.mark.parametrize("size", [(7, 20), (9, 5), (23, 17), (40, 3)])
def test_resize_matrices_equal_torch_antialiased_bicubic(size):
    image = np.random.default_rng(size[0]).random((23, 17, 2)) * 255
    a_h, a_w = antialiased_bicubic_matrix(size[0], 23), antialiased_bicubic_matrix(size[1], 17)
    ours = np.einsum("ih,hwc,jw->ijc", a_h, image, a_w)
    assert_close(ours, _torch_resize(image, *size), 1e-12, "resized image")
    assert np.allclose(a_h.sum(axis=1), 1.0) and np.allclose(a_w.sum(axis=1), 1.0)


def test_uint8_images_resize_as_pil_does():
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(45, 70, 3), dtype=np.uint8)
    processor = models.CLIPImageProcessor(size=30)
    ours = processor.resize(image)
    assert ours.shape == (30, 46, 3) and processor.resized_shape(45, 70) == (30, 46)
    theirs = np.asarray(image_module.fromarray(image).resize((46, 30), image_module.BICUBIC), dtype=np.float64)
    assert np.abs(ours - theirs).max() <= 1.0            # PIL's fixed-point sums may round one level apart
    assert (ours == theirs).mean() > 0.9


def test_processor_equals_the_formula_on_images_of_different_sizes():
    rng = np.random.default_rng(1)
    images = [rng.random((50, 71, 3)) * 255, rng.random((61, 40, 3)) * 255, rng.random((33, 33, 3)) * 255]
    processor = models.CLIPImageProcessor(size=32, crop_size=28)
    out = processor(images)
    assert out.shape == (3, 28, 28, 3) and out.dtype == np.float32
    for k, image in enumerate(images):
        assert_close(out[k], _reference(image, 32, 28), 1e-6, f"image {k}")
    batch = np.stack([rng.random((40, 30, 3)) * 255 for _ in range(2)])
    assert_close(processor(batch), np.stack([_reference(x, 32, 28) for x in batch]), 1e-6, "an NHWC batch")
    assert_close(processor(batch[0]), processor(batch)[:1], 0.0, "one HWC image")


def test_default_processor_gives_clip_inputs():
    image = np.random.default_rng(2).integers(0, 256, size=(240, 300, 3), dtype=np.uint8)
    out = models.CLIPImageProcessor()(image)
    assert out.shape == (1, 224, 224, 3)
    rows = np.clip(np.round(_torch_resize(image, 240, 280)), 0, 255)            # the width first, as PIL
    resized = np.clip(np.round(_torch_resize(rows, 224, 280)), 0, 255)
    expected = (resized[:, 28:252] / 255.0 - HF_MEAN) / HF_STD
    levels = np.abs(out[0] - expected) * HF_STD * 255        # rounding may flip a value at a half level
    assert levels.max() < 1 + 1e-4 and (levels < 1e-4).mean() > 0.999
    plain = models.CLIPImageProcessor(do_resize=False, do_normalize=False)(image)
    assert_close(plain[0], image[8:232, 38:262] / 255.0, 1e-7, "crop and rescale alone")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("builder", ["clip", "clip_resnet"])
def test_zero_shot_probabilities_are_the_softmax_of_the_model_logits(builder):
    lamina.manual_seed(0)
    tokenizer = BPETokenizer.train(["a photo of a cat dog bird"], vocab_size=270, pad="<pad>", eos="<eos>")
    model = models.get_model(builder, config="tiny", text_config={"vocab_size": len(tokenizer)})
    side = model.vision_config["image_size"]
    rng = np.random.default_rng(3)
    raw = [rng.integers(0, 256, size=(side + 9, side + 20, 3), dtype=np.uint8) for _ in range(4)]
    images = models.CLIPImageProcessor(size=side, crop_size=side)(raw)
    classes = ["cat", "dog", "bird"]
    ids, mask = models.clip_tokenize(tokenizer, [f"a photo of a {c}." for c in classes], 16)
    expected = _softmax(model(images, ids, mask).logits_per_image.numpy())
    by_tokenizer = models.zero_shot_classify(model, images, classes, tokenizer)
    assert by_tokenizer.shape == (4, 3)
    assert_close(by_tokenizer, expected, 1e-4, "probabilities from a tokenizer")
    assert np.allclose(by_tokenizer.sum(axis=1), 1.0, atol=1e-6)
    one_each, _ = models.clip_tokenize(tokenizer, [f"a {c}" for c in classes], 16)
    by_ids = models.zero_shot_classify(model, images, classes, one_each)
    assert_close(by_ids, _softmax(model(images, one_each).logits_per_image.numpy()), 1e-4, "probabilities from ids")


def test_errors():
    processor = models.CLIPImageProcessor(size=8, crop_size=8)
    with pytest.raises(lamina.ShapeError, match="HWC images with 3 channels"):
        processor(np.zeros((1, 10, 10, 4)))
    with pytest.raises(lamina.ShapeError, match="cannot crop 8x8 from an image of 6x20"):
        models.CLIPImageProcessor(crop_size=8, do_resize=False)(np.zeros((6, 20, 3)))
    with pytest.raises(ValueError, match="size must be a positive int"):
        models.CLIPImageProcessor(size=0)
    with pytest.raises(ValueError, match="image_mean and image_std"):
        models.CLIPImageProcessor(image_mean=(0.5, 0.5), image_std=(1.0, 1.0, 1.0))
    model = models.clip("tiny")
    with pytest.raises(lamina.ShapeError, match="one row per class"):
        models.zero_shot_classify(model, np.zeros((1, 16, 16, 3)), ["a", "b"], np.ones((3, 4), np.int64))
