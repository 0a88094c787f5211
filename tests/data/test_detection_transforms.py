"""Detection transforms: boxes, masks and keypoints checked against the moved pixels (filled
rectangles drawn for the boxes), torchvision's size and crop-sampling rules written out
independently, sanitising with aligned fields, photometric steps, seeding, and one training
step of a small detector on augmented scenes."""

import math

import numpy as np
import pytest

import lamina
from lamina.data import detection_transforms as D
from lamina.data.detection_boxes import clamp_boxes, convert_box_format, valid_boxes
from lamina.data.image_ops import adjust_brightness, adjust_contrast, adjust_saturation
from lamina.errors import ShapeError

BOXES = np.array([[3, 4, 14, 12], [20, 2, 27, 17], [8, 18, 30, 26]], dtype=np.float32)


def _sample(height=30, width=36, boxes=BOXES, channels=1):
    """An image with box k drawn as a rectangle of value 60 (k + 1), its masks and a target
    whose keypoints are each box's top-left and bottom-right pixel centres."""
    image = np.zeros((height, width, channels), dtype=np.uint8)
    masks = np.zeros((len(boxes), height, width), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        image[y1:y2, x1:x2] = 60 * (k + 1)
        masks[k, y1:y2, x1:x2] = 1
    keypoints = np.stack([np.stack([boxes[:, 0] + 0.5, boxes[:, 1] + 0.5, np.ones(len(boxes))], axis=1),
                          np.stack([boxes[:, 2] - 0.5, boxes[:, 3] - 0.5, np.ones(len(boxes))], axis=1)], axis=1)
    target = {"boxes": boxes.copy(), "labels": np.arange(1, len(boxes) + 1), "masks": masks, "keypoints": keypoints}
    return image, target


def _pixel_box(plane):
    """The box (x1, y1, x2, y2) of the nonzero pixels of a 2-D plane, None if there are none."""
    rows, cols = np.nonzero(plane)
    if len(rows) == 0:
        return None
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


def _assert_boxes_follow_pixels(image, target, atol, objects=None):
    """Each box equals (to ``atol``) the box of its rectangle's pixels in the image and in its mask."""
    for k in range(len(target["boxes"])) if objects is None else objects:
        value = 60 * (int(target["labels"][k]))
        for plane in (image[..., 0] == value, target["masks"][k]):
            found = _pixel_box(plane)
            assert found is not None, k
            np.testing.assert_allclose(target["boxes"][k], found, atol=atol, err_msg=f"object {k}")


def test_the_drawn_sample_is_consistent_to_start_with():
    _assert_boxes_follow_pixels(*_sample(), atol=0)


@pytest.mark.parametrize("flip", [D.horizontal_flip, D.vertical_flip])
def test_flips_move_boxes_masks_and_keypoints_exactly(flip):
    image, target = _sample()
    flipped, moved = flip(image, target)
    _assert_boxes_follow_pixels(flipped, moved, atol=0)
    for k, keypoints in enumerate(moved["keypoints"]):       # the corner pixels carry the rectangle's value
        for x, y, _ in keypoints:
            assert flipped[int(y), int(x), 0] == 60 * (k + 1)
    again, back = flip(flipped, moved)
    np.testing.assert_array_equal(again, image)
    for key in target:
        np.testing.assert_array_equal(back[key], target[key])


def test_keypoints_swap_their_left_and_right_parts_only_with_a_flip_index():
    image, target = _sample()
    plain = D.horizontal_flip(image, target)[1]["keypoints"]
    swapped = D.horizontal_flip(image, target, flip_index=[1, 0])[1]["keypoints"]
    np.testing.assert_array_equal(swapped, plain[:, [1, 0]])
    np.testing.assert_array_equal(plain[..., 0], image.shape[1] - target["keypoints"][..., 0])
    down = D.vertical_flip(image, target, flip_index=[1, 0])[1]["keypoints"]
    np.testing.assert_array_equal(down[:, 0, 1], image.shape[0] - target["keypoints"][:, 1, 1])
    with pytest.raises(ValueError, match="flip_index"):
        D.horizontal_flip(image, target, flip_index=[0, 0])
    always, never = D.RandomHorizontalFlip(p=1.0), D.RandomVerticalFlip(p=0.0)
    np.testing.assert_array_equal(always(image, target)[1]["boxes"], D.horizontal_flip(image, target)[1]["boxes"])
    np.testing.assert_array_equal(never(image, target)[0], image)


def test_random_crops_cut_boxes_masks_and_keypoints_exactly_and_sanitize_drops_what_is_cut_away():
    image, target = _sample()
    dropped = 0
    for seed in range(12):
        crop = D.RandomCrop((14, 16), padding=2, rng=np.random.default_rng(seed))
        cut, moved = crop(image, target)
        assert cut.shape == (14, 16, 1)
        seen = [k for k in range(3) if moved["masks"][k].any()]
        _assert_boxes_follow_pixels(cut, moved, atol=0, objects=seen)
        kept_image, kept = D.SanitizeBoundingBoxes()(cut, moved)
        assert list(kept["labels"]) == [k + 1 for k in seen]
        assert len(kept["masks"]) == len(kept["keypoints"]) == len(kept["boxes"]) == len(seen)
        dropped += 3 - len(seen)
        x, y, visible = np.moveaxis(moved["keypoints"], -1, 0)
        inside = (x >= 0) & (x <= 16) & (y >= 0) & (y <= 14)
        np.testing.assert_array_equal(visible, inside.astype(float))
    assert dropped > 0
    wide = D.RandomCrop((40, 40), pad_if_needed=True, rng=np.random.default_rng(0))(image, target)
    assert wide[0].shape == (40, 40, 1)
    _assert_boxes_follow_pixels(*wide, atol=0)


def test_zoom_out_places_the_image_on_a_canvas_and_shifts_everything_exactly():
    image, target = _sample()
    sizes = set()
    for seed in range(6):
        zoomed, moved = D.RandomZoomOut(fill=7, side_range=(1.0, 2.5), p=1.0, rng=np.random.default_rng(seed))(
            image, target)
        height, width = zoomed.shape[:2]
        sizes.add((height, width))
        assert 30 <= height <= 75 and 36 <= width <= 90
        _assert_boxes_follow_pixels(zoomed, moved, atol=0)
        assert (zoomed == 7).sum() == height * width - 30 * 36      # the canvas around the image
        assert moved["masks"].shape == (3, height, width)
    assert len(sizes) > 1
    same, kept = D.RandomZoomOut(p=0.0)(image, target)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(kept["boxes"], target["boxes"])


def _torchvision_size(h, w, size, max_size):
    """torchvision's resize output rule, written out for the test."""
    if isinstance(size, tuple):
        return size
    short, long = min(h, w), max(h, w)
    if size is None:
        new_short, new_long = int(max_size * short / long), max_size
    else:
        new_short, new_long = size, int(size * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if h <= w else (new_long, new_short)


def test_resize_follows_torchvisions_size_rule_and_moves_everything_to_a_pixel():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(5, 900, 2))
        size = int(rng.integers(4, 600))
        max_size = None if rng.random() < 0.3 else size + int(rng.integers(1, 800))
        assert D.resized_size(h, w, size, max_size) == _torchvision_size(h, w, size, max_size)
        assert D.resized_size(h, w, None, size) == _torchvision_size(h, w, None, size)
    assert D.resized_size(30, 40, (13, 17)) == (13, 17)
    with pytest.raises(ValueError, match="max_size"):
        D.resized_size(30, 40, 20, 20)
    image, target = _sample()
    for transform in (D.Resize(20, interpolation="nearest"), D.Resize((45, 31), interpolation="nearest"),
                      D.Resize(50, max_size=55, interpolation="nearest")):
        resized, moved = transform(image, target)
        assert resized.shape[:2] == D.resized_size(30, 36, transform.size, transform.max_size)
        _assert_boxes_follow_pixels(resized, moved, atol=1.0)
        sx, sy = resized.shape[1] / 36, resized.shape[0] / 30
        np.testing.assert_allclose(moved["keypoints"][..., :2], target["keypoints"][..., :2] * (sx, sy), rtol=1e-6)


def test_random_resizes_draw_their_sizes_as_torchvision():
    image, target = _sample()
    for seed in range(5):
        draws = np.random.default_rng(seed)
        size = int(draws.integers(10, 40))
        out = D.RandomResize(10, 40, interpolation="nearest", rng=np.random.default_rng(seed))(image, target)
        assert out[0].shape[:2] == _torchvision_size(30, 36, size, None)
        _assert_boxes_follow_pixels(*out, atol=1.0)

        draws = np.random.default_rng(seed)
        short = [12, 24, 48][int(draws.integers(3))]
        ratio = min(short / 30, 50 / 36)
        out = D.RandomShortestSize([12, 24, 48], max_size=50, rng=np.random.default_rng(seed))(image, target)
        assert out[0].shape[:2] == (int(30 * ratio), int(36 * ratio))

        draws = np.random.default_rng(seed)
        scale = 0.5 + draws.random() * (1.5 - 0.5)
        ratio = min(64 / 30, 40 / 36) * scale             # target_size = (40, 64): torchvision's index order
        out = D.ScaleJitter((40, 64), scale_range=(0.5, 1.5), interpolation="nearest",
                            rng=np.random.default_rng(seed))(image, target)
        assert out[0].shape[:2] == (int(30 * ratio), int(36 * ratio))
        _assert_boxes_follow_pixels(*out, atol=1.0)


def _reference_iou_crop(rng, height, width, boxes, options, trials, min_scale=0.3, max_scale=1.0,
                        min_ratio=0.5, max_ratio=2.0):
    """SSD's sampler as torchvision's RandomIoUCrop draws it, written out for the test."""
    for _ in range(1000):
        threshold = options[int(rng.integers(len(options)))]
        if threshold >= 1:
            return None
        for _ in range(trials):
            r = min_scale + (max_scale - min_scale) * rng.random(2)
            cw, ch = int(width * r[0]), int(height * r[1])
            if ch == 0 or not min_ratio <= cw / ch <= max_ratio:
                continue
            u = rng.random(2)
            left, top = int((width - cw) * u[0]), int((height - ch) * u[1])
            if cw == 0 or ch == 0:
                continue
            centres = [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in boxes]
            inside = np.array([left < cx < left + cw and top < cy < top + ch for cx, cy in centres])
            if not inside.any():
                continue
            overlaps = []
            for x1, y1, x2, y2 in boxes[inside]:
                iw = max(0.0, min(x2, left + cw) - max(x1, left))
                ih = max(0.0, min(y2, top + ch) - max(y1, top))
                overlaps.append(iw * ih / ((x2 - x1) * (y2 - y1) + cw * ch - iw * ih))
            if max(overlaps) < threshold:
                continue
            return top, left, ch, cw, inside, max(overlaps)
    return None


def test_iou_crop_accepts_windows_by_ssds_rule_and_marks_boxes_outside_as_degenerate():
    image, target = _sample()
    options = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    cropped_some = False
    for seed in range(25):
        expected = _reference_iou_crop(np.random.default_rng(seed), 30, 36, BOXES.astype(np.float64), options, 40)
        crop = D.RandomIoUCrop(sampler_options=options, rng=np.random.default_rng(seed))
        window = crop.window(30, 36, BOXES)
        top, left, height, width, inside, best = expected
        assert (window["top"], window["left"], window["height"], window["width"]) == (top, left, height, width)
        np.testing.assert_array_equal(window["inside"], inside)
        assert best >= window["min_iou"]
        cut, moved = D.RandomIoUCrop(sampler_options=options, rng=np.random.default_rng(seed))(image, target)
        assert cut.shape[:2] == (height, width)
        _assert_boxes_follow_pixels(cut, moved, atol=0, objects=np.flatnonzero(inside))
        assert (moved["boxes"][~inside] == 0).all()
        cropped_some |= (~inside).any()
        kept = D.SanitizeBoundingBoxes()(cut, moved)[1]
        np.testing.assert_array_equal(kept["labels"], target["labels"][inside])
    assert cropped_some
    boxes_rng, accepted = np.random.default_rng(5), 0
    for seed in range(40):                       # random boxes, some large, against strict thresholds
        low = boxes_rng.uniform(0, 40, (4, 2))
        corners = np.concatenate([low, low + boxes_rng.uniform(10, 30, (4, 2))], axis=1)
        expected = _reference_iou_crop(np.random.default_rng(seed), 60, 60, corners, [0.3, 0.5, 0.7], 10)
        window = D.RandomIoUCrop(sampler_options=[0.3, 0.5, 0.7], trials=10,
                                 rng=np.random.default_rng(seed)).window(60, 60, corners)
        found = None if window is None else (window["top"], window["left"], window["height"], window["width"])
        assert found == (None if expected is None else expected[:4])
        accepted += found is not None
    assert accepted >= 30
    # a large box whose centre a window leaves out must not count towards its IoU
    corners = np.array([[0, 0, 60, 40], [28, 50, 32, 54]], dtype=np.float64)
    for seed in range(30):
        expected = _reference_iou_crop(np.random.default_rng(seed), 60, 60, corners, [0.1], 40)
        window = D.RandomIoUCrop(sampler_options=[0.1], rng=np.random.default_rng(seed)).window(60, 60, corners)
        assert (window["top"], window["left"], window["height"], window["width"]) == expected[:4]
        assert expected[5] >= 0.1
    untouched = D.RandomIoUCrop(sampler_options=[1.0])(image, target)
    np.testing.assert_array_equal(untouched[0], image)
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)}
    assert D.RandomIoUCrop()(image, empty)[0].shape == image.shape


