"""CLIP's ResNet image tower (OpenAI's ModifiedResNet, AttentionPool2d) and ResNetCLIP: outputs
and every gradient against a PyTorch reference written with OpenAI's names (weights moved by
load_openai_clip_state_dict), the loader both ways, parameter counts, saving and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_clip_resnet_reference import CLIP as TorchCLIP
from torch_clip_resnet_reference import AttentionPool2d as TorchAttentionPool2d
from torch_clip_resnet_reference import randomize

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import models, saving
from lamina.models.clip_openai import openai_clip_table
from lamina.nn import init

TEXT = {"vocab_size": 20, "hidden_size": 8, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 7}
VISION = {"layers": (1, 2, 1, 1), "width": 4, "heads": 2, "image_size": 64, "num_channels": 2}
PROJECTION = 6
OPENAI_TINY = {"embed_dim": PROJECTION, "image_resolution": 64, "vision_layers": (1, 2, 1, 1), "vision_width": 4,
               "vision_heads": 2, "context_length": 7, "vocab_size": 20, "transformer_width": 8,
               "transformer_heads": 2, "transformer_layers": 2, "channels": 2}


def _pair(seed: int = 0):
    reference = TorchCLIP(**OPENAI_TINY, seed=seed).double()
    model = models.ResNetCLIP(TEXT, VISION, PROJECTION)
    models.load_openai_clip_state_dict(model, reference.state_dict())
    return model, reference


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.tensor(images.transpose(0, 3, 1, 2))


def _ids(n: int = 3, seed: int = 0) -> np.ndarray:
    """Ids whose highest id ends each text, zeros after it (OpenAI's padding)."""
    rng = np.random.default_rng(seed)
    eos = TEXT["vocab_size"] - 1
    ids = rng.integers(1, eos, size=(n, 6))
    for row, length in enumerate((6, 4, 3)[:n]):
        ids[row, length - 1], ids[row, length:] = eos, 0
    return ids


def _close_gradient(ours, theirs, rtol: float, key: str) -> None:
    """The key projection's bias shifts every score of a query alike, which the softmax
    ignores: its gradient is 0 up to rounding on both sides."""
    if key.endswith("k_proj.bias"):
        assert np.abs(ours).max() < 1e-12 and np.abs(theirs).max() < 1e-12, key
    else:
        assert_close(ours, theirs, rtol, key)


def _compare_parameter_gradients(model, reference, table, rtol: float) -> None:
    grads = {key: value.grad.numpy() for key, value in reference.named_parameters()}
    params = dict(model.named_parameters())
    assert set(params) <= set(table)
    for ours_key, param in params.items():
        weight = table[ours_key]
        _close_gradient(param.grad, weight.convert(*(grads[k] for k in weight.keys)), rtol, ours_key)


def test_attention_pool_equals_openai_with_every_gradient(f64):
    torch.manual_seed(0)
    reference = TorchAttentionPool2d(3, 8, 2, 5).double()
    randomize(reference, torch.Generator().manual_seed(1))
    pool = models.AttentionPool2d(3, 8, 2, 5)
    pool.build((None, 3, 3, 8))
    state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    pool.load_state_dict({key: value.T if key.endswith("proj.weight") else value for key, value in state.items()})
    x = randn(4, 3, 3, 8, seed=2)
    ours_x = lamina.tensor(x, requires_grad=True)
    theirs_x = _nchw(x).requires_grad_(True)
    out, expected = pool(ours_x), reference(theirs_x)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10, "attention pool")
    upstream = randn(4, 5, seed=3)
    F.sum(F.mul(out, lamina.tensor(upstream))).backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(ours_x.grad, theirs_x.grad.numpy().transpose(0, 2, 3, 1), 1e-9, "gradient of the maps")
    for key, param in pool.named_parameters():
        theirs = dict(reference.named_parameters())[key].grad.numpy()
        _close_gradient(param.grad, theirs.T if key.endswith("proj.weight") else theirs, 1e-9, key)


