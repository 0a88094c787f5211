"""U-Net and the Vision Transformer: shapes, errors, agreement with PyTorch references written
here, parameter counts, learning, and save/load."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import optim
from lamina.analysis import summary
from lamina.data import load_digits, train_val_test_split
from lamina.models.unet import UNet, unet
from lamina.models.vit import ClassTokenEmbedding, VisionTransformer, vit, vit_b_16
from lamina.nn import from_torch_state_dict
from lamina.optim.schedules import OneCycle
from lamina.train import Trainer

logits_cross_entropy = functools.partial(F.categorical_cross_entropy, from_logits=True)


def torch_weights(model) -> dict:
    return {k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()}


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)


# -- U-Net ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_unet_same_padding_keeps_the_input_size(upsampling, batch_norm):
    model = unet((16, 24, 3), 5, depth=3, base_filters=4, batch_norm=batch_norm, upsampling=upsampling)
    assert model.input_shape == (None, 16, 24, 3) and not model.built
    assert model.compute_output_shape((None, 16, 24, 3)) == (None, 16, 24, 5)
    out = model(lamina.tensor(np.random.default_rng(0).random((2, 16, 24, 3), dtype=np.float32)))
    assert out.shape == (2, 16, 24, 5)
    has_bn = any(name.endswith("bn1.weight") for name in model.state_dict())
    assert has_bn == batch_norm


def test_unet_paper_layout_shapes_and_parameters():
    """Depth 4, 64 base filters, unpadded convolutions: 572x572 -> 388x388 as in the paper."""
    model = unet((572, 572, 1), 2, padding="valid", batch_norm=False)
    assert model.compute_output_shape((None, 572, 572, 1)) == (None, 388, 388, 2)

    def conv(c_in, filters, k=3):
        return filters * (k * k * c_in + 1)

    widths = [64, 128, 256, 512, 1024]
    expected = conv(1, 64) + conv(64, 64) + conv(64, 2, k=1)
    for below, width in zip(widths[:-1], widths[1:]):
        expected += conv(below, width) + conv(width, width)  # contracting path and bottleneck
        expected += conv(width, below, k=2) + conv(2 * below, below) + conv(below, below)  # up-conv, decoder
    table = summary(model)
    assert table.total_params == expected
    assert not model.built


def test_unet_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match=r"unet: input_shape \(20, 16, 3\).*divisible by 2\^depth = 8"):
        unet((20, 16, 3), 2, depth=3)
    with pytest.raises(ValueError, match="padding='valid'"):
        unet((30, 30, 1), 2, depth=2, padding="valid")
    with pytest.raises(ValueError, match="upsampling must be one of"):
        unet((16, 16, 1), 2, upsampling="nearest")
    model = unet((16, 16, 1), 2, depth=2, base_filters=4)
    model.build(model.input_shape)
    with pytest.raises(lamina.ShapeError, match=r"UNet 'unet'.*\(1, 10, 10, 1\).*divisible by 2\^depth = 4"):
        model(np.zeros((1, 10, 10, 1), dtype=np.float32))


def torch_unet(model: UNet, x: torch.Tensor) -> torch.Tensor:
    """The U-Net of the paper written directly in torch (NCHW) with ``model``'s weights."""
    w = torch_weights(model)
    pad = 1 if model.padding == "same" else 0

    def conv(name, x, padding=0):
        return torch.conv2d(x, w[f"{name}.weight"].permute(0, 3, 1, 2), w.get(f"{name}.bias"), padding=padding)

    def double_conv(name, x):
        for k in (1, 2):
            x = conv(f"{name}.conv{k}", x, pad)
            if model.batch_norm:
                x = TF.batch_norm(x, None, None, w[f"{name}.bn{k}.weight"], w[f"{name}.bn{k}.bias"], training=True)
            x = torch.relu(x)
        return x

    skips = []
    for level in range(1, model.depth + 1):
        x = double_conv(f"enc{level}", x)
        skips.append(x)
        x = TF.max_pool2d(x, 2)
    x = double_conv("bottleneck", x)
    for level in range(model.depth, 0, -1):
        if model.upsampling == "transpose":
            x = TF.conv_transpose2d(x, w[f"up{level}.weight"].permute(0, 3, 1, 2), w[f"up{level}.bias"], stride=2)
        else:
            x = conv(f"up{level}.conv", TF.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        skip = skips[level - 1]
        top, left = (skip.shape[2] - x.shape[2]) // 2, (skip.shape[3] - x.shape[3]) // 2
        skip = skip[:, :, top:top + x.shape[2], left:left + x.shape[3]]
        x = double_conv(f"dec{level}", torch.cat([skip, x], dim=1))
    return conv("head", x)


@pytest.mark.parametrize("shape, padding, batch_norm, upsampling", [
    ((44, 60, 2), "valid", False, "transpose"),   # cropped skip connections; output (4, 20)
    ((8, 12, 2), "same", True, "bilinear"),
])
def test_unet_matches_a_torch_reference(shape, padding, batch_norm, upsampling):
    lamina.set_default_dtype(np.float64)
    model = unet(shape, 3, depth=2, base_filters=4, padding=padding, batch_norm=batch_norm, upsampling=upsampling)
    model.build(model.input_shape)
    rng = np.random.default_rng(1)
    for value in model.state_dict().values():  # also the BN scales and every bias, not only the weights
        value[...] = rng.normal(0.0, 0.5, value.shape)
    x = rng.standard_normal((2, *shape))
    xl = lamina.tensor(x, requires_grad=True)
    out = model(xl)
    xt = nchw(x)
    expected = torch_unet(model, xt)
    assert out.shape == (2, *expected.shape[2:], 3)
    assert_close(out.numpy(), expected.detach().numpy().transpose(0, 2, 3, 1), 1e-10, "U-Net output")
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    (expected * torch.tensor(upstream.transpose(0, 3, 1, 2))).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "U-Net input gradient")


