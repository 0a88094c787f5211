"""Point-cloud data: synthetic shapes, ModelNet40 files and augmentations. A cloud is an (N, 3)
array of coordinates (``(N, 6)`` with normals); a batch is (B, N, C).

* :func:`sample_shape` / :class:`SyntheticShapes`: points drawn uniformly by area on the
  surface of a sphere, cube, cylinder, cone or torus (each its own class), then rotated by a
  random angle about z, scaled and jittered: a ModelNet-like classification set that needs
  no download.
* :func:`read_off` reads an OFF mesh; :func:`sample_mesh` draws points on its faces (by area).
  :class:`ModelNet` reads a directory laid out as ModelNet40 (``<class>/train/*.off`` and
  ``<class>/test/*.off``) or as ``modelnet40_normal_resampled`` (``<class>/<class>_0001.txt``
  with comma-separated x, y, z, nx, ny, nz rows and the split lists
  ``modelnet40_train.txt`` / ``modelnet40_test.txt``).
* Augmentations on one cloud, each a callable ``(points, rng) -> points``:
  :class:`RandomRotation` (about z), :class:`RandomScale`, :class:`Jitter` (clipped Gaussian
  noise) and :class:`PointDropout` (dropped points replaced by the first point, as the
  reference code does, so the shape stays fixed); :func:`normalize_cloud` centres a cloud
  and scales it into the unit sphere.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

__all__ = ["SHAPES", "Jitter", "ModelNet", "PointDropout", "RandomRotation", "RandomScale", "SyntheticShapes",
           "normalize_cloud", "read_off", "sample_mesh", "sample_shape"]

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")


def _unit_sphere(n: int, rng) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _cube(n: int, rng) -> np.ndarray:
    points = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(0, 3, n)
    points[np.arange(n), axis] = rng.choice([-1.0, 1.0], n)          # six faces of equal area
    return points


def _cylinder(n: int, rng) -> np.ndarray:
    side, disc = 2 * math.pi * 2, 2 * math.pi                       # radius 1, height 2: side 4 pi, caps 2 pi
    on_side = rng.random(n) < side / (side + disc)
    angle = rng.uniform(0, 2 * math.pi, n)
    radius = np.where(on_side, 1.0, np.sqrt(rng.random(n)))
    z = np.where(on_side, rng.uniform(-1, 1, n), rng.choice([-1.0, 1.0], n))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], axis=1)


def _cone(n: int, rng) -> np.ndarray:
    slant, base = math.pi * math.sqrt(5), math.pi                    # radius 1, height 2
    on_side = rng.random(n) < slant / (slant + base)
    angle = rng.uniform(0, 2 * math.pi, n)
    radius = np.sqrt(rng.random(n))                                 # uniform by area on both pieces
    z = np.where(on_side, 1 - 2 * radius, -1.0)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], axis=1)


def _torus(n: int, rng, major: float = 0.7, minor: float = 0.3) -> np.ndarray:
    u, v = np.empty(0), np.empty(0)
    while len(v) < n:                                               # area element (major + minor cos v) by rejection
        u_new, v_new = rng.uniform(0, 2 * math.pi, (2, 2 * n))
        keep = rng.random(2 * n) < (major + minor * np.cos(v_new)) / (major + minor)
        u, v = np.concatenate([u, u_new[keep]]), np.concatenate([v, v_new[keep]])
    u, v = u[:n], v[:n]
    ring = major + minor * np.cos(v)
    return np.stack([ring * np.cos(u), ring * np.sin(u), minor * np.sin(v)], axis=1)


_SAMPLERS = {"sphere": _unit_sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus}


def sample_shape(shape: str, num_points: int, rng=None) -> np.ndarray:
    """``num_points`` points (N, 3) uniform by area on the surface of ``shape`` (one of
    :data:`SHAPES`), centred at the origin, within [-1, 1]^3."""
    if shape not in _SAMPLERS:
        raise ValueError(f"sample_shape: unknown shape {shape!r}; expected one of {SHAPES}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"sample_shape: num_points must be a positive int, got {num_points!r}")
    return _SAMPLERS[shape](num_points, np.random.default_rng(rng))


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class RandomRotation:
    """Rotate the coordinates (and normals, channels 3:6) by a uniform random angle about z."""

    def __call__(self, points: np.ndarray, rng) -> np.ndarray:
        r = rotation_z(rng.uniform(0, 2 * math.pi)).astype(points.dtype)
        out = points.copy()
        out[:, :3] = points[:, :3] @ r.T
        if points.shape[1] >= 6:
            out[:, 3:6] = points[:, 3:6] @ r.T
        return out


class RandomScale:
    """Multiply the coordinates by one factor drawn uniformly from [low, high]."""

    def __init__(self, low: float = 0.8, high: float = 1.25):
        if not 0 < low <= high:
            raise ValueError(f"RandomScale: expected 0 < low <= high, got low={low!r}, high={high!r}")
        self.low, self.high = float(low), float(high)

    def __call__(self, points: np.ndarray, rng) -> np.ndarray:
        out = points.copy()
        out[:, :3] *= rng.uniform(self.low, self.high)
        return out


class Jitter:
    """Add Gaussian noise of standard deviation ``sigma``, clipped to +-``clip``, to the coordinates."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05):
        if sigma < 0 or clip <= 0:
            raise ValueError(f"Jitter: expected sigma >= 0 and clip > 0, got sigma={sigma!r}, clip={clip!r}")
        self.sigma, self.clip = float(sigma), float(clip)

    def __call__(self, points: np.ndarray, rng) -> np.ndarray:
        out = points.copy()
        out[:, :3] += np.clip(self.sigma * rng.standard_normal((len(points), 3)), -self.clip, self.clip)
        return out