def test_attention_pool_gradients_by_finite_differences(f64):
    lamina.manual_seed(0)
    pool = models.AttentionPool2d(2, 6, 3, 4)
    assert check_gradients(pool, randn(2, 2, 2, 6, seed=4))


@pytest.mark.parametrize("training", [False, True])
def test_resnet_tower_equals_openai_with_every_gradient(f64, training):
    model, reference = _pair()
    model.train(training)
    reference.train(training)
    images = randn(3, 64, 64, 2, seed=5)
    pixels = lamina.tensor(images, requires_grad=True)
    theirs_pixels = _nchw(images).requires_grad_(True)
    out, expected = model.get_image_features(pixels), reference.encode_image(theirs_pixels)
    assert out.shape == (3, PROJECTION)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-9, "image features")
    upstream = randn(3, PROJECTION, seed=6)
    F.sum(F.mul(out, lamina.tensor(upstream))).backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(pixels.grad, theirs_pixels.grad.numpy().transpose(0, 2, 3, 1), 1e-8, "gradient of the images")
    visual = {key: value for key, value in openai_clip_table(model).items() if key.startswith("visual.")}
    grads = {key: value for key, value in model.named_parameters() if key.startswith("visual.")}
    assert len(grads) == len(list(reference.visual.parameters()))
    for key, param in grads.items():
        weight = visual[key]
        theirs = dict(reference.named_parameters())[weight.keys[0]].grad.numpy()
        _close_gradient(param.grad, weight.convert(theirs), 1e-8, key)


def test_logits_and_every_gradient_of_the_whole_model_equal_openai(f64):
    model, reference = _pair(1)
    images, ids = randn(3, 64, 64, 2, seed=7), _ids()
    out = model(images, ids)
    logits_per_image, logits_per_text = reference(_nchw(images), torch.tensor(ids))
    assert_close(model.get_text_features(ids).numpy(), reference.encode_text(torch.tensor(ids)).detach().numpy(),
                 1e-10, "text features")
    assert_close(out.logits_per_image.numpy(), logits_per_image.detach().numpy(), 1e-9, "logits_per_image")
    assert_close(out.logits_per_text.numpy(), logits_per_text.detach().numpy(), 1e-9, "logits_per_text")
    upstream = randn(3, 3, seed=8)
    F.sum(F.mul(out.logits_per_image, lamina.tensor(upstream))).backward()
    (logits_per_image * torch.tensor(upstream)).sum().backward()
    table = openai_clip_table(model)
    assert len(dict(model.named_parameters())) == len(list(reference.parameters()))
    _compare_parameter_gradients(model, reference, table, 1e-8)


def _to_openai(model) -> dict[str, np.ndarray]:
    """lamina's weights under OpenAI's names: the inverse of each table entry."""
    state = model.state_dict()
    out = {}
    for ours, weight in openai_clip_table(model).items():
        (key,) = weight.keys
        array = np.asarray(state[ours])
        if array.ndim == 4:
            array = array.transpose(0, 3, 1, 2)
        elif weight.convert(np.eye(2, 3)).shape == (3, 2):       # a transposed Linear weight
            array = array.T
        out[key] = array
    return out


def test_loader_round_trip_through_openai_names(f64):
    lamina.manual_seed(3)
    model = models.ResNetCLIP(TEXT, VISION, PROJECTION)
    model.build()
    for key, param in model.named_parameters():       # no zero scales: every weight matters
        param.data = param.data + 0.1 * randn(*param.shape, seed=len(key))
    model.eval()
    reference = TorchCLIP(**OPENAI_TINY, seed=9).double().eval()
    state = {key: torch.tensor(value) for key, value in _to_openai(model).items()}
    reference.load_state_dict({**reference.state_dict(), **state})
    images, ids = randn(2, 64, 64, 2, seed=10), _ids(2, seed=1)
    expected = reference(_nchw(images), torch.tensor(ids))[0].detach().numpy()
    assert_close(model(images, ids).logits_per_image.numpy(), expected, 1e-9, "logits with OpenAI's names")
    again = models.ResNetCLIP(TEXT, VISION, PROJECTION)
    models.load_openai_clip_state_dict(again, {**reference.state_dict(), "input_resolution": 64})
    for key, value in model.state_dict().items():
        assert np.array_equal(np.asarray(again.state_dict()[key]), np.asarray(value)), key


