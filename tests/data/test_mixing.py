import json
import math

import numpy as np
import pytest
from scipy import stats

import lamina
from lamina import nn, optim
from lamina.data import ArrayDataset, CutMix, DataLoader, MixUp, load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.train import Trainer


def _batch(n=8, shape=(5, 6, 3), classes=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(dtype)
    y = rng.integers(0, classes, size=n)
    return x, y


def _is_permutation(p, n):
    return np.array_equal(np.sort(p), np.arange(n))


# -- MixUp ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 6, 3), (7,)])
def test_mixup_is_the_convex_combination_for_the_drawn_lambda_and_partners(shape):
    x, y = _batch(shape=shape)
    x_before, y_before = x.copy(), y.copy()
    mixup = MixUp(alpha=0.4, num_classes=4, seed=3)
    for _ in range(5):
        mixed, soft = mixup(x, y)
        lam, perm = mixup.last_lambda, mixup.last_permutation
        assert mixup.last_applied and 0 < lam < 1 and lam == mixup.last_sampled_lambda
        assert _is_permutation(perm, len(x))
        x64, rows = x.astype(np.float64), np.eye(4)[y]
        assert mixed.dtype == np.float32 and mixed.shape == x.shape
        np.testing.assert_allclose(mixed, lam * x64 + (1 - lam) * x64[perm], rtol=1e-5, atol=1e-6)
        assert soft.dtype == np.float32 and soft.shape == (8, 4)
        np.testing.assert_allclose(soft, lam * rows + (1 - lam) * rows[perm], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x, x_before)          # the caller's arrays are not touched
    np.testing.assert_array_equal(y, y_before)


def test_mixup_converts_integer_images_to_float32_before_blending():
    x = np.array([[[[250]]], [[[10]]], [[[200]]], [[[0]]]], dtype=np.uint8)
    y = np.array([0, 1, 2, 1])
    mixup = MixUp(alpha=1.0, num_classes=3, seed=0)
    for _ in range(10):
        mixed, _ = mixup(x, y)
        lam, perm = mixup.last_lambda, mixup.last_permutation
        assert mixed.dtype == np.float32
        x64 = x.astype(np.float64)
        np.testing.assert_allclose(mixed, lam * x64 + (1 - lam) * x64[perm], rtol=1e-5)   # no uint8 wrap-around


def test_mixup_takes_target_rows_as_given():
    x, y = _batch(n=6)
    rows = 0.9 * np.eye(4)[y] + 0.1 / 4                  # e.g. label-smoothed rows
    mixup = MixUp(alpha=0.5, seed=1)                     # no num_classes needed for rows
    _, soft = mixup(x, rows)
    lam, perm = mixup.last_lambda, mixup.last_permutation
    np.testing.assert_allclose(soft, lam * rows + (1 - lam) * rows[perm], rtol=1e-6)


# -- CutMix --------------------------------------------------------------------------

def test_cutmix_pastes_the_partners_box_and_weights_labels_by_the_kept_area():
    x, y = _batch(n=6, shape=(9, 7, 2), classes=5)
    cutmix = CutMix(alpha=1.0, num_classes=5, seed=4)
    for _ in range(20):
        mixed, soft = cutmix(x, y)
        perm, (top, left, bottom, right) = cutmix.last_permutation, cutmix.last_box
        assert _is_permutation(perm, 6) and mixed.dtype == x.dtype
        assert 0 <= top <= bottom <= 9 and 0 <= left <= right <= 7
        # an unclipped box would have sides round(H sqrt(1 - lam)), round(W sqrt(1 - lam))
        side = math.sqrt(1 - cutmix.last_sampled_lambda)
        assert bottom - top <= round(9 * side) and right - left <= round(7 * side)
        inside = np.zeros((9, 7), dtype=bool)
        inside[top:bottom, left:right] = True
        expected = np.where(inside[None, :, :, None], x[perm], x)
        np.testing.assert_array_equal(mixed, expected)
        lam = 1 - inside.sum() / (9 * 7)
        assert cutmix.last_lambda == pytest.approx(lam, abs=1e-12)
        rows = np.eye(5)[y]
        np.testing.assert_allclose(soft, lam * rows + (1 - lam) * rows[perm], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size", [(8, 8), (11, 6)])
def test_cutmix_label_weights_are_the_pixel_fractions_taken_from_each_image(size):
    n = 7
    height, width = size
    markers = np.broadcast_to(np.arange(n, dtype=np.int16)[:, None, None, None], (n, height, width, 1)).copy()
    own_class = np.arange(n)                              # sample i is the only one of class i
    cutmix = CutMix(alpha=0.7, num_classes=n, seed=11)
    clipped = 0
    for _ in range(60):
        mixed, soft = cutmix(markers, own_class)
        side = math.sqrt(1 - cutmix.last_sampled_lambda)
        top, left, bottom, right = cutmix.last_box
        clipped += (bottom - top, right - left) != (round(height * side), round(width * side))
        for i, j in enumerate(cutmix.last_permutation):
            fraction = np.bincount(mixed[i].ravel(), minlength=n) / (height * width)
            np.testing.assert_allclose(soft[i], fraction, atol=1e-6)
            assert set(np.flatnonzero(fraction)) <= {i, j}
    assert clipped > 10                                   # the border clipping was exercised


def test_cutmix_keeps_the_box_size_for_a_box_in_the_middle():
    cutmix = CutMix(alpha=1.0, num_classes=2, seed=0)
    x, y = np.zeros((2, 40, 40, 1)), np.array([0, 1])
    for _ in range(40):
        cutmix(x, y)
        top, left, bottom, right = cutmix.last_box
        if 0 < top and bottom < 40 and 0 < left and right < 40:
            side = round(40 * math.sqrt(1 - cutmix.last_sampled_lambda))
            assert bottom - top == side and right - left == side
            assert cutmix.last_lambda == pytest.approx(1 - side * side / 1600)


# -- the draws -----------------------------------------------------------------------

@pytest.mark.parametrize("mixer", [MixUp, CutMix])
@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_follows_beta_alpha_alpha(mixer, alpha):
    m = mixer(alpha=alpha, num_classes=2, seed=5)
    x, y = np.zeros((2, 3, 3, 1), dtype=np.float32), np.array([0, 1])
    draws = []
    for _ in range(1500):
        m(x, y)
        draws.append(m.last_sampled_lambda)
    draws = np.array(draws)
    assert abs(draws.mean() - 0.5) < 0.03
    assert draws.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_mixup_with_a_small_alpha_barely_mixes():
    x, y = _batch(n=4)
    mixup = MixUp(alpha=0.01, num_classes=4, seed=2)
    near_an_end = 0
    for _ in range(400):
        mixed, _ = mixup(x, y)
        lam, perm = mixup.last_lambda, mixup.last_permutation
        if min(lam, 1 - lam) < 0.01:
            near_an_end += 1
            closest = x if lam > 0.5 else x[perm]
            assert np.abs(mixed - closest).max() < 0.01 * 2 * np.abs(x).max()
    assert near_an_end / 400 > 0.85


def test_probability_p_of_mixing_a_batch():
    x, y = _batch(n=5, dtype=np.uint8)
    never = MixUp(num_classes=4, p=0.0, seed=0)
    mixed, soft = never(x, y)
    assert not never.last_applied and mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed, x.astype(np.float32))
    np.testing.assert_array_equal(soft, np.eye(4)[y])
    half = CutMix(num_classes=4, p=0.5, seed=0)
    applied = []
    for _ in range(400):
        mixed, soft = half(x, y)
        applied.append(half.last_applied)
        if not half.last_applied:
            assert half.last_box is None
            np.testing.assert_array_equal(mixed, x)
    assert 0.4 < np.mean(applied) < 0.6


@pytest.mark.parametrize("mixer", [MixUp, CutMix])
def test_manual_seed_and_state_dict_reproduce_the_draws(mixer):
    x, y = _batch(n=6)

    def run(m, calls=4):
        return [m(x, y) for _ in range(calls)]

    lamina.manual_seed(42)
    a = run(mixer(num_classes=4))
    lamina.manual_seed(42)
    b = run(mixer(num_classes=4))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    original = mixer(num_classes=4, seed=9)
    run(original, 2)
    state = json.loads(json.dumps(original.state_dict()))     # survives a checkpoint's JSON
    expected = run(original)
    restored = mixer(num_classes=4, seed=123)
    restored.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(expected, run(restored)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="expected 'PCG64'"):
        restored.load_state_dict({"generator": {"bit_generator": "MT19937"}})


# -- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("mixer", [MixUp, CutMix])
def test_bad_arguments_name_the_class_and_the_value(mixer):
    name = mixer.__name__
    for alpha in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=f"{name}: alpha must be a positive"):
            mixer(alpha=alpha)
    with pytest.raises(ValueError, match=rf"{name}: p .* \[0, 1\]; got 1.5"):
        mixer(p=1.5)
    with pytest.raises(ValueError, match=f"{name}: num_classes must be a positive integer or None; got 0"):
        mixer(num_classes=0)


