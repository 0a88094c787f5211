"""UCR/UEA ``.ts`` and ``.tsv`` files (round trips, hand-written files, missing values, unequal
lengths), z-normalisation, padding, and the synthetic classification tasks (CBF, waveforms)."""

import os

import numpy as np
import pytest

from lamina.data import (
    CBF_CLASSES,
    cylinder_bell_funnel,
    pad_series,
    read_ts,
    read_ucr_tsv,
    synthetic_waveforms,
    write_ts,
    write_ucr_tsv,
    z_normalize,
)
from lamina.errors import ShapeError


def test_tsv_round_trip(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 17))
    x[2, 3] = np.nan
    y = np.array(["1", "-1", "2", "1", "3"])
    path = tmp_path / "Toy_TRAIN.tsv"
    write_ucr_tsv(path, x, y)
    x_read, y_read = read_ucr_tsv(path)
    assert x_read.shape == (5, 17, 1)
    np.testing.assert_array_equal(x_read[:, :, 0], x)         # NaN where written, all digits kept
    assert list(y_read) == list(y)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_tsv_written_by_hand(tmp_path):
    path = tmp_path / "hand.tsv"
    path.write_text("1\t0.5\t1.5\t-2\n2\t3\t4\tNaN\n")
    x, y = read_ucr_tsv(path)
    np.testing.assert_array_equal(x[:, :, 0], [[0.5, 1.5, -2.0], [3.0, 4.0, np.nan]])
    assert list(y) == ["1", "2"]
    lines = path.read_text().replace("\t-2\n", "\n")
    path.write_text(lines)
    with pytest.raises(ValueError, match="lines of different lengths"):
        read_ucr_tsv(path)


def test_tsv_unequal_lengths_are_padded_with_nan(tmp_path):
    path = tmp_path / "unequal.tsv"
    write_ucr_tsv(path, [np.arange(3.0), np.arange(5.0)], ["a", "b"])
    x, _ = read_ucr_tsv(path)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2, np.nan, np.nan])
    with pytest.raises(ShapeError, match="one channel"):
        write_ucr_tsv(path, np.zeros((2, 4, 2)), ["a", "b"])


@pytest.mark.parametrize("channels", [1, 3])
def test_ts_round_trip(tmp_path, channels):
    x = np.random.default_rng(1).standard_normal((4, 9, channels))
    x[1, 2, 0] = np.nan
    y = np.array(["cat", "dog", "cat", "eel"])
    path = tmp_path / "toy.ts"
    write_ts(path, x, y, problem_name="Toy")
    text = path.read_text()
    assert "@univariate " + ("true" if channels == 1 else "false") in text and "@missing true" in text
    assert "@classLabel true cat dog eel" in text and "?" in text
    x_read, y_read = read_ts(path)
    np.testing.assert_array_equal(x_read, x)
    assert list(y_read) == list(y)


def test_ts_unequal_lengths_and_no_labels(tmp_path):
    series = [np.arange(4.0).reshape(2, 2), np.arange(6.0).reshape(3, 2)]
    path = tmp_path / "unequal.ts"
    write_ts(path, series)
    x, y = read_ts(path)
    assert isinstance(x, list) and [s.shape for s in x] == [(2, 2), (3, 2)]
    np.testing.assert_array_equal(x[1], series[1])
    assert "@equalLength false" in path.read_text() and list(y) == ["", ""]
    padded = pad_series(x)
    assert padded.shape == (2, 3, 2) and np.all(padded[0, 2] == 0)


def test_ts_written_by_hand(tmp_path):
    path = tmp_path / "hand.ts"
    path.write_text("# a comment\n@problemName Hand\n@timeStamps false\n@univariate false\n"
                    "@classLabel true a b\n@data\n1,2,3:4,5,?:a\n\n6,7,8:9,10,11:b\n")
    x, y = read_ts(path)
    assert x.shape == (2, 3, 2)
    np.testing.assert_array_equal(x[0], [[1, 4], [2, 5], [3, np.nan]])
    assert list(y) == ["a", "b"]
    path.write_text("@problemName Bad\n@classLabel true a\n@data\n1,2:3:a\n")
    with pytest.raises(ValueError, match="different lengths"):
        read_ts(path)
    path.write_text("@problemName Bad\n@timeStamps true\n@classLabel false\n@data\n(0,1)\n")
    with pytest.raises(ValueError, match="timestamped"):
        read_ts(path)
    path.write_text("@problemName NoData\n")
    with pytest.raises(ValueError, match="no @data"):
        read_ts(path)


def test_z_normalize_and_pad_series():
    x = np.random.default_rng(2).normal(3.0, 2.0, (4, 30, 2))
    z = z_normalize(x)
    assert np.allclose(z.mean(axis=1), 0) and np.allclose(z.std(axis=1), 1)
    assert np.allclose(z[1, :, 0], (x[1, :, 0] - x[1, :, 0].mean()) / x[1, :, 0].std())
    assert np.all(z_normalize(np.ones((2, 5))) == 0)
    with pytest.raises(ShapeError, match="z_normalize"):
        z_normalize(np.zeros(5))
    with pytest.raises(ShapeError, match="shorter than the longest"):
        pad_series([np.zeros(5)], length=3)
    with pytest.raises(ShapeError, match="different channel counts"):
        pad_series([np.zeros((5, 1)), np.zeros((5, 2))])


def test_cylinder_bell_funnel_shapes():
    x, y = cylinder_bell_funnel(300, seed=0, dtype=np.float64)
    assert x.shape == (300, 128, 1) and y.shape == (300,) and len(CBF_CLASSES) == 3
    assert np.bincount(y).tolist() == [100, 100, 100]
    s = x[:, :, 0]
    # outside [16, 128] the series is pure N(0, 1) noise: a starts at >= 16
    assert abs(s[:, :15].mean()) < 0.05 and abs(s[:, :15].std() - 1) < 0.05
    # t = 33 .. 48 lies inside [a, b] for every series (a <= 32, b >= a + 32): the cylinder is
    # flat at 6 + eta (mean 6), the bell rises and the funnel falls with slope (6 + eta) / (b - a)
    cylinder, bell, funnel = (s[y == c] for c in range(3))
    assert abs(cylinder[:, 32:48].mean() - 6) < 0.5
    rise = {name: (c[:, 46:48] - c[:, 32:34]).mean() for name, c in
            (("cylinder", cylinder), ("bell", bell), ("funnel", funnel))}
    assert abs(rise["cylinder"]) < 0.5 and rise["bell"] > 0.7 and rise["funnel"] < -0.7
    assert bell[:, 32:48].mean() < 4 < funnel[:, 32:48].mean()     # the bell starts low, the funnel high
    x2, y2 = cylinder_bell_funnel(300, seed=0, dtype=np.float64)
    np.testing.assert_array_equal(x, x2)
    short, _ = cylinder_bell_funnel(6, length=64, seed=1)
    assert short.shape == (6, 64, 1) and short.dtype == np.float32


def test_synthetic_waveforms():
    x, y = synthetic_waveforms(90, length=50, noise=0.0, seed=3)
    assert x.shape == (90, 50, 1) and set(y.tolist()) == {0, 1, 2}
    square = x[y == 1, :, 0]
    assert np.allclose(np.abs(square), np.abs(square[:, :1]))      # two levels +-amplitude
    sawtooth = x[y == 2, :, 0]
    steps = np.diff(sawtooth, axis=1)
    assert np.all((steps > 0) | (steps < -0.5))                      # rising ramps, sharp drops
    with pytest.raises(ValueError, match="noise"):
        synthetic_waveforms(3, noise=-1)
