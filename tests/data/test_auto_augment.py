"""Automatic augmentation: the image operations against Pillow, the magnitude tables against
values worked out from torchvision's definitions, the policies' draws (statistical, with fixed
seeds), replaying the recorded draws, reproducibility with and without loader workers, float
and grey images, reprs and errors."""

import math
import pickle

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

import lamina
from lamina.data import DataLoader
from lamina.data import image_ops as O
from lamina.data import transforms as T
from lamina.data.auto_augment import AUTO_AUGMENT_POLICIES
from lamina.errors import ShapeError


def _image(h=13, w=17, c=3, seed=0):
    x = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    x[..., 0] = np.clip(x[..., 0], 30, 190)      # a channel that does not span 0..255 (autocontrast)
    return x


def _pil(x):
    return Image.fromarray(x[..., 0] if x.shape[2] == 1 else x)


def _array(image):
    out = np.asarray(image)
    return out[..., None] if out.ndim == 2 else out


# --- point operations: exactly Pillow's results on uint8 images ---------------------------------

ENHANCERS = [(O.adjust_brightness, ImageEnhance.Brightness), (O.adjust_saturation, ImageEnhance.Color),
             (O.adjust_contrast, ImageEnhance.Contrast), (O.adjust_sharpness, ImageEnhance.Sharpness)]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("ours, enhancer", ENHANCERS, ids=lambda f: getattr(f, "__name__", ""))
def test_colour_operations_equal_pillows_enhancers(ours, enhancer, channels):
    x = _image(c=channels)
    for factor in (0.0, 0.1, 0.55, 1.0, 1.3, 1.9, 1.99):
        np.testing.assert_array_equal(ours(x, factor), _array(enhancer(_pil(x)).enhance(factor)), err_msg=f"{factor}")


