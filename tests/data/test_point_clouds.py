"""Point-cloud data: the synthetic shapes lie on their surfaces, the dataset's sizes, labels and
reproducibility, each augmentation's effect, the OFF reader (joined header, polygons) and mesh
sampling, and ModelNet directories in both layouts written as tiny files."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import (
    SHAPES,
    DataLoader,
    Jitter,
    ModelNet,
    PointDropout,
    RandomRotation,
    RandomScale,
    SyntheticShapes,
    normalize_cloud,
    read_off,
    sample_mesh,
    sample_shape,
)


def test_shapes_lie_on_their_surfaces():
    rng = 0
    sphere = sample_shape("sphere", 500, rng)
    np.testing.assert_allclose(np.linalg.norm(sphere, axis=1), 1.0)
    cube = sample_shape("cube", 500, rng)
    np.testing.assert_allclose(np.abs(cube).max(axis=1), 1.0)
    cylinder = sample_shape("cylinder", 500, rng)
    radius = np.hypot(cylinder[:, 0], cylinder[:, 1])
    assert np.all(np.isclose(radius, 1.0) | np.isclose(np.abs(cylinder[:, 2]), 1.0))
    cone = sample_shape("cone", 500, rng)
    radius = np.hypot(cone[:, 0], cone[:, 1])
    assert np.all(np.isclose(cone[:, 2], 1 - 2 * radius) | np.isclose(cone[:, 2], -1.0))
    torus = sample_shape("torus", 500, rng)
    ring = np.hypot(torus[:, 0], torus[:, 1]) - 0.7
    np.testing.assert_allclose(ring ** 2 + torus[:, 2] ** 2, 0.09, rtol=1e-9)
    with pytest.raises(ValueError, match="sample_shape: unknown shape 'pyramid'"):
        sample_shape("pyramid", 10)


def test_synthetic_shapes_dataset():
    data = SyntheticShapes(6, 32, seed=3)
    points, labels = data.arrays()
    assert points.shape == (30, 32, 3) and points.dtype == np.float32 and len(data) == 30
    assert np.bincount(labels).tolist() == [6] * len(SHAPES)
    np.testing.assert_array_equal(SyntheticShapes(6, 32, seed=3).points, points)
    assert not np.array_equal(SyntheticShapes(6, 32, seed=4).points, points)
    x, y = next(iter(DataLoader(data, batch_size=8)))
    assert x.shape == (8, 32, 3) and y.shape == (8,)


def test_augmentations():
    rng = np.random.default_rng(0)
    cloud = np.concatenate([rng.standard_normal((20, 3)), rng.standard_normal((20, 3))], axis=1)
    rotated = RandomRotation()(cloud, rng)
    np.testing.assert_allclose(np.linalg.norm(rotated[:, :3], axis=1), np.linalg.norm(cloud[:, :3], axis=1))
    np.testing.assert_allclose(rotated[:, 2], cloud[:, 2])
    np.testing.assert_allclose((rotated[:, :3] * rotated[:, 3:]).sum(1), (cloud[:, :3] * cloud[:, 3:]).sum(1))
    assert not np.allclose(rotated[:, 0], cloud[:, 0])
    scaled = RandomScale(0.5, 0.6)(cloud, rng)
    factor = scaled[:, :3] / cloud[:, :3]
    assert np.allclose(factor, factor[0, 0]) and 0.5 <= factor[0, 0] <= 0.6
    np.testing.assert_array_equal(scaled[:, 3:], cloud[:, 3:])
    jittered = Jitter(sigma=1.0, clip=0.05)(cloud, rng)
    step = np.abs(jittered[:, :3] - cloud[:, :3])
    assert step.max() <= 0.05 + 1e-12 and np.isclose(step.max(), 0.05)
    dropped = PointDropout(0.875)(cloud, np.random.default_rng(5))
    changed = ~np.all(dropped == cloud, axis=1)
    assert dropped.shape == cloud.shape and changed.any() and np.all(dropped[changed] == cloud[0])
    with pytest.raises(ValueError, match="PointDropout: max_ratio"):
        PointDropout(1.0)


def test_augmented_dataset_changes_each_access():
    data = SyntheticShapes(2, 16, transforms=[RandomRotation(), Jitter()])
    first, second = data[0][0], data[0][0]
    assert not np.allclose(first, second)
    np.testing.assert_allclose(np.linalg.norm(first[:, :2], axis=1), np.linalg.norm(data.points[0, :, :2], axis=1),
                               atol=0.2)


def test_normalize_cloud():
    cloud = np.random.default_rng(1).random((30, 3)) * 5 + 2
    out = normalize_cloud(cloud)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1).max(), 1.0, rtol=1e-6)


SQUARE = "OFF\n# a unit square and a triangle\n5 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n4 0 1 2 3\n3 0 1 4\n"


def test_read_off_and_sample_mesh(tmp_path):
    path = tmp_path / "square.off"
    path.write_text(SQUARE)
    vertices, faces = read_off(path)
    assert vertices.shape == (5, 3) and faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
    joined = tmp_path / "joined.off"
    joined.write_text("OFF5 2 0\n" + SQUARE.split("5 2 0\n", 1)[1])
    np.testing.assert_array_equal(read_off(joined)[1], faces)
    points = sample_mesh(vertices, faces, 400, rng=0)
    on_square = np.isclose(points[:, 2], 0) & (points[:, :2] >= -1e-12).all(1) & (points[:, :2] <= 1 + 1e-12).all(1)
    on_triangle = np.isclose(points[:, 1], 0) & (points[:, 0] + points[:, 2] <= 1 + 1e-12)
    assert np.all(on_square | on_triangle)
    assert 0.5 < on_square.mean() < 0.8                                   # areas 1 and 1/2
    bad = tmp_path / "bad.off"
    bad.write_text("PLY\n1 0 0\n")
    with pytest.raises(ValueError, match="read_off: .*bad.off does not start with 'OFF'"):
        read_off(bad)
    short = tmp_path / "short.off"
    short.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")
    with pytest.raises(ValueError, match="read_off: .*short.off"):
        read_off(short)


def test_modelnet_off_layout(tmp_path):
    for name in ("chair", "bowl"):
        for split, count in (("train", 2), ("test", 1)):
            (tmp_path / name / split).mkdir(parents=True)
            for i in range(count):
                (tmp_path / name / split / f"{name}_{i:04d}.off").write_text(SQUARE)
    train = ModelNet(tmp_path, "train", num_points=64)
    test = ModelNet(tmp_path, "test", num_points=64)
    assert train.classes == ("bowl", "chair") and len(train) == 4 and len(test) == 2
    assert train.points.shape == (4, 64, 3) and train.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(np.linalg.norm(train.points, axis=2).max(axis=1), 1.0, rtol=1e-5)


def test_modelnet_resampled_text_layout(tmp_path):
    rng = np.random.default_rng(2)
    names = {"night_stand": 2, "airplane": 1}
    lines = {"train": [], "test": []}
    for name, count in names.items():
        (tmp_path / name).mkdir()
        for i in range(1, count + 2):
            sample = f"{name}_{i:04d}"
            np.savetxt(tmp_path / name / f"{sample}.txt", rng.standard_normal((12, 6)), delimiter=",", fmt="%.6f")
            lines["train" if i <= count else "test"].append(sample)
    for split, samples in lines.items():
        (tmp_path / f"modelnet40_{split}.txt").write_text("\n".join(samples) + "\n")
    train = ModelNet(tmp_path, "train", num_points=10, normals=True)
    assert train.classes == ("airplane", "night_stand") and train.labels.tolist() == [1, 1, 0]
    assert train.points.shape == (3, 10, 6)
    raw = np.loadtxt(tmp_path / "night_stand" / "night_stand_0001.txt", delimiter=",")[:10]
    np.testing.assert_allclose(train.points[0, :, 3:], raw[:, 3:], rtol=1e-6)    # normals kept as they are
    assert ModelNet(tmp_path, "test", num_points=10).points.shape == (2, 10, 3)
    with pytest.raises(ValueError, match="ModelNet: .*has 12 points, fewer than num_points=20"):
        ModelNet(tmp_path, "train", num_points=20)
    with pytest.raises(ValueError, match="ModelNet: split must be 'train' or 'test'"):
        ModelNet(tmp_path, "val")
