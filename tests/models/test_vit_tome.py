"""Token merging in a ViT: apply_tome / remove_tome, token counts and MACs, accuracy on digits."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import models, optim
from lamina.data import load_digits


def tiny_vit(depth=3, seed=0):
    lamina.manual_seed(seed)
    model = models.vit(16, 4, 10, d_model=16, depth=depth, num_heads=2, mlp_dim=32, channels=1)
    model.build(model.input_shape)
    return model


def test_r_zero_changes_nothing_and_remove_tome_restores_the_model():
    model = tiny_vit()
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype(np.float32)
    plain = model(images).numpy()
    names = [name for name, _ in model.named_parameters()]
    models.apply_tome(model, 0)
    assert isinstance(model.encoder, models.ToMeEncoder)
    assert [name for name, _ in model.named_parameters()] == names
    assert_close(model(images).numpy(), plain, 1e-5)
    models.apply_tome(model, 2)
    assert model.encoder.r == 2
    assert not np.allclose(model(images).numpy(), plain, atol=1e-4)
    models.remove_tome(model)
    assert isinstance(model.encoder, lamina.nn.Sequential)
    assert_close(model(images).numpy(), plain, 1e-6)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_each_layer_drops_r_tokens_and_the_class_token_stays_first(r):
    model = tiny_vit()
    tokens = np.random.default_rng(1).normal(size=(2, 17, 16)).astype(np.float32)
    layers = list(model.encoder._modules.values())
    for depth in (1, 2, 3):
        assert models.ToMeEncoder(layers[:depth], r)(tokens).shape == (2, 17 - depth * r, 16)
    models.apply_tome(model, r)
    assert models.tome_token_counts(17, 3, r) == [17 - k * r for k in range(4)]
    assert model.encoder.compute_output_shape((None, 17, 16)) == (None, 17 - 3 * r, 16)
    # the class token's own row never merges: the first layer's output row 0 is the plain layer's
    first = model.encoder._modules["0"]
    assert_close(models.apply_tome(tiny_vit(depth=1), r).encoder(tokens).numpy()[:, 0],
                 first(tokens).numpy()[:, 0], 1e-5)
    assert models.tome_token_counts(17, 10, 3) == [17, 14, 11, 8, 5, 3, 2, 2, 2, 2, 2]


def test_tome_on_a_trained_vit_keeps_accuracy_and_cuts_macs():
    x, y = load_digits(size=8)
    x = (x.astype(np.float32) / 255.0).repeat(2, axis=1).repeat(2, axis=2)   # 16x16: 16 patches of 4x4
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    lamina.manual_seed(0)
    model = models.vit(16, 4, 10, d_model=32, depth=4, num_heads=2, mlp_dim=64, channels=1)
    model.build(model.input_shape)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        rows = rng.integers(0, 1400, 64)
        loss = F.cross_entropy(model(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    plain = np.mean(np.argmax(model(x[1400:]).numpy(), axis=1) == y[1400:])
    models.apply_tome(model, 3)                                        # 17 -> 14 -> 11 -> 8 -> 5 tokens
    merged = np.mean(np.argmax(model(x[1400:]).numpy(), axis=1) == y[1400:])
    ratio = models.tome_encoder_macs(model, 17, 3) / models.tome_encoder_macs(model, 17, 0)
    # measured: accuracy 0.829 plain, 0.824 with r = 3; encoder MACs 0.64 of the plain encoder's
    assert plain > 0.75
    assert merged > plain - 0.04
    assert ratio < 0.66


def test_bad_r_is_refused():
    with pytest.raises(ValueError, match="ToMeEncoder: r"):
        models.apply_tome(tiny_vit(), -1)


def test_the_encoder_carries_sizes_across_layers_as_a_plain_rewrite_does():
    model = tiny_vit(depth=3)
    tokens = np.random.default_rng(3).normal(size=(2, 17, 16)).astype(np.float32)
    x, size = lamina.tensor(tokens), None
    for layer in model.encoder._modules.values():
        attention = layer.self_attention
        h = layer.norm1(x)
        n, t, _ = h.shape
        bias = None if size is None else np.broadcast_to(np.log(size.numpy())[:, None, :, 0], (n, t, t))
        x = x + attention(h, mask=None if bias is None else bias.astype(np.float32))
        w = attention.in_weight.numpy()[:, attention.projection_columns(1)]
        keys = (h.numpy() @ w + attention.in_bias.numpy()[attention.projection_columns(1)]).reshape(n, t, 2, 8)
        merge, _ = F.bipartite_soft_matching(keys.mean(axis=2), 2)
        x, size = F.merge_wavg(merge, x, size)
        x = x + layer.linear2(layer.linear1(layer.norm2(x)))
    models.apply_tome(model, 2)
    assert_close(model.encoder(tokens).numpy(), x.numpy(), 1e-4)
    assert size.numpy().sum(axis=(1, 2)).tolist() == [17, 17]


def test_a_saved_model_loads_with_the_plain_encoder_and_takes_tome_again(tmp_path):
    model = models.apply_tome(tiny_vit(depth=2), 2)
    images = np.random.default_rng(4).normal(size=(2, 16, 16, 1)).astype(np.float32)
    lamina.save(model, tmp_path / "tome.lam")
    loaded = lamina.load(tmp_path / "tome.lam")
    assert isinstance(loaded.encoder, lamina.nn.Sequential)
    assert_close(models.apply_tome(loaded, 2)(images).numpy(), model(images).numpy(), 0)