@pytest.mark.parametrize("channels", [3, 1])
def test_tone_operations_equal_pillows_image_ops(channels):
    x = _image(c=channels)
    for bits in range(1, 9):
        np.testing.assert_array_equal(O.posterize(x, bits), _array(ImageOps.posterize(_pil(x), bits)))
    assert not O.posterize(x, 0).any()
    for threshold in (0, 77.5, 128, 255, 256):
        np.testing.assert_array_equal(O.solarize(x, threshold), _array(ImageOps.solarize(_pil(x), threshold)))
    for y in (x, x // 64 + 100, np.full_like(x, 7)):      # spread, four levels, flat
        np.testing.assert_array_equal(O.autocontrast(y), _array(ImageOps.autocontrast(_pil(y))))
        np.testing.assert_array_equal(O.equalize(y), _array(ImageOps.equalize(_pil(y))))
    np.testing.assert_array_equal(O.invert(x), _array(ImageOps.invert(_pil(x))))


def test_equalize_spreads_a_narrow_histogram():
    x = (np.arange(64 * 64) % 8 + 100).astype(np.uint8).reshape(64, 64, 1)
    y = O.equalize(x)
    assert y.min() == 0 and y.max() == 255 and len(np.unique(y)) == 8
    np.testing.assert_array_equal(y, _array(ImageOps.equalize(_pil(x))))
    small = x[:16, :16]                     # too few pixels for a step of 1: left as it is
    np.testing.assert_array_equal(O.equalize(small), small)


# --- geometry: Pillow's Image.transform / rotate ------------------------------------------------
# 'bilinear' matches except where a truncated value lands within rounding of an integer (at most
# 1 apart, on under 1% of the values); 'nearest' can differ where a source point falls exactly
# on a pixel border (Pillow uses 16.16 fixed point there), so the magnitudes below avoid exact
# ties and at most 1% of the values may differ.

def _pillow_affine(x, matrix, interpolation, fill=None):
    resample = getattr(Image.Resampling, interpolation.upper())
    fillcolor = None if fill is None else (int(fill) if x.shape[2] == 1 else (int(fill),) * x.shape[2])
    return _array(_pil(x).transform(_pil(x).size, Image.Transform.AFFINE, matrix, resample, fillcolor=fillcolor))


def _assert_close_to_pillow(got, expected):
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() <= 0.01, (difference.max(), (difference > 0).mean())


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("channels", [3, 1])
def test_shears_and_translations_match_pillows_affine_transform(interpolation, channels):
    x = _image(19, 23, channels)
    for m in (0.0333, -0.1, 0.17, -0.3, 0.61, 0.99):
        _assert_close_to_pillow(O.shear_x(x, m, interpolation), _pillow_affine(x, (1, m, 0, 0, 1, 0), interpolation))
        _assert_close_to_pillow(O.shear_y(x, m, interpolation), _pillow_affine(x, (1, 0, 0, m, 1, 0), interpolation))
    for t in (5.9, -3.2, 30):           # int(t) pixels: an exact shift
        np.testing.assert_array_equal(O.translate_x(x, t, interpolation),
                                      _pillow_affine(x, (1, 0, -int(t), 0, 1, 0), interpolation))
        np.testing.assert_array_equal(O.translate_y(x, t, interpolation),
                                      _pillow_affine(x, (1, 0, 0, 0, 1, -int(t)), interpolation))
    np.testing.assert_array_equal(O.translate_x(x, 4)[:, 4:], x[:, :-4])
    assert not O.translate_x(x, 4)[:, :4].any()


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotate_matches_pillows_rotate_and_fill(interpolation):
    x = _image(15, 21)
    resample = getattr(Image.Resampling, interpolation.upper())
    for degrees in (3.3333, -12.5, 30, 90, -135, 180):
        _assert_close_to_pillow(O.rotate(x, degrees, interpolation), _array(_pil(x).rotate(degrees, resample)))
    got = O.rotate(x, 25, interpolation, fill=(200, 10, 99))
    _assert_close_to_pillow(got, _array(_pil(x).rotate(25, resample, fillcolor=(200, 10, 99))))
    _assert_close_to_pillow(O.shear_x(x, 0.4, interpolation, fill=77),
                            _pillow_affine(x, (1, 0.4, 0, 0, 1, 0), interpolation, fill=77))
    square = _image(9, 9)
    np.testing.assert_array_equal(O.rotate(square, 90, interpolation), np.rot90(square))   # counterclockwise


# --- float images: the same operations on x / 255 --------------------------------------------------

@pytest.mark.parametrize("operation", sorted(O.IMAGE_OPS))
def test_float_images_follow_the_uint8_results(operation):
    x = _image(12, 14)
    magnitude = {"Posterize": 5, "Solarize": 0.4, "Rotate": 17.0, "TranslateX": 3, "TranslateY": -2}.get(operation, 0.3)
    for interpolation in ("nearest", "bilinear"):
        on_bytes = O.IMAGE_OPS[operation](x, magnitude, interpolation, None)
        on_floats = O.IMAGE_OPS[operation](x.astype(np.float64) / 255, magnitude, interpolation, None)
        assert on_floats.dtype == np.float64 and on_floats.min() >= 0 and on_floats.max() <= 1
        # uint8 results are truncated (and Pillow's contrast mean rounded): within 2 levels, mostly 1
        difference = np.abs(on_floats * 255 - on_bytes)
        assert difference.max() < 2 and np.mean(difference >= 1) < 0.1, (operation, difference.max())
    assert O.IMAGE_OPS[operation](x.astype(np.float32) / 255, magnitude, "nearest", None).dtype == np.float32


def test_grey_images_keep_one_channel_and_have_no_colour_to_change():
    x = _image(c=1)
    np.testing.assert_array_equal(O.adjust_saturation(x, 1.9), x)
    for transform in (T.AutoAugment(), T.RandAugment(num_ops=4), T.TrivialAugmentWide(), T.AugMix()):
        for _ in range(5):
            assert transform(x).shape == x.shape


# --- magnitude tables, worked out from torchvision's definitions ------------------------------------

def test_magnitude_tables():
    auto = T.AutoAugment()
    np.testing.assert_allclose(auto.magnitude_table("ShearX", 32, 40), [0.3 * k / 9 for k in range(10)])
    np.testing.assert_allclose(auto.magnitude_table("TranslateX", 32, 331), [150 * k / 9 for k in range(10)])
    np.testing.assert_allclose(auto.magnitude_table("TranslateY", 331, 8), [150 * k / 9 for k in range(10)])
    np.testing.assert_allclose(auto.magnitude_table("Rotate", 8, 8)[9], 30.0)
    np.testing.assert_allclose(auto.magnitude_table("Solarize", 8, 8), [1 - k / 9 for k in range(10)])
    assert auto.magnitude_table("Posterize", 8, 8).tolist() == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]   # round(8 - k / 2.25)
    assert auto.magnitude_table("Equalize", 8, 8) is None and "Identity" not in auto.operations

    rand = T.RandAugment()
    assert set(rand.operations) == set(auto.operations) - {"Invert"} | {"Identity"} and len(rand.operations) == 14
    np.testing.assert_allclose(rand.magnitude_table("Brightness", 8, 8)[9], 0.9 * 9 / 30)
    np.testing.assert_allclose(rand.magnitude_table("TranslateX", 8, 662)[30], 300.0)
    posterize = rand.magnitude_table("Posterize", 8, 8)                                    # round(8 - k / 7.5)
    assert posterize[[0, 3, 4, 11, 12, 30]].tolist() == [8, 8, 7, 7, 6, 4]
    np.testing.assert_allclose(T.RandAugment(num_magnitude_bins=11).magnitude_table("Rotate", 8, 8)[5], 15.0)

    wide = T.TrivialAugmentWide()
    np.testing.assert_allclose(wide.magnitude_table("Rotate", 8, 8)[20], 90.0)
    np.testing.assert_allclose(wide.magnitude_table("TranslateY", 500, 500)[30], 32.0)
    np.testing.assert_allclose(wide.magnitude_table("ShearY", 8, 8)[30], 0.99)
    assert wide.magnitude_table("Posterize", 8, 8)[[0, 2, 3, 30]].tolist() == [8, 8, 7, 2]   # round(8 - k / 5)

    mix = T.AugMix()
    np.testing.assert_allclose(mix.magnitude_table("TranslateX", 30, 54), [2 * k for k in range(10)])
    assert mix.magnitude_table("Posterize", 8, 8).tolist() == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]  # round(4 - k / 2.25)
    assert {"Brightness", "Color", "Contrast", "Sharpness"} <= set(mix.operations)
    assert not {"Brightness", "Color", "Contrast", "Sharpness"} & set(T.AugMix(all_ops=False).operations)
    assert len(mix.operations) == 13