@pytest.mark.parametrize("degrees, translate, scale", [(0, (0.2, 0.2), None), (25, None, None),
                                                      (15, (0.1, 0.1), (0.8, 1.2)), (90, None, None)])
def test_affine_boxes_enclose_the_moved_rectangles(degrees, translate, scale):
    image, target = _sample(height=40, width=40, boxes=BOXES + 5)
    for seed in range(4):
        transform = D.RandomAffine(degrees, translate=translate, scale=scale, rng=np.random.default_rng(seed))
        moved_image, moved = transform(image, target)
        seen = [k for k in range(3) if moved["masks"][k].sum() > 4]
        # a pure translation moves whole pixels; a turn leaves the corner pixels out by less than one
        _assert_boxes_follow_pixels(moved_image, moved, atol=0 if degrees == 0 else 1.0, objects=seen)
        x, y, visible = np.moveaxis(moved["keypoints"], -1, 0)
        assert ((visible == 0) == ((x < 0) | (x > 40) | (y < 0) | (y > 40))).all()


def test_affine_turns_clockwise_on_screen_as_torchvisions_affine():
    matrix = D.affine_matrix(10, 20, angle=90)
    np.testing.assert_allclose(matrix @ [11, 5, 1], [10, 6, 1], atol=1e-12)    # right of the centre -> below it
    sheared = D.affine_matrix(10, 20, shear=(30, 0))
    np.testing.assert_allclose(sheared @ [10, 6, 1], [10 - math.tan(math.radians(30)), 6, 1], atol=1e-12)


