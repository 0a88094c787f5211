import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.vision.tracking import read_mot, tracks_to_mot, write_mot


def test_round_trip_gives_the_same_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.column_stack([np.repeat([1, 2, 3], 2), [1, 2, 1, 2, -1, 7], rng.uniform(0, 500, (6, 2)),
                            rng.uniform(1, 80, (6, 2)), rng.uniform(0, 1, 6), -np.ones((6, 3))])
    path = write_mot(tmp_path / "seq" / "result.txt", rows)
    back = read_mot(path)
    np.testing.assert_array_equal(back, rows)
    first = path.read_text().splitlines()[0].split(",")
    assert first[:2] == ["1", "1"] and first[-1] == "-1"          # whole numbers written as integers
    ground_truth = np.array([[1, 1, 10, 20, 30, 40, 1, 1, 0.75]])
    np.testing.assert_array_equal(read_mot(write_mot(tmp_path / "gt.txt", ground_truth)), ground_truth)


def test_tracker_output_becomes_rows():
    rows = tracks_to_mot(4, np.array([[10.0, 20.0, 40.0, 80.0, 3.0]]))
    np.testing.assert_array_equal(rows, [[4, 3, 10, 20, 30, 60, 1, -1, -1, -1]])


def test_reader_skips_blank_lines_and_names_bad_lines(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("1,-1,10,20,30,40,0.9,-1,-1,-1\n\n2,-1,11,21,30,40,0.8,-1,-1,-1\n")
    assert read_mot(path).shape == (2, 10)
    path.write_text("1,-1,10,20,30,40,0.9,-1,-1,-1\n2,-1,11,21,30,40,0.8\n")
    with pytest.raises(ShapeError, match="line 2: expected 10 fields"):
        read_mot(path)
    path.write_text("1,-1,10,20\n")
    with pytest.raises(ShapeError, match="6 to 10"):
        read_mot(path)
    path.write_text("1,-1,10,20,-30,40\n")
    with pytest.raises(ValueError, match="widths and heights must be >= 0"):
        read_mot(path)
    path.write_text("1,-1,10,20,a,40\n")
    with pytest.raises(ValueError, match="numbers"):
        read_mot(path)


def test_writer_refuses_bad_rows(tmp_path):
    with pytest.raises(ShapeError, match="6 <= C <= 10"):
        write_mot(tmp_path / "x.txt", np.zeros((2, 5)))
    with pytest.raises(ValueError, match="frame numbers"):
        write_mot(tmp_path / "x.txt", [[0, 1, 0, 0, 5, 5]])
    with pytest.raises(ValueError, match="w=-5"):
        write_mot(tmp_path / "x.txt", [[1, 1, 0, 0, -5, 5]])
    assert not (tmp_path / "x.txt").exists()