# --- the policies' draws --------------------------------------------------------------------------

def _replay(x, steps, interpolation="nearest", fill=None):
    for operation, magnitude in steps:
        x = O.IMAGE_OPS[operation](x, magnitude, interpolation, fill)
    return x


def _within(count, n, p, sigmas=4.5):
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("policy", ["imagenet", "cifar10", "svhn"])
def test_auto_augment_applies_each_step_with_its_probability(policy):
    lamina.manual_seed(0)
    transform, x = T.AutoAugment(policy), _image(6, 7)
    n = 1500
    counts: dict[str, int] = {}
    for _ in range(n):
        y = transform(x)
        np.testing.assert_array_equal(y, _replay(x, transform.last_ops))
        for operation, _magnitude in transform.last_ops:
            counts[operation] = counts.get(operation, 0) + 1
    sub_policies = AUTO_AUGMENT_POLICIES[policy]
    assert len(sub_policies) == 25
    for operation in {step[0] for sub in sub_policies for step in sub}:
        expected = sum(p for sub in sub_policies for name, p, _ in sub if name == operation) / 25
        if expected < 1:
            assert _within(counts.get(operation, 0), n, expected), (operation, counts.get(operation), n * expected)
        else:   # an operation in more than one step per draw on average: compare the mean count
            assert abs(counts[operation] / n - expected) < 0.1


def test_auto_augment_magnitudes_come_from_the_bins_with_a_random_sign():
    lamina.manual_seed(1)
    transform, x = T.AutoAugment("svhn"), _image(10, 10)
    shears, solarize = [], set()
    for _ in range(600):
        transform(x)
        shears += [m for op, m in transform.last_ops if op in ("ShearX", "ShearY")]
        solarize |= {m for op, m in transform.last_ops if op == "Solarize"}
    allowed = {round(0.3 * k / 9, 9) for k in (2, 4, 5, 6, 7, 8, 9)}
    assert {round(abs(m), 9) for m in shears} <= allowed
    assert _within(sum(m < 0 for m in shears), len(shears), 0.5)
    assert solarize <= {1 - k / 9 for k in (2, 3, 6, 8)}


def test_rand_augment_draws_operations_uniformly_at_one_magnitude():
    lamina.manual_seed(2)
    transform, x = T.RandAugment(num_ops=3, magnitude=20), _image(6, 6)
    n, counts, signs = 700, {}, []
    for _ in range(n):
        y = transform(x)
        assert len(transform.last_ops) == 3
        np.testing.assert_array_equal(y, _replay(x, transform.last_ops))
        for operation, magnitude in transform.last_ops:
            counts[operation] = counts.get(operation, 0) + 1
            table = transform.magnitude_table(operation, 6, 6)
            if table is not None:
                assert abs(magnitude) == pytest.approx(float(table[20]))
                if operation == "Rotate":
                    signs.append(magnitude < 0)
    assert set(counts) == set(transform.operations)
    assert all(_within(c, 3 * n, 1 / 14) for c in counts.values()), counts
    assert _within(sum(signs), len(signs), 0.5)
    assert T.RandAugment(num_ops=0)(x) is not None and np.array_equal(T.RandAugment(num_ops=0)(x), x)