def test_sanitize_drops_degenerate_and_outside_boxes_with_all_their_fields():
    boxes = np.array([[0, 0, 5, 5], [2, 2, 2.5, 9], [3, 3, 3, 3], [-1, 0, 4, 4], [1, 1, 12, 9], [4, 4, 6, 6]],
                     dtype=np.float32)
    image = np.zeros((10, 11, 1), dtype=np.float32)
    target = {"boxes": boxes, "labels": np.arange(6), "masks": np.arange(6)[:, None, None] * np.ones((1, 10, 11)),
              "keypoints": np.arange(6)[:, None, None] * np.ones((1, 2, 3)), "iscrowd": np.arange(6) % 2,
              "image_id": 7}
    _, kept = D.SanitizeBoundingBoxes()(image, target)
    expected = [0, 5]                      # too thin, empty, outside left, outside right go
    np.testing.assert_array_equal(kept["boxes"], boxes[expected])
    for key in ("labels", "iscrowd"):
        np.testing.assert_array_equal(kept[key], target[key][expected])
    assert [int(m[0, 0]) for m in kept["masks"]] == expected and kept["keypoints"][:, 0, 0].tolist() == expected
    assert kept["image_id"] == 7
    _, small = D.SanitizeBoundingBoxes(min_size=0.4, min_area=0.5)(image, target)
    assert small["labels"].tolist() == [0, 1, 5]
    _, big = D.SanitizeBoundingBoxes(min_area=10)(image, target)
    assert big["labels"].tolist() == [0]
    clamped = D.ClampBoundingBoxes()(image, target)[1]["boxes"]
    np.testing.assert_array_equal(clamped, clamp_boxes(boxes, 10, 11))
    assert clamped[3].tolist() == [0, 0, 4, 4] and clamped[4].tolist() == [1, 1, 11, 9]
    assert valid_boxes(clamped, 10, 11).tolist() == [True, False, False, True, True, True]


