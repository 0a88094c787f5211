import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.vision.boxes import center_to_corners
from lamina.vision.detection import (
    decode_grid_predictions,
    encode_grid_targets,
    encode_grid_targets_batch,
    grid_detection_loss,
    localization_loss,
)

HEIGHT, WIDTH, GRID, CLASSES = 60, 80, 5, 3
ANCHORS = np.array([[10.0, 30.0], [30.0, 10.0], [25.0, 25.0]])


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _scene(count, seed, max_side=40.0):
    """Centre boxes in pixels, one per grid cell (cells drawn at random), and labels."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(GRID * GRID, count, replace=False)
    rows, cols = np.divmod(cells, GRID)
    b_x = (cols + rng.uniform(0.05, 0.95, count)) * WIDTH / GRID
    b_y = (rows + rng.uniform(0.05, 0.95, count)) * HEIGHT / GRID
    sizes = rng.uniform(4.0, max_side, (count, 2))
    return np.column_stack([b_x, b_y, sizes]), rng.integers(0, CLASSES, count)


def _sorted_corners(boxes):
    return boxes[np.lexsort(boxes.T[::-1])]


def _perfect_logits(target, scale=40.0):
    """Predictions whose decoded probabilities are (nearly) the target's 0s and 1s."""
    pred = target.copy()
    pred[..., 0] = np.where(target[..., 0] == 1, scale, -scale)
    pred[..., 5:] = scale * target[..., 5:]
    return pred