def test_trivial_augment_wide_draws_one_operation_and_a_uniform_bin():
    lamina.manual_seed(3)
    transform, x = T.TrivialAugmentWide(num_magnitude_bins=5), _image(6, 6)
    n, levels, counts = 1400, [], {}
    for _ in range(n):
        y = transform(x)
        (operation, magnitude), = transform.last_ops
        np.testing.assert_array_equal(y, _replay(x, transform.last_ops))
        counts[operation] = counts.get(operation, 0) + 1
        if operation == "Rotate":
            levels.append(int(round(abs(magnitude) / (135 / 4))))
    assert all(_within(c, n, 1 / 14) for c in counts.values()) and len(counts) == 14
    assert all(_within(levels.count(k), len(levels), 1 / 5) for k in range(5))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_augmix_mixes_its_recorded_chains(dtype):
    lamina.manual_seed(4)
    transform = T.AugMix(severity=2, mixture_width=4, alpha=0.7)
    x = _image(8, 9) if dtype == np.uint8 else (_image(8, 9) / 255).astype(np.float32)
    depths = []
    for _ in range(40):
        y = transform(x)
        assert y.dtype == dtype and y.shape == x.shape
        weights = transform.last_weights
        assert len(weights) == 5 and np.all(weights >= 0) and weights.sum() == pytest.approx(1)
        assert len(transform.last_chains) == 4
        depths += [len(chain) for chain in transform.last_chains]
        mix = sum(w * _replay(x, chain, "bilinear").astype(np.float64)
                  for w, chain in zip(weights[1:], transform.last_chains)) + weights[0] * x
        if dtype == np.uint8:
            assert np.abs(y - np.trunc(mix)).max() <= 1      # truncated, as torchvision
        else:
            np.testing.assert_allclose(y, mix, atol=1e-5)
        for chain in transform.last_chains:
            for operation, magnitude in chain:
                table = transform.magnitude_table(operation, 8, 9)
                if table is not None:   # severity 2: the two lowest of the 10 bins
                    assert np.any(np.isclose(abs(magnitude), table[:2]))
    assert set(depths) == {1, 2, 3}
    fixed = T.AugMix(chain_depth=2, all_ops=False)
    fixed(x)
    assert [len(chain) for chain in fixed.last_chains] == [2, 2, 2]
    assert not {op for op, _ in fixed.last_ops} & {"Brightness", "Color", "Contrast", "Sharpness"}


def test_augmix_keeps_about_half_of_the_original_for_alpha_1():
    lamina.manual_seed(5)
    transform, x = T.AugMix(), _image(4, 4)
    originals = []
    for _ in range(400):
        transform(x)
        originals.append(transform.last_weights[0])
    assert abs(np.mean(originals) - 0.5) < 0.05 and 0.25 < np.std(originals) < 0.33   # Uniform(0, 1): sd 0.289


# --- reproducibility --------------------------------------------------------------------------------

def test_seeded_draws_repeat():
    x = _image(10, 12)
    for transform in (T.AutoAugment("cifar10"), T.RandAugment(), T.TrivialAugmentWide(), T.AugMix()):
        lamina.manual_seed(7)
        first = [transform(x) for _ in range(6)]
        lamina.manual_seed(7)
        second = [transform(x) for _ in range(6)]
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
        assert not all(np.array_equal(first[0], other) for other in first[1:])


class _Images:
    def __init__(self, transform, n=10):
        self.x = np.stack([_image(8, 8, seed=k) for k in range(n)])
        self.transform = transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(self.x[i]), i % 3


POLICY = T.Compose([T.AutoAugment(), T.RandAugment(num_ops=2, magnitude=15), T.AugMix(mixture_width=2), T.ToFloat()])


@pytest.mark.parametrize("workers", [dict(num_workers=2),
                                     dict(num_workers=2, worker_mode="process", multiprocessing_context="fork")],
                         ids=["threads", "processes"])
def test_loader_batches_are_the_same_with_and_without_workers(workers):
    def batches(**options):
        return [xb for xb, _ in DataLoader(_Images(POLICY), batch_size=3, shuffle=True, seed=11, **options)]

    serial = batches()
    for a, b in zip(serial, batches(**workers)):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(serial[0], _Images(T.ToFloat()).x[:3] / 255)


# --- reprs, configs, errors -------------------------------------------------------------------------