@pytest.mark.parametrize("mixer", [MixUp, CutMix])
def test_bad_batches_name_the_class_and_the_shapes(mixer):
    name = mixer.__name__
    x, y = _batch(n=4)
    with pytest.raises(ValueError, match=rf"{name}: integer labels \(4,\) need num_classes"):
        mixer(seed=0)(x, y)
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 3\); got out-of-range values \[3\]"):
        mixer(num_classes=3, seed=0)(x, np.array([0, 3, 1, 2]))
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 4\); got out-of-range values \[-1\]"):
        mixer(num_classes=4, seed=0)(x, np.array([0, -1, 1, 2]))
    with pytest.raises(ShapeError, match=rf"{name}: .*same batch size; got inputs \(4, 5, 6, 3\) and labels \(3,\)"):
        mixer(num_classes=4, seed=0)(x, y[:3])
    with pytest.raises(ShapeError, match=rf"{name}: target rows \(4, 4\) do not have num_classes=5 columns"):
        mixer(num_classes=5, seed=0)(x, np.eye(4)[y])
    with pytest.raises(ValueError, match=rf"{name}: labels of shape \(4,\) must be integer classes; got dtype float"):
        mixer(num_classes=4, seed=0)(x, y.astype(np.float64))
    with pytest.raises(ShapeError, match=rf"{name}: labels must be .*got shape \(4, 1, 1\)"):
        mixer(num_classes=4, seed=0)(x, y[:, None, None])


