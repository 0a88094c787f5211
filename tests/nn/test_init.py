import math

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.nn import init


def test_fans_dense_and_conv():
    assert init.fans((784, 128)) == (784, 128)
    # conv weights (K, fh, fw, c_in): fan_in = fh fw c_in, fan_out = fh fw K
    assert init.fans((96, 11, 11, 3)) == (11 * 11 * 3, 11 * 11 * 96)
    assert init.fans((64, 3, 3, 1)) == (9, 9 * 64)
    assert init.fans((10,)) == (10, 10)


@pytest.mark.parametrize(
    "name, shape, expected_std",
    [
        ("he_normal", (1000, 600), math.sqrt(2 / 1000)),
        ("he_uniform", (1000, 600), math.sqrt(2 / 1000)),
        ("xavier_normal", (1000, 600), math.sqrt(2 / 1600)),
        ("xavier_uniform", (1000, 600), math.sqrt(2 / 1600)),
        ("lecun_normal", (1000, 600), math.sqrt(1 / 1000)),
        ("he_normal", (64, 3, 3, 32), math.sqrt(2 / (9 * 32))),
        ("xavier_uniform", (64, 5, 5, 16), math.sqrt(2 / (25 * 16 + 25 * 64))),
    ],
)
def test_empirical_std_matches_formula(name, shape, expected_std):
    w = init.get(name)(shape)
    assert w.shape == shape
    assert w.dtype == lamina.get_default_dtype()
    assert abs(w.std() / expected_std - 1) < 0.02
    assert abs(w.mean()) < 0.02 * expected_std * 5


def test_uniform_limits_and_constants():
    fan_in = 300
    w = init.he_uniform((fan_in, 400))
    limit = math.sqrt(6 / fan_in)
    assert w.max() <= limit and w.min() >= -limit and w.max() > 0.99 * limit
    assert (init.zeros((3, 4)) == 0).all()
    assert (init.ones((2,)) == 1).all()
    c = init.constant(0.01)((5,))
    np.testing.assert_allclose(c, 0.01, rtol=1e-6)
    n = init.normal(std=0.5, mean=1.0)((200, 500))
    assert abs(n.std() - 0.5) < 0.01 and abs(n.mean() - 1.0) < 0.01
    u = init.uniform(0.2)((200, 500))
    assert u.min() >= -0.2 and u.max() <= 0.2 and abs(u.std() - 0.2 / math.sqrt(3)) < 0.003


def test_dtype_follows_default_and_explicit_fans():
    lamina.set_default_dtype(np.float64)
    assert init.he_normal((10, 10)).dtype == np.float64
    assert init.he_normal((10, 10), dtype=np.float32).dtype == np.float32
    w = init.he_normal((400, 500), fan_in=50)
    assert abs(w.std() / math.sqrt(2 / 50) - 1) < 0.02


def test_draws_from_lamina_rng():
    lamina.manual_seed(3)
    a = init.he_uniform((4, 4))
    lamina.manual_seed(3)
    b = init.he_uniform((4, 4))
    np.testing.assert_array_equal(a, b)


def test_get_and_serialize_round_trip():
    for spec in ["he_uniform", "glorot_normal", 0.1, {"name": "normal", "std": 0.02, "mean": 0.0},
                 init.constant(0.5), init.xavier_normal]:
        s = init.serialize(spec)
        again = init.get(s)
        assert callable(again)
    assert init.serialize(init.he_normal) == "he_normal"
    assert init.serialize(init.normal(0.3)) == {"name": "normal", "std": 0.3, "mean": 0.0}
    with pytest.raises(ValueError, match="unknown initializer 'bogus'"):
        init.get("bogus")
    with pytest.raises(ValueError, match="cannot serialise"):
        init.serialize(lambda shape, *a, **k: np.zeros(shape))


def test_layers_take_initializers_by_name():
    layer = nn.Dense(500, kernel_init="xavier_normal", bias_init=0.01)
    layer.build((None, 800))
    std = layer.weight.numpy().std()
    assert abs(std / math.sqrt(2 / 1300) - 1) < 0.02
    np.testing.assert_allclose(layer.bias.numpy(), 0.01, rtol=1e-6)
    default = nn.Dense(400)
    default.build((None, 600))
    w = default.weight.numpy()
    assert abs(w.std() / math.sqrt(2 / 600) - 1) < 0.03  # he_uniform
    assert (default.bias.numpy() == 0).all()
    conv = nn.Conv2D(64, 3, kernel_init="he_normal")
    conv.build((None, 8, 8, 32))
    assert conv.weight.shape == (64, 3, 3, 32)
    assert abs(conv.weight.numpy().std() / math.sqrt(2 / (9 * 32)) - 1) < 0.03
    with pytest.raises(ValueError, match="unknown initializer"):
        nn.Dense(3, kernel_init="nope")