class PointDropout:
    """Drop a random fraction (drawn from [0, ``max_ratio``]) of the points, overwriting them
    with the first point, so the cloud keeps its size."""

    def __init__(self, max_ratio: float = 0.875):
        if not 0 <= max_ratio < 1:
            raise ValueError(f"PointDropout: max_ratio must be in [0, 1), got {max_ratio!r}")
        self.max_ratio = float(max_ratio)

    def __call__(self, points: np.ndarray, rng) -> np.ndarray:
        ratio = rng.random() * self.max_ratio
        dropped = rng.random(len(points)) <= ratio
        out = points.copy()
        out[dropped] = points[0]
        return out


def normalize_cloud(points: np.ndarray) -> np.ndarray:
    """The cloud centred at its mean and scaled so that the farthest point is at distance 1
    (coordinates only; further channels unchanged)."""
    out = np.array(points, dtype=np.float64 if points.dtype == np.float64 else np.float32)
    xyz = out[:, :3] - out[:, :3].mean(axis=0)
    out[:, :3] = xyz / max(float(np.linalg.norm(xyz, axis=1).max()), 1e-12)
    return out


def _check_cloud(points, where: str) -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"{where}: a cloud must be (points, 3 or more channels), got shape {points.shape}")
    return points


class _Clouds:
    """Shared by the datasets: ``self.points`` (M, N, C) float32, ``self.labels`` (M,), the
    ``transforms`` applied per sample with a generator seeded by ``seed`` (None: no augmentation)."""

    points: np.ndarray
    labels: np.ndarray

    def _set_transforms(self, transforms, seed) -> None:
        self.transforms = list(transforms or [])
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)):
            index = np.arange(len(self))[index]
            pairs = [self[int(i)] for i in index]
            return np.stack([p for p, _ in pairs]), np.array([y for _, y in pairs])
        points = self.points[index]
        for transform in self.transforms:
            points = transform(points, self._rng)
        return points.astype(np.float32, copy=False), self.labels[index]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All clouds (M, N, C) and labels (M,), without augmentation."""
        return self.points, self.labels


class SyntheticShapes(_Clouds):
    """``samples_per_class`` clouds of ``num_points`` points for each of ``shapes`` (label = its
    position): surface points rotated by a random angle about z, scaled by a factor in
    ``scale`` and jittered by Gaussian noise of std ``jitter``. ``transforms`` (augmentations)
    run on every access."""

    def __init__(self, samples_per_class: int = 50, num_points: int = 256, shapes=SHAPES, scale=(0.7, 1.0),
                 jitter: float = 0.01, seed: int = 0, transforms=None):
        self.classes = tuple(shapes)
        for shape in self.classes:
            if shape not in _SAMPLERS:
                raise ValueError(f"SyntheticShapes: unknown shape {shape!r}; expected some of {SHAPES}")
        rng = np.random.default_rng(seed)
        clouds, labels = [], []
        for label, shape in enumerate(self.classes):
            for _ in range(samples_per_class):
                points = sample_shape(shape, num_points, rng) @ rotation_z(rng.uniform(0, 2 * math.pi)).T
                points = points * rng.uniform(*scale) + jitter * rng.standard_normal(points.shape)
                clouds.append(points)
                labels.append(label)
        order = rng.permutation(len(clouds))
        self.points = np.stack(clouds)[order].astype(np.float32)
        self.labels = np.array(labels, dtype=np.int64)[order]
        self._set_transforms(transforms, seed)


def read_off(path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64, polygons split into triangle fans) of an OFF
    file. ModelNet's files sometimes join the header to the counts ('OFF490 518 0'); that
    is read too."""
    tokens = pathlib.Path(path).read_text().split("\n")
    lines = [line.strip() for line in tokens if line.strip() and not line.strip().startswith("#")]
    if not lines or not lines[0].startswith("OFF"):
        raise ValueError(f"read_off: {path} does not start with 'OFF'")
    head = lines[0][3:].split()
    rest = lines[1:]
    if not head:
        head, rest = rest[0].split(), rest[1:]
    try:
        n_vertices, n_faces = int(head[0]), int(head[1])
        vertices = np.array([[float(v) for v in line.split()[:3]] for line in rest[:n_vertices]])
        triangles = []
        for line in rest[n_vertices:n_vertices + n_faces]:
            values = [int(v) for v in line.split()]
            corners = values[1:1 + values[0]]
            triangles += [(corners[0], corners[i], corners[i + 1]) for i in range(1, len(corners) - 1)]
    except (IndexError, ValueError) as error:
        raise ValueError(f"read_off: {path} is not a valid OFF file ({error})") from None
    if vertices.shape != (n_vertices, 3) or len(rest) < n_vertices + n_faces:
        raise ValueError(f"read_off: {path} declares {n_vertices} vertices and {n_faces} faces but holds fewer")
    faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ValueError(f"read_off: {path} has a face index outside [0, {n_vertices})")
    return vertices, faces


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, num_points: int, rng=None) -> np.ndarray:
    """``num_points`` points (N, 3) uniform by area on the triangles ``faces`` of a mesh."""
    rng = np.random.default_rng(rng)
    if len(faces) == 0:
        raise ValueError("sample_mesh: the mesh has no faces")
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        raise ValueError("sample_mesh: every face of the mesh has zero area")
    chosen = rng.choice(len(faces), num_points, p=area / area.sum())
    u, v = rng.random((2, num_points, 1))
    flip = (u + v) > 1                                              # fold the square onto the triangle
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    return a[chosen] + u * (b[chosen] - a[chosen]) + v * (c[chosen] - a[chosen])


