"""Shared setup of the detectors' tests: digit scenes as detection targets, mAP@0.5 on held-out
scenes, a short Adam run on the first 256 scenes, and the config and file round trip."""

import time

import numpy as np

import lamina
from lamina import optim
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.vision import digit_scenes, mean_average_precision

TRAIN, TEST = slice(0, 256), slice(256, 288)


def scene_targets(count, seed, label_offset=0):
    """``count`` digit scenes scaled to [0, 1] and their targets; labels are the digits plus
    ``label_offset`` (1 where class 0 is the background)."""
    images, boxes, labels = digit_scenes(count, seed=seed)
    targets = [{"boxes": b, "labels": lab + label_offset} for b, lab in zip(boxes, labels)]
    return (images / 255.0).astype(np.float32), targets


def map_at_50(model, images, targets, num_classes, label_offset=0):
    """The evaluated model's mAP@0.5, labels shifted back by ``label_offset`` first."""
    model.eval()
    with lamina.no_grad():
        found = model(lamina.tensor(images))
    return mean_average_precision([(d["boxes"], d["scores"], d["labels"] - label_offset) for d in found],
                                  [(t["boxes"], t["labels"] - label_offset) for t in targets], num_classes)


def train_on_scenes(model, images, targets, steps, lr, score, held_out=TEST):
    """(score before, score after, seconds) of ``steps`` Adam steps on batches of 16 of the first
    256 scenes, minimising the sum of the model's losses; ``score(model, images, targets)`` is
    taken on the held-out scenes (256..287 unless ``held_out`` says otherwise)."""
    untrained = score(model, images[held_out], targets[held_out])
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        batch = rng.choice(256, 16, replace=False)
        losses = model(lamina.tensor(images[batch]), [targets[i] for i in batch])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return untrained, score(model, images[held_out], targets[held_out]), seconds


def check_round_trip(model, x, path, keys=("boxes", "scores", "labels")) -> None:
    """A detector rebuilt from its config is the same kind with the same config and state shapes;
    one saved to ``path`` and loaded detects in ``x`` exactly what ``model`` detects (``keys``)."""
    with lamina.no_grad():
        expected = model.eval()(lamina.tensor(x))
    clone = layer_from_config(layer_to_config(model))
    assert type(clone) is type(model) and clone.get_config() == model.get_config()
    clone.build(model.build_input_shape)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    lamina.save(model, path)
    loaded = lamina.load(path)
    with lamina.no_grad():
        found = loaded.eval()(lamina.tensor(x))
    for key in keys:
        np.testing.assert_array_equal(found[0][key], expected[0][key])
