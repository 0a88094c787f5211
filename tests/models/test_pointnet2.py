"""PointNet++: single- and multi-scale classifiers (with extra per-point features) against a torch
re-implementation on the same weights and the same sampling and grouping indices (float64,
batch norm in training and in evaluation), the centres being the farthest-point samples, the
reference configurations' sizes, errors naming the model, and learning the synthetic shapes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_point_clouds import TorchPointModels, fit_clouds, perturb

import lamina
from lamina import functional as F
from lamina.data import SyntheticShapes
from lamina.errors import ShapeError
from lamina.models import PointNet2, SetAbstraction, pointnet2_msg, pointnet2_ssg
from tabular_checks import compare_module

LEVELS = [(6, (0.6, 1.2), (3, 5), ((4, 5), (6,))), (3, (1.5,), (4,), ((5,),)), (None, (), (), ((6, 7),))]


def torch_gather(x, idx):
    b, c = x.shape[0], x.shape[-1]
    flat = torch.from_numpy(idx.reshape(b, -1, 1)).expand(-1, -1, c)
    return torch.gather(x, 1, flat).reshape(idx.shape + (c,))


def torch_pointnet2(model, p, t, training, head: int):
    reference = TorchPointModels(model, p, training)
    xyz, features = t[..., :3].detach().numpy(), t[..., 3:]
    for i, (npoint, radii, nsamples, mlps) in enumerate(LEVELS):
        prefix = f"levels.{i}.mlps"
        if npoint is None:
            grouped = torch.cat([torch.from_numpy(xyz), features], dim=-1)
            features = reference.mlp(f"{prefix}.0", grouped, len(mlps[0])).max(dim=1)[0]
            break
        centres = xyz[np.arange(len(xyz))[:, None], F.farthest_point_sample(xyz, npoint)]
        scales = []
        for j, (radius, nsample, widths) in enumerate(zip(radii, nsamples, mlps)):
            idx = F.ball_query(radius, nsample, xyz, centres)
            offsets = torch.from_numpy(xyz[np.arange(len(xyz))[:, None, None], idx] - centres[:, :, None, :])
            grouped = torch.cat([offsets, torch_gather(features, idx)], dim=-1)
            scales.append(reference.mlp(f"{prefix}.{j}", grouped, len(widths)).max(dim=2)[0])
        xyz, features = centres, torch.cat(scales, dim=-1)
    for i in range(head):
        features = reference.mlp(f"head.{i}", features, 1)
    return reference.dense("classifier", features)


@pytest.mark.parametrize("training", [True, False])
def test_multi_scale_classifier_with_normals_matches_torch(f64, training):
    model = PointNet2(3, LEVELS, channels=5, head_widths=(6, 4), dropout=0.0)
    perturb(model, 0)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random((2, 12, 3)), rng.standard_normal((2, 12, 2))], axis=-1)
    if not training:
        model(x)
        model.eval()
    compare_module(model, model, lambda p, t: torch_pointnet2(model, p, t, training, 2), [x])


def test_set_abstraction_centres_are_farthest_point_samples(f64):
    level = SetAbstraction(0, 4, (0.5,), (3,), ((5,),))
    xyz = np.random.default_rng(2).random((2, 10, 3))
    centres, features = level(xyz)
    expected = xyz[np.arange(2)[:, None], F.farthest_point_sample(xyz, 4)]
    np.testing.assert_array_equal(centres, expected)
    assert features.shape == (2, 4, 5)


def test_reference_configurations():
    ssg, msg = pointnet2_ssg(40), pointnet2_msg(40, channels=6)
    assert [level.out_features for level in ssg.levels] == [128, 256, 1024]
    assert [level.out_features for level in msg.levels] == [320, 640, 1024]
    assert msg.levels[0].mlps[0].dense[0].weight.shape == (6, 32)        # 3 offsets + 3 normals
    assert ssg.levels[1].mlps[0].dense[0].weight.shape == (3 + 128, 128)


def test_errors_name_the_model():
    model = PointNet2(3, LEVELS)
    with pytest.raises(ShapeError, match=r"PointNet2.*\(2, 5, 3\).*at least npoint=6 points"):
        model(np.zeros((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"PointNet2.*\(2, 8, 4\).*points \(batch, points, 3\)"):
        model(np.zeros((2, 8, 4)))
    with pytest.raises(ValueError, match="PointNet2: the last level must group all points"):
        PointNet2(3, LEVELS[:2])


def test_learns_synthetic_shapes():
    x, y = SyntheticShapes(40, 128, seed=0).arrays()
    xt, yt = SyntheticShapes(20, 128, seed=1).arrays()
    model = PointNet2(5, [(32, (0.8,), (16,), ((32, 32),)), (None, (), (), ((64, 128),))], head_widths=(64,),
                      dropout=0.0)
    start = time.perf_counter()
    fit_clouds(model, x, y, epochs=12)
    seconds = time.perf_counter() - start
    with lamina.no_grad():
        accuracy = (model(xt).numpy().argmax(axis=1) == yt).mean()
    print(f"PointNet++: test accuracy {accuracy:.3f} after {seconds:.1f} s")
    assert accuracy > 0.8