def test_cutmix_refuses_inputs_that_are_not_image_batches():
    with pytest.raises(ShapeError, match=r"CutMix: inputs must be a batch of NHWC images \(N, H, W, C\); "
                                         r"got shape \(4, 6, 3\)"):
        CutMix(num_classes=2, seed=0)(np.zeros((4, 6, 3)), np.zeros(4, dtype=int))


# -- DataLoader(batch_transform=...) -------------------------------------------------

def _images(n=23, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 6, 5, 1)).astype(np.uint8), rng.integers(0, 3, size=n)


def test_loader_applies_the_batch_transform_after_the_transform():
    x, y = _images()

    def scale(xb):
        return xb.astype(np.float32) / 255

    mixup = MixUp(num_classes=3, alpha=1.0, seed=0)
    mixed = DataLoader(ArrayDataset(x, y), batch_size=10, seed=0, transform=scale, batch_transform=mixup)
    plain = DataLoader(ArrayDataset(x, y), batch_size=10, seed=0, transform=scale)
    sizes = []
    for (xb, yb), (px, py) in zip(mixed, plain):          # same seed: the same samples per batch
        sizes.append(len(xb))
        lam, perm = mixup.last_lambda, mixup.last_permutation
        np.testing.assert_allclose(xb, lam * px + (1 - lam) * px[perm], rtol=1e-5, atol=1e-7)
        rows = np.eye(3)[py]
        np.testing.assert_allclose(yb, lam * rows + (1 - lam) * rows[perm], rtol=1e-6, atol=1e-7)
    assert sizes == [10, 10, 3]


