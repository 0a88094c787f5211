"""Data-augmentation layers: random in training, fixed in evaluation, reproducible, saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nn_checks import gradcheck_layer

import lamina
from lamina import ShapeError, backend, nn, optim
from lamina.functional import image
from lamina.train import ModelCheckpoint, Trainer

LAYERS = [
    lambda: nn.RandomFlip("horizontal_and_vertical"),
    lambda: nn.RandomCrop(6, padding=1),
    lambda: nn.RandomRotation(30),
    lambda: nn.RandomGaussianBlur((0.5, 1.0), probability=1.0),
    lambda: nn.RandomSaturation(0.5),
    lambda: nn.RandomContrast(0.5),
    lambda: nn.RandomBrightness(0.2),
]


def _images(n=4, h=6, w=6, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("make", LAYERS)
def test_random_in_training_reproducible_and_fixed_in_evaluation(make):
    layer, x = make(), _images()
    lamina.manual_seed(1)
    first = layer(lamina.tensor(x)).numpy()
    second = layer(lamina.tensor(x)).numpy()
    lamina.manual_seed(1)
    again = layer(lamina.tensor(x)).numpy()
    assert first.shape == layer.compute_output_shape(x.shape) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)                    # the seed decides everything
    assert not np.array_equal(first, second)                       # a new draw every call
    layer.eval()
    np.testing.assert_array_equal(layer(lamina.tensor(x)).numpy(), x)
    config = json.loads(json.dumps(nn.layer_to_config(layer)))
    rebuilt = nn.layer_from_config(config)
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()


@pytest.mark.parametrize("make", LAYERS)
def test_gradients_reach_the_images(make):
    lamina.set_default_dtype(np.float64)
    try:
        assert gradcheck_layer(make(), _images(2).astype(np.float64), reseed=3)
    finally:
        lamina.set_default_dtype(np.float32)


def test_flip_mirrors_about_half_the_images():
    x = _images(4000, 2, 3)
    out = nn.RandomFlip()(lamina.tensor(x)).numpy()
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(mirrored | np.all(out == x, axis=(1, 2, 3)))
    assert abs(mirrored.mean() - 0.5) < 0.03


def test_crop_offsets_cover_the_padding_and_evaluation_takes_the_centre():
    x = _images(500, 5, 5)
    layer = nn.RandomCrop(5, padding=2)
    lamina.manual_seed(0)
    out = layer(lamina.tensor(x)).numpy()
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    found = set()
    for i in range(len(x)):
        hits = [(r, c) for r in range(5) for c in range(5) if np.array_equal(out[i], padded[i, r:r + 5, c:c + 5])]
        assert hits, f"sample {i} is not a window of its padded image"
        found.update(hits)
    assert found == {(r, c) for r in range(5) for c in range(5)}       # every shift of -2..2 occurs
    centre = nn.RandomCrop((3, 2)).eval()
    np.testing.assert_array_equal(centre(lamina.tensor(x[:2])).numpy(), x[:2, 1:4, 1:3])
    with pytest.raises(ShapeError, match=r"RandomCrop.*images of 5x5 .*at least the 6x6 crop size"):
        nn.RandomCrop(6, padding=3)(lamina.tensor(x[:2]))


def test_layers_draw_their_parameters_from_lamina_generator():
    x = lamina.tensor(_images(5))
    lamina.manual_seed(7)
    out = nn.RandomRotation(25)(x).numpy()
    lamina.manual_seed(7)
    angles = backend.rng().uniform(-25, 25, 5)
    np.testing.assert_array_equal(out, image.rotate(x, angles).numpy())
    assert np.all(np.abs(angles) <= 25) and np.ptp(angles) > 0
    lamina.manual_seed(7)
    blurred = nn.RandomGaussianBlur((0.5, 1.5), probability=0.0)(x).numpy()
    np.testing.assert_array_equal(blurred, x.numpy())                  # probability 0: left alone


def test_bad_arguments_and_inputs_name_the_layer():
    with pytest.raises(ValueError, match="RandomFlip: mode must be one of"):
        nn.RandomFlip("diagonal")
    with pytest.raises(ValueError, match="RandomRotation: degrees must be a finite number >= 0"):
        nn.RandomRotation(-5)
    with pytest.raises(ValueError, match="RandomGaussianBlur: sigma must be"):
        nn.RandomGaussianBlur((2.0, 1.0))
    with pytest.raises(ValueError, match="RandomGaussianBlur: probability"):
        nn.RandomGaussianBlur(probability=1.5)
    with pytest.raises(ValueError, match="RandomCrop: size must be positive"):
        nn.RandomCrop(0)
    with pytest.raises(ShapeError, match=r"RandomSaturation.*\(4, 6, 6, 1\).*RGB images"):
        nn.RandomSaturation()(lamina.tensor(_images()[..., :1]))
    with pytest.raises(ShapeError, match=r"RandomFlip.*\(6, 6, 3\).*4-D NHWC"):
        nn.RandomFlip()(lamina.tensor(_images()[0]))


def _augmented_run(tmp_path, epochs, resume=None):
    lamina.manual_seed(11)
    rng = np.random.default_rng(0)
    x = rng.random((48, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    model = nn.Sequential(nn.RandomFlip(), nn.RandomCrop(8, padding=1), nn.RandomRotation(10),
                          nn.RandomContrast(0.2), nn.Conv2D(4, 3, activation="relu"), nn.Flatten(), nn.Dense(2),
                          nn.Softmax())
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=0.01), verbose=0,
                      callbacks=[ModelCheckpoint(tmp_path / "ckpt-{epoch}.safetensors")])
    trainer.fit((x, y), epochs=epochs, batch_size=16, resume_from=resume)
    return model.state_dict()


def test_training_with_augmentation_resumes_bit_for_bit(tmp_path):
    """The draws come from lamina's generator, whose state the training checkpoint keeps."""
    straight = _augmented_run(tmp_path / "a", epochs=3)
    after_one = _augmented_run(tmp_path / "b", epochs=1)
    resumed = _augmented_run(tmp_path / "c", epochs=3, resume=tmp_path / "b" / "ckpt-1.safetensors")
    assert not np.array_equal(straight["dense.weight"], after_one["dense.weight"])   # the last epochs train
    for key, value in straight.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
