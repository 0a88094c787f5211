"""SimpleBaseline: the head's outputs and gradients against a torch rewrite (float64, NCHW),
the ResNet model's parameter count, config round trip; the top-down estimator's crop and
decode back to image coordinates, the flip test with keypoint pairs; learning stick figures
beats the mean pose; the README example runs; errors."""


import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, run_readme_section
from lamina import nn
from lamina.functional import keypoint_mse_loss, l1_loss, soft_argmax_2d
from lamina.models import SimpleBaseline, SimpleBaselineHead, TopDownPoseEstimator, simple_baseline_resnet
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.vision import STICK_FLIP_PAIRS, encode_heatmaps, pck, stick_figures, transform_points


class TorchHead(torch.nn.Module):
    """mmpose's HeatmapHead in torch: (ConvTranspose2d no bias, BatchNorm2d, ReLU) x L, 1x1 conv."""

    def __init__(self, in_channels, keypoints, filters, kernels):
        super().__init__()
        layers, channels = [], in_channels
        for f, k in zip(filters, kernels):
            padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[k]
            layers += [torch.nn.ConvTranspose2d(channels, f, k, 2, padding, output_padding, bias=False),
                       torch.nn.BatchNorm2d(f), torch.nn.ReLU()]
            channels = f
        self.deconv_layers = torch.nn.Sequential(*layers)
        self.final_layer = torch.nn.Conv2d(channels, keypoints, 1)

    def forward(self, x):
        return self.final_layer(self.deconv_layers(x))


def _to_torch(name, value):
    if name.startswith("deconv_layers") and value.ndim == 4:
        return value.transpose(0, 3, 1, 2)  # (c_in, f, f, K) -> (c_in, K, f, f)
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value  # (K, f, f, c_in) -> (K, c_in, f, f)


@pytest.mark.parametrize("training", [True, False])
def test_head_matches_torch_rewrite(f64, training):
    rng = np.random.default_rng(0)
    head = SimpleBaselineHead(6, 3, deconv_filters=(5, 4), deconv_kernels=(4, 3))
    head.build((None, 3, 4, 6))
    state = {k: np.abs(rng.normal(size=v.shape)) + 0.5 if k.endswith("running_var") else rng.normal(size=v.shape)
             for k, v in head.state_dict().items()}
    head.load_state_dict(state)
    reference = TorchHead(6, 3, (5, 4), (4, 3)).double()
    reference.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(_to_torch(k, v))) for k, v in state.items()},
                              strict=False)
    head.train(training)
    reference.train(training)
    x = rng.normal(size=(2, 3, 4, 6))
    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    out, expected = head(ours), reference(theirs)
    assert tuple(out.shape) == (2, 12, 16, 3)
    assert_close(out.numpy(), expected.detach().numpy().transpose(0, 2, 3, 1), 1e-10, "heatmaps")
    upstream = rng.normal(size=out.shape)
    (out * lamina.tensor(upstream)).sum().backward()
    (expected * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "input gradient")
    torch_grads = dict(reference.named_parameters())
    for name, parameter in head.named_parameters():
        assert_close(_to_torch(name, parameter.grad), torch_grads[name].grad.numpy(), 1e-10, name)


def test_resnet_simple_baseline_parameter_count():
    model = simple_baseline_resnet(18, num_keypoints=17, input_shape=(128, 96, 3))
    model.build((None, 128, 96, 3))
    head = TorchHead(512, 17, (256, 256, 256), (4, 4, 4))
    trunk = 11_689_512 - (512 * 1000 + 1000)  # torchvision's ResNet-18 without its fc
    assert sum(p.size for p in model.parameters()) == trunk + sum(p.numel() for p in head.parameters())
    assert model.compute_output_shape((None, 128, 96, 3)) == (None, 32, 24, 17)  # a quarter of the input