def test_parameter_counts():
    expected = {"rn50": 102_007_137, "rn101": 119_688_033, "rn50x4": 178_300_601}
    with init.meta():            # shape-only weights: the full models cost no memory
        for config, count in expected.items():
            model = models.clip_resnet(config)
            model.build()
            assert model.num_parameters() == count, config
    assert model.vision_config["image_size"] == 288 and model.visual.attnpool.positional_embedding.shape == (82, 2560)
    tiny = models.ResNetCLIP(TEXT, VISION, PROJECTION)
    tiny.build()
    assert tiny.num_parameters() == sum(p.numel() for p in TorchCLIP(**OPENAI_TINY).parameters())
    assert float(tiny.visual.layer1[0].bn3.weight.numpy().max()) == 0.0      # each block starts as its shortcut


def test_saved_model_and_registry(tmp_path):
    model = models.clip_resnet("tiny")
    images, ids = np.random.default_rng(0).random((2, 64, 64, 3)), np.array([[1, 5, 299], [2, 299, 0]])
    model.eval()
    expected = model(images, ids).logits_per_image.numpy()
    saving.save(model, tmp_path / "clip.lamina")
    loaded = saving.load(tmp_path / "clip.lamina")
    assert isinstance(loaded, models.ResNetCLIP) and loaded.get_config() == model.get_config()
    loaded.eval()
    assert np.array_equal(loaded(images, ids).logits_per_image.numpy(), expected)
    assert models.get_model("clip_resnet", config="tiny").get_config() == model.get_config()
    assert "ModifiedResNet" in repr(model)


def test_errors():
    model = models.clip_resnet("tiny")
    with pytest.raises(lamina.ShapeError, match=r"NHWC images \(batch, 64, 64, 3\), got shape \(1, 3, 64, 64\)"):
        model.get_image_features(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        models.ModifiedResNet(image_size=100)
    with pytest.raises(ValueError, match="4 stages"):
        models.ModifiedResNet(layers=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown vision_config keys \\['patch_size'\\]"):
        models.ResNetCLIP(vision_config={"patch_size": 4})
    with pytest.raises(ValueError, match="config must be one of"):
        models.clip_resnet("rn9000")
    with pytest.raises(ValueError, match="not divisible"):
        models.AttentionPool2d(2, 10, 3)
    with pytest.raises(lamina.ShapeError, match=r"\(batch, 2, 2, 8\)"):
        models.AttentionPool2d(2, 8, 2)(np.zeros((1, 3, 3, 8)))
    with pytest.raises(TypeError, match="expected a CLIP or ResNetCLIP"):
        models.load_openai_clip_state_dict(models.gpt2("small", n_layer=1, n_embd=8, n_head=2), {})
    state = {k: v for k, v in TorchCLIP(**OPENAI_TINY).state_dict().items() if k != "ln_final.bias"}
    with pytest.raises(KeyError, match="missing keys \\['ln_final.bias'\\]"):
        models.load_openai_clip_state_dict(models.ResNetCLIP(TEXT, VISION, PROJECTION), state)
    with pytest.raises(lamina.ShapeError):
        models.load_openai_clip_state_dict(models.ResNetCLIP(TEXT, {**VISION, "width": 8}, PROJECTION),
                                           TorchCLIP(**OPENAI_TINY).state_dict())