class ModelNet(_Clouds):
    """The clouds of one ``split`` ('train' or 'test') of a ModelNet directory (see the module
    docstring for the two layouts): ``num_points`` points each, normalised into the unit sphere.
    OFF meshes are sampled by area (generator seeded by ``seed``); resampled text files give their
    first ``num_points`` rows, with normals when ``normals`` (C = 6). Classes are the sorted
    subdirectory names."""

    def __init__(self, root, split: str = "train", num_points: int = 1024, normals: bool = False, seed: int = 0,
                 transforms=None):
        root = pathlib.Path(root)
        if split not in ("train", "test"):
            raise ValueError(f"ModelNet: split must be 'train' or 'test', got {split!r}")
        if not root.is_dir():
            raise FileNotFoundError(f"ModelNet: {root} is not a directory")
        self.classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
        if not self.classes:
            raise ValueError(f"ModelNet: {root} holds no class directories")
        rng = np.random.default_rng(seed)
        listing = root / f"modelnet40_{split}.txt"
        if not listing.exists():
            listing = next(iter(sorted(root.glob(f"*_{split}.txt"))), listing)
        files = self._text_files(root, listing) if listing.exists() else self._off_files(root, split)
        if not files:
            raise ValueError(f"ModelNet: no {split} samples found under {root}")
        clouds, labels = [], []
        for path, label in files:
            if path.suffix == ".off":
                cloud = sample_mesh(*read_off(path), num_points, rng)
            else:
                cloud = np.loadtxt(path, delimiter=",", ndmin=2)
                if len(cloud) < num_points:
                    raise ValueError(f"ModelNet: {path} has {len(cloud)} points, fewer than num_points={num_points}")
                cloud = _check_cloud(cloud[:num_points, :6 if normals else 3], "ModelNet")
            clouds.append(normalize_cloud(cloud))
            labels.append(label)
        self.points = np.stack(clouds).astype(np.float32)
        self.labels = np.array(labels, dtype=np.int64)
        self._set_transforms(transforms, seed)

    def _off_files(self, root: pathlib.Path, split: str) -> list:
        return [(path, label) for label, name in enumerate(self.classes)
                for path in sorted((root / name / split).glob("*.off"))]

    def _text_files(self, root: pathlib.Path, listing: pathlib.Path) -> list:
        files = []
        for line in listing.read_text().split():
            name = line.rsplit("_", 1)[0]                               # 'night_stand_0001' -> 'night_stand'
            if name not in self.classes:
                raise ValueError(f"ModelNet: {listing.name} names {line!r}, whose class {name!r} has no directory")
            files.append((root / name / f"{line}.txt", self.classes.index(name)))
        return files
