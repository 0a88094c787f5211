"""Register tokens (Darcet et al. 2024) in a ViT."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models
from lamina.errors import ShapeError


def test_register_tokens_lengthen_the_sequence_by_k_and_are_dropped_at_the_output():
    lamina.manual_seed(0)
    model = models.vit_with_registers(16, 4, 10, num_registers=3, d_model=16, depth=2, num_heads=2, mlp_dim=32,
                                      channels=1)
    model.build(model.input_shape)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    encoded = model.encode(images)
    assert encoded.shape == (2, 1 + 3 + 16, 16)
    features = model.forward_features(images)
    assert features.shape == (2, 1 + 16, 16)
    rows = np.r_[0, 4:20]
    assert_close(features.numpy(), model.norm(encoded.numpy()[:, rows]).numpy(), 1e-6)
    assert model(images).shape == (2, 10)
    assert model.registers.registers.shape == (1, 3, 16)
    # the registers take part: changing them changes the class token's output
    before = model(images).numpy()
    model.registers.registers.data[...] = np.random.default_rng(2).normal(size=(1, 3, 16))
    assert not np.allclose(model(images).numpy(), before, atol=1e-4)
    loss = model(images).sum()
    loss.backward()
    assert np.abs(model.registers.registers.grad).sum() > 0


def test_register_layer_inserts_after_the_prefix():
    layer = models.RegisterTokens(2, num_prefix_tokens=1)
    tokens = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    out = layer(tokens).numpy()
    assert out.shape == (2, 7, 4)
    assert_close(out[:, 0], tokens[:, 0], 0)
    assert_close(out[:, 3:], tokens[:, 1:], 0)
    assert_close(out[:, 1:3], np.broadcast_to(layer.registers.numpy(), (2, 2, 4)), 0)
    assert_close(models.drop_registers(out, 2).numpy(), tokens, 0)
    assert layer.compute_output_shape((None, 5, 4)) == (None, 7, 4)
    with pytest.raises(ShapeError, match="drop_registers"):
        models.drop_registers(tokens[:, :1], 2)


def test_save_and_load_keep_the_registers(tmp_path):
    model = models.vit_with_registers(16, 4, 10, num_registers=2, d_model=16, depth=1, num_heads=2, mlp_dim=32,
                                      channels=1)
    model.build(model.input_shape)
    images = np.random.default_rng(3).normal(size=(2, 16, 16, 1)).astype(np.float32)
    lamina.save(model, tmp_path / "registers.lam")
    loaded = lamina.load(tmp_path / "registers.lam")
    assert isinstance(loaded, models.ViTWithRegisters) and loaded.num_registers == 2
    assert_close(loaded(images).numpy(), model(images).numpy(), 0)
