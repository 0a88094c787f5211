"""Shared setup of the one-stage detectors' learning tests: 32x32 scenes of rectangles of two
classes, their mAP@0.5, and a short training run measured against an untrained model and a
constant box."""

import numpy as np
from detection_checks import train_on_scenes

import lamina
from lamina.vision import mean_average_precision

SCENES, TRAINING_SCENES = 320, 256


def rectangle_scenes(count, size=32, seed=0):
    """Scenes of 1 to 3 disjoint filled rectangles (6 to 14 pixels a side) on faint noise: class
    0 at intensity 0.9, class 1 at 0.45."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.1, size=(count, size, size, 1)).astype(np.float32)
    targets = []
    for image in images:
        boxes, labels = [], []
        for _ in range(rng.integers(1, 4)):
            for _ in range(20):
                w, h = rng.integers(6, 15, size=2)
                x1, y1 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
                box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float64)
                if all(box[0] >= b[2] or box[2] <= b[0] or box[1] >= b[3] or box[3] <= b[1] for b in boxes):
                    labels.append(int(rng.integers(0, 2)))
                    image[y1:y1 + h, x1:x1 + w] = 0.9 if labels[-1] == 0 else 0.45
                    boxes.append(box)
                    break
        targets.append({"boxes": np.array(boxes), "labels": np.array(labels, dtype=np.int64)})
    return images, targets


def rectangles_map(found, targets):
    """mAP@0.5 over the two classes of detections ``found`` in scenes with ``targets``."""
    return mean_average_precision([(d["boxes"], d["scores"], d["labels"]) for d in found],
                                  [(t["boxes"], t["labels"]) for t in targets], 2)


def learn_rectangles(name, model, steps, lr):
    """(untrained, constant box, trained mAP@0.5, seconds of training): ``model`` built for
    32x32x1 images, trained for ``steps`` Adam steps on the first 256 of 320 scenes and scored on
    the other 64; the constant box has the training boxes' mean size, at the image centre, for
    both classes. The figures are printed after ``name``."""
    model.build((None, 32, 32, 1))
    images, targets = rectangle_scenes(SCENES, seed=0)
    held_out = slice(TRAINING_SCENES, SCENES)
    held_out_targets = targets[held_out]

    def score(trained_model, scene_images, scene_targets):
        with lamina.no_grad():
            return rectangles_map(trained_model.eval()(lamina.tensor(scene_images)), scene_targets)

    boxes = np.concatenate([t["boxes"] for t in targets[:TRAINING_SCENES]]).reshape(-1, 2, 2)
    mean_size = np.ptp(boxes, axis=1).mean(axis=0)
    centre_box = np.concatenate([16 - mean_size / 2, 16 + mean_size / 2])
    constant = rectangles_map([{"boxes": np.stack([centre_box] * 2), "scores": np.ones(2), "labels": np.arange(2)}
                               for _ in held_out_targets], held_out_targets)
    untrained, trained, seconds = train_on_scenes(model, images, targets, steps, lr, score, held_out)
    print(f"{name} on rectangles: mAP@0.5 {untrained:.3f} (constant box {constant:.3f}) -> {trained:.3f} "
          f"after {seconds:.1f} s")
    return untrained, constant, trained, seconds
