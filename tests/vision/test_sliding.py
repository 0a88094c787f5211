import itertools

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import nn
from lamina.vision.sliding import (
    all_window_count,
    convolutionalize,
    sliding_window_count,
    window_origins,
    window_stride,
)


def _windows_by_enumeration(h, w, bh, bw, sh=1, sw=1):
    return sum(1 for top, left in itertools.product(range(0, h, sh), range(0, w, sw))
               if top + bh <= h and left + bw <= w)


@pytest.mark.parametrize("h,w,bh,bw,sh,sw", [(8, 8, 3, 3, 1, 1), (10, 7, 4, 2, 1, 1), (11, 9, 3, 5, 2, 3),
                                             (5, 5, 5, 5, 1, 1), (4, 6, 5, 2, 1, 1)])
def test_window_count_matches_enumeration(h, w, bh, bw, sh, sw):
    assert sliding_window_count((h, w), (bh, bw), (sh, sw)) == _windows_by_enumeration(h, w, bh, bw, sh, sw)


@pytest.mark.parametrize("h,w", [(1, 1), (4, 7), (9, 9)])
def test_all_window_count_is_the_double_sum(h, w):
    total = sum((h - bh + 1) * (w - bw + 1) for bh in range(1, h + 1) for bw in range(1, w + 1))
    assert all_window_count((h, w)) == total


def test_window_counts_reject_bad_sizes():
    with pytest.raises(ValueError, match="sliding_window_count"):
        sliding_window_count((8, 8), (0, 3))
    with pytest.raises(ValueError, match="all_window_count"):
        all_window_count((0, 4))


def _classifier(batch_norm=False):
    layers = [nn.Conv2D(4, 3), nn.ReLU(), nn.MaxPool2D(2)]
    if batch_norm:
        layers.append(nn.BatchNorm())
    layers += [nn.Conv2D(6, 3, activation="tanh"), nn.Flatten(), nn.Dense(10, activation="relu"),
               nn.Dropout(0.3), nn.Dense(5), nn.Softmax()]
    return nn.Sequential(*layers)


def _trained_statistics(model, shape):
    """A few training-mode passes so batch norm's running statistics are not the defaults."""
    rng = np.random.default_rng(1)
    model.train()
    for _ in range(3):
        model(lamina.tensor(rng.standard_normal((8, *shape))))
    model.eval()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_convolutional_model_evaluates_every_window(batch_norm):
    lamina.set_default_dtype(np.float64)
    model = _classifier(batch_norm)
    model(lamina.tensor(np.zeros((1, 12, 12, 2))))
    _trained_statistics(model, (12, 12, 2))
    conv = convolutionalize(model, (12, 12, 2))
    assert not any(isinstance(layer, (nn.Dense, nn.Flatten)) for layer in conv)
    assert window_stride(model) == (2, 2)

    image = np.random.default_rng(0).standard_normal((2, 20, 18, 2))
    with lamina.no_grad():
        scores = conv(lamina.tensor(image)).numpy()
        assert scores.shape == (2, 5, 4, 5)
        origins = window_origins(scores.shape[1:3], window_stride(model))
        for i, j in itertools.product(range(5), range(4)):
            top, left = origins[i, j]
            crop = image[:, top:top + 12, left:left + 12]
            assert_close(scores[:, i, j], model(lamina.tensor(crop)).numpy(), 1e-12, f"window {(i, j)}")
        same_size = conv(lamina.tensor(image[:, :12, :12])).numpy()
        assert_close(same_size.reshape(2, 5), model(lamina.tensor(image[:, :12, :12])).numpy(), 1e-12)


def test_convolutional_model_owns_its_weights():
    model = _classifier()
    model(lamina.tensor(np.zeros((1, 12, 12, 1), np.float32)))
    model.eval()
    conv = convolutionalize(model, (12, 12, 1))
    x = lamina.tensor(np.random.default_rng(0).standard_normal((1, 12, 12, 1)).astype(np.float32))
    before = conv(x).numpy()
    for p in model.parameters():
        p.data[...] = 0
    np.testing.assert_array_equal(conv(x).numpy(), before)
    assert conv.training is False


def test_convolutionalize_rejects_models_it_cannot_convert():
    no_flatten = nn.Sequential(nn.Conv2D(2, 3), nn.GlobalAvgPool2D(), nn.Dense(3))
    with pytest.raises(ValueError, match="exactly one Flatten"):
        convolutionalize(no_flatten, (8, 8, 1))
    activation_first = nn.Sequential(nn.Conv2D(2, 3), nn.Flatten(), nn.ReLU(), nn.Dense(3))
    with pytest.raises(ValueError, match="between the Flatten and the first Dense"):
        convolutionalize(activation_first, (8, 8, 1))
    no_dense = nn.Sequential(nn.Conv2D(2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="no Dense layer"):
        convolutionalize(no_dense, (8, 8, 1))


def test_converting_a_model_in_training_mode_moves_no_running_statistics():
    model = nn.Sequential(nn.Conv2D(3, 3), nn.BatchNorm(), nn.Flatten(), nn.Dense(4))
    model(lamina.tensor(np.random.default_rng(0).standard_normal((8, 8, 8, 1)).astype(np.float32)))
    conv = convolutionalize(model, (8, 8, 1))
    assert conv.training and model.training
    for key, value in model[1].state_dict().items():
        np.testing.assert_array_equal(conv[1].state_dict()[key], value, err_msg=key)