def shapes_dataset(n: int, seed: int, size: int = 16):
    """Noisy images holding a filled square (label 1) and a disc (label 2) of the same
    brightness, apart; the rest is background (label 0). Only the shapes tell them apart."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    x = rng.normal(0.0, 0.3, (n, size, size, 1)).astype(np.float32)
    y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        while True:
            side = rng.integers(5, 8)
            top, left = rng.integers(0, size - side + 1, 2)
            square = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            near_square = (rows >= top - 1) & (rows <= top + side) & (cols >= left - 1) & (cols <= left + side)
            radius = rng.uniform(3.0, 4.0)
            cy, cx = rng.uniform(radius, size - radius, 2)
            disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
            if not (near_square & disc).any():
                break
        y[i][square], y[i][disc] = 1, 2
        x[i, ..., 0] += square | disc
    return x, y


def test_unet_learns_to_segment_squares_and_discs():
    x, y = shapes_dataset(480, seed=1)
    x_test, y_test = shapes_dataset(200, seed=2)
    model = unet((16, 16, 1), 3, depth=2, base_filters=8)
    model.build(model.input_shape)
    trainer = Trainer(model, logits_cross_entropy, optim.Adam(model.parameters(), lr=5e-3), verbose=0)
    history = trainer.fit((x, y), epochs=5, batch_size=32, seed=0)
    # measured after 5 epochs on two BLAS kernels: loss down to 0.13 of the first epoch's, pixel
    # accuracy 0.977, recall of the squares 0.94-0.96 and of the discs 0.89-0.90
    assert history["loss"][-1] < history["loss"][0] / 4
    predicted = trainer.predict(x_test).argmax(axis=-1)
    assert predicted.shape == y_test.shape
    assert (predicted == y_test).mean() > 0.9
    for label in (1, 2):  # background alone is ~80% of the pixels: each shape must be found too
        recall = (predicted[y_test == label] == label).mean()
        assert recall > 0.7, (label, recall)


# -- ViT -------------------------------------------------------------------------------------------
def test_vit_shapes_and_patch_embedding():
    model = vit((8, 12), 4, 5, d_model=6, depth=1, num_heads=2, mlp_dim=8, channels=2)
    assert model.input_shape == (None, 8, 12, 2)
    assert model.compute_output_shape((None, 8, 12, 2)) == (None, 5)
    x = np.random.default_rng(0).random((3, 8, 12, 2), dtype=np.float32)
    assert model(lamina.tensor(x)).shape == (3, 5)

    patches = model.flatten_patches(model.conv_proj(lamina.tensor(x))).numpy()
    weight, bias = model.conv_proj.weight.numpy(), model.conv_proj.bias.numpy()   # (d, 4, 4, channels), (d,)
    expected = np.stack([np.einsum("nhwc,dhwc->nd", x[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4], weight) + bias
                         for i in range(2) for j in range(3)], axis=1)    # patches row by row
    assert_close(patches, expected, 1e-5, "patch tokens")

    tokens = model.embedding(lamina.tensor(patches)).numpy()
    positions = model.embedding.pos_embedding.numpy()[0]
    assert tokens.shape == (3, 7, 6) and positions.shape == (7, 6)
    assert_close(tokens[:, 0], np.broadcast_to(model.embedding.class_token.numpy()[0, 0] + positions[0], (3, 6)),
                 1e-6, "class token")
    assert_close(tokens[:, 1:], patches + positions[1:], 1e-6, "patch tokens with positions")


def test_vit_rejects_images_not_cut_into_whole_patches():
    with pytest.raises(ValueError, match=r"vit: the image size \(10, 10\) must be a multiple of the patch size"):
        vit(10, 4, 3)
    model = vit(8, 4, 3, d_model=4, depth=1, num_heads=1, mlp_dim=4, channels=1)
    model.build(model.input_shape)
    with pytest.raises(lamina.ShapeError, match=r"multiples of the patch size \(4, 4\)"):
        model(np.zeros((1, 10, 8, 1), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"ClassTokenEmbedding 'embedding'.*\(batch, 4, 4\)"):
        model(np.zeros((1, 12, 8, 1), dtype=np.float32))   # 6 patches for a layer built for 4


def test_vit_matches_a_torch_reference():
    lamina.set_default_dtype(np.float64)
    d, heads, mlp, depth, classes = 8, 2, 16, 2, 5
    model = vit((8, 12), 4, classes, d_model=d, depth=depth, num_heads=heads, mlp_dim=mlp, channels=2)
    model.build(model.input_shape)
    rng = np.random.default_rng(2)
    state = model.state_dict()
    for key in ("embedding.class_token", "embedding.pos_embedding", "norm.weight", "norm.bias", "head.bias",
                "conv_proj.bias"):
        state[key][...] = rng.normal(0.0, 0.5, state[key].shape)

    torch.manual_seed(0)
    layers = [torch.nn.TransformerEncoderLayer(d, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                               norm_first=True, layer_norm_eps=1e-6).double() for _ in range(depth)]
    torch_state = {}
    for k, layer in enumerate(layers):
        for norm in (layer.norm1, layer.norm2):
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
            torch.nn.init.normal_(norm.bias, 0.0, 0.3)
        torch.nn.init.normal_(layer.self_attn.in_proj_bias, 0.0, 0.3)
        torch_state.update({f"{k}.{name}": value.detach().numpy() for name, value in layer.state_dict().items()})
    model.encoder.load_state_dict(from_torch_state_dict(torch_state))

    w = torch_weights(model)

    def reference(x):
        t = torch.conv2d(x, w["conv_proj.weight"].permute(0, 3, 1, 2), w["conv_proj.bias"], stride=4)
        t = t.flatten(2).transpose(1, 2)                                    # (N, P, d), patches row by row
        t = torch.cat([w["embedding.class_token"].expand(len(x), -1, -1), t], dim=1) + w["embedding.pos_embedding"]
        for layer in layers:
            t = layer(t)
        y = TF.layer_norm(t[:, 0], (d,), w["norm.weight"], w["norm.bias"], eps=1e-6)
        return y @ w["head.weight"] + w["head.bias"]

    x = rng.standard_normal((3, 8, 12, 2))
    xl = lamina.tensor(x, requires_grad=True)
    out = model(xl)
    xt = nchw(x)
    expected = reference(xt)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10, "ViT output")
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "ViT input gradient")


def test_vit_b_16_has_torchvisions_parameter_count():
    model = vit_b_16()
    assert model.input_shape == (None, 224, 224, 3)
    table = summary(model)  # shape-only weights: nothing allocated
    assert table.total_params == 86_567_656
    assert not model.built


def test_tiny_vit_learns_the_8x8_digits():
    x, y = load_digits(size=8)
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x.astype(np.float32) / 255.0, y, val=0.0,
                                                                   test=0.2, seed=0)
    model = vit(8, 2, 10, d_model=32, depth=2, num_heads=4, mlp_dim=64, channels=1)
    model.build(model.input_shape)
    epochs, batch_size = 8, 32
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    schedule = OneCycle(1e-2, epochs * -(-len(x_train) // batch_size), optimizer=optimizer)
    trainer = Trainer(model, logits_cross_entropy, optimizer, schedule=schedule, verbose=0)
    history = trainer.fit((x_train, y_train), epochs=epochs, batch_size=batch_size, seed=0)
    assert history["loss"][-1] < history["loss"][0] / 4
    assert trainer.evaluate((x_test, y_test))["accuracy"] > 0.85


# -- saving ------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    segmenter = unet((8, 8, 2), 3, depth=2, base_filters=4, upsampling="bilinear")
    classifier = vit(8, 4, 3, d_model=8, depth=2, num_heads=2, mlp_dim=8, channels=2)
    for model, kind in ((segmenter, UNet), (classifier, VisionTransformer)):
        model.build(model.input_shape)
        for value in model.state_dict().values():
            value[...] = rng.normal(0.0, 0.5, value.shape) if value.dtype.kind == "f" else value
        for value in (v for k, v in model.state_dict().items() if k.endswith("running_var")):
            value[...] = np.abs(value) + 0.5
        path = tmp_path / f"{model.name}.safetensors"
        lamina.save(model, path)
        loaded = lamina.load(path)
        assert type(loaded) is kind and loaded.get_config() == model.get_config()
        assert loaded.state_dict().keys() == model.state_dict().keys()
        x = rng.standard_normal((2, 8, 8, 2)).astype(np.float32)
        model.eval()
        with lamina.no_grad():
            np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert isinstance(classifier.embedding, ClassTokenEmbedding)
