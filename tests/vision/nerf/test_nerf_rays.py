"""Camera rays and poses: origins at the camera centre, directions that project back onto the
pixel grid (corners or centres), a PyTorch re-implementation of the original code, and errors."""

import numpy as np
import pytest
import torch

from lamina.errors import ShapeError
from lamina.vision.nerf import get_rays, look_at, spherical_pose


def _project(points_world, c2w, focal, height, width):
    """Pixel coordinates (u, v) of world points seen by the camera c2w (OpenGL axes)."""
    rotation, centre = c2w[:3, :3], c2w[:3, 3]
    p = (points_world - centre) @ rotation           # world -> camera: R^T (p - o)
    depth = -p[..., 2]
    return focal * p[..., 0] / depth + 0.5 * width, -focal * p[..., 1] / depth + 0.5 * height, depth


@pytest.mark.parametrize("pixel_centers, shift", [(False, 0.0), (True, 0.5)])
def test_rays_start_at_the_camera_and_pass_through_the_pixels(pixel_centers, shift):
    c2w = spherical_pose(30.0, 20.0, 4.0)
    height, width, focal = 5, 7, 6.5
    rays_o, rays_d = get_rays(height, width, focal, c2w.astype(np.float64), pixel_centers=pixel_centers)
    assert rays_o.shape == rays_d.shape == (height, width, 3) and rays_d.dtype == np.float64
    np.testing.assert_allclose(rays_o, np.broadcast_to(c2w[:3, 3], rays_o.shape))
    u, v, depth = _project(rays_o + 2.5 * rays_d, c2w, focal, height, width)
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    np.testing.assert_allclose(u, columns + shift, atol=1e-9)
    np.testing.assert_allclose(v, rows + shift, atol=1e-9)
    np.testing.assert_allclose(depth, 2.5, atol=1e-9)          # not normalised: the camera-z component is -1


def test_rays_match_a_torch_version_of_the_original_code():
    c2w = spherical_pose(-70.0, 35.0, 3.0)[:3].astype(np.float32)
    height, width, focal = 6, 4, 3.0
    i, j = torch.meshgrid(torch.arange(width, dtype=torch.float32), torch.arange(height, dtype=torch.float32),
                          indexing="xy")
    dirs = torch.stack([(i - width * 0.5) / focal, -(j - height * 0.5) / focal, -torch.ones_like(i)], -1)
    pose = torch.tensor(c2w)
    expected_d = torch.sum(dirs[..., None, :] * pose[:3, :3], -1)
    expected_o = pose[:3, -1].expand(expected_d.shape)
    rays_o, rays_d = get_rays(height, width, focal, c2w)
    assert rays_d.dtype == np.float32
    np.testing.assert_allclose(rays_o, expected_o.numpy(), atol=1e-6)
    np.testing.assert_allclose(rays_d, expected_d.numpy(), atol=1e-6)


def test_look_at_gives_an_orthonormal_pose_whose_middle_ray_hits_the_target():
    eye, target = np.array([2.0, -1.0, 1.5]), np.array([0.3, 0.2, -0.1])
    c2w = look_at(eye, target)
    rotation = c2w[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    _, rays_d = get_rays(4, 4, 3.0, c2w)
    middle = rays_d[2, 2] / np.linalg.norm(rays_d[2, 2])
    np.testing.assert_allclose(middle, (target - eye) / np.linalg.norm(target - eye), atol=1e-7)
    assert c2w[:3, 1] @ np.array([0.0, 0.0, 1.0]) > 0        # the camera's up leans to the world's up


def test_spherical_poses_sit_on_the_sphere_and_look_at_the_origin():
    for azimuth, elevation in [(0.0, 0.0), (120.0, 45.0), (250.0, -30.0)]:
        c2w = spherical_pose(azimuth, elevation, 2.5)
        assert np.linalg.norm(c2w[:3, 3]) == pytest.approx(2.5)
        np.testing.assert_allclose(-c2w[:3, 2], -c2w[:3, 3] / 2.5, atol=1e-12)


@pytest.mark.parametrize("c2w", [np.eye(3), np.eye(4)[:2], np.zeros((4, 3)), np.zeros((2, 3, 4))])
def test_bad_poses_are_refused_with_their_shape(c2w):
    with pytest.raises(ShapeError, match=r"get_rays: .*c2w of shape \(3, 4\) or \(4, 4\), got"):
        get_rays(4, 4, 2.0, c2w)


def test_bad_camera_parameters_are_refused():
    with pytest.raises(ValueError, match="get_rays: focal must be a positive"):
        get_rays(4, 4, 0.0, np.eye(4))
    with pytest.raises(ValueError, match="get_rays: height must be a positive int"):
        get_rays(0, 4, 1.0, np.eye(4))
    with pytest.raises(ValueError, match="look_at: up x"):
        look_at([0.0, 0.0, 2.0], up=[0.0, 0.0, 1.0])
