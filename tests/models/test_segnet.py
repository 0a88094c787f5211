"""SegNet: the pooling-indices decoder against a float64 PyTorch rewrite (values, input and
parameter gradients), gradients, the VGG16 model's size, save/load, the README example and
learning to segment discs and squares."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from segmentation_shapes import all_background_miou, shapes_dataset, train_and_score
from zoo_checks import check_config_and_save_load

import lamina
from helpers import assert_close, check_gradients, run_readme_section
from lamina import models
from lamina.nn import init


def _float64(model, shape, seed=0):
    model.build(shape)
    model.to(np.float64)
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        shift = 1.0 if name.endswith("bn.weight") else 0.0
        param.data = rng.standard_normal(param.shape) * 0.5 + shift
    return model


def torch_segnet(x, params, stages, eps=1e-5):
    """SegNet on an NCHW batch in training mode: per encoder stage conv-BN-ReLU then
    MaxPool2d(2, return_indices=True); per decoder stage MaxUnpool2d at the stage's indices and
    pre-pooling size, then conv-BN-ReLU, the last conv bare. Weights as (K, f, f, C) arrays."""
    def conv(h, key):
        return TF.conv2d(h, params[f"{key}.weight"].permute(0, 3, 1, 2), params[f"{key}.bias"], padding=1)

    def conv_bn_relu(h, key):
        h = TF.batch_norm(conv(h, f"{key}.conv"), None, None, params[f"{key}.bn.weight"], params[f"{key}.bn.bias"],
                          training=True, eps=eps)
        return TF.relu(h)

    switches = []
    for k, stage in enumerate(stages):
        for j in range(len(stage)):
            x = conv_bn_relu(x, f"encoder.{k}.{j}")
        size = x.shape[2:]
        x, indices = TF.max_pool2d(x, 2, return_indices=True)
        switches.append((indices, size))
    for k, stage in enumerate(stages[::-1]):
        indices, size = switches[-1 - k]
        x = TF.max_unpool2d(x, indices, 2, output_size=size)
        for j in range(len(stage)):
            key = f"decoder.{k}.{j}"
            last = k == len(stages) - 1 and j == len(stage) - 1
            x = conv(x, key) if last else conv_bn_relu(x, key)
    return x


def test_segnet_matches_a_torch_rewrite_with_maxunpool():
    stages = ((3,), (4, 3))
    model = _float64(models.SegNet(3, stages), (None, 7, 10, 2))
    x = np.random.default_rng(1).standard_normal((2, 7, 10, 2))
    up = np.random.default_rng(2).standard_normal((2, 7, 10, 3))

    ours = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = model.train()(ours)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()

    params = {k: torch.tensor(np.asarray(v), requires_grad=True)
              for k, v in model.state_dict().items() if "running" not in k}
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    expected = torch_segnet(theirs, params, stages)
    (expected * torch.tensor(up.transpose(0, 3, 1, 2))).sum().backward()

    assert out.shape == (2, 7, 10, 3)
    assert_close(out.numpy(), expected.detach().numpy().transpose(0, 2, 3, 1), 1e-10, "segnet")
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "input gradient")
    named = dict(model.named_parameters())
    assert sorted(named) == sorted(params)
    for key, param in named.items():
        if key.endswith(".conv.bias"):      # a bias before BN: its gradient is zero up to rounding
            assert np.abs(param.grad).max() < 1e-9 and params[key].grad.abs().max() < 1e-9, key
        else:
            assert_close(param.grad, params[key].grad.numpy(), 1e-10, key)


def test_segnet_gradients_float64():
    model = _float64(models.SegNet(2, ((2,), (3,))), (None, 4, 6, 1), seed=3).eval()
    x = np.random.default_rng(4).standard_normal((1, 4, 6, 1))
    assert check_gradients(lambda a: model(a), x)


def test_segnet_vgg16_size():
    """The encoder's convolutions are VGG16's: torchvision's published 138,357,544 parameters
    less its three fully connected layers. The whole model is checked against the sum of its
    parts: the mirrored decoder, every BN's scale and shift, and the 3x3 classifier."""
    model = models.segnet_vgg16(11)
    assert model.input_shape == (None, 360, 480, 3) and not model.built
    with init.meta():
        model.build(model.input_shape)
    vgg16_convs = 138_357_544 - (25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000)
    encoder_convs = sum(p.size for name, p in model.named_parameters()
                        if name.startswith("encoder") and ".conv." in name)
    assert encoder_convs == vgg16_convs == 14_714_688

    widths = [3] + [w for stage in models.SEGNET_VGG16_STAGES for w in stage]
    encoder = sum(9 * a * b + b + 2 * b for a, b in zip(widths, widths[1:]))
    mirrored = widths[::-1][:-1] + [11]          # the decoder's outputs, 512 ... 64, then the classes
    decoder = sum(9 * a * b + b + 2 * b for a, b in zip(mirrored[:-1], mirrored[1:-1]))
    classifier = 9 * 64 * 11 + 11
    assert model.num_parameters() == encoder + decoder + classifier == 29_449_355
    assert model.compute_output_shape(model.input_shape) == (None, 360, 480, 11)


def test_segnet_rejects_bad_settings():
    with pytest.raises(ValueError, match="SegNet: stages"):
        models.SegNet(2, ())
    with pytest.raises(lamina.ShapeError):
        models.SegNet(2, ((2,),))(lamina.tensor(np.zeros((4, 4), dtype=np.float32)))


def test_segnet_config_and_save_load_round_trip(tmp_path):
    model = models.segnet_small(3, (8, 8, 2), width=4)
    model.build(model.input_shape)
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 2)).astype(np.float32)
    check_config_and_save_load(model, x, tmp_path / "segnet.safetensors")
    assert type(lamina.load(tmp_path / "segnet.safetensors")) is models.SegNet


def test_readme_example_runs():
    printed, names = run_readme_section("SegNet and ENet")
    assert printed.split() == ["(2,", "16,", "16,", "3)", "(2,", "16,", "16,", "3)"]
    assert type(names["segnet"]) is models.SegNet and type(names["enet"]) is models.ENet


def test_segnet_learns_discs_and_squares():
    x, y = shapes_dataset(256, seed=1)
    x_test, y_test = shapes_dataset(96, seed=2)
    model = models.segnet_small(3, (16, 16, 1), width=8)

    def loss(scores, labels):
        return lamina.functional.categorical_cross_entropy(scores, labels, from_logits=True)

    miou = train_and_score(model, loss, (x, y), (x_test, y_test), epochs=12, lr=5e-3)
    assert miou > all_background_miou(y_test) + 0.25, miou