def test_box_formats_convert_both_ways():
    from lamina.vision import corners_to_center

    boxes = np.array([[1, 2, 5, 10], [0, 0, 3, 3]], dtype=np.float64)
    np.testing.assert_array_equal(convert_box_format(boxes, "xyxy", "xywh"), [[1, 2, 4, 8], [0, 0, 3, 3]])
    np.testing.assert_array_equal(convert_box_format(boxes, "xyxy", "cxcywh"), corners_to_center(boxes))
    for fmt in ("xywh", "cxcywh"):
        there = convert_box_format(boxes, "xyxy", fmt)
        np.testing.assert_allclose(convert_box_format(there, fmt, "xyxy"), boxes)
        np.testing.assert_allclose(convert_box_format(there, fmt, fmt), there)
    with pytest.raises(ValueError, match="out_fmt"):
        convert_box_format(boxes, "xyxy", "yxyx")


def test_photometric_distortion_applies_torchvisions_steps_in_order_and_leaves_boxes_alone():
    image = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32)
    target = {"boxes": BOXES, "labels": np.arange(3)}
    distort = D.RandomPhotometricDistort(p=1.0, rng=np.random.default_rng(1))
    drawn = distort.parameters(3)
    assert all(drawn[name] is not None for name in ("brightness", "contrast", "saturation", "hue"))
    assert 0.875 <= drawn["brightness"] <= 1.125 and -0.05 <= drawn["hue"] <= 0.05
    expected = adjust_brightness(image, drawn["brightness"])
    if drawn["contrast_before"]:
        expected = adjust_contrast(expected, drawn["contrast"])
    expected = D._hue_shifted(adjust_saturation(expected, drawn["saturation"]), drawn["hue"])
    if not drawn["contrast_before"]:
        expected = adjust_contrast(expected, drawn["contrast"])
    expected = expected[..., drawn["permutation"]]
    distorted, kept = D.RandomPhotometricDistort(p=1.0, rng=np.random.default_rng(1))(image, target)
    np.testing.assert_allclose(distorted, expected, rtol=1e-6)
    np.testing.assert_array_equal(kept["boxes"], BOXES)
    unchanged, _ = D.RandomPhotometricDistort(p=0.0)(image, target)
    np.testing.assert_array_equal(unchanged, image)
    np.testing.assert_allclose(D._hue_shifted(image, 0.0), image, atol=1e-6)
    np.testing.assert_allclose(D._hue_shifted(D._hue_shifted(image, 0.3), -0.3), image, atol=1e-6)
    grey = np.random.default_rng(2).integers(0, 256, (5, 5, 1), dtype=np.uint8)
    assert D.RandomPhotometricDistort(p=1.0)(grey, target)[0].dtype == np.uint8