def test_repr_and_config_rebuild_the_transform():
    for transform in (T.AutoAugment("svhn", interpolation="bilinear", fill=(1, 2, 3)), T.RandAugment(1, 5, 11),
                      T.TrivialAugmentWide(fill=128), T.AugMix(severity=5, chain_depth=2, alpha=0.5, all_ops=False)):
        rebuilt = type(transform)(**transform.get_config())
        assert repr(rebuilt) == repr(transform)
        assert repr(pickle.loads(pickle.dumps(transform))) == repr(transform)
    assert repr(T.RandAugment()) == ("RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31, "
                                     "interpolation='nearest', fill=None)")


def test_errors_name_the_transform():
    with pytest.raises(ValueError, match=r"AutoAugment: policy must be one of \('imagenet', 'cifar10', 'svhn'\)"):
        T.AutoAugment("cifar100")
    with pytest.raises(ValueError, match=r"RandAugment: magnitude must be an integer in 0..30; got 31"):
        T.RandAugment(magnitude=31)
    with pytest.raises(ValueError, match=r"RandAugment: magnitude must be an integer in 0..10; got 2.5"):
        T.RandAugment(magnitude=2.5, num_magnitude_bins=11)
    with pytest.raises(ValueError, match="RandAugment: num_ops must be an integer >= 0"):
        T.RandAugment(num_ops=-1)
    with pytest.raises(ValueError, match="TrivialAugmentWide: num_magnitude_bins must be an integer >= 2"):
        T.TrivialAugmentWide(num_magnitude_bins=1)
    with pytest.raises(ValueError, match=r"AugMix: severity must be an integer in 1..10; got 0"):
        T.AugMix(severity=0)
    with pytest.raises(ValueError, match="AugMix: alpha must be a positive finite number"):
        T.AugMix(alpha=0)
    with pytest.raises(ValueError, match="TrivialAugmentWide: interpolation must be one of"):
        T.TrivialAugmentWide(interpolation="bicubic")
    with pytest.raises(ValueError, match="AutoAugment: fill must be None, a number or one number per channel"):
        T.AutoAugment(fill="white")
    with pytest.raises(ShapeError, match=r"RandAugment: expected one image of shape \(height, width, channels\)"):
        T.RandAugment()(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="AugMix: expected a uint8 image .* got dtype int32"):
        T.AugMix()(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ShapeError, match=r"TrivialAugmentWide: fill has 3 values but the image of shape \(4, 4, 1\)"):
        T.TrivialAugmentWide(fill=(1, 2, 3))(np.zeros((4, 4, 1), np.uint8))
    with pytest.raises(ShapeError, match=r"adjust_saturation: expected an RGB .* got shape \(4, 4, 2\)"):
        O.adjust_saturation(np.zeros((4, 4, 2), np.uint8), 0.5)
    with pytest.raises(ValueError, match="RandAugment: unknown operation 'Invert'"):
        T.RandAugment().magnitude_table("Invert", 4, 4)


# --- a short learning check -------------------------------------------------------------------------

class _Augmented:
    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def _digits_accuracy(transform, x_train, y_train, tests, epochs=10):
    from lamina import functional as F
    from lamina import nn
    from lamina.data import ArrayDataset
    from lamina.optim import SGD

    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(128, activation="relu"), nn.Dense(10))
    model.build((None, 64))
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    data = ArrayDataset(x_train, y_train) if transform is None else _Augmented(x_train, y_train, transform)
    loader = DataLoader(data, batch_size=64, shuffle=True, seed=1)
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            logits = model(lamina.tensor(xb.reshape(len(xb), -1).astype(np.float32) / 255))
            F.categorical_cross_entropy(logits, yb, from_logits=True).backward()
            optimizer.step()
    return [float(np.mean(model(lamina.tensor(xs.reshape(len(xs), -1).astype(np.float32) / 255)).numpy().argmax(1)
                          == ys)) for xs, ys in tests]


def test_rand_augment_makes_a_digits_model_robust_to_small_rotations_and_shifts():
    from lamina.data import load_digits, train_val_test_split

    x, y = load_digits(size=8)
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.3, seed=0)
    rng = np.random.default_rng(1)
    moved = np.stack([O.rotate(O.translate_x(image, rng.integers(-1, 2)), rng.uniform(-20, 20), "bilinear")
                      for image in x_test])
    tests = [(x_test, y_test), (moved, y_test)]
    plain_clean, plain_moved = _digits_accuracy(None, x_train, y_train, tests)
    augmented_clean, augmented_moved = _digits_accuracy(T.RandAugment(num_ops=1, magnitude=9), x_train, y_train, tests)
    assert plain_clean > 0.9 and augmented_clean > 0.9
    assert augmented_moved > plain_moved + 0.08, (plain_moved, augmented_moved)
