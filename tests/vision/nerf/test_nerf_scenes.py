"""The ray-traced sphere scene (exact hits, the background where rays miss, cameras looking at
the origin) and the loader of the original ``transforms_*.json`` format on a tiny directory."""

import json

import numpy as np
import pytest
from PIL import Image

from lamina.errors import ShapeError
from lamina.vision.nerf import SphereScene, get_rays, load_blender_scene, spherical_pose, synthetic_nerf_scene


def test_tracing_finds_the_nearest_sphere_at_its_exact_distance():
    scene = SphereScene(centers=((0.0, 0.0, 0.0), (0.0, 0.0, -3.0)), radii=(0.5, 1.0),
                        colors=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), background=(0.2, 0.3, 0.4), ambient=1.0)
    origins = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, -5.0], [3.0, 0.0, 5.0], [0.0, 0.0, 0.0]])
    directions = np.array([[0.0, 0.0, -2.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    color, depth = scene.trace(origins, directions)
    np.testing.assert_allclose(depth, [4.5 / 2.0, 1.0, np.inf, 0.5])      # t in units of |d|; inside: the far wall
    np.testing.assert_allclose(color, [[1, 0, 0], [0, 1, 0], [0.2, 0.3, 0.4], [1, 0, 0]])


def test_synthetic_views_show_the_spheres_against_the_background():
    views = synthetic_nerf_scene(n_views=3, size=12)
    assert views.images.shape == (3, 12, 12, 3) and views.poses.shape == (3, 4, 4)
    assert views.images.dtype == np.float32 and views.height == views.width == 12
    assert views.near == pytest.approx(1.5) and views.far == pytest.approx(4.5)
    for image, pose in zip(views.images, views.poses):
        np.testing.assert_allclose(np.linalg.norm(pose[:3, 3]), 3.0, rtol=1e-6)
        _, depth = SphereScene().trace(*get_rays(12, 12, views.focal, pose.astype(np.float64), pixel_centers=True))
        hit = np.isfinite(depth)
        assert 0.1 < hit.mean() < 0.9
        np.testing.assert_array_equal(image[~hit], 1.0)
        assert (image[hit].min(axis=-1) < 0.9).all()
        assert (depth[hit] > views.near).all() and (depth[hit] < views.far).all()


def _write_blender_dir(path, poses, size=4, angle=0.9):
    frames = []
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (len(poses), size, size, 4), dtype=np.uint8)
    for k, pose in enumerate(poses):
        Image.fromarray(rgba[k], "RGBA").save(path / f"r_{k}.png")
        frames.append({"file_path": f"./r_{k}", "transform_matrix": pose.tolist()})
    (path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return rgba / 255.0


@pytest.mark.parametrize("white_background", [True, False])
def test_blender_scenes_load_with_their_poses_focal_and_composited_images(tmp_path, white_background):
    poses = [spherical_pose(a, 30.0, 4.0) for a in (0.0, 90.0)]
    rgba = _write_blender_dir(tmp_path, poses)
    views = load_blender_scene(tmp_path, "train", white_background=white_background, dtype=np.float64)
    np.testing.assert_allclose(views.poses, poses)
    assert views.focal == pytest.approx(2.0 / np.tan(0.45))
    alpha = rgba[..., 3:]
    expected = rgba[..., :3] * alpha + ((1.0 - alpha) if white_background else 0.0)
    np.testing.assert_allclose(views.images, expected, atol=1e-12)
    assert (views.near, views.far) == (2.0, 6.0)


def test_blender_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_blender_scene: no transforms_val.json in"):
        load_blender_scene(tmp_path, "val")
    _write_blender_dir(tmp_path, [np.eye(4)[:3]])
    bad = json.loads((tmp_path / "transforms_train.json").read_text())
    bad["frames"][0]["transform_matrix"] = np.eye(3).tolist()
    (tmp_path / "transforms_train.json").write_text(json.dumps(bad))
    with pytest.raises(ShapeError, match=r"load_blender_scene \(frame 0\): expected a camera-to-world matrix"):
        load_blender_scene(tmp_path)