def test_seeds_repeat_the_augmentation():
    image, target = _sample()
    runs = [D.ssd_augmentation((30, 36), rng=np.random.default_rng(4))(image, target) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1]["boxes"], runs[1][1]["boxes"])
    chain = D.Compose([D.RandomZoomOut(p=1.0), D.RandomIoUCrop(), D.RandomHorizontalFlip()])
    outputs = []
    for seed in (9, 9, 10):
        lamina.manual_seed(seed)
        outputs.append(chain(image, target))
    assert outputs[0][0].shape == outputs[1][0].shape and (outputs[0][0] == outputs[1][0]).all()
    np.testing.assert_array_equal(outputs[0][1]["boxes"], outputs[1][1]["boxes"])
    assert outputs[0][0].shape != outputs[2][0].shape or not np.array_equal(outputs[0][1]["boxes"],
                                                                          outputs[2][1]["boxes"])


def test_mismatched_targets_are_refused_with_the_transform_named():
    image, target = _sample()
    with pytest.raises(ShapeError, match="RandomZoomOut.*masks"):
        D.RandomZoomOut(p=1.0)(image, {**target, "masks": target["masks"][:2]})
    with pytest.raises(ShapeError, match="RandomHorizontalFlip.*labels"):
        D.RandomHorizontalFlip()(image, {**target, "labels": [1]})
    with pytest.raises(ShapeError, match="boxes"):
        D.SanitizeBoundingBoxes()(image, {"boxes": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="crop"):
        D.crop(image, target, 20, 0, 20, 5)


def test_a_small_detector_trains_a_step_on_augmented_scenes():
    from lamina import optim
    from lamina.cli.detection import build_detector
    from lamina.vision import digit_scenes

    lamina.manual_seed(0)
    images, boxes, labels = digit_scenes(2, canvas=48, seed=1)
    augment = D.ssd_augmentation((48, 48), rng=np.random.default_rng(0))
    batch = [augment(image.astype(np.float32) / 255, {"boxes": b, "labels": lab})
             for image, b, lab in zip(images, boxes, labels)]
    model = build_detector("retinanet")
    model.build((None, 48, 48, 1))
    model.train()
    before = [p.numpy().copy() for p in model.parameters(trainable_only=True)]
    optimizer = optim.Adam(model.parameters(trainable_only=True), lr=1e-3)
    terms = model(lamina.tensor(np.stack([image for image, _ in batch])), [target for _, target in batch])
    total = sum(terms.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert np.isfinite(float(total.item()))
    assert any(not np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters(trainable_only=True)))