def _tiny_model(keypoints=9, channels=16):
    def stage(filters, name):
        return [nn.Conv2D(filters, 3, stride=2, padding=1, use_bias=False, name=f"{name}_conv"),
                nn.BatchNorm(name=f"{name}_bn"), nn.ReLU(name=f"{name}_relu")]
    backbone = nn.Sequential(*stage(channels, "a"), *stage(2 * channels, "b"), *stage(2 * channels, "c"),
                             name="backbone")
    return SimpleBaseline(backbone, 2 * channels, keypoints, deconv_filters=(2 * channels, 2 * channels),
                          deconv_kernels=(4, 4))


def test_config_round_trip_keeps_the_outputs():
    model = _tiny_model(keypoints=3, channels=4)
    model.build((None, 16, 16, 3))
    model.eval()
    copy = layer_from_config(layer_to_config(model))
    copy.build((None, 16, 16, 3))
    copy.load_state_dict(model.state_dict())
    copy.eval()
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(copy(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert copy(x).shape == (2, 8, 8, 3)


def _blob_image(points, size=32):
    ys, xs = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size, 1))
    for x, y in points:
        image[..., 0] = np.maximum(image[..., 0], np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2.0))
    return image


def _sided_model(crops):
    """Keypoint 0 / 1: the image's blobs in the left / right half of the crop; 2: all of them. It
    sees a mirrored crop as a person with left and right exchanged, as a real pose model does."""
    crops = crops.numpy()
    width = crops.shape[2]
    left = np.where(np.arange(width) < width // 2, 1.0, 0.0)[None, None, :, None]
    return np.concatenate([crops * left, crops * (1 - left), crops], axis=-1)


def test_estimator_decodes_back_to_image_coordinates():
    points = np.array([[9.5, 14.0], [21.0, 11.5]])
    image = _blob_image(points)
    estimator = TopDownPoseEstimator(_sided_model, input_size=(32, 32), decoder="dark", padding=1.0)
    keypoints, scores = estimator.predict(image, [[0, 0, 32, 32]])
    assert np.abs(keypoints[0, :2] - points).max() < 0.05 and scores.shape == (1, 3)
    none, none_scores = TopDownPoseEstimator(_tiny_model(keypoints=4, channels=2), (32, 32)).predict(image, [])
    assert none.shape == (0, 4, 2) and none_scores.shape == (0, 4)
    zoomed, _ = TopDownPoseEstimator(_sided_model, (32, 32), "argmax", padding=1.0).predict(image, [[4, 6, 28, 22]])
    assert np.abs(zoomed[0, :2] - points).max() <= 0.5  # a quarter cell of the 24/32 zoom, plus interpolation


def test_flip_test_with_pairs_brings_the_maps_back():
    image = _blob_image([[9.0, 14.0], [21.0, 11.0]])
    plain = TopDownPoseEstimator(_sided_model, (32, 32), padding=1.0)
    flipped = TopDownPoseEstimator(_sided_model, (32, 32), padding=1.0, flip_test=True, flip_pairs=[(0, 1)],
                                   shift_heatmap=False)
    crops, _ = plain.crop(image, [[0, 0, 32, 32]])
    np.testing.assert_allclose(flipped.heatmaps(crops), plain.heatmaps(crops), atol=1e-12)
    np.testing.assert_allclose(flipped.predict(image, [[0, 0, 32, 32]])[0], plain.predict(image, [[0, 0, 32, 32]])[0])
    unpaired = TopDownPoseEstimator(_sided_model, (32, 32), padding=1.0, flip_test=True, shift_heatmap=False)
    assert np.abs(unpaired.heatmaps(crops) - plain.heatmaps(crops)).max() > 0.1


def _crops(estimator, data):
    crops, keypoints = [], []
    for image, box, points in zip(data["images"], data["boxes"], data["keypoints"]):
        crop, back = estimator.crop(image, box[None])
        forward = np.linalg.inv(np.vstack([back[0], [0.0, 0.0, 1.0]]))[:2]
        crops.append(crop[0])
        keypoints.append(transform_points(points, forward))
    return np.stack(crops).astype(np.float32), np.stack(keypoints)


def test_learns_stick_figures_well_above_the_mean_pose():
    lamina.manual_seed(0)
    model = _tiny_model()
    model.build((None, 32, 32, 3))
    estimator = TopDownPoseEstimator(model, input_size=(32, 32), decoder="dark", flip_pairs=STICK_FLIP_PAIRS)
    train, test = stick_figures(256, seed=1), stick_figures(48, seed=2)
    crops, keypoints = _crops(estimator, train)
    targets, weights = encode_heatmaps(keypoints, train["visible"], (32, 32), (16, 16), sigma=1.0)
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        batch = rng.choice(len(crops), 32, replace=False)
        loss = keypoint_mse_loss(model(crops[batch]), targets[batch].astype(np.float32), weights[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predicted = np.concatenate([estimator.predict(image, box[None])[0] for image, box in
                                zip(test["images"], test["boxes"])])
    boxes = test["boxes"]
    relative = (train["keypoints"] - train["boxes"][:, None, :2]) / (train["boxes"][:, None, 2:] -
                                                                     train["boxes"][:, None, :2])
    mean_pose = boxes[:, None, :2] + relative.mean(axis=0) * (boxes[:, None, 2:] - boxes[:, None, :2])
    ours = pck(predicted, test["keypoints"], test["visible"], 0.2, bboxes=boxes)
    baseline = pck(mean_pose, test["keypoints"], test["visible"], 0.2, bboxes=boxes)
    print(f"PCK@0.2 {ours:.3f} vs mean pose {baseline:.3f}")
    # measured after 60 steps, on both BLAS kernels: PCK@0.2 1.000 against the mean pose's 0.500
    assert ours > baseline + 0.25, (ours, baseline)


def test_integral_regression_with_soft_argmax_and_l1_learns():
    lamina.manual_seed(1)
    model = _tiny_model()
    model.build((None, 32, 32, 3))
    data = stick_figures(128, image_size=32, seed=3)
    cells = data["keypoints"] / 2.0  # heatmap cells at stride 2
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-3)
    rng, losses = np.random.default_rng(1), []
    for _ in range(45):
        batch = rng.choice(len(cells), 32, replace=False)
        loss = l1_loss(soft_argmax_2d(model(data["images"][batch])), cells[batch].astype(np.float32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    mean_cell = np.abs(cells - cells.mean(axis=(0, 1))).mean()  # L1 of always answering the mean keypoint
    print(f"integral L1 {np.mean(losses[-5:]):.2f} cells vs {mean_cell:.2f} for the mean keypoint")
    # measured after 45 steps, on both BLAS kernels: 1.05 cells against the mean keypoint's 2.75
    assert np.mean(losses[-5:]) < 0.6 * mean_cell, losses


def test_errors_are_clear():
    estimator = TopDownPoseEstimator(_sided_model, (32, 32))
    with pytest.raises(ValueError, match="positive width and height, got \\[5.0, 5.0, 5.0, 9.0\\]"):
        estimator.predict(np.zeros((32, 32, 1)), [[5, 5, 5, 9]])
    with pytest.raises(ValueError, match="flip pair \\(0, 5\\) is out of range for 3 keypoints"):
        TopDownPoseEstimator(_sided_model, (32, 32), flip_test=True, flip_pairs=[(0, 5)]).predict(
            _blob_image([[9.0, 9.0]]), [[0, 0, 32, 32]])
    with pytest.raises(ValueError, match="decoder must be one of"):
        TopDownPoseEstimator(_sided_model, decoder="center")
    head = SimpleBaselineHead(8, 2, (4,), (4,))
    with pytest.raises(Exception, match="expected NHWC features with 8 channels"):
        head.build((None, 4, 4, 5))
    with pytest.raises(ValueError, match="one kernel \\(4, 3 or 2\\)"):
        SimpleBaselineHead(8, 2, (4, 4), (4, 5))


def test_readme_example_runs():
    printed, names = run_readme_section("Top-down pose estimation: SimpleBaseline, HRNet")
    assert names["keypoints"].shape == (32, 9, 2)
    pck_line = next(line for line in printed.splitlines() if line.startswith("PCK@0.2"))
    assert float(pck_line.split()[1]) > 0.75
