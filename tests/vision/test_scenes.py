import numpy as np
import pytest

from lamina.vision.scenes import digit_scenes


def test_scenes_hold_whole_digits_inside_their_boxes():
    images, boxes, labels = digit_scenes(60, canvas=40, scale=2, objects=(1, 3), seed=3)
    assert images.shape == (60, 40, 40, 1) and images.dtype == np.uint8
    counts = [len(b) for b in boxes]
    assert min(counts) == 1 and max(counts) == 3
    for image, scene_boxes, scene_labels in zip(images, boxes, labels):
        assert scene_boxes.dtype == np.float32 and scene_labels.dtype == np.int64
        assert len(scene_boxes) == len(scene_labels) and set(scene_labels) <= set(range(10))
        ink = np.zeros(image.shape[:2], dtype=bool)
        for x1, y1, x2, y2 in scene_boxes.astype(int):
            assert 0 <= x1 < x2 <= 40 and 0 <= y1 < y2 <= 40 and x2 - x1 <= 16 and y2 - y1 <= 16
            crop = image[y1:y2, x1:x2, 0]
            # tight: every edge row and column of the box has ink
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
            assert not ink[y1:y2, x1:x2].any(), "two boxes overlap"
            ink[y1:y2, x1:x2] = True
        assert not image[~ink].any(), "ink outside every box"


def test_scenes_are_reproducible_from_the_seed():
    a = digit_scenes(5, seed=7)
    b = digit_scenes(5, seed=7)
    c = digit_scenes(5, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    assert all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
    assert not np.array_equal(a[0], c[0])


def test_scenes_refuse_impossible_requests():
    with pytest.raises(ValueError, match="canvas >= 16"):
        digit_scenes(3, canvas=12)
    with pytest.raises(ValueError, match="do not fit loosely"):
        digit_scenes(3, canvas=32, objects=(1, 3))
    with pytest.raises(ValueError, match="objects"):
        digit_scenes(3, objects=(2, 1))