def _unit_vectors(w):
    """One row per unit: a dense weight's columns, a convolution's filters."""
    return w.T if w.ndim == 2 else w.reshape(w.shape[0], -1)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (16, 16), (8, 3, 3, 4), (50, 3, 3, 2)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal_unit_vectors_are_orthonormal(shape, gain):
    lamina.manual_seed(3)
    w = init.get({"name": "orthogonal", "gain": gain})(shape, dtype=np.float64)
    assert w.shape == shape
    u = _unit_vectors(w)
    gram = u @ u.T if u.shape[0] <= u.shape[1] else u.T @ u      # whichever side can be I
    np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-12)
    lamina.manual_seed(3)
    np.testing.assert_array_equal(init.orthogonal(gain)(shape, dtype=np.float64), w)


def test_orthogonal_keeps_the_norm_through_a_deep_linear_stack():
    lamina.manual_seed(0)
    model = nn.Sequential([nn.Dense(32, kernel_init="orthogonal", use_bias=False) for _ in range(50)])
    x = np.random.default_rng(0).standard_normal((4, 32))
    y = model(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-4)
    lamina.manual_seed(0)
    plain = nn.Sequential([nn.Dense(32, kernel_init="lecun_normal", use_bias=False) for _ in range(50)])
    ratios = np.linalg.norm(plain(lamina.tensor(x, dtype=np.float64)).numpy(), axis=1) / np.linalg.norm(x, axis=1)
    assert np.abs(np.log(ratios)).max() > 0.3      # a random Gaussian stack drifts


def test_orthogonal_rejects_vectors_and_serialises():
    with pytest.raises(ValueError, match=r"orthogonal: needs a weight of at least 2 axes, got shape \(5,\)"):
        init.orthogonal()((5,))
    assert init.serialize(init.orthogonal(0.5)) == {"name": "orthogonal", "gain": 0.5}
    layer = nn.Conv2D(4, 3, kernel_init=init.orthogonal(2.0))
    again = nn.layer_from_config(nn.layer_to_config(layer))
    again.build((None, 6, 6, 2))
    u = _unit_vectors(again.weight.numpy().astype(np.float64))
    np.testing.assert_allclose(u @ u.T, 4 * np.eye(4), atol=1e-5)


def test_truncated_normal_stays_within_two_standard_deviations():
    lamina.manual_seed(1)
    w = init.get("truncated_normal")((400, 500), dtype=np.float64)       # std 0.05 by default
    assert np.abs(w).max() <= 0.1
    # the standard deviation of N(0, 1) cut at +-2 is 0.8796
    assert abs(w.std() / (0.05 * 0.87962566) - 1) < 0.01
    shifted = init.truncated_normal(std=0.2, mean=1.0)((1000,), dtype=np.float32)
    assert shifted.dtype == np.float32 and np.abs(shifted - 1.0).max() <= 0.4 + 1e-6
    assert abs(shifted.mean() - 1.0) < 0.02
    assert init.serialize(init.truncated_normal(0.1)) == {"name": "truncated_normal", "std": 0.1, "mean": 0.0}
    with init.meta():
        assert init.is_meta_array(init.truncated_normal()((300, 300)))


@pytest.mark.parametrize("name", ["xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal",
                                  "lecun_uniform", "orthogonal", "zeros", "normal", "truncated_normal"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (3, 3, 3, 0), (0,)])
def test_a_weight_with_no_entries_is_drawn_empty(name, shape):
    if name == "orthogonal" and len(shape) < 2:
        pytest.skip("orthogonal needs a weight of 2 axes or more")
    weight = init.get(name)(shape)
    assert weight.shape == shape and weight.dtype == lamina.backend.get_default_dtype()


def test_a_layer_without_inputs_builds_and_runs_like_torch():
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning):
        expected = torch.nn.Linear(0, 3)(torch.zeros(2, 0))
    dense = nn.Dense(3)
    out = dense(lamina.tensor(np.zeros((2, 0))))
    assert out.shape == tuple(expected.shape) and dense.weight.shape == (0, 3)
    np.testing.assert_array_equal(out.numpy(), dense.bias.numpy()[None].repeat(2, 0))
    conv = nn.Conv2D(3, 3)
    assert conv(lamina.tensor(np.zeros((1, 5, 5, 0)))).shape == (1, 3, 3, 3)
    assert init.he_uniform((3,), fan_in=0).tolist() == [0.0, 0.0, 0.0]   # a bias drawn from a fan of 0