def _assert_recovers(found, boxes, labels):
    assert len(found.boxes) == len(boxes)
    expected = center_to_corners(boxes)
    order_found, order_expected = np.lexsort(found.boxes.T[::-1]), np.lexsort(expected.T[::-1])
    np.testing.assert_allclose(found.boxes[order_found], expected[order_expected], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(found.classes[order_found], labels[order_expected])


@pytest.mark.parametrize("anchors", [None, ANCHORS])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_then_decode_recovers_the_boxes(f64, anchors, seed):
    boxes, labels = _scene(8, seed)
    target = encode_grid_targets(boxes, labels, GRID, (HEIGHT, WIDTH), anchors, num_classes=CLASSES)
    assert target.shape == (GRID, GRID, 1 if anchors is None else 3, 5 + CLASSES)
    assert target.dtype == np.float64
    assert target[..., 0].sum() == 8 and target[..., 5:].sum() == 8
    offsets = target[target[..., 0] == 1][:, 1:3]
    assert np.all((offsets >= 0) & (offsets < 1))
    found = decode_grid_predictions(target, (HEIGHT, WIDTH), anchors, iou_threshold=1.0, from_logits=False)
    _assert_recovers(found, boxes, labels)
    assert np.all(found.scores == 1.0)
    from_logits = decode_grid_predictions(_perfect_logits(target), (HEIGHT, WIDTH), anchors, iou_threshold=1.0)
    _assert_recovers(from_logits, boxes, labels)


def test_encoding_by_hand():
    # 40 x 40 image, 4 x 4 grid of 10-pixel cells; the box centred at (25, 12) is in row 1, column 2
    target = encode_grid_targets([[25.0, 12.0, 8.0, 20.0]], [1], 4, 40, num_classes=2)
    (row, col, slot), = np.argwhere(target[..., 0] == 1)
    assert (row, col, slot) == (1, 2, 0)
    np.testing.assert_allclose(target[1, 2, 0], [1, 0.5, 0.2, 0.2, 0.5, 0, 1], atol=1e-6)
    assert target.sum() == pytest.approx(target[1, 2, 0].sum())


def test_anchor_of_best_shape_and_two_objects_in_one_cell(f64):
    # a tall and a wide object centred in the same cell go to the tall and the wide anchor
    boxes = np.array([[40.0, 30.0, 12.0, 28.0], [41.0, 29.0, 26.0, 9.0]])
    target = encode_grid_targets(boxes, [0, 2], GRID, (HEIGHT, WIDTH), ANCHORS, num_classes=CLASSES)
    cell = target[2, 2]
    np.testing.assert_array_equal(cell[:, 0], [1, 1, 0])
    np.testing.assert_allclose(cell[0, 3:5], np.log([12 / 10, 28 / 30]))
    np.testing.assert_allclose(cell[1, 3:5], np.log([26 / 30, 9 / 10]))
    found = decode_grid_predictions(target, (HEIGHT, WIDTH), ANCHORS, from_logits=False)
    _assert_recovers(found, boxes, np.array([0, 2]))


def test_objects_sharing_a_slot_keep_the_first():
    boxes = np.array([[10.0, 10.0, 8.0, 8.0], [12.0, 9.0, 6.0, 6.0], [70.0, 50.0, 8.0, 8.0]])
    target = encode_grid_targets(boxes, [0, 1, 2], GRID, (HEIGHT, WIDTH), num_classes=CLASSES)
    assert target[..., 0].sum() == 2
    np.testing.assert_allclose(target[0, 0, 0, 3:5], [8 / WIDTH, 8 / HEIGHT], rtol=1e-6)
    np.testing.assert_array_equal(target[0, 0, 0, 5:], [1, 0, 0])


def test_batches_and_empty_images(f64):
    scenes = [_scene(4, seed) for seed in (3, 4)] + [(np.zeros((0, 4)), np.zeros(0, dtype=int))]
    targets = encode_grid_targets_batch([b for b, _ in scenes], [y for _, y in scenes], GRID, (HEIGHT, WIDTH),
                                        ANCHORS, num_classes=CLASSES)
    assert targets.shape == (3, GRID, GRID, 3, 5 + CLASSES)
    found = decode_grid_predictions(_perfect_logits(targets), (HEIGHT, WIDTH), ANCHORS, iou_threshold=1.0)
    assert isinstance(found, list) and len(found) == 3
    for (boxes, labels), detections in zip(scenes, found):
        _assert_recovers(detections, boxes, labels)
    assert found[2].boxes.shape == (0, 4)


def test_decoding_suppresses_duplicates_of_one_class_only(f64):
    target = encode_grid_targets([[20.0, 20.0, 30.0, 30.0]], [1], 4, 48, num_classes=2)
    pred = target.copy()
    assert target[1, 1, 0, 0] == 1
    pred[1, 2, 0] = [0.9, -0.2, 0.7, 28 / 48, 30 / 48, 0, 1]    # the same object, seen from the next cell
    assert len(decode_grid_predictions(pred, 48, from_logits=False).boxes) == 1
    pred[1, 2, 0, 5:] = [1, 0]                                  # a different class survives
    found = decode_grid_predictions(pred, 48, from_logits=False)
    assert found.classes.tolist() == [1, 0] and found.scores.tolist() == [1.0, 0.9]
    assert len(decode_grid_predictions(pred, 48, from_logits=False, score_threshold=0.95).boxes) == 1


def _random_problem(seed, images=2, anchors=ANCHORS):
    scenes = [_scene(5, seed + k) for k in range(images)]
    target = encode_grid_targets_batch([b for b, _ in scenes], [y for _, y in scenes], GRID, (HEIGHT, WIDTH),
                                       anchors, num_classes=CLASSES)
    pred = np.random.default_rng(seed).standard_normal(target.shape)
    return pred, target


def _torch_grid_loss(pred, target, lambda_coord=5.0, lambda_noobj=0.5):
    nn_f = torch.nn.functional
    obj = target[..., 0] == 1
    bce = nn_f.binary_cross_entropy_with_logits(pred[..., 0], target[..., 0], reduction="none")
    objectness = bce[obj].sum() + lambda_noobj * bce[~obj].sum()
    boxes = ((pred[..., 1:5] - target[..., 1:5])[obj] ** 2).sum()
    classes = nn_f.cross_entropy(pred[..., 5:][obj], target[..., 5:][obj].argmax(-1), reduction="sum")
    return (lambda_coord * boxes + objectness + classes) / pred.shape[0]


def test_loss_is_zero_at_a_perfect_prediction_and_positive_otherwise(f64):
    _, target = _random_problem(5)
    perfect = grid_detection_loss(lamina.tensor(_perfect_logits(target)), target)
    assert 0 <= float(perfect.numpy()) < 1e-12
    occupied = tuple(np.argwhere(target[..., 0] == 1)[0])
    wrong_class = 5 + (int(target[occupied + (slice(5, None),)].argmax()) + 1) % CLASSES
    for part, change in [(0, -80.0), (1, 1.0), (4, 1.0), (wrong_class, 80.0)]:
        pred = _perfect_logits(target)
        pred[occupied + (part,)] += change
        assert float(grid_detection_loss(lamina.tensor(pred), target).numpy()) > 1e-3
    empty = tuple(np.argwhere(target[..., 0] == 0)[0])
    pred = _perfect_logits(target)
    pred[empty + (0,)] = 2.0                                    # a false alarm
    assert float(grid_detection_loss(lamina.tensor(pred), target).numpy()) > 1e-3


@pytest.mark.parametrize("anchors", [None, ANCHORS])
def test_loss_matches_torch(anchors):
    pred, target = _random_problem(6, anchors=anchors)
    for dtype in (np.float32, np.float64):
        compare_with_torch(grid_detection_loss, _torch_grid_loss, pred, target, dtype=dtype, grad=[True, False])
    compare_with_torch(lambda p, t: grid_detection_loss(p, t, lambda_coord=2.0, lambda_noobj=0.1),
                       lambda p, t: _torch_grid_loss(p, t, 2.0, 0.1), pred, target, dtype=np.float64,
                       grad=[True, False])
    # one image without the batch axis
    compare_with_torch(grid_detection_loss, lambda p, t: _torch_grid_loss(p[None], t[None]), pred[0], target[0],
                       dtype=np.float64, grad=[True, False])


def test_loss_gradcheck():
    boxes, labels = _scene(2, 7)
    target = encode_grid_targets_batch([boxes], [labels % 2], 2, (HEIGHT, WIDTH), ANCHORS[:2], num_classes=2)
    assert target[..., 0].sum() >= 1
    pred = np.random.default_rng(8).standard_normal(target.shape)
    assert check_gradients(grid_detection_loss, pred, target, grad=[True, False])


def _torch_localization(logits, box_pred, labels, boxes, weight=1.0):
    nn_f = torch.nn.functional
    return nn_f.cross_entropy(logits, labels) + weight * nn_f.mse_loss(box_pred, boxes, reduction="none").sum(-1).mean()


@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_localization_loss_matches_torch(weight):
    rng = np.random.default_rng(9)
    logits, box_pred, boxes = rng.standard_normal((6, 4)), rng.uniform(size=(6, 4)), rng.uniform(size=(6, 4))
    labels = rng.integers(0, 4, 6)
    compare_with_torch(lambda z, b, y, t: localization_loss(z, b, y, t, box_weight=weight),
                       lambda z, b, y, t: _torch_localization(z, b, y, t, weight),
                       logits, box_pred, labels, boxes, dtype=np.float64, grad=[True, True, False, False])
    assert check_gradients(lambda z, b: localization_loss(z, b, labels, boxes, weight), logits, box_pred)


def test_one_cell_grid_loss_is_the_localization_loss(f64):
    # S = A = 1, an object in every image, a confident objectness: only the notes' cost remains
    rng = np.random.default_rng(10)
    boxes, labels = rng.uniform(10, 30, (4, 4)), rng.integers(0, CLASSES, 4)
    target = encode_grid_targets_batch(boxes[:, None], labels[:, None], 1, 40, num_classes=CLASSES)
    pred = rng.standard_normal(target.shape)
    pred[..., 0] = 50.0
    grid = grid_detection_loss(lamina.tensor(pred), target, lambda_coord=0.7)
    flat_pred, flat_target = pred.reshape(4, -1), target.reshape(4, -1)
    expected = localization_loss(lamina.tensor(flat_pred[:, 5:]), lamina.tensor(flat_pred[:, 1:5]), labels,
                                 flat_target[:, 1:5], box_weight=0.7)
    assert float(grid.numpy()) == pytest.approx(float(expected.numpy()), rel=1e-12)


def test_errors():
    boxes, labels = _scene(3, 11)
    with pytest.raises(ShapeError, match="encode_grid_targets.*labels"):
        encode_grid_targets(boxes, labels[:2], GRID, (HEIGHT, WIDTH), num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"encode_grid_targets: labels must be integers in \[0, 2\)"):
        encode_grid_targets(boxes, [0, 1, 2], GRID, (HEIGHT, WIDTH), num_classes=2)
    with pytest.raises(ValueError, match="encode_grid_targets: box centres"):
        encode_grid_targets([[90.0, 10.0, 5.0, 5.0]], [0], GRID, (HEIGHT, WIDTH), num_classes=CLASSES)
    with pytest.raises(ValueError, match="encode_grid_targets: boxes need .* positive widths"):
        encode_grid_targets([[9.0, 10.0, 0.0, 5.0]], [0], GRID, (HEIGHT, WIDTH), num_classes=CLASSES)
    with pytest.raises(ShapeError, match="encode_grid_targets: anchors"):
        encode_grid_targets(boxes, labels, GRID, (HEIGHT, WIDTH), [10.0, 20.0], num_classes=CLASSES)
    with pytest.raises(ValueError, match="encode_grid_targets: image_size"):
        encode_grid_targets(boxes, labels, GRID, (HEIGHT, 0), num_classes=CLASSES)
    target = encode_grid_targets(boxes, labels, GRID, (HEIGHT, WIDTH), num_classes=CLASSES)
    with pytest.raises(ShapeError, match="grid_detection_loss.*share a shape"):
        grid_detection_loss(lamina.tensor(target[..., :-1]), target)
    with pytest.raises(ValueError, match="grid_detection_loss: target objectness"):
        grid_detection_loss(lamina.tensor(target), target * 0.5)
    with pytest.raises(ShapeError, match=r"decode_grid_predictions.*A = 3"):
        decode_grid_predictions(target, (HEIGHT, WIDTH), ANCHORS)
    with pytest.raises(ShapeError, match="localization_loss"):
        localization_loss(lamina.tensor(np.zeros((3, 2))), lamina.tensor(np.zeros((3, 3))), [0, 1, 0], np.zeros((3, 3)))