class _PairDataset:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_loader_batch_transform_on_a_generic_dataset_and_bad_uses():
    x, y = _images(9)
    cutmix = CutMix(num_classes=3, seed=0)
    for xb, yb in DataLoader(_PairDataset(x, y), batch_size=4, seed=0, batch_transform=cutmix):
        assert xb.dtype == np.uint8 and yb.shape == (len(xb), 3)
    with pytest.raises(ValueError, match=r"DataLoader: batch_transform needs labelled \(x, y\) batches; "
                                         r"got an unlabelled ArrayDataset"):
        DataLoader(ArrayDataset(x), batch_transform=cutmix)
    with pytest.raises(ValueError, match="DataLoader: batch_transform needs .* single arrays"):
        list(DataLoader(_PairDataset(x, y).x, batch_size=4, batch_transform=cutmix))
    with pytest.raises(TypeError, match="DataLoader: batch_transform must be callable; got str"):
        DataLoader(ArrayDataset(x, y), batch_transform="mixup")
    with pytest.raises(TypeError, match="DataLoader: batch_transform must return a pair"):
        list(DataLoader(ArrayDataset(x, y), batch_transform=lambda xb, yb: xb))


@pytest.mark.parametrize("mixer", [MixUp, CutMix])
@pytest.mark.parametrize("batches_before", [2, 5])    # 5 = every batch of the epoch handed out
def test_loader_resumes_mid_epoch_with_identical_mixed_batches(mixer, batches_before):
    x, y = _images(23)

    def loader(seed):
        return DataLoader(ArrayDataset(x, y), batch_size=5, seed=seed, batch_transform=mixer(num_classes=3, seed=seed))

    reference = loader(1)
    list(reference)                                       # one whole epoch first
    epoch = iter(reference)
    for _ in range(batches_before):
        next(epoch)
    state = json.loads(json.dumps(reference.state_dict()))
    assert "batch_transform" in state
    expected = [(xb.copy(), yb.copy()) for xb, yb in epoch] + [(xb.copy(), yb.copy()) for xb, yb in reference]
    assert len(expected) == (5 - batches_before) + 5
    fresh = loader(77)                                    # other seeds: everything comes from the state
    fresh.load_state_dict(state)
    got = (list(fresh) + list(fresh))[:len(expected)]
    for (xa, ya), (xb, yb) in zip(expected, got):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_loader_refuses_a_mixer_state_without_a_mixer():
    x, y = _images(10)
    state = DataLoader(ArrayDataset(x, y), seed=0, batch_transform=MixUp(num_classes=3, seed=0)).state_dict()
    with pytest.raises(ValueError, match="state holds a batch_transform's state but this loader has "
                                         "batch_transform=None"):
        DataLoader(ArrayDataset(x, y), seed=0).load_state_dict(state)


# -- learning ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    train, val, _ = train_val_test_split(x, y, val=0.25, test=0.0, seed=0)
    return train, val


@pytest.mark.parametrize("mixer, alpha", [(MixUp, 0.4), (CutMix, 1.0)])
def test_a_model_trained_on_mixed_batches_learns_the_digits(digits, mixer, alpha):
    (x_train, y_train), (x_val, y_val) = digits
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(10, activation="softmax"))
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model, lr=0.01), verbose=0)
    loader = DataLoader(ArrayDataset(x_train, y_train), batch_size=32, seed=0,
                        batch_transform=mixer(alpha=alpha, num_classes=10, seed=0))
    history = trainer.fit(loader, epochs=12)
    assert history["loss"][-1] < history["loss"][0]
    assert trainer.evaluate((x_val, y_val))["accuracy"] > 0.9


@pytest.mark.parametrize("mixer", [MixUp(0.4, num_classes=3, seed=0), CutMix(1.0, num_classes=3, seed=0)])
def test_a_batch_of_several_inputs_is_refused_with_the_count(mixer):
    images = np.zeros((4, 6, 6, 1), np.float32)
    with pytest.raises(TypeError, match=f"{type(mixer).__name__}: the batch holds 2 input arrays"):
        mixer((images, np.zeros((4, 3), np.float32)), np.arange(4) % 3)
